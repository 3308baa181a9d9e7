/**
 * The bounded queue between the Falco sources and the correlator. Sources push normalised
 * events; the intake counts each one once in `t1612d_falco_events_total{source,kind}` and
 * hands them, in arrival order, to one consumer. The consumer may return a promise to apply
 * backpressure; while it is pending, events wait here.
 *
 * Two ways in:
 * - `offer()` refuses when the queue is full (HTTP ingest answers 503 + Retry-After);
 * - `offerBatch()` takes a whole HTTP body or nothing, and has it in the write-ahead log before
 *   it returns (the ingest answers 200 only after that);
 * - `push()` always accepts (the gRPC source cannot un-receive a message); it stops polling
 *   Falco while `full` is true and waits on `whenWritable()`.
 *
 * With a write-ahead log every event gets a sequence number and a decide token on the way in
 * (except those `needsLog` says the consumer settles on arrival: nothing to replay for them);
 * `handedSeq` tells the daemon how far the consumer has got, so the log can be trimmed once
 * those events are decided. Events read back from the log come in through `pushReplayed()`
 * with their original number and token, so they are decided the same way again.
 */
import type { Logger } from 'pino';
import { describeError } from '../model/errors.js';
import type { Metrics } from '../ops/metrics.js';
import { ThrottledLog } from '../ops/throttled-log.js';
import { kindOfTags, type FalcoEvent, type SourceName } from '../model/event.js';
import type { Wal, WalRecord, WalStamp } from './wal.js';

/** `token`: the decide token persisted with the event (write-ahead log), when there is one. */
export type EventConsumer = (ev: FalcoEvent, source: SourceName, token?: string) => void | Promise<void>;

export interface IntakeOptions {
  /** Queue bound for `offer()`. */
  capacity: number;
  metrics: Metrics;
  logger: Logger;
  consumer: EventConsumer;
  /** Write-ahead log every event is appended to before it is queued (unless `needsLog` says no). */
  wal?: Wal | undefined;
  /**
   * Whether an event must be in the write-ahead log: false for one the consumer settles on
   * arrival with nothing a crash could lose (Correlator.needsLog). Unset: every event is logged.
   */
  needsLog?: (ev: FalcoEvent) => boolean;
  /** Called after the consumer settled a logged event (`handedSeq` moved). */
  onHanded?: () => void;
}

interface Item {
  ev: FalcoEvent;
  source: SourceName;
  seq?: number;
  token?: string;
}

/** Longest stretch the queue is drained without yielding to the event loop. */
const DRAIN_SLICE_MS = 5;
/** Invalid events are logged at most once per source this often (with the suppressed count). */
const INVALID_LOG_EVERY_MS = 60_000;

export class Intake {
  /** Slots before `head` are cleared (undefined) so drained events can be collected. */
  private readonly queue: (Item | undefined)[] = [];
  private head = 0;
  private draining = false;
  private waiters: (() => void)[] = [];
  private belowWaiters: { n: number; resolve: () => void }[] = [];
  private idleWaiters: (() => void)[] = [];
  private readonly invalidLog: ThrottledLog;
  private handed = 0;

  constructor(private readonly opts: IntakeOptions) {
    this.invalidLog = new ThrottledLog(opts.logger, INVALID_LOG_EVERY_MS);
    opts.metrics.intakeDepthFrom(() => this.size);
  }

  /** Sequence number of the last logged event the consumer has taken and settled (0: none). */
  get handedSeq(): number {
    return this.handed;
  }

  /** Events waiting. */
  get size(): number {
    return this.queue.length - this.head;
  }

