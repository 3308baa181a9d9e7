/**
 * A private redis-server for tests: spawned on a free port with no persistence, or the
 * server named by REDIS_URL when set. Each test gets its own key prefix so tests never see
 * each other's keys. The spawned server can be stopped and started again on the same port to
 * simulate an outage.
 *
 * A free port is only free until someone else binds it, so a start that loses that race
 * ("Address already in use") is retried on a fresh port.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';

/** Fresh ports tried by `TestRedis.start()` before giving up. */
const START_ATTEMPTS = 5;
/**
 * `restart()` must keep its port (clients are configured with it), so it waits and tries
 * again instead: the port is usually held only briefly by whoever raced us for it.
 */
const RESTART_ATTEMPTS = 5;
const RESTART_RETRY_DELAY_MS = 200;
const READY_TIMEOUT_MS = 10_000;

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

/** redis-server did not become ready; `addressInUse` when it lost a port (worth retrying). */
export class RedisStartError extends Error {
  override readonly name = 'RedisStartError';
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
  }
}

/**
 * Spawns `redis-server ARGS` and resolves once it logs "Ready to accept connections". On
 * failure the process is gone and the error carries the server's output.
 */
export async function spawnRedisServer(args: string[], what: string): Promise<ChildProcess> {
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const collect = (d: Buffer): void => {
    out += d.toString();
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  try {
    await new Promise<void>((resolve, reject) => {
      const settle = (err?: Error): void => {
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        child.off('close', onClose);
        child.off('error', onError);
        if (err) reject(err);
        else resolve();
      };
      const onData = (): void => {
        if (out.includes('Ready to accept connections')) settle();
      };
      // 'close' rather than 'exit': by then all of the server's output has been read.
      const onClose = (code: number | null, signal: NodeJS.Signals | null): void =>
        settle(new RedisStartError(`${what} exited (${code ?? signal}): ${out}`, /Address already in use/.test(out)));
      const onError = (err: Error): void => settle(new RedisStartError(`${what} could not be spawned: ${err.message}`, false));
      const timer = setTimeout(
        () => settle(new RedisStartError(`${what} not ready within ${READY_TIMEOUT_MS} ms: ${out}`, false)),
        READY_TIMEOUT_MS,
      );
      child.stdout?.on('data', onData);
      child.once('close', onClose);
      child.once('error', onError);
      onData();
    });
  } catch (err) {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
    throw err;
  }
  // Keep draining the pipes so a chatty server never blocks on a full one.
  child.stdout?.off('data', collect);
  child.stderr?.off('data', collect);
  child.stdout?.resume();
  child.stderr?.resume();
  return child;
}

function serverArgs(port: number): string[] {
  return ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'];
}

function isAddressInUse(err: unknown): boolean {
  return err instanceof RedisStartError && err.addressInUse;
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
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      try {
        const child = await spawnRedisServer(serverArgs(port), `redis-server on ${port}`);
        const r = new TestRedis(`redis://127.0.0.1:${port}`, port, false);
        r.child = child;
        return r;
      } catch (err) {
        if (!isAddressInUse(err) || attempt >= START_ATTEMPTS) throw err;
      }
    }
  }

  /** True when this harness owns the server process (so it can stop and restart it). */
  get controllable(): boolean {
    return !this.external;
  }

  /** Stop the server (simulated outage). Data is lost (no persistence). */
  async stop(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill('SIGKILL');
    await once(c, 'exit');
    this.child = undefined;
  }

  /** Start again on the same port after `stop()`. */
  async restart(): Promise<void> {
    if (this.external) throw new Error('cannot restart an external REDIS_URL server');
    await this.stop();
    for (let attempt = 1; ; attempt++) {
      try {
        this.child = await spawnRedisServer(serverArgs(this.port), `redis-server on ${this.port} (restart)`);
        return;
      } catch (err) {
        if (!isAddressInUse(err) || attempt >= RESTART_ATTEMPTS) throw err;
        await sleep(RESTART_RETRY_DELAY_MS);
      }
    }
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

/** Calls of one Redis command (lower case, e.g. `bitfield`) since the server's last CONFIG RESETSTAT, scripts' calls included. */
export async function commandCalls(client: Redis, command: string): Promise<number> {
  const info = await client.info('commandstats');
  const m = new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(info);
  return Number(m?.[1] ?? 0);
}
