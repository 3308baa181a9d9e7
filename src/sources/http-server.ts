/**
 * The daemon's HTTP endpoint: liveness (`/healthz`), readiness (`/readyz`), Prometheus
 * metrics (`/metrics`) and the Falco ingest (`POST /falco`, `POST /`), a drop-in target for
 * Falco's `http_output` (Falco >= 0.44) and Falcosidekick-style senders.
 *
 * The ingest answers as soon as the events are enqueued, never after processing: Falco's
 * http_output posts synchronously, so a slow receiver would stall Falco itself. A body is
 * taken whole or not at all (503 + Retry-After when the intake has no room), so a sender's
 * retry never duplicates events.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createGunzip, createInflate, type Gunzip, type Inflate } from 'node:zlib';
import { describeError, InvalidEventError } from '../model/errors.js';
import { parseIngestBody, type ParsedEvents } from './http-parse.js';
import type { Intake } from './intake.js';
import { truncate, type Logger } from '../ops/logger.js';
import type { Metrics } from '../ops/metrics.js';

/** What `/readyz` reports: ready only when every check the daemon cares about passes. */
export interface Readiness {
  ready: boolean;
  checks: Record<string, boolean>;
}

export interface HttpServerOptions {
  /** `host:port` to listen on (`[::1]:2802`, `:2802` for all interfaces); port 0 picks one. */
  address: string;
  /**
   * When set, ingest requires `Authorization: Bearer <token>` — or Basic auth whose password is
   * the token, which is what Falco's http_output sends for `http://user:<token>@host/falco`
   * (it has no header option). Health and metrics need no token.
   */
  token?: string;
  /** Largest ingest body in bytes, both as sent and after decompression. */
  bodyLimit: number;
  /** `Retry-After` on 503 when the intake is full. @default 1 */
  retryAfterSeconds?: number;
  /** Time allowed to receive a request's headers (slow-loris guard). @default 10s */
  headersTimeoutMs?: number;
  /** Time allowed to receive a whole request. @default 30s */
  requestTimeoutMs?: number;
  /** Idle time before a keep-alive connection is closed. @default 5s */
  keepAliveTimeoutMs?: number;
  /** How long `close()` waits for requests in flight before cutting connections. @default 2s */
  closeGraceMs?: number;
}

export interface HttpServerDeps {
  intake: Intake;
  metrics: Metrics;
  logger: Logger;
  readiness: () => Readiness;
}

const DEFAULTS = {
  retryAfterSeconds: 1,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  closeGraceMs: 2_000,
} as const;

/** After a rejected upload, how long to drain what the client still sends before hanging up. */
const REJECT_LINGER_MS = 1_000;
/** A reason logged at warn at most this often; repeats go to debug (a flood must not flood the log). */
const WARN_EVERY_MS = 10_000;

/** A request that ended before the ingest could answer it; nothing to respond to. */
class RequestAbortedError extends Error {
  override readonly name = 'RequestAbortedError';
  readonly code = 'T1612D_REQUEST_ABORTED';
}

