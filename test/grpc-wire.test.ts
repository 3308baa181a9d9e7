// GrpcSource against servers that do NOT share our .proto: a grpc-js server registered with
// hand-written method definitions that pass raw bytes through, and a bare node:http2 server,
// both sending responses hand-encoded in protobuf wire format, shaped like Falco's
// falco.outputs.response. A wrong field number, enum number or method path in our proto
// fails here even though our own emulator would agree with it.
import assert from 'node:assert/strict';
import * as http2 from 'node:http2';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { EVENT_LIMITS, fieldOf, fromGrpcResponse, type FalcoEvent, type GrpcResponse } from '../src/model/event.js';
import { GrpcEvent, InvalidResponse, loadFalcoProto, LOADER_OPTIONS, PROTO_DIR, SERVICE_NAME, UndecodableResponse } from '../src/sources/proto.js';
import { GrpcSource } from '../src/sources/grpc-source.js';
import type { GrpcSourceOptions } from '../src/sources/grpc-options.js';
import { Intake } from '../src/sources/intake.js';
import { createLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { testPki } from './support/certs.js';
import { plainEvent } from './support/records.js';
import { waitFor, withinMs } from './support/wait.js';

// --- a tiny protobuf encoder -------------------------------------------------------------

function varint(n: number | bigint): Buffer {
  let v = BigInt(n);
  const out: number[] = [];
  do {
    const b = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v > 0n ? b | 0x80 : b);
  } while (v > 0n);
  return Buffer.from(out);
}
const key = (field: number, wireType: number): Buffer => varint((field << 3) | wireType);
const vint = (field: number, n: number | bigint): Buffer => Buffer.concat([key(field, 0), varint(n)]);
const bytes = (field: number, b: Buffer): Buffer => Buffer.concat([key(field, 2), varint(b.length), b]);
const str = (field: number, s: string): Buffer => bytes(field, Buffer.from(s, 'utf8'));
const fixed64 = (field: number): Buffer => Buffer.concat([key(field, 1), Buffer.alloc(8, 7)]);
const fixed32 = (field: number): Buffer => Buffer.concat([key(field, 5), Buffer.alloc(4, 9)]);
const timestamp = (seconds: number | bigint, nanos: number): Buffer =>
  bytes(1, Buffer.concat([seconds ? vint(1, seconds) : Buffer.alloc(0), nanos ? vint(2, nanos) : Buffer.alloc(0)]));
const mapEntry = (field: number, k: string, v: string): Buffer => bytes(field, Buffer.concat([str(1, k), str(2, v)]));

/** Falco ≥0.31: every field, plus unknown fields of every wire type that must be skipped. */
const FULL = Buffer.concat([
  timestamp(1, 2),
  vint(2, 2), // priority CRITICAL
  vint(3, 0), // source_deprecated SYSCALL (Falco omits zero; an explicit zero must read the same)
  str(4, 'T1612 build'),
  vint(15, 123456789), // unknown varint
  str(5, '08:00:00.000000002: Critical docker build'),
  mapEntry(6, 'proc.name', 'docker'),
  mapEntry(6, 'evt.time', '1000000002'),
  mapEntry(6, 'container.id', '<NA>'),
  bytes(20, Buffer.from([1, 2, 3, 4])), // unknown length-delimited
  str(7, 'node-a'),
  str(8, 't1612_build'),
  fixed64(21), // unknown fixed64
  str(8, 'mitre_defense_evasion'),
  fixed32(22), // unknown fixed32
  str(9, 'syscall'),
]);
const FULL_EVENT: FalcoEvent = {
  timeNs: 1_000_000_002n,
  rule: 'T1612 build',
  priority: 'Critical',
  source: 'syscall',
  hostname: 'node-a',
  tags: ['t1612_build', 'mitre_defense_evasion'],
  output: '08:00:00.000000002: Critical docker build',
  fields: { 'proc.name': 'docker', 'evt.time': '1000000002', 'container.id': null },
};

/** Falco ≤0.30: no tags (8) nor source (9); priority EMERGENCY (0) omitted; source only as enum 3. */
const OLD = Buffer.concat([timestamp(1_700_000_000, 0), vint(3, 1), str(4, 'K8s audit rule'), str(7, 'node-b')]);
const OLD_EVENT: FalcoEvent = {
  timeNs: 1_700_000_000_000_000_000n,
  rule: 'K8s audit rule',
  priority: 'Emergency',
  source: 'k8s_audit',
  hostname: 'node-b',
  tags: [],
  output: '',
  fields: {},
};

