// HttpServer against real HTTP clients (undici, raw sockets for what undici will not send):
// ingest formats, status codes, auth, limits, backpressure, health, readiness and metrics.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { deflateSync, gzipSync } from 'node:zlib';
import { pino } from 'pino';
import { Agent, request } from 'undici';
import type { FalcoEvent } from '../src/model/event.js';
import { Intake } from '../src/sources/intake.js';
import { HttpServer, parseListenAddress, type HttpServerOptions, type Readiness } from '../src/ops/http-server.js';
import { HttpIngest, type HttpIngestOptions } from '../src/sources/http-ingest.js';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';

// The JSON example of FALCO-FACTS.md, byte for byte.
const FALCO_EXAMPLE =
  '{"hostname":"falco-xczjd","output":"13:44:05.478445995: Critical A shell was spawned ...","priority":"Critical","rule":"Terminal shell in container","source":"syscall","tags":["container","mitre_execution","shell"],"time":"2023-05-25T13:44:05.478445995Z","output_fields":{"container.id":"ee97d9c4186f","container.image.repository":"docker.io/library/alpine","evt.time":1685022245478445995,"proc.cmdline":"sh -c clear; (bash || ash || sh)","proc.name":"sh","proc.pname":"runc","user.name":"root"}}';

let seq = 0;
function ev(tags: string[] = [], rule = `rule ${++seq}`): Record<string, unknown> {
  return {
    time: '2024-01-02T03:04:05.123456789Z',
    rule,
    priority: 'Notice',
    source: 'syscall',
    hostname: 'node-a',
    tags,
    output: `${rule} happened`,
    output_fields: { 'proc.name': 'docker', 'proc.pid': 42, 'fd.sip': '<NA>', 'container.id': null },
  };
}
const BUILD = ['t1612_build', 'T1612'];
const EGRESS = ['t1612_egress', 'T1612'];

interface Harness {
  server: HttpServer;
  ingest: HttpIngest;
  intake: Intake;
  metrics: Metrics;
  received: FalcoEvent[];
  url: string;
  port: number;
  readiness: Readiness;
  release: () => void;
}

const agent = new Agent({ keepAliveTimeout: 1000 });
const servers: HttpServer[] = [];

async function start(
  opts: Partial<HttpServerOptions & HttpIngestOptions> = {},
  extra: { capacity?: number; gated?: boolean; logLines?: string[] } = {},
): Promise<Harness> {
  const metrics = new Metrics();
  const received: FalcoEvent[] = [];
  let release: () => void = () => undefined;
  const gate = extra.gated ? new Promise<void>((r) => (release = r)) : undefined;
  const intake = new Intake({
    capacity: extra.capacity ?? 1000,
    metrics,
    logger: silentLogger(),
    consumer: async (e) => {
      received.push(e);
      if (gate) await gate;
    },
  });
  const logLines = extra.logLines;
  const logger = logLines
    ? pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) })
    : silentLogger();
  const readiness: Readiness = { ready: true, checks: { falco: true, redis: true } };
  const server = new HttpServer({ address: '127.0.0.1:0', ...opts }, { metrics, logger, readiness: () => readiness });
  const ingest = new HttpIngest(
    { bodyLimit: 64 * 1024, ...opts },
    { intake, metrics, logger, reject: (req, res, r) => server.reject(req, res, r) },
  );
  server.mount(ingest);
  servers.push(server);
  const { port } = await server.listen();
  return { server, ingest, intake, metrics, received, url: `http://127.0.0.1:${port}`, port, readiness, release: () => release() };
}

