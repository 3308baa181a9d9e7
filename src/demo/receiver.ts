/**
 * The demo's local webhook receiver: a real HTTP server on 127.0.0.1 that verifies the
 * signature, and prints each alert as a short readable summary followed by its JSON.
 */
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Alert } from '../model/alert.js';

export interface Received {
  alert: Alert;
  deliveryId: string | undefined;
  signatureValid: boolean;
}

export class DemoReceiver {
  readonly received: Received[] = [];
  private readonly server: Server;
  private waiters: (() => void)[] = [];
  private closing: Promise<void> | undefined;

  constructor(
    private readonly secret: string,
    private readonly print: (text: string) => void,
  ) {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        let alert: Alert;
        try {
          alert = JSON.parse(body.toString('utf8')) as Alert;
        } catch {
          res.writeHead(400).end('bad json');
          return;
        }
        const sig = String(req.headers['x-t1612d-signature'] ?? '');
        const want = `sha256=${createHmac('sha256', this.secret).update(body).digest('hex')}`;
        const signatureValid = sig.length === want.length && timingSafeEqual(Buffer.from(sig), Buffer.from(want));
        const deliveryId = req.headers['x-t1612d-delivery'] as string | undefined;
        if (!this.received.some((r) => r.deliveryId === deliveryId)) {
          this.received.push({ alert, deliveryId, signatureValid });
          this.print(formatAlert(alert, signatureValid));
        }
        res.writeHead(204).end();
        const w = this.waiters;
        this.waiters = [];
        for (const fn of w) fn();
      });
    });
  }

  async listen(): Promise<string> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    const { port } = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${port}/t1612`;
  }

  /** Resolves when at least `n` alerts arrived or the timeout passed. */
  async waitFor(n: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < n && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(100, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.received.length >= n;
  }

  /** Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const closed = once(this.server, 'close').catch(() => undefined);
      this.server.closeAllConnections();
      this.server.close();
      await closed;
    })();
    return this.closing;
  }
}

/** A few readable lines for one alert, then the JSON body. */
export function formatAlert(a: Alert, signatureValid: boolean): string {
  const t = a.build.trigger;
  return [
    `━━ ${a.severity.toUpperCase()} ${a.technique.id} ${a.technique.name} on ${a.hostname} (${a.environment})`,
    `   ${a.summary}`,
    `   build     ${a.build.session_id} started ${a.build.started_at} by ${t.proc_name ?? '?'}${t.remote_peer ? ` from ${t.remote_peer}` : ''}`,
    `   reached   ${a.destination.ip}:${a.destination.port ?? '?'} (${a.destination.l4proto ?? '?'}) via ${a.connection.proc_name ?? '?'} [${a.connection.attribution}]`,
    `   delivery  ${a.id}, signature ${signatureValid ? 'valid' : 'INVALID'}`,
    JSON.stringify(a, null, 2),
    '',
  ].join('\n');
}
