// The session table's edges: remote accepts that arrive after the build they started, the
// link window on both sides, which build a step without identity joins, merging what another
// daemon stored, pruning and eviction, and the records it hands to the store.
import assert from 'node:assert/strict';
import { classifyBuild, classifyEgress, type BuildSignal, type EgressSignal } from '../src/detect/classify.js';
import { REMOTE_LINK_MS, SessionTable, remoteLinkMs } from '../src/detect/sessions.js';
import { attribute } from '../src/detect/attribution.js';
import type { FalcoEvent } from '../src/model/event.js';
import type { SessionRecord } from '../src/model/session.js';
import { sessionRecord } from './support/records.js';

const WINDOW = 15 * 60_000;
const SKEW = 30_000;
const T = 1_772_446_500_000;
const H = 'node-a';
/** How long after an accept a build may begin and still be its build. */
const LINK = remoteLinkMs({ buildWindowMs: WINDOW, clockSkewMs: SKEW, maxSessions: 1 });

function ev(tMs: number, fields: Record<string, string | null>, tags = ['t1612_build'], rule = 'r'): FalcoEvent {
  return { timeNs: BigInt(tMs) * 1_000_000n, rule, priority: 'Notice', source: 'syscall', hostname: H, tags, output: `o@${tMs}`, fields };
}
const build = (tMs: number, fields: Record<string, string | null>, rule = 'r'): BuildSignal => classifyBuild(ev(tMs, fields, ['t1612_build'], rule), H);
const egress = (tMs: number, fields: Record<string, string | null>): EgressSignal =>
  classifyEgress(ev(tMs, { 'fd.sip': '203.0.113.5', ...fields }, ['t1612_egress']), H)!;
const accept = (tMs: number, port = '4000'): BuildSignal => build(tMs, { 'proc.name': 'dockerd', 'fd.cip': '198.51.100.7', 'fd.cport': port }, 'accept');
/** A BuildKit step under dockerd: no pid link to any CLI. */
const step = (tMs: number, pid: string, cg = 'aaaaaaaaaaaa'): BuildSignal =>
  build(tMs, { 'proc.name': 'runc', 'proc.pname': 'dockerd', 'proc.pid': pid, 'thread.cgroups': `cpu=/docker/buildkit/${cg}` });
const dockerdStep = (tMs: number, pid: string): BuildSignal => build(tMs, { 'proc.name': 'runc', 'proc.pname': 'dockerd', 'proc.pid': pid });

function table(maxSessions = 10): SessionTable {
  return new SessionTable({ buildWindowMs: WINDOW, clockSkewMs: SKEW, maxSessions });
}

