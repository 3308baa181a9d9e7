// Regression tests for bugs found in the final bug hunt. Each test names the behaviour that
// was wrong; they run against the real stores (TestRedis) and the real pipeline parts.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Correlator } from '../src/detect/correlator.js';
import { TAG_EGRESS } from '../src/model/event.js';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { createStores } from '../src/store/stores.js';
import { TestRedis } from './support/redis.js';
import { CollectingSink, loadEvents, testConfig, withDestination } from './support/scenarios.js';
import { waitFor } from './support/wait.js';

describe('regressions', () => {
  let redis: TestRedis;

  before(async () => {
    redis = await TestRedis.start();
  });
  after(async () => {
    await redis.close();
  });

  it('a decision round still in flight when the correlator closes does not keep retrying afterwards', async function () {
    if (!redis.controllable) this.skip(); // REDIS_URL points at a server this harness cannot stop
    const cfg = testConfig({ redisUrl: redis.url, redisPrefix: TestRedis.prefix(), shutdownTimeoutMs: 200 });
    const stores = await createStores(cfg, { logger: silentLogger(), metrics: new Metrics() });
    // Count how often the decision loop asks whether Redis is up: a loop that keeps
    // rescheduling itself after close() asks thousands of times a second.
    let upCalls = 0;
    const realUp = stores.redisUp.bind(stores);
    stores.redisUp = () => {
      upCalls++;
      return realUp();
    };
    const correlator = new Correlator(cfg, { stores, sink: new CollectingSink(), metrics: new Metrics(), logger: silentLogger() });
    const admin = redis.client();
    admin.on('error', () => undefined);
    try {
      // Hold every write so the decision round is in flight when close() gives up on it.
      await admin.call('CLIENT', 'PAUSE', '5000', 'WRITE');
      const egress = loadEvents('no-build-host-process.jsonl').find((e) => e.tags.includes(TAG_EGRESS));
      assert.ok(egress);
      await correlator.handle(withDestination(egress, '198.18.7.7'));
      await sleep(50);
      await correlator.close();
      // The outage: the round in flight fails, Redis stays down.
      await redis.stop();
      await waitFor('the correlator to see Redis down', () => !realUp(), 5_000);
      await sleep(50);
      const before = upCalls;
      await sleep(300);
      const calls = upCalls - before;
      assert.ok(calls < 20, `decision loop kept running after close(): ${calls} readiness checks in 300 ms`);
    } finally {
      admin.disconnect();
      await stores.close();
      await redis.restart();
    }
  });

  it('events that reach a closed correlator (shutdown deadline passed) are counted as dropped', async () => {
    const cfg = testConfig({});
    const metrics = new Metrics();
    const stores = await createStores(cfg, { logger: silentLogger(), metrics });
    const correlator = new Correlator(cfg, { stores, sink: new CollectingSink(), metrics, logger: silentLogger() });
    const egress = loadEvents('buildkit-run-curl.jsonl').find((e) => e.tags.includes(TAG_EGRESS));
    assert.ok(egress);
    await correlator.close();
    await Promise.resolve(correlator.handle(egress));
    await Promise.resolve(correlator.handle(egress));
    assert.equal(await metrics.value('t1612d_dropped_events_total', { reason: 'shutdown' }), 2);
    await stores.close();
  });
});
