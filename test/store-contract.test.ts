// The stores' contract beyond the happy path, memory and Redis alike: where the learning period
// ends, what maintenance leaves behind (nothing), how long dedupe keys and stored sessions
// live, and the bounds of the in-memory stores.
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { createStores, type Stores } from '../src/store/stores.js';
import type { DecideItem, DecideOptions } from '../src/store/first-seen.js';
import { MemoryFirstSeenStore } from '../src/store/memory/first-seen.js';
import { MemoryBuildSessionStore } from '../src/store/memory/build-sessions.js';
import { envKeys } from '../src/store/redis/keys.js';
import type { SessionRecord } from '../src/model/session.js';
import { sessionRecord } from './support/records.js';
import { TestRedis, freePort } from './support/redis.js';
import { testConfig } from './support/scenarios.js';
import { waitFor } from './support/wait.js';

const DAY = 86_400_000;
const HOUR = 3_600_000;
const RETENTION = 30 * DAY;
const T0 = Date.UTC(2026, 2, 2);

function opts(nowMs: number, extra: Partial<DecideOptions> = {}): DecideOptions {
  return { nowMs, retentionMs: RETENTION, learningPeriodMs: 0, learningStartCandidate: nowMs, claimTtlMs: 60_000, ...extra };
}

function item(ip: string, eventTimeMs: number, token: string, claim: string | null = null): DecideItem {
  return { ip, eventTimeMs, token, claim };
}

function record(id: string, host: string, t: number, extra: Partial<SessionRecord> = {}): SessionRecord {
  const trigger = { rule: 'r', proc_name: 'docker', cmdline: 'docker build .', user: 'root', container_id: null, remote_peer: null };
  return sessionRecord({ id, host, startedAt: t, trigger, pids: [100], engine: 'docker', localClient: true, ...extra });
}

