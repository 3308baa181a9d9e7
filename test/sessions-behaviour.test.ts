// Build sessions seen from outside: which session a signal joins (by lineage, cgroup, build
// container, image tag, or as the build in progress), what a session records, how remote
// accepts are linked and shown, what merging stored sessions changes, and when sessions and
// hosts are dropped (pruning, eviction, forgetting hosts).
import assert from 'node:assert/strict';
import { classifyBuild, classifyEgress, type BuildSignal, type EgressSignal } from '../src/detect/classify.js';
import { SessionTable, evidenceOf, sharesLineage } from '../src/detect/sessions.js';
import { TAG_BUILD, TAG_EGRESS, TAG_EXPECTED, type FalcoEvent } from '../src/model/event.js';
import type { SessionRecord } from '../src/model/session.js';
import { sessionRecord } from './support/records.js';

const WINDOW = 15 * 60_000;
const SKEW = 30_000;
const T = 1_772_446_500_000;
const H = 'node-a';
const PEER = '198.51.100.7:4000';

type Fields = Record<string, string | null>;

function ev(tMs: number, fields: Fields, tags: string[], rule: string): FalcoEvent {
  return { timeNs: BigInt(tMs) * 1_000_000n, rule, priority: 'Notice', source: 'syscall', hostname: H, tags, output: `o@${tMs}`, fields };
}
const build = (tMs: number, fields: Fields, rule = 'r', tags = [TAG_BUILD]): BuildSignal => classifyBuild(ev(tMs, fields, tags, rule), H);
const egress = (tMs: number, fields: Fields, rule = 'r'): EgressSignal =>
  classifyEgress(ev(tMs, { 'fd.sip': '203.0.113.5', ...fields }, [TAG_EGRESS], rule), H)!;
const onHost = (host: string, sig: BuildSignal): BuildSignal => ({ ...sig, host });
const accept = (tMs: number, port = '4000'): BuildSignal => build(tMs, { 'proc.name': 'dockerd', 'fd.cip': '198.51.100.7', 'fd.cport': port }, 'accept');
const cli = (tMs: number, pid: string, extra: Fields = {}): BuildSignal => build(tMs, { 'proc.name': 'docker', 'proc.pid': pid, ...extra });
/** A step of dockerd's with no identity link to any CLI (no cgroup, no parent pid). */
const dockerdStep = (tMs: number, pid: string): BuildSignal => build(tMs, { 'proc.name': 'runc', 'proc.pname': 'dockerd', 'proc.pid': pid });
/** A BuildKit step under dockerd, identified by its cgroup. */
const bkStep = (tMs: number, pid: string, cg: string): BuildSignal =>
  build(tMs, { 'proc.name': 'runc', 'proc.pname': 'dockerd', 'proc.pid': pid, 'thread.cgroups': `cpu=/docker/buildkit/${cg}` });
/** A layer commit: build activity that opens nothing. */
const commit = (tMs: number): BuildSignal => build(tMs, { 'proc.name': 'exe', 'proc.pname': 'dockerd', 'proc.pid': '5' });

function table(maxSessions = 10): SessionTable {
  return new SessionTable({ buildWindowMs: WINDOW, clockSkewMs: SKEW, maxSessions });
}

function stored(over: Partial<SessionRecord>): SessionRecord {
  return sessionRecord({ host: H, startedAt: T, ...over });
}

const ids = (list: readonly SessionRecord[]): string[] => list.map((s) => s.id);

