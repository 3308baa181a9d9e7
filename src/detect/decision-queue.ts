/**
 * The correlator's decision queue: egress events waiting for a first-seen decision, cached IPs
 * waiting for a last-seen refresh, and the loop that works them off in batches against Redis.
 * It owns the outage behaviour: while Redis is unreachable the queue keeps up to
 * `redis_buffer_size` events and retries with backoff; while Redis is up a full queue pushes
 * back on the Intake instead. What a decision means (attribution, alerts) stays in the
 * correlator, which supplies one `round` of store work and says whether it has work of its own.
 */
import type { Logger } from 'pino';
import { describeError } from '../model/errors.js';
import { Backoff } from '../ops/backoff.js';
import type { AttributionResult } from './attribution.js';
import type { EgressSignal } from './classify.js';

/** An egress event waiting for a first-seen decision. */
export interface Pending {
  sig: EgressSignal;
  /** Wall clock when handed in (retention clock). */
  nowMs: number;
  /** performance.now() when handed in (event-to-alert histogram). */
  t0: number;
  token: string;
  /** Computed once the host's stored sessions are loaded; undefined until then. */
  attribution?: AttributionResult | null;
}

export interface DecisionQueueOptions {
  /** Events kept while Redis is unreachable (`redis_buffer_size`). */
  bufferSize: number;
  redisUp: () => boolean;
  logger: Logger;
  /** Store work outside the queue (session writes, host loads, retro claims) is waiting. */
  hasOtherWork: () => boolean;
  /** Nothing outside the queue is in flight (e.g. alerts waiting for redelivery). */
  othersIdle: () => boolean;
  /** One round of store work; throws while the store is unreachable. */
  round: () => Promise<void>;
}

const MAX_TOUCHES = 10_000;
/** Events waiting for a decision while Redis answers, at most (see `full`): five rounds' worth. */
export const UP_LIMIT = 5_000;

/**
 * Under load (a round follows the previous one within COALESCE_MS), a round waits up to
 * COALESCE_MS for MIN_BATCH events, woken by each event that arrives (no polling), so a busy
 * cold path sends a hundred IPs or more per store round trip instead of the few that arrived
 * while the last round was in flight. After a quiet spell the first event goes out at once:
 * latency is only traded for batching while there is a flow to batch, and by at most
 * COALESCE_MS.
 */
export const COALESCE_MS = 4;
export const MIN_BATCH = 100;

function pendingKey(host: string, ip: string): string {
  return `${host}\u0000${ip}`;
}

