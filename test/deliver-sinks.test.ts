// Each sink on its own, one request at a time, against a real receiver: the webhook's exact
// bytes, headers and HMAC signature, how it classifies answers and network errors (ok, retry
// with Retry-After, fail), mutual TLS; the Falcosidekick payload; the stdout sink; and which
// sinks the configuration builds. Retries and queueing across attempts live in the outbox
// tests (deliver-outbox.test.ts).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { pino, type Logger } from 'pino';
import { WebhookSink, signBody, tlsFromConfig } from '../src/deliver/webhook.js';
import { SidekickSink, toFalcoEvent, PRIORITY_OF } from '../src/deliver/sidekick.js';
import { StdoutSink } from '../src/deliver/stdout.js';
import { parseRetryAfter, userAgent } from '../src/deliver/sink.js';
import { createSinks } from '../src/deliver/sinks.js';
import { resolveConfig } from '../src/config/config.js';
import { fromFalcoJson, kindOfTags } from '../src/model/event.js';
import { silentLogger } from '../src/ops/logger.js';
import type { Alert } from '../src/model/alert.js';
import { WebhookReceiver, sampleAlert } from './support/webhook-receiver.js';

/** A logger whose lines land in `lines` (parsed). */
function capturingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, lines };
}

/**
 * Falcosidekick's acceptance of `POST /` (handlers.go mainHandler + types.FalcoPayload.Check):
 * JSON object, priority one of Falco's names (case-insensitive), non-empty rule, a time Go's
 * time.Time parses (RFC 3339), non-empty output_fields; older releases also need an output.
 */
