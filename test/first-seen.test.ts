// The first-seen store, Redis and memory: atomic "new" across daemons, retention with an
// injected clock, learning period (start, end, TTL), idempotent retries and dedupe claims
// (and their TTLs), maintenance; for Redis also the sharded layout's keys and values.
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { createStores, type Stores } from '../src/store/stores.js';
import type { DecideItem, DecideOptions } from '../src/store/first-seen.js';
import { envKeys } from '../src/store/redis/keys.js';
import { bucketOf, ipField } from '../src/store/redis/slots.js';
import { TOKEN_KEEP_MS } from '../src/store/redis/first-seen.js';
import { TestRedis } from './support/redis.js';
import { testConfig } from './support/scenarios.js';
import { waitFor } from './support/wait.js';
import type { Config } from '../src/config/config.js';

const DAY = 86_400_000;
const HOUR = 3_600_000;
const RETENTION = 30 * DAY;
const T0 = Date.UTC(2026, 2, 2);

function opts(nowMs: number, extra: Partial<DecideOptions> = {}): DecideOptions {
  return { nowMs, retentionMs: RETENTION, learningPeriodMs: 0, learningStartCandidate: nowMs, claimTtlMs: 60_000, ...extra };
}

let seq = 0;
/** One decision with a fresh token and no claim. */
function item(ip: string, eventTimeMs = T0, claim: string | null = null): DecideItem {
  return { ip, eventTimeMs, token: `tok-${++seq}`, claim };
}