for (const kind of ['memory', 'redis'] as const) {
  describe(`store contract (${kind})`, () => {
    let redis: TestRedis | undefined;
    let stores: Stores;
    let env: string;
    let prefix: string;
    let raw: Redis | undefined;

    before(async () => {
      if (kind === 'redis') {
        redis = await TestRedis.start();
        raw = new Redis(redis.url);
      }
    });
    after(async () => {
      raw?.disconnect();
      await redis?.close();
    });
    beforeEach(async () => {
      env = `env-${Math.random().toString(36).slice(2, 8)}`;
      prefix = TestRedis.prefix();
      const cfg = testConfig(redis ? { redisUrl: redis.url, redisPrefix: prefix } : {});
      stores = await createStores(cfg, { logger: silentLogger(), metrics: new Metrics() });
    });
    afterEach(async () => {
      await stores.close();
    });

    it('the learning period covers [start, start + period): its last millisecond learns, its end alerts', async () => {
      const o = opts(T0, { learningPeriodMs: HOUR, learningStartCandidate: T0 });
      const r = await stores.firstSeen.decide(
        env,
        [
          item('203.0.113.1', T0 + HOUR - 1, 'a', 's'),
          item('203.0.113.2', T0 + HOUR, 'b', 's'),
          item('203.0.113.3', T0 - 1, 'c', 's'),
        ],
        o,
      );
      assert.equal(r.learningStart, T0);
      assert.deepEqual(
        r.results.map((x) => [x.isNew, x.learning, x.claimed]),
        [
          [true, true, false],
          [true, false, true],
          // Stamped before the recorded start (clock skew between hosts): still learning.
          [true, true, false],
        ],
      );
    });

    it('no learning period: nothing learns and no start is recorded', async () => {
      const r = await stores.firstSeen.decide(env, [item('203.0.113.4', T0, 'a', 's')], opts(T0));
      assert.equal(r.learningStart, null);
      assert.deepEqual(r.results[0], { isNew: true, firstSeenAt: T0, learning: false, claimed: true });
      // A later call with a period set records its own start then (the first recorded event).
      const later = await stores.firstSeen.decide(
        env,
        [item('203.0.113.5', T0 + DAY, 'b', 's')],
        opts(T0 + DAY, { learningPeriodMs: HOUR, learningStartCandidate: T0 + DAY }),
      );
      assert.equal(later.learningStart, T0 + DAY);
      assert.equal(later.results[0]?.learning, true);
    });

    it('an empty batch answers nothing', async () => {
      const r = await stores.firstSeen.decide(env, [], opts(T0, { learningPeriodMs: HOUR }));
      assert.deepEqual(r.results, []);
    });

    it('a known IP is not new even with a token, and claims nothing; a last-seen refresh keeps first-seen', async () => {
      await stores.firstSeen.decide(env, [item('203.0.113.7', T0, 'first', null)], opts(T0));
      const again = await stores.firstSeen.decide(env, [item('203.0.113.7', T0 + DAY, 'second', 's')], opts(T0 + DAY));
      assert.deepEqual(again.results[0], { isNew: false, firstSeenAt: T0, learning: false, claimed: false });
      // An empty token is a refresh: never "new" by token match.
      const refresh = await stores.firstSeen.decide(env, [item('203.0.113.7', T0 + 2 * DAY, '', null)], opts(T0 + 2 * DAY));
      assert.equal(refresh.results[0]?.isNew, false);
      // The refreshes moved last-seen: still known 29 days after the last one, 31 days after the first.
      const late = await stores.firstSeen.decide(env, [item('203.0.113.7', T0 + 31 * DAY, 'x', null)], opts(T0 + 31 * DAY));
      assert.equal(late.results[0]?.isNew, false);
      assert.equal(late.results[0]?.firstSeenAt, T0);
    });

    it('retention: last seen within the retention is known, past it new (Redis keeps last-seen to the minute)', async () => {
      const MIN = 60_000;
      await stores.firstSeen.decide(env, [item('203.0.113.8', T0, 'a'), item('203.0.113.9', T0, 'b')], opts(T0));
      const inside = await stores.firstSeen.decide(env, [item('203.0.113.8', T0 + RETENTION - MIN, 'c')], opts(T0 + RETENTION - MIN));
      assert.equal(inside.results[0]?.isNew, false);
      const past = await stores.firstSeen.decide(env, [item('203.0.113.9', T0 + RETENTION + 2 * MIN, 'd')], opts(T0 + RETENTION + 2 * MIN));
      assert.deepEqual(past.results[0], { isNew: true, firstSeenAt: T0 + RETENTION + 2 * MIN, learning: false, claimed: false });
      assert.equal(await stores.firstSeen.maintain(env, T0 + RETENTION - MIN, RETENTION), 2, 'maintenance keeps both inside the retention');
    });

    it('maintain() keeps IPs seen since the cutoff, in any order they were seen', async () => {
      // Seen at day 0, 10, 5: maintenance at day 34 (cutoff day 4) keeps the last two.
      await stores.firstSeen.decide(env, [item('198.51.100.1', T0, 'a')], opts(T0));
      await stores.firstSeen.decide(env, [item('198.51.100.2', T0 + 10 * DAY, 'b')], opts(T0 + 10 * DAY));
      await stores.firstSeen.decide(env, [item('198.51.100.3', T0 + 5 * DAY, 'c')], opts(T0 + 5 * DAY));
      assert.equal(await stores.firstSeen.maintain(env, T0 + 34 * DAY, RETENTION), 2);
      const r = await stores.firstSeen.decide(
        env,
        ['198.51.100.1', '198.51.100.2', '198.51.100.3'].map((ip) => item(ip, T0 + 34 * DAY, 'z')),
        opts(T0 + 34 * DAY),
      );
      assert.deepEqual(
        r.results.map((x) => x.isNew),
        [true, false, false],
      );
    });

    it('maintain() drops every stale IP however many there are, and keeps the fresh ones', async () => {
      const stale = Array.from({ length: 2_500 }, (_, i) => item(`10.${(i >> 8) & 255}.${i & 255}.1`, T0, `t${i}`));
      await stores.firstSeen.decide(env, stale, opts(T0));
      await stores.firstSeen.decide(env, [item('203.0.113.99', T0 + 20 * DAY, 'f')], opts(T0 + 20 * DAY));
      assert.equal(await stores.firstSeen.maintain(env, T0 + 40 * DAY, RETENTION), 1);
      // The dropped IPs are new again, with a new first-seen.
      const back = await stores.firstSeen.decide(env, [item(stale[0]?.ip ?? '', T0 + 40 * DAY, 'n')], opts(T0 + 40 * DAY));
      assert.deepEqual(back.results[0], { isNew: true, firstSeenAt: T0 + 40 * DAY, learning: false, claimed: false });
    });

    it('a dedupe key lives for its TTL, then the (session, IP) can be claimed again', async () => {
      assert.equal(await stores.firstSeen.claim(env, 's1', '203.0.113.20', 'a', 1_000), true);
      assert.equal(await stores.firstSeen.claim(env, 's1', '203.0.113.20', 'b', 1_000), false);
      assert.equal(await stores.firstSeen.claim(env, 's1', '203.0.113.20', '', 1_000), false, 'an empty token never matches');
      await waitFor('the dedupe key to expire', async () => stores.firstSeen.claim(env, 's1', '203.0.113.20', 'b', 60_000));
      assert.equal(await stores.firstSeen.claim(env, 's1', '203.0.113.20', 'c', 60_000), false);
    });

    it('decide() claims with the given TTL; an expired claim of a re-decided IP is claimed again', async () => {
      const r = await stores.firstSeen.decide(env, [item('203.0.113.21', T0, 'tok', 's9')], opts(T0, { claimTtlMs: 1_000 }));
      assert.equal(r.results[0]?.claimed, true);
      assert.equal(await stores.firstSeen.claim(env, 's9', '203.0.113.21', 'other', 60_000), false);
      // The same decision retried gets its claim back.
      const retry = await stores.firstSeen.decide(env, [item('203.0.113.21', T0, 'tok', 's9')], opts(T0, { claimTtlMs: 1_000 }));
      assert.equal(retry.results[0]?.claimed, true);
      await waitFor('the claim to expire', async () => stores.firstSeen.claim(env, 's9', '203.0.113.21', 'later', 60_000));
    });

    if (kind === 'redis') {
      it('the learning-start key expires after retention + learning period, refreshed by every decision', async () => {
        const k = envKeys(prefix, env);
        await stores.firstSeen.decide(env, [item('203.0.113.30', T0, 'a')], opts(T0, { retentionMs: 10_000, learningPeriodMs: 5_000 }));
        const ttl = await raw!.pttl(k.learning);
        assert.ok(ttl > 10_000 && ttl <= 15_000, `PTTL ${ttl}`);
        assert.equal(await raw!.get(k.learning), String(T0));
        await raw!.pexpire(k.learning, 1_000);
        await stores.firstSeen.decide(env, [item('203.0.113.31', T0, 'b')], opts(T0, { retentionMs: 10_000, learningPeriodMs: 5_000 }));
        assert.ok((await raw!.pttl(k.learning)) > 10_000, 'refreshed');
      });

      it('decisions without a claim write no dedupe key', async () => {
        await stores.firstSeen.decide(env, [item('203.0.113.32', T0, 'a', null)], opts(T0));
        assert.deepEqual(await raw!.keys(`{${prefix}:${env}:ip:*:alerted:*`), []);
      });

      it('redisUp() follows the connection; close() is idempotent', async () => {
        assert.equal(stores.redisUp(), true);
        await Promise.all([stores.close(), stores.close()]);
        await waitFor('the client to close', () => !stores.redisUp());
        await stores.close();
      });

      it('an unreachable Redis at start-up: stores are created, not up, and decisions fail fast', async () => {
        const port = await freePort();
        const down = await createStores(testConfig({ redisUrl: `redis://127.0.0.1:${port}`, redisPrefix: prefix }), {
          logger: silentLogger(),
          metrics: new Metrics(),
        });
        try {
          assert.equal(down.kind, 'redis');
          assert.equal(down.redisUp(), false);
          await assert.rejects(down.firstSeen.decide(env, [item('203.0.113.33', T0, 'a')], opts(T0)));
        } finally {
          await down.close();
        }
      });
    } else {
      it('memory stores are always up', () => {
        assert.equal(stores.kind, 'memory');
        assert.equal(stores.redisUp(), true);
      });
    }

    it('build sessions: write, merge fields per host, remove, remote accept, load only what exists', async () => {
      const a = record('a', 'h1', T0);
      const b = record('b', 'h1', T0 + 1, { images: ['app:1'] });
      await stores.sessions.write(env, [{ host: 'h1', upsert: [a], remove: [] }], 60_000);
      await stores.sessions.write(
        env,
        [
          { host: 'h1', upsert: [b], remove: [], remote: { peer: '198.51.100.7:4000', timeMs: T0 } },
          { host: 'h2', upsert: [], remove: [], remote: { peer: '198.51.100.8:4000', timeMs: T0 + 5 } },
        ],
        60_000,
      );
      let got = await stores.sessions.load(env, ['h1', 'h2', 'h3']);
      assert.deepEqual([...got.keys()].sort(), ['h1', 'h2']);
      assert.deepEqual(got.get('h1')?.sessions.map((s) => s.id).sort(), ['a', 'b']);
      assert.deepEqual(got.get('h1')?.sessions.find((s) => s.id === 'b'), b);
      assert.equal(got.get('h1')?.remote?.peer, '198.51.100.7:4000');
      assert.equal(got.get('h1')?.remote?.timeMs, T0);
      assert.deepEqual(got.get('h2')?.sessions, []);
      assert.equal(got.get('h2')?.remote?.peer, '198.51.100.8:4000');
      await stores.sessions.write(env, [{ host: 'h1', upsert: [], remove: ['a'] }], 60_000);
      got = await stores.sessions.load(env, ['h1']);
      assert.deepEqual(got.get('h1')?.sessions.map((s) => s.id), ['b']);
      assert.equal(got.get('h1')?.remote?.peer, '198.51.100.7:4000', 'a write without a remote keeps the stored one');
      await stores.sessions.write(env, [{ host: 'h1', upsert: [], remove: ['b'] }], 60_000);
      got = await stores.sessions.load(env, ['h1']);
      assert.deepEqual(got.get('h1')?.sessions, []);
      assert.deepEqual(await stores.sessions.load(`${env}-other`, ['h1']), new Map(), 'environments are apart');
      assert.deepEqual(await stores.sessions.load(env, []), new Map());
      await stores.sessions.write(env, [], 60_000);
    });

    it('build sessions expire a TTL after the host\'s last write', async () => {
      await stores.sessions.write(env, [{ host: 'h1', upsert: [record('a', 'h1', T0)], remove: [] }], 1_000);
      if (raw) {
        const ttl = await raw.pttl(envKeys(prefix, env).sessions('h1'));
        assert.ok(ttl > 0 && ttl <= 1_000, `PTTL ${ttl}`);
      }
      assert.equal((await stores.sessions.load(env, ['h1'])).size, 1);
      await waitFor('the host\'s sessions to expire', async () => (await stores.sessions.load(env, ['h1'])).size === 0);
      // A write after expiry starts afresh (the expired sessions do not come back).
      await stores.sessions.write(env, [{ host: 'h1', upsert: [record('c', 'h1', T0)], remove: [] }], 60_000);
      const got = await stores.sessions.load(env, ['h1']);
      assert.deepEqual(got.get('h1')?.sessions.map((s) => s.id), ['c']);
    });
  });
}