function falcosidekickAccepts(body: string): string | undefined {
  let v: unknown;
  try {
    v = JSON.parse(body);
  } catch {
    return 'not JSON';
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'not an object';
  const o = v as Record<string, unknown>;
  const priorities = ['emergency', 'alert', 'critical', 'error', 'warning', 'notice', 'informational', 'debug'];
  if (typeof o['priority'] !== 'string' || !priorities.includes(o['priority'].toLowerCase())) return 'priority';
  if (typeof o['rule'] !== 'string' || o['rule'] === '') return 'rule';
  if (typeof o['time'] !== 'string' || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(o['time']) || Number.isNaN(Date.parse(o['time']))) return 'time';
  const f = o['output_fields'];
  if (typeof f !== 'object' || f === null || Array.isArray(f) || Object.keys(f).length === 0) return 'output_fields';
  for (const [k, val] of Object.entries(f)) if (typeof val !== 'string' && typeof val !== 'number') return `output_fields.${k} type`;
  if (typeof o['output'] !== 'string' || o['output'] === '') return 'output';
  if (o['tags'] !== undefined && (!Array.isArray(o['tags']) || !o['tags'].every((t) => typeof t === 'string'))) return 'tags';
  return undefined;
}

describe('deliver: sinks', function () {
  let rx: WebhookReceiver;
  const sinks: { close(): Promise<void> }[] = [];

  beforeEach(async () => {
    rx = await WebhookReceiver.start();
  });
  afterEach(async () => {
    for (const s of sinks.splice(0)) await s.close();
    await rx.close();
  });

  function webhook(over: Partial<ConstructorParameters<typeof WebhookSink>[0]> = {}): WebhookSink {
    const s = new WebhookSink({ url: rx.url, timeoutMs: 2_000, concurrency: 2, logger: silentLogger(), ...over });
    sinks.push(s);
    return s;
  }

  it('POSTs the exact body with delivery id, signature, user agent and custom headers', async () => {
    const sink = webhook({ secret: 's3cret', headers: { Authorization: 'Bearer abc', 'X-Team': 'sec', 'X-T1612D-Delivery': 'spoofed' } });
    const alert = sampleAlert(1, { summary: 'unicode ✓ and "quotes"' });
    const body = JSON.stringify(alert);
    const res = await sink.send(alert, body);
    assert.equal(res.kind, 'ok');
    const [req] = rx.requests;
    assert.ok(req);
    assert.equal(req.method, 'POST');
    assert.equal(req.path, '/hook');
    assert.ok(req.body.equals(Buffer.from(body, 'utf8')), 'exact bytes');
    assert.equal(req.headers['content-type'], 'application/json');
    assert.equal(req.headers['user-agent'], userAgent());
    assert.match(userAgent(), /^t1612d\/\d+\.\d+\.\d+/);
    assert.equal(req.headers['x-t1612d-delivery'], alert.id, 'custom header cannot spoof the delivery id');
    assert.equal(req.headers['authorization'], 'Bearer abc');
    assert.equal(req.headers['x-team'], 'sec');
    const expected = `sha256=${createHmac('sha256', 's3cret').update(req.body).digest('hex')}`;
    assert.equal(req.headers['x-t1612d-signature'], expected);
    assert.equal(signBody('s3cret', body), expected);
  });

  it("ignores custom headers that name t1612d's own, in any spelling, and says which", async () => {
    const { logger, lines } = capturingLogger();
    const own = { 'Content-Type': 'text/plain', 'Content-Length': '1', 'USER-AGENT': 'curl', 'X-T1612D-Signature': 'sha256=forged', 'x-t1612d-delivery': 'spoofed', Host: 'evil.example' };
    const sink = webhook({ secret: 'k', logger, headers: { ...own, 'X-Custom': 'kept' } });
    const alert = sampleAlert(4);
    assert.equal((await sink.send(alert, JSON.stringify(alert))).kind, 'ok');
    const req = rx.requests[0];
    assert.ok(req);
    assert.equal(req.headers['content-type'], 'application/json');
    assert.equal(req.headers['user-agent'], userAgent());
    assert.equal(req.headers['x-t1612d-signature'], signBody('k', req.body));
    assert.equal(req.headers['x-t1612d-delivery'], alert.id);
    assert.notEqual(req.headers['host'], 'evil.example');
    assert.equal(req.headers['x-custom'], 'kept');
    const warned = lines.filter((l) => l['msg'] === 'custom webhook header ignored: t1612d sets it itself');
    assert.deepEqual(warned.map((l) => l['header']).sort(), Object.keys(own).sort());
    assert.ok(warned.every((l) => l['sink'] === 'webhook' && l['level'] === 40));
  });

  it('is built from the configuration: URL, secret, headers, TLS settings; none without a URL', async () => {
    const cfg = resolveConfig({
      env: {},
      overrides: { webhookUrl: rx.url, webhookSecret: 'from-config', webhookHeaders: { 'X-Team': 'sec' }, webhookInsecure: true, webhookCaFile: '/ca.pem' },
    });
    assert.deepEqual(tlsFromConfig(cfg), { caFile: '/ca.pem', certFile: undefined, keyFile: undefined, insecure: true });
    assert.equal(WebhookSink.fromConfig(resolveConfig({ env: {} }), silentLogger()), undefined);
    const sink = WebhookSink.fromConfig({ ...cfg, webhookCaFile: undefined, webhookInsecure: false }, silentLogger());
    assert.ok(sink);
    sinks.push(sink);
    const alert = sampleAlert(5, { summary: 'ünïcode' });
    assert.equal((await sink.send(alert, JSON.stringify(alert))).kind, 'ok');
    const req = rx.requests[0];
    assert.ok(req);
    assert.ok(req.body.equals(Buffer.from(JSON.stringify(alert), 'utf8')));
    assert.equal(req.headers['x-t1612d-signature'], signBody('from-config', JSON.stringify(alert)));
    assert.equal(req.headers['x-team'], 'sec');
  });

  it('sends nothing once closed', async () => {
    const sink = new WebhookSink({ url: rx.url, timeoutMs: 2_000, concurrency: 2, logger: silentLogger() });
    await sink.close();
    const alert = sampleAlert(6);
    const r = await sink.send(alert, JSON.stringify(alert)).catch(() => ({ kind: 'threw' }));
    assert.notEqual(r.kind, 'ok');
    assert.equal(rx.requests.length, 0);
  });

  it('sends no signature without a secret', async () => {
    const alert = sampleAlert(2);
    assert.equal((await webhook().send(alert, JSON.stringify(alert))).kind, 'ok');
    assert.equal(rx.requests[0]?.headers['x-t1612d-signature'], undefined);
  });

  it('classifies answers: 2xx ok; 408, 429, 5xx retry (with Retry-After); other 4xx and 3xx fail with the body', async () => {
    const sink = webhook();
    const alert = sampleAlert(3);
    const body = JSON.stringify(alert);
    const cases: [number, Record<string, string>, string, string, number | undefined][] = [
      [204, {}, '', 'ok', undefined],
      [500, {}, 'boom', 'retry', undefined],
      [503, { 'Retry-After': '7' }, '', 'retry', 7000],
      [429, { 'Retry-After': new Date(Date.now() + 60_000).toUTCString() }, '', 'retry', 60_000],
      [408, {}, '', 'retry', undefined],
      [400, {}, 'bad field "x"'.repeat(200), 'fail', undefined],
      [404, {}, 'no such hook', 'fail', undefined],
      [302, { Location: '/elsewhere' }, '', 'fail', undefined],
    ];
    for (const [status, headers, text, kind, retryAfter] of cases) {
      rx.respond(() => ({ status, headers, body: text }));
      const res = await sink.send(alert, body);
      assert.equal(res.kind, kind, `status ${status}`);
      if (res.kind !== 'ok') {
        assert.equal(res.status, status);
        assert.equal(res.error, `HTTP ${status}`);
      }
      if (res.kind === 'retry' && retryAfter !== undefined) {
        assert.ok(res.retryAfterMs !== undefined && Math.abs(res.retryAfterMs - retryAfter) < 2_000, `retry-after ${res.retryAfterMs}`);
      }
      if (res.kind === 'fail' && status === 400) {
        assert.ok(res.body?.startsWith('bad field'), 'response body kept');
        assert.ok((res.body ?? '').length < 700, 'response body truncated');
      }
    }
  });

  it('retries network errors and requests slower than the timeout', async () => {
    const alert = sampleAlert(4);
    rx.respond(() => ({ delayMs: 1_000 }));
    const slow = await webhook({ timeoutMs: 150 }).send(alert, JSON.stringify(alert));
    assert.equal(slow.kind, 'retry');
    assert.match(slow.kind === 'retry' ? slow.error : '', /timeout after 150ms/);
    rx.respond(() => ({ destroy: true }));
    const reset = await webhook().send(alert, JSON.stringify(alert));
    assert.equal(reset.kind, 'retry');
    await rx.down();
    const refused = await webhook().send(alert, JSON.stringify(alert));
    assert.equal(refused.kind, 'retry');
    assert.match(refused.kind === 'retry' ? refused.error : '', /ECONNREFUSED/);
  });

  it('parses Retry-After as seconds or an HTTP date and ignores garbage', () => {
    const now = Date.parse('2026-03-01T10:00:00Z');
    assert.equal(parseRetryAfter('120', now), 120_000);
    assert.equal(parseRetryAfter(' 0 ', now), 0);
    assert.equal(parseRetryAfter('Sun, 01 Mar 2026 10:00:30 GMT', now), 30_000);
    assert.equal(parseRetryAfter('Sun, 01 Mar 2026 09:00:00 GMT', now), 0, 'a past date means now');
    assert.equal(parseRetryAfter(['5', '9'], now), 5_000);
    assert.equal(parseRetryAfter('soon', now), undefined);
    assert.equal(parseRetryAfter('1.5', now), undefined);
    assert.equal(parseRetryAfter('-3', now), undefined);
    assert.equal(parseRetryAfter(undefined, now), undefined);
  });

  describe('TLS', function () {
    let dir: string;
    let tlsRx: WebhookReceiver;
    before(function () {
      this.timeout(20_000);
      dir = mkdtempSync(join(tmpdir(), 't1612d-tls-'));
      const run = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
      run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=t1612d test CA');
      writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\n');
      run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
      run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext');
      run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=t1612d-client');
      run('x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.pem', '-days', '2');
    });
    beforeEach(async () => {
      const f = (n: string): Buffer => readFileSync(join(dir, n));
      tlsRx = await WebhookReceiver.start({ tls: { key: f('server.key'), cert: f('server.pem'), ca: f('ca.pem') } });
    });
    afterEach(async () => {
      await tlsRx.close();
    });
    after(() => {
      rmSync(dir, { recursive: true, force: true });
    });

    it('delivers over mutual TLS with a custom CA and a client certificate', async () => {
      const alert = sampleAlert(5);
      const sink = webhook({ url: tlsRx.url, tls: { caFile: join(dir, 'ca.pem'), certFile: join(dir, 'client.pem'), keyFile: join(dir, 'client.key') } });
      assert.equal((await sink.send(alert, JSON.stringify(alert))).kind, 'ok');
      assert.equal(tlsRx.requests[0]?.clientCn, 't1612d-client');
    });

    it('retries (never delivers) when the server certificate is not trusted or the client certificate is missing', async () => {
      const alert = sampleAlert(6);
      const untrusted = await webhook({ url: tlsRx.url, tls: { certFile: join(dir, 'client.pem'), keyFile: join(dir, 'client.key') } }).send(alert, '{}');
      assert.equal(untrusted.kind, 'retry');
      assert.match(untrusted.kind === 'retry' ? untrusted.error : '', /certificate/i);
      const noClientCert = await webhook({ url: tlsRx.url, tls: { caFile: join(dir, 'ca.pem') } }).send(alert, '{}');
      assert.equal(noClientCert.kind, 'retry');
      assert.equal(tlsRx.requests.length, 0);
    });

    it('insecure mode skips verification and warns once at construction', async () => {
      const { logger, lines } = capturingLogger();
      const alert = sampleAlert(7);
      const sink = webhook({ url: tlsRx.url, logger, tls: { insecure: true, certFile: join(dir, 'client.pem'), keyFile: join(dir, 'client.key') } });
      assert.equal((await sink.send(alert, JSON.stringify(alert))).kind, 'ok');
      await sink.send(alert, JSON.stringify(alert));
      const warnings = lines.filter((l) => l['level'] === 40 && /insecure/.test(String(l['msg'])));
      assert.equal(warnings.length, 1);
    });
  });

  describe('Falcosidekick', () => {
    it('turns an alert into a Falco event Falcosidekick accepts and Falco JSON parsers read', () => {
      for (const severity of ['critical', 'high', 'medium'] as const) {
        const alert = sampleAlert(8, { severity });
        const ev = toFalcoEvent(alert);
        const body = JSON.stringify(ev);
        assert.equal(falcosidekickAccepts(body), undefined);
        const parsed = fromFalcoJson(JSON.parse(body));
        assert.equal(parsed.rule, 'T1612 Build Image on Host');
        assert.equal(parsed.priority, PRIORITY_OF[severity]);
        assert.equal(parsed.hostname, 'node-a');
        assert.equal(parsed.source, 't1612d');
        assert.deepEqual(parsed.tags.slice(0, 2), ['T1612', 'mitre_defense_evasion']);
        assert.equal(kindOfTags(parsed.tags), 'other', 'a forwarded alert never re-enters detection');
        assert.equal(parsed.fields['t1612.alert_id'], alert.id);
        assert.equal(parsed.fields['t1612.destination.ip'], alert.destination.ip);
        assert.equal(parsed.fields['t1612.destination.port'], '443');
        assert.equal(parsed.fields['t1612.connection.attribution'], 'lineage');
        assert.equal(parsed.fields['t1612.build.images'], 'app:1');
        assert.equal(ev.time, alert.time);
        assert.match(ev.output, /^10:00:00\.123000000: (Critical|Error|Warning) /);
        assert.ok(ev.output.includes(alert.summary));
      }
      assert.deepEqual(PRIORITY_OF, { critical: 'Critical', high: 'Error', medium: 'Warning' });
    });

    it('still produces an acceptable event from a sparse or odd alert', () => {
      const odd = { id: 'x-1', time: 'not a time', severity: 'weird', environment: 'e', hostname: '' } as unknown as Alert;
      const ev = toFalcoEvent(odd, () => new Date('2026-01-02T03:04:05.000Z'));
      assert.equal(falcosidekickAccepts(JSON.stringify(ev)), undefined);
      assert.equal(ev.time, '2026-01-02T03:04:05.000Z');
      assert.equal(ev.priority, 'Warning');
      assert.doesNotThrow(() => fromFalcoJson(JSON.parse(JSON.stringify(ev))));
    });

    it('POSTs the Falco event to the Falcosidekick URL', async () => {
      const sink = new SidekickSink({ url: rx.url, timeoutMs: 2_000, concurrency: 1, logger: silentLogger() });
      sinks.push(sink);
      const alert = sampleAlert(9, { severity: 'critical' });
      assert.equal((await sink.send(alert, JSON.stringify(alert))).kind, 'ok');
      const req = rx.requests[0];
      assert.ok(req);
      assert.equal(req.headers['content-type'], 'application/json');
      assert.equal(falcosidekickAccepts(req.text), undefined);
      assert.equal(fromFalcoJson(JSON.parse(req.text)).priority, 'Critical');
      rx.respond(() => ({ status: 400, body: 'Please send a valid request body' }));
      const rejected = await sink.send(alert, '');
      assert.equal(rejected.kind, 'fail');
    });
  });

  it('stdout sink writes one JSON line per alert', async () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (d: Buffer) => (text += d.toString()));
    const sink = new StdoutSink(out);
    for (const i of [1, 2, 3]) {
      const a = sampleAlert(i);
      assert.equal((await sink.send(a, JSON.stringify(a))).kind, 'ok');
    }
    const lines = text.trimEnd().split('\n');
    assert.equal(lines.length, 3);
    assert.deepEqual(lines.map((l) => (JSON.parse(l) as Alert).id), [1, 2, 3].map((i) => sampleAlert(i).id));
    out.destroy();
    assert.equal((await sink.send(sampleAlert(4), '{}')).kind, 'fail');
  });

  it('createSinks builds the sinks the configuration names (stdout when it names none)', async () => {
    const none = createSinks(resolveConfig({ env: {} }), { logger: silentLogger() });
    assert.deepEqual(none.map((s) => s.name), ['stdout']);
    const both = createSinks(resolveConfig({ env: { T1612D_WEBHOOK_URL: rx.url, T1612D_SIDEKICK_URL: rx.url } }), { logger: silentLogger() });
    assert.deepEqual(both.map((s) => s.name), ['webhook', 'sidekick']);
    for (const s of both) await s.close?.();
  });
});
