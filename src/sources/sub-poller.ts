/**
 * SubPoller: keeps one Falco `sub` stream asking for events. Falco's server writes nothing
 * until it reads a request, then writes its whole queue and reads the next request; a request
 * that finds the queue empty gets no answer at all. Owns the one poll timer of a stream;
 * nothing else writes requests.
 */
import type { Intake } from './intake.js';

/**
 * While messages flow, at most one request per this many ms goes out behind them. Falco reads
 * it once the burst it is writing is done, so a steady flow never waits for a timer.
 */
export const PIPELINE_MS = 2;

/** First idle re-ask after the last message; doubles per silent interval up to the poll interval. */
export const IDLE_FIRST_MS = 2;

/** The one thing the poller needs from the call: send one empty `request`. */
export interface RequestWriter {
  write(request: Record<string, never>): unknown;
}

/**
 * Pipelined polling: a request when the stream opens; while messages arrive, another request
 * at most every PIPELINE_MS, so one is always waiting at Falco behind the burst (no empty-answer
 * gap, no timer on the hot path); once messages stop, re-ask after IDLE_FIRST_MS and back off
 * by doubling to the poll interval, so an idle Falco is asked about as often as before and a
 * Falco that went quiet for a moment is asked again within milliseconds. While the Intake is
 * full no request goes out; it waits for room instead.
 */
export class SubPoller {
  private timer: NodeJS.Timeout | undefined;
  private due = 0;
  private lastMessageAt = 0;
  private lastRequestAt = 0;
  private idleDelay: number;
  private waitingForRoom = false;
  private stopped = false;
  private readonly firstIdleMs: number;

  constructor(
    private readonly call: RequestWriter,
    private readonly intake: Intake,
    private readonly intervalMs: number,
  ) {
    this.firstIdleMs = Math.min(IDLE_FIRST_MS, intervalMs);
    this.idleDelay = this.firstIdleMs;
  }

  get running(): boolean {
    return !this.stopped;
  }

  start(): void {
    this.poll();
  }

  onMessage(): void {
    const now = Date.now();
    this.lastMessageAt = now;
    this.idleDelay = this.firstIdleMs;
    if (now - this.lastRequestAt >= PIPELINE_MS) this.poll();
    else this.arm(this.idleDelay);
  }

  /** No more requests, no timer left behind. Idempotent. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Fire in `ms` unless the pending timer fires sooner anyway. */
  private arm(ms: number): void {
    if (this.stopped) return;
    const due = Date.now() + ms;
    if (this.timer !== undefined && this.due <= due) return;
    clearTimeout(this.timer);
    this.due = due;
    this.timer = setTimeout(() => this.fire(), ms);
  }

  private fire(): void {
    this.timer = undefined;
    const quietFor = Date.now() - this.lastMessageAt;
    if (quietFor < this.idleDelay) {
      // Messages came since this timer was set: the flow's own requests keep it going.
      this.arm(this.idleDelay - quietFor);
      return;
    }
    this.idleDelay = Math.min(this.idleDelay * 2, this.intervalMs);
    this.poll();
  }

  private poll(): void {
    if (this.stopped) return;
    if (this.intake.full) {
      if (!this.waitingForRoom) {
        this.waitingForRoom = true;
        void this.intake.whenWritable().then(() => {
          this.waitingForRoom = false;
          this.poll();
        });
      }
      return;
    }
    this.call.write({});
    this.lastRequestAt = Date.now();
    this.arm(this.idleDelay);
  }
}