describe('in-memory store bounds', () => {
  it('the first-seen set holds at most maxIps, dropping the least recently seen (they are new again)', async () => {
    const s = new MemoryFirstSeenStore(3);
    const o = opts(T0);
    for (const ip of ['10.0.0.1', '10.0.0.2', '10.0.0.3']) await s.decide('e', [item(ip, T0, ip)], o);
    // Seeing .1 again makes .2 the least recently seen.
    assert.equal((await s.decide('e', [item('10.0.0.1', T0, 'again')], opts(T0 + 1))).results[0]?.isNew, false);
    await s.decide('e', [item('10.0.0.4', T0, 'x')], opts(T0 + 2));
    assert.equal(await s.maintain('e', T0 + 2, RETENTION), 3);
    const r = await s.decide('e', ['10.0.0.1', '10.0.0.3', '10.0.0.4', '10.0.0.2'].map((ip) => item(ip, T0, 'q')), opts(T0 + 3));
    assert.deepEqual(
      r.results.map((x) => x.isNew),
      [false, false, false, true],
    );
  });

  it('maintain() stops at the first fresh IP: refreshed IPs move behind the stale ones', async () => {
    const s = new MemoryFirstSeenStore(100);
    await s.decide('e', [item('10.0.0.1', T0, 'a'), item('10.0.0.2', T0, 'b')], opts(T0));
    await s.decide('e', [item('10.0.0.1', T0, 'c')], opts(T0 + 10 * DAY));
    // .2 (stale) is first in line now; .1 fresh.
    assert.equal(await s.maintain('e', T0 + 35 * DAY, RETENTION), 1);
    assert.equal(await s.maintain('e', T0 + 41 * DAY, RETENTION), 0);
  });

  it('an IP past the retention seen again is new and moves behind the fresh ones (maintenance order)', async () => {
    const s = new MemoryFirstSeenStore(100);
    await s.decide('e', [item('10.0.0.1', T0, 'a')], opts(T0));
    await s.decide('e', [item('10.0.0.2', T0, 'b')], opts(T0 + DAY));
    // Day 31: .1 is past the retention, new again, and now the most recently seen.
    assert.equal((await s.decide('e', [item('10.0.0.1', T0, 'c')], opts(T0 + 31 * DAY))).results[0]?.isNew, true);
    // Day 32: .2 (last seen day 1) is stale and must go although .1 was first in.
    assert.equal(await s.maintain('e', T0 + 32 * DAY, RETENTION), 1);
  });

  it('dedupe claims are bounded: past 100,000 the oldest are forgotten, the newest still held', async () => {
    const s = new MemoryFirstSeenStore(100);
    const N = 100_001;
    for (let i = 0; i < N; i++) await s.claim('e', `s${i}`, '203.0.113.1', 't', 3_600_000);
    assert.equal(await s.claim('e', `s${N - 1}`, '203.0.113.1', 'other', 3_600_000), false, 'the newest is held');
    assert.equal(await s.claim('e', 's1', '203.0.113.1', 'other', 3_600_000), false, 'one over the cap drops one');
    assert.equal(await s.claim('e', 's0', '203.0.113.1', 'other', 3_600_000), true, 'the oldest claim was dropped');
    // That claim went over the cap again: the next oldest made room.
    assert.equal(await s.claim('e', 's1', '203.0.113.1', 'other', 3_600_000), true);
    assert.equal(await s.claim('e', 's3', '203.0.113.1', 'other', 3_600_000), false);
  });

  it('the session store holds at most maxSessions, forgetting the least recently written hosts first', async () => {
    let now = T0;
    const st = new MemoryBuildSessionStore(3, () => now);
    await st.write('e', [{ host: 'h1', upsert: [record('a', 'h1', T0), record('b', 'h1', T0)], remove: [] }], DAY);
    now += 1;
    await st.write('e', [{ host: 'h2', upsert: [record('c', 'h2', T0)], remove: [] }], DAY);
    now += 1;
    // Rewriting h1 makes h2 the least recently written.
    await st.write('e', [{ host: 'h1', upsert: [record('a', 'h1', T0 + 1)], remove: [] }], DAY);
    await st.write('e', [{ host: 'h3', upsert: [record('d', 'h3', T0)], remove: [] }], DAY);
    const got = await st.load('e', ['h1', 'h2', 'h3']);
    assert.deepEqual([...got.keys()].sort(), ['h1', 'h3']);
    assert.equal(got.get('h1')?.sessions.length, 2);
    // Removing frees room: two more fit now.
    await st.write('e', [{ host: 'h1', upsert: [], remove: ['a', 'b'] }], DAY);
    await st.write('e', [{ host: 'h4', upsert: [record('e', 'h4', T0), record('f', 'h4', T0)], remove: [] }], DAY);
    assert.deepEqual([...(await st.load('e', ['h1', 'h3', 'h4'])).keys()].sort(), ['h1', 'h3', 'h4']);
  });

  it('an expired host in the session store is dropped on the next write and its sessions stop counting', async () => {
    let now = T0;
    const st = new MemoryBuildSessionStore(2, () => now);
    await st.write('e', [{ host: 'h1', upsert: [record('a', 'h1', T0), record('b', 'h1', T0)], remove: [] }], 1_000);
    now += 1_000;
    assert.equal((await st.load('e', ['h1'])).size, 0, 'expired at exactly its TTL');
    await st.write('e', [{ host: 'h1', upsert: [record('c', 'h1', T0)], remove: [] }], 1_000);
    await st.write('e', [{ host: 'h2', upsert: [record('d', 'h2', T0)], remove: [] }], 1_000);
    const got = await st.load('e', ['h1', 'h2']);
    assert.deepEqual(got.get('h1')?.sessions.map((s) => s.id), ['c']);
    assert.deepEqual(got.get('h2')?.sessions.map((s) => s.id), ['d']);
  });

  it('drops stored sessions that do not parse', async () => {
    const st = new MemoryBuildSessionStore(10);
    await st.write('e', [{ host: 'h1', upsert: [{ ...record('a', 'h1', T0), pids: 'x' } as unknown as SessionRecord], remove: [] }], DAY);
    assert.deepEqual((await st.load('e', ['h1'])).get('h1')?.sessions, []);
  });
});
