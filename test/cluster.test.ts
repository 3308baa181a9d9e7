/**
 * Redis Cluster: the whole daemon against a real three-node cluster. Every key of an
 * environment must live in one slot (hash tag), or the first-seen Lua script, the session
 * writes and the outbox streams fail with CROSSSLOT.
 */
import assert from 'node:assert/strict';
import { Cluster } from 'ioredis';
import { resolveConfig, type Config } from '../src/config/config.js';
import { Daemon } from '../src/daemon.js';
import type { Alert } from '../src/model/alert.js';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { renderScript, ATTACKER_IP, REGISTRY_CIDR } from '../src/demo/script.js';
import { TestRedis } from './support/redis.js';
import { TestRedisCluster } from './support/redis-cluster.js';
import { WebhookReceiver } from './support/webhook-receiver.js';

describe('Redis Cluster', function () {
  this.timeout(60_000);
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

  it('two daemons on one cluster: the attack alerts exactly once, keys share the environment slot', async () => {
    const prefix = TestRedis.prefix();
    const a = new Daemon(config(prefix), { logger: silentLogger(), metrics: new Metrics() });
    const b = new Daemon(config(prefix), { logger: silentLogger(), metrics: new Metrics() });
    await a.start();
    await b.start();
    const admin = new Cluster(cluster.nodes.map((n) => ({ host: '127.0.0.1', port: Number(n.split(':')[1]) })));
    try {
      // Both hosts' Falco report the same attack (same host name, as two sources would).
      const start = BigInt(Date.now() - 5_000) * 1_000_000n;
      const body = (await renderScript(start)).map((ev) => JSON.stringify(ev)).join('\n');
      const posts = [a, b].map((d) => fetch(`http://127.0.0.1:${d.port}/falco`, { method: 'POST', body }));
      for (const res of await Promise.all(posts)) assert.equal(res.status, 200);
      await Promise.all([a.settle(), b.settle()]);
      const raised = (await a.metrics.value('t1612d_alerts_total')) + (await b.metrics.value('t1612d_alerts_total'));
      assert.equal(raised, 1, 'one alert raised between the two daemons');
      await receiver.waitFor(() => receiver.requests.length >= 1, 15_000, 'the alert');
      const ids = new Set(receiver.requests.map((r) => String(r.headers['x-t1612d-delivery'])));
      assert.equal(ids.size, 1, 'one alert fleet-wide');
      const alert = JSON.parse(receiver.requests[0]?.text ?? '{}') as Alert;
      assert.equal(alert.destination.ip, ATTACKER_IP);
      assert.equal(alert.environment, 'prod');

      const tag = `{${prefix}:prod}`;
      const slot = Number(await admin.cluster('KEYSLOT', tag));
      const keys: string[] = [];
      for (const node of admin.nodes('master')) keys.push(...(await node.keys(`*${prefix}*`)));
      assert.ok(keys.length >= 3, keys.join(','));
      for (const k of keys) {
        assert.ok(k.startsWith(tag), `${k} carries the environment hash tag`);
        assert.equal(Number(await admin.cluster('KEYSLOT', k)), slot);
      }
      assert.notEqual(await admin.zscore(`${tag}:known`, ATTACKER_IP), null);
    } finally {
      await a.close();
      await b.close();
      admin.disconnect();
    }
  });
});
