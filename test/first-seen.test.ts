// The first-seen store, Redis and memory: atomic "new" across daemons, retention with an
// injected clock, learning period, idempotent retries and dedupe claims, maintenance.
import assert from 'node:assert/strict';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { createStores, type Stores } from '../src/store/stores.js';
import type { DecideOptions } from '../src/store/first-seen.js';
import { TestRedis } from './support/redis.js';
import { testConfig } from './support/scenarios.js';

const DAY = 86_400_000;
const RETENTION = 30 * DAY;
const T0 = Date.UTC(2026, 2, 2);

function opts(nowMs: number, extra: Partial<DecideOptions> = {}): DecideOptions {
  return { nowMs, retentionMs: RETENTION, learningPeriodMs: 0, learningStartCandidate: nowMs, claimTtlMs: 60_000, ...extra };
}

for (const kind of ['memory', 'redis'] as const) {
  describe(`first-seen store (${kind})`, () => {
    let redis: TestRedis | undefined;
    let stores: Stores;
    let env: string;

    before(async () => {
      if (kind === 'redis') redis = await TestRedis.start();
    });
    after(async () => {
      await redis?.close();
    });
    beforeEach(async () => {
      env = `env-${Math.random().toString(36).slice(2, 8)}`;
      const cfg = testConfig(redis ? { redisUrl: redis.url, redisPrefix: TestRedis.prefix() } : {});
      stores = await createStores(cfg, { logger: silentLogger(), metrics: new Metrics() });
    });
    afterEach(async () => {
      await stores.close();
    });

    it('answers new once, then known, with the first-seen time', async () => {
      const a = await stores.firstSeen.observe(env, '203.0.113.1', T0, RETENTION);
      const b = await stores.firstSeen.observe(env, '203.0.113.1', T0 + 1000, RETENTION);
      assert.deepEqual(a, { isNew: true, firstSeenAt: T0 });
      assert.deepEqual(b, { isNew: false, firstSeenAt: T0 });
      const other = await stores.firstSeen.observe(`${env}-2`, '203.0.113.1', T0, RETENTION);
      assert.equal(other.isNew, true, 'environments do not share IPs');
    });

    it('ages IPs out after the retention (injected clock), and last-seen refreshes keep them', async () => {
      await stores.firstSeen.observe(env, '203.0.113.2', T0, RETENTION);
      await stores.firstSeen.observe(env, '203.0.113.3', T0, RETENTION);
      // .2 seen again on day 20 (refresh); .3 not.
      assert.equal((await stores.firstSeen.observe(env, '203.0.113.2', T0 + 20 * DAY, RETENTION)).isNew, false);
      assert.equal((await stores.firstSeen.observe(env, '203.0.113.2', T0 + 45 * DAY, RETENTION)).isNew, false);
      const again = await stores.firstSeen.observe(env, '203.0.113.3', T0 + 31 * DAY, RETENTION);
      assert.deepEqual(again, { isNew: true, firstSeenAt: T0 + 31 * DAY });
    });

    it('maintain() drops IPs past the retention and counts the rest', async () => {
      for (let i = 1; i <= 4; i++) await stores.firstSeen.observe(env, `198.51.100.${i}`, T0, RETENTION);
      await stores.firstSeen.observe(env, '198.51.100.9', T0 + 20 * DAY, RETENTION);
      assert.equal(await stores.firstSeen.maintain(env, T0 + 10 * DAY, RETENTION), 5);
      assert.equal(await stores.firstSeen.maintain(env, T0 + 40 * DAY, RETENTION), 1);
    });

    it('decide(): learning period from the first recorded event, dedupe claims, idempotent retries', async () => {
      const learning = { learningPeriodMs: 3_600_000, learningStartCandidate: T0 };
      const first = await stores.firstSeen.decide(
        env,
        [{ ip: '203.0.113.10', eventTimeMs: T0 + 1000, token: 't1', claim: 's1' }],
        opts(T0, learning),
      );
      assert.equal(first.learningStart, T0);
      assert.deepEqual(first.results[0], { isNew: true, firstSeenAt: T0, learning: true, claimed: false });
      // A later candidate does not move the start.
      const later = await stores.firstSeen.decide(
        env,
        [
          { ip: '203.0.113.11', eventTimeMs: T0 + 2 * 3_600_000, token: 't2', claim: 's1' },
          { ip: '203.0.113.11', eventTimeMs: T0 + 2 * 3_600_000, token: 't3', claim: 's1' },
        ],
        opts(T0 + 1, { learningPeriodMs: 3_600_000, learningStartCandidate: T0 + 999_999 }),
      );
      assert.equal(later.learningStart, T0);
      assert.equal(later.results[0]?.isNew, true);
      assert.equal(later.results[0]?.claimed, true);
      assert.equal(later.results[1]?.isNew, false, 'second observation in the same batch is not new');
      // Retrying the same decision (lost reply) gets the same answer.
      const retry = await stores.firstSeen.decide(
        env,
        [{ ip: '203.0.113.11', eventTimeMs: T0 + 2 * 3_600_000, token: 't2', claim: 's1' }],
        opts(T0 + 2),
      );
      assert.deepEqual(retry.results[0], { isNew: true, firstSeenAt: T0 + 1, learning: false, claimed: true });
      assert.equal(await stores.firstSeen.claim(env, 's1', '203.0.113.11', 'other', 60_000), false);
      assert.equal(await stores.firstSeen.claim(env, 's1', '203.0.113.11', 't2', 60_000), true);
      assert.equal(await stores.firstSeen.claim(env, 's2', '203.0.113.11', 'x', 60_000), true);
    });

    if (kind === 'redis') {
      it('is atomic across daemons: concurrent observers of one new IP get exactly one "new"', async () => {
        const cfg = testConfig({ redisUrl: redis?.url, redisPrefix: TestRedis.prefix() });
        const fleet = await Promise.all(
          [1, 2, 3, 4].map(() => createStores(cfg, { logger: silentLogger(), metrics: new Metrics() })),
        );
        try {
          for (let round = 0; round < 50; round++) {
            const ip = `198.18.1.${round + 1}`;
            const answers = await Promise.all(
              fleet.map((s, i) =>
                s.firstSeen.decide(env, [{ ip, eventTimeMs: T0, token: `d${i}-${round}`, claim: null }], opts(T0)),
              ),
            );
            assert.equal(answers.filter((a) => a.results[0]?.isNew).length, 1, ip);
          }
        } finally {
          await Promise.all(fleet.map((s) => s.close()));
        }
      });
    }
  });
}