describe('sessions: which session a signal belongs to', () => {
  it('a step egress carrying the cgroup of a lapsed build re-opens that build', () => {
    const t = table();
    const s = t.applyBuild(bkStep(T, '1', 'aaaaaaaaaaaa'))!;
    const late = T + WINDOW + 60_000;
    assert.equal(t.openAt(H, late).length, 0, 'lapsed');
    const e = egress(late, { 'proc.name': 'curl', 'proc.pid': '900', 'thread.cgroups': 'cpu=/docker/buildkit/aaaaaaaaaaaa' });
    assert.equal(sharesLineage(s, e), true);
    assert.equal(t.applyStepEgress(e).id, s.id);
    assert.equal(t.size, 1);
    assert.equal(s.lastActivity, late);
    const other = egress(late, { 'proc.name': 'curl', 'proc.pid': '901', 'thread.cgroups': 'cpu=/docker/buildkit/bbbbbbbbbbbb' });
    assert.equal(sharesLineage(s, other), false);
    assert.notEqual(t.applyStepEgress(other).id, s.id);
  });

  it('a step egress from the build container of a lapsed build re-opens that build', () => {
    const t = table();
    const s = t.applyBuild(build(T, { 'proc.name': 'sh', 'proc.pname': 'runc', 'proc.aname[2]': 'dockerd', 'proc.pid': '300', 'container.id': 'bbbbbbbbbbbb' }))!;
    assert.deepEqual(s.containers, ['bbbbbbbbbbbb']);
    const late = T + WINDOW + 60_000;
    const e = egress(late, { 'proc.name': 'curl', 'proc.pid': '901', 'container.id': 'bbbbbbbbbbbb' });
    assert.equal(sharesLineage(s, e), true);
    assert.equal(t.applyStepEgress(e).id, s.id);
    assert.equal(t.size, 1);
    const elsewhere = egress(late, { 'proc.name': 'curl', 'proc.pid': '902', 'container.id': 'cccccccccccc' });
    assert.equal(sharesLineage(s, elsewhere), false);
  });

  it('a build CLI naming an image tag an open build produces joins that build', () => {
    const t = table();
    const a = t.applyBuild(cli(T, '100', { 'proc.cmdline': 'docker build -t team/app:1 .' }))!;
    const b = t.applyBuild(cli(T + 1_000, '200', { 'proc.cmdline': 'docker build -t team/app:1 -t team/app:latest .' }))!;
    assert.equal(b.id, a.id);
    assert.equal(t.size, 1);
    assert.deepEqual(a.pids, [100, 200]);
    assert.deepEqual(a.images, ['team/app:1', 'team/app:latest']);
    const c = t.applyBuild(cli(T + 2_000, '300', { 'proc.cmdline': 'docker build -t team/other:1 .' }))!;
    assert.notEqual(c.id, a.id);
  });

  it('a step without identity skips a build whose first step ran in a container', () => {
    const t = table();
    const a = t.applyBuild(cli(T, '100'))!;
    const b = t.applyBuild(cli(T + 1_000, '200'))!;
    // b's first step (classic builder): a container, no cgroup.
    const first = t.applyBuild(build(T + 2_000, { 'proc.name': 'sh', 'proc.pname': 'runc', 'proc.aname[2]': 'dockerd', 'proc.pid': '300', 'proc.ppid': '200', 'container.id': 'bbbbbbbbbbbb' }))!;
    assert.equal(first.id, b.id);
    assert.deepEqual([b.cgroups, b.containers], [[], ['bbbbbbbbbbbb']]);
    assert.equal(t.applyBuild(dockerdStep(T + 3_000, '400'))?.id, a.id, 'a has no step yet');
  });

  it('among builds that all have steps and are equally active, a step joins the one opened first', () => {
    const t = table();
    const a = t.applyBuild(cli(T, '100'))!;
    const b = t.applyBuild(cli(T + 1_000, '200'))!;
    assert.equal(t.applyBuild(bkStep(T + 3_000, '1', 'c1c1c1c1c1c1'))?.id, b.id);
    assert.equal(t.applyBuild(bkStep(T + 3_000, '2', 'c2c2c2c2c2c2'))?.id, a.id);
    assert.deepEqual([a.lastActivity, b.lastActivity], [T + 3_000, T + 3_000]);
    assert.equal(t.applyBuild(bkStep(T + 4_000, '3', 'c3c3c3c3c3c3'))?.id, a.id);
    // Now a is the more active one: it still gets the next.
    assert.equal(t.applyBuild(bkStep(T + 5_000, '4', 'c4c4c4c4c4c4'))?.id, a.id);
    // b more active: b.
    t.applyBuild(bkStep(T + 6_000, '5', 'c1c1c1c1c1c1'));
    assert.equal(t.applyBuild(bkStep(T + 7_000, '6', 'c5c5c5c5c5c5'))?.id, b.id);
  });

  it('a step after the window of the only build opens a new build', () => {
    const t = table();
    const a = t.applyBuild(cli(T, '100'))!;
    const s = t.applyBuild(dockerdStep(T + WINDOW + 1, '10'))!;
    assert.notEqual(s.id, a.id);
    assert.equal(t.size, 2);
    assert.equal(a.lastActivity, T);
    // Inside the window the same step would have joined it.
    const t2 = table();
    const a2 = t2.applyBuild(cli(T, '100'))!;
    assert.equal(t2.applyBuild(dockerdStep(T + WINDOW, '10'))?.id, a2.id);
  });
});

