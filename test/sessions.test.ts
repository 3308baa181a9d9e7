// The session table: open, extend, key matching, remote linking, windows with skew, caps,
// and merging sessions loaded from a store.
import assert from 'node:assert/strict';
import { classifyBuild, type BuildSignal } from '../src/detect/classify.js';
import { SessionTable } from '../src/detect/sessions.js';
import { attribute, imageMatches, severityOf } from '../src/detect/attribution.js';
import { classifyEgress } from '../src/detect/classify.js';
import { normaliseImageRef } from '../src/detect/builders.js';
import { formatTimeNs, type FalcoEvent } from '../src/model/event.js';
import { Correlator } from '../src/detect/correlator.js';
import { memoryStores } from '../src/store/stores.js';
import { Metrics } from '../src/ops/metrics.js';
import { silentLogger } from '../src/ops/logger.js';
import { CollectingSink, loadEvents, testConfig, withDestination } from './support/scenarios.js';
import { isKnown } from './support/known.js';

const WINDOW = 15 * 60_000;
const SKEW = 30_000;
const T = 1_772_446_500_000;

function ev(tMs: number, fields: Record<string, string | null>, host = 'node-a', tags = ['t1612_build']): FalcoEvent {
  return { timeNs: BigInt(tMs) * 1_000_000n, rule: 'r', priority: 'Notice', source: 'syscall', hostname: host, tags, output: 'o', fields };
}

function build(tMs: number, fields: Record<string, string | null>, host = 'node-a'): BuildSignal {
  return classifyBuild(ev(tMs, fields, host), host);
}

describe('session table', () => {
  const table = (): SessionTable => new SessionTable({ buildWindowMs: WINDOW, clockSkewMs: SKEW, maxSessions: 3 });

  it('opens on a build CLI, extends on steps, covers the window after the last activity', () => {
    const t = table();
    const s = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.cmdline': 'docker build -t a:1 .', 'proc.pid': '100' }));
    assert.ok(s);
    const step = t.applyBuild(
      build(T + 60_000, { 'proc.name': 'runc', 'proc.pname': 'dockerd', 'proc.pid': '200', 'thread.cgroups': 'cpu=/docker/buildkit/abcdef' }),
    );
    assert.equal(step?.id, s.id, 'a step joins the build in progress');
    assert.deepEqual(s.cgroups, ['buildkit:abcdef']);
    assert.deepEqual(s.images, ['a:1']);
    assert.equal(t.openAt('node-a', T - SKEW).length, 1, 'skew tolerance before the start');
    assert.equal(t.openAt('node-a', T - SKEW - 1).length, 0);
    assert.equal(t.openAt('node-a', T + 60_000 + WINDOW).length, 1);
    assert.equal(t.openAt('node-a', T + 60_000 + WINDOW + 1).length, 0);
    assert.equal(t.openAt('node-b', T).length, 0, 'sessions are per host');
  });

  it('keeps concurrent CLI builds apart, joins by pid lineage', () => {
    const t = table();
    const a = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100' }));
    const b = t.applyBuild(build(T + 1, { 'proc.name': 'podman', 'proc.pid': '300' }));
    const child = t.applyBuild(build(T + 2, { 'proc.name': 'docker-buildx', 'proc.pid': '101', 'proc.ppid': '100' }));
    assert.notEqual(a?.id, b?.id);
    assert.equal(child?.id, a?.id);
  });

  it('a layer commit alone opens nothing; a remote accept makes the following build remote', () => {
    const t = table();
    assert.equal(t.applyBuild(build(T, { 'proc.name': 'exe', 'proc.pname': 'dockerd', 'proc.pid': '5' })), null);
    assert.equal(t.applyBuild(build(T, { 'fd.cip': '198.51.100.7', 'fd.cport': '4000', 'proc.name': 'dockerd' })), null);
    const s = t.applyBuild(build(T + 10_000, { 'proc.name': 'runc', 'proc.pname': 'dockerd', 'proc.pid': '7' }));
    assert.equal(s?.remotePeer, '198.51.100.7:4000');
    assert.equal(s?.trigger.remote_peer, '198.51.100.7:4000');
    assert.equal(severityOf(s!, 'lineage'), 'critical');
    assert.equal(severityOf(s!, 'window'), 'high');
  });

  it('caps sessions (oldest go first) and evidence', () => {
    const t = table();
    for (let i = 0; i < 5; i++) t.applyBuild(build(T + i, { 'proc.name': 'docker', 'proc.pid': String(100 + i) }));
    assert.equal(t.size, 3);
    const s = t.applyBuild(build(T + 10, { 'proc.name': 'docker', 'proc.pid': '104' }));
    assert.ok(s);
    for (let i = 0; i < 10; i++) {
      const step = t.applyBuild(build(T + 20 + i, { 'proc.name': 'runc', 'proc.pname': 'docker', 'proc.ppid': '104', 'proc.pid': String(900 + i) }));
      assert.equal(step?.id, s.id, `step ${i} joins the build`);
    }
    // 12 signals joined (the trigger at T+4, the CLI again at T+10, 10 steps): the trigger
    // stays first, the rest is the most recent activity, 4 entries in all.
    assert.deepEqual(
      s.evidence.map((e) => e.time),
      [T + 4, T + 27, T + 28, T + 29].map((ms) => formatTimeNs(BigInt(ms) * 1_000_000n)),
    );
  });

  it('merges stored sessions by id or shared key, keeping the older id', () => {
    const a = table();
    const old = a.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100', 'proc.cmdline': 'docker build -t x:1 .' }));
    a.applyBuild(
      build(T + 1, { 'proc.name': 'runc', 'proc.pname': 'dockerd', 'proc.pid': '200', 'thread.cgroups': 'cpu=/docker/buildkit/abcdef' }),
    );
    const stored = a.takeDirty();
    assert.equal(stored.length, 1);
    // A restarted daemon sees the next step of that build before it has loaded the store.
    const b = table();
    const mine = b.applyBuild(
      build(T + 5_000, { 'proc.name': 'sh', 'proc.pname': 'runc', 'proc.pid': '201', 'thread.cgroups': 'cpu=/docker/buildkit/abcdef' }),
    );
    assert.notEqual(mine?.id, old?.id);
    b.merge('node-a', { sessions: stored[0]!.upsert.map((s) => structuredClone(s)), remote: null });
    assert.equal(mine?.id, old?.id);
    assert.equal(b.size, 1);
    assert.deepEqual(mine?.images, ['x:1']);
  });
});

