/**
 * The sink contract shared by every alert destination (webhook, Falcosidekick, stdout), and
 * the one place that decides which HTTP answers are worth retrying.
 */
import { readFileSync } from 'node:fs';
import type { Alert } from '../model/alert.js';

/** How one delivery attempt ended. */
export type SendResult =
  /** Delivered (2xx, or written). */
  | { kind: 'ok'; status?: number }
  /** Worth another attempt later: network error, timeout, 408, 429, 5xx. */
  | { kind: 'retry'; error: string; status?: number; retryAfterMs?: number; body?: string }
  /** Permanent: retrying cannot help (other 4xx, 3xx, unwritable output). Dead-lettered at once. */
  | { kind: 'fail'; error: string; status?: number; body?: string };

/** An alert destination. The outbox calls `send` with bounded concurrency and retries per the result. */
export interface Sink {
  /** Stable name: metric label, consumer group name, dead-letter `sink` field. */
  readonly name: string;
  /** Largest number of concurrent `send` calls this sink wants. @default cfg.webhookConcurrency */
  readonly concurrency?: number;
  /**
   * Deliver one alert. `body` is the exact JSON stored in the outbox (the webhook sends these
   * bytes). Must not throw for delivery failures; a throw is treated as a retryable error.
   * `signal` aborts the attempt when the outbox is forced to stop.
   */
  send(alert: Alert, body: string, signal?: AbortSignal): Promise<SendResult>;
  /** Release connections. Called once by the outbox that owns the sink. */
  close?(): Promise<void>;
}

/** HTTP statuses that are retried; every other non-2xx status fails permanently. */
export const RETRYABLE_STATUSES: ReadonlySet<number> = new Set([408, 429]);

/** True for 408, 429 and every 5xx. */
export function isRetryableStatus(status: number): boolean {
  return RETRYABLE_STATUSES.has(status) || (status >= 500 && status <= 599);
}

/**
 * `Retry-After` as milliseconds from `now`: delta-seconds (`120`) or an HTTP date. Undefined
 * when absent or unparseable; a date in the past gives 0.
 */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined) return undefined;
  const text = v.trim();
  if (/^\d+$/.test(text)) {
    const s = Number(text);
    return Number.isSafeInteger(s) ? s * 1000 : undefined;
  }
  // HTTP-date (IMF-fixdate and the obsolete forms Date.parse also reads); require a weekday or
  // month name so bare garbage like "soon" or "1.5" is not taken for a date.
  if (!/[A-Za-z]{3}/.test(text)) return undefined;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

let cachedVersion: string | undefined;

/** `t1612d/<package version>` for the User-Agent header. */
export function userAgent(): string {
  if (cachedVersion === undefined) {
    cachedVersion = '0.0.0';
    // src/deliver/x.ts and dist/deliver/x.js both sit two levels below the package root.
    try {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
      if (typeof pkg.version === 'string') cachedVersion = pkg.version;
    } catch {
      // A missing package.json only costs the version in the header.
    }
  }
  return `t1612d/${cachedVersion}`;
}
