/**
 * A private three-node Redis Cluster (masters only) on free ports, built with redis-server's
 * cluster mode and `redis-cli --cluster create`. Used to prove the key layout works where
 * multi-key commands and Lua scripts must stay within one hash slot.
 *
 * Each node needs two ports: its client port and its cluster-bus port. Left alone the bus
 * port is client port + 10000, which nobody reserved (and redis 7.0 refuses a client port
 * above 55535 in cluster mode), so both are taken free and passed explicitly; a node that
 * loses either port to another process is started again on fresh ones.
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, RedisStartError, spawnRedisServer } from './redis.js';

const run = promisify(execFile);

/** Fresh port pairs tried per node before giving up. */
const NODE_START_ATTEMPTS = 5;

/** A free port not in `taken`. */
async function freePortExcept(taken: Set<number>): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (!taken.has(port)) return port;
  }
}

/** Starts one cluster node on fresh client and bus ports, retrying when a port is lost. */
async function startNode(dir: string, taken: Set<number>): Promise<{ child: ChildProcess; port: number }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePortExcept(taken);
    const bus = await freePortExcept(new Set([...taken, port]));
    try {
      const child = await spawnRedisServer(
        [
          '--port', String(port), '--cluster-port', String(bus), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
          '--cluster-config-file', join(dir, `nodes-${port}.conf`), '--save', '', '--appendonly', 'no',
          '--dir', dir, '--protected-mode', 'no',
        ],
        `cluster node ${port} (bus ${bus})`,
      );
      taken.add(port).add(bus);
      return { child, port };
    } catch (err) {
      if (!(err instanceof RedisStartError && err.addressInUse) || attempt >= NODE_START_ATTEMPTS) throw err;
    }
  }
}

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
    const taken = new Set<number>();
    try {
      for (let i = 0; i < size; i++) {
        const { child, port } = await startNode(dir, taken);
        children.push(child);
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
      await stopAll(children);
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  async close(): Promise<void> {
    await stopAll(this.children);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

async function stopAll(children: ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(async (c) => {
      if (c.exitCode !== null || c.signalCode !== null) return;
      c.kill('SIGKILL');
      await once(c, 'exit');
    }),
  );
}
