/**
 * The outbox: at-least-once delivery of alerts to every configured sink.
 *
 * `enqueue` stores the alert (a Redis Stream per sink, or memory without Redis) before anything
 * is sent.
 * One lane per sink (outbox-lane.ts) then reads entries, sends them with at most `concurrency`
 * requests in flight and at most `maxInFlight` entries held in memory, acknowledges on success,
 * retries retryable failures with capped exponential backoff and jitter (honouring
 * Retry-After), and moves an entry to the dead letters after a permanent failure or
 * `webhook_max_attempts` attempts. Attempts are counted in the store, so a restart does not
 * reset them. `close()` stops reading, cuts retry sleeps short, lets in-flight sends finish
 * until the deadline and leaves everything unfinished pending for the next start (or another
 * daemon) to resume.
 *
 * Four files: this one (the public types, the implementation and its factory), outbox-lane.ts
 * (one sink's delivery loop), outbox-store.ts (the storage contract and the in-memory store)
 * and outbox-redis.ts (the Redis Streams store).
 */
import { setMaxListeners } from 'node:events';
import { hostname as osHostname } from 'node:os';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { Alert, AlertSink } from '../model/alert.js';
import { ClosedError, describeError } from '../model/errors.js';
import { Backoff, sleep } from '../ops/backoff.js';
import type { Metrics } from '../ops/metrics.js';
import { createRedisClient, waitReady, type RedisClient } from '../store/redis/connection.js';
import { Lane, type LaneContext } from './outbox-lane.js';
import { MemoryOutboxStore, PartialAppendError, type OutboxStore } from './outbox-store.js';
import { RedisOutboxStore, laneKeys, moveLegacyDead, replayDead } from './outbox-redis.js';
import { createSinks } from './sinks.js';
import type { Sink } from './sink.js';

export { retryDelayMs } from './outbox-lane.js';

/** Builds Redis connections; `blocking` ones are used for XREADGROUP BLOCK only. */
export type RedisFactory = (options: { name: string; blocking: boolean }) => RedisClient;

/** Knobs below the configuration, for tests and embedding. All durations in ms. */
export interface OutboxTuning {
  /** Consumer name in every group. @default the `hostname` setting */
  consumerName?: string;
  /** Another consumer's entries idle this long are taken over. @default 60000 */
  claimIdleMs?: number;
  /** Longest blocking read. @default 1000 */
  blockMs?: number;
  /** Entries a lane holds at once (sending or waiting to retry). @default max(16, 8 * concurrency) */
  maxInFlight?: number;
  /** Gauge refresh interval. @default 5000 */
  maintenanceMs?: number;
  /** How long `enqueue` keeps retrying an unreachable store before it rejects. @default 30000 */
  enqueueTimeoutMs?: number;
  /** TTL of the attempt counters in Redis. @default 7 days */
  attemptsTtlMs?: number;
  /** Deadline for `close()` to let in-flight sends finish. @default cfg.shutdownTimeoutMs */
  closeTimeoutMs?: number;
}

export interface OutboxDeps {
  /** The outbox owns them: `close()` closes them. */
  sinks: Sink[];
  metrics: Metrics;
  logger: Logger;
  /** Redis connections; `false` forces the memory store; absent = from cfg (redis_url / cluster). */
  redis?: RedisFactory | false;
  tuning?: OutboxTuning;
}

export interface OutboxStats {
  /** Entries held in memory by all lanes now. */
  held: number;
  /** Largest number held by any one lane so far. */
  heldHighWater: number;
  /** The per-lane bound on held entries. */
  maxInFlight: number;
  /** Largest number of concurrent sends seen on any one lane. */
  sendingHighWater: number;
}

export interface Outbox extends AlertSink {
  readonly kind: 'redis' | 'memory';
  /** Begin delivering (idempotent). Enqueue works before start; delivery waits for it. */
  start(): void;
  /** Idempotent graceful stop within the close deadline; unfinished entries stay pending. */
  close(): Promise<void>;
  /** Resolves true once nothing is pending (false at the timeout). */
  drain(timeoutMs: number): Promise<boolean>;
  /** Alerts not yet acknowledged by the sink with the largest backlog. */
  pending(): Promise<number>;
  /** Entries in the dead letters. */
  deadLetters(): Promise<number>;
  /** Move dead letters back for another round of attempts; returns how many. */
  replayDeadLetters(sink?: string): Promise<number>;
  stats(): OutboxStats;
}