describe('session table: remote Docker API accepts', () => {
  it('an accept arriving after the signals of the build it started makes that build remote', () => {
    const t = table();
    const s = t.applyBuild(dockerdStep(T, '10'))!;
    assert.equal(s.remotePeer, null);
    assert.equal(t.applyBuild(accept(T + SKEW)), null, 'an accept opens nothing');
    assert.equal(s.remotePeer, '198.51.100.7:4000');
    assert.equal(s.trigger.remote_peer, '198.51.100.7:4000');
    assert.equal(s.evidence[0]?.rule, 'accept', 'the accept leads the evidence');
    // The change is handed to the store with the accept.
    const w = t.takeDirty();
    assert.equal(w.length, 1);
    assert.equal(w[0]?.remote?.peer, '198.51.100.7:4000');
    assert.deepEqual(w[0]?.upsert.map((x) => x.id), [s.id]);
    assert.equal(t.hasDirty, false);
  });

  it('a late accept links builds begun from its skew before to its link time after, no others', () => {
    assert.equal(LINK, Math.max(REMOTE_LINK_MS, WINDOW));
    const a = T + 10 * 60_000;
    for (const [start, linked] of [
      [a - SKEW - 1, false],
      [a - SKEW, true],
      [a + LINK, true],
      [a + LINK + 1, false],
    ] as const) {
      const t = table();
      const s = t.applyBuild(step(start, '1'))!;
      t.applyBuild(accept(a));
      assert.equal(s.remotePeer !== null, linked, `start ${start - a}`);
    }
  });

  it('a build opening after an accept is linked from the skew before it to the link time after it', () => {
    for (const [startOffset, linked] of [
      [-SKEW - 1, false],
      [-SKEW, true],
      [LINK, true],
      [LINK + 1, false],
    ] as const) {
      const t = table();
      t.applyBuild(accept(T));
      const s = t.applyBuild(dockerdStep(T + startOffset, '10'))!;
      assert.equal(s.remotePeer !== null, linked, `start ${startOffset}`);
    }
    // An accept stamped after the activity (beyond the skew) has not happened yet for it.
    const t = table();
    t.applyBuild(accept(T + SKEW + 1));
    const s = t.applyBuild(dockerdStep(T, '10'))!;
    assert.equal(s.remotePeer, null);
  });

  it('never links a local CLI build or a non-docker build, and keeps the first peer', () => {
    const t = table();
    const cli = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100', 'proc.cmdline': 'docker build .' }))!;
    const buildah = t.applyBuild(build(T, { 'proc.name': 'buildah', 'proc.pid': '200', 'proc.cmdline': 'buildah bud .' }))!;
    const remote = t.applyBuild(dockerdStep(T + 1, '300'))!;
    // The step joined the fresh docker CLI build (in progress); open a separate dockerd build.
    assert.equal(remote.id, cli.id);
    t.applyBuild(accept(T + 2, '1111'));
    assert.equal(cli.remotePeer, null, 'a CLI on the local socket is not the remote client');
    assert.equal(buildah.remotePeer, null, 'buildah is not driven by the Docker API');
    const t2 = table();
    const s = t2.applyBuild(dockerdStep(T, '10'))!;
    t2.applyBuild(accept(T + 1, '1111'));
    t2.applyBuild(accept(T + 2, '2222'));
    assert.equal(s.remotePeer, '198.51.100.7:1111');
    assert.equal(s.evidence.filter((e) => e.rule === 'accept').length, 1);
  });

  it('keeps the newest accept; an older one arriving late does not replace it', () => {
    const t = table();
    t.applyBuild(accept(T, '2222'));
    t.applyBuild(accept(T - 60_000, '1111'));
    const s = t.applyBuild(dockerdStep(T + 1, '10'))!;
    assert.equal(s.remotePeer, '198.51.100.7:2222');
    // A loopback client is not remote: ignored entirely.
    const t2 = table();
    assert.equal(t2.applyBuild(build(T, { 'proc.name': 'dockerd', 'fd.cip': '127.0.0.1', 'fd.cport': '5' })), null);
    assert.equal(t2.applyBuild(dockerdStep(T + 1, '10'))?.remotePeer, null);
    assert.equal(t2.takeDirty()[0]?.remote, undefined);
  });

  it('the accept evidence goes first and the evidence list stays capped', () => {
    const t = table();
    const s = t.applyBuild(dockerdStep(T, '10'))!;
    for (let i = 1; i <= 5; i++) t.applyBuild(dockerdStep(T + i, String(10 + i)));
    assert.equal(s.evidence.length, 4);
    t.applyBuild(accept(T + 10));
    assert.equal(s.evidence.length, 4);
    assert.equal(s.evidence[0]?.rule, 'accept');
    // The trigger (first signal) was pushed out of second place, not the latest activity.
    assert.equal(s.evidence[3]?.output, `o@${T + 5}`);
  });
});

