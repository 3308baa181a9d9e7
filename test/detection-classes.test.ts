// Detection classes a scenario corpus and real Falco showed missed or wrong, each from a
// realistic event sequence (fields as Falco 0.43 with the container plugin prints them),
// through the correlator on real stores; and the session table's edges.
import assert from 'node:assert/strict';
import { Correlator } from '../src/detect/correlator.js';
import { classifyBuild, classifyEgress } from '../src/detect/classify.js';
import { SessionTable } from '../src/detect/sessions.js';
import { OrphanPool, sessionKeys } from '../src/detect/orphans.js';
import { severityOf } from '../src/detect/attribution.js';
import type { Config } from '../src/config/config.js';
import type { Alert } from '../src/model/alert.js';
import type { FalcoEvent } from '../src/model/event.js';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { memoryStores } from '../src/store/stores.js';
import { CollectingSink, TestClock, testConfig } from './support/scenarios.js';

const T = 1_796_174_889_000;
const MIN = 60_000;
const HOST = 'vm';

type Fields = Record<string, string | null>;

function ev(tMs: number, rule: string, tags: string[], fields: Fields): FalcoEvent {
  return { timeNs: BigInt(tMs) * 1_000_000n, rule, priority: 'Informational', source: 'syscall', hostname: HOST, tags, output: rule, fields };
}
const BUILD = ['T1612', 't1612_build'];
const EGRESS = ['T1612', 't1612_egress'];

const cli = (t: number, cmdline: string, pid: number, extra: Fields = {}): FalcoEvent =>
  ev(t, 'T1612 Image Build Command Executed', BUILD, {
    'proc.name': cmdline.split(' ')[0] ?? null,
    'proc.cmdline': cmdline,
    'proc.pid': String(pid),
    'proc.ppid': String(pid - 1),
    'proc.pname': 'sh',
    'container.id': 'host',
    'thread.cgroups': 'cpuset=/ cpu=/ memory=/',
    ...extra,
  });

/** A BuildKit (dockerd) RUN step's command, as captured: cgroup on every controller, `buildkit/<3>` id. */
const bkStep = (t: number, id: string, pid: number): FalcoEvent =>
  ev(t, 'T1612 Build Step Command', BUILD, {
    'proc.name': 'sh',
    'proc.cmdline': 'sh -c wget -q -O /tmp/x http://example/',
    'proc.pid': String(pid),
    'proc.pname': 'runc',
    'proc.aname[2]': 'dockerd',
    'container.id': `buildkit/${id.slice(0, 3)}`,
    'thread.cgroups': `cpuset=/docker/buildkit/${id} cpu=/docker/buildkit/${id} memory=/docker/buildkit/${id}`,
  });

/** The step's busybox wget (`proc.name=exe`) connecting out. */
const bkEgress = (t: number, id: string, pid: number, ip: string, extra: Fields = {}): FalcoEvent =>
  ev(t, 'T1612 Build Step Outbound Connection', EGRESS, {
    'fd.sip': ip,
    'fd.sport': '8080',
    'fd.l4proto': 'tcp',
    'proc.name': 'exe',
    'proc.cmdline': `exe -q -O /tmp/x http://${ip}:8080/`,
    'proc.pid': String(pid),
    'proc.ppid': String(pid - 1),
    'proc.pname': 'sh',
    'proc.aname[2]': 'runc',
    'proc.aname[3]': 'dockerd',
    'container.id': `buildkit/${id.slice(0, 3)}`,
    'thread.cgroups': `cpuset=/docker/buildkit/${id} cpu=/docker/buildkit/${id} memory=/docker/buildkit/${id}`,
    ...extra,
  });

/** A process in an ordinary container (containerd-shim below it) connecting out. */
const ctrEgress = (t: number, ctr: string, ip: string, image: Fields, extra: Fields = {}): FalcoEvent =>
  ev(t, 'T1612 Container Outbound Connection', EGRESS, {
    'fd.sip': ip,
    'fd.sport': '443',
    'fd.l4proto': 'tcp',
    'proc.name': 'wget',
    'proc.cmdline': `wget -q -O /dev/null http://${ip}/`,
    'proc.pid': '5000',
    'proc.pname': 'containerd-shim',
    'proc.pcmdline': `containerd-shim -namespace moby -id ${ctr}0000 -address /var/run/docker/containerd/containerd.sock`,
    'container.id': ctr,
    'thread.cgroups': `cpuset=/docker/${ctr}0000 memory=/docker/${ctr}0000`,
    ...image,
    ...extra,
  });

