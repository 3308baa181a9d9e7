/**
 * Delivery to one sink (a "lane"): reads entries from the outbox store, sends them with at
 * most the sink's `concurrency` requests in flight and at most `maxInFlight` entries held in
 * memory, acknowledges on success, retries retryable failures with capped exponential backoff
 * and jitter (honouring Retry-After), and dead-letters an entry after a permanent failure or
 * the attempt budget. Attempts are counted in the store so a restart does not reset them.
 */
import type { Logger } from 'pino';
import type { Alert } from '../model/alert.js';
import { describeError } from '../model/errors.js';
import { Backoff, sleep } from '../ops/backoff.js';
import { truncate } from '../ops/logger.js';
import type { Metrics } from '../ops/metrics.js';
import type { DeadLetterInfo, OutboxStore, StoredEntry } from './outbox-store.js';
import type { SendResult, Sink } from './sink.js';

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

/** What every lane shares, handed in by the outbox. */
export interface LaneContext {
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
export class Lane {
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
            logger.error({ sink: name, entry: entry.id, err }, 'outbox delivery task failed');
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
      // Take a send slot before counting the attempt: a stop while waiting for the slot must
      // not use up an attempt that was never made.
      const release = await this.acquire();
      if (!release) return;
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
        release();
        // Counted attempts from an earlier run already used up the budget.
        await this.giveUp(entry, alert, {
          error: last?.error ?? 'attempt limit reached (attempts made before a restart)',
          status: last?.status,
          responseBody: last?.body,
          attempts: attempt - 1,
        });
        return;
      }
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