describe('session table: which build a step joins', () => {
  it('a step with no identity link joins the newest build of its builder that has no step yet, else the most active', () => {
    const t = table();
    const a = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100' }))!;
    const b = t.applyBuild(build(T + 1_000, { 'proc.name': 'docker', 'proc.pid': '200' }))!;
    const c = t.applyBuild(build(T + 2_000, { 'proc.name': 'buildah', 'proc.pid': '300', 'proc.cmdline': 'buildah bud .' }))!;
    assert.equal(t.applyBuild(step(T + 3_000, '1', 'c1c1c1c1c1c1'))?.id, b.id, 'newest docker build without steps');
    assert.equal(t.applyBuild(step(T + 4_000, '2', 'c2c2c2c2c2c2'))?.id, a.id, 'the other one has no step yet');
    assert.deepEqual(b.cgroups, ['buildkit:c1c1c1c1c1c1']);
    // Both have steps now: the most recently active docker build.
    t.applyBuild(build(T + 5_000, { 'proc.name': 'docker', 'proc.pid': '201', 'proc.ppid': '200' }));
    assert.equal(t.applyBuild(step(T + 6_000, '3', 'c3c3c3c3c3c3'))?.id, b.id);
    assert.notEqual(c.cgroups.length, 1);
  });

  it('openAt lists the covering sessions most recently active first; hasAny and size follow', () => {
    const t = table();
    assert.equal(t.hasAny(H), false);
    const a = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100' }))!;
    const b = t.applyBuild(build(T + 1_000, { 'proc.name': 'docker', 'proc.pid': '200' }))!;
    assert.deepEqual(t.openAt(H, T + 1_500).map((s) => s.id), [b.id, a.id]);
    t.applyBuild(build(T + 2_000, { 'proc.name': 'docker', 'proc.pid': '101', 'proc.ppid': '100' }));
    assert.deepEqual(t.openAt(H, T + 3_000).map((s) => s.id), [a.id, b.id]);
    // b's window (from its last activity) ends first; a, active later, still covers.
    assert.deepEqual(t.openAt(H, T + 1_000 + WINDOW + 1).map((s) => s.id), [a.id]);
    assert.equal(t.hasAny(H), true);
    assert.equal(t.hasAny('other'), false);
    assert.equal(t.size, 2);
    assert.deepEqual(t.openAt('other', T), []);
  });

  it('records pids of build signals only, containers of steps and egress, not of a CLI in a container', () => {
    const t = table();
    const s = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100', 'container.id': 'aaaaaaaaaaaa' }))!;
    assert.deepEqual(s.containers, [], 'a CLI run in a container is not a build container');
    t.applyBuild(build(T + 1, { 'proc.name': 'sh', 'proc.pname': 'runc', 'proc.aname[2]': 'dockerd', 'proc.pid': '300', 'container.id': 'bbbbbbbbbbbb', 'proc.ppid': '100' }));
    assert.deepEqual(s.containers, ['bbbbbbbbbbbb']);
    assert.deepEqual(s.pids, [100, 300]);
    const e = egress(T + 2, { 'proc.pid': '400', 'proc.ppid': '300', 'container.id': 'cccccccccccc', 'proc.name': 'curl', 'proc.pname': 'runc', 'proc.aname[2]': 'dockerd' });
    t.applyStepEgress(e);
    assert.deepEqual(s.pids, [100, 300], 'an egress pid is no builder');
    assert.deepEqual(s.containers, ['bbbbbbbbbbbb', 'cccccccccccc']);
    assert.equal(s.lastActivity, T + 2);
  });

  it('the pid list is capped keeping the builder\'s own pid first', () => {
    const t = table();
    const s = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '1000' }))!;
    for (let i = 1; i <= 70; i++) t.applyBuild(build(T + i, { 'proc.name': 'docker', 'proc.pid': String(1000 + i), 'proc.ppid': '1000' }));
    assert.equal(s.pids.length, 64);
    assert.equal(s.pids[0], 1000);
    assert.equal(s.pids[63], 1070);
    assert.equal(s.pids.includes(1001), false);
  });

  it('session ids: 20 hex digits, the same for the same build on two daemons, different per build', () => {
    const a = table().applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100' }))!;
    const b = table().applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100' }))!;
    const c = table().applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '101' }))!;
    const d = table().applyBuild(build(T + 1, { 'proc.name': 'docker', 'proc.pid': '100' }))!;
    assert.match(a.id, /^[0-9a-f]{20}$/);
    assert.equal(a.id, b.id);
    assert.notEqual(a.id, c.id);
    assert.notEqual(a.id, d.id);
    // Keyed by the strongest identity: a cgroup over the pid.
    const e = table().applyBuild(step(T, '100'))!;
    const f = table().applyBuild(step(T, '999'))!;
    assert.equal(e.id, f.id);
  });

  it('the trigger records the first signal: process, user, container', () => {
    const s = table().applyBuild(
      build(T, { 'proc.name': 'docker', 'proc.pid': '100', 'proc.cmdline': 'docker build .', 'user.name': 'alice', 'container.id': 'host' }),
    )!;
    assert.deepEqual(s.trigger, { rule: 'r', proc_name: 'docker', cmdline: 'docker build .', user: 'alice', container_id: 'host', remote_peer: null });
    const k = table().applyBuild(build(T, { 'proc.name': 'docker', 'container.id': 'abcdefabcdef' }))!;
    assert.equal(k.trigger.container_id, 'abcdefabcdef');
    assert.equal(k.trigger.cmdline, null);
  });

  it('dockerd\'s builder: a BuildKit step fixes it; a later classic hint does not undo that', () => {
    const t = table();
    const s = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100', 'proc.cmdline': 'docker build .', 'proc.pcmdline': 'sh -c DOCKER_BUILDKIT=0 docker build .' }))!;
    assert.equal(s.dockerBuilder, 'classic');
    t.applyBuild(step(T + 1, '5'));
    assert.equal(s.dockerBuilder, 'buildkit');
    t.applyBuild(build(T + 2, { 'proc.name': 'docker', 'proc.pid': '101', 'proc.ppid': '100', 'proc.cmdline': 'docker build .', 'proc.pcmdline': 'sh -c DOCKER_BUILDKIT=0 docker build .' }));
    assert.equal(s.dockerBuilder, 'buildkit');
    // A step egress with a BuildKit cgroup opening a session says BuildKit too.
    const e = table().applyStepEgress(egress(T, { 'proc.name': 'curl', 'thread.cgroups': 'cpu=/docker/buildkit/dddddddddddd', 'proc.aname[3]': 'dockerd' }));
    assert.equal(e.engine, 'docker');
    assert.equal(e.dockerBuilder, 'buildkit');
  });
});

