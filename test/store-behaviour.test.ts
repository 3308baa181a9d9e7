// What the Redis stores do beyond the shared contract, seen from Redis and from their answers:
// the order of a batch's answers across buckets, how long a decision's token is honoured, the
// first layout read next to the buckets, the sweep (its turn-taking, its record, its warning
// about loose buckets), the round trips a batch costs, and build sessions across layouts.
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import type { DecideItem, DecideOptions } from '../src/store/first-seen.js';
import { createStores, memoryStores, migrateKnownIps, type Stores } from '../src/store/stores.js';
import { createRedisClient, waitReady } from '../src/store/redis/connection.js';
import { RedisBuildSessionStore } from '../src/store/redis/build-sessions.js';
import { RedisFirstSeenStore } from '../src/store/redis/first-seen.js';
import { envKeys, legacyKeys } from '../src/store/redis/keys.js';
import { Layouts } from '../src/store/redis/layout.js';
import { MemoryBuildSessionStore } from '../src/store/memory/build-sessions.js';
import { bucketOf, ipField, pipelinePerNode } from '../src/store/redis/slots.js';
import { sessionRecord } from './support/records.js';
import { TestRedis, commandCalls as calls, freePort, spawnRedisServer } from './support/redis.js';
import { testConfig } from './support/scenarios.js';
import { waitFor } from './support/wait.js';

const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const RETENTION = 30 * DAY;
const T0 = Date.UTC(2026, 3, 1);

function opts(nowMs: number, extra: Partial<DecideOptions> = {}): DecideOptions {
  return { nowMs, retentionMs: RETENTION, learningPeriodMs: 0, learningStartCandidate: nowMs, claimTtlMs: 60_000, ...extra };
}
function item(ip: string, token: string, claim: string | null = null, eventTimeMs = T0): DecideItem {
  return { ip, eventTimeMs, token, claim };
}