describe('attribution', () => {
  const on = { windowOnly: false, builderEgress: true, clockSkewMs: SKEW };
  const egressAt = (fields: Record<string, string | null>) =>
    classifyEgress(ev(T + 1000, { 'fd.sip': '203.0.113.5', ...fields }, 'node-a', ['t1612_egress']), 'node-a')!;

  it('prefers lineage, then image, then window (only when enabled)', () => {
    const t = new SessionTable({ buildWindowMs: WINDOW, clockSkewMs: SKEW, maxSessions: 10 });
    t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100', 'proc.cmdline': 'docker build -t team/app:2 .' }));
    const open = t.openAt('node-a', T + 1000);
    assert.equal(attribute(egressAt({ 'proc.ppid': '100' }), open, on)?.kind, 'lineage');
    assert.equal(attribute(egressAt({ 'proc.name': 'curl', 'proc.pname': 'runc', 'proc.aname[2]': 'buildkitd' }), open, on)?.kind, 'lineage');
    // buildah runs its runtime through a re-executed helper: runc and buildah need not be adjacent.
    // A buildah step is no part of a docker build: it is left for its own session (applyStepEgress).
    const buildah = { 'proc.name': 'curl', 'proc.pname': 'sh', 'proc.aname[2]': 'runc', 'proc.aname[3]': 'exe', 'proc.aname[4]': 'buildah' };
    assert.equal(egressAt(buildah).step, 'runtime');
    assert.equal(attribute(egressAt(buildah), open, on), null);
    const img = { 'container.id': 'abcdefabcdef', 'container.image.repository': 'docker.io/team/app', 'container.image.tag': '2' };
    assert.equal(attribute(egressAt(img), open, on)?.kind, 'image');
    assert.equal(attribute(egressAt({ 'proc.name': 'curl' }), open, on), null);
    assert.equal(attribute(egressAt({ 'proc.name': 'curl' }), open, { ...on, windowOnly: true })?.kind, 'window');
    // A normal container: containerd-shim, no runtime above it, a tagged image nobody built here.
    const normal = { 'proc.name': 'curl', 'proc.pname': 'containerd-shim', 'container.id': 'bcdefabcdefa', 'container.image.repository': 'nginx' };
    assert.equal(attribute(egressAt(normal), open, on), null);
  });

  it("treats a builder's own connections as pulls: medium, high when remote, off by setting, never containerd", () => {
    const t = new SessionTable({ buildWindowMs: WINDOW, clockSkewMs: SKEW, maxSessions: 10 });
    const s = t.applyBuild(build(T, { 'proc.name': 'buildah', 'proc.pid': '100', 'proc.cmdline': 'buildah bud -t app:1 .' }))!;
    const open = t.openAt('node-a', T + 1000);
    const dockerd = attribute(egressAt({ 'proc.name': 'dockerd', 'proc.pid': '812' }), open, on);
    assert.deepEqual([dockerd?.kind, dockerd?.builder], ['window', true]);
    assert.equal(severityOf(s, dockerd!.kind, dockerd!.builder), 'medium');
    // buildah pulling its own base image is tied to its session by pid, and still only a pull.
    const buildah = attribute(egressAt({ 'proc.name': 'buildah', 'proc.pid': '100' }), open, on);
    assert.deepEqual([buildah?.kind, buildah?.builder], ['lineage', true]);
    assert.equal(severityOf(s, buildah!.kind, buildah!.builder), 'medium');
    assert.equal(severityOf({ ...s, remotePeer: '198.51.100.7:4000' }, 'lineage', true), 'high');
    const kaniko = { 'proc.name': 'executor', 'proc.exepath': '/kaniko/executor', 'container.id': 'abcdefabcdef' };
    assert.equal(attribute(egressAt(kaniko), open, on)?.builder, true);
    assert.equal(attribute(egressAt({ 'proc.name': 'containerd' }), open, on), null);
    assert.equal(attribute(egressAt({ 'proc.name': 'dockerd' }), open, { ...on, builderEgress: false }), null);
    // dockerd inside a build step (Docker-in-Docker in a RUN) is the step's own process.
    const dind = egressAt({ 'proc.name': 'dockerd', 'thread.cgroups': 'cpu=/docker/buildkit/abcdef' });
    assert.deepEqual([dind.builderOwn, dind.step, dind.engine], [false, 'cgroup', 'docker']);
  });

  it('matches images across docker.io, localhost (podman) and registry host:port spellings', () => {
    const match = (built: string, running: string): boolean => imageMatches([normaliseImageRef(built)!], running);
    assert.ok(match('app:1', 'docker.io/library/app:1'));
    assert.ok(match('docker.io/library/app', 'docker.io/library/app:latest'));
    assert.ok(match('app:1', 'localhost/app:1'));
    assert.ok(match('localhost:5000/app:1', 'localhost:5000/app:1'));
    assert.ok(!match('localhost:5000/app:1', 'docker.io/library/app:1'));
    assert.ok(!match('app:1', 'docker.io/library/app:2'));
    assert.ok(!match('team/app:1', 'localhost/app:1'));
  });
});