describe('session table: store hand-over, pruning, eviction', () => {
  function rec(over: Partial<SessionRecord>): SessionRecord {
    const trigger = { rule: 'stored', proc_name: 'docker', cmdline: null, user: null, container_id: null, remote_peer: null };
    return sessionRecord({ host: H, startedAt: T, lastActivity: T, trigger, ...over });
  }

  it('merge: a stored record sharing a key takes over when older, and its facts join the local session', () => {
    const t = table();
    const local = t.applyBuild(build(T + 5_000, { 'proc.name': 'runc', 'proc.pname': 'dockerd', 'proc.pid': '7', 'container.id': 'eeeeeeeeeeee' }))!;
    const oldId = local.id;
    t.takeDirty();
    t.merge(H, {
      sessions: [rec({ id: 'stored1', containers: ['eeeeeeeeeeee'], pids: [5], lastActivity: T + 9_000, remotePeer: '198.51.100.9:1', engine: 'docker', expected: true, dockerBuilder: 'classic', images: ['app:1'] })],
      remote: { peer: '198.51.100.9:1', timeMs: T },
    });
    assert.equal(t.size, 1);
    assert.equal(local.id, 'stored1');
    assert.equal(local.startedAt, T);
    assert.equal(local.lastActivity, T + 9_000);
    assert.equal(local.trigger.rule, 'stored');
    assert.equal(local.remotePeer, '198.51.100.9:1');
    assert.equal(local.trigger.remote_peer, '198.51.100.9:1');
    assert.deepEqual(local.pids.sort(), [5, 7]);
    assert.equal(local.expected, true);
    assert.equal(local.dockerBuilder, 'classic');
    assert.deepEqual(local.images, ['app:1']);
    const w = t.takeDirty();
    assert.deepEqual(w[0]?.remove, [oldId]);
    assert.deepEqual(w[0]?.upsert.map((s) => s.id), ['stored1']);
    // A younger stored copy does not take the id back; its newer activity still counts.
    t.merge(H, { sessions: [rec({ id: 'younger', startedAt: T + 1, lastActivity: T + 20_000, pids: [5], remotePeer: '198.51.100.10:1' })], remote: null });
    assert.equal(local.id, 'stored1');
    assert.equal(local.lastActivity, T + 20_000);
    assert.equal(local.remotePeer, '198.51.100.9:1');
    t.merge(H, { sessions: [rec({ id: 'older-activity', startedAt: T + 1, lastActivity: T + 1, pids: [5] })], remote: null });
    assert.equal(local.lastActivity, T + 20_000);
  });

  it('merge: a record with no shared key is added (with canonical image refs); the newest remote accept wins', () => {
    const t = table();
    const mine = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100' }))!;
    t.merge(H, { sessions: [rec({ id: 'other', pids: [200], images: ['team/app:1'] })], remote: { peer: '198.51.100.1:1', timeMs: T + 100 } });
    assert.equal(t.size, 2);
    const other = t.openAt(H, T).find((s) => s.id === 'other');
    assert.deepEqual(other?.imageRefs, ['docker.io/team/app:1']);
    assert.equal(mine.pids.length, 1);
    t.merge(H, { sessions: [], remote: { peer: '198.51.100.2:2', timeMs: T + 50 } });
    t.merge(H, { sessions: [rec({ id: 'other' })], remote: null });
    assert.equal(t.size, 2, 'the same id again is the same session');
    // The accept kept is the newer one: a build opening now links to it.
    const s = t.applyBuild(dockerdStep(T + 200, '9'));
    assert.equal(s?.id, mine.id);
    const t2 = table();
    t2.merge(H, { sessions: [], remote: { peer: '198.51.100.1:1', timeMs: T + 100 } });
    t2.merge(H, { sessions: [], remote: { peer: '198.51.100.2:2', timeMs: T + 50 } });
    assert.equal(t2.applyBuild(dockerdStep(T + 200, '9'))?.remotePeer, '198.51.100.1:1');
  });

  it('restoreDirty puts a failed write back; newer changes win', () => {
    const t = table();
    const s = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100' }))!;
    t.applyBuild(accept(T + 1));
    const failed = t.takeDirty();
    assert.equal(t.hasDirty, false);
    t.restoreDirty(failed);
    const again = t.takeDirty();
    assert.deepEqual(again.map((w) => [w.host, w.upsert.map((x) => x.id), w.remove, w.remote?.peer]), [[H, [s.id], [], '198.51.100.7:4000']]);
    // A newer change to the session and a newer accept are not overwritten by the old write.
    t.applyBuild(accept(T + 5, '5555'));
    t.restoreDirty([{ host: H, upsert: [], remove: [s.id], remote: { peer: 'old:1', timeMs: T } }]);
    t.restoreDirty([{ host: H, upsert: [{ ...s, id: 'gone' }], remove: [], remote: undefined }]);
    const w = t.takeDirty()[0]!;
    assert.equal(w.remote?.peer, '198.51.100.7:5555');
    assert.deepEqual(w.remove, [s.id]);
    assert.deepEqual(w.upsert.map((x) => x.id), ['gone']);
    t.restoreDirty([{ host: H, upsert: [], remove: ['r1'], remote: { peer: 'p:1', timeMs: T } }]);
    t.restoreDirty([{ host: H, upsert: [{ ...s, id: 'r1' }], remove: [], remote: { peer: 'p:2', timeMs: T + 1 } }]);
    const w2 = t.takeDirty()[0]!;
    assert.deepEqual(w2.remove, ['r1']);
    assert.deepEqual(w2.upsert, []);
    assert.equal(w2.remote?.peer, 'p:2');
  });

  it('prunes sessions two windows (plus skew) past their activity; the host goes when nothing is left', () => {
    const t = table();
    const s = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100' }))!;
    t.takeDirty();
    const horizon = T + 2 * WINDOW + SKEW;
    t.applyBuild(build(horizon, { 'proc.name': 'podman', 'proc.pid': '500' }));
    assert.equal(t.size, 2, 'exactly at the horizon it stays');
    t.applyBuild(build(horizon + 1, { 'proc.name': 'podman', 'proc.pid': '501', 'proc.ppid': '500' }));
    assert.equal(t.size, 1);
    assert.deepEqual(t.takeDirty()[0]?.remove, [s.id]);
    // A remote accept keeps an otherwise empty host (its accept may still link a build).
    const t2 = table();
    t2.applyBuild(accept(T));
    t2.applyBuild(dockerdStep(T + 1, '1'));
    t2.applyBuild(step(T + 3 * WINDOW, '2', 'ffffffffffff'));
    assert.equal(t2.size, 1);
    assert.equal(t2.openAt(H, T + 3 * WINDOW)[0]?.remotePeer, null, 'an accept long before is not this build\'s');
  });

  it('a build on a host whose every session was just pruned is kept (and counted once)', () => {
    const t = table();
    t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '1' }));
    const s = t.applyBuild(build(T + 3 * WINDOW, { 'proc.name': 'docker', 'proc.pid': '2', 'proc.cmdline': 'docker build -t app:9 .' }))!;
    assert.equal(t.size, 1);
    assert.deepEqual(t.openAt(H, T + 3 * WINDOW).map((x) => x.id), [s.id]);
    // Its step finds it by pid.
    assert.equal(t.applyBuild(build(T + 3 * WINDOW + 1, { 'proc.name': 'runc', 'proc.ppid': '2', 'proc.pid': '3' }))?.id, s.id);
  });

  it('with more hosts than twice max_sessions, hosts that only remember a remote accept are forgotten', () => {
    const onHost = (host: string, sig: BuildSignal): BuildSignal => ({ ...sig, host });
    const remembered = table(1);
    remembered.applyBuild(onHost('r', accept(T)));
    remembered.applyBuild(onHost('h1', build(T, { 'proc.name': 'docker', 'proc.pid': '1' })));
    assert.equal(remembered.applyBuild(onHost('r', dockerdStep(T + 10, '5')))?.remotePeer, '198.51.100.7:4000');
    const forgotten = table(1);
    forgotten.applyBuild(onHost('r', accept(T)));
    forgotten.applyBuild(onHost('h1', build(T, { 'proc.name': 'docker', 'proc.pid': '1' })));
    forgotten.applyBuild(onHost('h2', build(T, { 'proc.name': 'docker', 'proc.pid': '2' })));
    assert.equal(forgotten.size, 1);
    assert.equal(forgotten.applyBuild(onHost('r', dockerdStep(T + 10, '5')))?.remotePeer, null);
  });

  it('caps the images, cgroups and containers a session records', () => {
    const t = table();
    const tags = (from: number): string => Array.from({ length: 10 }, (_, i) => `-t img${from + i}:1`).join(' ');
    const s = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100', 'proc.cmdline': `docker build ${tags(0)} .` }))!;
    t.applyBuild(build(T + 1, { 'proc.name': 'docker', 'proc.pid': '101', 'proc.ppid': '100', 'proc.cmdline': `docker build ${tags(0)} ${tags(10)}`.slice(0, 400) }));
    assert.equal(s.images.length, 16);
    assert.equal(s.imageRefs.length, 16);
    assert.deepEqual(s.images.slice(0, 2), ['img0:1', 'img1:1']);
    for (let i = 0; i < 40; i++) {
      const id = (0x100000000000 + i).toString(16);
      t.applyBuild(build(T + 2 + i, { 'proc.name': 'sh', 'proc.pname': 'runc', 'proc.aname[2]': 'dockerd', 'proc.ppid': '100', 'proc.pid': String(200 + i), 'container.id': id, 'thread.cgroups': `cpu=/docker/buildkit/${id}` }));
    }
    assert.equal(s.cgroups.length, 32);
    assert.equal(s.containers.length, 16);
    assert.equal(s.cgroups[0], 'buildkit:100000000000');
  });

  it('evicts the least recently active session past maxSessions, across hosts', () => {
    const t = table(2);
    const a = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '1' }))!;
    const b = classifyBuild({ ...ev(T + 10, { 'proc.name': 'docker', 'proc.pid': '2' }), hostname: 'node-b' }, 'node-b');
    const sb = t.applyBuild(b)!;
    t.applyBuild(build(T + 20, { 'proc.name': 'docker', 'proc.pid': '3', 'proc.ppid': '1' }));
    t.applyBuild(build(T + 30, { 'proc.name': 'podman', 'proc.pid': '4' }));
    assert.equal(t.size, 2);
    assert.equal(t.hasAny('node-b'), false, `${sb.id} went: least recently active`);
    assert.equal(t.openAt(H, T + 40).some((s) => s.id === a.id), true);
    const w = t.takeDirty();
    assert.equal(w.find((x) => x.host === 'node-b')?.upsert.length ?? 0, 0, 'an evicted session is not written');
  });
});

