/**
 * Capped exponential backoff with jitter, shared by the Falco stream reconnects and webhook
 * retries, plus an abortable sleep that never keeps the process alive on its own.
 */

/** Backoff settings. All durations in milliseconds. */
export interface BackoffOptions {
  /** First delay. @default 1000 */
  initialMs?: number;
  /** Growth factor per attempt. @default 1.6 */
  multiplier?: number;
  /** Upper bound for a delay (before jitter). @default 120000 */
  maxMs?: number;
  /** Relative jitter: each delay is spread uniformly over ±jitter. @default 0.2 */
  jitter?: number;
  /** Random source in [0,1); injectable for tests. @default Math.random */
  random?: () => number;
}

export class Backoff {
  private readonly initialMs: number;
  private readonly multiplier: number;
  private readonly maxMs: number;
  private readonly jitter: number;
  private readonly random: () => number;
  private nextBase: number;
  private attemptCount = 0;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? 1000;
    this.multiplier = options.multiplier ?? 1.6;
    this.maxMs = options.maxMs ?? 120_000;
    this.jitter = options.jitter ?? 0.2;
    this.random = options.random ?? Math.random;
    this.nextBase = this.initialMs;
  }

  /** Number of delays handed out since the last reset. */
  get attempts(): number {
    return this.attemptCount;
  }

  /** The next delay in ms; grows the following one. */
  next(): number {
    const base = Math.min(this.nextBase, this.maxMs);
    this.nextBase = Math.min(base * this.multiplier, this.maxMs);
    this.attemptCount += 1;
    const spread = base * this.jitter;
    return Math.max(0, Math.round(base - spread + this.random() * 2 * spread));
  }

  /** Back to the initial delay, e.g. after a connection stayed healthy for a while. */
  reset(): void {
    this.nextBase = this.initialMs;
    this.attemptCount = 0;
  }
}

/**
 * Resolves after `ms`, or early (without rejecting) when `signal` aborts. The timer is
 * unref'd so a pending sleep never holds the process open.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    timer.unref();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
