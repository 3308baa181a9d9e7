// Every DETECTION.md scenario, as Falco JSON fixtures, through the Correlator with the real
// Redis stores and with the memory stores.
import assert from 'node:assert/strict';
import { Metrics } from '../src/ops/metrics.js';
import { silentLogger } from '../src/ops/logger.js';
import { createStores, type Stores } from '../src/store/stores.js';
import { TECHNIQUE } from '../src/model/alert.js';
import { TestRedis } from './support/redis.js';
import { SCENARIOS, runScenario, testConfig } from './support/scenarios.js';
import type { Config } from '../src/config/config.js';
import { isKnown } from './support/known.js';

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+Z$/;

for (const kind of ['memory', 'redis'] as const) {
  describe(`correlator scenarios (${kind} stores)`, () => {
    let redis: TestRedis | undefined;

    before(async () => {
      if (kind === 'redis') redis = await TestRedis.start();
    });
    after(async () => {
      await redis?.close();
    });

    async function storesFor(cfg: Config): Promise<Stores> {
      return createStores(cfg, { logger: silentLogger(), metrics: new Metrics() });
    }

    for (const sc of SCENARIOS) {
      it(sc.title, async () => {
        const cfg = testConfig({
          ...(redis ? { redisUrl: redis.url, redisPrefix: TestRedis.prefix() } : {}),
          ...sc.config,
        });
        const stores = await storesFor(cfg);
        try {
          assert.equal(stores.kind, kind);
          const run = await runScenario(sc.file, cfg, stores);
          const got = run.alerts
            .map((a) => ({
              ip: a.destination.ip,
              severity: a.severity,
              attribution: a.connection.attribution,
              host: a.hostname,
              remotePeer: a.build.trigger.remote_peer,
            }))
            .sort((a, b) => a.ip.localeCompare(b.ip));
          assert.equal(got.length, sc.alerts.length, `alerts: ${JSON.stringify(got)}`);
          sc.alerts.forEach((want, i) => {
            const g = got[i];
            assert.ok(g);
            assert.equal(g.ip, want.ip);
            assert.equal(g.severity, want.severity);
            assert.equal(g.attribution, want.attribution);
            if (want.host) assert.equal(g.host, want.host);
            assert.equal(g.remotePeer, want.remotePeer ?? null);
          });
          for (const a of run.alerts) {
            assert.deepEqual(a.technique, TECHNIQUE);
            assert.match(a.id, /^[0-9a-f-]{36}$/);
            assert.match(a.time, ISO);
            assert.match(a.build.started_at, ISO);
            assert.match(a.destination.first_seen_at, ISO);
            assert.ok(a.build.session_id.length > 0);
            assert.ok(a.evidence.length >= 2, 'build trigger and egress evidence');
            assert.equal(a.evidence.at(-1)?.rule, a.connection.rule);
            assert.ok(a.summary.includes(a.hostname) && a.summary.includes(a.destination.ip), a.summary);
            assert.equal(await run.metrics.value('t1612d_alerts_total', { severity: a.severity }) > 0, true);
          }
          if (sc.invalid !== undefined) assert.equal(run.invalid, sc.invalid);
          for (const ip of sc.known ?? []) {
            assert.equal(await isKnown(stores, cfg.environment, ip, Date.now(), 1000 * 86_400_000), true, `${ip} should have been recorded`);
          }
        } finally {
          await stores.close();
        }
      });
    }

    it('remote API alert says where the build came from', async () => {
      const cfg = testConfig(redis ? { redisUrl: redis.url, redisPrefix: TestRedis.prefix() } : {});
      const stores = await storesFor(cfg);
      try {
        const { alerts } = await runScenario('remote-api-build.jsonl', cfg, stores);
        const a = alerts[0];
        assert.ok(a);
        assert.equal(
          a.summary,
          'Image build on node-a (remote API from 198.51.100.7:53422) downloaded from never-seen 203.0.113.66:8080 via wget',
        );
        assert.equal(a.build.trigger.rule, 'T1612 Builder Runtime Started');
        assert.equal(a.destination.port, 8080);
        assert.equal(a.destination.l4proto, 'tcp');
        assert.equal(a.connection.proc_name, 'wget');
        assert.equal(a.connection.pid, 31111);
      } finally {
        await stores.close();
      }
    });

    it('image alert lists the images the build named', async () => {
      const cfg = testConfig(redis ? { redisUrl: redis.url, redisPrefix: TestRedis.prefix() } : {});
      const stores = await storesFor(cfg);
      try {
        const { alerts } = await runScenario('image-after-build.jsonl', cfg, stores);
        assert.ok(alerts.length > 0);
        for (const a of alerts) assert.deepEqual(a.build.images, ['registry.example.com/team/app:1.2', 'app:latest']);
        assert.equal(alerts[0]?.build.trigger.cmdline, 'docker build -t registry.example.com/team/app:1.2 --tag=app:latest .');
      } finally {
        await stores.close();
      }
    });

    it('the rules engineer\'s sample events are understood', async () => {
      const cfg = testConfig(redis ? { redisUrl: redis.url, redisPrefix: TestRedis.prefix() } : {});
      const stores = await storesFor(cfg);
      try {
        const { alerts, invalid } = await runScenario('../rules/sample-events.jsonl', cfg, stores);
        assert.equal(invalid, 0);
        // The sample is a remote-API build whose RUN step downloads from a new IP.
        assert.equal(alerts.length, 1);
        assert.equal(alerts[0]?.severity, 'critical');
      } finally {
        await stores.close();
      }
    });
  });
}