describe('attribution edges', () => {
  const on = { windowOnly: false, builderEgress: true, clockSkewMs: SKEW };
  /** A classic-builder RUN step's process: `sh -c …` under containerd-shim, no image metadata. */
  const classicEgress = (tMs: number): EgressSignal =>
    egress(tMs, {
      'proc.name': 'wget',
      'proc.pname': 'sh',
      'proc.pcmdline': 'sh -c wget http://203.0.113.5/',
      'proc.aname[2]': 'containerd-shim',
      'container.id': 'eeeeeeeeeeee',
    });
  const classicCli = (tMs: number, pid: string, pcmdline = 'sh -c DOCKER_BUILDKIT=0 docker build .'): BuildSignal =>
    build(tMs, { 'proc.name': 'docker', 'proc.pid': pid, 'proc.cmdline': 'docker build .', 'proc.pcmdline': pcmdline });

  it('a classic step container joins the newest classic docker build open when it started, not one begun after it', () => {
    const t = table();
    const older = t.applyBuild(classicCli(T, '100'))!;
    const newer = t.applyBuild(classicCli(T + 60_000, '200'))!;
    const sig = classicEgress(T + 120_000);
    assert.equal(sig.classicCandidate, true);
    const open = t.openAt(H, T + 120_000);
    assert.equal(attribute(sig, open, on, { startedAt: T + 100_000 })?.session.id, newer.id);
    // Started before the newer build (beyond the skew): only the older one can explain it.
    assert.equal(attribute(sig, open, on, { startedAt: T + 60_000 - SKEW - 1 })?.session.id, older.id);
    assert.equal(attribute(sig, open, on, { startedAt: T + 60_000 - SKEW })?.session.id, newer.id);
    assert.equal(attribute(sig, open, on, { startedAt: T - SKEW - 1 }), null, 'started before every build');
    // Without a start time nothing ties it.
    assert.equal(attribute(sig, open, on), null);
    assert.equal(attribute(sig, open, on, { startedAt: null }), null);
  });

  it('a classic step container is no step of a BuildKit, non-docker or step-carrying build', () => {
    const sig = classicEgress(T + 1_000);
    for (const s of [
      classicCli(T, '100', 'sh -c DOCKER_BUILDKIT=1 docker build .'),
      build(T, { 'proc.name': 'buildah', 'proc.pid': '100', 'proc.cmdline': 'buildah bud .' }),
    ]) {
      const t = table();
      t.applyBuild(s);
      assert.equal(attribute(sig, t.openAt(H, T + 1_000), on, { startedAt: T + 500 }), null, s.proc.cmdline ?? '');
    }
    const t = table();
    t.applyBuild(classicCli(T, '100'));
    t.applyBuild(step(T + 500, '7'));
    assert.equal(attribute(sig, t.openAt(H, T + 1_000), on, { startedAt: T + 600 }), null, 'its steps are BuildKit cgroups');
  });

  it('an image container started exactly a skew before the build began still inherits it; a window guess is no builder', () => {
    const t = table();
    const s = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100', 'proc.cmdline': 'docker build -t team/app:2 .' }))!;
    const img = egress(T + 1_000, { 'proc.name': 'curl', 'container.id': 'abcdefabcdef', 'container.image.repository': 'team/app', 'container.image.tag': '2' });
    const open = t.openAt(H, T + 1_000);
    assert.equal(attribute(img, open, on, { startedAt: T - SKEW })?.session.id, s.id);
    assert.equal(attribute(img, open, on, { startedAt: T - SKEW - 1 }), null);
    const w = attribute(egress(T + 1_000, { 'proc.name': 'curl' }), open, { ...on, windowOnly: true });
    assert.deepEqual([w?.kind, w?.builder], ['window', false]);
    assert.equal(attribute(img, [], on), null, 'nothing open');
  });
});