describe('sessions: what a session records', () => {
  it('canonical image refs for the tags it names, none without tags', () => {
    const t = table();
    const s = t.applyBuild(cli(T, '100', { 'proc.cmdline': 'docker build -t team/app:1 .' }))!;
    assert.deepEqual(s.imageRefs, ['docker.io/team/app:1']);
    assert.deepEqual(t.applyBuild(build(T, { 'proc.name': 'podman', 'proc.pid': '7' }))?.imageRefs, []);
  });

  it('a session opened by a step egress is no local CLI build', () => {
    const s = table().applyStepEgress(egress(T, { 'proc.name': 'curl', 'proc.pname': 'runc', 'proc.aname[2]': 'dockerd' }));
    assert.equal(s.localClient, false);
    assert.equal(s.engine, 'docker');
  });

  it('learns the builder from a later signal, and keeps the first one it learnt', () => {
    const t = table();
    const s = t.applyBuild(build(T, { 'proc.name': 'runc', 'proc.pid': '5' }))!;
    assert.equal(s.engine, null);
    t.applyBuild(build(T + 1, { 'proc.name': 'runc', 'proc.pname': 'dockerd', 'proc.ppid': '5', 'proc.pid': '6' }));
    assert.equal(s.engine, 'docker');
    t.applyBuild(build(T + 2, { 'proc.name': 'runc', 'proc.pname': 'buildah', 'proc.ppid': '6', 'proc.pid': '7' }));
    assert.equal(s.engine, 'docker');
    assert.deepEqual(s.pids, [5, 6, 7]);
  });

  it("a step that says nothing about dockerd's builder keeps a classic build classic", () => {
    const t = table();
    const s = t.applyBuild(cli(T, '100', { 'proc.cmdline': 'docker build .', 'proc.pcmdline': 'sh -c DOCKER_BUILDKIT=0 docker build .' }))!;
    assert.equal(s.dockerBuilder, 'classic');
    assert.equal(t.applyBuild(build(T + 1, { 'proc.name': 'runc', 'proc.pname': 'dockerd', 'proc.ppid': '100', 'proc.pid': '101' }))?.id, s.id);
    assert.equal(s.dockerBuilder, 'classic');
  });

  it('one expected signal makes the whole build expected; a later ordinary one does not undo it', () => {
    const t = table();
    const s = t.applyBuild(cli(T, '100'))!;
    assert.equal(s.expected, false);
    t.applyBuild(build(T + 1, { 'proc.name': 'docker', 'proc.pid': '101', 'proc.ppid': '100' }, 'r', [TAG_BUILD, TAG_EXPECTED]));
    assert.equal(s.expected, true);
    t.applyBuild(build(T + 2, { 'proc.name': 'docker', 'proc.pid': '102', 'proc.ppid': '100' }));
    assert.equal(s.expected, true);
  });

  it('a signal without a pid adds none', () => {
    const t = table();
    const s = t.applyBuild(cli(T, '100'))!;
    assert.equal(t.applyBuild(build(T + 1, { 'proc.name': 'runc', 'proc.pname': 'dockerd' }))?.id, s.id);
    assert.deepEqual(s.pids, [100]);
    assert.deepEqual(t.applyBuild(build(T, { 'proc.name': 'podman' }))?.pids, []);
  });

  it("kaniko's executor container is part of its build", () => {
    const s = table().applyBuild(
      build(T, { 'proc.name': 'executor', 'proc.exepath': '/kaniko/executor', 'proc.cmdline': '/kaniko/executor --destination reg.example/app:1', 'proc.pid': '1', 'container.id': 'abcabcabcabc' }),
    )!;
    assert.equal(s.engine, 'kaniko');
    assert.deepEqual(s.containers, ['abcabcabcabc']);
    assert.deepEqual(s.images, ['reg.example/app:1']);
  });
});