/** A plugin event: enum PLUGIN (3) in field 3, the plugin's source name in field 9. */
const PLUGIN = Buffer.concat([
  timestamp(1_700_000_001, 999_999_999),
  vint(2, 6), // INFORMATIONAL
  vint(3, 3),
  str(4, 'Plugin rule'),
  mapEntry(6, 'ka.verb', 'null'),
  str(9, 'k8saudit'),
]);
const PLUGIN_EVENT: FalcoEvent = {
  timeNs: 1_700_000_001_999_999_999n,
  rule: 'Plugin rule',
  priority: 'Informational',
  source: 'k8saudit',
  hostname: '',
  tags: [],
  output: '',
  fields: { 'ka.verb': null },
};

// --- a Falco-like server that knows nothing of our proto ------------------------------------

const SUB = '/falco.outputs.service/sub';
const GET = '/falco.outputs.service/get';
const raw = (b: Buffer): Buffer => b;

function method(path: string, requestStream: boolean): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path,
    requestStream,
    responseStream: true,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  };
}

/** How a `sub` call ends after writing its first burst: like Falco (never), or not. */
type SubEnding = 'falco' | 'ok' | 'error';

class WireFalco {
  readonly queue: Buffer[] = [];
  readonly requests: { path: string; bytes: Buffer }[] = [];
  /** Endings for successive `sub` calls; 'falco' once exhausted. */
  readonly endings: SubEnding[] = [];
  subCalls = 0;
  address = '';
  private server: grpc.Server | undefined;

