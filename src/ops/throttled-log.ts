/**
 * Rate-limited log lines for failures that can repeat thousands of times a second (a sink
 * refusing every alert, a full decision buffer): at most one line per key per period, and the
 * next line that gets through says how many were suppressed in between.
 */
import type { Logger } from 'pino';

export class ThrottledLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly logger: Logger,
    private readonly everyMs: number,
  ) {}

  /** Log at most once per period per key, reporting how many were suppressed. */
  log(level: 'warn' | 'error', key: string, fields: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    const last = this.last.get(key);
    if (last && now - last.at < this.everyMs) {
      last.suppressed++;
      return;
    }
    this.last.set(key, { at: now, suppressed: 0 });
    this.logger[level]({ ...fields, suppressed: last?.suppressed ?? 0 }, msg);
  }
}
