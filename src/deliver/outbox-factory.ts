/**
 * Building an outbox: picks the store (Redis Streams when redis_url / redis_cluster_nodes or
 * an injected factory is given, memory otherwise), opens the shared Redis connection plus one
 * blocking reader per sink, and hands them to the implementation. Also the one-shot
 * `outbox replay-dead` command, which needs only a Redis connection, not a running outbox.
 */
import { hostname as osHostname } from 'node:os';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { Metrics } from '../ops/metrics.js';
import { createRedisClient, waitReady, type RedisClient } from '../store/redis/connection.js';
import { OutboxImpl, quitClient } from './outbox-impl.js';
import { MemoryOutboxStore } from './outbox-memory.js';
import { RedisOutboxStore, outboxKeys, replayDead } from './outbox-redis.js';
import type { Outbox, OutboxDeps, RedisFactory } from './outbox-types.js';

/** The factory built from cfg (redis_url / redis_cluster_nodes), or undefined for memory. */
function redisFactoryFromConfig(cfg: Config, logger: Logger): RedisFactory | undefined {
  if (!cfg.redisUrl && cfg.redisClusterNodes.length === 0) return undefined;
  return ({ name, blocking }) =>
    createRedisClient({ url: cfg.redisUrl, clusterNodes: cfg.redisClusterNodes, name, blocking, logger });
}

export function createOutbox(cfg: Config, deps: OutboxDeps): Outbox {
  const tuning = deps.tuning ?? {};
  const sinkNames = deps.sinks.map((s) => s.name);
  if (new Set(sinkNames).size !== sinkNames.length) throw new Error(`outbox sinks need distinct names, got ${sinkNames.join(', ')}`);
  const factory = deps.redis === false ? undefined : (deps.redis ?? redisFactoryFromConfig(cfg, deps.logger));
  const blockMs = tuning.blockMs ?? 1_000;
  if (!factory) {
    const store = new MemoryOutboxStore({ sinks: sinkNames, maxLen: cfg.outboxMaxLen, blockMs, logger: deps.logger });
    return new OutboxImpl(cfg, deps, store, [], tuning);
  }
  const client = factory({ name: 't1612d-outbox', blocking: false });
  const clients: RedisClient[] = [client];
  const blocking = new Map<string, RedisClient>();
  for (const sink of sinkNames) {
    const c = factory({ name: `t1612d-outbox-${sink}`, blocking: true });
    blocking.set(sink, c);
    clients.push(c);
  }
  const store = new RedisOutboxStore({
    prefix: cfg.redisPrefix,
    environment: cfg.environment,
    maxLen: cfg.outboxMaxLen,
    sinks: sinkNames,
    // One daemon per host (one per Falco): the host name is a stable consumer name, so a
    // restarted daemon resumes its own unacknowledged deliveries at once.
    consumer: tuning.consumerName ?? (cfg.hostname || osHostname()),
    claimIdleMs: tuning.claimIdleMs ?? 60_000,
    blockMs,
    attemptsTtlMs: tuning.attemptsTtlMs ?? 7 * 86_400_000,
    client,
    blockingClient: (sink) => {
      let c = blocking.get(sink);
      if (!c) {
        c = factory({ name: `t1612d-outbox-${sink}`, blocking: true });
        blocking.set(sink, c);
        clients.push(c);
      }
      return c;
    },
    logger: deps.logger,
  });
  return new OutboxImpl(cfg, deps, store, clients, tuning);
}

/**
 * `t1612d outbox replay-dead`: move every dead letter of this environment back into the
 * outbox, addressed to the sink that gave up on it. Needs Redis (memory dead letters live only
 * inside a running daemon). Returns how many moved.
 */
export async function replayDeadLetters(
  cfg: Config,
  deps: { logger: Logger; metrics?: Metrics; redis?: RedisFactory; sink?: string },
): Promise<number> {
  const factory = deps.redis ?? redisFactoryFromConfig(cfg, deps.logger);
  if (!factory) {
    throw new Error('outbox replay-dead needs redis_url or redis_cluster_nodes: without Redis, dead letters live only in the running daemon');
  }
  const client = factory({ name: 't1612d-replay-dead', blocking: false });
  try {
    await waitReady(client, 10_000);
    const moved = await replayDead(client, outboxKeys(cfg.redisPrefix, cfg.environment), cfg.outboxMaxLen, deps.logger, deps.sink);
    deps.metrics?.outboxDeadLetters.set(await client.xlen(outboxKeys(cfg.redisPrefix, cfg.environment).dead));
    return moved;
  } finally {
    await quitClient(client);
  }
}
