// The ingest under hostile input, with real clients (undici, raw sockets, a real TLS client):
// a huge priority a thousand times, the caps on concurrent bodies and connections, the event
// loop under a large body, token-or-client-certificate enforcement at start-up, and mutual TLS
// with certificates made by openssl.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pino } from 'pino';
import { Agent, request } from 'undici';
import { Intake } from '../src/sources/intake.js';
import { HttpServer, type HttpServerOptions } from '../src/ops/http-server.js';
import { HttpIngest, type HttpIngestOptions } from '../src/sources/http-ingest.js';
import { Metrics } from '../src/ops/metrics.js';
import { testPki } from './support/certs.js';
import { waitFor } from './support/wait.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

interface Harness {
  server: HttpServer;
  ingest: HttpIngest;
  intake: Intake;
  metrics: Metrics;
  port: number;
  url: string;
  received: number;
  logLines: string[];
}

const servers: HttpServer[] = [];
const sockets: Socket[] = [];

async function start(
  opts: Partial<HttpServerOptions & HttpIngestOptions> = {},
  capacity = 1000,
  scheme: 'http' | 'https' = 'http',
  gate?: Promise<void>,
): Promise<Harness> {
  const metrics = new Metrics();
  const logLines: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) });
  const h = { received: 0, logLines } as Harness;
  const intake = new Intake({
    capacity,
    metrics,
    logger,
    consumer: () => {
      h.received++;
      return gate;
    },
  });
  const server = new HttpServer({ address: '127.0.0.1:0', ...opts }, { metrics, logger, readiness: () => ({ ready: true, checks: {} }) });
  const ingest = new HttpIngest({ bodyLimit: 64 * 1024, ...opts }, { intake, metrics, logger, reject: (q, s, r) => server.reject(q, s, r) });
  server.mount(ingest);
  servers.push(server);
  const { port } = await server.listen();
  return Object.assign(h, { server, ingest, intake, metrics, port, url: `${scheme}://127.0.0.1:${port}` });
}

function ev(i = 0): Record<string, unknown> {
  return {
    time: '2026-01-01T00:00:00.000000001Z',
    rule: `r${i}`,
    priority: 'Notice',
    hostname: 'node-a',
    tags: ['t1612_egress'],
    output: 'egress',
    output_fields: { 'fd.sip': `198.51.100.${i % 250}`, 'proc.name': 'curl', 'proc.cmdline': `curl http://198.51.100.${i % 250}/x` },
  };
}

/** A raw connection that sends `head` and then nothing more (until the test writes again). */
function rawConnect(port: number, head = ''): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => {
      if (head) s.write(head);
      resolve(s);
    });
    s.on('error', () => undefined);
    s.once('error', reject);
    sockets.push(s);
  });
}

function closed(s: Socket): Promise<void> {
  return s.destroyed || s.closed ? Promise.resolve() : new Promise((r) => s.once('close', () => r()));
}

