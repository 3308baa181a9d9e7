/**
 * Redis Cluster: the whole daemon against a real three-master cluster. An environment's keys
 * are spread over the masters (known-IP buckets, per-host sessions), every multi-key script
 * stays within one slot (or the cluster answers CROSSSLOT), and three daemons fed the same
 * events raise exactly one alert per (session, IP) between them.
 */
import assert from 'node:assert/strict';
import { Cluster } from 'ioredis';
import { resolveConfig, type Config } from '../src/config/config.js';
import { Daemon } from '../src/daemon.js';
import type { Alert } from '../src/model/alert.js';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { renderScript, ATTACK_HOST, REGISTRY_CIDR } from '../src/demo/script.js';
import { createStores } from '../src/store/stores.js';
import { legacyKeys } from '../src/store/redis/keys.js';
import { TestRedis } from './support/redis.js';
import { TestRedisCluster } from './support/redis-cluster.js';
import { WebhookReceiver } from './support/webhook-receiver.js';
import { waitFor } from './support/wait.js';

const HOSTS = 6;
const IPS_PER_HOST = 8;

/** The demo's attack on HOSTS hosts, each build reaching IPS_PER_HOST addresses of its own. */
async function attackEvents(): Promise<{ body: string; ips: string[] }> {
  const start = BigInt(Date.now() - 5_000) * 1_000_000n;
  const attack = (await renderScript(start)).filter((ev) => ev['hostname'] === ATTACK_HOST);
  const lines: string[] = [];
  const ips: string[] = [];
  for (let h = 0; h < HOSTS; h++) {
    for (const ev of attack) {
      const fields = ev['output_fields'] as Record<string, unknown>;
      if (!(ev['tags'] as string[]).includes('t1612_egress')) {
        lines.push(JSON.stringify({ ...ev, hostname: `fleet-${h}` }));
        continue;
      }
      for (let j = 0; j < IPS_PER_HOST; j++) {
        const ip = `203.0.113.${h * IPS_PER_HOST + j + 1}`;
        ips.push(ip);
        lines.push(JSON.stringify({ ...ev, hostname: `fleet-${h}`, output_fields: { ...fields, 'fd.sip': ip, 'fd.name': `10.0.2.15:40080->${ip}:80` } }));
      }
    }
  }
  return { body: lines.join('\n'), ips: [...new Set(ips)] };
}