describe('redis store behaviour', function () {
  this.timeout(30_000);
  let redis: TestRedis;
  let client: Redis;
  let prefix: string;
  let env: string;
  let store: RedisFirstSeenStore;

  before(async () => {
    redis = await TestRedis.start();
    client = new Redis(redis.url);
  });
  after(async () => {
    client.disconnect();
    await redis.close();
  });
  beforeEach(() => {
    prefix = TestRedis.prefix();
    env = `e${Math.random().toString(36).slice(2, 6)}`;
    store = new RedisFirstSeenStore(client, prefix, { buckets: 64, owner: 'daemon-a' });
  });

  describe('first-seen decisions', () => {
    it('answers a batch in item order whatever buckets its IPs fall in', async () => {
      const ips = Array.from({ length: 24 }, (_, i) => `198.51.100.${i + 1}`);
      // Every third IP was seen before, each at its own time.
      for (const [i, ip] of ips.entries()) {
        if (i % 3 === 0) await store.decide(env, [item(ip, `old-${i}`)], opts(T0 - (i + 1) * HOUR));
      }
      const r = await store.decide(env, ips.map((ip, i) => item(ip, `new-${i}`, 's')), opts(T0));
      assert.ok(new Set(ips.map((ip) => bucketOf(ipField(ip), 64))).size > 10, 'spread over many buckets');
      assert.deepEqual(
        r.results.map((x) => [x.isNew, x.claimed, x.firstSeenAt]),
        ips.map((_, i) => (i % 3 === 0 ? [false, false, T0 - (i + 1) * HOUR] : [true, true, T0])),
      );
    });

    it('an empty batch makes no round trip and writes nothing', async () => {
      const r = await store.decide(env, [], opts(T0, { learningPeriodMs: HOUR }));
      assert.deepEqual(r.results, []);
      assert.deepEqual(await client.keys(`*${prefix}*`), []);
    });

    it('no learning period: no learning-start key is written', async () => {
      await store.decide(env, [item('203.0.113.1', 'a')], opts(T0));
      assert.equal(await client.exists(envKeys(prefix, env).learning), 0);
    });

    it('a learning-start key that holds no number is not taken for a start: the candidate is', async () => {
      await client.set(envKeys(prefix, env).learning, 'not a time');
      const o = opts(T0, { learningPeriodMs: HOUR, learningStartCandidate: T0 });
      const a = await store.decide(env, [item('203.0.113.1', 'a', 's', T0 + 1)], o);
      const b = await store.decide(env, [item('203.0.113.2', 'b', 's', T0 + 2)], o);
      assert.deepEqual([a.learningStart, b.learningStart], [T0, T0]);
      assert.deepEqual([a.results[0]?.learning, b.results[0]?.learning], [true, true]);
    });

    it('a daemon marks a bucket used once: later batches to it send no bitmap write', async () => {
      await client.config('RESETSTAT');
      await store.decide(env, [item('203.0.113.1', 'a')], opts(T0));
      assert.equal(await calls(client, 'bitfield'), 1);
      await store.decide(env, [item('203.0.113.1', 'b'), item('203.0.113.1', 'c')], opts(T0 + 1));
      assert.equal(await calls(client, 'bitfield'), 1);
      // Another daemon does not know what this one marked: it marks once too.
      const other = new RedisFirstSeenStore(client, prefix, { buckets: 64 });
      await other.decide(env, [item('203.0.113.1', 'd')], opts(T0 + 2));
      await other.decide(env, [item('203.0.113.1', 'e')], opts(T0 + 3));
      assert.equal(await calls(client, 'bitfield'), 2);
    });

    it('a zero claim TTL still claims (for a millisecond) instead of failing the batch', async () => {
      const r = await store.decide(env, [item('203.0.113.5', 'a', 's')], opts(T0, { claimTtlMs: 0 }));
      assert.equal(r.results[0]?.claimed, true);
      assert.equal(await store.claim(env, 's2', '203.0.113.5', 'b', 0), true);
      const r2 = await store.decide(env, [item('203.0.113.6', 'x', 's')], opts(T0, { claimTtlMs: 0.4, retentionMs: 0 }));
      assert.equal(r2.results[0]?.claimed, true);
    });

    it('a decision token is honoured for a day: a retry after a refresh within it is still new, after it not', async () => {
      await store.decide(env, [item('203.0.113.10', 'tok-a'), item('203.0.113.11', 'tok-b')], opts(T0));
      // Other daemons refresh both IPs' last-seen, 23 hours and 25 hours later.
      await store.decide(env, [item('203.0.113.10', '')], opts(T0 + 23 * HOUR));
      await store.decide(env, [item('203.0.113.11', '')], opts(T0 + 25 * HOUR));
      const r = await store.decide(env, [item('203.0.113.10', 'tok-a'), item('203.0.113.11', 'tok-b')], opts(T0 + 25 * HOUR + MIN));
      assert.deepEqual(
        r.results.map((x) => x.isNew),
        [true, false],
      );
      // The same by a sweep: 23 hours keeps the token, 25 hours drops it.
      await store.decide(env, [item('203.0.113.12', 'tok-c'), item('203.0.113.13', 'tok-d')], opts(T0 + 2 * DAY));
      assert.equal(await store.maintain(env, T0 + 2 * DAY + 23 * HOUR, RETENTION), 4);
      const c = await store.decide(env, [item('203.0.113.12', 'tok-c')], opts(T0 + 2 * DAY + 23 * HOUR));
      assert.equal(c.results[0]?.isNew, true, 'kept by the sweep at 23 hours');
      assert.equal(await store.maintain(env, T0 + 2 * DAY + 25 * HOUR, RETENTION), 4);
      const d = await store.decide(env, [item('203.0.113.13', 'tok-d')], opts(T0 + 2 * DAY + 25 * HOUR));
      assert.equal(d.results[0]?.isNew, false, 'dropped by the sweep at 25 hours');
    });

    it('works without a warn callback when the stored bucket count differs', async () => {
      await new Layouts(client, prefix, 16).get(env);
      const quiet = new RedisFirstSeenStore(client, prefix, { buckets: 64 });
      const r = await quiet.decide(env, [item('203.0.113.20', 'a')], opts(T0));
      assert.equal(r.results[0]?.isNew, true);
      assert.equal((await quiet.layouts.get(env)).buckets, 16);
    });

    it('the first layout is read next to the buckets: first-seen from its record, retention applied, per item', async () => {
      const lk = legacyKeys(prefix, env);
      await client.zadd(lk.known, T0 - DAY, '192.0.2.1', T0 - 2 * DAY, '192.0.2.2', T0 - 31 * DAY, '192.0.2.3', T0 - RETENTION, '192.0.2.4');
      await client.hset(lk.first, '192.0.2.1', `${T0 - 9 * DAY}|tok`, '192.0.2.4', `${T0 - 40 * DAY}`);
      const r = await store.decide(
        env,
        ['192.0.2.9', '192.0.2.1', '192.0.2.2', '192.0.2.3', '192.0.2.4'].map((ip, i) => item(ip, `t${i}`, 's')),
        opts(T0),
      );
      assert.deepEqual(
        r.results.map((x) => [x.isNew, x.claimed, x.firstSeenAt]),
        [
          [true, true, T0],
          [false, false, T0 - 9 * DAY],
          [false, false, T0 - 2 * DAY],
          [true, true, T0],
          [false, false, T0 - 40 * DAY],
        ],
      );
      // Known there: copied into its bucket with its first minute, last seen now.
      const v = await client.hgetBuffer(envKeys(prefix, env).bucket(bucketOf(ipField('192.0.2.1'), 64)), ipField('192.0.2.1'));
      assert.equal(v?.toString(), String(Math.floor((T0 - 9 * DAY) / MIN) * 2 ** 26 + T0 / MIN));
      // Once the first layout is gone, its IPs are answered from the buckets alone.
      await client.del(lk.known, lk.first);
      const again = await store.decide(env, [item('192.0.2.2', 'u'), item('192.0.2.8', 'v')], opts(T0 + MIN));
      assert.deepEqual(again.results.map((x) => x.isNew), [false, true]);
    });
  });

    it('several IPs of one bucket are answered each with its own result', async () => {
      const one = new RedisFirstSeenStore(client, prefix, { buckets: 1 });
      await one.decide(env, [item('10.0.0.2', 'a')], opts(T0 - DAY));
      await one.decide(env, [item('10.0.0.4', 'b')], opts(T0 - 2 * DAY));
      const r = await one.decide(env, ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'].map((ip, i) => item(ip, `t${i}`, 's')), opts(T0));
      assert.deepEqual(
        r.results.map((x) => [x.isNew, x.claimed, x.firstSeenAt]),
        [
          [true, true, T0],
          [false, false, T0 - DAY],
          [true, true, T0],
          [false, false, T0 - 2 * DAY],
        ],
      );
    });

    it('a learning start another daemon recorded after this one\'s expired is taken from the next batch on', async () => {
      const k = envKeys(prefix, env);
      const o = (candidate: number): DecideOptions => opts(T0, { learningPeriodMs: HOUR, learningStartCandidate: candidate });
      assert.equal((await store.decide(env, [item('203.0.113.1', 'a')], o(T0))).learningStart, T0);
      // The key expired and another daemon started a new period.
      await client.set(k.learning, String(T0 + 5 * HOUR));
      assert.equal((await store.decide(env, [item('203.0.113.2', 'b')], o(T0 + 9 * HOUR))).learningStart, T0, 'this batch: the start it knew');
      const next = await store.decide(env, [item('203.0.113.3', 'c', 's', T0 + 5 * HOUR + 1)], o(T0 + 9 * HOUR));
      assert.equal(next.learningStart, T0 + 5 * HOUR);
      assert.equal(next.results[0]?.learning, true);
    });

    it('once the first layout is gone it is no longer looked up, and maintenance does not look for one', async () => {
      const lk = legacyKeys(prefix, env);
      await client.zadd(lk.known, T0 - DAY, '192.0.2.1');
      assert.equal((await store.decide(env, [item('192.0.2.1', 'a')], opts(T0))).results[0]?.isNew, false);
      await client.del(lk.known);
      await store.decide(env, [item('192.0.2.2', 'b')], opts(T0));
      await client.config('RESETSTAT');
      await store.decide(env, [item('192.0.2.3', 'c')], opts(T0));
      await store.maintain(env, T0, RETENTION);
      assert.equal(await calls(client, 'exists'), 0, 'no look-up of the first layout');
      assert.equal(await calls(client, 'zrange'), 0, 'no migration step');
      // A daemon that never saw the first layout does not look for it either.
      const fresh = new RedisFirstSeenStore(client, prefix, { buckets: 64 });
      await fresh.layouts.get(`${env}-2`);
      await client.config('RESETSTAT');
      await fresh.decide(`${env}-2`, [item('192.0.2.3', 'c')], opts(T0));
      await fresh.maintain(`${env}-2`, T0, RETENTION);
      assert.equal(await calls(client, 'exists'), 0);
      assert.equal(await calls(client, 'zrange'), 0);
    });

  describe('maintenance sweep', () => {
    it('records who swept, when and how many, for two sweep intervals', async () => {
      await store.decide(env, [item('203.0.113.1', 'a'), item('203.0.113.2', 'b')], opts(T0));
      assert.equal(await store.maintain(env, T0 + MIN, RETENTION), 2);
      const k = envKeys(prefix, env);
      assert.deepEqual(await client.hgetall(k.sweep), { at: String(T0 + MIN), count: '2', by: 'daemon-a' });
      const ttl = await client.pttl(k.sweep);
      assert.ok(ttl > 2 * HOUR && ttl <= 2 * HOUR + MIN, `PTTL ${ttl}`);
      assert.equal(await client.exists(k.sweepLock), 0, 'the lock is released');
    });

    it('names a daemon t1612d-<pid>-<random> unless told, each daemon its own', async () => {
      const a = new RedisFirstSeenStore(client, prefix, { buckets: 64 });
      const b = new RedisFirstSeenStore(client, prefix, { buckets: 64 });
      await a.maintain('ea', T0, RETENTION);
      await b.maintain('eb', T0, RETENTION);
      const byA = await client.hget(envKeys(prefix, 'ea').sweep, 'by');
      const byB = await client.hget(envKeys(prefix, 'eb').sweep, 'by');
      assert.match(byA ?? '', new RegExp(`^t1612d-${process.pid}-[0-9a-z]{1,6}$`));
      assert.match(byB ?? '', new RegExp(`^t1612d-${process.pid}-[0-9a-z]{1,6}$`));
      assert.notEqual(byA, byB);
    });

    it('while another daemon sweeps, answers the size its last sweep found (0 before any) and drops nothing', async () => {
      const k = envKeys(prefix, env);
      await store.decide(env, [item('203.0.113.1', 'a'), item('203.0.113.2', 'b'), item('203.0.113.3', 'c')], opts(T0));
      await client.set(k.sweepLock, 'daemon-b', 'PX', 60_000);
      assert.equal(await store.maintain(env, T0 + 40 * DAY, RETENTION), 0);
      await client.del(k.sweepLock);
      assert.equal(await store.maintain(env, T0 + MIN, RETENTION), 3);
      await client.set(k.sweepLock, 'daemon-b', 'PX', 60_000);
      assert.equal(await store.maintain(env, T0 + 40 * DAY, RETENTION), 3);
      assert.equal(await client.get(k.sweepLock), 'daemon-b', 'the other daemon keeps its lock');
      await client.del(k.sweepLock);
      assert.equal(await store.maintain(env, T0 + 40 * DAY, RETENTION), 0);
    });

    it('concurrent maintenance calls share one sweep and its answer; the next call sweeps again', async () => {
      await store.decide(env, [item('203.0.113.1', 'a'), item('203.0.113.2', 'b')], opts(T0));
      const [a, b] = await Promise.all([store.maintain(env, T0 + DAY, RETENTION), store.maintain(env, T0 + 40 * DAY, RETENTION)]);
      assert.deepEqual([a, b], [2, 2]);
      assert.equal(await store.maintain(env, T0 + 40 * DAY, RETENTION), 0);
    });

    it('warns once when buckets outgrow the compact hash encoding', async () => {
      const was = (await client.config('GET', 'hash-max-listpack-entries')) as string[];
      await client.config('SET', 'hash-max-listpack-entries', '2');
      try {
        const warnings: { fields: Record<string, unknown>; msg: string }[] = [];
        const one = new RedisFirstSeenStore(client, prefix, { buckets: 1, warn: (fields, msg) => warnings.push({ fields, msg }) });
        await one.decide(env, [item('10.0.0.1', 'a')], opts(T0));
        assert.equal(await one.maintain(env, T0, RETENTION), 1);
        assert.equal(warnings.length, 0, 'compact: no warning');
        await one.decide(env, ['10.0.0.2', '10.0.0.3', '10.0.0.4'].map((ip) => item(ip, ip)), opts(T0));
        assert.equal(await one.maintain(env, T0 + HOUR, RETENTION), 4);
        assert.deepEqual(warnings.map((w) => w.fields), [{ environment: env, buckets: 1, looseBuckets: 1, ips: 4 }]);
        assert.match(warnings[0]?.msg ?? '', /hash-max-listpack-entries/);
        assert.equal(await one.maintain(env, T0 + 2 * HOUR, RETENTION), 4);
        assert.equal(warnings.length, 1, 'once per daemon');
      } finally {
        await client.config('SET', 'hash-max-listpack-entries', was[1] ?? '128');
      }
    });
  });

  describe('build sessions', () => {
    const host = 'h1';
    it('the current layout wins over the first one for the same session and for the remote accept', async () => {
      const layouts = new Layouts(client, prefix, 8);
      const sessions = new RedisBuildSessionStore(client, prefix, layouts);
      const now = sessionRecord({ id: 'a', host, startedAt: T0, images: ['new:1'] });
      const old = sessionRecord({ id: 'a', host, startedAt: T0, images: ['old:1'] });
      const onlyOld = sessionRecord({ id: 'b', host, startedAt: T0 });
      await sessions.write(env, [{ host, upsert: [now], remove: [], remote: { peer: '198.51.100.1:1', timeMs: T0 } }], 60_000);
      await client.hset(
        legacyKeys(prefix, env).sessions(host),
        'a', JSON.stringify(old),
        'b', JSON.stringify(onlyOld),
        '~remote', JSON.stringify({ peer: '198.51.100.2:2', timeMs: T0 + 5 }),
      );
      const got = (await sessions.load(env, [host])).get(host);
      assert.deepEqual(got?.sessions, [now, onlyOld]);
      assert.equal(got?.remote?.peer, '198.51.100.1:1');
      // A host with only a first-layout remote accept gets that one.
      await client.hset(legacyKeys(prefix, env).sessions('h2'), '~remote', JSON.stringify({ peer: '198.51.100.3:3', timeMs: T0 }));
      assert.equal((await sessions.load(env, ['h2'])).get('h2')?.remote?.peer, '198.51.100.3:3');
    });

    it('a write\'s TTL is rounded to whole milliseconds, at least one', async () => {
      const sessions = new RedisBuildSessionStore(client, prefix);
      await sessions.write(env, [{ host, upsert: [sessionRecord({ id: 'a', host, startedAt: T0 })], remove: [] }], 5_000.6);
      const ttl = await client.pttl(envKeys(prefix, env).sessions(host));
      assert.ok(ttl > 4_000 && ttl <= 5_001, `PTTL ${ttl}`);
      await sessions.write(env, [{ host, upsert: [], remove: [] }], 0.2);
      assert.ok((await client.pttl(envKeys(prefix, env).sessions(host))) <= 1);
    });

    it('loading no hosts asks Redis nothing', async () => {
      const sessions = new RedisBuildSessionStore(client, prefix, new Layouts(client, prefix, 8));
      assert.deepEqual(await sessions.load(env, []), new Map());
      assert.deepEqual(await client.keys(`*${prefix}*`), []);
    });
  });
});

describe('redis key names', function () {
  this.timeout(30_000);
  let redis: TestRedis;
  let client: Redis;
  before(async () => {
    redis = await TestRedis.start();
    client = new Redis(redis.url);
  });
  after(async () => {
    client.disconnect();
    await redis.close();
  });

  it('an environment\'s keys are named as documented, each with its hash tag', async () => {
    const p = TestRedis.prefix();
    const store = new RedisFirstSeenStore(client, p, { buckets: 1 });
    await store.decide('E', [item('203.0.113.1', 'a', 'S', T0 + 2 * HOUR)], opts(T0, { learningPeriodMs: HOUR }));
    await store.maintain('E', T0, RETENTION);
    await new RedisBuildSessionStore(client, p).write('E', [{ host: 'H', upsert: [sessionRecord({ id: 'a', host: 'H', startedAt: T0 })], remove: [] }], 60_000);
    await client.set(envKeys(p, 'E').migrateLock, 'x');
    await client.set(envKeys(p, 'E').sweepLock, 'x');
    assert.deepEqual((await client.keys(`*${p}*`)).sort(), [
      `{${p}:E:host:H}:sessions`,
      `{${p}:E:ip:0}:alerted:S:203.0.113.1`,
      `{${p}:E:ip:0}:known`,
      `{${p}:E}:buckets-used`,
      `{${p}:E}:layout`,
      `{${p}:E}:learning-start`,
      `{${p}:E}:migrate-lock`,
      `{${p}:E}:sweep`,
      `{${p}:E}:sweep-lock`,
    ]);
    assert.equal(envKeys(p, 'E').tag, `{${p}:E}`);
    assert.deepEqual(envKeys(p, 'E').lane('webhook'), {
      stream: `{${p}:E:lane:webhook}:outbox`,
      dead: `{${p}:E:lane:webhook}:outbox:dead`,
      attempts: `{${p}:E:lane:webhook}:outbox:attempts`,
    });
    const lk = legacyKeys(p, 'E');
    assert.deepEqual(
      [lk.known, lk.first, lk.sessions('H'), lk.outbox.stream, lk.outbox.dead, lk.outbox.attempts('webhook')],
      [`{${p}:E}:known`, `{${p}:E}:first`, `{${p}:E}:sessions:H`, `{${p}:E}:outbox`, `{${p}:E}:outbox:dead`, `{${p}:E}:outbox:attempts:webhook`],
    );
    const long = 'h'.repeat(300);
    assert.equal(lk.sessions(long), `{${p}:E}:sessions:${'h'.repeat(253)}`);
  });
});

for (const kind of ['memory', 'redis'] as const) {
  describe(`first-seen clocks (${kind})`, () => {
    let redis: TestRedis | undefined;
    let stores: Stores;
    before(async () => {
      if (kind === 'redis') redis = await TestRedis.start();
    });
    after(async () => {
      await redis?.close();
    });
    beforeEach(async () => {
      const cfg = testConfig(redis ? { redisUrl: redis.url, redisPrefix: TestRedis.prefix() } : {});
      stores = await createStores(cfg, { logger: silentLogger(), metrics: new Metrics() });
    });
    afterEach(async () => {
      await stores.close();
    });

    it('an IP first recorded by a refresh (empty token) is never new again by token', async () => {
      assert.equal((await stores.firstSeen.decide('e', [item('203.0.113.8', '')], opts(T0))).results[0]?.isNew, true);
      assert.equal((await stores.firstSeen.decide('e', [item('203.0.113.8', '')], opts(T0 + 1))).results[0]?.isNew, false);
    });

    it('a learning period starting at the epoch is a start like any other', async () => {
      const r = await stores.firstSeen.decide('e', [item('203.0.113.9', 'a', 's', 10)], opts(T0, { learningPeriodMs: HOUR, learningStartCandidate: 0 }));
      assert.equal(r.learningStart, 0);
      assert.deepEqual([r.results[0]?.learning, r.results[0]?.claimed], [true, false]);
    });

    it('an observation stamped earlier than the last one does not pull last-seen back', async () => {
      await stores.firstSeen.decide('e', [item('203.0.113.1', 'a')], opts(T0));
      await stores.firstSeen.decide('e', [item('203.0.113.1', '')], opts(T0 + 10 * DAY));
      await stores.firstSeen.decide('e', [item('203.0.113.1', '')], opts(T0 + DAY));
      // Last seen day 10: still known on day 39, and kept by maintenance then.
      assert.equal(await stores.firstSeen.maintain('e', T0 + 39 * DAY, RETENTION), 1);
      const r = await stores.firstSeen.decide('e', [item('203.0.113.1', 'b')], opts(T0 + 39 * DAY));
      assert.deepEqual(r.results[0], { isNew: false, firstSeenAt: T0, learning: false, claimed: false });
    });
  });
}

describe('in-memory session store bounds', () => {
  it('removing sessions that are not there frees no room', async () => {
    const st = new MemoryBuildSessionStore(2);
    await st.write('e', [{ host: 'h1', upsert: [sessionRecord({ id: 'a', host: 'h1', startedAt: T0 })], remove: ['x', 'y'] }], DAY);
    await st.write('e', [{ host: 'h2', upsert: [sessionRecord({ id: 'b', host: 'h2', startedAt: T0 })], remove: ['z'] }], DAY);
    await st.write('e', [{ host: 'h3', upsert: [sessionRecord({ id: 'c', host: 'h3', startedAt: T0 })], remove: [] }], DAY);
    assert.deepEqual([...(await st.load('e', ['h1', 'h2', 'h3'])).keys()], ['h2', 'h3'], 'three sessions, room for two: the oldest host goes');
  });
});

describe('redis connection over outages', function () {
  this.timeout(60_000);
  interface Line { msg: string; err?: string }

  it('logs each outage once and each recovery, backs off from a short first delay, and the gauge follows', async () => {
    const redis = await TestRedis.start();
    const lines: Line[] = [];
    const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Line) });
    const client = createRedisClient({ url: redis.url, name: 't1612d-outage', logger });
    const delays: number[][] = [];
    client.on('reconnecting', (ms: number) => delays.at(-1)?.push(ms));
    const metrics = new Metrics();
    const stores = await createStores(testConfig({ redisUrl: redis.url, redisPrefix: TestRedis.prefix() }), { logger: silentLogger(), metrics });
    const gauge = async (): Promise<number | undefined> => (await metrics.redisConnected.get()).values[0]?.value;
    const count = (msg: string): number => lines.filter((l) => l.msg === msg).length;
    try {
      await waitReady(client, 10_000);
      assert.equal(await gauge(), 1);
      for (const outage of [1, 2]) {
        delays.push([]);
        await redis.stop();
        await waitFor(`error log of outage ${outage}`, () => count('redis error') === outage);
        await waitFor('the gauge to drop', async () => (await gauge()) === 0);
        assert.equal(stores.redisUp(), false);
        await waitFor('a few reconnection attempts', () => (delays.at(-1)?.length ?? 0) >= 2);
        await redis.restart();
        await waitFor(`recovery ${outage}`, () => count('redis connected') === outage, 20_000);
        await waitFor('the gauge to rise', async () => (await gauge()) === 1);
        await waitReady(client, 1);
      }
      assert.equal(count('redis error'), 2, 'the same error again after a recovery is logged again');
      for (const d of delays) {
        assert.ok((d[0] ?? Infinity) <= 500, `first retry after ${d[0]} ms`);
        for (let i = 1; i < d.length; i++) assert.ok((d[i] ?? 0) >= (d[i - 1] ?? 0) && (d[i] ?? 0) <= 5_000, d.join(','));
      }
    } finally {
      client.disconnect();
      await stores.close();
      await redis.close();
    }
  });
});

