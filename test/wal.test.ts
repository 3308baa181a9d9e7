// The write-ahead log: appends, replay, trimming, its bound, torn lines and the directory lock;
// and end to end, a real daemon process killed with SIGKILL right after answering 200 loses
// nothing and alerts nothing twice.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../src/config/config.js';
import { Daemon } from '../src/daemon.js';
import { FalcoEmulator, responseFromJson } from '../src/demo/emulator.js';
import { ATTACKER_IP, REGISTRY_CIDR, renderScript } from '../src/demo/script.js';
import type { Alert } from '../src/model/alert.js';
import { createLogger, silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { fromFalcoJson, parseEventText, TextEvent, type FalcoEvent } from '../src/model/event.js';
import { GrpcEvent, loadFalcoProto } from '../src/sources/proto.js';
import { Intake } from '../src/sources/intake.js';
import { decodeEntry, segmentEntries, Wal, WalError } from '../src/sources/wal.js';
import { plainEvent } from './support/records.js';
import { TestRedis } from './support/redis.js';
import { WebhookReceiver } from './support/webhook-receiver.js';
import { waitFor } from './support/wait.js';

const BIN = join(import.meta.dirname, '..', 'bin', 't1612d.js');
const SCENARIO = join(import.meta.dirname, 'fixtures', 'scenarios', 'classic-builder-wget.jsonl');

function event(rule: string, extra: Record<string, unknown> = {}): FalcoEvent {
  return fromFalcoJson({
    time: '2026-03-02T10:00:00.123456789Z',
    rule,
    priority: 'Notice',
    hostname: 'node-a',
    tags: ['t1612_egress'],
    output_fields: { 'fd.sip': '203.0.113.9', 'evt.time': '1772445600123456789', ...extra },
  });
}

describe('write-ahead log', () => {
  const dirs: string[] = [];
  const open: Wal[] = [];
  const tmp = (): string => {
    const d = mkdtempSync(join(tmpdir(), 't1612d-wal-'));
    dirs.push(d);
    return d;
  };
  const openWal = (dir: string, metrics = new Metrics(), maxBytes = 64 * 1024 * 1024): Wal => {
    const w = Wal.open({ dir, maxBytes, fsyncIntervalMs: 0, metrics, logger: silentLogger() });
    open.push(w);
    return w;
  };
  afterEach(() => {
    for (const w of open.splice(0)) w.close();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('replays what was appended and not decided, with the same sequence numbers and tokens', () => {
    const dir = tmp();
    const a = openWal(dir);
    assert.deepEqual([...a.replay()], []);
    const stamps = a.appendBatch([event('one'), event('two'), event('three')], 'http');
    a.markDecided(stamps[0]?.seq ?? 0);
    // No close(): the process "dies" here; the lock it leaves names a live pid (ours), which a
    // restart in the same process may take over.
    const metrics = new Metrics();
    const b = openWal(dir, metrics);
    const back = [...b.replay()];
    assert.deepEqual(
      back.map((r) => [r.seq, r.token, r.source, r.ev.rule]),
      stamps.slice(1).map((s, i) => [s.seq, s.token, 'http', ['two', 'three'][i]]),
    );
    // Events come back exactly, the nanosecond time included.
    assert.deepEqual(back[0]?.ev, event('two'));
    // New numbers follow the old ones: a token is never given twice.
    const next = b.appendBatch([event('four')], 'grpc');
    assert.ok((next[0]?.seq ?? 0) > (stamps[2]?.seq ?? 0));
    assert.ok(!stamps.some((s) => s.token === next[0]?.token));
    return metrics.value('t1612d_wal_replayed_events_total').then((n) => assert.equal(n, 2));
  });

  /** A gRPC event as Falco 0.43.1 sends it (json_output), from the first real capture line, with some fields changed. */
  const grpcEvent = (fields: Record<string, unknown> = {}): { ev: GrpcEvent; bytes: Buffer; json: Record<string, unknown> } => {
    const proto = loadFalcoProto();
    const line = readFileSync(join(import.meta.dirname, 'fixtures', 'falco-captures', 'real-falco-0.43.1-builds.jsonl'), 'utf8').split('\n')[0] ?? '';
    const parsed = JSON.parse(line) as Record<string, unknown>;
    const json = { ...parsed, output_fields: { ...(parsed['output_fields'] as object), ...fields } };
    const bytes = proto.serializeResponse({ ...responseFromJson(json), output: line });
    const ev = proto.decodeResponse(bytes);
    assert.ok(ev instanceof GrpcEvent);
    return { ev, bytes, json: parsed };
  };
  const segmentsOf = (dir: string): string[] => readdirSync(dir).filter((f) => f.startsWith('wal-')).sort();

  it('logs an event read off gRPC as the bytes Falco sent, and replays the same event from them', () => {
    const dir = tmp();
    const { ev, bytes, json } = grpcEvent();
    const a = openWal(dir);
    assert.deepEqual([...a.replay()], []);
    const [stamp] = a.appendBatch([ev, event('plain')], 'grpc');
    const data = readFileSync(join(dir, segmentsOf(dir)[0] ?? ''));
    const nl = data.indexOf(0x0a);
    assert.deepEqual(JSON.parse(data.toString('utf8', 0, nl)), { s: stamp?.seq, k: stamp?.token, o: 'grpc', b: bytes.length });
    assert.ok(data.subarray(nl + 1, nl + 1 + bytes.length).equals(bytes), 'the bytes as Falco sent them');
    assert.equal(data[nl + 1 + bytes.length], 0x0a);
    const back = [...openWal(dir).replay()];
    assert.equal(back.length, 2);
    assert.equal(back[0]?.token, stamp?.token);
    assert.ok(back[0]?.ev instanceof GrpcEvent);
    assert.deepEqual(plainEvent(back[0].ev), plainEvent(ev));
    // The text output comes out of the JSON line in the bytes, as at the first decode.
    assert.equal(back[0].ev.output, (json as { output: string }).output);
    assert.deepEqual(back[1]?.ev, event('plain'));
  });

  it('logs an event from a JSON body as the text it was parsed from, and replays the same event from it', () => {
    const dir = tmp();
    const line = readFileSync(join(import.meta.dirname, 'fixtures', 'falco-captures', 'real-falco-0.43.1-builds.jsonl'), 'utf8').split('\n')[0] ?? '';
    // Pretty-printed: a text with newlines inside is still one record.
    const text = Buffer.from(JSON.stringify(JSON.parse(line), null, 2));
    const ev = fromFalcoJson(parseEventText(text.toString('utf8')), true);
    const a = openWal(dir);
    assert.deepEqual([...a.replay()], []);
    const [stamp] = a.appendBatch([ev, event('no text')], 'http', [text, undefined]);
    const data = readFileSync(join(dir, segmentsOf(dir)[0] ?? ''));
    const nl = data.indexOf(0x0a);
    assert.deepEqual(JSON.parse(data.toString('utf8', 0, nl)), { s: stamp?.seq, k: stamp?.token, o: 'http', j: text.length });
    assert.ok(data.subarray(nl + 1, nl + 1 + text.length).equals(text), 'the text as it came');
    const back = [...openWal(dir).replay()];
    assert.deepEqual(back.map((r) => r.ev), [ev, event('no text')]);
    assert.equal(back[0]?.ev.timeNs, ev.timeNs);
  });

  it('logs an event that kept its text (TextEvent) as that text, appended alone too, and replays it whole', () => {
    const dir = tmp();
    const line = readFileSync(join(import.meta.dirname, 'fixtures', 'falco-captures', 'real-falco-0.43.1-builds.jsonl'), 'utf8').split('\n')[0] ?? '';
    const text = Buffer.from(line);
    const parsed = fromFalcoJson(parseEventText(line), true);
    const a = openWal(dir);
    assert.deepEqual([...a.replay()], []);
    a.append(TextEvent.of(fromFalcoJson(parseEventText(line), true), text), 'http');
    a.flushSync();
    const data = readFileSync(join(dir, segmentsOf(dir)[0] ?? ''));
    const nl = data.indexOf(0x0a);
    assert.equal((JSON.parse(data.toString('utf8', 0, nl)) as { j?: number }).j, text.length);
    const back = [...openWal(dir).replay()];
    assert.equal(back.length, 1);
    assert.deepEqual(back[0]?.ev, parsed);
  });

  it('takes nothing inside Falco\'s bytes for a record: a field value shaped like alert marks does not hide its events', () => {
    const dir = tmp();
    const a = openWal(dir);
    assert.deepEqual([...a.replay()], []);
    // The next two sequence numbers are 1 and 2; marks for them inside a command line must not count.
    const cmdline = 'sh -c "x\n{"a":1}\n{"a":2}\n"';
    const sneaky = grpcEvent({ 'proc.cmdline': cmdline });
    a.appendBatch([sneaky.ev, event('after')], 'grpc');
    const back = [...openWal(dir).replay()];
    assert.deepEqual(back.map((r) => r.seq), [1, 2]);
    assert.equal(back[0]?.ev.fields['proc.cmdline'], cmdline);
  });

  it('skips a logged gRPC record whose bytes no longer decode, and ends a segment at a record cut short', () => {
    const dir = tmp();
    const a = openWal(dir);
    assert.deepEqual([...a.replay()], []);
    a.appendBatch([event('kept')], 'grpc');
    const seg = join(dir, segmentsOf(dir)[0] ?? '');
    const garbage = Buffer.from('garbage, not protobuf');
    appendFileSync(seg, Buffer.concat([Buffer.from(`{"s":99,"k":"x:99","o":"grpc","b":${garbage.length}}\n`), garbage, Buffer.from('\n')]));
    appendFileSync(seg, `${JSON.stringify({ s: 100, k: 'x:100', o: 'http', e: { ...event('after garbage'), timeNs: '1' } })}\n`);
    // A record whose bytes end early (the crash came mid-write), then a line that must not be read.
    const { bytes } = grpcEvent();
    appendFileSync(seg, Buffer.concat([Buffer.from(`{"s":101,"k":"x:101","o":"grpc","b":${bytes.length}}\n`), bytes.subarray(0, 100)]));
    // What a later write put after it is not read: its bytes could be anything.
    appendFileSync(seg, Buffer.concat([Buffer.from(`{"s":102,"k":"x:102","o":"grpc","b":${bytes.length}}\n`), bytes, Buffer.from('\n')]));
    const metrics = new Metrics();
    const logs: string[] = [];
    const w = Wal.open({ dir, maxBytes: 64 * 1024 * 1024, fsyncIntervalMs: 0, metrics, logger: createLogger({ level: 'warn', destination: { write: (l: string) => void logs.push(l) } }) });
    open.push(w);
    assert.deepEqual([...w.replay()].map((r) => r.ev.rule), ['kept', 'after garbage']);
    assert.ok(logs.some((l) => l.includes('"lines":2')), logs.join('\n'));
  });

  it('deletes segments once their events are decided, and keeps the decided mark', () => {
    const dir = tmp();
    const metrics = new Metrics();
    const w = openWal(dir, metrics);
    Array.from(w.replay());
    const stamps = w.appendBatch([event('a'), event('b')], 'http');
    assert.ok(w.bytes > 0);
    w.markDecided(stamps[1]?.seq ?? 0);
    assert.equal(w.bytes, 0);
    const logs = readdirSync(dir).filter((f) => f.endsWith('.log'));
    assert.ok(logs.length <= 1, `decided segments deleted: ${logs.join(',')}`);
    w.close();
    const again = openWal(dir);
    assert.deepEqual([...again.replay()], []);
    assert.equal(again.decided, stamps[1]?.seq);
  });

  it('writes the decided mark at once, then at most once a second while marks keep coming, and the last one at close', async () => {
    const dir = tmp();
    const w = openWal(dir);
    Array.from(w.replay());
    const [a, b, c] = w.appendBatch([event('a'), event('b'), event('c')], 'http').map((s) => s.seq);
    const onDisk = (): number => Number(readFileSync(join(dir, 'decided'), 'utf8'));
    w.markDecided(a ?? 0);
    assert.equal(onDisk(), a);
    w.markDecided(b ?? 0);
    assert.equal(w.decided, b);
    assert.equal(onDisk(), a, 'the second mark within a second waits');
    await waitFor('the deferred mark', () => onDisk() === b);
    w.markDecided(c ?? 0);
    assert.equal(onDisk(), b);
    w.close();
    assert.equal(onDisk(), c, 'close writes the last mark');
  });

  it('writes gRPC-style single appends by the end of the turn', async () => {
    const dir = tmp();
    const w = openWal(dir);
    Array.from(w.replay());
    w.append(event('g1'), 'grpc');
    w.append(event('g2'), 'grpc');
    await new Promise((r) => setImmediate(r));
    const text = readdirSync(dir)
      .filter((f) => f.endsWith('.log'))
      .map((f) => readFileSync(join(dir, f), 'utf8'))
      .join('');
    assert.equal(text.trim().split('\n').length, 2);
  });

  it('takes from the intake only the events its needsLog keeps, pushed one by one (gRPC) or in a batch (HTTP), each with its own text', async () => {
    const dir = tmp();
    const w = openWal(dir);
    Array.from(w.replay());
    const handed: (string | undefined)[] = [];
    const intake = new Intake({
      capacity: 100,
      metrics: new Metrics(),
      logger: silentLogger(),
      wal: w,
      needsLog: (ev) => !ev.rule.startsWith('settled'),
      consumer: (_ev, _source, token) => void handed.push(token),
    });
    intake.push(event('settled-g'), 'grpc');
    intake.push(event('kept-g'), 'grpc');
    const batch = [event('settled-h1'), event('kept-h'), event('settled-h2')];
    assert.ok(intake.offerBatch(batch, 'http', batch.map((ev) => Buffer.from(JSON.stringify({ text: ev.rule })))));
    await intake.whenIdle();
    const records = readdirSync(dir)
      .filter((f) => f.endsWith('.log'))
      .flatMap((f) => [...segmentEntries(readFileSync(join(dir, f)))]);
    const logged = records.map((r) => {
      assert.equal(r.kind, 'event');
      const e = r as { header: string; bytes?: Buffer };
      return decodeEntry(e)?.ev.rule ?? e.bytes?.toString();
    });
    // The batch's event is logged as the text given with it.
    assert.deepEqual(logged, ['kept-g', '{"text":"kept-h"}']);
    // Only the logged events carry a token to the consumer; all five are handed on, in order.
    assert.equal(handed.length, 5);
    assert.deepEqual(handed.map((t) => t !== undefined), [false, true, false, true, false]);
    assert.equal(intake.handedSeq, 2);
    // Without needsLog, every event is logged.
    const all = new Intake({ capacity: 100, metrics: new Metrics(), logger: silentLogger(), wal: w, consumer: () => undefined });
    all.push(event('settled-g2'), 'grpc');
    assert.ok(all.offerBatch([event('settled-h3')], 'http'));
    await all.whenIdle();
    assert.equal(all.handedSeq, 4);
  });

  it('is bounded: past max bytes the oldest undecided segments go, counted as dropped', async () => {
    const dir = tmp();
    const metrics = new Metrics();
    const w = openWal(dir, metrics, 256 * 1024);
    Array.from(w.replay());
    const big = 'x'.repeat(3000);
    for (let i = 0; i < 400; i++) w.appendBatch([event(`e${i}`, { 'proc.cmdline': big })], 'http');
    assert.ok(w.bytes <= 256 * 1024 + 70 * 1024, `bounded: ${w.bytes}`);
    const dropped = await metrics.value('t1612d_dropped_events_total', { reason: 'wal_full' });
    assert.ok(dropped > 0);
    assert.equal(await metrics.value('t1612d_wal_bytes'), w.bytes);
  });

  it('skips a line torn by a crash and replays the rest', () => {
    const dir = tmp();
    const w = openWal(dir);
    Array.from(w.replay());
    w.appendBatch([event('whole')], 'http');
    const seg = readdirSync(dir).find((f) => f.endsWith('.log')) as string;
    appendFileSync(join(dir, seg), '{"s":2,"k":"x:2","o":"http","e":{"ti');
    const again = openWal(dir);
    assert.deepEqual(
      [...again.replay()].map((r) => r.ev.rule),
      ['whole'],
    );
  });

  it('refuses a directory another live process holds, naming data_dir', () => {
    const dir = tmp();
    // pid 1 is alive on every Linux box and is not us.
    writeFileSync(join(dir, 'lock'), '1');
    assert.throws(() => openWal(dir), (e: unknown) => e instanceof WalError && /data_dir .* in use by process 1/.test(e.message));
  });

  it('takes over a lock whose pid now names a thread or a younger process (a restarted container reuses pids)', () => {
    // A thread id of this very process: kill(tid, 0) succeeds, yet no other daemon holds the log.
    const tid = readdirSync('/proc/self/task').map(Number).find((t) => t !== process.pid);
    assert.ok(tid !== undefined, 'node runs threads besides its main one');
    for (const stale of [String(tid), '1 0']) {
      const dir = tmp();
      // '1 0': pid 1 runs, but did not start at tick 0 (so it is not the process that wrote it).
      writeFileSync(join(dir, 'lock'), stale);
      const w = openWal(dir);
      Array.from(w.replay());
      w.close();
    }
  });

  it('still refuses a lock whose pid and start time name a running process', () => {
    const dir = tmp();
    const stat = readFileSync('/proc/1/stat', 'utf8');
    writeFileSync(join(dir, 'lock'), `1 ${stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]}`);
    assert.throws(() => openWal(dir), (e: unknown) => e instanceof WalError && /in use by process 1/.test(e.message));
  });
});

// ---------------------------------------------------------------------------------------------

/** The scenario's build events and ten egress events to ten never-seen IPs, as Falco posts them. */
function attackBodies(): { setup: string; egress: string[] } {
  const lines = readFileSync(SCENARIO, 'utf8').trim().split('\n');
  const [build, step, egress] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  const out: string[] = [];
  for (let i = 1; i <= 10; i++) {
    const e = structuredClone(egress) as { time: string; output_fields: Record<string, unknown> };
    const ip = `203.0.113.${100 + i}`;
    e.time = `2026-03-02T10:00:02.${String(200 + i).padStart(3, '0')}000000Z`;
    e.output_fields['fd.sip'] = ip;
    e.output_fields['fd.name'] = `10.0.0.5:${41000 + i}->${ip}:80`;
    e.output_fields['evt.time'] = Number(1772445602200000000n + BigInt(i) * 1_000_000n);
    out.push(JSON.stringify(e));
  }
  return { setup: JSON.stringify([build, step]), egress: out };
}

interface Proc {
  child: ChildProcess;
  out: () => string;
}

function startDaemon(configFile: string): Proc {
  const child = spawn(process.execPath, [BIN, 'run', '--config', configFile], {
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '/tmp' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  return { child, out: () => out };
}

async function portOf(p: Proc): Promise<number> {
  let port = 0;
  await waitFor(
    () => `the daemon to listen; output: ${p.out().slice(-2000)}`,
    () => {
      if (p.child.exitCode !== null) throw new Error(`daemon exited: ${p.out().slice(-2000)}`);
      const line = p.out().split('\n').find((l) => l.includes('"msg":"http server listening"'));
      if (line) port = (JSON.parse(line) as { port: number }).port;
      return port > 0;
    },
    30_000,
  );
  return port;
}

describe('write-ahead log: SIGKILL of a real daemon right after the 200s', function () {
  this.timeout(90_000);
  let redis: TestRedis;
  let receiver: WebhookReceiver;
  let dir: string;
  const procs: ChildProcess[] = [];

  before(async () => {
    redis = await TestRedis.start();
    receiver = await WebhookReceiver.start();
    dir = mkdtempSync(join(tmpdir(), 't1612d-walkill-'));
  });
  after(async () => {
    for (const c of procs) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await receiver.close();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('alerts 10 of 10 after a restart, no alert raised twice', async () => {
    const token = 'kill-test-token';
    const configFile = join(dir, 't1612d.yaml');
    writeFileSync(
      configFile,
      [
        `falco_grpc_address: ""`,
        `http_address: "127.0.0.1:0"`,
        `http_token: "${token}"`,
        `data_dir: "${join(dir, 'data')}"`,
        `redis_url: "${redis.url}"`,
        `redis_prefix: "${TestRedis.prefix()}"`,
        `webhook_url: "${receiver.url}"`,
        `delivery_backoff_initial: 50ms`,
        `log_level: info`,
        '',
      ].join('\n'),
    );
    const first = startDaemon(configFile);
    procs.push(first.child);
    const port = await portOf(first);
    const post = async (body: string): Promise<number> => {
      const res = await fetch(`http://127.0.0.1:${port}/falco`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body,
      });
      await res.text();
      return res.status;
    };
    const { setup, egress } = attackBodies();
    assert.equal(await post(setup), 200);
    const statuses = await Promise.all(egress.map((b) => post(b)));
    // Killed the moment the last 200 is in: no graceful anything.
    first.child.kill('SIGKILL');
    assert.deepEqual(statuses, Array(10).fill(200));
    await new Promise((r) => first.child.once('exit', r));

    const second = startDaemon(configFile);
    procs.push(second.child);
    const port2 = await portOf(second);
    await waitFor(() => `10 alerts; got ${receiver.requests.length}`, () => receiver.requests.length >= 10, 30_000);
    // Settled: nothing left to decide or deliver, so a duplicate would have arrived by now.
    await waitFor('the outbox to drain', async () => {
      const text = await (await fetch(`http://127.0.0.1:${port2}/metrics`)).text();
      return /^t1612d_outbox_pending 0$/m.test(text) && /^t1612d_intake_queue_depth 0$/m.test(text);
    });
    // One alert per IP, each under one id. The outbox is at-least-once: a delivery the kill cut
    // before its acknowledgement is sent again after the restart under the same
    // X-T1612D-Delivery id, which receivers dedupe on (README "Alert delivery").
    const idsByIp = new Map<string, Set<string>>();
    for (const r of receiver.requests) {
      const alert = JSON.parse(r.text) as { id: string; destination: { ip: string } };
      assert.equal(r.headers['x-t1612d-delivery'], alert.id);
      const ids = idsByIp.get(alert.destination.ip) ?? new Set<string>();
      ids.add(alert.id);
      idsByIp.set(alert.destination.ip, ids);
    }
    assert.deepEqual(
      [...idsByIp.keys()].sort(),
      Array.from({ length: 10 }, (_, i) => `203.0.113.${101 + i}`),
    );
    for (const [ip, ids] of idsByIp) assert.equal(ids.size, 1, `${ip} alerted under ${ids.size} ids`);
    assert.match(second.out(), /replaying acknowledged events not decided before the last stop/);
    second.child.kill('SIGTERM');
    await new Promise((r) => second.child.once('exit', r));
  });
});

describe('write-ahead log: events read from Falco over gRPC', function () {
  this.timeout(60_000);

  it('survive a stop while Redis is down and are decided by the next daemon', async function () {
    const redis = await TestRedis.start();
    if (!redis.controllable) {
      await redis.close();
      this.skip(); // stopping the server needs our own redis-server, not REDIS_URL
    }
    const receiver = await WebhookReceiver.start();
    const dir = mkdtempSync(join(tmpdir(), 't1612d-walgrpc-'));
    const falco = await FalcoEmulator.start({ address: `unix://${join(dir, 'falco.sock')}` });
    const cfg = resolveConfig({
      env: {},
      overrides: {
        falcoGrpcAddress: falco.address,
        falcoGrpcPollIntervalMs: 20,
        httpAddress: '127.0.0.1:0',
        dataDir: join(dir, 'data'),
        redisUrl: redis.url,
        redisPrefix: TestRedis.prefix(),
        webhookUrl: receiver.url,
        allowCidrs: [REGISTRY_CIDR],
        deliveryBackoffInitialMs: 50,
        shutdownTimeoutMs: 1_000,
        logLevel: 'silent',
      },
    });
    const daemons: Daemon[] = [];
    try {
      const a = new Daemon(cfg, { logger: silentLogger(), metrics: new Metrics() });
      daemons.push(a);
      await a.start();
      await waitFor('connected to Falco', async () => (await a.metrics.value('t1612d_falco_connected')) === 1);
      await redis.stop();
      const start = BigInt(Date.now() - 5_000) * 1_000_000n;
      const lines = (await renderScript(start)).map((ev) => JSON.stringify(ev));
      for (const line of lines) falco.enqueue(responseFromJson(line));
      await waitFor('every gRPC event read', async () => (await a.metrics.value('t1612d_falco_events_total', { source: 'grpc' })) >= lines.length);
      assert.ok((await a.metrics.value('t1612d_wal_bytes')) > 0, 'the events are in the log');
      await a.close(); // the egress decisions wait for Redis: not decided, not trimmed
      await falco.close();
      assert.equal(receiver.requests.length, 0);

      await redis.restart();
      const b = new Daemon({ ...cfg, falcoGrpcAddress: '' }, { logger: silentLogger(), metrics: new Metrics() });
      daemons.push(b);
      await b.start();
      assert.ok((await b.metrics.value('t1612d_wal_replayed_events_total')) > 0);
      await waitFor('the attack alert', () => receiver.requests.length >= 1, 20_000);
      await b.settle();
      const ips = receiver.requests.map((r) => (JSON.parse(r.text) as Alert).destination.ip);
      assert.deepEqual([...new Set(ips)], [ATTACKER_IP]);
    } finally {
      for (const d of daemons) await d.close();
      await falco.close();
      await receiver.close();
      await redis.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('write-ahead log: what is logged', function () {
  this.timeout(60_000);

  it('leaves out events settled on arrival (an egress to a cached known IP, an event with no T1612 tag), and logs new IPs and build signals', async () => {
    const redis = await TestRedis.start();
    const receiver = await WebhookReceiver.start();
    const dir = mkdtempSync(join(tmpdir(), 't1612d-walwhat-'));
    const cfg = resolveConfig({
      env: {},
      overrides: {
        falcoGrpcAddress: '',
        httpAddress: '127.0.0.1:0',
        dataDir: join(dir, 'data'),
        redisUrl: redis.url,
        redisPrefix: TestRedis.prefix(),
        webhookUrl: receiver.url,
        logLevel: 'silent',
      },
    });
    const d = new Daemon(cfg, { logger: silentLogger(), metrics: new Metrics() });
    try {
      await d.start();
      const post = async (body: string): Promise<void> => {
        const res = await fetch(`http://127.0.0.1:${d.port}/falco`, { method: 'POST', body });
        assert.equal(res.status, 200, await res.text());
        await d.settle();
      };
      const { setup, egress } = attackBodies();
      const [first, second] = egress as [string, string];
      const logged = (): number => d.intake.handedSeq;
      const counted = (): Promise<number> => d.metrics.value('t1612d_falco_events_total', { source: 'http', kind: 'egress' });

      await post(setup);
      assert.equal(logged(), 2, 'the two build signals are logged');
      await post(first);
      assert.equal(logged(), 3, 'an egress to a new IP is logged');
      await waitFor('the first alert', () => receiver.requests.length === 1);

      const before = await counted();
      await post([first, first, first].join('\n'));
      const other = JSON.parse(first) as Record<string, unknown>;
      other['tags'] = ['network'];
      await post(JSON.stringify(other));
      assert.equal(await counted(), before + 3, 'the repeats are taken and counted');
      assert.equal(logged(), 3, 'an egress to a known IP, and an event with no T1612 tag, are not logged');

      await post(second);
      assert.equal(logged(), 4, 'the next new IP is logged again');
      await waitFor('the second alert', () => receiver.requests.length === 2);
      const ips = receiver.requests.map((r) => (JSON.parse(r.text) as Alert).destination.ip);
      assert.deepEqual(ips, ['203.0.113.101', '203.0.113.102']);
    } finally {
      await d.close();
      await receiver.close();
      await redis.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
