/**
 * One HTTP POST with everything the HTTP sinks share: an undici Agent per sink (pool sized to
 * the sink's concurrency, custom CA, client certificate, explicit insecure mode), a per-request
 * timeout covering the whole exchange, a size-capped read of the response body, and the mapping
 * of the outcome to a SendResult (2xx ok; network errors, timeouts, 408, 429, 5xx retry; the
 * rest fail permanently).
 */
import { readFileSync } from 'node:fs';
import { Agent, request } from 'undici';
import type { Logger } from 'pino';
import { describeError } from '../model/errors.js';
import { truncate } from '../ops/logger.js';
import { isRetryableStatus, parseRetryAfter, type SendResult } from './sink.js';

/** TLS settings for https URLs. Files are read once, at construction. */
export interface TlsOptions {
  /** PEM CA bundle trusted instead of the system roots. */
  caFile?: string | undefined;
  /** PEM client certificate (mutual TLS); needs `keyFile`. */
  certFile?: string | undefined;
  keyFile?: string | undefined;
  /** Skip server certificate verification. Logged as a warning once. @default false */
  insecure?: boolean;
}

export interface HttpPosterOptions {
  /** Sink name, for logs. */
  name: string;
  url: string;
  /** Whole-request deadline (connect, headers, body). */
  timeoutMs: number;
  /** Connection pool size. */
  connections: number;
  tls?: TlsOptions;
  logger: Logger;
}

/** What a sink knows about its endpoint; `posterFor` turns it into an HttpPoster. */
export interface EndpointOptions {
  url: string;
  timeoutMs: number;
  /** Requests in flight at once; also the connection pool size. */
  concurrency: number;
  tls?: TlsOptions | undefined;
  logger: Logger;
}

/** The poster for a sink named `name`: one connection per allowed concurrent request. */
export function posterFor(name: string, o: EndpointOptions): HttpPoster {
  return new HttpPoster({ name, url: o.url, timeoutMs: o.timeoutMs, connections: o.concurrency, ...(o.tls ? { tls: o.tls } : {}), logger: o.logger });
}

/** Response bodies are read up to this many bytes: enough for an error message in a log line. */
const MAX_BODY_BYTES = 2048;

export class HttpPoster {
  private readonly agent: Agent;
  readonly url: string;

  constructor(private readonly options: HttpPosterOptions) {
    this.url = options.url;
    const tls = options.tls ?? {};
    const connect: Record<string, unknown> = { rejectUnauthorized: !tls.insecure };
    if (tls.caFile) connect['ca'] = readFileSync(tls.caFile);
    if (tls.certFile) connect['cert'] = readFileSync(tls.certFile);
    if (tls.keyFile) connect['key'] = readFileSync(tls.keyFile);
    if (tls.insecure) {
      options.logger.warn(
        { sink: options.name, url: redactUrl(options.url) },
        'TLS certificate verification is disabled for this sink (insecure); alerts can be intercepted',
      );
    }
    this.agent = new Agent({
      connections: Math.max(1, options.connections),
      connect,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      connectTimeout: options.timeoutMs,
    });
  }

  /** POST `body` with `headers`; never throws. */
  async post(body: Buffer, headers: Record<string, string>, signal?: AbortSignal): Promise<SendResult> {
    const timeout = AbortSignal.timeout(this.options.timeoutMs);
    const combined = signal ? AbortSignal.any([timeout, signal]) : timeout;
    try {
      const res = await request(this.url, {
        method: 'POST',
        body,
        headers,
        dispatcher: this.agent,
        signal: combined,
      });
      const text = await readCapped(res.body);
      const status = res.statusCode;
      if (status >= 200 && status <= 299) return { kind: 'ok', status };
      const error = `HTTP ${status}`;
      if (isRetryableStatus(status)) {
        const retryAfterMs = parseRetryAfter(res.headers['retry-after']);
        return { kind: 'retry', error, status, body: text, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) };
      }
      return { kind: 'fail', error, status, body: text };
    } catch (err) {
      if (timeout.aborted) return { kind: 'retry', error: `timeout after ${this.options.timeoutMs}ms` };
      if (signal?.aborted) return { kind: 'retry', error: 'aborted: outbox closing' };
      return { kind: 'retry', error: describeNetworkError(err) };
    }
  }

  async close(): Promise<void> {
    try {
      await this.agent.close();
    } catch {
      await this.agent.destroy().catch(() => undefined);
    }
  }
}

/** Read at most MAX_BODY_BYTES, then drop the rest so the connection is freed. */
async function readCapped(body: AsyncIterable<Buffer> & { destroy(): unknown }): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= MAX_BODY_BYTES) {
        body.destroy();
        break;
      }
    }
  } catch {
    // A body cut off mid-way still leaves us the status code, which is what decides.
  }
  return truncate(Buffer.concat(chunks).subarray(0, MAX_BODY_BYTES).toString('utf8'), 512);
}

/** `ECONNREFUSED 127.0.0.1:9` style text from undici's nested causes. */
function describeNetworkError(err: unknown): string {
  const parts: string[] = [];
  let cur: unknown = err;
  for (let i = 0; i < 4 && cur; i++) {
    if (cur instanceof Error) {
      const code = (cur as { code?: unknown }).code;
      const text = typeof code === 'string' && !cur.message.includes(code) ? `${code}: ${describeError(cur)}` : describeError(cur);
      if (!parts.includes(text)) parts.push(text);
      cur = cur.cause;
    } else {
      parts.push(String(cur));
      break;
    }
  }
  return parts.join(' <- ') || 'network error';
}

/** URL without credentials or query (which may carry tokens), for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '[invalid url]';
  }
}
