/**
 * The daemon's HTTP(S) server: liveness (`/healthz`), readiness (`/readyz`) and Prometheus
 * metrics (`/metrics`), plus whatever routes the daemon mounts on it (the Falco ingest of
 * src/sources/http-ingest.ts). It owns what every route shares: TLS and mutual TLS, the
 * connection cap, header/request/idle timeouts, bounded and throttled refusal logging, and
 * closing. It knows nothing about events.
 *
 * Connections are capped (`maxConnections`): beyond the cap the oldest connection with no
 * request in flight is closed to make room, so a flood of idle sockets cannot lock out the
 * kubelet's probes; when every connection is busy the new one is closed at once.
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { describeError } from '../model/errors.js';
import { truncate, type Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { ThrottledLog } from './throttled-log.js';

/** What `/readyz` reports: ready only when every check the daemon cares about passes. */
export interface Readiness {
  ready: boolean;
  checks: Record<string, boolean>;
}

/** Certificate files for HTTPS; with `clientCaFile` a client certificate is mandatory. */
export interface HttpTlsFiles {
  certFile: string;
  keyFile: string;
  clientCaFile?: string | undefined;
}

export interface HttpServerOptions {
  /** `host:port` to listen on (`[::1]:2802`, `:2802` for all interfaces); port 0 picks one. */
  address: string;
  /** Serve HTTPS (and require client certificates when a client CA is given). */
  tls?: HttpTlsFiles | undefined;
  /** Open connections at most. @default 256 */
  maxConnections?: number;
  /** Time allowed to receive a request's headers (slow-loris guard); also the TLS handshake. @default 10s */
  headersTimeoutMs?: number;
  /** Time allowed to receive a whole request. @default 30s */
  requestTimeoutMs?: number;
  /** Idle time before a keep-alive connection is closed. @default 5s */
  keepAliveTimeoutMs?: number;
  /** How long `close()` waits for requests in flight before cutting connections. @default 2s */
  closeGraceMs?: number;
}

export interface HttpServerDeps {
  metrics: Metrics;
  logger: Logger;
  readiness: () => Readiness;
}

/** A mounted route: its paths, and a handler that answers every request sent to them. */
export interface HttpRoute {
  paths: readonly string[];
  handle(req: IncomingMessage, res: ServerResponse): void;
  /**
   * `Expect: 100-continue`: a refusal decided from the headers alone, sent before the client
   * uploads the body; undefined lets the upload go ahead.
   */
  precheck?(req: IncomingMessage): HttpRejection | undefined;
}

const DEFAULTS = {
  maxConnections: 256,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  closeGraceMs: 2_000,
} as const;

/** After a refused upload, how long to drain what the client still sends before hanging up. */
const REJECT_LINGER_MS = 1_000;
/** One warning per refusal category this often; the next one says how many were suppressed. */
const WARN_EVERY_MS = 10_000;

/**
 * Why a request was refused: the `reason` label of `t1612d_ingest_refused_total`. A fixed
 * set, so metrics and the log throttle stay bounded whatever the input.
 */
export type RefusalReason =
  | 'too_large'
  | 'too_many_bodies'
  | 'too_many_connections'
  | 'unauthenticated'
  | 'invalid'
  | 'queue_full'
  | 'wal_error';

/** A refusal: status, category and the one-line reason sent back (short, no input echoed). */
export class HttpRejection extends Error {
  override readonly name = 'HttpRejection';
  readonly code = 'T1612D_HTTP_REJECTED';
  constructor(
    readonly status: number,
    message: string,
    /** Counted in `t1612d_ingest_refused_total{reason}`; undefined for 404/405 (not ingest). */
    readonly reason: RefusalReason | undefined,
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

/** Answer with a body (no-op when the response is already gone). */
export function sendBody(res: ServerResponse, status: number, body: string, type = 'application/json'): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(body);
}

/** Per connection: requests in flight (0 = idle, may be closed to make room). */
interface ConnState {
  socket: Socket;
  busy: number;
}

export class HttpServer {
  private readonly opts: Required<Omit<HttpServerOptions, 'tls'>>;
  private readonly server: Server;
  private readonly routes = new Map<string, HttpRoute>();
  private readonly throttle: ThrottledLog;
  /** Open connections by `remoteAddress:remotePort` (the same key for a TLS socket and its TCP socket), oldest first. */
  private readonly conns = new Map<string, ConnState>();
  private closing: Promise<void> | undefined;
  private listening = false;
  /** `https`, `mtls` or `none`, for the listening line. */
  private readonly tls: string;