describe('correlator robustness', () => {
  it('never throws on malformed or partial events handed in directly', async () => {
    const cfg = testConfig();
    const sink = new CollectingSink();
    const stores = memoryStores(cfg);
    const metrics = new Metrics();
    const c = new Correlator(cfg, { stores, sink, metrics, logger: silentLogger() });
    const weird: unknown[] = [
      { timeNs: 0n, rule: 'x', priority: 'Notice', source: 'syscall', hostname: '', tags: ['t1612_build'], output: '', fields: {} },
      { timeNs: 0n, rule: 'x', priority: 'Notice', source: 'syscall', hostname: '', tags: ['t1612_egress'], output: '', fields: { 'fd.sip': '<NA>' } },
      { timeNs: -5n, rule: 'x', priority: 'Notice', source: 'syscall', hostname: 'h', tags: ['t1612_egress'], output: '', fields: { 'fd.sip': '203.0.113.1', 'proc.pid': 'NaN', 'proc.apid[2]': '-1' } },
      { timeNs: 0n, rule: 'x', tags: 'not-a-list', fields: null },
      { timeNs: 0n, rule: 'x', tags: ['t1612_build'], fields: null },
      { timeNs: 0n, rule: 'x', tags: ['t1612_egress'] },
    ];
    for (const w of weird) {
      // Deliberately wrong shapes: the correlator must survive what a buggy source might send.
      // Awaited, so a rejected promise fails the test as surely as a synchronous throw.
      await Promise.resolve(c.handle(w as FalcoEvent));
    }
    await c.flush();
    assert.equal(c.backlog, 0, 'nothing left waiting for a decision');
    assert.equal(await metrics.value('t1612d_dropped_events_total'), 0, 'nothing dropped');
    // The one well-formed egress among them was still decided: its IP is now known.
    assert.equal(await isKnown(stores, cfg.environment, '203.0.113.1', Date.now(), cfg.firstSeenRetentionMs), true);
    await c.close();
    await c.close(); // idempotent
    assert.equal(sink.alerts.length, 0);
  });

  it('IPv4-mapped and plain spellings of one address are one IP, in the store and the cache', async () => {
    const cfg = testConfig();
    const stores = memoryStores(cfg);
    const c = new Correlator(cfg, { stores, sink: new CollectingSink(), metrics: new Metrics(), logger: silentLogger() });
    const egress = loadEvents('no-build-host-process.jsonl')[0]!;
    await c.handle(withDestination(egress, '::ffff:198.18.7.7'));
    await c.flush();
    assert.equal(await isKnown(stores, cfg.environment, '198.18.7.7', Date.now(), cfg.firstSeenRetentionMs), true);
    assert.equal(c.handle(withDestination(egress, '198.18.7.7')), undefined);
    assert.equal(c.backlog, 0, 'decided from the cache');
    await c.close();
  });

  it('a known IP in the cache is decided synchronously, without the store', async () => {
    const cfg = testConfig();
    const sink = new CollectingSink();
    const c = new Correlator(cfg, { stores: memoryStores(cfg), sink, metrics: new Metrics(), logger: silentLogger() });
    const egress = loadEvents('no-build-host-process.jsonl')[0]!;
    assert.equal(c.handle(egress), undefined);
    await c.flush();
    for (let i = 0; i < 1000; i++) assert.equal(c.handle(egress), undefined);
    assert.equal(c.backlog, 0, 'nothing waits for a decision');
    await c.close();
  });
});