describe('Redis Cluster', function () {
  this.timeout(90_000);
  let cluster: TestRedisCluster;
  let receiver: WebhookReceiver;

  before(async () => {
    cluster = await TestRedisCluster.start();
    receiver = await WebhookReceiver.start();
  });
  after(async () => {
    await receiver?.close();
    await cluster?.close();
  });

  function config(prefix: string): Config {
    return resolveConfig({
      env: {},
      overrides: {
        falcoGrpcAddress: '',
        httpAddress: '127.0.0.1:0',
        redisClusterNodes: cluster.nodes,
        redisPrefix: prefix,
        environment: 'prod',
        allowCidrs: [REGISTRY_CIDR],
        webhookUrl: receiver.url,
        deliveryBackoffInitialMs: 50,
        logLevel: 'silent',
      },
    });
  }

  it('three daemons on three masters: one alert per (session, IP), keys spread over every master', async () => {
    const prefix = TestRedis.prefix();
    const daemons = [1, 2, 3].map(() => new Daemon(config(prefix), { logger: silentLogger(), metrics: new Metrics() }));
    for (const d of daemons) await d.start();
    const admin = new Cluster(cluster.nodes.map((n) => ({ host: '127.0.0.1', port: Number(n.split(':')[1]) })));
    try {
      // Every daemon gets every event, as if each host's events reached all three.
      const { body, ips } = await attackEvents();
      const posts = daemons.map((d) => fetch(`http://127.0.0.1:${d.port}/falco`, { method: 'POST', body }));
      for (const res of await Promise.all(posts)) assert.equal(res.status, 200);
      await Promise.all(daemons.map((d) => d.settle()));
      let raised = 0;
      for (const d of daemons) raised += await d.metrics.value('t1612d_alerts_total');
      assert.equal(raised, ips.length, 'one alert per new IP between the three daemons');
      // Delivery is at least once (a consumer may take over another's entry): count alerts by id.
      const byId = (): Map<string, Alert> =>
        new Map(receiver.requests.map((r) => [String(r.headers['x-t1612d-delivery']), JSON.parse(r.text) as Alert]));
      await receiver.waitFor(() => byId().size >= ips.length, 30_000, 'every alert delivered');
      const alerts = [...byId().values()];
      assert.equal(alerts.length, ips.length, 'no alert beyond one per new IP');
      const pairs = alerts.map((a) => `${a.build.session_id}|${a.destination.ip}`);
      assert.equal(new Set(pairs).size, pairs.length, 'no (session, IP) alerted twice');
      assert.deepEqual([...new Set(alerts.map((a) => a.destination.ip))].sort(), [...ips].sort());
      assert.equal(new Set(alerts.map((a) => a.hostname)).size, HOSTS);

      // Keys: every master holds part of the environment, and known-IP buckets on each.
      const masters = admin.nodes('master');
      assert.equal(masters.length, 3);
      const perMaster = await Promise.all(masters.map((m) => m.keys(`*${prefix}:prod*`)));
      for (const [i, keys] of perMaster.entries()) {
        assert.ok(keys.some((k) => k.includes(':ip:')), `master ${i} holds known-IP buckets: ${keys.join(',')}`);
      }
      const all = perMaster.flat();
      const slots = new Set(await Promise.all(all.map(async (k) => Number(await admin.cluster('KEYSLOT', k)))));
      assert.ok(slots.size >= ips.length / 2, `${all.length} keys in ${slots.size} slots`);
      assert.equal(all.filter((k) => k.endsWith('}:sessions')).length, HOSTS, 'one session key per host');
    } finally {
      await Promise.all(daemons.map((d) => d.close()));
      admin.disconnect();
    }
  });

  it('retention sweep and migration from the single-slot layout run on the cluster', async () => {
    const prefix = TestRedis.prefix();
    const cfg = config(prefix);
    const admin = new Cluster(cluster.nodes.map((n) => ({ host: '127.0.0.1', port: Number(n.split(':')[1]) })));
    const stores = await createStores(cfg, { logger: silentLogger(), metrics: new Metrics() });
    try {
      await waitFor('the cluster client', () => stores.redisUp());
      const now = Date.now();
      const old = legacyKeys(prefix, 'prod');
      const legacy = Array.from({ length: 1500 }, (_, i) => `10.1.${i >> 8}.${i & 255}`);
      await admin.zadd(old.known, ...legacy.flatMap((ip) => [now - 86_400_000, ip]));
      await admin.hset(old.first, ...legacy.flatMap((ip) => [ip, `${now - 2 * 86_400_000}|t`]));
      const fresh = Array.from({ length: 300 }, (_, i) => `198.19.${i >> 8}.${i & 255}`);
      const decided = await stores.firstSeen.decide(
        'prod',
        [...legacy.slice(0, 5), ...fresh].map((ip, i) => ({ ip, eventTimeMs: now, token: `c${i}`, claim: null })),
        { nowMs: now, retentionMs: cfg.firstSeenRetentionMs, learningPeriodMs: 0, learningStartCandidate: now, claimTtlMs: 60_000 },
      );
      assert.equal(decided.results.filter((r) => r.isNew).length, fresh.length, 'only the fresh IPs are new');
      assert.equal(await stores.firstSeen.maintain('prod', now, cfg.firstSeenRetentionMs), legacy.length + fresh.length);
      assert.equal(await admin.exists(old.known), 0, 'the single-slot set is gone');
      // Past the retention, a sweep over every master empties the set.
      assert.equal(await stores.firstSeen.maintain('prod', now + cfg.firstSeenRetentionMs + 86_400_000, cfg.firstSeenRetentionMs), 0);
      const left = (await Promise.all(admin.nodes('master').map((m) => m.keys(`{${prefix}:prod:ip:*}:known`)))).flat();
      assert.deepEqual(left, []);
    } finally {
      await stores.close();
      admin.disconnect();
    }
  });

  it('environment-wide singletons: concurrent daemons agree on one learning start', async () => {
    const prefix = TestRedis.prefix();
    const cfg = config(prefix);
    const fleet = await Promise.all([1, 2, 3].map(() => createStores(cfg, { logger: silentLogger(), metrics: new Metrics() })));
    try {
      await waitFor('the cluster clients', () => fleet.every((s) => s.redisUp()));
      const now = Date.now();
      const answers = await Promise.all(
        fleet.map((s, i) =>
          s.firstSeen.decide('prod', [{ ip: `198.18.0.${i + 1}`, eventTimeMs: now, token: `t${i}`, claim: null }], {
            nowMs: now,
            retentionMs: cfg.firstSeenRetentionMs,
            learningPeriodMs: 3_600_000,
            learningStartCandidate: now + i * 1000,
            claimTtlMs: 60_000,
          }),
        ),
      );
      const starts = new Set(answers.map((a) => a.learningStart));
      assert.equal(starts.size, 1, `one learning start: ${[...starts].join(',')}`);
      assert.ok(answers.every((a) => a.results[0]?.isNew && a.results[0].learning));
    } finally {
      await Promise.all(fleet.map((s) => s.close()));
    }
  });
});