describe('redis clients: in-flight commands and clusters', function () {
  this.timeout(30_000);

  it('a command in flight when Redis goes away fails after a retry; a blocking client\'s read survives the outage', async () => {
    const redis = await TestRedis.start();
    const plain = createRedisClient({ url: redis.url, logger: silentLogger() });
    const blocking = createRedisClient({ url: redis.url, blocking: true, logger: silentLogger() });
    try {
      await Promise.all([waitReady(plain), waitReady(blocking)]);
      const failed = plain.blpop('plain-list', 0).then(
        () => 'answered',
        (err: Error) => err.message,
      );
      const read = blocking.blpop('blocking-list', 0);
      await new Promise((r) => setTimeout(r, 100));
      await redis.stop();
      assert.match(await failed, /max retries/i);
      await redis.restart();
      await waitReady(blocking, 20_000);
      const pusher = redis.client();
      try {
        await waitFor('the read to be waiting again', async () => String(await pusher.call('CLIENT', 'LIST')).includes('cmd=blpop'));
        await pusher.lpush('blocking-list', 'v');
      } finally {
        pusher.disconnect();
      }
      assert.deepEqual(await read, ['blocking-list', 'v']);
    } finally {
      plain.disconnect();
      blocking.disconnect();
      await redis.close();
    }
  });

  it('a client of a down Redis fails a command at once (no offline queue)', async () => {
    const client = createRedisClient({ url: `redis://127.0.0.1:${await freePort()}`, logger: silentLogger() });
    try {
      const started = Date.now();
      await assert.rejects(client.ping());
      assert.ok(Date.now() - started < 150, `${Date.now() - started} ms`);
    } finally {
      client.disconnect();
    }
  });

  it('a connection closed by the server without an error reconnects without logging', async () => {
    const redis = await TestRedis.start();
    const lines: { msg: string }[] = [];
    const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as { msg: string }) });
    const client = createRedisClient({ url: redis.url, name: 't1612d-kill', logger });
    const admin = redis.client();
    try {
      await waitReady(client);
      let readies = 0;
      client.on('ready', () => readies++);
      for (let i = 0; i < 2; i++) {
        await admin.call('CLIENT', 'KILL', 'SKIPME', 'yes', 'TYPE', 'normal');
        await waitFor('the reconnection', () => readies === i + 1);
      }
      assert.equal(await client.ping(), 'PONG');
      assert.deepEqual(lines.map((l) => l.msg).filter((m) => m !== 'redis error'), []);
    } finally {
      admin.disconnect();
      client.disconnect();
      await redis.close();
    }
  });

  it('a cluster client fails fast while no node answers', async () => {
    const port = await freePort();
    const client = createRedisClient({ clusterNodes: [`127.0.0.1:${port}`], logger: silentLogger() });
    try {
      const started = Date.now();
      await assert.rejects(client.get('x'));
      assert.ok(Date.now() - started < 2_000, 'no offline queue');
      // A pipelined batch fails the same way while the cluster's slots are unknown.
      await assert.rejects(
        pipelinePerNode(client, ['a', 'b', '{a}c'], (k) => k, (pipe, k) => pipe.get(k)),
        (err: Error) => !(err instanceof TypeError),
      );
    } finally {
      client.disconnect();
    }
  });
});

