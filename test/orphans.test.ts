// The orphan pool: new, unattributed egress kept for a clock-skew's time so a late build
// signal can still explain it. Which orphans a session is shown (by pid, cgroup, container,
// image repository, or all of them), the per-host and total bounds, and expiry.
import assert from 'node:assert/strict';
import type { EgressSignal } from '../src/detect/classify.js';
import { OrphanPool, sessionKeys, type Orphan } from '../src/detect/orphans.js';
import { SIGNAL_TIME_MS, egressSignal, sessionRecord } from './support/records.js';

const KEEP = 30_000;
const T = SIGNAL_TIME_MS;

const sig = egressSignal;

function orphan(s: EgressSignal, addedAt = T, token = 't'): Orphan {
  return { sig: s, firstSeenAt: T, token, t0: 0, addedAt };
}

/** The IPs of the orphans `take` hands out for `keys` (every candidate accepted). */
function takeAll(pool: OrphanPool, keys: readonly string[] | null, host = 'node-a', now = T): string[] {
  return pool.take(host, now, keys, (o) => o.sig.ip).map((x) => x.match).sort();
}

describe('orphan pool: which orphans a build signal is shown', () => {
  it('finds an orphan by its pid or any ancestor pid, not by an unrelated pid', () => {
    for (const [keys, found] of [
      [['p:100'], true],
      [['p:7'], true],
      [['p:8'], true],
      [['p:9'], false],
    ] as const) {
      const pool = new OrphanPool(KEEP);
      pool.keep(orphan(sig({}, { pid: 100, ancestorPids: [7, 8] })), T);
      assert.deepEqual(takeAll(pool, keys), found ? ['203.0.113.1'] : [], keys.join());
      assert.equal(pool.size, found ? 0 : 1);
    }
  });

  it('matches cgroups by kind and the first three id characters', () => {
    for (const [key, found] of [
      ['c:buildkit:abc', true],
      ['c:buildkit:abd', false],
      ['c:buildah:abc', false],
    ] as const) {
      const pool = new OrphanPool(KEEP);
      pool.keep(orphan(sig({ cgroups: ['buildkit:abcdef0123'] })), T);
      assert.deepEqual(takeAll(pool, [key]), found ? ['203.0.113.1'] : [], key);
    }
    // The same through a session's own keys: a session whose cgroup id shares the short prefix.
    const pool = new OrphanPool(KEEP);
    pool.keep(orphan(sig({ cgroups: ['buildkit:abcdef0123'] })), T);
    const other = sessionRecord({ host: 'node-a', startedAt: T, cgroups: ['buildkit:abzzzz'] });
    assert.deepEqual(takeAll(pool, sessionKeys(other)), []);
    const same = sessionRecord({ host: 'node-a', startedAt: T, cgroups: ['buildkit:abc999'] });
    assert.deepEqual(takeAll(pool, sessionKeys(same)), ['203.0.113.1']);
  });

  it('indexes a cgroup key without an id the way a session does', () => {
    const pool = new OrphanPool(KEEP);
    pool.keep(orphan(sig({ cgroups: ['plain'] })), T);
    const s = sessionRecord({ host: 'node-a', startedAt: T, cgroups: ['plain:'] });
    assert.deepEqual(sessionKeys(s), ['c:plain:']);
    assert.deepEqual(takeAll(pool, sessionKeys(s)), ['203.0.113.1']);
  });

  it('finds an orphan by its container and by its image repository (any tag)', () => {
    const pool = new OrphanPool(KEEP);
    pool.keep(orphan(sig({ ip: '203.0.113.2', containerId: 'abcdefabcdef' })), T);
    pool.keep(orphan(sig({ ip: '203.0.113.3', imageRef: 'registry.example.com:5000/team/app:1.2' })), T);
    pool.keep(orphan(sig({ ip: '203.0.113.4', imageRef: 'docker.io/library/web:1' })), T);
    assert.deepEqual(takeAll(pool, ['k:ffffffffffff', 'i:registry.example.com']), []);
    assert.deepEqual(takeAll(pool, ['k:abcdefabcdef']), ['203.0.113.2']);
    const s = sessionRecord({ host: 'node-a', startedAt: T, imageRefs: ['registry.example.com:5000/team/app:2.0'] });
    assert.deepEqual(takeAll(pool, sessionKeys(s)), ['203.0.113.3']);
    assert.equal(pool.size, 1);
  });

  it('a session is found by its pids, cgroups, containers and every alias of its images', () => {
    const s = sessionRecord({
      host: 'node-a',
      startedAt: T,
      pids: [10, 11],
      cgroups: ['buildkit:x5hqabc'],
      containers: ['abcdefabcdef'],
      imageRefs: ['docker.io/library/app:1', 'registry.example.com:5000/x:2'],
    });
    assert.deepEqual(sessionKeys(s), [
      'p:10',
      'p:11',
      'c:buildkit:x5h',
      'k:abcdefabcdef',
      'i:docker.io/library/app',
      'i:localhost/app',
      'i:registry.example.com:5000/x',
    ]);
    // A podman-built image reported as localhost/app is found through the alias.
    const pool = new OrphanPool(KEEP);
    pool.keep(orphan(sig({ imageRef: 'localhost/app:1' })), T);
    assert.deepEqual(takeAll(pool, sessionKeys(s)), ['203.0.113.1']);
  });

  it('an orphan any session could take (build step proof, classic candidate, builder\'s own) is always shown', () => {
    const wild: [string, Partial<EgressSignal>][] = [
      ['203.0.113.11', { step: 'cgroup' }],
      ['203.0.113.12', { classicCandidate: true }],
      ['203.0.113.13', { builderOwn: true }],
    ];
    const pool = new OrphanPool(KEEP);
    // Each also carries a pid, which would otherwise be its only way to be found.
    for (const [ip, over] of wild) pool.keep(orphan(sig({ ip, ...over }, { pid: 55 })), T);
    pool.keep(orphan(sig({ ip: '203.0.113.14' }, { pid: 55 })), T);
    assert.deepEqual(takeAll(pool, ['p:1']), ['203.0.113.11', '203.0.113.12', '203.0.113.13']);
    assert.deepEqual(takeAll(pool, ['p:55']), ['203.0.113.14']);
    assert.equal(pool.size, 0);
  });

  it('without keys (window-only, sessions loaded from the store) every orphan on the host is shown', () => {
    const pool = new OrphanPool(KEEP);
    pool.keep(orphan(sig({ ip: '203.0.113.21' }, { pid: 1 })), T);
    pool.keep(orphan(sig({ ip: '203.0.113.22', containerId: 'abcdefabcdef' })), T);
    pool.keep(orphan(sig({ ip: '203.0.113.23', host: 'node-b' })), T);
    assert.deepEqual(takeAll(pool, null), ['203.0.113.21', '203.0.113.22']);
    assert.deepEqual(takeAll(pool, null, 'node-c'), []);
    assert.deepEqual(takeAll(pool, null, 'node-b'), ['203.0.113.23']);
  });

  it('keeps the orphans match declines, still indexed, and hands out only the accepted ones', () => {
    const pool = new OrphanPool(KEEP);
    pool.keep(orphan(sig({ ip: '203.0.113.31' }, { pid: 5 })), T);
    pool.keep(orphan(sig({ ip: '203.0.113.32' }, { pid: 5 })), T);
    pool.keep(orphan(sig({ ip: '203.0.113.33', step: 'runtime' })), T);
    const seen: string[] = [];
    const got = pool.take('node-a', T, ['p:5'], (o) => {
      seen.push(o.sig.ip);
      return o.sig.ip === '203.0.113.32' ? 'yes' : null;
    });
    assert.deepEqual(seen.sort(), ['203.0.113.31', '203.0.113.32', '203.0.113.33']);
    assert.deepEqual(
      got.map((x) => [x.orphan.sig.ip, x.match]),
      [['203.0.113.32', 'yes']],
    );
    assert.equal(pool.size, 2);
    // What was declined is still found by its keys, and the wild one by any.
    assert.deepEqual(takeAll(pool, ['p:5']), ['203.0.113.31', '203.0.113.33']);
    assert.equal(pool.size, 0);
    assert.deepEqual(takeAll(pool, null), []);
  });

  it('a declined take changes nothing', () => {
    const pool = new OrphanPool(KEEP);
    pool.keep(orphan(sig({}, { pid: 5 })), T);
    assert.deepEqual(pool.take('node-a', T, ['p:5'], () => null), []);
    assert.equal(pool.size, 1);
    assert.deepEqual(takeAll(pool, ['p:5']), ['203.0.113.1']);
  });
});