/** Stores before sending, runs one lane per sink once started, owns the gauges and shutdown. */
class OutboxImpl implements Outbox {
  readonly kind: 'redis' | 'memory';
  private readonly lanes: Lane[];
  private readonly stopCtl = new AbortController();
  private readonly killCtl = new AbortController();
  private started = false;
  private closing: Promise<void> | undefined;
  private maintenance: NodeJS.Timeout | undefined;
  private readonly maxInFlight: number;

  constructor(
    private readonly cfg: Config,
    private readonly deps: OutboxDeps,
    private readonly store: OutboxStore,
    private readonly clients: RedisClient[],
    private readonly tuning: OutboxTuning,
  ) {
    this.kind = store.kind;
    // Every sleeping retry and in-flight request listens on these; hundreds is normal.
    setMaxListeners(0, this.stopCtl.signal, this.killCtl.signal);
    this.maxInFlight = tuning.maxInFlight ?? Math.max(16, 8 * cfg.webhookConcurrency);
    const ctx: LaneContext = {
      store,
      metrics: deps.metrics,
      logger: deps.logger,
      maxAttempts: cfg.webhookMaxAttempts,
      backoffInitialMs: cfg.deliveryBackoffInitialMs,
      backoffMaxMs: cfg.deliveryBackoffMaxMs,
      maxInFlight: this.maxInFlight,
      defaultConcurrency: cfg.webhookConcurrency,
      keepAliveMs: Math.max(10, Math.floor((tuning.claimIdleMs ?? 60_000) / 3)),
      stop: this.stopCtl.signal,
      kill: this.killCtl.signal,
    };
    this.lanes = deps.sinks.map((s) => new Lane(s, ctx));
  }

  start(): void {
    if (this.started || this.closing) return;
    this.started = true;
    const { logger } = this.deps;
    if (this.lanes.length === 0) {
      logger.warn({ store: this.kind }, 'no alert sink configured (webhook_url, sidekick_url): alerts are stored but not delivered');
    }
    void this.begin();
    this.maintenance = setInterval(() => void this.refreshGauges(), this.tuning.maintenanceMs ?? 5_000);
    this.maintenance.unref();
  }

  private async begin(): Promise<void> {
    // Every connection (the shared one and each sink's blocking reader) gets a chance to come
    // up before the first read, so a normal start logs no read failure.
    await Promise.all(this.clients.map((c) => waitReady(c, 5_000).catch(() => undefined)));
    try {
      await this.store.prepare();
    } catch (err) {
      // Reads recreate the groups when they find them missing.
      this.deps.logger.warn({ err: describeError(err) }, 'outbox could not create consumer groups yet');
    }
    if (this.stopCtl.signal.aborted) return;
    for (const lane of this.lanes) lane.start();
    this.deps.logger.info(
      { store: this.kind, sinks: this.lanes.map((l) => l.sink.name), maxAttempts: this.cfg.webhookMaxAttempts, maxInFlight: this.maxInFlight },
      'outbox started',
    );
    await this.refreshGauges();
  }