const accept = (t: number, peer: string): FalcoEvent =>
  ev(t, 'T1612 Remote Docker API Connection', BUILD, {
    'fd.cip': peer,
    'fd.cport': '51000',
    'fd.sport': '2375',
    'proc.name': 'dockerd',
    'proc.pid': '700',
    'container.id': 'host',
  });

async function run(events: readonly FalcoEvent[], overrides: Partial<Config> = {}): Promise<{ alerts: Alert[]; correlator: Correlator }> {
  const cfg = testConfig(overrides);
  const sink = new CollectingSink();
  const clock = new TestClock(0);
  const correlator = new Correlator(cfg, { stores: memoryStores(cfg), sink, metrics: new Metrics(), logger: silentLogger(), now: clock.now });
  try {
    for (const e of events) {
      clock.ms = Math.max(clock.ms, Number(e.timeNs / 1_000_000n));
      await correlator.handle(e);
      await correlator.flush();
    }
  } finally {
    await correlator.close();
  }
  return { alerts: sink.alerts, correlator };
}

const brief = (alerts: readonly Alert[]): string[] =>
  alerts.map((a) => `${a.severity} ${a.connection.attribution} ${a.destination.ip}`);

describe('detection classes', () => {
  it('a Docker API accept escalates only builds dockerd runs: a local buildah build right after it is high', async () => {
    const buildahEgress = ev(T + 3_000, 'T1612 Build Step Outbound Connection', EGRESS, {
      'fd.sip': '198.51.100.88', 'fd.sport': '8080', 'fd.l4proto': 'tcp', 'proc.name': 'exe', 'proc.pid': '901',
      'proc.pname': 'sh', 'proc.aname[2]': 'exe', 'proc.aname[3]': 'buildah', 'container.id': 'host',
      'thread.cgroups': 'cpuset=/buildah-buildah1773171996 memory=/buildah-buildah1773171996',
    });
    const runtime = ev(T + 2_000, 'T1612 Builder Runtime Started', BUILD, {
      'proc.name': 'runc', 'proc.cmdline': 'runc start buildah-buildah1773171996', 'proc.pid': '880',
      'proc.pname': 'exe', 'proc.aname[2]': 'buildah', 'container.id': 'host', 'thread.cgroups': 'cpuset=/ memory=/',
    });
    const { alerts } = await run([
      accept(T, '203.0.113.66'),
      cli(T + 1_000, 'buildah --storage-driver vfs bud --isolation oci -t rb2:1 /srv/build/ctx/a2', 870),
      runtime,
      buildahEgress,
    ]);
    assert.deepEqual(brief(alerts), ['high lineage 198.51.100.88']);
  });

  it('a Docker API accept does not make remote a build that began long before it', async () => {
    // A build with no CLI on this host (its steps only), running for 10 minutes when a client
    // connects to the API; its next step downloads from a new IP.
    const { alerts } = await run([
      bkStep(T, 'longrunningb0ild5x9q2w4e7', 300),
      accept(T + 10 * MIN, '203.0.113.66'),
      bkStep(T + 10 * MIN + 1_000, 'longrunningb0ild5x9q2w4e8', 310),
      bkEgress(T + 10 * MIN + 2_000, 'longrunningb0ild5x9q2w4e8', 311, '198.51.100.40'),
    ]);
    assert.deepEqual(brief(alerts), ['high lineage 198.51.100.40']);
  });

  it('a build that begins after an accept, with no local CLI, is remote: critical', async () => {
    const { alerts } = await run([
      accept(T, '203.0.113.66'),
      bkStep(T + 2_000, 'remoteb0ild5x9q2w4e7r1t3y', 300),
      bkEgress(T + 2_100, 'remoteb0ild5x9q2w4e7r1t3y', 301, '198.51.100.41'),
    ]);
    assert.deepEqual(brief(alerts), ['critical lineage 198.51.100.41']);
  });

  it('a RUN step longer than the build window: its egress re-opens the build by its own cgroup', async () => {
    const id = 'sleepyb0ild5x9q2w4e7r1t3y';
    const { alerts } = await run([
      cli(T, 'docker build -t slow:1 .', 100),
      bkStep(T + 1_000, id, 200),
      bkEgress(T + 20 * MIN, id, 201, '198.51.100.42'),
    ]);
    assert.deepEqual(brief(alerts), ['high lineage 198.51.100.42']);
    assert.deepEqual(alerts[0]?.build.images, ['slow:1'], 'the lapsed session, not a new one');
  });

  it('a container of an untagged image id reaching a new IP with no build open is not a build by itself', async () => {
    const { alerts } = await run([
      ctrEgress(T, 'abababababab', '198.51.100.48', { 'container.image.repository': 'sha256', 'container.image.tag': '9d3e5c1f2a7b' }),
    ]);
    assert.deepEqual(brief(alerts), []);
  });

  it('buildah --isolation chroot: no runtime, no cgroup; the helper below buildah proves the step', async () => {
    // The CLI event was missed (several Falco sources, or it ran before Falco): the egress
    // alone must prove the build.
    const chroot = ev(T, 'T1612 Build Step Outbound Connection', EGRESS, {
      'fd.sip': '198.51.100.43', 'fd.sport': '443', 'fd.l4proto': 'tcp', 'proc.name': 'curl', 'proc.pid': '950',
      'proc.pname': 'sh', 'proc.aname[2]': 'exe', 'proc.aname[3]': 'buildah', 'proc.apid[2]': '940', 'proc.apid[3]': '930',
      'container.id': 'host', 'thread.cgroups': 'cpuset=/user.slice memory=/user.slice/user-1000.slice',
    });
    const { alerts } = await run([chroot]);
    assert.deepEqual(brief(alerts), ['high lineage 198.51.100.43']);
  });

  it('image lineage: a container running since before the rebuild of its tag is not the new image', async () => {
    const image = { 'container.image.repository': 'shop/web', 'container.image.tag': 'latest' };
    const { alerts } = await run([
      ctrEgress(T - 24 * 60 * MIN, 'aaaaaaaaaaaa', '203.0.113.1', image), // running since yesterday
      cli(T, 'docker build -t shop/web:latest .', 100),
      ctrEgress(T + 2 * MIN, 'aaaaaaaaaaaa', '198.51.100.44', image),
      ctrEgress(T + 3 * MIN, 'bbbbbbbbbbbb', '198.51.100.45', image), // started from the new image
    ]);
    assert.deepEqual(brief(alerts), ['high image 198.51.100.45']);
  });

  it('image lineage: the container plugin\'s container.start_ts says when a container started, even if first seen later', async () => {
    const image = { 'container.image.repository': 'shop/web', 'container.image.tag': 'latest' };
    const startNs = (ms: number): string => (BigInt(ms) * 1_000_000n).toString();
    const { alerts } = await run([
      cli(T, 'docker build -t shop/web:latest .', 100),
      // First seen now, but running since an hour before the build (quiet until now).
      ctrEgress(T + 2 * MIN, 'aaaaaaaaaaaa', '198.51.100.52', image, { 'container.start_ts': startNs(T - 60 * MIN) }),
      ctrEgress(T + 3 * MIN, 'bbbbbbbbbbbb', '198.51.100.53', image, { 'container.start_ts': startNs(T + 2 * MIN) }),
    ]);
    assert.deepEqual(brief(alerts), ['high image 198.51.100.53']);
  });

  it('image lineage: host:port/repo:tag matches although the container plugin drops the tag', async () => {
    const { alerts } = await run([
      cli(T, 'docker build -t registry.example:5000/team/app:2 .', 100),
      ctrEgress(T + MIN, 'cccccccccccc', '198.51.100.46', { 'container.image.repository': 'registry.example:5000/team/app', 'container.image.tag': null }),
      ctrEgress(T + MIN, 'dddddddddddd', '198.51.100.47', { 'container.image.repository': 'registry.example:5000/team/other', 'container.image.tag': null }),
    ]);
    assert.deepEqual(brief(alerts), ['high image 198.51.100.46']);
  });

  it('classic builder without image metadata: a `sh -c` container started during a classic build is its step; `docker run` and BuildKit builds are not', async () => {
    const classicStep = (t: number, ctr: string, ip: string): FalcoEvent =>
      ctrEgress(t, ctr, ip, {}, {
        'proc.name': 'exe', 'proc.pname': 'sh', 'proc.pcmdline': `sh -c wget -q -O /tmp/x http://${ip}:8080/ ; echo a3`,
        'proc.aname[2]': 'containerd-shim', 'container.image.repository': null, 'container.image.tag': null,
      });
    const { alerts } = await run([
      cli(T, 'docker build --no-cache -t rc:1 .', 100, { 'proc.pcmdline': 'sh -c DOCKER_BUILDKIT=0 /usr/bin/docker build --no-cache -t rc:1 .' }),
      classicStep(T + 400, 'eeeeeeeeeeee', '198.51.100.99'),
      ctrEgress(T + 6_000, 'ffffffffffff', '198.51.100.98', {}), // docker run … wget
    ]);
    assert.deepEqual(brief(alerts), ['high lineage 198.51.100.99']);
    const buildkit = await run([
      cli(T, 'docker build -t rb:1 .', 100, { 'proc.pcmdline': 'sh -c DOCKER_BUILDKIT=1 /usr/bin/docker build -t rb:1 .' }),
      classicStep(T + 400, 'eeeeeeeeeeee', '198.51.100.97'),
    ]);
    assert.deepEqual(brief(buildkit.alerts), [], 'a BuildKit build has no step containers');
  });

  it('a dockerd or containerd descendant outside a step runtime is not a build step', () => {
    const sig = (f: Fields) => classifyEgress(ev(T, 'r', EGRESS, { 'fd.sip': '198.51.100.50', ...f }), HOST)!;
    assert.equal(sig({ 'proc.name': 'docker-proxy', 'proc.pname': 'dockerd' }).step, null);
    assert.equal(sig({ 'proc.name': 'curl', 'proc.pname': 'containerd-shim', 'proc.aname[2]': 'containerd' }).step, null);
    // runc under containerd's shim (a normal container still starting) is not a build either.
    assert.equal(sig({ 'proc.name': 'curl', 'proc.pname': 'runc', 'proc.aname[2]': 'containerd-shim', 'proc.aname[3]': 'containerd' }).step, null);
    assert.equal(sig({ 'proc.name': 'curl', 'proc.pname': 'runc', 'proc.aname[2]': 'dockerd' }).step, 'runtime');
  });

  it('allow_domains: an allow-listed name neither alerts nor teaches the set', async () => {
    const id = 'domainb0ild5x9q2w4e7r1t3y';
    const { alerts } = await run(
      [
        cli(T, 'docker build -t d:1 .', 100),
        bkStep(T + 1_000, id, 200),
        bkEgress(T + 2_000, id, 201, '198.51.100.51', { 'fd.sip.name': 'cdn.example.org' }),
        bkEgress(T + 3_000, id, 202, '198.51.100.51', { 'fd.sip.name': null }),
      ],
      { allowDomains: ['example.org'] },
    );
    assert.deepEqual(brief(alerts), ['high lineage 198.51.100.51'], 'the second connection, without the name, is new');
  });

  it('the known-IP cache is bounded by known_ip_cache_size: the oldest entry goes to the store again', async () => {
    const cfg = testConfig({ knownIpCacheSize: 2 });
    const c = new Correlator(cfg, { stores: memoryStores(cfg), sink: new CollectingSink(), metrics: new Metrics(), logger: silentLogger() });
    try {
      const e = (ip: string) => ctrEgress(T, 'aaaaaaaaaaaa', ip, {});
      for (const ip of ['198.51.100.61', '198.51.100.62', '198.51.100.63']) {
        await c.handle(e(ip));
        await c.flush();
      }
      await c.handle(e('198.51.100.63'));
      assert.equal(c.backlog, 0, 'a cached IP is decided at once');
      await c.handle(e('198.51.100.61'));
      assert.equal(c.backlog, 1, 'an evicted IP waits for the store');
      await c.flush();
    } finally {
      await c.close();
    }
  });
});