for (const kind of ['memory', 'redis'] as const) {
  describe(`first-seen store (${kind})`, () => {
    let redis: TestRedis | undefined;
    let probe: Redis | undefined;
    let stores: Stores;
    let env: string;
    let cfg: Config;

    before(async () => {
      if (kind === 'redis') {
        redis = await TestRedis.start();
        probe = new Redis(redis.url);
      }
    });
    after(async () => {
      probe?.disconnect();
      await redis?.close();
    });
    beforeEach(async () => {
      env = `env-${Math.random().toString(36).slice(2, 8)}`;
      cfg = testConfig(redis ? { redisUrl: redis.url, redisPrefix: TestRedis.prefix() } : {});
      stores = await createStores(cfg, { logger: silentLogger(), metrics: new Metrics() });
    });
    afterEach(async () => {
      await stores.close();
    });

    const decideOne = async (it: DecideItem, o: DecideOptions) => (await stores.firstSeen.decide(env, [it], o)).results[0];

    it('answers new once, then known, with the first-seen time', async () => {
      const a = await decideOne(item('203.0.113.1'), opts(T0));
      const b = await decideOne(item('203.0.113.1', T0 + 1000), opts(T0 + 1000));
      assert.deepEqual(a, { isNew: true, firstSeenAt: T0, learning: false, claimed: false });
      assert.equal(b?.isNew, false);
      assert.equal(b?.firstSeenAt, T0);
      const other = (await stores.firstSeen.decide(`${env}-2`, [item('203.0.113.1')], opts(T0))).results[0];
      assert.equal(other?.isNew, true, 'environments do not share IPs');
      const v6 = await decideOne(item('2001:db8::1'), opts(T0));
      assert.equal(v6?.isNew, true);
      assert.equal((await decideOne(item('2001:db8::1'), opts(T0 + 1)))?.isNew, false);
      assert.equal((await decideOne(item('2001:db8::2'), opts(T0 + 1)))?.isNew, true, 'IPv6 addresses are told apart');
    });

    it('ages IPs out after the retention (injected clock), and last-seen refreshes keep them', async () => {
      await stores.firstSeen.decide(env, [item('203.0.113.2'), item('203.0.113.3')], opts(T0));
      // .2 seen again on day 20 (a refresh, token ''); .3 not.
      const touch = { ip: '203.0.113.2', eventTimeMs: T0 + 20 * DAY, token: '', claim: null };
      assert.equal((await decideOne(touch, opts(T0 + 20 * DAY)))?.isNew, false);
      assert.equal((await decideOne(item('203.0.113.2'), opts(T0 + 45 * DAY)))?.isNew, false);
      const again = await decideOne(item('203.0.113.3'), opts(T0 + 31 * DAY));
      assert.deepEqual(again, { isNew: true, firstSeenAt: T0 + 31 * DAY, learning: false, claimed: false });
    });

    it('retention boundary: known at exactly the retention, new a minute later (also after a sweep)', async () => {
      await stores.firstSeen.decide(env, [item('203.0.113.50'), item('203.0.113.51')], opts(T0));
      assert.equal((await decideOne(item('203.0.113.50'), opts(T0 + RETENTION)))?.isNew, false, 'at the edge');
      assert.equal(await stores.firstSeen.maintain(env, T0 + RETENTION, RETENTION), 2, 'the sweep keeps the edge');
      assert.equal((await decideOne(item('203.0.113.51'), opts(T0 + RETENTION + 60_000)))?.isNew, true, 'past it');
    });

    it('maintain() drops IPs past the retention and counts the rest, over every bucket', async () => {
      // 600 IPs land in far more buckets than one sweep step covers.
      const old = Array.from({ length: 600 }, (_, i) => `198.51.${100 + (i >> 8)}.${i & 255}`);
      await stores.firstSeen.decide(env, old.map((ip) => item(ip)), opts(T0));
      await stores.firstSeen.decide(env, [item('198.18.0.9', T0 + 20 * DAY)], opts(T0 + 20 * DAY));
      assert.equal(await stores.firstSeen.maintain(env, T0 + 10 * DAY, RETENTION), 601);
      assert.equal(await stores.firstSeen.maintain(env, T0 + 40 * DAY, RETENTION), 1);
      if (probe) {
        // Nothing left behind in any bucket: only the fresh IP's bucket still exists.
        const keys = await probe.keys(`{${cfg.redisPrefix}:${env}:ip:*}:known`);
        assert.equal(keys.length, 1, keys.join(','));
        assert.equal(await probe.hlen(keys[0] ?? ''), 1);
      }
      // The expired ones are new again.
      assert.equal((await decideOne(item(old[599] ?? ''), opts(T0 + 40 * DAY)))?.isNew, true);
    });

    it('learning period: starts at the first recorded event, ends exclusively, claims nothing meanwhile', async () => {
      const L = HOUR;
      const first = await stores.firstSeen.decide(env, [item('203.0.113.10', T0 + 1000, 's1')], opts(T0, { learningPeriodMs: L, learningStartCandidate: T0 }));
      assert.equal(first.learningStart, T0);
      assert.deepEqual(first.results[0], { isNew: true, firstSeenAt: T0, learning: true, claimed: false });
      // A later candidate does not move the start; the last learning ms and the first one after.
      const edge = await stores.firstSeen.decide(
        env,
        [item('203.0.113.12', T0 + L - 1, 's1'), item('203.0.113.13', T0 + L, 's1')],
        opts(T0 + 1, { learningPeriodMs: L, learningStartCandidate: T0 + 999_999 }),
      );
      assert.equal(edge.learningStart, T0);
      assert.deepEqual(
        edge.results.map((r) => [r.isNew, r.learning, r.claimed]),
        [
          [true, true, false],
          [true, false, true],
        ],
      );
      if (probe) {
        const ttl = await probe.pttl(envKeys(cfg.redisPrefix, env).learning);
        assert.ok(ttl > RETENTION && ttl <= RETENTION + L, `learning key TTL ${ttl}: retention + learning period`);
        assert.equal(Number(await probe.get(envKeys(cfg.redisPrefix, env).learning)), T0);
      }
    });

    it('decide(): dedupe claims, idempotent retries, claim TTLs', async () => {
      const later = await stores.firstSeen.decide(
        env,
        [
          { ip: '203.0.113.11', eventTimeMs: T0, token: 't2', claim: 's1' },
          { ip: '203.0.113.11', eventTimeMs: T0, token: 't3', claim: 's1' },
        ],
        opts(T0 + 1),
      );
      assert.equal(later.results[0]?.isNew, true);
      assert.equal(later.results[0]?.claimed, true);
      assert.equal(later.results[1]?.isNew, false, 'second observation in the same batch is not new');
      // Retrying the same decision (lost reply) gets the same answer.
      const retry = await decideOne({ ip: '203.0.113.11', eventTimeMs: T0, token: 't2', claim: 's1' }, opts(T0 + 2));
      assert.deepEqual(retry, { isNew: true, firstSeenAt: T0 + 1, learning: false, claimed: true });
      assert.equal(await stores.firstSeen.claim(env, 's1', '203.0.113.11', 'other', 60_000), false);
      assert.equal(await stores.firstSeen.claim(env, 's1', '203.0.113.11', 't2', 60_000), true);
      assert.equal(await stores.firstSeen.claim(env, 's2', '203.0.113.11', 'x', 45_000), true);
      if (probe) {
        const k = envKeys(cfg.redisPrefix, env);
        const b = bucketOf(ipField('203.0.113.11'), cfg.knownIpBuckets);
        const decided = await probe.pttl(k.alerted(b, 's1', '203.0.113.11'));
        const retro = await probe.pttl(k.alerted(b, 's2', '203.0.113.11'));
        assert.ok(decided > 45_000 && decided <= 60_000, `decide claim TTL ${decided}`);
        assert.ok(retro > 0 && retro <= 45_000, `retro claim TTL ${retro}`);
      }
    });

    it('a claim expires after its TTL and can then be taken again', async () => {
      await stores.firstSeen.decide(env, [{ ip: '203.0.113.20', eventTimeMs: T0, token: 'a', claim: 's9' }], opts(T0, { claimTtlMs: 1_000 }));
      assert.equal(await stores.firstSeen.claim(env, 's9', '203.0.113.20', 'b', 1_000), false, 'held right after');
      await waitFor('the claim to expire', () => stores.firstSeen.claim(env, 's9', '203.0.113.20', 'b', 60_000), 5_000);
      assert.equal(await stores.firstSeen.claim(env, 's9', '203.0.113.20', 'c', 60_000), false, 'the new claim holds');
    });

    if (kind === 'memory') {
      it('keeps far more IPs than known_ip_cache_size (forgetting one would alert again)', async () => {
        const small = await createStores({ ...cfg, knownIpCacheSize: 10 }, { logger: silentLogger(), metrics: new Metrics() });
        const ips = Array.from({ length: 30_000 }, (_, i) => `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`);
        await small.firstSeen.decide(env, ips.map((ip) => item(ip)), opts(T0));
        const again = await small.firstSeen.decide(env, ips.map((ip) => item(ip)), opts(T0 + 1));
        assert.equal(again.results.filter((r) => r.isNew).length, 0);
      });
    }

    if (kind === 'redis') {
      it('is atomic across daemons: concurrent observers of one new IP get exactly one "new"; one learning start', async () => {
        const fleet = await Promise.all([1, 2, 3, 4].map(() => createStores(cfg, { logger: silentLogger(), metrics: new Metrics() })));
        try {
          const starts = await Promise.all(
            fleet.map((s, i) =>
              s.firstSeen.decide(env, [item('198.18.2.1')], opts(T0, { learningPeriodMs: HOUR, learningStartCandidate: T0 + i * 1000 })),
            ),
          );
          assert.equal(new Set(starts.map((s) => s.learningStart)).size, 1, 'every daemon sees the same learning start');
          for (let round = 0; round < 50; round++) {
            const ip = `198.18.1.${round + 1}`;
            const answers = await Promise.all(fleet.map((s) => s.firstSeen.decide(env, [item(ip)], opts(T0))));
            assert.equal(answers.filter((a) => a.results[0]?.isNew).length, 1, ip);
          }
        } finally {
          await Promise.all(fleet.map((s) => s.close()));
        }
      });

      it('stores compact values: address bytes, minutes, the token only while it matters', async () => {
        const k = envKeys(cfg.redisPrefix, env);
        const ip = '203.0.113.30';
        const key = k.bucket(bucketOf(ipField(ip), cfg.knownIpBuckets));
        await decideOne({ ip, eventTimeMs: T0, token: 'tok-x', claim: null }, opts(T0));
        const raw = await probe?.hgetBuffer(key, ipField(ip));
        const minute = T0 / 60_000;
        assert.equal(raw?.toString(), `${minute * 2 ** 26 + minute}|${T0}|tok-x`);
        // Past the token's time a sweep drops it; a retry that late is no longer "new".
        const late = T0 + TOKEN_KEEP_MS + HOUR;
        await stores.firstSeen.maintain(env, late, RETENTION);
        assert.equal((await probe?.hgetBuffer(key, ipField(ip)))?.toString(), String(minute * 2 ** 26 + minute));
        assert.equal((await decideOne({ ip, eventTimeMs: late, token: 'tok-x', claim: null }, opts(late)))?.isNew, false);
        assert.equal((await probe?.hgetBuffer(key, ipField(ip)))?.toString(), String(minute * 2 ** 26 + late / 60_000), 'last seen refreshed');

        // A refresh within the token's time keeps it (a retry after another daemon's refresh is
        // still "new"); a refresh after it drops it without waiting for a sweep.
        const ip2 = '203.0.113.31';
        const key2 = k.bucket(bucketOf(ipField(ip2), cfg.knownIpBuckets));
        await decideOne({ ip: ip2, eventTimeMs: T0, token: 'tok-y', claim: null }, opts(T0));
        await decideOne({ ip: ip2, eventTimeMs: T0 + HOUR, token: '', claim: null }, opts(T0 + HOUR));
        assert.equal((await decideOne({ ip: ip2, eventTimeMs: T0, token: 'tok-y', claim: null }, opts(T0 + HOUR)))?.isNew, true);
        assert.equal((await probe?.hgetBuffer(key2, ipField(ip2)))?.toString(), `${minute * 2 ** 26 + minute + 60}|${T0}|tok-y`);
        await decideOne({ ip: ip2, eventTimeMs: late, token: '', claim: null }, opts(late));
        assert.equal((await probe?.hgetBuffer(key2, ipField(ip2)))?.toString(), String(minute * 2 ** 26 + late / 60_000));
      });

      it('keeps the bucket count an environment was written with', async () => {
        await stores.firstSeen.decide(env, [item('203.0.113.40')], opts(T0));
        const other = await createStores({ ...cfg, knownIpBuckets: 7 }, { logger: silentLogger(), metrics: new Metrics() });
        try {
          assert.equal((await other.firstSeen.decide(env, [item('203.0.113.40')], opts(T0 + 1))).results[0]?.isNew, false);
          assert.match(String(await probe?.get(envKeys(cfg.redisPrefix, env).layout)), new RegExp(`^2:${cfg.knownIpBuckets}:\\d+$`));
        } finally {
          await other.close();
        }
      });
    }
  });
}
