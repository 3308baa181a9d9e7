// How many round trips and script calls a batch of first-seen decisions costs: on a single
// Redis one script call decides a whole batch, whatever buckets its IPs fall in.
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { SCRIPT_ITEMS } from '../src/store/redis/first-seen.js';
import { createStores } from '../src/store/stores.js';
import { commandCalls, TestRedis } from './support/redis.js';
import { testConfig } from './support/scenarios.js';

async function scriptCalls(r: Redis): Promise<number> {
  return (await commandCalls(r, 'evalsha')) + (await commandCalls(r, 'eval'));
}

describe('first-seen decisions in batches (redis)', () => {
  let redis: TestRedis;
  let probe: Redis;
  before(async () => {
    redis = await TestRedis.start();
    probe = new Redis(redis.url);
  });
  after(async () => {
    probe.disconnect();
    await redis.close();
  });

  it('decides 300 new IPs over many buckets in one script call, each answered for its own IP', async () => {
    const stores = await createStores(testConfig({ redisUrl: redis.url, redisPrefix: TestRedis.prefix() }), { logger: silentLogger(), metrics: new Metrics() });
    try {
      const now = Date.UTC(2026, 2, 2);
      const o = { nowMs: now, retentionMs: 30 * 86_400_000, learningPeriodMs: 0, learningStartCandidate: now, claimTtlMs: 60_000 };
      const ips = Array.from({ length: 300 }, (_, i) => `198.51.${i >> 8}.${i & 255}`);
      // The environment's layout is read once; count only the decisions.
      await stores.firstSeen.decide('batch', [{ ip: '192.0.2.1', eventTimeMs: now, token: 't0', claim: null }], o);
      const before = await scriptCalls(probe);
      const batch = await stores.firstSeen.decide(
        'batch',
        ips.map((ip, i) => ({ ip, eventTimeMs: now, token: `t${i + 1}`, claim: i % 2 === 0 ? 'session-a' : null })),
        o,
      );
      assert.equal((await scriptCalls(probe)) - before, 1);
      assert.equal(batch.results.length, 300);
      assert.ok(batch.results.every((r) => r.isNew));
      // Claimed exactly where a claim was asked for.
      assert.deepEqual(
        batch.results.map((r) => r.claimed),
        ips.map((_, i) => i % 2 === 0),
      );
      // The same IPs again (another daemon's tokens): all known, none claimed.
      const again = await stores.firstSeen.decide(
        'batch',
        ips.map((ip, i) => ({ ip, eventTimeMs: now, token: `u${i}`, claim: 'session-a' })),
        o,
      );
      assert.ok(again.results.every((r) => !r.isNew && !r.claimed));
    } finally {
      await stores.close();
    }
  });

  it('splits a batch too big for one call into calls of SCRIPT_ITEMS, answered in order (the same IP twice: the first one is new)', async () => {
    const stores = await createStores(testConfig({ redisUrl: redis.url, redisPrefix: TestRedis.prefix() }), { logger: silentLogger(), metrics: new Metrics() });
    try {
      const now = Date.UTC(2026, 2, 2);
      const o = { nowMs: now, retentionMs: 30 * 86_400_000, learningPeriodMs: 0, learningStartCandidate: now, claimTtlMs: 60_000 };
      await stores.firstSeen.decide('big', [{ ip: '192.0.2.1', eventTimeMs: now, token: 't0', claim: null }], o);
      // 30,000 arguments and more would not fit on the stack as one call's. A whole number of
      // calls' worth: no empty call after the last full one.
      const n = 5 * SCRIPT_ITEMS;
      const ips = Array.from({ length: n }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
      ips[n - 1] = ips[0] as string; // decided in the first call, seen again in the last
      const before = await scriptCalls(probe);
      const lookedUp = await commandCalls(probe, 'hget');
      const batch = await stores.firstSeen.decide('big', ips.map((ip, i) => ({ ip, eventTimeMs: now, token: `t${i + 1}`, claim: null })), o);
      assert.equal((await scriptCalls(probe)) - before, 5);
      // Each item in one call only: one lookup per item in all.
      assert.equal((await commandCalls(probe, 'hget')) - lookedUp, n);
      assert.equal(batch.results.length, n);
      assert.ok(batch.results.slice(0, n - 1).every((r) => r.isNew));
      assert.equal(batch.results[n - 1]?.isNew, false);
    } finally {
      await stores.close();
    }
  });
});
