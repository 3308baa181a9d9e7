/**
 * A private three-node Redis Cluster (masters only) on free ports, built with redis-server's
 * cluster mode and `redis-cli --cluster create`. Used to prove the key layout works where
 * multi-key commands and Lua scripts must stay within one hash slot.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './redis.js';

const run = promisify(execFile);

export class TestRedisCluster {
  private constructor(
    readonly nodes: string[],
    private readonly children: ChildProcess[],
    private readonly dir: string,
  ) {}

  static async start(size = 3): Promise<TestRedisCluster> {
    const dir = mkdtempSync(join(tmpdir(), 't1612d-cluster-'));
    const children: ChildProcess[] = [];
    const nodes: string[] = [];
    try {
      for (let i = 0; i < size; i++) {
        const port = await freePort();
        const child = spawn(
          'redis-server',
          [
            '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
            '--cluster-config-file', join(dir, `nodes-${port}.conf`), '--save', '', '--appendonly', 'no',
            '--dir', dir, '--protected-mode', 'no',
          ],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        );
        children.push(child);
        let out = '';
        child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
        const deadline = Date.now() + 10_000;
        while (!out.includes('Ready to accept connections')) {
          if (child.exitCode !== null || Date.now() > deadline) throw new Error(`cluster node ${port} did not start: ${out}`);
          await new Promise((r) => setTimeout(r, 20));
        }
        nodes.push(`127.0.0.1:${port}`);
      }
      await run('redis-cli', ['--cluster', 'create', ...nodes, '--cluster-replicas', '0', '--cluster-yes']);
      // Wait until every node agrees the cluster is up.
      for (const n of nodes) {
        const [host, port] = n.split(':') as [string, string];
        const deadline = Date.now() + 15_000;
        for (;;) {
          const { stdout } = await run('redis-cli', ['-h', host, '-p', port, 'cluster', 'info']);
          if (stdout.includes('cluster_state:ok')) break;
          if (Date.now() > deadline) throw new Error(`cluster not ok on ${n}: ${stdout}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      return new TestRedisCluster(nodes, children, dir);
    } catch (err) {
      for (const c of children) c.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  async close(): Promise<void> {
    await Promise.all(
      this.children.map(async (c) => {
        if (c.exitCode !== null) return;
        c.kill('SIGKILL');
        await once(c, 'exit');
      }),
    );
    rmSync(this.dir, { recursive: true, force: true });
  }
}