describe('orphan pool: bounds and expiry', () => {
  it('keeps at most 128 orphans per host; other hosts still have room', () => {
    const pool = new OrphanPool(KEEP);
    for (let i = 0; i < 130; i++) pool.keep(orphan(sig({ ip: `198.18.0.${i}` })), T);
    assert.equal(pool.size, 128);
    pool.keep(orphan(sig({ ip: '198.18.1.1', host: 'node-b' })), T);
    assert.equal(pool.size, 129);
    const taken = takeAll(pool, null);
    assert.equal(taken.length, 128);
    assert.ok(!taken.includes('198.18.0.128') && !taken.includes('198.18.0.129'), 'the latest ones did not fit');
    // Room again once taken.
    pool.keep(orphan(sig({ ip: '198.18.0.200' })), T);
    assert.deepEqual(takeAll(pool, null), ['198.18.0.200']);
  });

  it('keeps at most 1024 orphans in total', () => {
    const pool = new OrphanPool(KEEP);
    for (let h = 0; h < 9; h++) for (let i = 0; i < 120; i++) pool.keep(orphan(sig({ ip: `198.18.${h}.${i}`, host: `node-${h}` })), T);
    assert.equal(pool.size, 1024);
    assert.equal(takeAll(pool, null, 'node-8').length, 1024 - 8 * 120);
    assert.equal(pool.size, 8 * 120);
  });

  it('an orphan lives for the keep time after it was kept, then is gone', () => {
    for (const [now, alive] of [
      [T + KEEP - 1, true],
      [T + KEEP, true],
      [T + KEEP + 1, false],
    ] as const) {
      const pool = new OrphanPool(KEEP);
      pool.keep(orphan(sig({ ip: '203.0.113.41' }, { pid: 3 }), T), T);
      pool.keep(orphan(sig({ ip: '203.0.113.42' }, { pid: 3 }), T + KEEP), T + KEEP);
      assert.deepEqual(takeAll(pool, ['p:3'], 'node-a', now), alive ? ['203.0.113.41', '203.0.113.42'] : ['203.0.113.42'], `now = T + ${now - T}`);
      assert.equal(pool.size, 0);
    }
  });

  it('when some orphans of a host expire, one kept exactly the keep time ago stays', async () => {
    const pool = new OrphanPool(KEEP);
    pool.keep(orphan(sig({ ip: '203.0.113.43' }, { pid: 3 }), T), T);
    pool.keep(orphan(sig({ ip: '203.0.113.44' }, { pid: 3 }), T + 1), T + 1);
    assert.deepEqual(takeAll(pool, ['p:3'], 'node-a', T + KEEP + 1), ['203.0.113.44']);
  });

  it('expired orphans leave the count when anything is kept or taken, on every host', () => {
    const pool = new OrphanPool(KEEP);
    pool.keep(orphan(sig({ ip: '203.0.113.51' }), T), T);
    pool.keep(orphan(sig({ ip: '203.0.113.52', host: 'node-b' }), T), T);
    pool.keep(orphan(sig({ ip: '203.0.113.53', host: 'node-b' }), T + KEEP), T + KEEP);
    assert.equal(pool.size, 3);
    pool.keep(orphan(sig({ ip: '203.0.113.54', host: 'node-c' }), T + KEEP + 1), T + KEEP + 1);
    assert.equal(pool.size, 2);
    assert.deepEqual(takeAll(pool, null, 'node-b', T + KEEP + 1), ['203.0.113.53']);
    // A take on a host with no orphans touches nothing; one on a known host expires them all.
    assert.deepEqual(takeAll(pool, null, 'node-z', T + 10 * KEEP), []);
    assert.equal(pool.size, 1);
    assert.deepEqual(takeAll(pool, null, 'node-c', T + 10 * KEEP), []);
    assert.equal(pool.size, 0);
  });

  it('a full host frees its room as its orphans expire', () => {
    const pool = new OrphanPool(KEEP);
    for (let i = 0; i < 128; i++) pool.keep(orphan(sig({ ip: `198.18.0.${i}` }), T), T);
    pool.keep(orphan(sig({ ip: '198.18.9.9' }), T + KEEP + 1), T + KEEP + 1);
    assert.equal(pool.size, 1);
    assert.deepEqual(takeAll(pool, null, 'node-a', T + KEEP + 1), ['198.18.9.9']);
  });

  it('orphans that stay after a take keep their index and still expire', () => {
    const pool = new OrphanPool(KEEP);
    pool.keep(orphan(sig({ ip: '203.0.113.61', containerId: 'aaaaaaaaaaaa' }), T), T);
    pool.keep(orphan(sig({ ip: '203.0.113.62', containerId: 'bbbbbbbbbbbb' }), T + 10), T + 10);
    assert.deepEqual(takeAll(pool, ['k:bbbbbbbbbbbb']), ['203.0.113.62']);
    assert.deepEqual(takeAll(pool, ['k:bbbbbbbbbbbb']), []);
    assert.deepEqual(takeAll(pool, ['k:aaaaaaaaaaaa'], 'node-a', T + KEEP + 1), []);
    assert.equal(pool.size, 0);
  });
});
