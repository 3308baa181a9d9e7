/**
 * The outbox: at-least-once delivery of alerts to every configured sink.
 *
 * `enqueue` stores the alert (Redis Stream, or memory without Redis) before anything is sent.
 * One lane per sink then reads entries, sends them with at most `concurrency` requests in
 * flight and at most `maxInFlight` entries held in memory, acknowledges on success, retries
 * retryable failures with capped exponential backoff and jitter (honouring Retry-After), and
 * moves an entry to the dead letters after a permanent failure or `webhook_max_attempts`
 * attempts. Attempts are counted in the store, so a restart does not reset them. `close()`
 * stops reading, cuts retry sleeps short, lets in-flight sends finish until the deadline and
 * leaves everything unfinished pending for the next start (or another daemon) to resume.
 */
import { setMaxListeners } from 'node:events';
import { hostname as osHostname } from 'node:os';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Alert, AlertSink } from '../detect/alert.js';
import { ClosedError, describeError } from '../errors.js';
import { Backoff, sleep } from '../ops/backoff.js';
import { truncate } from '../ops/logger.js';
import type { Metrics } from '../ops/metrics.js';
import { createRedisClient, waitReady, type RedisClient } from '../store/redis/connection.js';
import { MemoryOutboxStore } from './outbox-memory.js';
import { RedisOutboxStore, outboxKeys, replayDead } from './outbox-redis.js';
import type { DeadLetterInfo, OutboxStore, StoredEntry } from './outbox-store.js';
import type { SendResult, Sink } from './sink.js';

/** Builds Redis connections; `blocking` ones are used for XREADGROUP BLOCK only. */
export type RedisFactory = (options: { name: string; blocking: boolean }) => RedisClient;

/** Knobs below the configuration, for tests and embedding. All durations in ms. */
export interface OutboxTuning {
  /** Consumer name in every group. @default `<hostname>:<pid>` */
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

/** Delay before retry number `attempt` (1-based): capped exponential with ±20% jitter. */
export function retryDelayMs(attempt: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  const b = new Backoff({ initialMs, maxMs, multiplier: 2, jitter: 0.2, random });
  let d = initialMs;
  for (let i = 0; i < Math.max(1, attempt); i++) d = b.next();
  return Math.min(d, maxMs);
}

/** Parse an outbox body back into the alert; only the id is required (sinks tolerate the rest). */
function parseAlert(body: string): Alert {
  const v: unknown = JSON.parse(body);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('alert is not a JSON object');
  if (typeof (v as { id?: unknown }).id !== 'string' || (v as { id: string }).id === '') throw new Error('alert has no id');
  return v as Alert;
}

interface LaneContext {
  store: OutboxStore;
  metrics: Metrics;
  logger: Logger;
  maxAttempts: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  maxInFlight: number;
  defaultConcurrency: number;
  keepAliveMs: number;
  /** Aborted by close(): stop reading, cut sleeps short. */
  stop: AbortSignal;
  /** Aborted at the close deadline: abort sends, stop retrying store writes. */
  kill: AbortSignal;
}

/** Delivery to one sink. */
class Lane {
  private readonly held = new Map<string, Promise<void>>();
  private readonly concurrency: number;
  private sending = 0;
  private readonly slotWaiters: (() => void)[] = [];
  private roomWaiter: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private keepAliveTimer: NodeJS.Timeout | undefined;
  heldHighWater = 0;
  sendingHighWater = 0;

  constructor(
    readonly sink: Sink,
    private readonly ctx: LaneContext,
  ) {
    this.concurrency = Math.max(1, sink.concurrency ?? ctx.defaultConcurrency);
  }

  get heldCount(): number {
    return this.held.size;
  }

  start(): void {
    if (this.loop) return;
    this.loop = this.run();
    this.keepAliveTimer = setInterval(() => {
      const ids = [...this.held.keys()];
      if (ids.length === 0) return;
      this.ctx.store.keepAlive(this.sink.name, ids).catch((err: unknown) => {
        this.ctx.logger.debug({ sink: this.sink.name, err: describeError(err) }, 'outbox keep-alive failed');
      });
    }, this.ctx.keepAliveMs);
    this.keepAliveTimer.unref();
  }

