/**
 * The bounded queue between the Falco sources and the correlator. Sources push normalised
 * events; the intake counts each one once in `t1612d_falco_events_total{source,kind}` and
 * hands them, in arrival order, to one consumer. The consumer may return a promise to apply
 * backpressure; while it is pending, events wait here.
 *
 * Two ways in:
 * - `offer()` refuses when the queue is full (HTTP ingest answers 503 + Retry-After);
 * - `push()` always accepts (the gRPC source cannot un-receive a message); it stops polling
 *   Falco while `full` is true and waits on `whenWritable()`.
 */
import type { Logger } from 'pino';
import { describeError } from '../model/errors.js';
import type { Metrics } from '../ops/metrics.js';
import { kindOfTags, type FalcoEvent, type SourceName } from '../model/event.js';

export type EventConsumer = (ev: FalcoEvent, source: SourceName) => void | Promise<void>;

export interface IntakeOptions {
  /** Queue bound for `offer()`. */
  capacity: number;
  metrics: Metrics;
  logger: Logger;
  consumer: EventConsumer;
}

interface Item {
  ev: FalcoEvent;
  source: SourceName;
}

export class Intake {
  /** Slots before `head` are cleared (undefined) so drained events can be collected. */
  private readonly queue: (Item | undefined)[] = [];
  private head = 0;
  private draining = false;
  private waiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];
  private readonly invalidLogged = new Map<string, number>();

  constructor(private readonly opts: IntakeOptions) {}

  /** Events waiting. */
  get size(): number {
    return this.queue.length - this.head;
  }

  get full(): boolean {
    return this.size >= this.opts.capacity;
  }

  /** Room for `n` more events via `offer()`? */
  hasRoom(n = 1): boolean {
    return this.size + n <= this.opts.capacity;
  }

  /** Enqueue if there is room; false when full (caller applies backpressure). */
  offer(ev: FalcoEvent, source: SourceName): boolean {
    if (this.full) return false;
    this.push(ev, source);
    return true;
  }

  /** Enqueue unconditionally (may exceed capacity; see class comment). */
  push(ev: FalcoEvent, source: SourceName): void {
    this.opts.metrics.falcoEvents.inc({ source, kind: kindOfTags(ev.tags) });
    this.queue.push({ ev, source });
    this.opts.metrics.intakeDepth.set(this.size);
    if (!this.draining) {
      this.draining = true;
      setImmediate(() => void this.drain());
    }
  }

  /**
   * Count and log an event a source could not normalise. Logged once per distinct reason per
   * minute so a flood of garbage cannot flood the log.
   */
  invalid(source: SourceName, err: unknown, sample?: string): void {
    this.opts.metrics.falcoEvents.inc({ source, kind: 'invalid' });
    const reason = describeError(err);
    const key = `${source}:${reason}`;
    const now = Date.now();
    const last = this.invalidLogged.get(key);
    if (last === undefined || now - last > 60_000) {
      if (this.invalidLogged.size > 1000) this.invalidLogged.clear();
      this.invalidLogged.set(key, now);
      this.opts.logger.warn(
        { source, reason, sample: sample === undefined ? undefined : sample.slice(0, 300) },
        'invalid falco event',
      );
    }
  }

  /** Resolves once the queue is below capacity. */
  whenWritable(): Promise<void> {
    if (!this.full) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Resolves once every queued event has been handed to the consumer and settled. */
  whenIdle(): Promise<void> {
    if (this.size === 0 && !this.draining) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(): Promise<void> {
    let handled = 0;
    try {
      while (this.head < this.queue.length) {
        // Yield now and then so a burst cannot starve the HTTP server and gRPC I/O.
        if (++handled % 512 === 0) await new Promise<void>((r) => setImmediate(r));
        const item = this.queue[this.head];
        this.queue[this.head] = undefined;
        this.head++;
        if (item === undefined) continue;
        if (this.head > 4096 && this.head * 2 > this.queue.length) {
          this.queue.splice(0, this.head);
          this.head = 0;
        }
        try {
          const r = this.opts.consumer(item.ev, item.source);
          if (r !== undefined) await r;
        } catch (err) {
          // The consumer owns its failures; this is a last line of defence, never a crash.
          this.opts.logger.error({ err, rule: item.ev.rule }, 'event consumer failed');
        }
        if (!this.full && this.waiters.length > 0) this.wake();
      }
    } finally {
      this.queue.length = 0;
      this.head = 0;
      this.draining = false;
      this.opts.metrics.intakeDepth.set(0);
      this.wake();
      const idle = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of idle) w();
    }
  }

  private wake(): void {
    this.opts.metrics.intakeDepth.set(this.size);
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }
}
