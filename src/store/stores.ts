/**
 * The store factory: Redis stores when `redis_url` / `redis_cluster_nodes` is set, in-memory
 * stores otherwise. The Redis client is shared by both stores and owned here (`close()`).
 */
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import { describeError } from '../model/errors.js';
import type { Metrics } from '../ops/metrics.js';
import type { BuildSessionStore } from './build-sessions.js';
import type { FirstSeenStore } from './first-seen.js';
import { MemoryBuildSessionStore } from './memory/build-sessions.js';
import { MemoryFirstSeenStore } from './memory/first-seen.js';
import { RedisBuildSessionStore } from './redis/build-sessions.js';
import { createRedisClient, waitReady, type RedisClient } from './redis/connection.js';
import { RedisFirstSeenStore } from './redis/first-seen.js';
import { legacyKeys } from './redis/keys.js';
import { migrateLegacy } from './redis/migrate.js';

export interface Stores {
  readonly kind: 'redis' | 'memory';
  readonly firstSeen: FirstSeenStore;
  readonly sessions: BuildSessionStore;
  /** True when the backing store can take commands now (always true in memory). */
  redisUp(): boolean;
  /** Idempotent. */
  close(): Promise<void>;
}

/** How long start-up waits for Redis before carrying on not-ready (events are buffered). */
const STARTUP_WAIT_MS = 2_000;
/**
 * The in-memory first-seen set's bound (about 100 MB). It is its own bound, not
 * `known_ip_cache_size` (the correlator's cache in front of the store): forgetting an IP makes
 * it new again, so this is set far above what one host contacts within a retention.
 */
export const MEMORY_MAX_IPS = 1_000_000;

export async function createStores(
  cfg: Config,
  deps: { logger: Logger; metrics: Metrics; now?: () => number },
): Promise<Stores> {
  if (!cfg.redisUrl && cfg.redisClusterNodes.length === 0) {
    deps.metrics.redisConnected.set(1);
    return memoryStores(cfg, deps.now);
  }
  const client = createRedisClient({
    url: cfg.redisUrl,
    clusterNodes: cfg.redisClusterNodes,
    name: 't1612d-correlator',
    logger: deps.logger,
  });
  const setUp = (up: boolean) => (): void => deps.metrics.redisConnected.set(up ? 1 : 0);
  client.on('ready', setUp(true));
  client.on('close', setUp(false));
  client.on('end', setUp(false));
  try {
    await waitReady(client, STARTUP_WAIT_MS);
  } catch (err) {
    deps.logger.warn({ err: describeError(err) }, 'redis not reachable at start; buffering until it is');
  }
  return new RedisStores(client, cfg.redisPrefix, cfg.knownIpBuckets, deps.logger);
}

export function memoryStores(cfg: Config, now?: () => number): Stores {
  const firstSeen = new MemoryFirstSeenStore(MEMORY_MAX_IPS);
  const sessions = new MemoryBuildSessionStore(cfg.maxSessions, now);
  return {
    kind: 'memory',
    firstSeen,
    sessions,
    redisUp: () => true,
    close: async () => {},
  };
}

class RedisStores implements Stores {
  readonly kind = 'redis' as const;
  readonly firstSeen: FirstSeenStore;
  readonly sessions: BuildSessionStore;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly client: RedisClient,
    prefix: string,
    buckets: number,
    logger: Logger,
  ) {
    const firstSeen = new RedisFirstSeenStore(client, prefix, { buckets, warn: (fields, msg) => logger.warn(fields, msg) });
    this.firstSeen = firstSeen;
    this.sessions = new RedisBuildSessionStore(client, prefix, firstSeen.layouts);
  }

  redisUp(): boolean {
    return this.client.status === 'ready';
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      try {
        await this.client.quit();
      } catch {
        this.client.disconnect();
      }
    })();
    return this.closing;
  }
}

/**
 * `t1612d migrate`: move the environment's known-IP set from the first layout (one hash tag)
 * into the sharded buckets now, instead of leaving it to the daemons' maintenance. Safe while
 * daemons run (they read both layouts until it is done); waits while another holds the lock.
 */
export async function migrateKnownIps(
  cfg: Config,
  deps: { logger: Logger; progress?: (moved: number, expired: number) => void; now?: () => number },
): Promise<{ moved: number; expired: number; buckets: number }> {
  if (!cfg.redisUrl && cfg.redisClusterNodes.length === 0) throw new Error('migrate needs redis_url or redis_cluster_nodes');
  const client = createRedisClient({ url: cfg.redisUrl, clusterNodes: cfg.redisClusterNodes, name: 't1612d-migrate', logger: deps.logger });
  try {
    await waitReady(client, 10_000);
    const store = new RedisFirstSeenStore(client, cfg.redisPrefix, { buckets: cfg.knownIpBuckets, warn: (f, m) => deps.logger.warn(f, m) });
    const layout = await store.layouts.get(cfg.environment);
    const total = { moved: 0, expired: 0, buckets: layout.buckets };
    while (layout.legacy) {
      const now = (deps.now ?? Date.now)();
      const r = await migrateLegacy(client, cfg.redisPrefix, layout, {
        nowMs: now,
        retentionMs: cfg.firstSeenRetentionMs,
        owner: `t1612d-migrate-${process.pid}`,
        progress: (m, e) => deps.progress?.(total.moved + m, total.expired + e),
      });
      total.moved += r.moved;
      total.expired += r.expired;
      // Another daemon holds the lock: it is migrating; wait for it to finish (or the lock to lapse).
      if (!r.ran) await new Promise((res) => setTimeout(res, 500));
      if (!r.ran || layout.legacy) layout.legacy = (await client.exists(legacyKeys(cfg.redisPrefix, cfg.environment).known)) === 1;
    }
    return total;
  } finally {
    client.disconnect();
  }
}