async function post(
  h: Harness,
  body: string | Buffer | Readable,
  headers: Record<string, string> = { 'content-type': 'application/json' },
  path = '/falco',
): Promise<{ status: number; headers: Record<string, unknown>; text: string }> {
  const res = await request(`${h.url}${path}`, { method: 'POST', headers, body, dispatcher: agent });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

async function get(h: Harness, path: string, method: 'GET' | 'HEAD' | 'POST' = 'GET') {
  const res = await request(`${h.url}${path}`, { method, dispatcher: agent });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

/** Send raw bytes, collect everything until the server closes (or `until` matches). */
function raw(port: number, data: string | Buffer, until?: RegExp, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer in time; got ${JSON.stringify(got)}`));
    }, timeoutMs);
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (until?.test(got)) {
        clearTimeout(timer);
        sock.destroy();
        resolve(got);
      }
    });
    sock.on('error', () => undefined); // a reset after the answer is fine; `close` decides
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
    sock.write(data);
  });
}

async function waitFor(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const count = (h: Harness, kind: string): Promise<number> =>
  h.metrics.value('t1612d_falco_events_total', { source: 'http', kind });

function errorOf(text: string): string {
  const parsed = JSON.parse(text) as { error: string };
  assert.equal(typeof parsed.error, 'string');
  assert.ok(!parsed.error.includes('\n'), `reason is one line: ${parsed.error}`);
  return parsed.error;
}

describe('HttpServer', () => {
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  after(async () => {
    await agent.close();
  });

  describe('ingest formats', () => {
    it('accepts one event as Falco http_output posts it and keeps evt.time exact', async () => {
      const h = await start();
      const r = await post(h, FALCO_EXAMPLE, { 'content-type': 'application/json', 'user-agent': 'falcosecurity/falco' });
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.text), { accepted: 1, invalid: 0 });
      await h.intake.whenIdle();
      assert.equal(h.received.length, 1);
      const e = h.received[0] as FalcoEvent;
      assert.equal(e.rule, 'Terminal shell in container');
      assert.equal(e.priority, 'Critical');
      assert.equal(e.source, 'syscall');
      assert.equal(e.hostname, 'falco-xczjd');
      assert.deepEqual(e.tags, ['container', 'mitre_execution', 'shell']);
      assert.equal(e.timeNs, 1685022245478445995n);
      assert.equal(e.fields['evt.time'], '1685022245478445995');
      assert.equal(e.fields['proc.cmdline'], 'sh -c clear; (bash || ash || sh)');
      assert.equal(e.fields['container.image.repository'], 'docker.io/library/alpine');
      assert.equal(await count(h, 'other'), 1);
    });

    it('accepts POST / too, with text/plain or no content type', async () => {
      const h = await start();
      assert.equal((await post(h, JSON.stringify(ev(BUILD)), { 'content-type': 'text/plain' }, '/')).status, 200);
      assert.equal((await post(h, JSON.stringify(ev(EGRESS)), {}, '/')).status, 200);
      assert.equal((await post(h, JSON.stringify(ev()), {}, '/falco/?x=1')).status, 200);
      await h.intake.whenIdle();
      assert.equal(h.received.length, 3);
    });

    it('accepts an array and counts each event once by kind', async () => {
      const h = await start();
      const body = JSON.stringify([ev(BUILD), ev(EGRESS), ev(['other']), ev(BUILD)]);
      const r = await post(h, body);
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.text), { accepted: 4, invalid: 0 });
      await h.intake.whenIdle();
      assert.equal(h.received.length, 4);
      assert.equal(await count(h, 'build'), 2);
      assert.equal(await count(h, 'egress'), 1);
      assert.equal(await count(h, 'other'), 1);
      assert.equal(await count(h, 'invalid'), 0);
      const first = h.received[0] as FalcoEvent;
      assert.equal(first.fields['proc.pid'], '42');
      assert.equal(first.fields['fd.sip'], null);
      assert.equal(first.fields['container.id'], null);
    });

    it('accepts newline-delimited JSON with CRLF and blank lines, in order', async () => {
      const h = await start();
      const events = [ev(BUILD, 'a'), ev(EGRESS, 'b'), ev([], 'c')];
      const body = `${JSON.stringify(events[0])}\r\n\r\n${JSON.stringify(events[1])}\n${JSON.stringify(events[2])}\n`;
      const r = await post(h, body);
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.text), { accepted: 3, invalid: 0 });
      const r2 = await post(h, body, { 'content-type': 'application/x-ndjson' });
      assert.equal(r2.status, 200);
      await h.intake.whenIdle();
      assert.deepEqual(
        h.received.map((e) => e.rule),
        ['a', 'b', 'c', 'a', 'b', 'c'],
      );
      assert.equal(await count(h, 'build'), 2);
      assert.equal(await count(h, 'egress'), 2);
    });

    it('decompresses gzip and deflate bodies', async () => {
      const h = await start();
      const gz = await post(h, gzipSync(FALCO_EXAMPLE), { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      assert.equal(gz.status, 200);
      const arr = JSON.stringify([ev(BUILD), ev(EGRESS)]);
      const df = await post(h, deflateSync(arr), { 'content-encoding': 'deflate' });
      assert.equal(df.status, 200);
      await h.intake.whenIdle();
      assert.equal(h.received.length, 3);
      assert.equal(h.received[0]?.fields['evt.time'], '1685022245478445995');
    });

    it('rejects a broken gzip body with 400 and an unknown encoding with 415', async () => {
      const h = await start();
      const bad = await post(h, Buffer.from('definitely not gzip'), { 'content-encoding': 'gzip' });
      assert.equal(bad.status, 400);
      assert.match(errorOf(bad.text), /gzip/);
      const br = await post(h, FALCO_EXAMPLE, { 'content-encoding': 'br' });
      assert.equal(br.status, 415);
      await h.intake.whenIdle();
      assert.equal(h.received.length, 0);
    });
  });

  describe('bad bodies', () => {
    it('answers 400 with a one-line reason for bad JSON and counts it invalid', async () => {
      const h = await start();
      const r = await post(h, '{"rule": "x", "time": ');
      assert.equal(r.status, 400);
      assert.match(errorOf(r.text), /not valid JSON/);
      const multi = await post(h, '{\n"rule":\n"x",\n');
      assert.equal(multi.status, 400);
      errorOf(multi.text);
      assert.equal(await count(h, 'invalid'), 2); // each unterminated body is one bad item
    });

    it('hints at json_output when Falco posts plain text', async () => {
      const h = await start();
      const r = await post(h, '13:44:05.478445995: Critical A shell was spawned', { 'content-type': 'text/plain' });
      assert.equal(r.status, 400);
      assert.match(errorOf(r.text), /json_output/);
    });

    it('answers 400 for JSON that is no event, junk-only arrays and empty bodies', async () => {
      const h = await start();
      const notEvent = await post(h, '{"hello":"world"}');
      assert.equal(notEvent.status, 400);
      assert.match(errorOf(notEvent.text), /no Falco event.*rule/);
      const junk = await post(h, '[1, "x", {}, {"rule":"r"}]');
      assert.equal(junk.status, 400);
      errorOf(junk.text);
      assert.equal((await post(h, '[]')).status, 400);
      assert.equal((await post(h, '')).status, 400);
      assert.equal((await post(h, '   \n ')).status, 400);
      await h.intake.whenIdle();
      assert.equal(h.received.length, 0);
      assert.equal(await count(h, 'invalid'), 1 + 4 + 2);
    });

    it('accepts the valid items of a mixed array and counts the invalid ones', async () => {
      const h = await start();
      const body = JSON.stringify([ev(BUILD, 'ok1'), { foo: 1 }, 42, { ...ev(), priority: 'Loud' }, ev(EGRESS, 'ok2')]);
      const r = await post(h, body);
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.text), { accepted: 2, invalid: 3 });
      await h.intake.whenIdle();
      assert.deepEqual(
        h.received.map((e) => e.rule),
        ['ok1', 'ok2'],
      );
      assert.equal(await count(h, 'invalid'), 3);
      assert.equal(await count(h, 'build'), 1);
      assert.equal(await count(h, 'egress'), 1);
    });
  });

  describe('auth', () => {
    const TOKEN = 'hunter2-s3cret';

    it('requires the bearer token for ingest, not for health and metrics', async () => {
      const logLines: string[] = [];
      const h = await start({ token: TOKEN }, { logLines });
      const missing = await post(h, FALCO_EXAMPLE);
      assert.equal(missing.status, 401);
      assert.equal(missing.headers['www-authenticate'], 'Bearer');
      assert.match(errorOf(missing.text), /missing/);
      const wrong = await post(h, FALCO_EXAMPLE, { authorization: `Bearer ${TOKEN}x` });
      assert.equal(wrong.status, 401);
      assert.match(errorOf(wrong.text), /wrong/);
      const shorter = await post(h, FALCO_EXAMPLE, { authorization: 'Bearer h' });
      assert.equal(shorter.status, 401);
      const basic = await post(h, FALCO_EXAMPLE, { authorization: `Basic ${TOKEN}` });
      assert.equal(basic.status, 401);
      const basicWrong = await post(h, FALCO_EXAMPLE, { authorization: `Basic ${Buffer.from(`falco:${TOKEN}x`).toString('base64')}` });
      assert.equal(basicWrong.status, 401);
      // Basic credentials are user:password; the token alone (no colon) is no password.
      const basicNoColon = await post(h, FALCO_EXAMPLE, { authorization: `Basic ${Buffer.from(TOKEN).toString('base64')}` });
      assert.equal(basicNoColon.status, 401);
      // The scheme must open the header and the token must end it.
      for (const authorization of [`Token Bearer ${TOKEN}`, `Bearer ${TOKEN} ${TOKEN}`, `xBasic ${Buffer.from(`falco:${TOKEN}`).toString('base64')}`]) {
        assert.equal((await post(h, FALCO_EXAMPLE, { authorization })).status, 401, authorization);
      }
      await h.intake.whenIdle();
      assert.equal(h.received.length, 0);

      const ok = await post(h, FALCO_EXAMPLE, { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' });
      assert.equal(ok.status, 200);
      // Falco's http_output has no header option: `url: http://falco:<token>@t1612d:2802/falco`
      // makes libcurl send Basic auth with the token as the password.
      const asFalco = await post(h, FALCO_EXAMPLE, { authorization: `Basic ${Buffer.from(`falco:${TOKEN}`).toString('base64')}` });
      assert.equal(asFalco.status, 200);
      await h.intake.whenIdle();
      assert.equal(h.received.length, 2);

      assert.equal((await get(h, '/healthz')).status, 200);
      assert.equal((await get(h, '/readyz')).status, 200);
      assert.equal((await get(h, '/metrics')).status, 200);

      const logs = logLines.join('');
      assert.match(logs, /http request rejected/);
      assert.ok(!logs.includes('hunter2'), 'the token never reaches the log');
    });

    it('refuses an Expect: 100-continue upload before the body is sent', async () => {
      const h = await start({ token: TOKEN });
      const head = (auth: string) =>
        `POST /falco HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(FALCO_EXAMPLE)}\r\nExpect: 100-continue\r\n\r\n`;
      const refused = await raw(h.port, head('Authorization: Bearer nope\r\n'), /\r\n\r\n/);
      assert.match(refused, /^HTTP\/1\.1 401 /);

      // With the right token the server invites the body and then accepts it.
      const sock = connect(h.port, '127.0.0.1');
      let timer: NodeJS.Timeout | undefined;
      let answer: string;
      try {
        answer = await new Promise<string>((resolve, reject) => {
          let got = '';
          timer = setTimeout(() => reject(new Error(`no accepted answer within 5000ms; got ${JSON.stringify(got)}`)), 5_000);
          sock.on('error', reject);
          sock.on('close', () => reject(new Error(`connection closed before the answer; got ${JSON.stringify(got)}`)));
          sock.on('data', (d: Buffer) => {
            got += d.toString();
            if (/^HTTP\/1\.1 100 Continue\r\n\r\n$/.test(got)) sock.write(FALCO_EXAMPLE);
            if (/\r\n\r\n\{"accepted"/.test(got)) resolve(got);
          });
          sock.write(head(`Authorization: Bearer ${TOKEN}\r\n`));
        });
      } finally {
        clearTimeout(timer);
        sock.destroy();
      }
      assert.match(answer, /HTTP\/1\.1 200 /);
      await h.intake.whenIdle();
      assert.equal(h.received.length, 1);
    });
  });

  describe('limits', () => {
    it('answers 413 up front when Content-Length is over the limit', async () => {
      const h = await start({ bodyLimit: 4096 });
      const answer = await raw(
        h.port,
        'POST /falco HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{"rule":',
      );
      assert.match(answer, /^HTTP\/1\.1 413 /);
      assert.match(answer, /over the limit/);
      assert.match(answer, /connection: close/i);
    });

    it('answers 413 when a chunked body grows over the limit', async () => {
      const h = await start({ bodyLimit: 4096 });
      const chunk = Buffer.alloc(1024, 0x20);
      const body = Readable.from((function* () {
        yield Buffer.from('[');
        for (let i = 0; i < 8; i++) yield chunk;
        yield Buffer.from(']');
      })());
      const r = await post(h, body);
      assert.equal(r.status, 413);
      assert.match(errorOf(r.text), /over the limit of 4096/);
      await h.intake.whenIdle();
      assert.equal(h.received.length, 0);
    });

    it('counts the compressed bytes against the limit too', async () => {
      const limit = 64 * 1024;
      const h = await start({ bodyLimit: limit });
      // Random bytes do not compress: gzip makes them a little larger. Under the limit once
      // inflated, over it as sent; chunked, so no Content-Length tells in advance.
      const inflated = randomBytes(limit - 8);
      const sent = gzipSync(inflated);
      assert.ok(sent.length > limit);
      const r = await post(h, Readable.from([sent]), { 'content-encoding': 'gzip' });
      assert.equal(r.status, 413);
      assert.match(errorOf(r.text), /over the limit of 65536/);
    });

    it('stops a gzip bomb at the limit with 413', async () => {
      const h = await start({ bodyLimit: 64 * 1024 });
      const bomb = gzipSync(Buffer.alloc(50 * 1024 * 1024, 0x20)); // ~50 KiB inflating to 50 MiB
      assert.ok(bomb.length < 64 * 1024);
      const r = await post(h, bomb, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      assert.equal(r.status, 413);
      assert.match(errorOf(r.text), /over the limit/);
      // The server is still fine afterwards.
      assert.equal((await post(h, gzipSync(FALCO_EXAMPLE), { 'content-encoding': 'gzip' })).status, 200);
    });

    it('cuts a connection whose headers never finish (slow-loris)', async () => {
      const h = await start({ headersTimeoutMs: 200, requestTimeoutMs: 400 });
      const answer = await raw(h.port, 'POST /falco HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n');
      // `raw` resolves only when the server hangs up (it fails after 5 s otherwise).
      assert.ok(answer === '' || answer.startsWith('HTTP/1.1 408 '), answer);
      const stalled = await raw(h.port, 'POST /falco HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"rule"');
      assert.ok(stalled === '' || stalled.startsWith('HTTP/1.1 408 '), stalled);
      await h.intake.whenIdle();
      assert.equal(h.received.length, 0);
    });
  });

  describe('backpressure', () => {
    it('answers 503 with Retry-After when the intake is full, takes nothing, and 200 after it drains', async () => {
      const h = await start({ retryAfterSeconds: 3 }, { capacity: 2, gated: true });
      assert.equal((await post(h, JSON.stringify(ev(BUILD, 'e1')))).status, 200);
      await waitFor(() => h.received.length === 1, 'the consumer to hold e1');
      assert.equal((await post(h, JSON.stringify([ev(EGRESS, 'e2'), ev([], 'e3')]))).status, 200);
      assert.equal(h.intake.size, 2);

      const full = await post(h, JSON.stringify(ev(BUILD, 'e4')));
      assert.equal(full.status, 503);
      assert.equal(full.headers['retry-after'], '3');
      const fullMixed = await post(h, JSON.stringify([ev(BUILD, 'e4'), { junk: true }]));
      assert.equal(fullMixed.status, 503);
      // A 503 counts nothing: the sender's retry will.
      assert.equal(await count(h, 'build'), 1);
      assert.equal(await count(h, 'invalid'), 0);

      h.release();
      await h.intake.whenIdle();
      const retry = await post(h, JSON.stringify([ev(BUILD, 'e4'), { junk: true }]));
      assert.equal(retry.status, 200);
      assert.deepEqual(JSON.parse(retry.text), { accepted: 1, invalid: 1 });
      await h.intake.whenIdle();
      assert.deepEqual(
        h.received.map((e) => e.rule),
        ['e1', 'e2', 'e3', 'e4'],
      );
      assert.equal(await count(h, 'build'), 2);
      assert.equal(await count(h, 'invalid'), 1);
    });

    it('refuses a batch that does not fit beside queued events', async () => {
      const h = await start({}, { capacity: 3, gated: true });
      assert.equal((await post(h, JSON.stringify(ev([], 'hold')))).status, 200);
      await waitFor(() => h.received.length === 1, 'the consumer to hold an event');
      assert.equal((await post(h, JSON.stringify(ev([], 'q1')))).status, 200);
      const r = await post(h, JSON.stringify([ev(), ev(), ev()]));
      assert.equal(r.status, 503);
      assert.equal(h.intake.size, 1);
      h.release();
      await h.intake.whenIdle();
    });

    it('refuses with 413, before parsing, a batch larger than the whole queue', async () => {
      const h = await start({}, { capacity: 2 });
      const r = await post(h, JSON.stringify([ev(), ev(), ev(), ev(), ev()]));
      assert.equal(r.status, 413);
      assert.match(errorOf(r.text), /more events than the intake holds \(2\)/);
      assert.equal(await h.metrics.value('t1612d_ingest_refused_total', { reason: 'too_large' }), 1);
      await h.intake.whenIdle();
      assert.equal(h.received.length, 0);
      assert.equal(await count(h, 'invalid'), 0);
    });
  });

  describe('health, readiness, metrics', () => {
    it('serves /healthz, /readyz following the callback, and /metrics', async () => {
      const h = await start();
      const health = await get(h, '/healthz');
      assert.equal(health.status, 200);
      assert.equal(health.text.trim(), 'ok');
      assert.equal((await get(h, '/healthz', 'HEAD')).status, 200);

      const ready = await get(h, '/readyz');
      assert.equal(ready.status, 200);
      assert.deepEqual(JSON.parse(ready.text), { ready: true, checks: { falco: true, redis: true } });
      h.readiness.ready = false;
      h.readiness.checks['redis'] = false;
      const notReady = await get(h, '/readyz');
      assert.equal(notReady.status, 503);
      assert.deepEqual(JSON.parse(notReady.text), { ready: false, checks: { falco: true, redis: false } });

      assert.equal((await post(h, JSON.stringify([ev(BUILD), ev(EGRESS)]))).status, 200);
      await h.intake.whenIdle();
      const m = await get(h, '/metrics');
      assert.equal(m.status, 200);
      assert.match(String(m.headers['content-type']), /^text\/plain/);
      assert.match(m.text, /t1612d_falco_events_total\{source="http",kind="build"\} 1/);
      assert.match(m.text, /t1612d_falco_events_total\{source="http",kind="egress"\} 1/);
    });

    it('answers 503 on /readyz when the readiness callback throws', async () => {
      const metrics = new Metrics();
      const server = new HttpServer(
        { address: '127.0.0.1:0' },
        {
          metrics,
          logger: silentLogger(),
          readiness: () => {
            throw new Error('boom');
          },
        },
      );
      servers.push(server);
      const { port } = await server.listen();
      const res = await request(`http://127.0.0.1:${port}/readyz`, { dispatcher: agent });
      assert.equal(res.statusCode, 503);
      await res.body.text();
    });

    it('answers 404 for unknown paths and 405 for wrong methods', async () => {
      const h = await start();
      assert.equal((await get(h, '/nope')).status, 404);
      const getIngest = await get(h, '/falco');
      assert.equal(getIngest.status, 405);
      assert.equal(getIngest.headers['allow'], 'POST');
      assert.equal((await get(h, '/healthz', 'POST')).status, 405);
      assert.equal((await get(h, '/metrics', 'POST')).status, 405);
    });
  });

  describe('lifecycle', () => {
    it('parses listen addresses', () => {
      assert.deepEqual(parseListenAddress('0.0.0.0:2802'), { host: '0.0.0.0', port: 2802 });
      assert.deepEqual(parseListenAddress('[::1]:0'), { host: '::1', port: 0 });
      assert.deepEqual(parseListenAddress(':2802'), { host: undefined, port: 2802 });
      assert.throws(() => parseListenAddress('localhost'), /not host:port/);
      assert.throws(() => parseListenAddress('a:70000'), /not host:port/);
    });

    it('reports a port in use clearly', async () => {
      const h = await start();
      const metrics = new Metrics();
      const clash = new HttpServer(
        { address: `127.0.0.1:${h.port}` },
        { metrics, logger: silentLogger(), readiness: () => ({ ready: true, checks: {} }) },
      );
      await assert.rejects(clash.listen(), /cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/);
      await clash.close();
    });

    it('closes idempotently, including keep-alive connections', async () => {
      const h = await start();
      const sock = connect(h.port, '127.0.0.1');
      let got = '';
      sock.on('data', (d: Buffer) => (got += d.toString()));
      const closed = new Promise<void>((r) => sock.on('close', () => r()));
      sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n');
      await waitFor(() => got.includes('ok'), 'the healthz answer');
      await Promise.all([h.server.close(), h.server.close()]);
      await closed;
      await h.server.close();
      await assert.rejects(h.server.listen(), /closed/);
    });
  });
});