describe('sessions: session ids', () => {
  it('an image tag identifies a build over its pid', () => {
    const a = table().applyBuild(cli(T, '100', { 'proc.cmdline': 'docker build -t team/app:1 .' }))!;
    const b = table().applyBuild(cli(T, '200', { 'proc.cmdline': 'docker build -t team/app:1 .' }))!;
    const c = table().applyBuild(cli(T, '100', { 'proc.cmdline': 'docker build -t team/app:2 .' }))!;
    assert.equal(a.id, b.id);
    assert.notEqual(a.id, c.id);
  });

  it('without pid or other identity the rule and the kind of signal tell builds apart', () => {
    const cliR1 = table().applyBuild(build(T, { 'proc.name': 'docker' }, 'r1'))!;
    assert.equal(table().applyBuild(build(T, { 'proc.name': 'docker' }, 'r1'))?.id, cliR1.id);
    const cliR2 = table().applyBuild(build(T, { 'proc.name': 'docker' }, 'r2'))!;
    const stepR1 = table().applyBuild(build(T, { 'proc.name': 'runc', 'proc.pname': 'dockerd' }, 'r1'))!;
    const egressR1 = table().applyStepEgress(egress(T, { 'proc.name': 'curl', 'proc.pname': 'runc', 'proc.aname[2]': 'dockerd' }, 'r1'));
    assert.equal(new Set([cliR1.id, cliR2.id, stepR1.id, egressR1.id]).size, 4);
  });
});

describe('sessions: remote Docker API accepts', () => {
  it('of two accepts stamped the same time, the later arriving is kept', () => {
    const t = table();
    t.applyBuild(accept(T, '1111'));
    t.applyBuild(accept(T, '2222'));
    assert.equal(t.takeDirty()[0]?.remote?.peer, '198.51.100.7:2222');
    assert.equal(t.applyBuild(dockerdStep(T + 1, '10'))?.remotePeer, '198.51.100.7:2222');
  });

  it('a remote build keeps its peer when a newer accept comes before its next step', () => {
    const t = table();
    const s = t.applyBuild(dockerdStep(T, '10'))!;
    t.applyBuild(accept(T + 1, '1111'));
    t.applyBuild(accept(T + 2, '2222'));
    assert.equal(t.applyBuild(build(T + 3, { 'proc.name': 'runc', 'proc.pname': 'dockerd', 'proc.ppid': '10', 'proc.pid': '11' }))?.id, s.id);
    assert.equal(s.remotePeer, '198.51.100.7:1111');
    assert.equal(s.trigger.remote_peer, '198.51.100.7:1111');
    assert.equal(s.evidence.filter((e) => e.rule === 'accept').length, 1);
  });

  it('the accept goes before the evidence a short build has, dropping none of it', () => {
    const t = table();
    const s = t.applyBuild(dockerdStep(T, '10'))!;
    t.applyBuild(dockerdStep(T + 1, '11'));
    t.applyBuild(accept(T + 2));
    assert.deepEqual(
      s.evidence.map((e) => e.output),
      [`o@${T + 2}`, `o@${T}`, `o@${T + 1}`],
    );
  });

  it('a stored accept without its event makes a build remote and adds no evidence', () => {
    const t = table();
    t.merge(H, { sessions: [], remote: { peer: '198.51.100.9:1', timeMs: T } });
    const s = t.applyBuild(dockerdStep(T + 1, '10'))!;
    assert.equal(s.remotePeer, '198.51.100.9:1');
    assert.deepEqual(s.evidence.map((e) => e.output), [`o@${T + 1}`]);
  });

  it('a stored build that already lists the accept does not list it twice; a different event is added', () => {
    const acc = accept(T);
    const accEv = evidenceOf(acc);
    const stepEv = evidenceOf(dockerdStep(T + 1, '10'));
    const sameTimeOtherRule = { ...accEv, rule: 'other', output: 'x' };
    const sameRuleOtherTime = { ...accEv, time: stepEv.time, output: 'y' };
    const t = table();
    t.merge(H, {
      sessions: [
        stored({ id: 'listed', pids: [10], startedAt: T + 1, engine: 'docker', evidence: [accEv, stepEv] }),
        stored({ id: 'near', pids: [20], startedAt: T + 1, engine: 'docker', evidence: [sameTimeOtherRule, sameRuleOtherTime] }),
      ],
      remote: null,
    });
    t.applyBuild(acc);
    const [listed, near] = ['listed', 'near'].map((id) => t.openAt(H, T + 1).find((s) => s.id === id)!);
    assert.equal(listed?.remotePeer, PEER);
    assert.deepEqual(listed?.evidence, [accEv, stepEv]);
    assert.equal(near?.remotePeer, PEER);
    assert.deepEqual(near?.evidence, [accEv, sameTimeOtherRule, sameRuleOtherTime]);
  });
});