  /** Resolves when the read loop ended and every held entry finished or gave way. */
  async stopped(): Promise<void> {
    if (this.keepAliveTimer) clearInterval(this.keepAliveTimer);
    this.roomWaiter?.();
    for (const w of this.slotWaiters.splice(0)) w();
    await this.loop;
    while (this.held.size > 0) await Promise.allSettled([...this.held.values()]);
  }

  private async run(): Promise<void> {
    const { store, logger, stop } = this.ctx;
    const name = this.sink.name;
    const backoff = new Backoff({ initialMs: 200, maxMs: 5_000 });
    let lastError = '';
    while (!stop.aborted) {
      if (this.held.size >= this.ctx.maxInFlight) {
        await new Promise<void>((resolve) => {
          this.roomWaiter = resolve;
        });
        this.roomWaiter = undefined;
        continue;
      }
      let entries: StoredEntry[];
      try {
        entries = await store.read(name, this.ctx.maxInFlight - this.held.size, stop);
        if (lastError !== '') logger.info({ sink: name }, 'outbox reading again');
        lastError = '';
        backoff.reset();
      } catch (err) {
        if (stop.aborted) break;
        const msg = describeError(err);
        if (msg !== lastError) logger.warn({ sink: name, err: msg }, 'outbox read failed; retrying');
        lastError = msg;
        await sleep(backoff.next(), stop);
        continue;
      }
      // Entries read while stopping stay pending: the next start (or another daemon) resumes them.
      if (stop.aborted) break;
      for (const entry of entries) {
        if (this.held.has(entry.id)) continue;
        const task = this.deliver(entry)
          .catch((err: unknown) => {
            logger.error({ sink: name, entry: entry.id, err: describeError(err) }, 'outbox delivery task failed');
          })
          .finally(() => {
            this.held.delete(entry.id);
            this.roomWaiter?.();
          });
        this.held.set(entry.id, task);
        this.heldHighWater = Math.max(this.heldHighWater, this.held.size);
      }
    }
  }

  /** A send slot, or undefined when the outbox stops first. */
  private async acquire(): Promise<(() => void) | undefined> {
    while (this.sending >= this.concurrency) {
      if (this.ctx.stop.aborted) return undefined;
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    }
    if (this.ctx.stop.aborted) return undefined;
    this.sending += 1;
    this.sendingHighWater = Math.max(this.sendingHighWater, this.sending);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.sending -= 1;
      this.slotWaiters.shift()?.();
    };
  }