describe('session table edges', () => {
  const W = 15 * MIN;
  const SKEW = 30_000;
  const table = () => new SessionTable({ buildWindowMs: W, clockSkewMs: SKEW, maxSessions: 10 });
  const build = (t: number, f: Fields) => classifyBuild(ev(t, 'r', BUILD, { 'container.id': 'host', ...f }), HOST);

  it('an earlier signal arriving late moves the session start back', () => {
    const t = table();
    const s = t.applyBuild(build(T + 10_000, { 'proc.name': 'docker', 'proc.pid': '100', 'proc.cmdline': 'docker build .' }))!;
    t.applyBuild(build(T, { 'proc.name': 'docker-buildx', 'proc.pid': '101', 'proc.ppid': '100' }));
    assert.equal(s.startedAt, T);
    assert.equal(s.lastActivity, T + 10_000);
  });

  it('prunes a session only one more window (plus skew) past its window: the grace for undecided egress', () => {
    const t = table();
    t.applyBuild(build(T, { 'proc.name': 'docker', 'proc.pid': '100' }));
    const horizon = T + 2 * W + SKEW;
    t.applyBuild(build(horizon, { 'proc.name': 'podman', 'proc.pid': '200' }));
    assert.equal(t.size, 2, 'at the horizon it is kept');
    t.applyBuild(build(horizon + 1, { 'proc.name': 'podman', 'proc.pid': '300' }));
    assert.equal(t.size, 2, 'one past it, the first is gone (two podman builds remain)');
    assert.deepEqual(t.takeDirty()[0]?.remove.length, 1);
  });

  it('an expected build stays expected for the steps that join it', () => {
    const t = table();
    const expected = classifyBuild(
      ev(T, 'T1612 Expected Build Activity', [...BUILD, 't1612_expected'], { 'proc.name': 'docker', 'proc.pid': '100', 'proc.pname': 'gitlab-runner', 'container.id': 'host' }),
      HOST,
    );
    const s = t.applyBuild(expected)!;
    const step = t.applyBuild(build(T + 1_000, { 'proc.name': 'sh', 'proc.pname': 'runc', 'proc.aname[2]': 'dockerd', 'thread.cgroups': 'cpu=/docker/buildkit/cib0ild5x9q2w4e7r1t3y0000' }));
    assert.equal(step?.id, s.id);
    assert.equal(step?.expected, true);
    assert.equal(severityOf(s, 'lineage'), 'high', 'severity is unchanged; the correlator keeps it silent');
  });
});