describe('sessions: merging stored sessions', () => {
  it('a stored build sharing one of several cgroups is the same build', () => {
    const t = table();
    const local = t.applyBuild(bkStep(T, '1', 'aaaaaaaaaaaa'))!;
    t.merge(H, { sessions: [stored({ id: 'stored', startedAt: T + 10, cgroups: ['buildkit:aaaaaaaaaaaa', 'buildkit:bbbbbbbbbbbb'], engine: 'docker' })], remote: null });
    assert.equal(t.size, 1);
    assert.deepEqual(local.cgroups, ['buildkit:aaaaaaaaaaaa', 'buildkit:bbbbbbbbbbbb']);
  });

  it('a stored accept replaces only an older one', () => {
    const same = table();
    same.applyBuild(accept(T, '1111'));
    same.merge(H, { sessions: [], remote: { peer: '198.51.100.9:9', timeMs: T } });
    assert.equal(same.applyBuild(dockerdStep(T + 1, '10'))?.remotePeer, '198.51.100.7:1111');
    const newer = table();
    newer.applyBuild(accept(T, '1111'));
    newer.merge(H, { sessions: [], remote: { peer: '198.51.100.9:9', timeMs: T + 1 } });
    assert.equal(newer.applyBuild(dockerdStep(T + 2, '10'))?.remotePeer, '198.51.100.9:9');
  });

  it('a stored build far newer than the local ones prunes them', () => {
    const t = table();
    const old = t.applyBuild(cli(T, '100'))!;
    t.takeDirty();
    t.merge(H, { sessions: [stored({ id: 'later', pids: [500], startedAt: T + 3 * WINDOW })], remote: null });
    assert.equal(t.size, 1);
    assert.deepEqual(ids(t.openAt(H, T)), []);
    assert.deepEqual(t.takeDirty()[0]?.remove, [old.id]);
  });

  it("a stored build's canonical refs are kept as stored; a stored image that names nothing gets none", () => {
    const t = table();
    t.merge(H, {
      sessions: [
        stored({ id: 'a', pids: [1], images: ['team/app:1'], imageRefs: ['registry.example/team/app:1'] }),
        stored({ id: 'b', pids: [2], images: ['team/app:2', '@sha256:abc'] }),
      ],
      remote: null,
    });
    const [a, b] = ['a', 'b'].map((id) => t.openAt(H, T).find((s) => s.id === id));
    assert.deepEqual(a?.imageRefs, ['registry.example/team/app:1']);
    assert.deepEqual(b?.imageRefs, ['docker.io/team/app:2']);
  });

  it('a stored copy of a build begun at the same time leaves the local id', () => {
    const t = table();
    const local = t.applyBuild(cli(T, '100'))!;
    const id = local.id;
    t.takeDirty();
    t.merge(H, { sessions: [stored({ id: 'peer-copy', pids: [100] })], remote: null });
    assert.equal(t.size, 1);
    assert.equal(local.id, id);
    const w = t.takeDirty()[0];
    assert.deepEqual(w?.remove, []);
    assert.deepEqual(w?.upsert.map((s) => s.id), [id]);
  });

  it('a stored copy tells the builder when the local one does not know it, and does not change it otherwise', () => {
    const t = table();
    t.merge(H, { sessions: [stored({ id: 's', pids: [1] })], remote: null });
    t.merge(H, { sessions: [stored({ id: 's2', pids: [1], engine: 'docker' })], remote: null });
    assert.deepEqual(t.openAt(H, T).map((s) => [s.id, s.engine]), [['s', 'docker']]);
    t.merge(H, { sessions: [stored({ id: 's3', pids: [1], engine: 'buildah' })], remote: null });
    assert.equal(t.openAt(H, T)[0]?.engine, 'docker');
  });

  it('a reload with nothing for a host does not rewind how far its events have got', () => {
    const t = table();
    t.applyBuild(commit(T + 3 * WINDOW));
    t.merge(H, { sessions: [], remote: null });
    t.merge(H, { sessions: [stored({ id: 'old', pids: [9] })], remote: null });
    assert.equal(t.size, 0, 'two windows past the host latest activity: pruned at once');
  });

  it("a step egress moves the host's latest activity on: a reload prunes what it left behind", () => {
    const t = table();
    t.applyBuild(cli(T, '100'));
    const late = t.applyStepEgress(egress(T + 3 * WINDOW, { 'proc.name': 'curl', 'thread.cgroups': 'cpu=/docker/buildkit/dddddddddddd', 'proc.aname[3]': 'dockerd' }));
    t.merge(H, { sessions: [], remote: null });
    assert.equal(t.size, 1);
    assert.deepEqual(ids(t.openAt(H, T)), []);
    assert.deepEqual(ids(t.openAt(H, T + 3 * WINDOW)), [late.id]);
  });
});

