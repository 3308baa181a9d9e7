/**
 * Hard to break: a stream of attack builds on many hosts while Falco restarts and the webhook
 * receiver goes away and comes back. Every attack is still alerted exactly once per delivery
 * id, and nothing else is alerted.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../src/config/config.js';
import { Daemon } from '../src/daemon.js';
import type { Alert } from '../src/model/alert.js';
import { renderScript, ATTACK_HOST, ATTACKER_IP, REGISTRY_CIDR } from '../src/demo/script.js';
import { FalcoEmulator, responseFromJson } from '../src/demo/emulator.js';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { TestRedis } from './support/redis.js';
import { waitFor } from './support/wait.js';
import { WebhookReceiver } from './support/webhook-receiver.js';

/** The demo's attack, moved to host `node-<i>` downloading from 198.18.<i>.<i> (never seen). */
async function attackOn(i: number, startNs: bigint): Promise<string[]> {
  const host = `node-${i}`;
  const ip = `198.18.${Math.floor(i / 200)}.${(i % 200) + 1}`;
  const events = await renderScript(startNs);
  return events
    .filter((ev) => ev['hostname'] === ATTACK_HOST)
    .map((ev) => JSON.stringify(ev).replaceAll(ATTACK_HOST, host).replaceAll(ATTACKER_IP, ip));
}

describe('chaos: Falco and the webhook failing mid-stream', function () {
  this.timeout(60_000);

  it('every attack alerts once, none lost, nothing else raised', async () => {
    const dir = mkdtempSync(join(tmpdir(), 't1612d-chaos-'));
    const redis = await TestRedis.start();
    const receiver = await WebhookReceiver.start();
    const falco = await FalcoEmulator.start({ address: `unix://${join(dir, 'falco.sock')}` });
    const daemon = new Daemon(
      resolveConfig({
        env: {},
        overrides: {
          falcoGrpcAddress: falco.address,
          falcoGrpcPollIntervalMs: 20,
          httpAddress: '',
          redisUrl: redis.url,
          redisPrefix: TestRedis.prefix(),
          allowCidrs: [REGISTRY_CIDR],
          webhookUrl: receiver.url,
          webhookTimeoutMs: 2_000,
          deliveryBackoffInitialMs: 100,
          deliveryBackoffMaxMs: 1_000,
          webhookMaxAttempts: 100,
          logLevel: 'silent',
        },
      }),
      { logger: silentLogger(), metrics: new Metrics() },
    );
    try {
      await daemon.start();
      const attacks = 30;
      const startNs = BigInt(Date.now() - 10_000) * 1_000_000n;
      const perAttack = (await attackOn(0, startNs)).length;
      const deliveredIds = (): number =>
        new Set(receiver.requests.map((r) => r.headers['x-t1612d-delivery']).filter((id) => id !== undefined)).size;
      const send = async (from: number, to: number): Promise<void> => {
        for (let i = from; i < to; i++) {
          for (const line of await attackOn(i, startNs + BigInt(i) * 1_000_000n)) falco.enqueue(responseFromJson(line));
        }
      };

      // 1. Ten attacks go through normally.
      await send(0, 10);
      await waitFor('the first ten alerts', () => deliveredIds() >= 10, 20_000);

      // 2. Falco restarts (a restarted Falco starts with an empty queue); the source reconnects.
      await falco.stop();
      await new Promise((r) => setTimeout(r, 300));
      await falco.restart();

      // 3. The receiver goes away while ten more attacks arrive; deliveries fail and retry.
      await receiver.down();
      await send(10, 20);
      await waitFor('failed deliveries', async () => (await daemon.metrics.value('t1612d_deliveries_total', { status: 'retry' })) > 0, 20_000);
      await receiver.up();

      // 4. Ten more with everything back.
      await send(20, attacks);
      await waitFor(
        () => `${attacks} attacks received (${daemon.intake.size} queued)`,
        async () => (await daemon.metrics.value('t1612d_falco_events_total')) >= attacks * perAttack,
        30_000,
      );
      await daemon.settle();
      await waitFor(
        () => `${attacks} alerts delivered (${deliveredIds()} so far)`,
        () => deliveredIds() >= attacks,
        30_000,
      );
      const byId = new Map<string, Alert>();
      for (const r of receiver.requests) byId.set(String(r.headers['x-t1612d-delivery']), JSON.parse(r.text) as Alert);
      const alerts = [...byId.values()];
      assert.equal(alerts.length, attacks, 'one alert per attack');
      assert.equal(new Set(alerts.map((a) => a.hostname)).size, attacks, 'one per host');
      assert.ok(alerts.every((a) => a.severity === 'critical' && a.destination.ip.startsWith('198.18.')));
      assert.equal(await daemon.metrics.value('t1612d_alerts_total'), attacks, 'nothing else raised');
      assert.equal(await daemon.metrics.value('t1612d_falco_events_total', { kind: 'invalid' }), 0);
    } finally {
      await daemon.close();
      await falco.close();
      await receiver.close();
      await redis.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