  private async deliver(entry: StoredEntry): Promise<void> {
    const { store, metrics, logger, stop, maxAttempts } = this.ctx;
    const sink = this.sink.name;
    if (entry.sinks && !entry.sinks.includes(sink)) {
      // A dead letter replayed for another sink.
      await this.persist('ack', () => store.ack(sink, entry.id));
      return;
    }
    let alert: Alert;
    try {
      alert = parseAlert(entry.body);
    } catch (err) {
      await this.giveUp(entry, undefined, { error: `malformed outbox entry: ${describeError(err)}`, attempts: 0 });
      return;
    }
    let used = 0;
    let last: Extract<SendResult, { kind: 'retry' }> | undefined;
    for (;;) {
      if (stop.aborted) return;
      let attempt: number;
      try {
        attempt = await store.attempt(sink, entry.id);
      } catch (err) {
        // Keep delivering while the store is unreachable; the durable count catches up later.
        logger.debug({ sink, entry: entry.id, err: describeError(err) }, 'outbox attempt count not stored');
        attempt = used + 1;
      }
      attempt = Math.max(attempt, used + 1);
      used = attempt;
      if (attempt > maxAttempts) {
        // Counted attempts from an earlier run already used up the budget.
        await this.giveUp(entry, alert, {
          error: last?.error ?? 'attempt limit reached (attempts made before a restart)',
          status: last?.status,
          responseBody: last?.body,
          attempts: attempt - 1,
        });
        return;
      }
      const release = await this.acquire();
      if (!release) return;
      let result: SendResult;
      try {
        result = await this.sink.send(alert, entry.body, this.ctx.kill);
      } catch (err) {
        result = { kind: 'retry', error: describeError(err) };
      } finally {
        release();
      }
      if (result.kind === 'ok') {
        metrics.deliveries.inc({ sink, status: 'ok' });
        metrics.deliverySeconds.observe({ sink }, Math.max(0, Date.now() - entry.enqueuedAt) / 1000);
        logger.debug({ sink, alertId: alert.id, attempt, status: result.status }, 'alert delivered');
        await this.persist('ack', () => store.ack(sink, entry.id));
        return;
      }
      if (result.kind === 'fail') {
        await this.giveUp(entry, alert, { error: result.error, status: result.status, responseBody: result.body, attempts: attempt });
        return;
      }
      metrics.deliveries.inc({ sink, status: 'retry' });
      last = result;
      if (attempt >= maxAttempts) {
        await this.giveUp(entry, alert, { error: result.error, status: result.status, responseBody: result.body, attempts: attempt });
        return;
      }
      let delay = retryDelayMs(attempt, this.ctx.backoffInitialMs, this.ctx.backoffMaxMs);
      if (result.retryAfterMs !== undefined) delay = Math.min(Math.max(delay, result.retryAfterMs), this.ctx.backoffMaxMs);
      logger.warn(
        { sink, alertId: alert.id, attempt, maxAttempts, status: result.status, err: result.error, retryAfterMs: result.retryAfterMs, retryInMs: delay },
        'alert delivery failed; will retry',
      );
      await sleep(delay, stop);
    }
  }

  private async giveUp(entry: StoredEntry, alert: Alert | undefined, info: DeadLetterInfo): Promise<void> {
    const sink = this.sink.name;
    this.ctx.metrics.deliveries.inc({ sink, status: 'dead' });
    this.ctx.logger.error(
      {
        sink,
        alertId: alert?.id,
        entry: entry.id,
        attempts: info.attempts,
        status: info.status,
        body: info.responseBody !== undefined ? truncate(info.responseBody, 512) : undefined,
        err: info.error,
      },
      'alert delivery gave up; moved to dead letters',
    );
    await this.persist('dead-letter', () => this.ctx.store.deadLetter(sink, entry, info));
  }

  /** Retry a store write (ack, dead letter) until it lands or the close deadline passes. */
  private async persist(what: string, write: () => Promise<void>): Promise<void> {
    const backoff = new Backoff({ initialMs: 100, maxMs: 2_000 });
    for (;;) {
      try {
        await write();
        return;
      } catch (err) {
        this.ctx.metrics.deliveries.inc({ sink: this.sink.name, status: 'error' });
        if (this.ctx.kill.aborted) {
          this.ctx.logger.warn({ sink: this.sink.name, what, err: describeError(err) }, 'outbox write abandoned at shutdown; entry will be delivered again');
          return;
        }
        this.ctx.logger.warn({ sink: this.sink.name, what, err: describeError(err) }, 'outbox write failed; retrying');
        await sleep(backoff.next(), this.ctx.kill);
      }
    }
  }
}

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
    for (;;) {
      try {
        const { lost } = await this.store.append(body);
        const worst = Math.max(0, ...Object.values(lost));
        if (worst > 0) {
          this.deps.metrics.outboxTrimmed.inc(worst);
          this.deps.logger.error(
            { lost, maxLen: this.cfg.outboxMaxLen },
            'outbox length cap dropped undelivered alerts; raise outbox_max_len or fix the sink',
          );
        }
        return;
      } catch (err) {
        if (this.closing || Date.now() >= deadline) throw err;
        this.deps.logger.warn({ alertId: alert.id, err: describeError(err) }, 'outbox write failed; retrying');
        await sleep(backoff.next(), this.stopCtl.signal);
      }
    }
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
    consumer: tuning.consumerName ?? `${cfg.hostname || osHostname()}:${process.pid}`,
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