export class DecisionQueue {
  private readonly pending: Pending[] = [];
  /**
   * Pending count per (host, IP), to coalesce a burst to one unknown IP from a host without
   * builds. Per host: another host's late build signal must still find its own event.
   */
  private readonly pendingIps = new Map<string, number>();
  private readonly touches = new Set<string>();
  private readonly backoff = new Backoff({ initialMs: 100, maxMs: 5_000 });
  private failing = false;
  private running = false;
  private immediate: NodeJS.Immediate | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];
  private roomWaiters: (() => void)[] = [];
  /** Set once the correlator closed: no more retries. */
  private stopped = false;
  /** performance.now() when the last round ended. */
  private lastRoundEnd = -Infinity;
  /** Wakes a gathering round when an event arrives. */
  private arrived: (() => void) | undefined;

  constructor(private readonly opts: DecisionQueueOptions) {}

  /** Egress events waiting for a decision. */
  get length(): number {
    return this.pending.length;
  }

  /** Refreshes are waiting. */
  get hasTouches(): boolean {
    return this.touches.size > 0;
  }

  /**
   * Full: while Redis answers, at UP_LIMIT events (more waiting would not make rounds bigger,
   * only the daemon: the intake and the source push back instead); during an outage at
   * `redis_buffer_size`.
   */
  get full(): boolean {
    return this.pending.length >= this.limit();
  }

  private limit(): number {
    return this.ready ? Math.min(UP_LIMIT, this.opts.bufferSize) : this.opts.bufferSize;
  }

  /** False while Redis is unreachable and decisions are being buffered. */
  get ready(): boolean {
    return !this.failing && this.opts.redisUp();
  }

  get outage(): boolean {
    return this.failing || !this.opts.redisUp();
  }

  /** An event from this host to this IP is already waiting. */
  queued(host: string, ip: string): boolean {
    return this.pendingIps.has(pendingKey(host, ip));
  }

  /** Queue an event; the caller schedules a round once it has noted its own work. */
  add(p: Pending): void {
    this.pending.push(p);
    const key = pendingKey(p.sig.host, p.sig.ip);
    this.pendingIps.set(key, (this.pendingIps.get(key) ?? 0) + 1);
    if (this.arrived && this.pending.length >= MIN_BATCH) this.wakeGather();
  }

  private wakeGather(): void {
    const w = this.arrived;
    this.arrived = undefined;
    w?.();
  }

  /** Resolves when the queue has room again (backpressure), or at stop(). */
  room(): Promise<void> {
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  /** Queue a last-seen refresh; bounded, as refreshes are only an optimisation. */
  touch(ip: string): void {
    if (this.touches.size < MAX_TOUCHES) {
      this.touches.add(ip);
      this.schedule();
    }
  }

  /** The oldest `max` events, still queued until `remove()`. */
  peek(max: number): Pending[] {
    return this.pending.slice(0, max);
  }

  /** Up to `max` IPs waiting for a refresh, still queued until `remove()`. */
  peekTouches(max: number): string[] {
    const out: string[] = [];
    for (const ip of this.touches) {
      if (out.length >= max) break;
      out.push(ip);
    }
    return out;
  }

  /** Drop a decided batch (the first `count` events) and the refreshed IPs. */
  remove(count: number, touched: readonly string[]): void {
    for (const ip of touched) this.touches.delete(ip);
    this.pending.splice(0, count);
  }

  /** An event removed by `remove()` is decided: it no longer coalesces later ones. */
  settle(p: Pending): void {
    const key = pendingKey(p.sig.host, p.sig.ip);
    const n = (this.pendingIps.get(key) ?? 1) - 1;
    if (n <= 0) this.pendingIps.delete(key);
    else this.pendingIps.set(key, n);
  }

  /** Resolves once nothing is queued or in flight (at once after stop()). */
  flush(): Promise<void> {
    if (this.isIdle() || this.stopped) return Promise.resolve();
    this.schedule();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stop retrying and release every waiter. */
  stop(): void {
    this.wakeGather();
    if (this.immediate) clearImmediate(this.immediate);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.immediate = undefined;
    this.retryTimer = undefined;
    this.stopped = true;
    const idle = this.idleWaiters.splice(0);
    for (const w of idle) w();
    this.wakeRoom();
  }

  /** Run a round soon, unless one is running or waiting for its retry. */
  schedule(): void {
    if (this.stopped || this.running || this.immediate || this.retryTimer) return;
    this.immediate = setImmediate(() => {
      this.immediate = undefined;
      void this.tick();
    });
  }

  /** Release flush() waiters if everything is done. */
  resolveIdle(): void {
    if (!this.isIdle()) return;
    const idle = this.idleWaiters.splice(0);
    for (const w of idle) w();
  }

  wakeRoom(): void {
    if (this.roomWaiters.length === 0) return;
    const w = this.roomWaiters.splice(0);
    for (const fn of w) fn();
  }

  private hasWork(): boolean {
    return this.pending.length > 0 || this.touches.size > 0 || this.opts.hasOtherWork();
  }

  private isIdle(): boolean {
    return !this.running && !this.hasWork() && this.opts.othersIdle();
  }

  /** Let events gather until MIN_BATCH are queued or COALESCE_MS have passed; see COALESCE_MS. */
  private async gather(): Promise<void> {
    if (this.stopped || this.pending.length >= MIN_BATCH || this.full) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.wakeGather(), COALESCE_MS);
      this.arrived = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** Entered only from schedule()'s immediate or the retry timer, never while running. */
  private async tick(): Promise<void> {
    this.running = true;
    try {
      // After stop() a round already in flight finishes, but no new one starts.
      while (!this.stopped && this.hasWork()) {
        if (!this.opts.redisUp()) throw new Error('redis is not connected');
        if (this.pending.length < MIN_BATCH && performance.now() - this.lastRoundEnd < COALESCE_MS) await this.gather();
        await this.opts.round();
        this.lastRoundEnd = performance.now();
        if (this.failing) {
          this.failing = false;
          this.backoff.reset();
          this.opts.logger.info({ backlog: this.pending.length }, 'redis reachable again; deciding buffered events');
        }
      }
    } catch (err) {
      if (!this.failing) {
        this.opts.logger.warn({ err: describeError(err), backlog: this.pending.length }, 'redis unavailable; buffering egress decisions');
      }
      this.failing = true;
      this.wakeRoom(); // stop backpressure: while Redis is down, overflow is dropped and counted
      if (!this.stopped) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          void this.tick();
        }, this.backoff.next());
      }
    } finally {
      this.running = false;
      if (this.pending.length < this.limit()) this.wakeRoom();
      // Work left over is waiting for its retry timer, or was stopped: nothing to schedule.
      this.resolveIdle();
    }
  }
}