  /** Queue bound for `offer()` / `offerBatch()`. */
  get capacity(): number {
    return this.opts.capacity;
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

  /**
   * Enqueue a whole batch if it fits, else nothing (false). `texts` are the JSON texts the
   * events were parsed from, where known (the log stores those). With a write-ahead log the batch is
   * written (to the page cache, fsync per `wal_fsync_interval`) before this returns; a write
   * failure throws and nothing is queued.
   */
  offerBatch(events: readonly FalcoEvent[], source: SourceName, texts?: readonly (Buffer | undefined)[]): boolean {
    if (!this.hasRoom(events.length)) return false;
    const stamped = this.logBatch(events, source, texts);
    const metrics = this.opts.metrics;
    events.forEach((ev, i) => {
      metrics.countFalcoEvent(source, kindOfTags(ev.tags));
      const r = stamped?.[i];
      this.queue.push(r ? { ev, source, seq: r.seq, token: r.token } : { ev, source });
    });
    this.startDrain();
    return true;
  }

  /** The stamps of a batch's logged events, by index (none: no log, or nothing to log). */
  private logBatch(events: readonly FalcoEvent[], source: SourceName, texts?: readonly (Buffer | undefined)[]): (WalStamp | undefined)[] | undefined {
    const wal = this.opts.wal;
    if (!wal) return undefined;
    const needs = this.opts.needsLog;
    if (!needs) return wal.appendBatch(events, source, texts);
    const picked: number[] = [];
    for (let i = 0; i < events.length; i++) if (needs(events[i] as FalcoEvent)) picked.push(i);
    if (picked.length === events.length) return wal.appendBatch(events, source, texts);
    const stamps = wal.appendBatch(
      picked.map((i) => events[i] as FalcoEvent),
      source,
      texts && picked.map((i) => texts[i]),
    );
    const byIndex: (WalStamp | undefined)[] = [];
    picked.forEach((i, k) => (byIndex[i] = stamps[k]));
    return byIndex;
  }

  /** Enqueue unconditionally (may exceed capacity; see class comment). */
  push(ev: FalcoEvent, source: SourceName): void {
    const wal = this.opts.wal;
    if (wal && (this.opts.needsLog?.(ev) ?? true)) {
      // Written at the end of this turn of the event loop (one write for a burst of messages).
      const r = wal.append(ev, source);
      if (r) {
        this.enqueue({ ev, source, seq: r.seq, token: r.token });
        return;
      }
    }
    this.enqueue({ ev, source });
  }

  /** Enqueue an event read back from the write-ahead log (already logged; counted again). */
  pushReplayed(rec: WalRecord): void {
    this.enqueue({ ev: rec.ev, source: rec.source, seq: rec.seq, token: rec.token });
  }

  private enqueue(item: Item): void {
    this.opts.metrics.countFalcoEvent(item.source, kindOfTags(item.ev.tags));
    this.queue.push(item);
    this.startDrain();
  }

  private startDrain(): void {
    if (!this.draining) {
      this.draining = true;
      setImmediate(() => void this.drain());
    }
  }

  /**
   * Count and log an event a source could not normalise. Logged at most once per source per
   * minute (keyed by source, never by the reason, which quotes input), with the number
   * suppressed since, so a flood of garbage cannot flood the log or grow a map.
   */
  invalid(source: SourceName, err: unknown, sample?: string): void {
    this.opts.metrics.falcoEvents.inc({ source, kind: 'invalid' });
    this.invalidLog.log(
      'warn',
      source,
      { source, reason: describeError(err).slice(0, 200), sample: sample === undefined ? undefined : sample.slice(0, 120) },
      'invalid falco event',
    );
  }

  /** Resolves once the queue is below capacity. */
  whenWritable(): Promise<void> {
    if (!this.full) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Resolves once fewer than `n` events are queued. */
  whenBelow(n: number): Promise<void> {
    if (this.size < n) return Promise.resolve();
    return new Promise((resolve) => this.belowWaiters.push({ n, resolve }));
  }

  /** Resolves once every queued event has been handed to the consumer and settled. */
  whenIdle(): Promise<void> {
    if (this.size === 0 && !this.draining) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(): Promise<void> {
    let handled = 0;
    let sliceStart = performance.now();
    try {
      while (this.head < this.queue.length) {
        // Yield now and then so a burst cannot starve the HTTP server and gRPC I/O.
        if (++handled % 64 === 0 && performance.now() - sliceStart >= DRAIN_SLICE_MS) {
          await new Promise<void>((r) => setImmediate(r));
          sliceStart = performance.now();
        }
        const item = this.queue[this.head];
        this.queue[this.head] = undefined;
        this.head++;
        if (item === undefined) continue;
        if (this.head > 4096 && this.head * 2 > this.queue.length) {
          this.queue.splice(0, this.head);
          this.head = 0;
        }
        try {
          const r = this.opts.consumer(item.ev, item.source, item.token);
          if (r !== undefined) await r;
        } catch (err) {
          // The consumer owns its failures; this is a last line of defence, never a crash.
          this.opts.logger.error({ err, rule: item.ev.rule }, 'event consumer failed');
        }
        if (item.seq !== undefined) {
          this.handed = item.seq;
          this.opts.onHanded?.();
        }
        if (!this.full && this.waiters.length > 0) this.wake();
        if (this.belowWaiters.length > 0) this.wakeBelow();
      }
    } finally {
      this.queue.length = 0;
      this.head = 0;
      this.draining = false;
      this.wake();
      this.wakeBelow();
      const idle = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of idle) w();
    }
  }

  private wakeBelow(): void {
    const size = this.size;
    const still: { n: number; resolve: () => void }[] = [];
    for (const w of this.belowWaiters) {
      if (size < w.n) w.resolve();
      else still.push(w);
    }
    this.belowWaiters = still;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }
}