describe('session table: step egress and hosts without builds', () => {
  it('a host that only remembers an accept holds no session', () => {
    const t = table();
    t.applyBuild(accept(T));
    assert.equal(t.hasAny(H), false);
    assert.equal(t.size, 0);
  });

  it("a step egress says BuildKit only with a cgroup of dockerd's, and keeps a classic build classic", () => {
    const noCgroup = table().applyStepEgress(egress(T, { 'proc.name': 'curl', 'proc.pname': 'runc', 'proc.aname[2]': 'dockerd' }));
    assert.deepEqual([noCgroup.engine, noCgroup.dockerBuilder], ['docker', null]);
    const standalone = table().applyStepEgress(egress(T, { 'proc.name': 'curl', 'proc.pname': 'runc', 'proc.aname[2]': 'buildkitd', 'thread.cgroups': 'cpu=/buildkit/abcabcabc' }));
    assert.deepEqual([standalone.engine, standalone.dockerBuilder], ['buildkitd', null]);
    const t = table();
    const s = t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100', 'proc.cmdline': 'docker build .', 'proc.pcmdline': 'sh -c DOCKER_BUILDKIT=0 docker build .' }))!;
    assert.equal(s.dockerBuilder, 'classic');
    assert.equal(t.applyStepEgress(egress(T + 1, { 'proc.name': 'curl', 'proc.ppid': '100', 'proc.pname': 'runc', 'proc.aname[2]': 'dockerd' })).id, s.id);
    assert.equal(s.dockerBuilder, 'classic');
  });
});