describe('ingest hardening', function () {
  this.timeout(120_000);
  const agent = new Agent({ keepAliveTimeout: 1000, connections: 8 });

  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  after(async () => {
    await agent.close();
  });

  it('refuses a 4 MiB priority with a short reason, 1,000 times, with no heap growth and a few log lines', async () => {
    const h = await start({ bodyLimit: 8 * 1024 * 1024 });
    const big = Buffer.alloc(4 * 1024 * 1024, 'A');
    const send = async (i: number): Promise<{ status: number; text: string }> => {
      // Streamed in three pieces: no 4 MiB copy on the client side of the test.
      const body = Readable.from([
        Buffer.from(`{"time":"2026-01-01T00:00:00Z","rule":"r","priority":"P${i}-`),
        big,
        Buffer.from('","output_fields":{}}'),
      ]);
      const res = await request(`${h.url}/falco`, { method: 'POST', body, dispatcher: agent });
      return { status: res.statusCode, text: await res.body.text() };
    };
    const batch = async (from: number, to: number): Promise<void> => {
      for (let i = from; i < to; i += 4) {
        const rs = await Promise.all([0, 1, 2, 3].map((k) => send(i + k)));
        for (const r of rs) {
          assert.equal(r.status, 400);
          assert.ok(r.text.length < 300, `short reason: ${r.text.length} chars`);
          assert.ok(!r.text.includes('AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'), 'input not echoed');
        }
      }
    };
    const t0 = Date.now();
    await batch(0, 100);
    gc();
    const before = process.memoryUsage().heapUsed;
    await batch(100, 1000);
    gc();
    const growth = process.memoryUsage().heapUsed - before;
    assert.ok(growth < 16 * 1024 * 1024, `heap grew ${Math.round(growth / 1024)} KiB over 900 requests`);
    assert.equal(await h.metrics.value('t1612d_ingest_refused_total', { reason: 'invalid' }), 1000);
    assert.equal(await h.metrics.value('t1612d_falco_events_total', { kind: 'invalid' }), 1000);
    // Throttled per category: a line or two, each short, never one per request.
    // (Two categories: the refused request, and the invalid event; each once per period.)
    const warnLines = h.logLines.filter((l) => l.includes('"level":40'));
    const periods = Math.ceil((Date.now() - t0) / 10_000);
    assert.ok(warnLines.length <= 2 * periods + 2, `${warnLines.length} warning lines in ${periods} periods of 10 s`);
    assert.ok(h.logLines.every((l) => l.length < 2048), 'every log line is short');
    assert.equal(h.received, 0);
  });

  it('quotes at most a short prefix of a bad priority that is parsed', async () => {
    const h = await start({ bodyLimit: 1024 * 1024 });
    const res = await request(`${h.url}/falco`, {
      method: 'POST',
      body: JSON.stringify({ ...ev(), priority: `Loud${'!'.repeat(300_000)}` }),
      dispatcher: agent,
    });
    const { error } = (await res.body.json()) as { error: string };
    assert.equal(res.statusCode, 400);
    assert.match(error, /priority "Loud!{28}"… \(300004 chars\) is not one of Emergency/);
    assert.ok(error.length < 250);
  });

  it('caps concurrent bodies: 503 + Retry-After beyond the cap, the others complete', async () => {
    const h = await start({ maxConcurrentBodies: 2 });
    const body = JSON.stringify(ev());
    const head = `POST /falco HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
    const slow = await Promise.all([rawConnect(h.port, head + body.slice(0, 10)), rawConnect(h.port, head + body.slice(0, 10))]);
    await waitFor('two bodies in progress', () => h.ingest.activeBodies === 2);
    const res = await request(`${h.url}/falco`, { method: 'POST', body, dispatcher: agent });
    assert.equal(res.statusCode, 503);
    assert.equal(res.headers['retry-after'], '1');
    assert.match(await res.body.text(), /too many uploads/);
    assert.equal(await h.metrics.value('t1612d_ingest_refused_total', { reason: 'too_many_bodies' }), 1);
    const answers = slow.map(
      (s) =>
        new Promise<string>((resolve) => {
          let got = '';
          s.on('data', (d: Buffer) => {
            got += d.toString();
            if (got.includes('\r\n\r\n{')) resolve(got);
          });
        }),
    );
    for (const s of slow) s.write(body.slice(10));
    for (const a of await Promise.all(answers)) assert.match(a, /^HTTP\/1\.1 200/);
    await waitFor('bodies released', () => h.ingest.activeBodies === 0);
    const after = await request(`${h.url}/falco`, { method: 'POST', body, dispatcher: agent });
    assert.equal(after.statusCode, 200);
    await after.body.text();
  });

  it('caps connections: idle ones make room for a probe; when all are busy a new one is closed', async () => {
    const h = await start({ maxConnections: 3, maxConcurrentBodies: 10 });
    const idle = await Promise.all([rawConnect(h.port), rawConnect(h.port), rawConnect(h.port)]);
    await waitFor('three connections', () => h.server.connections === 3);
    const health = await fetch(`${h.url}/healthz`);
    assert.equal(health.status, 200, 'a probe gets through a flood of idle sockets');
    await health.text();
    await closed(idle[0] as Socket); // the oldest idle one made room
    assert.ok(h.server.connections <= 3);
    assert.ok((await h.metrics.value('t1612d_ingest_refused_total', { reason: 'too_many_connections' })) >= 1);
    for (const s of sockets.splice(0)) s.destroy();
    await waitFor('connections gone', () => h.server.connections === 0);

    const head = `POST /falco HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{`;
    await Promise.all([rawConnect(h.port, head), rawConnect(h.port, head), rawConnect(h.port, head)]);
    await waitFor('three busy uploads', () => h.ingest.activeBodies === 3);
    const extra = await rawConnect(h.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    let answered = '';
    extra.on('data', (d: Buffer) => (answered += d.toString()));
    await closed(extra);
    assert.equal(answered, '', 'closed without an answer');
    assert.equal(h.ingest.activeBodies, 3, 'busy uploads untouched');
  });

  interface Answer {
    status: number;
    text: string;
  }

  /**
   * POST two bodies one after the other, and check the event loop kept turning meanwhile:
   * relative, not absolute (the box is shared), the longest stall is a small part of the whole
   * and the loop turned again and again (a parser that never yields leaves no turn: parsing a
   * body whole was one stall of most of the request).
   */
  async function postResponsive(url: string, first: Buffer, second: Buffer): Promise<[Answer, Answer]> {
    let turns = 0;
    let spinning = true;
    const spin = (): void => {
      turns++;
      if (spinning) setImmediate(spin);
    };
    const histogram = monitorEventLoopDelay({ resolution: 5 });
    histogram.enable();
    const t0 = performance.now();
    setImmediate(spin);
    const post = async (body: Buffer): Promise<Answer> => {
      const res = await request(`${url}/falco`, { method: 'POST', body, dispatcher: agent });
      return { status: res.statusCode, text: await res.body.text() };
    };
    const answers: [Answer, Answer] = [await post(first), await post(second)];
    const elapsed = performance.now() - t0;
    spinning = false;
    histogram.disable();
    const maxMs = histogram.max / 1e6;
    assert.ok(maxMs < elapsed / 3, `longest stall ${maxMs.toFixed(1)} ms of ${elapsed.toFixed(0)} ms`);
    assert.ok(turns > 20, `${turns} turns of the event loop`);
    return answers;
  }

  it('keeps the event loop responsive while a 9 MB array of 40k events is parsed', async () => {
    const h = await start({ bodyLimit: 16 * 1024 * 1024 }, 50_000);
    const body = Buffer.from(JSON.stringify(Array.from({ length: 40_000 }, (_, i) => ev(i))));
    assert.ok(body.length > 9_000_000);
    const nested = Buffer.from(`${'['.repeat(3_000_000)}${']'.repeat(3_000_000)}`);
    const [res, deep] = await postResponsive(h.url, body, nested);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(JSON.parse(res.text), { accepted: 40_000, invalid: 0 });
    assert.equal(deep.status, 400);
    assert.match(deep.text, /nested more than 32 levels|over the limit of 1048576 bytes/);
  });

  it('keeps the event loop responsive while NDJSON of 40k events, and 8 MB of blank lines, are read', async () => {
    const h = await start({ bodyLimit: 16 * 1024 * 1024 }, 50_000);
    const lines = Buffer.from(Array.from({ length: 40_000 }, (_, i) => JSON.stringify(ev(i))).join('\n'));
    assert.ok(lines.length > 9_000_000);
    const blank = Buffer.alloc(8 * 1024 * 1024, 0x0a);
    const [res, empty] = await postResponsive(h.url, lines, blank);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(JSON.parse(res.text), { accepted: 40_000, invalid: 0 });
    assert.equal(empty.status, 400);
    assert.match(empty.text, /body is empty/);
  });

  it('refuses an array beyond the free room before parsing it (503 when others are queued)', async () => {
    let release: () => void = () => undefined;
    // A consumer that waits keeps events queued.
    const gate = new Promise<void>((r) => (release = r));
    const h = await start({ bodyLimit: 1024 * 1024 }, 10, 'http', gate);
    const five = JSON.stringify(Array.from({ length: 5 }, (_, i) => ev(i)));
    const first = await request(`${h.url}/falco`, { method: 'POST', body: five, dispatcher: agent });
    assert.equal(first.statusCode, 200);
    await first.body.text();
    const second = await request(`${h.url}/falco`, { method: 'POST', body: JSON.stringify(Array.from({ length: 7 }, (_, i) => ev(i))), dispatcher: agent });
    assert.equal(second.statusCode, 503);
    await second.body.text();
    assert.equal(await h.metrics.value('t1612d_ingest_refused_total', { reason: 'queue_full' }), 1);
    release();
  });

  describe('TLS', () => {
    it('mutual TLS: a client certificate from the CA is accepted; none, or another CA, is refused', async () => {
      const pki = testPki();
      const h = await start(
        { tls: { certFile: pki.server.certFile, keyFile: pki.server.keyFile, clientCaFile: pki.caFile } },
        1000,
        'https',
      );
      const body = JSON.stringify(ev());
      const withCert = new Agent({ connect: { ca: pki.ca, cert: pki.client.cert, key: pki.client.key } });
      const noCert = new Agent({ connect: { ca: pki.ca } });
      const rogue = new Agent({ connect: { ca: pki.ca, cert: pki.rogueClient.cert, key: pki.rogueClient.key } });
      try {
        const ok = await request(`${h.url}/falco`, { method: 'POST', body, dispatcher: withCert });
        assert.equal(ok.statusCode, 200);
        await ok.body.text();
        await assert.rejects(request(`${h.url}/falco`, { method: 'POST', body, dispatcher: noCert }));
        await assert.rejects(request(`${h.url}/falco`, { method: 'POST', body, dispatcher: rogue }));
        await waitFor('refusals counted', async () => (await h.metrics.value('t1612d_ingest_refused_total', { reason: 'unauthenticated' })) >= 2);
        assert.equal(h.received, 1);
      } finally {
        await Promise.all([withCert.close(), noCert.close(), rogue.close()]);
      }
    });

    it('HTTPS with a token: health without it, ingest only with it', async () => {
      const pki = testPki();
      const h = await start({ tls: { certFile: pki.server.certFile, keyFile: pki.server.keyFile }, token: 's3cret' }, 1000, 'https');
      const tls = new Agent({ connect: { ca: pki.ca } });
      try {
        const health = await request(`${h.url}/healthz`, { dispatcher: tls });
        assert.equal(health.statusCode, 200);
        await health.body.text();
        const body = JSON.stringify(ev());
        const anon = await request(`${h.url}/falco`, { method: 'POST', body, dispatcher: tls });
        assert.equal(anon.statusCode, 401);
        await anon.body.text();
        // Falco's http_output: the token as the URL's password, sent as Basic auth.
        const basic = Buffer.from('falco:s3cret').toString('base64');
        const ok = await request(`${h.url}/falco`, { method: 'POST', body, headers: { authorization: `Basic ${basic}` }, dispatcher: tls });
        assert.equal(ok.statusCode, 200);
        await ok.body.text();
        assert.equal(await h.metrics.value('t1612d_ingest_refused_total', { reason: 'unauthenticated' }), 1);
      } finally {
        await tls.close();
      }
    });
  });

  it('stops `t1612d run` with one line when ingest beyond loopback has no token or client CA', async () => {
    const bin = join(import.meta.dirname, '..', 'bin', 't1612d.js');
    const child = spawn(process.execPath, [bin, 'run'], {
      env: { PATH: process.env['PATH'] ?? '', T1612D_FALCO_GRPC_ADDRESS: '', T1612D_HTTP_ADDRESS: '0.0.0.0:0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    assert.equal(code, 2);
    const lines = stderr.trim().split('\n');
    assert.equal(lines.length, 1, stderr);
    assert.match(lines[0] ?? '', /^t1612d: missing setting http_token \(T1612D_HTTP_TOKEN\): .*http_tls_client_ca_file.*http_allow_unauthenticated/);
  });
});