describe('`t1612d migrate` (migrateKnownIps)', function () {
  this.timeout(30_000);
  let redis: TestRedis;
  let client: Redis;
  before(async () => {
    redis = await TestRedis.start();
    client = new Redis(redis.url);
  });
  after(async () => {
    client.disconnect();
    await redis.close();
  });

  it('needs Redis', async () => {
    await assert.rejects(migrateKnownIps(testConfig({}), { logger: silentLogger() }), /migrate needs redis_url or redis_cluster_nodes/);
  });

  it('waits for another daemon\'s lock, then moves the set on the given clock and reports running totals', async () => {
    const prefix = TestRedis.prefix();
    const cfg = testConfig({ redisUrl: redis.url, redisPrefix: prefix, environment: 'm', knownIpBuckets: 8 });
    const lk = legacyKeys(prefix, 'm');
    // Fresh on the injected clock (T0), long past the retention on the wall clock.
    await client.zadd(lk.known, T0 - DAY, '192.0.2.1', T0 - 2 * DAY, '192.0.2.2', T0 - 40 * DAY, '192.0.2.3');
    await client.set(envKeys(prefix, 'm').migrateLock, 'daemon-b', 'PX', 700);
    const progress: [number, number][] = [];
    const started = Date.now();
    await client.config('RESETSTAT');
    const r = await migrateKnownIps(cfg, { logger: silentLogger(), now: () => T0, progress: (m, e) => progress.push([m, e]) });
    const waited = Date.now() - started;
    assert.ok(waited >= 500, 'waited for the lock');
    const asked = await calls(client, 'set');
    assert.ok(asked <= Math.ceil(waited / 400) + 2, `asked for the lock about twice a second (${asked} times in ${waited} ms)`);
    assert.deepEqual(r, { moved: 2, expired: 1, buckets: 8 });
    assert.deepEqual(progress, [[2, 1]]);
    assert.equal(await client.exists(lk.known), 0);
    const store = new RedisFirstSeenStore(client, prefix, { buckets: 8 });
    const known = await store.decide('m', ['192.0.2.1', '192.0.2.2', '192.0.2.3'].map((ip) => item(ip, 'x')), opts(T0));
    assert.deepEqual(known.results.map((x) => x.isNew), [false, false, true]);
  });

  it('stops once another daemon has finished the move', async () => {
    const prefix = TestRedis.prefix();
    const cfg = testConfig({ redisUrl: redis.url, redisPrefix: prefix, environment: 'm' });
    const lk = legacyKeys(prefix, 'm');
    await client.zadd(lk.known, Date.now(), '192.0.2.1');
    await client.set(envKeys(prefix, 'm').migrateLock, 'daemon-b', 'PX', 60_000);
    setTimeout(() => void client.del(lk.known), 200);
    const r = await migrateKnownIps(cfg, { logger: silentLogger() });
    assert.deepEqual(r, { moved: 0, expired: 0, buckets: cfg.knownIpBuckets });
    assert.equal(await client.get(envKeys(prefix, 'm').migrateLock), 'daemon-b');
  });

  it('closing stores whose Redis never came up stops the client reconnecting', async function () {
    this.timeout(30_000);
    const port = await freePort();
    const down = await createStores(testConfig({ redisUrl: `redis://127.0.0.1:${port}` }), { logger: silentLogger(), metrics: new Metrics() });
    await down.close();
    const late = await spawnRedisServer(['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], 'late redis-server');
    try {
      const probe = new Redis({ port, host: '127.0.0.1' });
      try {
        await new Promise((r) => setTimeout(r, 4_000));
        assert.doesNotMatch(String(await probe.call('CLIENT', 'LIST')), /name=t1612d-correlator/);
      } finally {
        probe.disconnect();
      }
    } finally {
      late.kill('SIGKILL');
    }
  });

  it('the bucket-count warning reaches the log, from the daemon\'s stores and from the migrate command', async () => {
    const prefix = TestRedis.prefix();
    await new Layouts(client, prefix, 16).get('w');
    await client.zadd(legacyKeys(prefix, 'w').known, Date.now(), '192.0.2.1');
    const lines: { msg: string; stored?: number }[] = [];
    const logger = pino({ level: 'warn' }, { write: (l: string) => void lines.push(JSON.parse(l) as { msg: string }) });
    const cfg = testConfig({ redisUrl: redis.url, redisPrefix: prefix, environment: 'w', knownIpBuckets: 8 });
    const stores = await createStores(cfg, { logger, metrics: new Metrics() });
    try {
      await stores.firstSeen.decide('w', [item('203.0.113.1', 'a')], opts(T0));
    } finally {
      await stores.close();
    }
    // Without a progress callback, as `t1612d migrate` calls it.
    const r = await migrateKnownIps(cfg, { logger });
    assert.deepEqual(r, { moved: 1, expired: 0, buckets: 16 });
    const warned = lines.filter((l) => /known_ip_buckets differs/.test(l.msg));
    assert.deepEqual(warned.map((l) => l.stored), [16, 16]);
  });

  it('in-memory stores answer without Redis', async () => {
    const s = memoryStores(testConfig({}));
    assert.equal(s.kind, 'memory');
    assert.equal(s.redisUp(), true);
    await s.close();
  });
});