describe('orphan pool index', () => {
  it('a session looks only at the orphans its keys (or any session) could explain', () => {
    const pool = new OrphanPool(30_000);
    const orphan = (f: Fields) => ({
      sig: classifyEgress(ev(T, 'r', EGRESS, { 'fd.sip': '198.51.100.70', ...f }), HOST)!,
      firstSeenAt: T, token: 't', t0: 0, addedAt: T,
    });
    const byPid = orphan({ 'proc.name': 'curl', 'proc.pid': '501', 'proc.ppid': '100' });
    const byImage = orphan({ 'proc.name': 'curl', 'proc.pid': '502', 'proc.pname': 'containerd-shim', 'container.id': 'aaaaaaaaaaaa', 'container.image.repository': 'team/app', 'container.image.tag': '1' });
    const unrelated = orphan({ 'proc.name': 'curl', 'proc.pid': '503', 'proc.ppid': '400' });
    const step = orphan({ 'proc.name': 'exe', 'proc.pid': '504', 'thread.cgroups': 'cpu=/docker/buildkit/orphanb0ild5x9q2w4e7r1t3' });
    for (const o of [byPid, byImage, unrelated, step]) pool.keep(o, T);
    const t = new SessionTable({ buildWindowMs: 15 * MIN, clockSkewMs: 30_000, maxSessions: 10 });
    const s = t.applyBuild(classifyBuild(ev(T, 'r', BUILD, { 'proc.name': 'docker', 'proc.pid': '100', 'proc.cmdline': 'docker build -t team/app:1 .', 'container.id': 'host' }), HOST))!;
    const seen: number[] = [];
    const taken = pool.take(HOST, T, sessionKeys(s), (o) => {
      seen.push(o.sig.proc.pid ?? 0);
      return o.sig.proc.pid === 501 ? 'x' : null;
    });
    assert.deepEqual(seen.sort(), [501, 502, 504], 'the unrelated orphan is never looked at');
    assert.deepEqual(taken.map((x) => x.orphan.sig.proc.pid), [501]);
    assert.equal(pool.size, 3);
    assert.equal(pool.take(HOST, T, null, () => null).length, 0);
    assert.equal(pool.take(HOST, T + 30_001, null, () => 'x').length, 0, 'expired after the skew');
    assert.equal(pool.size, 0);
  });
});
