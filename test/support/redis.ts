/**
 * A private redis-server for tests: spawned on a free port with no persistence, or the
 * server named by REDIS_URL when set. Each test gets its own key prefix so tests never see
 * each other's keys. The spawned server can be stopped and started again on the same port to
 * simulate an outage.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';

/** A free TCP port on 127.0.0.1 (bound and released). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  srv.close();
  await once(srv, 'close');
  return port;
}

export class TestRedis {
  private child: ChildProcess | undefined;
  private constructor(
    readonly url: string,
    readonly port: number,
    private readonly external: boolean,
  ) {}

  /** Start a private server (or adopt REDIS_URL). */
  static async start(): Promise<TestRedis> {
    const external = process.env['REDIS_URL'];
    if (external) return new TestRedis(external, Number(new URL(external).port || 6379), true);
    const port = await freePort();
    const r = new TestRedis(`redis://127.0.0.1:${port}`, port, false);
    await r.spawnServer();
    return r;
  }

  /** True when this harness owns the server process (so it can stop and restart it). */
  get controllable(): boolean {
    return !this.external;
  }

  private async spawnServer(): Promise<void> {
    const child = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child = child;
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`redis-server exited: ${out}`);
      if (out.includes('Ready to accept connections')) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`redis-server did not start on ${this.port}: ${out}`);
  }

  /** Stop the server (simulated outage). Data is lost (no persistence). */
  async stop(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null) return;
    c.kill('SIGKILL');
    await once(c, 'exit');
    this.child = undefined;
  }

  /** Start again on the same port after `stop()`. */
  async restart(): Promise<void> {
    if (this.external) throw new Error('cannot restart an external REDIS_URL server');
    await this.stop();
    await this.spawnServer();
  }

  /** A fresh random key prefix for one test. */
  static prefix(): string {
    return `t1612d-test-${randomBytes(4).toString('hex')}`;
  }

  /** A plain client for assertions; caller quits it. */
  client(): Redis {
    return new Redis(this.url, { maxRetriesPerRequest: 1, lazyConnect: false });
  }

  async close(): Promise<void> {
    if (!this.external) await this.stop();
  }
}
