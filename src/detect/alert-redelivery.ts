/**
 * Handing the correlator's alerts to the alert sink, and retrying the ones it refuses. Refused
 * alerts wait in a bounded in-memory list (overflow is dropped, counted and logged) and are
 * retried on their own backoff timer: a sink problem is not a Redis outage, so it must not
 * stall or slow the decision loop. Also records the event-to-alert latency on success.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { describeError } from '../model/errors.js';
import { Backoff } from '../ops/backoff.js';
import type { Metrics } from '../ops/metrics.js';
import type { ThrottledLog } from '../ops/throttled-log.js';
import type { Alert, AlertSink } from '../model/alert.js';

const MAX_UNDELIVERED = 10_000;

/** An alert and when its triggering event was handed in (performance.now()). */
export interface Undelivered {
  alert: Alert;
  t0: number;
}

export interface AlertRedeliveryDeps {
  sink: AlertSink;
  metrics: Metrics;
  logger: Logger;
  throttle: ThrottledLog;
  /** Called after each retry round, so waiters on "everything delivered" can be released. */
  onIdle: () => void;
}

export class AlertRedelivery {
  private undelivered: Undelivered[] = [];
  private readonly backoff = new Backoff({ initialMs: 100, maxMs: 5_000 });
  private timer: NodeJS.Timeout | undefined;
  private delivering = false;
  private stopped = false;

  constructor(private readonly deps: AlertRedeliveryDeps) {}

  /** Refused alerts waiting for another attempt. */
  get backlog(): number {
    return this.undelivered.length;
  }

  /** Nothing waiting and no retry round running. */
  get idle(): boolean {
    return this.undelivered.length === 0 && !this.delivering;
  }

  /**
   * Hand one alert to the sink; a refusal keeps it for a later retry instead of throwing.
   * Resolves true when the sink took it at once.
   */
  async deliver(u: Undelivered): Promise<boolean> {
    try {
      await this.deps.sink.enqueue(u.alert);
      this.deps.metrics.eventToAlertSeconds.observe((performance.now() - u.t0) / 1000);
      return true;
    } catch (err) {
      this.deps.throttle.log('warn', 'sink-failed', { err: describeError(err), alert: u.alert.id }, 'alert sink refused an alert; will retry');
      if (this.undelivered.length >= MAX_UNDELIVERED) {
        this.deps.metrics.droppedEvents.inc({ reason: 'sink_backlog_full' });
        this.deps.logger.error({ alert: u.alert }, 'alert sink backlog full: alert dropped');
        return false;
      }
      this.undelivered.push(u);
      this.schedule();
      return false;
    }
  }

  /** No more retries (correlator closed); what is still waiting stays undelivered. */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.stopped = true;
  }

  private schedule(): void {
    if (this.timer || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.redeliver();
    }, this.backoff.next());
  }

  private async redeliver(): Promise<void> {
    if (this.delivering) return;
    this.delivering = true;
    try {
      const batch = this.undelivered.splice(0);
      for (const u of batch) await this.deliver(u);
      if (this.undelivered.length === 0) this.backoff.reset();
    } finally {
      this.delivering = false;
      this.deps.onIdle();
    }
  }
}