/** An ingest rejection with the status code and the one-line reason sent back. */
class Rejection extends Error {
  override readonly name = 'Rejection';
  readonly code = 'T1612D_INGEST_REJECTED';
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** Split `host:port`, `[v6]:port` or `:port` (all interfaces). */
export function parseListenAddress(address: string): { host: string | undefined; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]*):(\d{1,5})$/.exec(address.trim());
  if (!m || Number(m[2]) > 65535) throw new Error(`http address ${JSON.stringify(address)} is not host:port`);
  const raw = m[1] as string;
  const host = raw.startsWith('[') ? raw.slice(1, -1) : raw;
  return { host: host === '' ? undefined : host, port: Number(m[2]) };
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** The token in `Bearer <token>`, or the password of `Basic base64(user:password)`. */
function presentedToken(header: string): string | undefined {
  const bearer = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  if (bearer) return bearer[1];
  const basic = /^Basic[ \t]+([A-Za-z0-9+/=]+)[ \t]*$/i.exec(header);
  if (!basic) return undefined;
  const decoded = Buffer.from(basic[1] as string, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon >= 0 ? decoded.slice(colon + 1) : undefined;
}

export class HttpServer {
  private readonly opts: Required<Omit<HttpServerOptions, 'token'>>;
  private readonly server: Server;
  private readonly tokenDigest: Buffer | undefined;
  private readonly lastWarn = new Map<string, number>();
  private closing: Promise<void> | undefined;
  private listening = false;

  constructor(
    options: HttpServerOptions,
    private readonly deps: HttpServerDeps,
  ) {
    this.opts = {
      address: options.address,
      bodyLimit: options.bodyLimit,
      retryAfterSeconds: Math.max(1, Math.ceil(options.retryAfterSeconds ?? DEFAULTS.retryAfterSeconds)),
      headersTimeoutMs: options.headersTimeoutMs ?? DEFAULTS.headersTimeoutMs,
      requestTimeoutMs: options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
      keepAliveTimeoutMs: options.keepAliveTimeoutMs ?? DEFAULTS.keepAliveTimeoutMs,
      closeGraceMs: options.closeGraceMs ?? DEFAULTS.closeGraceMs,
    };
    // An empty token means none, as in the config (`T1612D_HTTP_TOKEN=` leaves ingest open).
    this.tokenDigest = options.token ? sha256(options.token) : undefined;
    const requestTimeout = Math.max(this.opts.requestTimeoutMs, this.opts.headersTimeoutMs);
    this.server = createServer({
      headersTimeout: this.opts.headersTimeoutMs,
      requestTimeout,
      keepAliveTimeout: this.opts.keepAliveTimeoutMs,
      // Node checks the two timeouts above on this interval (default 30 s, far too coarse).
      connectionsCheckingInterval: Math.max(100, Math.min(1_000, Math.floor(this.opts.headersTimeoutMs / 2))),
    });
    // Idle sockets (connected, nothing sent, or a stalled body) are cut after this.
    this.server.setTimeout(requestTimeout);
    this.server.on('request', (req, res) => this.dispatch(req, res));
    // `Expect: 100-continue` (libcurl sends it for large bodies): refuse before the body comes.
    this.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
      const early = this.isIngest(req) ? this.precheck(req) : undefined;
      if (early) {
        this.reject(req, res, early);
        return;
      }
      res.writeContinue();
      this.dispatch(req, res);
    });
  }

  /** Start listening; resolves with the bound address (useful with port 0). */
  async listen(): Promise<{ host: string; port: number }> {
    if (this.closing) throw new Error('http server is closed');
    const { host, port } = parseListenAddress(this.opts.address);
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        this.server.off('listening', onListening);
        reject(new Error(`cannot listen on ${this.opts.address}: ${describeError(err)}`, { cause: err }));
      };
      const onListening = (): void => {
        this.server.off('error', onError);
        resolve();
      };
      this.server.once('error', onError);
      this.server.once('listening', onListening);
      this.server.listen(port, host);
    });
    this.listening = true;
    this.server.on('error', (err) => this.deps.logger.error({ err: describeError(err) }, 'http server error'));
    const addr = this.server.address() as AddressInfo;
    this.deps.logger.info({ host: addr.address, port: addr.port }, 'http server listening');
    return { host: addr.address, port: addr.port };
  }

  /** Stop accepting, let requests in flight finish (bounded), close every connection. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (!this.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    const forced = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.server.closeAllConnections();
        resolve();
      }, this.opts.closeGraceMs);
      timer.unref();
    });
    await Promise.race([closed, forced]);
    clearTimeout(timer);
    await closed;
    this.listening = false;
  }

  private dispatch(req: IncomingMessage, res: ServerResponse): void {
    // A client that vanishes mid-request must never take the process with it.
    req.on('error', () => undefined);
    res.on('error', () => undefined);
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const method = req.method ?? 'GET';
    switch (path) {
      case '/healthz':
        if (this.allow(req, res, ['GET', 'HEAD'])) this.send(res, 200, 'ok\n', 'text/plain; charset=utf-8');
        return;
      case '/readyz':
        if (this.allow(req, res, ['GET', 'HEAD'])) this.readyz(res);
        return;
      case '/metrics':
        if (this.allow(req, res, ['GET', 'HEAD'])) void this.metrics(res);
        return;
      case '/':
      case '/falco':
      case '/falco/':
        if (method !== 'POST') {
          this.reject(req, res, new Rejection(405, 'use POST', { Allow: 'POST' }));
          return;
        }
        this.ingest(req, res).catch((err: unknown) => {
          // Last line of defence: a bug here must cost one request, not the process.
          this.deps.logger.error({ err: describeError(err) }, 'ingest failed');
          this.send(res, 500, JSON.stringify({ error: 'internal error' }));
        });
        return;
      default:
        this.reject(req, res, new Rejection(404, 'not found'));
    }
  }

  private isIngest(req: IncomingMessage): boolean {
    const path = (req.url ?? '/').split('?')[0];
    return req.method === 'POST' && (path === '/' || path === '/falco' || path === '/falco/');
  }

  private allow(req: IncomingMessage, res: ServerResponse, methods: string[]): boolean {
    if (methods.includes(req.method ?? '')) return true;
    this.reject(req, res, new Rejection(405, `use ${methods.join(' or ')}`, { Allow: methods.join(', ') }));
    return false;
  }

  private readyz(res: ServerResponse): void {
    let r: Readiness;
    try {
      r = this.deps.readiness();
    } catch (err) {
      this.deps.logger.warn({ err: describeError(err) }, 'readiness check failed');
      r = { ready: false, checks: {} };
    }
    this.send(res, r.ready ? 200 : 503, JSON.stringify({ ready: r.ready, checks: r.checks }));
  }

  private async metrics(res: ServerResponse): Promise<void> {
    try {
      const text = await this.deps.metrics.registry.metrics();
      this.send(res, 200, text, this.deps.metrics.registry.contentType);
    } catch (err) {
      this.deps.logger.error({ err: describeError(err) }, 'metrics collection failed');
      this.send(res, 500, JSON.stringify({ error: 'metrics collection failed' }));
    }
  }

  /** Checks that need only the headers: token, declared size, encoding. */
  private precheck(req: IncomingMessage): Rejection | undefined {
    if (this.tokenDigest) {
      const header = req.headers.authorization ?? '';
      const presented = presentedToken(header);
      // Compare digests, not tokens: equal lengths for timingSafeEqual and no length leak.
      if (presented === undefined || !timingSafeEqual(sha256(presented), this.tokenDigest)) {
        return new Rejection(401, header === '' ? 'missing bearer token' : 'wrong bearer token', {
          'WWW-Authenticate': 'Bearer',
        });
      }
    }
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > this.opts.bodyLimit) {
      return new Rejection(413, `body of ${declared} bytes is over the limit of ${this.opts.bodyLimit}`);
    }
    const enc = (req.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
    if (!['identity', '', 'gzip', 'x-gzip', 'deflate'].includes(enc)) {
      return new Rejection(415, `content-encoding ${truncate(enc, 40)} is not supported (use gzip or none)`);
    }
    return undefined;
  }

  private async ingest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const early = this.precheck(req);
    if (early) {
      this.reject(req, res, early);
      return;
    }
    let body: Buffer;
    try {
      body = await this.readBody(req);
    } catch (err) {
      if (err instanceof RequestAbortedError) {
        this.deps.logger.debug({ reason: err.message }, 'ingest request aborted by the client');
        return;
      }
      this.reject(req, res, err instanceof Rejection ? err : new Rejection(400, describeError(err)));
      return;
    }

    const { intake } = this.deps;
    let parsed: ParsedEvents;
    try {
      parsed = parseIngestBody(body, req.headers['content-type']);
    } catch (err) {
      const reason = err instanceof InvalidEventError ? err.message : describeError(err);
      intake.invalid('http', err, body.subarray(0, 300).toString('utf8'));
      this.reject(req, res, new Rejection(400, reason));
      return;
    }
    const { events, invalid } = parsed;
    // Decide before counting anything: a 503 is retried, and a retry must not count twice.
    // A batch larger than the whole queue would never fit; an empty queue takes it anyway.
    if (events.length > 0 && !intake.hasRoom(events.length) && intake.size > 0) {
      this.reject(
        req,
        res,
        new Rejection(503, 'intake queue is full, retry later', {
          'Retry-After': String(this.opts.retryAfterSeconds),
        }),
      );
      return;
    }
    for (const bad of invalid) intake.invalid('http', bad.error, bad.sample);
    if (events.length === 0) {
      const first = invalid[0];
      const reason = first ? `no Falco event in body: ${first.error.message}` : 'no Falco event in body';
      this.reject(req, res, new Rejection(400, reason));
      return;
    }
    for (const ev of events) {
      if (!intake.offer(ev, 'http')) intake.push(ev, 'http'); // only the oversized-batch case above
    }
    this.send(res, 200, JSON.stringify({ accepted: events.length, invalid: invalid.length }));
  }

  /** Read the body, decompressing, with the byte limit enforced on both sides of zlib. */
  private readBody(req: IncomingMessage): Promise<Buffer> {
    const limit = this.opts.bodyLimit;
    const enc = (req.headers['content-encoding'] ?? '').trim().toLowerCase();
    return new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let raw = 0;
      let size = 0;
      let done = false;
      let zlib: Gunzip | Inflate | undefined;
      const finish = (err: Error | undefined): void => {
        if (done) return;
        done = true;
        if (zlib) {
          req.unpipe(zlib);
          zlib.destroy();
        }
        if (err) reject(err);
        else resolve(Buffer.concat(chunks, size));
      };
      const tooLarge = (): Rejection => new Rejection(413, `body is over the limit of ${limit} bytes`);
      const collect = (chunk: Buffer): void => {
        if (done) return;
        size += chunk.length;
        if (size > limit) finish(tooLarge());
        else chunks.push(chunk);
      };
      req.on('data', (chunk: Buffer) => {
        if (done) return;
        raw += chunk.length;
        if (raw > limit) finish(tooLarge());
      });
      req.on('close', () => {
        if (!req.complete) finish(new RequestAbortedError('connection closed before the body ended'));
      });
      if (enc === 'gzip' || enc === 'x-gzip' || enc === 'deflate') {
        zlib = enc === 'deflate' ? createInflate() : createGunzip();
        zlib.on('data', collect);
        zlib.on('error', (err) => finish(new Rejection(400, `invalid ${enc} body: ${describeError(err)}`)));
        zlib.on('end', () => finish(undefined));
        req.pipe(zlib);
      } else {
        req.on('data', collect);
        req.on('end', () => finish(undefined));
      }
    });
  }

  private send(res: ServerResponse, status: number, body: string, type = 'application/json'): void {
    if (res.headersSent || res.destroyed) return;
    res.writeHead(status, {
      'Content-Type': type,
      'Content-Length': Buffer.byteLength(body),
      'Cache-Control': 'no-store',
    });
    res.end(body);
  }

  /**
   * Answer with an error and log it. When the body was not read in full the connection is
   * closed after the answer; the rest of the upload is drained briefly first, because closing
   * a socket with unread data makes the kernel reset it and the client may lose the answer.
   */
  private reject(req: IncomingMessage, res: ServerResponse, r: Rejection): void {
    this.logRejection(req, r);
    if (res.headersSent || res.destroyed) return;
    const unread = !req.complete;
    const headers: Record<string, string> = {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-store',
      ...r.headers,
    };
    if (unread) headers['Connection'] = 'close';
    const body = JSON.stringify({ error: r.message });
    headers['Content-Length'] = String(Buffer.byteLength(body));
    res.writeHead(r.status, headers);
    res.end(body);
    if (unread) {
      req.resume();
      const timer = setTimeout(() => req.socket.destroy(), REJECT_LINGER_MS);
      timer.unref();
      req.socket.once('close', () => clearTimeout(timer));
    }
  }

  private logRejection(req: IncomingMessage, r: Rejection): void {
    const fields = {
      status: r.status,
      reason: r.message,
      method: req.method,
      path: truncate((req.url ?? '').split('?')[0] ?? '', 100),
      remote: req.socket.remoteAddress,
      userAgent: truncate(req.headers['user-agent'] ?? '', 100),
    };
    const { logger } = this.deps;
    // Unknown paths are scanners and probes; not worth a warning.
    if (r.status === 404 || r.status === 405) {
      logger.debug(fields, 'http request rejected');
      return;
    }
    const key = `${r.status}:${r.message}`;
    const now = Date.now();
    const last = this.lastWarn.get(key);
    if (last === undefined || now - last >= WARN_EVERY_MS) {
      if (this.lastWarn.size > 1000) this.lastWarn.clear();
      this.lastWarn.set(key, now);
      logger.warn(fields, 'http request rejected');
    } else {
      logger.debug(fields, 'http request rejected');
    }
  }
}
