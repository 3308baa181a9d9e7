/**
 * The outbox implementation behind `Outbox`: stores each alert before anything is sent,
 * runs one `Lane` per sink once started, keeps the pending / dead-letter gauges fresh, and
 * owns shutdown — stop reading, cut retry sleeps short, let in-flight sends finish until the
 * deadline, then close sinks, store and Redis connections. Unfinished entries stay pending for
 * the next start (or another daemon) to resume. Built by `createOutbox` in outbox-factory.ts.
 */
import { setMaxListeners } from 'node:events';
import type { Config } from '../config/config.js';
import type { Alert } from '../model/alert.js';
import { ClosedError, describeError } from '../model/errors.js';
import { Backoff, sleep } from '../ops/backoff.js';
import { waitReady, type RedisClient } from '../store/redis/connection.js';
import { Lane, type LaneContext } from './outbox-lane.js';
import type { OutboxStore } from './outbox-store.js';
import type { Outbox, OutboxDeps, OutboxStats, OutboxTuning } from './outbox-types.js';

export class OutboxImpl implements Outbox {
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

/** Quit politely, or drop the connection if Redis does not answer within a second. */
export async function quitClient(c: RedisClient): Promise<void> {
  if (c.status === 'end') return;
  try {
    await Promise.race([c.quit(), sleep(1_000).then(() => Promise.reject(new Error('quit timed out')))]);
  } catch {
    c.disconnect();
  }
}