  constructor(
    options: HttpServerOptions,
    private readonly deps: HttpServerDeps,
  ) {
    this.opts = {
      address: options.address,
      maxConnections: options.maxConnections ?? DEFAULTS.maxConnections,
      headersTimeoutMs: options.headersTimeoutMs ?? DEFAULTS.headersTimeoutMs,
      requestTimeoutMs: options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
      keepAliveTimeoutMs: options.keepAliveTimeoutMs ?? DEFAULTS.keepAliveTimeoutMs,
      closeGraceMs: options.closeGraceMs ?? DEFAULTS.closeGraceMs,
    };
    this.throttle = new ThrottledLog(deps.logger, WARN_EVERY_MS);
    const requestTimeout = Math.max(this.opts.requestTimeoutMs, this.opts.headersTimeoutMs);
    const httpOptions = {
      headersTimeout: this.opts.headersTimeoutMs,
      requestTimeout,
      keepAliveTimeout: this.opts.keepAliveTimeoutMs,
      // Node checks the two timeouts above on this interval (default 30 s, far too coarse).
      connectionsCheckingInterval: Math.max(100, Math.min(1_000, Math.floor(this.opts.headersTimeoutMs / 2))),
    };
    const tls = options.tls;
    this.tls = tls ? (tls.clientCaFile ? 'mtls' : 'https') : 'none';
    this.server = tls
      ? createHttpsServer({
          ...httpOptions,
          cert: readFileSync(tls.certFile),
          key: readFileSync(tls.keyFile),
          ...(tls.clientCaFile
            ? { ca: readFileSync(tls.clientCaFile), requestCert: true, rejectUnauthorized: true }
            : {}),
          // A client that connects and never finishes the handshake holds a slot: cut it early.
          handshakeTimeout: this.opts.headersTimeoutMs,
        })
      : createHttpServer(httpOptions);
    if (tls?.clientCaFile) {
      this.server.on('tlsClientError', (err: Error) => {
        // No certificate, or one from another CA: refused in the handshake, before any request.
        deps.metrics.ingestRefused.inc({ reason: 'unauthenticated' });
        this.throttle.log('warn', 'tls', { err: describeError(err) }, 'tls handshake refused');
      });
    }
    // Idle sockets (connected, nothing sent, or a stalled body) are cut after this.
    this.server.setTimeout(requestTimeout);
    this.server.on('connection', (socket: Socket) => this.admit(socket));
    this.server.on('request', (req, res) => this.dispatch(req, res));
    // `Expect: 100-continue` (libcurl sends it for large bodies): refuse before the body comes.
    this.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
      const route = this.routeOf(req);
      const early = route?.precheck?.(req);
      if (early) {
        this.reject(req, res, early);
        return;
      }
      res.writeContinue();
      this.dispatch(req, res);
    });
  }

  /** Mount a route (before `listen()`); its paths must not be taken. */
  mount(route: HttpRoute): void {
    for (const p of route.paths) {
      if (this.routes.has(p) || ['/healthz', '/readyz', '/metrics'].includes(p)) throw new Error(`http path ${p} is taken`);
      this.routes.set(p, route);
    }
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
    this.server.on('error', (err) => this.deps.logger.error({ err }, 'http server error'));
    const addr = this.server.address() as AddressInfo;
    this.deps.logger.info({ host: addr.address, port: addr.port, tls: this.tls }, 'http server listening');
    return { host: addr.address, port: addr.port };
  }

  /** Open connections (tests, diagnostics). */
  get connections(): number {
    return this.conns.size;
  }

  /** Stop accepting, let requests in flight finish (bounded), close every connection. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  /**
   * Answer with an error and log it, throttled by category. When the body was not read in full
   * the connection is closed after the answer; the rest of the upload is drained briefly first,
   * because closing a socket with unread data makes the kernel reset it and the client may lose
   * the answer.
   */
  reject(req: IncomingMessage, res: ServerResponse, r: HttpRejection): void {
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

  private async doClose(): Promise<void> {
    if (!this.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    const forced = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.server.closeAllConnections();
        for (const c of this.conns.values()) c.socket.destroy();
        resolve();
      }, this.opts.closeGraceMs);
      timer.unref();
    });
    await Promise.race([closed, forced]);
    clearTimeout(timer);
    await closed;
    this.listening = false;
  }

  /** Take a new TCP connection under the cap, closing the oldest idle one to make room. */
  private admit(socket: Socket): void {
    socket.on('error', () => undefined); // a reset by the peer must not take the process
    const key = `${socket.remoteAddress}:${socket.remotePort}`;
    if (this.conns.size >= this.opts.maxConnections) {
      let evicted = false;
      for (const c of this.conns.values()) {
        if (c.busy === 0) {
          c.socket.destroy();
          evicted = true;
          break;
        }
      }
      this.deps.metrics.ingestRefused.inc({ reason: 'too_many_connections' });
      this.throttle.log('warn', 'too_many_connections', { max: this.opts.maxConnections, evictedIdle: evicted },
        'http connection cap reached');
      if (!evicted) {
        socket.destroy();
        return;
      }
    }
    this.conns.set(key, { socket, busy: 0 });
    socket.once('close', () => {
      if (this.conns.get(key)?.socket === socket) this.conns.delete(key);
    });
  }

  private routeOf(req: IncomingMessage): HttpRoute | undefined {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    return this.routes.get(path);
  }

  private dispatch(req: IncomingMessage, res: ServerResponse): void {
    // A client that vanishes mid-request must never take the process with it.
    req.on('error', () => undefined);
    res.on('error', () => undefined);
    const conn = this.conns.get(`${req.socket.remoteAddress}:${req.socket.remotePort}`);
    if (conn) {
      conn.busy++;
      res.once('close', () => conn.busy--);
    }
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    switch (path) {
      case '/healthz':
        if (this.allow(req, res, ['GET', 'HEAD'])) sendBody(res, 200, 'ok\n', 'text/plain; charset=utf-8');
        return;
      case '/readyz':
        if (this.allow(req, res, ['GET', 'HEAD'])) this.readyz(res);
        return;
      case '/metrics':
        if (this.allow(req, res, ['GET', 'HEAD'])) void this.metrics(res);
        return;
      default: {
        const route = this.routes.get(path);
        if (!route) {
          this.reject(req, res, new HttpRejection(404, 'not found', undefined));
          return;
        }
        try {
          route.handle(req, res);
        } catch (err) {
          // Last line of defence: a bug in a route must cost one request, not the process.
          this.deps.logger.error({ err, path }, 'http route failed');
          sendBody(res, 500, JSON.stringify({ error: 'internal error' }));
        }
      }
    }
  }

  private allow(req: IncomingMessage, res: ServerResponse, methods: string[]): boolean {
    if (methods.includes(req.method ?? '')) return true;
    this.reject(req, res, new HttpRejection(405, `use ${methods.join(' or ')}`, undefined, { Allow: methods.join(', ') }));
    return false;
  }

  private readyz(res: ServerResponse): void {
    let r: Readiness;
    try {
      r = this.deps.readiness();
    } catch (err) {
      this.throttle.log('warn', 'readiness', { err: describeError(err) }, 'readiness check failed');
      r = { ready: false, checks: {} };
    }
    sendBody(res, r.ready ? 200 : 503, JSON.stringify({ ready: r.ready, checks: r.checks }));
  }

  private async metrics(res: ServerResponse): Promise<void> {
    try {
      const text = await this.deps.metrics.registry.metrics();
      sendBody(res, 200, text, this.deps.metrics.registry.contentType);
    } catch (err) {
      this.deps.logger.error({ err }, 'metrics collection failed');
      sendBody(res, 500, JSON.stringify({ error: 'metrics collection failed' }));
    }
  }

  private logRejection(req: IncomingMessage, r: HttpRejection): void {
    if (r.reason) this.deps.metrics.ingestRefused.inc({ reason: r.reason });
    const fields = {
      status: r.status,
      reason: truncate(r.message, 200),
      method: req.method,
      path: truncate((req.url ?? '').split('?')[0] ?? '', 100),
      remote: req.socket.remoteAddress,
      userAgent: truncate(req.headers['user-agent'] ?? '', 100),
    };
    // Unknown paths and methods are scanners and probes; not worth a warning.
    if (!r.reason) {
      this.deps.logger.debug(fields, 'http request rejected');
      return;
    }
    // Keyed by category, never by input: a flood of distinct bad bodies is one line per period.
    this.throttle.log('warn', r.reason, { ...fields, category: r.reason }, 'http request rejected');
  }
}
