// GrpcSource against a real grpc-js server (FalcoEmulator) on unix sockets and TCP + mutual
// TLS: throughput and order, reconnects after outages, TLS rejection logging, invalid input,
// the JSON/gRPC twin equality and Falco ≤0.30 responses.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { FalcoEmulator, responseFromJson, type EmulatorResponse } from '../src/demo/emulator.js';
import { fromFalcoJson, parseJsonPreservingBigInts, type FalcoEvent } from '../src/model/event.js';
import { GrpcSource } from '../src/sources/grpc-source.js';
import { grpcSourceOptionsFromConfig, type GrpcSourceOptions } from '../src/sources/grpc-options.js';
import { Intake } from '../src/sources/intake.js';
import { createLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { resolveConfig } from '../src/config/config.js';
import { testPki } from './support/certs.js';
import { plainEvent } from './support/records.js';
import { waitFor, withinMs } from './support/wait.js';

const FALCO_JSON =
  '{"hostname":"falco-xczjd","output":"13:44:05.478445995: Critical A shell was spawned ...","priority":"Critical","rule":"Terminal shell in container","source":"syscall","tags":["container","mitre_execution","shell"],"time":"2023-05-25T13:44:05.478445995Z","output_fields":{"container.id":"ee97d9c4186f","container.image.repository":"docker.io/library/alpine","evt.time":1685022245478445995,"proc.cmdline":"sh -c clear; (bash || ash || sh)","proc.name":"sh","proc.pname":"runc","user.name":"root"}}';

const FAST_BACKOFF = { initialMs: 50, multiplier: 1.5, maxMs: 250, jitter: 0.1 };

function event(seq: number, tags: string[] = ['t1612_build']): EmulatorResponse {
  return {
    time: { seconds: String(1_700_000_000 + seq), nanos: seq % 1_000_000_000 },
    priority: 'NOTICE',
    rule: 'T1612 build',
    output: `build ${seq}`,
    output_fields: { seq: String(seq), 'proc.name': 'docker' },
    hostname: 'node-a',
    tags,
    source: 'syscall',
  };
}

interface Harness {
  source: GrpcSource;
  events: FalcoEvent[];
  lines: string[];
  metrics: Metrics;
  intake: Intake;
  logger: Logger;
}

const harnesses: Harness[] = [];
const emulators: FalcoEmulator[] = [];

function harness(options: GrpcSourceOptions): Harness {
  const metrics = new Metrics();
  const events: FalcoEvent[] = [];
  const lines: string[] = [];
  const logger = createLogger({ level: 'debug', destination: { write: (s: string) => void lines.push(s) } });
  const intake = new Intake({ capacity: 50_000, metrics, logger, consumer: (ev) => void events.push(ev) });
  const source = new GrpcSource(
    { backoff: FAST_BACKOFF, pollIntervalMs: 20, getIntervalMs: 20, ...options },
    { intake, metrics, logger },
  );
  const h = { source, events, lines, metrics, intake, logger };
  harnesses.push(h);
  return h;
}

async function emulator(address: string, tls?: { ca: Buffer; cert: Buffer; key: Buffer }): Promise<FalcoEmulator> {
  const em = await FalcoEmulator.start(tls ? { address, tls } : { address });
  emulators.push(em);
  return em;
}

function tlsServer(): { ca: Buffer; cert: Buffer; key: Buffer } {
  const pki = testPki();
  return { ca: pki.ca, cert: pki.server.cert, key: pki.server.key };
}

function tlsClient(): Pick<GrpcSourceOptions, 'caFile' | 'certFile' | 'keyFile'> {
  const pki = testPki();
  return { caFile: pki.caFile, certFile: pki.client.certFile, keyFile: pki.client.keyFile };
}

const connectedGauge = (h: Harness): Promise<number> => h.metrics.value('t1612d_falco_connected');
const logged = (h: Harness, text: string): boolean => h.lines.some((l) => l.includes(text));

/** Socket and server handles, to check that nothing is left open. */
function netHandles(): number {
  return process
    .getActiveResourcesInfo()
    .filter((r) => /^(TCPSocketWrap|TCPServerWrap|PipeWrap|PipeServerWrap|TLSWrap)$/.test(r)).length;
}

describe('GrpcSource (Falco gRPC outputs)', function () {
  this.timeout(60_000);
  let dir: string;
  let handlesBefore: number;

  before(() => {
    handlesBefore = netHandles();
    dir = mkdtempSync(join(tmpdir(), 't1612d-grpc-'));
    testPki();
  });

  afterEach(async () => {
    for (const h of harnesses.splice(0)) await h.source.close();
    for (const em of emulators.splice(0)) await em.close();
  });

  after(async () => {
    rmSync(dir, { recursive: true, force: true });
    // Closed channels and servers release their sockets within a few ticks.
    await waitFor('sockets to close', () => netHandles() <= handlesBefore, 5000);
  });

  const sock = (name: string): string => `unix://${join(dir, `${name}.sock`)}`;

  for (const transport of ['unix', 'tcp+mtls'] as const) {
    for (const method of ['sub', 'get'] as const) {
      it(`streams 10,000 events in order over ${method} on ${transport}, each counted once`, async () => {
        const em =
          transport === 'unix' ? await emulator(sock(`bulk-${method}`)) : await emulator('127.0.0.1:0', tlsServer());
        const h = harness({ address: em.address, method, ...(transport === 'unix' ? {} : tlsClient()) });
        for (let i = 0; i < 5000; i++) em.enqueue(event(i, i % 2 ? ['t1612_build'] : ['t1612_egress']));
        h.source.start();
        await waitFor('first half', () => h.events.length >= 5000);
        await waitFor('connected', () => h.source.connected);
        const requestsAfterFirstHalf = em.requests;
        // The second half arrives while the source is idle: only polling (sub) or the next
        // get call fetches it.
        await new Promise((r) => setTimeout(r, 100));
        for (let i = 5000; i < 10_000; i++) em.enqueue(event(i, i % 2 ? ['t1612_build'] : ['t1612_egress']));
        await waitFor('all events', () => h.events.length >= 10_000);
        await h.intake.whenIdle();
        assert.equal(h.events.length, 10_000);
        h.events.forEach((ev, i) => assert.equal(ev.fields['seq'], String(i), `event ${i} out of order`));
        assert.equal(await h.metrics.value('t1612d_falco_events_total', { source: 'grpc' }), 10_000);
        assert.equal(await h.metrics.value('t1612d_falco_events_total', { source: 'grpc', kind: 'build' }), 5000);
        assert.equal(await h.metrics.value('t1612d_falco_events_total', { source: 'grpc', kind: 'invalid' }), 0);
        assert.ok(em.requests > requestsAfterFirstHalf, 'the idle source kept asking Falco for events');
        assert.equal(em.queued, 0);
        assert.equal(await connectedGauge(h), 1);
      });
    }
  }

  for (const [method, transport] of [
    ['sub', 'unix'],
    ['get', 'tcp+mtls'],
  ] as const) {
    it(`reconnects by itself after Falco is down for a while (${method}, ${transport})`, async () => {
      const em = transport === 'unix' ? await emulator(sock(`outage-${method}`)) : await emulator('127.0.0.1:0', tlsServer());
      const h = harness({ address: em.address, method, ...(transport === 'unix' ? {} : tlsClient()) });
      h.source.start();
      em.enqueue(event(1), event(2));
      await waitFor('events before the outage', () => h.events.length === 2);
      await waitFor('connected', () => h.source.connected);
      assert.equal(await connectedGauge(h), 1);

      em.enqueue(event(99));
      await em.stop();
      assert.equal(em.queued, 0, 'a stopped Falco loses its in-memory queue');
      await waitFor('disconnect noticed', () => !h.source.connected);
      assert.equal(await connectedGauge(h), 0);
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal(h.source.connected, false);
      assert.equal(await connectedGauge(h), 0);
      assert.ok(['backoff', 'connecting'].includes(h.source.status), h.source.status);

      await em.restart();
      em.enqueue(event(3), event(4), event(5));
      await waitFor('events after the restart', () => h.events.length === 5);
      await waitFor('connected again', () => h.source.connected);
      assert.equal(await connectedGauge(h), 1);
      assert.deepEqual(
        h.events.map((e) => e.fields['seq']),
        ['1', '2', '3', '4', '5'],
      );
      assert.ok(logged(h, '"to":"connected"'), 'status changes are logged');
    });
  }

  it('stops asking and reading while the intake is full, then catches up in order', async () => {
    const em = await emulator(sock('pressure'));
    const metrics = new Metrics();
    const events: FalcoEvent[] = [];
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const logger = createLogger({ level: 'silent' });
    const intake = new Intake({
      capacity: 10,
      metrics,
      logger,
      consumer: async (ev) => {
        events.push(ev);
        await gate;
      },
    });
    const source = new GrpcSource({ address: em.address, pollIntervalMs: 20 }, { intake, metrics, logger });
    harnesses.push({ source, events, lines: [], metrics, intake, logger });
    for (let i = 0; i < 500; i++) em.enqueue(event(i));
    source.start();
    await waitFor('the intake to fill', () => intake.full);
    // A request written just before the intake filled may still be on its way: let a few poll
    // intervals pass before the snapshot the quiet window is measured from.
    await new Promise((r) => setTimeout(r, 5 * 20));
    const requests = em.requests;
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(em.requests, requests, 'no polling while the intake is full');
    assert.equal(intake.size, 10, 'reading paused at capacity');
    assert.equal(events.length, 1);
    // The metrics read the live queue and count every event received, handed on or waiting.
    const text = await metrics.registry.metrics();
    assert.match(text, /^t1612d_intake_queue_depth 10$/m);
    assert.match(text, /^t1612d_falco_events_total\{source="grpc",kind="build"\} 11$/m);
    release();
    await waitFor('all events', () => events.length === 500);
    const after = await metrics.registry.metrics();
    assert.match(after, /^t1612d_falco_events_total\{source="grpc",kind="build"\} 500$/m, 'counted once each');
    events.forEach((ev, i) => assert.equal(ev.fields['seq'], String(i)));
    await waitFor('polling again', () => em.requests > requests);
  });

  it('shares one Falco queue between clients: the events are split, none twice', async () => {
    const em = await emulator(sock('split'));
    const a = harness({ address: em.address });
    const b = harness({ address: em.address, method: 'get' });
    a.source.start();
    b.source.start();
    await waitFor('both connected', () => a.source.connected && b.source.connected);
    for (let batch = 0; batch < 10; batch++) {
      for (let i = 0; i < 100; i++) em.enqueue(event(batch * 100 + i));
      await new Promise((r) => setTimeout(r, 15));
    }
    // At least 1000, not exactly: a duplicate must show up in the sequence check below, not as
    // a timeout.
    await waitFor('every event', () => a.events.length + b.events.length >= 1000);
    // A late duplicate would arrive within a few poll intervals.
    await new Promise((r) => setTimeout(r, 100));
    const seqs = [...a.events, ...b.events].map((e) => Number(e.fields['seq'])).sort((x, y) => x - y);
    assert.deepEqual(seqs, Array.from({ length: 1000 }, (_, i) => i));
  });

  it('survives the unix socket file disappearing and reappearing', async () => {
    const address = sock('vanish');
    const path = address.slice('unix://'.length);
    const em = await emulator(address);
    const h = harness({ address });
    h.source.start();
    await waitFor('connected', () => h.source.connected);

    // Someone removes the socket file: the open connection is unaffected.
    unlinkSync(path);
    em.enqueue(event(1));
    await waitFor('event over the existing connection', () => h.events.length === 1);

    // Falco goes away; nothing is listening and there is no file to connect to.
    await em.stop();
    assert.equal(existsSync(path), false);
    await waitFor('disconnect noticed', () => !h.source.connected);
    await waitFor('reconnect attempts failing on the missing file', () => logged(h, 'falco grpc socket not found'));

    // Falco starts again and creates the file anew.
    await em.restart();
    assert.equal(existsSync(path), true);
    em.enqueue(event(2));
    await waitFor('event after the file came back', () => h.events.length === 2);
    await waitFor('connected again', () => h.source.connected);
    assert.equal(await connectedGauge(h), 1);
  });

  it('is rejected with a client certificate the server does not trust, and says so', async () => {
    const pki = testPki();
    const em = await emulator('127.0.0.1:0', tlsServer());
    em.enqueue(event(1));
    const h = harness({
      address: em.address,
      caFile: pki.caFile,
      certFile: pki.rogueClient.certFile,
      keyFile: pki.rogueClient.keyFile,
    });
    h.source.start();
    const text = 'falco grpc TLS handshake failed: the server rejected our client certificate';
    await waitFor('the TLS rejection in the log', () => logged(h, text));
    const line = JSON.parse(h.lines.find((l) => l.includes(text)) as string) as Record<string, unknown>;
    assert.equal(line['level'], 50, 'logged as an error');
    assert.equal(line['address'], em.address);
    assert.equal(h.source.connected, false);
    assert.equal(await connectedGauge(h), 0);
    assert.equal(h.events.length, 0);
    assert.equal(em.queued, 1, 'nothing was read');
    // It keeps trying (the operator may fix the certificate without restarting us).
    const attempts = h.lines.filter((l) => l.includes(text)).length;
    await waitFor('further attempts', () => h.lines.filter((l) => l.includes('TLS handshake failed')).length > attempts);
  });

  it('names an untrusted server certificate as a verification failure', async () => {
    const pki = testPki();
    const em = await emulator('127.0.0.1:0', tlsServer());
    const h = harness({ address: em.address, caFile: pki.rogueCaFile, certFile: pki.client.certFile, keyFile: pki.client.keyFile });
    h.source.start();
    await waitFor('the verify failure in the log', () => logged(h, 'falco grpc TLS handshake failed: certificate verify failed'));
    assert.equal(h.source.connected, false);

    // The certificate names localhost and 127.0.0.1, not falco.example.
    const wrongName = harness({ address: em.address, serverName: 'falco.example', ...tlsClient() });
    wrongName.source.start();
    await waitFor('the name mismatch in the log', () => logged(wrongName, 'certificate verify failed'));
    assert.equal(wrongName.source.connected, false);
  });

  it('verifies the server certificate against falco_grpc_server_name when set', async () => {
    const em = await emulator('127.0.0.1:0', tlsServer());
    em.enqueue(event(1));
    const h = harness({ address: em.address, serverName: 'localhost', ...tlsClient() });
    h.source.start();
    await waitFor('the event', () => h.events.length === 1);
    assert.equal(h.source.connected, true);
  });

  it('counts malformed responses as invalid and keeps reading the stream', async () => {
    const em = await emulator(sock('malformed'));
    const h = harness({ address: em.address });
    const base = event(1);
    em.enqueue(
      base,
      { ...event(2), rule: '' }, // empty rule
      { ...event(3), time: null }, // missing time
      { ...event(4), priority: 42 }, // not a priority
      Buffer.from('garbage, not protobuf'),
      Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), // length runs past the end
      event(5),
    );
    h.source.start();
    await waitFor('valid events', () => h.events.length === 2);
    await h.intake.whenIdle();
    assert.deepEqual(
      h.events.map((e) => e.fields['seq']),
      ['1', '5'],
    );
    assert.equal(await h.metrics.value('t1612d_falco_events_total', { source: 'grpc', kind: 'invalid' }), 5);
    assert.equal(h.source.connected, true, 'the stream survived');
    em.enqueue(event(6));
    await waitFor('a later event', () => h.events.length === 3);
    assert.ok(logged(h, 'invalid falco event'));
  });

  it('normalises a gRPC response exactly like its Falco JSON twin', async () => {
    const em = await emulator(sock('twin'));
    const h = harness({ address: em.address, method: 'get' });
    em.enqueue(responseFromJson(FALCO_JSON));
    h.source.start();
    await waitFor('the event', () => h.events.length === 1);
    const got = h.events[0] as FalcoEvent;
    assert.deepStrictEqual(plainEvent(got), fromFalcoJson(parseJsonPreservingBigInts(FALCO_JSON)));
    assert.equal(got.fields['evt.time'], '1685022245478445995');
    assert.equal(got.timeNs, 1685022245478445995n);
    assert.equal(got.priority, 'Critical');
  });

  it('reads Falco ≤0.30 responses (no tags, source only as the deprecated enum)', async () => {
    const em = await emulator(sock('old'));
    const h = harness({ address: em.address });
    const old = (seq: number, src: string): EmulatorResponse => ({
      time: { seconds: String(1_600_000_000 + seq), nanos: 5 },
      priority: 'WARNING',
      source_deprecated: src,
      rule: 'Old rule',
      output: 'old output',
      output_fields: { 'ka.user.name': 'admin', seq: String(seq) },
      hostname: 'old-host',
    });
    em.enqueue(old(1, 'K8S_AUDIT'), old(2, 'SYSCALL'), old(3, 'INTERNAL'));
    h.source.start();
    await waitFor('the events', () => h.events.length === 3);
    assert.deepEqual(
      h.events.map((e) => e.source),
      ['k8s_audit', 'syscall', 'internal'],
    );
    const first = h.events[0] as FalcoEvent;
    assert.deepEqual(first.tags, []);
    assert.equal(first.priority, 'Warning');
    assert.equal(first.timeNs, 1_600_000_001_000_000_005n);
    assert.equal(first.fields['ka.user.name'], 'admin');
  });

  it('closes idempotently, also while backing off, and before start', async () => {
    const h = harness({ address: sock('nobody-home'), backoff: { initialMs: 60_000, maxMs: 60_000 } });
    h.source.start();
    await waitFor('backoff', () => h.source.status === 'backoff');
    const a = h.source.close();
    const b = h.source.close();
    assert.equal(a, b);
    // The backoff sleep is ~60s: done well inside 30s means close aborted it. A bound, not a
    // speed measurement.
    await withinMs(a, 30_000, 'close() to abort the 60s backoff sleep');
    assert.equal(h.source.status, 'closed');
    assert.equal(await connectedGauge(h), 0);
    await h.source.close();

    const never = harness({ address: sock('never') });
    await never.source.close();
    assert.equal(never.source.status, 'closed');
    never.source.start(); // a no-op after close
    assert.equal(never.source.status, 'closed');
  });

  it('takes its settings from the daemon configuration', () => {
    const pki = testPki();
    const cfg = resolveConfig({
      env: {},
      overrides: {
        falcoGrpcAddress: '127.0.0.1:5060',
        falcoGrpcMethod: 'get',
        falcoGrpcCaFile: pki.caFile,
        falcoGrpcCertFile: pki.client.certFile,
        falcoGrpcKeyFile: pki.client.keyFile,
        falcoGrpcServerName: 'falco.local',
      },
    });
    const o = grpcSourceOptionsFromConfig(cfg);
    assert.equal(o.address, '127.0.0.1:5060');
    assert.equal(o.method, 'get');
    assert.equal(o.certFile, pki.client.certFile);
    assert.equal(o.serverName, 'falco.local');
    assert.equal(o.pollIntervalMs, 100);
    assert.equal(o.keepaliveMs, 300_000);
    assert.throws(
      () => new GrpcSource({ address: '127.0.0.1:5060' }, { intake: harness({ address: sock('x') }).intake, metrics: new Metrics(), logger: createLogger({ level: 'silent' }) }),
      /mutual TLS/,
    );
  });
});