describe('sessions: handing changes to the store', () => {
  it('a failed removal put back does not remove a session changed since', () => {
    const t = table();
    const s = t.applyBuild(cli(T, '100'))!;
    t.takeDirty();
    t.applyBuild(cli(T + 1, '101', { 'proc.ppid': '100' }));
    t.restoreDirty([{ host: H, upsert: [], remove: [s.id], remote: undefined }]);
    const w = t.takeDirty()[0];
    assert.deepEqual(w?.upsert.map((x) => x.id), [s.id]);
    assert.deepEqual(w?.remove, []);
  });

  it('a failed accept put back does not replace a pending one of the same time', () => {
    const t = table();
    t.applyBuild(accept(T + 5, '5555'));
    t.restoreDirty([{ host: H, upsert: [], remove: [], remote: { peer: 'old:1', timeMs: T + 5 } }]);
    assert.equal(t.takeDirty()[0]?.remote?.peer, '198.51.100.7:5555');
  });
});

describe('sessions: pruning, eviction and forgetting hosts', () => {
  it('pruning drops what is past the horizon and keeps what is exactly on it', () => {
    const t = table();
    const a = t.applyBuild(cli(T, '100'))!;
    const b = t.applyBuild(build(T + 1, { 'proc.name': 'podman', 'proc.pid': '200' }))!;
    t.takeDirty();
    const c = t.applyBuild(build(T + 1 + 2 * WINDOW + SKEW, { 'proc.name': 'buildah', 'proc.pid': '300', 'proc.cmdline': 'buildah bud .' }))!;
    assert.equal(t.size, 2);
    assert.deepEqual(ids(t.openAt(H, T)), [b.id]);
    assert.deepEqual(ids(t.openAt(H, T + 1 + 2 * WINDOW + SKEW)), [c.id]);
    assert.deepEqual(t.takeDirty()[0]?.remove, [a.id]);
  });

  it('a merge that prunes a host empty forgets its accept when older than the horizon, not otherwise', () => {
    const latest = T + 3 * WINDOW;
    const horizon = latest - 2 * WINDOW - SKEW;
    for (const [acceptAt, kept] of [
      [latest, true],
      [horizon, true],
      [horizon - 1, false],
    ] as const) {
      const t = table();
      t.applyBuild(accept(acceptAt));
      t.applyBuild(commit(latest));
      t.merge(H, { sessions: [stored({ id: 'old', pids: [9] })], remote: null });
      assert.equal(t.size, 0);
      // A step arriving late, just after the accept, links to it only if it was kept.
      const s = t.applyBuild(dockerdStep(acceptAt + 1_000, '10'))!;
      assert.equal(s.remotePeer, kept ? PEER : null, `accept at horizon ${acceptAt - horizon}`);
    }
  });

  it('a merge that prunes some sessions of a host keeps the others', () => {
    const t = table();
    const late = T + 3 * WINDOW;
    t.merge(H, { sessions: [stored({ id: 'old', pids: [9] }), stored({ id: 'new', pids: [10], startedAt: late })], remote: null });
    assert.equal(t.size, 1);
    assert.deepEqual(ids(t.openAt(H, late)), ['new']);
    assert.equal(t.hasAny(H), true);
  });

  it('equally idle sessions: the one opened first is evicted', () => {
    const t = table(2);
    const a = t.applyBuild(cli(T, '1'))!;
    const b = t.applyBuild(build(T, { 'proc.name': 'podman', 'proc.pid': '2' }))!;
    const c = t.applyBuild(build(T + 10, { 'proc.name': 'buildah', 'proc.pid': '3', 'proc.cmdline': 'buildah bud .' }))!;
    assert.deepEqual(ids(t.openAt(H, T + 10)).sort(), [b.id, c.id].sort());
    assert.equal(ids(t.openAt(H, T + 10)).includes(a.id), false);
  });

  it('accept-only hosts are forgotten from twice max_sessions hosts on, not before', () => {
    const t = table(2);
    t.applyBuild(onHost('r', accept(T)));
    t.applyBuild(onHost('h1', cli(T, '1')));
    t.applyBuild(onHost('h2', cli(T + 1, '2')));
    assert.equal(t.applyBuild(onHost('r', dockerdStep(T + 10, '5')))?.remotePeer, PEER);
  });

  it('forgetting accept-only hosts keeps the hosts that hold sessions', () => {
    const t = table(2);
    t.applyBuild(onHost('r1', accept(T)));
    t.applyBuild(onHost('r2', accept(T)));
    t.applyBuild(onHost('h1', cli(T, '1')));
    t.applyBuild(onHost('h2', cli(T + 1, '2')));
    t.applyBuild(onHost('h3', cli(T + 2, '3')));
    assert.equal(t.size, 2);
    assert.deepEqual([t.hasAny('h1'), t.hasAny('h2'), t.hasAny('h3')], [false, true, true]);
    assert.equal(t.applyBuild(onHost('r1', dockerdStep(T + 10, '5')))?.remotePeer, null, 'r1 was forgotten');
  });

  it('a host emptied by eviction, with no accept, no longer counts against the host limit', () => {
    const t = table(2);
    t.applyBuild(onHost('r', accept(T)));
    t.applyBuild(onHost('h1', cli(T, '1')));
    t.applyBuild(onHost('h2', cli(T + 1, '2')));
    t.applyBuild(onHost('h3', cli(T + 2, '3')));
    t.applyBuild(onHost('h4', cli(T + 3, '4')));
    assert.deepEqual(['h1', 'h2', 'h3', 'h4'].map((h) => t.hasAny(h)), [false, false, true, true]);
    assert.equal(t.applyBuild(onHost('r', dockerdStep(T + 10, '5')))?.remotePeer, PEER);
  });
});