  async start(address: string, creds: grpc.ServerCredentials): Promise<void> {
    const server = new grpc.Server();
    const service: grpc.ServiceDefinition = { sub: method(SUB, true), get: method(GET, false) };
    server.addService(service, {
      sub: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => this.sub(call),
      get: (call: grpc.ServerWritableStream<Buffer, Buffer>) => this.get(call),
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(address, creds, (err, p) => (err ? reject(err) : resolve(p))),
    );
    this.address = address.startsWith('unix:') ? address : address.replace(/:0$/, `:${port}`);
    this.server = server;
  }

  /** Graceful stop: GOAWAY, then wait for open calls (Falco's Shutdown() has no deadline). */
  tryShutdown(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    return new Promise((resolve) => (server ? server.tryShutdown(() => resolve()) : resolve()));
  }

  stop(): void {
    this.server?.forceShutdown();
    this.server = undefined;
  }

  private sub(call: grpc.ServerDuplexStream<Buffer, Buffer>): void {
    this.subCalls++;
    const ending = this.endings.shift() ?? 'falco';
    let gone = false;
    call.on('cancelled', () => (gone = true));
    call.on('error', () => (gone = true));
    call.on('end', () => {
      // Client half-close: Falco's next read fails and it drops the call.
      if (!gone) call.end();
      gone = true;
    });
    call.on('data', (req: Buffer) => {
      this.requests.push({ path: SUB, bytes: req });
      if (gone) return;
      let wrote = 0;
      for (let m = this.queue.shift(); m; m = this.queue.shift()) {
        call.write(m);
        wrote++;
      }
      if (wrote > 0 && ending !== 'falco') {
        gone = true;
        if (ending === 'ok') call.end();
        else call.emit('error', Object.assign(new Error('internal failure'), { code: grpc.status.INTERNAL }));
      }
    });
  }

  private get(call: grpc.ServerWritableStream<Buffer, Buffer>): void {
    this.requests.push({ path: GET, bytes: call.request });
    for (let m = this.queue.shift(); m; m = this.queue.shift()) call.write(m);
    call.end();
  }
}

// --- harness -------------------------------------------------------------------------------

const cleanups: (() => unknown)[] = [];

function socketPath(): string {
  const dir = mkdtempSync(join(tmpdir(), 't1612d-wire-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'falco.sock');
}

async function wireFalco(address: string, creds = grpc.ServerCredentials.createInsecure()): Promise<WireFalco> {
  const falco = new WireFalco();
  await falco.start(address, creds);
  cleanups.push(() => falco.stop());
  return falco;
}

function source(options: GrpcSourceOptions): { source: GrpcSource; events: FalcoEvent[]; lines: string[]; metrics: Metrics } {
  const metrics = new Metrics();
  const events: FalcoEvent[] = [];
  const lines: string[] = [];
  const logger = createLogger({ level: 'debug', destination: { write: (s: string) => void lines.push(s) } });
  const intake = new Intake({ capacity: 1000, metrics, logger, consumer: (ev) => void events.push(plainEvent(ev)) });
  const src = new GrpcSource(
    { backoff: { initialMs: 50, multiplier: 1.5, maxMs: 200, jitter: 0.1 }, pollIntervalMs: 30, getIntervalMs: 30, ...options },
    { intake, metrics, logger },
  );
  cleanups.push(() => src.close());
  return { source: src, events, lines, metrics };
}

async function grpcEventCount(metrics: Metrics, kind: string): Promise<number> {
  const m = await metrics.falcoEvents.get();
  return m.values.find((v) => v.labels['source'] === 'grpc' && v.labels['kind'] === kind)?.value ?? 0;
}

describe('GrpcSource on the wire (hand-encoded Falco responses)', function () {
  this.timeout(30_000);

  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) {
      try {
        await c();
      } catch {
        /* best effort */
      }
    }
  });

  it('sub over a unix socket: empty requests on the sub path, exact events, keeps polling while idle', async () => {
    const falco = await wireFalco(`unix://${socketPath()}`);
    falco.queue.push(FULL, OLD, PLUGIN);
    const s = source({ address: falco.address, method: 'sub' });
    s.source.start();
    await waitFor('3 events', () => s.events.length >= 3);
    assert.deepEqual(s.events, [FULL_EVENT, OLD_EVENT, PLUGIN_EVENT]);
    assert.equal(s.source.status, 'connected');
    assert.equal(await grpcEventCount(s.metrics, 'build'), 1);
    assert.equal(await grpcEventCount(s.metrics, 'other'), 2);

    // Falco writes only after a request: an idle client that stopped asking would never see this.
    const polled = falco.requests.length;
    await waitFor('more polls while idle', () => falco.requests.length >= polled + 3);
    falco.queue.push(PLUGIN);
    await waitFor('the event queued while idle', () => s.events.length === 4);
    assert.deepEqual(s.events[3], PLUGIN_EVENT);

    assert.equal(falco.subCalls, 1, 'one long-lived sub call');
    assert.ok(falco.requests.every((r) => r.path === SUB && r.bytes.length === 0), 'every request is an empty message');
  });

  it('get over TCP with mutual TLS: repeated drains, each an empty request on the get path', async () => {
    const pki = testPki();
    const creds = grpc.ServerCredentials.createSsl(pki.ca, [{ private_key: pki.server.key, cert_chain: pki.server.cert }], true);
    const falco = await wireFalco('127.0.0.1:0', creds);
    falco.queue.push(OLD, FULL);
    const s = source({
      address: falco.address,
      method: 'get',
      caFile: pki.caFile,
      certFile: pki.client.certFile,
      keyFile: pki.client.keyFile,
    });
    s.source.start();
    await waitFor('2 events', () => s.events.length >= 2);
    const calls = falco.requests.length;
    await waitFor('further get calls on an empty queue', () => falco.requests.length >= calls + 2);
    falco.queue.push(PLUGIN);
    await waitFor('3 events', () => s.events.length >= 3);
    assert.deepEqual(s.events, [OLD_EVENT, FULL_EVENT, PLUGIN_EVENT]);
    assert.equal(s.source.status, 'connected');
    assert.ok(falco.requests.every((r) => r.path === GET && r.bytes.length === 0), 'every request is an empty message');
  });

  it('accepts a response larger than the 4 MiB grpc-js default', async () => {
    const falco = await wireFalco(`unix://${socketPath()}`);
    const big = 'x'.repeat(5 * 1024 * 1024);
    falco.queue.push(Buffer.concat([timestamp(5, 0), vint(2, 5), str(4, 'Big'), mapEntry(6, 'proc.cmdline', big)]), OLD);
    const s = source({ address: falco.address });
    s.source.start();
    await waitFor('2 events', () => s.events.length >= 2);
    // Read whole; the value is then cut at its documented cap (EVENT_LIMITS), never refused.
    assert.equal(s.events[0]?.fields['proc.cmdline'], `${big.slice(0, EVENT_LIMITS.fieldValue)}…`);
    assert.equal(s.events[0]?.priority, 'Notice');
    assert.deepEqual(s.events[1], OLD_EVENT);
    assert.equal(falco.subCalls, 1, 'the stream was never failed and reopened');
  });

  it('keeps reading after the server ends a sub call with an error, then with OK', async () => {
    const falco = await wireFalco(`unix://${socketPath()}`);
    falco.endings.push('error', 'ok');
    falco.queue.push(FULL);
    const s = source({ address: falco.address });
    s.source.start();
    await waitFor('first event', () => s.events.length === 1);
    await waitFor('second call', () => falco.subCalls >= 2);
    falco.queue.push(OLD);
    await waitFor('second event', () => s.events.length === 2);
    await waitFor('third call', () => falco.subCalls >= 3);
    falco.queue.push(PLUGIN);
    await waitFor('third event', () => s.events.length === 3);
    assert.deepEqual(s.events, [FULL_EVENT, OLD_EVENT, PLUGIN_EVENT]);
    const log = s.lines.join('');
    assert.match(log, /"code":"INTERNAL"[^\n]*falco grpc stream failed/);
    assert.match(log, /falco grpc stream ended by the server/);
  });

  it('lets a server that sends GOAWAY shut down, and reconnects to its successor', async () => {
    const address = `unix://${socketPath()}`;
    const falco = await wireFalco(address);
    const s = source({ address });
    s.source.start();
    await waitFor('connected', () => s.source.status === 'connected');
    // A polling client would hold the stream open forever; Falco would never exit. So a
    // deadline, not a speed measurement: any finish at all proves the client let go.
    await withinMs(falco.tryShutdown(), 20_000, 'graceful server shutdown (the client must close its stream on GOAWAY)');
    await waitFor('going-away log', () => s.lines.some((l) => l.includes('falco grpc server is going away')));
    const next = await wireFalco(address);
    next.queue.push(FULL);
    await waitFor('event from the restarted server', () => s.events.length === 1);
    assert.deepEqual(s.events[0], FULL_EVENT);
  });

  it('recovers from RST_STREAM sent by a bare HTTP/2 server', async () => {
    const path = socketPath();
    let streams = 0;
    const requests: Buffer[] = [];
    const framed = (m: Buffer): Buffer => {
      const f = Buffer.alloc(5 + m.length);
      f.writeUInt8(0, 0);
      f.writeUInt32BE(m.length, 1);
      m.copy(f, 5);
      return f;
    };
    const server = http2.createServer();
    const sessions = new Set<http2.ServerHttp2Session>();
    server.on('session', (sess) => {
      sessions.add(sess);
      sess.on('close', () => sessions.delete(sess));
    });
    server.on('stream', (stream, headers) => {
      const n = ++streams;
      assert.equal(headers[':path'], SUB);
      assert.equal(headers['content-type'], 'application/grpc');
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
      let sent = false;
      stream.on('data', (chunk: Buffer) => {
        requests.push(chunk);
        if (sent) return;
        sent = true;
        stream.write(framed(n === 1 ? FULL : OLD));
        // The first stream dies mid-call the hard way.
        if (n === 1) setTimeout(() => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR), 20);
      });
      stream.on('error', () => undefined);
    });
    await new Promise<void>((r) => server.listen(path, r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          for (const sess of sessions) sess.destroy();
          server.close(() => r());
        }),
    );
    const s = source({ address: `unix://${path}` });
    s.source.start();
    await waitFor('events from both streams', () => s.events.length === 2);
    assert.deepEqual(s.events, [FULL_EVENT, OLD_EVENT]);
    assert.equal(streams, 2);
    assert.match(s.lines.join(''), /RST_STREAM/);
    // Every request the client wrote is a gRPC frame around an empty message: 00 00000000.
    assert.ok(Buffer.concat(requests).equals(Buffer.alloc(5 * (Buffer.concat(requests).length / 5))), 'only empty requests');
  });

  it('counts a response with an unknown priority number as invalid and keeps reading', async () => {
    const falco = await wireFalco(`unix://${socketPath()}`);
    falco.queue.push(Buffer.concat([timestamp(9, 0), vint(2, 42), str(4, 'Odd')]), FULL);
    const s = source({ address: falco.address });
    s.source.start();
    await waitFor('the valid event', () => s.events.length === 1);
    assert.deepEqual(s.events, [FULL_EVENT]);
    assert.equal(await grpcEventCount(s.metrics, 'invalid'), 1);
  });
});