  async enqueue(alert: Alert): Promise<void> {
    if (this.closing) throw new ClosedError('outbox');
    const body = JSON.stringify(alert);
    const deadline = Date.now() + (this.tuning.enqueueTimeoutMs ?? 30_000);
    const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 });
    // Undefined: every sink; after a partial failure, only the sinks whose write failed.
    let only: string[] | undefined;
    for (;;) {
      try {
        const { lost } = await this.store.append(body, only);
        this.countTrimmed(lost);
        return;
      } catch (err) {
        if (err instanceof PartialAppendError) {
          this.countTrimmed(err.lost);
          only = err.failed;
        }
        if (this.closing || Date.now() >= deadline) throw err;
        this.deps.logger.warn({ alertId: alert.id, sinks: only, err: describeError(err) }, 'outbox write failed; retrying');
        await sleep(backoff.next(), this.stopCtl.signal);
      }
    }
  }

  private countTrimmed(lost: Record<string, number>): void {
    const worst = Math.max(0, ...Object.values(lost));
    if (worst === 0) return;
    this.deps.metrics.outboxTrimmed.inc(worst);
    this.deps.logger.error({ lost, maxLen: this.cfg.outboxMaxLen }, 'outbox length cap dropped undelivered alerts; raise outbox_max_len or fix the sink');
  }

  async pending(): Promise<number> {
    return this.store.pending();
  }

  async deadLetters(): Promise<number> {
    return this.store.deadLetterCount();
  }

  async replayDeadLetters(sink?: string): Promise<number> {
    const n = await this.store.replayDeadLetters(sink);
    await this.refreshGauges();
    return n;
  }

  async drain(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        if ((await this.store.pending()) === 0) {
          await this.refreshGauges();
          return true;
        }
      } catch {
        // An unreachable store is not drained; keep polling until the deadline.
      }
      if (Date.now() >= deadline) return false;
      await sleep(Math.min(25, Math.max(1, deadline - Date.now())));
    }
  }

  stats(): OutboxStats {
    return {
      held: this.lanes.reduce((n, l) => n + l.heldCount, 0),
      heldHighWater: Math.max(0, ...this.lanes.map((l) => l.heldHighWater)),
      maxInFlight: this.maxInFlight,
      sendingHighWater: Math.max(0, ...this.lanes.map((l) => l.sendingHighWater)),
    };
  }

  private async refreshGauges(): Promise<void> {
    try {
      this.deps.metrics.outboxPending.set(await this.store.pending());
      this.deps.metrics.outboxDeadLetters.set(await this.store.deadLetterCount());
    } catch (err) {
      this.deps.logger.debug({ err: describeError(err) }, 'outbox gauges not refreshed');
    }
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    const { logger } = this.deps;
    if (this.maintenance) clearInterval(this.maintenance);
    this.stopCtl.abort();
    // Blocked reads end when their connection does; what they had read stays pending.
    for (const c of this.clients.slice(1)) {
      try {
        c.disconnect();
      } catch {
        // Already closed.
      }
    }
    const deadlineMs = this.tuning.closeTimeoutMs ?? this.cfg.shutdownTimeoutMs;
    const all = Promise.allSettled(this.lanes.map((l) => l.stopped()));
    const finished = await Promise.race([all.then(() => true), sleep(deadlineMs).then(() => false)]);
    if (!finished) {
      logger.warn({ deadlineMs }, 'outbox close deadline passed; aborting in-flight deliveries (they stay pending)');
      this.killCtl.abort();
      await Promise.race([all, sleep(1_000)]);
    }
    this.killCtl.abort();
    await this.refreshGauges();
    for (const lane of this.lanes) {
      try {
        await lane.sink.close?.();
      } catch (err) {
        logger.warn({ sink: lane.sink.name, err: describeError(err) }, 'sink close failed');
      }
    }
    try {
      await this.store.close();
    } catch (err) {
      logger.warn({ err: describeError(err) }, 'outbox store close failed');
    }
    await Promise.all(this.clients.map((c) => quitClient(c)));
    logger.info({ store: this.kind }, 'outbox closed');
  }
}

/** Quit politely, or drop the connection if Redis does not answer within a second. */
async function quitClient(c: RedisClient): Promise<void> {
  if (c.status === 'end') return;
  try {
    await Promise.race([c.quit(), sleep(1_000).then(() => Promise.reject(new Error('quit timed out')))]);
  } catch {
    c.disconnect();
  }
}

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
 * `t1612d outbox replay-dead`: move the dead letters of this environment back into the
 * outbox, each into the lane of the sink that gave up on it: every sink the configuration
 * names, or only `sink`. Dead letters of the first (single-stream) layout move to their lanes
 * first. Needs Redis (memory dead letters live only inside a running daemon). Returns how many
 * moved.
 */
export async function replayDeadLetters(
  cfg: Config,
  deps: { logger: Logger; metrics?: Metrics; redis?: RedisFactory; sink?: string },
): Promise<number> {
  const factory = deps.redis ?? redisFactoryFromConfig(cfg, deps.logger);
  if (!factory) {
    throw new Error('outbox replay-dead needs redis_url or redis_cluster_nodes: without Redis, dead letters live only in the running daemon');
  }
  let sinks: string[];
  if (deps.sink !== undefined) {
    sinks = [deps.sink];
  } else {
    // Only the names are needed; the sinks themselves are closed at once.
    const built = createSinks(cfg, { logger: deps.logger });
    sinks = built.map((s) => s.name);
    await Promise.all(built.map((s) => s.close?.()));
  }
  const client = factory({ name: 't1612d-replay-dead', blocking: false });
  try {
    await waitReady(client, 10_000);
    await moveLegacyDead(client, cfg.redisPrefix, cfg.environment, cfg.outboxMaxLen, deps.logger);
    let moved = 0;
    let left = 0;
    for (const sink of sinks) {
      const lane = laneKeys(cfg.redisPrefix, cfg.environment, sink);
      moved += await replayDead(client, sink, lane, cfg.outboxMaxLen, deps.logger);
      left += await client.xlen(lane.dead);
    }
    deps.metrics?.outboxDeadLetters.set(left);
    return moved;
  } finally {
    await quitClient(client);
  }
}
