/**
 * One place that builds Redis clients from the configuration: a single node (`redis_url`) or
 * a Redis Cluster (`redis_cluster_nodes`). Clients retry forever with capped backoff and keep
 * an offline queue off, so a Redis outage surfaces as fast errors the callers can buffer
 * around instead of silently piling up commands in memory.
 */
import type { Socket } from 'node:net';
import { Cluster, Redis } from 'ioredis';
import type { Logger } from 'pino';
import { describeError } from '../../model/errors.js';

export type RedisClient = Redis | Cluster;

export interface RedisConnectionOptions {
  url?: string | undefined;
  clusterNodes?: string[];
  /** Connection name visible in CLIENT LIST. */
  name?: string;
  /** Blocking commands (XREADGROUP BLOCK) need maxRetriesPerRequest: null. @default false */
  blocking?: boolean;
  logger: Logger;
}

function retryStrategy(times: number): number {
  return Math.min(100 * 2 ** Math.min(times, 10), 5_000);
}

export function createRedisClient(options: RedisConnectionOptions): RedisClient {
  const common = {
    connectionName: options.name ?? 't1612d',
    enableOfflineQueue: false,
    maxRetriesPerRequest: options.blocking ? null : 1,
    retryStrategy,
    connectTimeout: 5_000,
    lazyConnect: false,
  };
  let client: RedisClient;
  if (options.clusterNodes && options.clusterNodes.length > 0) {
    const nodes = options.clusterNodes.map((n) => {
      const i = n.lastIndexOf(':');
      return { host: n.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(n.slice(i + 1)) };
    });
    client = new Cluster(nodes, {
      redisOptions: common,
      enableOfflineQueue: false,
      clusterRetryStrategy: retryStrategy,
    });
  } else if (options.url) {
    const single = new Redis(options.url, common);
    // Each connection gets a new socket.
    single.on('connect', () => coalesceWrites(single.stream));
    client = single;
  } else {
    throw new Error('createRedisClient needs redis_url or redis_cluster_nodes');
  }
  let lastError = '';
  client.on('error', (err: unknown) => {
    const msg = describeError(err);
    if (msg !== lastError) {
      lastError = msg;
      options.logger.warn({ err: msg, client: common.connectionName }, 'redis error');
    }
  });
  client.on('ready', () => {
    if (lastError !== '') options.logger.info({ client: common.connectionName }, 'redis connected');
    lastError = '';
  });
  return client;
}

const coalescing = new WeakSet<Socket>();

/**
 * Commands sent in one turn of the event loop leave in one write: the socket is corked at the
 * first write of a turn and uncorked once the turn's code (and its promise callbacks) is done.
 * Order and replies are unchanged (ioredis matches replies to commands in order); a burst (the
 * alerts of a decide batch, each appended by a script call) costs one system call on each side
 * instead of one per command.
 */
export function coalesceWrites(socket: Socket | undefined): void {
  if (!socket || coalescing.has(socket)) return;
  coalescing.add(socket);
  let corked = false;
  const uncork = (): void => {
    corked = false;
    socket.uncork();
  };
  const write = socket.write;
  socket.write = function (this: Socket, ...args: Parameters<Socket['write']>): boolean {
    if (!corked) {
      corked = true;
      this.cork();
      process.nextTick(uncork);
    }
    // The overloads of write() cannot be named one by one here; the arguments pass through as given.
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  } as Socket['write'];
}

/** Resolves once the client is ready, or rejects after `timeoutMs`. */
export async function waitReady(client: RedisClient, timeoutMs = 10_000): Promise<void> {
  if (client.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('ready', onReady);
      reject(new Error(`redis not ready after ${timeoutMs}ms`));
    }, timeoutMs);
    const onReady = (): void => {
      clearTimeout(timer);
      resolve();
    };
    client.once('ready', onReady);
  });
}
