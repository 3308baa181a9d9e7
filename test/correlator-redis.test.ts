// Correlator behaviour that needs a shared Redis: fleet-wide dedupe between daemons, restart
// mid-build, and a Redis outage (buffering, not-ready, overflow counted).
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { Correlator } from '../src/detect/correlator.js';
import type { FalcoEvent } from '../src/model/event.js';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { createStores, type Stores } from '../src/store/stores.js';
import type { Config } from '../src/config/config.js';
import { TestRedis } from './support/redis.js';
import { waitFor } from './support/wait.js';
import { CollectingSink, loadEvents, testConfig, withDestination } from './support/scenarios.js';
import { isKnown } from './support/known.js';
import { envKeys } from '../src/store/redis/keys.js';

const events = loadEvents('buildkit-run-curl.jsonl');
const buildEvents = events.filter((e) => e.tags.includes('t1612_build'));
const stepEgress = events.at(-1) as FalcoEvent;

async function until(cond: () => boolean, what: string | (() => string), timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${typeof what === 'string' ? what : what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Daemon {
  correlator: Correlator;
  sink: CollectingSink;
  metrics: Metrics;
  stores: Stores;
}

describe('correlator with a shared Redis', () => {
  let redis: TestRedis;
  const open: Daemon[] = [];

  before(async () => {
    redis = await TestRedis.start();
  });
  after(async () => {
    await redis.close();
  });
  afterEach(async () => {
    for (const d of open.splice(0)) {
      await d.correlator.close();
      await d.stores.close();
    }
  });

  async function daemon(cfg: Config): Promise<Daemon> {
    const metrics = new Metrics();
    const stores = await createStores(cfg, { logger: silentLogger(), metrics });
    const sink = new CollectingSink();
    const correlator = new Correlator(cfg, { stores, sink, metrics, logger: silentLogger() });
    const d = { correlator, sink, metrics, stores };
    open.push(d);
    return d;
  }

  it('two correlators fed the same new IPs concurrently raise exactly one alert per (session, IP)', async () => {
    const cfg = testConfig({ redisUrl: redis.url, redisPrefix: TestRedis.prefix(), allowCidrs: ['192.0.2.0/24'] });
    const a = await daemon(cfg);
    const b = await daemon(cfg);
    for (const ev of buildEvents) {
      await a.correlator.handle(ev);
      await b.correlator.handle(ev);
    }
    await Promise.all([a.correlator.flush(), b.correlator.flush()]);
    const rounds = 200;
    const ips: string[] = [];
    for (let i = 0; i < rounds; i++) {
      const ip = `198.18.${Math.floor(i / 250)}.${(i % 250) + 1}`;
      ips.push(ip);
      const ev = withDestination(stepEgress, ip, i);
      // Hand the same event to both without waiting for either to decide.
      const pa = a.correlator.handle(ev);
      const pb = b.correlator.handle(ev);
      await Promise.all([pa, pb]);
      if (i % 25 === 0) await new Promise((r) => setImmediate(r));
    }
    await Promise.all([a.correlator.flush(), b.correlator.flush()]);
    const all = [...a.sink.alerts, ...b.sink.alerts];
    const perIp = new Map<string, number>();
    for (const al of all) perIp.set(al.destination.ip, (perIp.get(al.destination.ip) ?? 0) + 1);
    assert.equal(all.length, rounds, `alerts: ${all.length}`);
    for (const ip of ips) assert.equal(perIp.get(ip), 1, ip);
    assert.equal(new Set(all.map((al) => al.build.session_id)).size, 1, 'both daemons name the same session');
  });

  it('a new correlator on the same Redis attributes the download of a build started before a restart', async () => {
    const cfg = testConfig({ redisUrl: redis.url, redisPrefix: TestRedis.prefix(), allowCidrs: ['192.0.2.0/24'] });
    const before = await daemon(cfg);
    for (const ev of buildEvents) await before.correlator.handle(ev);
    await before.correlator.flush();
    open.splice(open.indexOf(before), 1);
    await before.correlator.close();
    await before.stores.close();

    const after = await daemon(cfg);
    await after.correlator.handle(stepEgress);
    await after.correlator.handle(withDestination(stepEgress, '203.0.113.9', 500));
    await after.correlator.flush();
    assert.equal(after.sink.alerts.length, 1);
    const al = after.sink.alerts[0];
    assert.equal(al?.severity, 'high');
    assert.equal(al?.connection.attribution, 'lineage');
    assert.equal(al?.build.trigger.cmdline, 'docker build -t webapp:1.4 .');
    assert.deepEqual(al?.build.images, ['webapp:1.4']);
  });

  it('keeps deciding through a Redis outage: buffers, reports not ready, loses no alert, counts overflow', async function () {
    // A server of its own: stopping the shared one would break every later test if this one
    // failed between the stop and the restart.
    const own = await TestRedis.start();
    try {
      // REDIS_URL points at a server this harness did not start and cannot stop or restart.
      if (!own.controllable) this.skip();
      await outage(own);
    } finally {
      for (const d of open.splice(0)) {
        await d.correlator.close();
        await d.stores.close();
      }
      await own.close();
    }
  });

  async function outage(server: TestRedis): Promise<void> {
    const prefix = TestRedis.prefix();
    // A short close deadline: if an assertion fails mid-outage, closing cannot flush and the
    // cleanup would otherwise wait out the default deadline per daemon.
    const base = { redisUrl: server.url, allowCidrs: ['192.0.2.0/24'], shutdownTimeoutMs: 2_000 };
    const main = await daemon(testConfig({ ...base, redisPrefix: prefix }));
    const tiny = await daemon(testConfig({ ...base, redisPrefix: `${prefix}-tiny`, redisBufferSize: 2 }));
    assert.equal(main.correlator.ready, true);

    await server.stop();
    await until(() => !main.stores.redisUp() && !tiny.stores.redisUp(), 'both daemons to notice the outage');
    // Build signals during the outage are remembered and written through afterwards.
    for (const ev of buildEvents) {
      await main.correlator.handle(ev);
      await tiny.correlator.handle(ev);
    }
    const ips = ['203.0.113.31', '203.0.113.32', '203.0.113.33', '203.0.113.34', '203.0.113.35'];
    for (const [i, ip] of ips.entries()) {
      const ev = withDestination(stepEgress, ip, i);
      assert.equal(main.correlator.handle(ev), undefined, 'never blocks the intake during an outage');
      assert.equal(tiny.correlator.handle(ev), undefined);
    }
    await until(
      () => !main.correlator.ready && main.correlator.backlog === ips.length && tiny.correlator.backlog === 2,
      () => `not ready with the egress events buffered (ready ${main.correlator.ready}, backlog ${main.correlator.backlog} and ${tiny.correlator.backlog})`,
    );
    assert.equal(main.correlator.ready, false);
    assert.equal(main.sink.alerts.length, 0);
    assert.equal(main.correlator.backlog, ips.length);
    assert.equal(tiny.correlator.backlog, 2);
    assert.equal(await tiny.metrics.value('t1612d_dropped_events_total', { reason: 'redis_buffer_full' }), 3);

    await server.restart();
    await until(() => main.stores.redisUp() && tiny.stores.redisUp(), 'both daemons to reconnect after the restart');
    await Promise.all([main.correlator.flush(), tiny.correlator.flush()]);
    assert.equal(main.correlator.ready, true);
    assert.deepEqual(main.sink.alerts.map((a) => a.destination.ip).sort(), ips);
    assert.deepEqual(tiny.sink.alerts.map((a) => a.destination.ip).sort(), ips.slice(0, 2));
    assert.equal(await main.metrics.value('t1612d_dropped_events_total'), 0);

    const probe = new Redis(server.url);
    try {
      const stored = await probe.hlen(envKeys(prefix, 'default').sessions('node-a'));
      assert.ok(stored >= 1, 'sessions opened during the outage were written through');
    } finally {
      probe.disconnect();
    }
  }

  it('applies backpressure (a promise) only when its decision buffer is full and Redis is up', async () => {
    const cfg = testConfig({ redisUrl: redis.url, redisPrefix: TestRedis.prefix(), redisBufferSize: 4 });
    const d = await daemon(cfg);
    let blocked = 0;
    for (let i = 1; i <= 40; i++) {
      const r = d.correlator.handle(withDestination(stepEgress, `198.19.1.${i}`));
      if (r !== undefined) {
        blocked++;
        await r;
        assert.ok(d.correlator.backlog <= 4, `backlog ${d.correlator.backlog}`);
      }
    }
    await d.correlator.flush();
    assert.ok(blocked > 0, 'the intake was asked to wait');
    assert.equal(await d.metrics.value('t1612d_dropped_events_total'), 0);
    for (let i = 1; i <= 40; i++) {
      assert.equal(await isKnown(d.stores, cfg.environment, `198.19.1.${i}`, Date.now(), cfg.firstSeenRetentionMs), true);
    }
  });

  it('retries an alert the sink refused, and delivers it once', async () => {
    const cfg = testConfig({ redisUrl: redis.url, redisPrefix: TestRedis.prefix(), allowCidrs: ['192.0.2.0/24'] });
    const metrics = new Metrics();
    const stores = await createStores(cfg, { logger: silentLogger(), metrics });
    let refusals = 2;
    const delivered: string[] = [];
    const sink = {
      async enqueue(alert: { destination: { ip: string } }): Promise<void> {
        if (refusals-- > 0) throw new Error('outbox unavailable');
        delivered.push(alert.destination.ip);
      },
    };
    const correlator = new Correlator(cfg, { stores, sink, metrics, logger: silentLogger() });
    open.push({ correlator, sink: new CollectingSink(), metrics, stores });
    for (const ev of events) await correlator.handle(ev);
    await correlator.flush();
    assert.deepEqual(delivered, ['203.0.113.9']);
    assert.equal(correlator.ready, true, 'a sink problem is not a Redis outage');
    assert.equal(await metrics.value('t1612d_alerts_total', { severity: 'high' }), 1);
  });

  it('counts the known-IP set after its first round trip', async () => {
    const cfg = testConfig({ redisUrl: redis.url, redisPrefix: TestRedis.prefix() });
    const d = await daemon(cfg);
    // Handed in together, decided in one round; the count follows that round.
    for (let i = 1; i <= 5; i++) void d.correlator.handle(withDestination(stepEgress, `198.19.0.${i}`));
    await d.correlator.flush();
    await waitFor('t1612d_known_ips = 5', async () => (await d.metrics.value('t1612d_known_ips')) === 5);
  });
});
