/**
 * The alert webhook: POSTs the exact outbox bytes of each alert, signed with HMAC-SHA256 when a
 * secret is configured, with the alert id in `X-T1612D-Delivery` so receivers can deduplicate
 * the redeliveries that at-least-once delivery implies.
 */
import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { Alert } from '../model/alert.js';
import { posterFor, type EndpointOptions, type HttpPoster, type TlsOptions } from './http.js';
import { userAgent, type SendResult, type Sink } from './sink.js';

export interface WebhookSinkOptions extends EndpointOptions {
  /** HMAC-SHA256 key; adds `X-T1612D-Signature: sha256=<hex>`. */
  secret?: string | undefined;
  /** Extra headers (e.g. Authorization). They cannot replace the t1612d headers. */
  headers?: Record<string, string>;
  /** @default 'webhook' */
  name?: string;
}

/** Headers the sink owns; custom headers with these names are ignored. */
const OWN_HEADERS = new Set(['content-type', 'content-length', 'user-agent', 'x-t1612d-delivery', 'x-t1612d-signature', 'host']);

/** `sha256=<hex HMAC-SHA256 of body>`: the `X-T1612D-Signature` value. */
export function signBody(secret: string, body: Buffer | string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

export class WebhookSink implements Sink {
  readonly name: string;
  readonly concurrency: number;
  private readonly http: HttpPoster;
  private readonly baseHeaders: Record<string, string>;

  constructor(private readonly options: WebhookSinkOptions) {
    this.name = options.name ?? 'webhook';
    this.concurrency = options.concurrency;
    this.http = posterFor(this.name, options);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(options.headers ?? {})) {
      if (OWN_HEADERS.has(k.toLowerCase())) {
        options.logger.warn({ sink: this.name, header: k }, 'custom webhook header ignored: t1612d sets it itself');
        continue;
      }
      headers[k.toLowerCase()] = v;
    }
    headers['content-type'] = 'application/json';
    headers['user-agent'] = userAgent();
    this.baseHeaders = headers;
  }

  static fromConfig(cfg: Config, logger: Logger): WebhookSink | undefined {
    if (!cfg.webhookUrl) return undefined;
    return new WebhookSink({
      url: cfg.webhookUrl,
      secret: cfg.webhookSecret,
      headers: cfg.webhookHeaders,
      timeoutMs: cfg.webhookTimeoutMs,
      concurrency: cfg.webhookConcurrency,
      tls: tlsFromConfig(cfg),
      logger,
    });
  }

  async send(alert: Alert, body: string, signal?: AbortSignal): Promise<SendResult> {
    const bytes = Buffer.from(body, 'utf8');
    const headers: Record<string, string> = { ...this.baseHeaders, 'x-t1612d-delivery': String(alert.id) };
    if (this.options.secret) headers['x-t1612d-signature'] = signBody(this.options.secret, bytes);
    return this.http.post(bytes, headers, signal);
  }

  close(): Promise<void> {
    return this.http.close();
  }
}

/** The webhook TLS settings; Falcosidekick uses the same ones. */
export function tlsFromConfig(cfg: Config): TlsOptions {
  return {
    caFile: cfg.webhookCaFile,
    certFile: cfg.webhookCertFile,
    keyFile: cfg.webhookKeyFile,
    insecure: cfg.webhookInsecure,
  };
}
