/**
 * SubPoller: keeps one Falco `sub` stream asking for events. Falco's server writes nothing
 * until it reads a request, then writes its whole queue and waits for the next request, so
 * the client has to poll. Owns the one poll timer of a stream; nothing else writes requests.
 */
import type { Intake } from './intake.js';

/** After a message, a `sub` stream silent this long has finished its burst (Falco's queue ran dry). */
export const QUIET_MS = 10;

/** The one thing the poller needs from the call: send one empty `request`. */
export interface RequestWriter {
  write(request: Record<string, never>): unknown;
}

/**
 * Never more than one timer: a request when the stream opens, one as soon as a burst of
 * messages has gone quiet (ask again at once so a steady flow is not held back), and one
 * whenever nothing arrived for the poll interval. While the Intake is full no request goes
 * out; it waits for room instead.
 */
export class SubPoller {
  private timer: NodeJS.Timeout | undefined;
  private due = 0;
  private lastMessageAt = 0;
  private waitingForRoom = false;
  private stopped = false;
  private readonly quietMs: number;

  constructor(
    private readonly call: RequestWriter,
    private readonly intake: Intake,
    private readonly intervalMs: number,
  ) {
    this.quietMs = Math.min(QUIET_MS, intervalMs);
  }

  get running(): boolean {
    return !this.stopped;
  }

  start(): void {
    this.poll();
  }

  onMessage(): void {
    this.lastMessageAt = Date.now();
    this.arm(this.quietMs);
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
    if (quietFor < this.quietMs) this.arm(this.quietMs - quietFor);
    else this.poll();
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
    this.arm(this.intervalMs);
  }
}