describe('field-level decoding of falco.outputs.response', () => {
  // The reference: a full proto-loader decode to a plain object, then fromGrpcResponse.
  const pkg = protoLoader.loadSync(`${PROTO_DIR}outputs.proto`, { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] });
  const reference = ((pkg[SERVICE_NAME] as grpc.ServiceDefinition)['sub'] as grpc.MethodDefinition<unknown, GrpcResponse>).responseDeserialize;
  const decode = loadFalcoProto().decodeResponse;

  it('gives the same event as a full proto-loader decode, for every shape the protocol allows', () => {
    const cases: [string, Buffer][] = [
      ['every field plus unknown fields', FULL],
      ['Falco ≤0.30', OLD],
      ['plugin source', PLUGIN],
      ['time sent twice: the second replaces the first', Buffer.concat([timestamp(7, 0), bytes(1, vint(2, 5)), str(4, 'r')])],
      ['a repeated map key: the last wins', Buffer.concat([timestamp(7, 1), str(4, 'r'), mapEntry(6, 'a', '1'), mapEntry(6, 'a', 'x')])],
      ['a map entry without key or value reads as ""', Buffer.concat([timestamp(7, 1), str(4, 'r'), bytes(6, str(2, 'v')), bytes(6, str(1, 'k'))])],
      ['a repeated scalar: the last wins', Buffer.concat([timestamp(7, 1), str(4, 'first'), str(4, 'r'), vint(2, 1), vint(2, 3)])],
      ['a negative seconds value with nanos', Buffer.concat([timestamp(-5n & 0xffffffffffffffffn, 3), str(4, 'r')])],
      ['an unknown source enum number', Buffer.concat([timestamp(7, 1), vint(3, 9), str(4, 'r')])],
      ['multi-byte UTF-8', Buffer.concat([timestamp(7, 1), str(4, 'règle ✓'), mapEntry(6, 'proc.cmdline', 'échо 🐳')])],
    ];
    for (const [name, b] of cases) {
      const want = fromGrpcResponse(reference(b));
      const got = decode(b);
      assert.ok(got instanceof GrpcEvent, name);
      assert.deepEqual(plainEvent(got), want, name);
    }
  });

  it('finds one field in the bytes exactly as the whole fields object has it', () => {
    const b = Buffer.concat([
      mapEntry(6, 'fd.sip', '10.0.0.1'),
      // An empty entry right before a field whose tag byte looks like a key's.
      bytes(6, Buffer.alloc(0)),
      timestamp(7, 1),
      // The value before the key, and a key given twice: read field by field.
      bytes(6, Buffer.concat([str(2, 'value first'), str(1, 'proc.name')])),
      bytes(6, Buffer.concat([str(1, 'fd.sport'), str(2, '443'), str(1, 'fd.l4proto')])),
      str(4, 'r'),
      mapEntry(6, 'container.id', '<NA>'),
      str(5, 'output between the entries'),
      mapEntry(6, 'fd.sip', '203.0.113.9'),
      bytes(6, str(2, 'no key')),
      mapEntry(6, 'proc.cmdline', 'échо 🐳'),
      mapEntry(6, 'clé', 'v'),
      mapEntry(6, 'fd.sip.name', ''),
      bytes(6, str(1, 'no value')),
    ]);
    const want = fromGrpcResponse(reference(b)).fields;
    for (const k of [...Object.keys(want), 'fd.sport', 'fd.sipx', 'fd.si', 'absent', 'clé']) {
      // A fresh event per name, so each is found in the bytes rather than in the object.
      const ev = decode(b);
      assert.ok(ev instanceof GrpcEvent);
      assert.deepEqual(ev.field(k), want[k], k);
      assert.deepEqual(fieldOf(ev, k), want[k], k);
    }
    // A key-only entry followed by a byte that would read as a value's tag (field 2 sent as
    // bytes, which the reader skips): the look-up stays inside the entry.
    const edge = decode(Buffer.concat([timestamp(7, 1), str(4, 'r'), bytes(6, str(1, 'k')), bytes(2, Buffer.from('zz'))]));
    assert.ok(edge instanceof GrpcEvent);
    assert.equal(edge.field('k'), null);
    assert.deepEqual(edge.fields, { k: null });
    // Asked often, an event reads all its fields once; the answers stay the same.
    const ev = decode(b) as GrpcEvent;
    for (let i = 0; i < 8; i++) assert.equal(ev.field('fd.sip'), '203.0.113.9');
    assert.deepEqual(ev.fields, want);
  });

  it('tells bytes that are not a response from responses that are not events', () => {
    for (const b of [Buffer.from('garbage, not protobuf'), Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), Buffer.concat([FULL, Buffer.from([0x22, 0x05, 0x61])])]) {
      assert.ok(decode(b) instanceof UndecodableResponse, b.toString('hex'));
    }
    for (const b of [Buffer.concat([timestamp(9, 0), vint(2, 42), str(4, 'Odd')]), Buffer.concat([timestamp(9, 0)]), Buffer.concat([str(4, 'no time')])]) {
      assert.ok(decode(b) instanceof InvalidResponse, b.toString('hex'));
    }
  });
});
