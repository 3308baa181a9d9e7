/**
 * A real HTTP(S) webhook receiver for delivery tests: records every request (headers, exact
 * body bytes), answers per request as the test programs it (status, Retry-After, delay, dropped
 * connection), tracks how many requests are in flight at once, and can go down and come back
 * on the same port to simulate an outage.
 */
import { once } from 'node:events';
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { Alert } from '../../src/model/alert.js';

export interface ReceivedRequest {
  /** 1-based arrival order. */
  n: number;
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
  /** Arrival time (ms). */
  at: number;
  /** Client certificate subject CN, over mutual TLS. */
  clientCn?: string | undefined;
}

export interface Reply {
  /** @default 200 */
  status?: number;
  headers?: Record<string, string>;
  body?: string;
  /** Wait this long before answering. */
  delayMs?: number;
  /** Drop the connection instead of answering. */
  destroy?: boolean;
}

export type Responder = (req: ReceivedRequest) => Reply | Promise<Reply>;

export interface ReceiverTls {
  key: string | Buffer;
  cert: string | Buffer;
  /** CA for client certificates; with it, a client certificate is required. */
  ca?: string | Buffer;
}

export class WebhookReceiver {
  readonly requests: ReceivedRequest[] = [];
  inFlight = 0;
  maxInFlight = 0;
  private responder: Responder = () => ({ status: 200 });
  private server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private port = 0;
  private isUp = false;

  private constructor(private readonly tls: ReceiverTls | undefined) {
    this.server = this.makeServer();
  }

  static async start(options: { tls?: ReceiverTls; port?: number } = {}): Promise<WebhookReceiver> {
    const r = new WebhookReceiver(options.tls);
    await r.listen(options.port ?? 0);
    return r;
  }

  get url(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}/hook`;
  }

  /** Program the answers; the function sees each request after its body arrived. */
  respond(fn: Responder): void {
    this.responder = fn;
  }

  /** Requests carrying a given delivery id. */
  byDelivery(id: string): ReceivedRequest[] {
    return this.requests.filter((r) => r.headers['x-t1612d-delivery'] === id);
  }

  /** Distinct delivery ids seen with a 2xx answer programmed (a deduplicating receiver's view). */
  readonly accepted = new Set<string>();
  /** Deliveries accepted more than once (what deduplication absorbed). */
  duplicates = 0;

  /** Poll until `predicate` holds, or throw after `timeoutMs`. */
  async waitFor(predicate: () => boolean, timeoutMs: number, what = 'condition'): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error(`receiver: timed out after ${timeoutMs}ms waiting for ${what} (${this.requests.length} requests so far)`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  private makeServer(): Server {
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      void this.handle(req, res);
    };
    const server = this.tls
      ? createHttpsServer({ key: this.tls.key, cert: this.tls.cert, ...(this.tls.ca ? { ca: this.tls.ca, requestCert: true, rejectUnauthorized: true } : {}) }, handler)
      : createHttpServer(handler);
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    // TLS handshakes refused by the server must not surface as uncaught errors.
    server.on('tlsClientError', () => undefined);
    server.on('clientError', (_err, socket: Socket) => socket.destroy());
    return server;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    let done = false;
    const finish = (): void => {
      if (!done) {
        done = true;
        this.inFlight -= 1;
      }
    };
    res.on('close', finish);
    try {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks);
      const peer = (req.socket as Socket & { getPeerCertificate?: () => { subject?: { CN?: string } } }).getPeerCertificate?.();
      const rec: ReceivedRequest = {
        n: this.requests.length + 1,
        method: req.method ?? '',
        path: req.url ?? '',
        headers: req.headers,
        body,
        text: body.toString('utf8'),
        at: Date.now(),
        clientCn: peer?.subject?.CN,
      };
      this.requests.push(rec);
      const reply = await this.responder(rec);
      if (reply.delayMs) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            this.timers.delete(t);
            resolve();
          }, reply.delayMs);
          this.timers.add(t);
          res.on('close', () => {
            clearTimeout(t);
            this.timers.delete(t);
            resolve();
          });
        });
      }
      if (res.destroyed || res.writableEnded) return;
      if (reply.destroy) {
        req.socket.destroy();
        return;
      }
      const status = reply.status ?? 200;
      const id = rec.headers['x-t1612d-delivery'];
      if (status >= 200 && status < 300 && typeof id === 'string') {
        if (this.accepted.has(id)) this.duplicates += 1;
        this.accepted.add(id);
      }
      res.writeHead(status, { 'content-type': 'text/plain', ...(reply.headers ?? {}) });
      res.end(reply.body ?? '');
    } catch {
      if (!res.destroyed) res.destroy();
    } finally {
      if (res.writableEnded || res.destroyed) finish();
    }
  }

  private async listen(port: number): Promise<void> {
    this.server.listen(port, '127.0.0.1');
    await once(this.server, 'listening');
    const addr = this.server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : port;
    this.isUp = true;
  }

  /** Stop accepting connections and drop open ones (connection refused from now on). */
  async down(): Promise<void> {
    if (!this.isUp) return;
    this.isUp = false;
    const closed = once(this.server, 'close');
    this.server.close();
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  /** Listen again on the same port. */
  async up(): Promise<void> {
    if (this.isUp) return;
    this.server = this.makeServer();
    await this.listen(this.port);
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.down();
  }
}

/** A complete alert as the correlator would raise it; `i` varies the id and destination. */
export function sampleAlert(i = 0, overrides: Partial<Alert> = {}): Alert {
  const id = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
  return {
    id,
    time: '2026-03-01T10:00:00.123Z',
    severity: 'high',
    technique: { id: 'T1612', name: 'Build Image on Host', tactic: 'Defense Evasion', url: 'https://attack.mitre.org/techniques/T1612/' },
    environment: 'default',
    hostname: 'node-a',
    summary: `docker build on node-a connected to 203.0.113.${i % 250}, never contacted before`,
    build: {
      session_id: `sess-${i}`,
      started_at: '2026-03-01T09:59:00.000Z',
      trigger: { rule: 'T1612 Image build started', proc_name: 'docker', cmdline: 'docker build -t app:1 .', user: 'root', container_id: 'host', remote_peer: null },
      images: ['app:1'],
    },
    destination: { ip: `203.0.113.${i % 250}`, port: 443, l4proto: 'tcp', domain: null, first_seen_at: '2026-03-01T10:00:00.100Z' },
    connection: { time: '2026-03-01T10:00:00.100Z', rule: 'T1612 Build egress', proc_name: 'curl', cmdline: 'curl -fsSL https://203.0.113.9/x', pid: 4242, container_id: 'host', attribution: 'lineage' },
    evidence: [{ time: '2026-03-01T10:00:00.100Z', rule: 'T1612 Build egress', output: 'curl connected to 203.0.113.9:443' }],
    ...overrides,
  };
}
