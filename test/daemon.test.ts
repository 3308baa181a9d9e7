/**
 * The whole daemon, end to end with real parts: Falco gRPC emulator (or HTTP ingest) ->
 * Daemon -> real redis-server -> real webhook receiver.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig, type Config } from '../src/config/config.js';
import { Daemon } from '../src/daemon.js';
import { ConfigError } from '../src/model/errors.js';
import type { Alert } from '../src/model/alert.js';
import { FalcoEmulator, responseFromJson } from '../src/demo/emulator.js';
import { createLogger, silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { demoScript, renderScript, ATTACKER_IP, ATTACK_HOST, REGISTRY_CIDR } from '../src/demo/script.js';
import { TestRedis } from './support/redis.js';
import { WebhookReceiver } from './support/webhook-receiver.js';
import { waitFor as waitUntil } from './support/wait.js';
import { inRedisSet, isPermanentKey } from './support/known.js';

const SECRET = 'daemon-test-secret';

async function scriptJson(): Promise<string[]> {
  const start = BigInt(Date.now() - 5_000) * 1_000_000n;
  return (await renderScript(start)).map((ev) => JSON.stringify(ev));
}

/**
 * Wait until the daemon has received `events`, decided all of them, and every alert it raised
 * reached the receiver: after this, "exactly N alerts" is a fact, not a race.
 */
async function settled(d: Daemon, receiver: WebhookReceiver, events: number): Promise<void> {
  await waitUntil(`${events} events received`, async () => (await d.metrics.value('t1612d_falco_events_total')) >= events);
  await d.settle();
  const raised = await d.metrics.value('t1612d_alerts_total');
  await receiver.waitFor(
    () => new Set(receiver.requests.map((r) => String(r.headers['x-t1612d-delivery']))).size >= raised,
    10_000,
    `${raised} alert(s) delivered`,
  );
}

async function readyz(port: number | undefined): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`);
  await res.arrayBuffer();
  return res.status;
}

describe('daemon end to end', function () {
  this.timeout(30_000);
  let redis: TestRedis;
  let receiver: WebhookReceiver;
  let dir: string;
  const cleanups: (() => Promise<unknown>)[] = [];

  before(async () => {
    redis = await TestRedis.start();
  });
  after(async () => {
    await redis.close();
  });
  beforeEach(async () => {
    receiver = await WebhookReceiver.start();
    dir = mkdtempSync(join(tmpdir(), 't1612d-daemon-'));
  });
  afterEach(async () => {
    // Every cleanup runs; a close() that fails is a failure of the test (close is idempotent).
    const errors: unknown[] = [];
    for (const c of cleanups.splice(0).reverse()) await c().catch((err: unknown) => errors.push(err));
    await receiver.close();
    rmSync(dir, { recursive: true, force: true });
    if (errors.length > 0) throw new AggregateError(errors, 'cleanup failed');
  });

  function config(overrides: Partial<Config>): Config {
    return resolveConfig({
      env: {},
      overrides: {
        httpAddress: '127.0.0.1:0',
        redisUrl: redis.url,
        redisPrefix: TestRedis.prefix(),
        webhookUrl: receiver.url,
        webhookSecret: SECRET,
        allowCidrs: [REGISTRY_CIDR],
        deliveryBackoffInitialMs: 50,
        falcoGrpcPollIntervalMs: 20,
        logLevel: 'silent',
        ...overrides,
      },
    });
  }

  async function startDaemon(cfg: Config): Promise<Daemon> {
    const d = new Daemon(cfg, { logger: silentLogger(), metrics: new Metrics() });
    cleanups.push(() => d.close());
    await d.start();
    return d;
  }

  function alertsReceived(): Alert[] {
    const seen = new Set<string>();
    const out: Alert[] = [];
    for (const r of receiver.requests) {
      const id = String(r.headers['x-t1612d-delivery']);
      if (seen.has(id)) continue;
      seen.add(id);
      out.push(JSON.parse(r.text) as Alert);
    }
    return out;
  }

  it('gRPC (unix socket) -> Redis -> signed webhook: the attack alerts once, critical; the benign build does not', async () => {
    const falco = await FalcoEmulator.start({ address: `unix://${join(dir, 'falco.sock')}` });
    cleanups.push(() => falco.close());
    const daemon = await startDaemon(config({ falcoGrpcAddress: falco.address }));
    for (const line of await scriptJson()) falco.enqueue(responseFromJson(line));

    await settled(daemon, receiver, demoScript().length);
    const alerts = alertsReceived();
    assert.equal(alerts.length, 1, JSON.stringify(alerts.map((a) => a.summary)));
    const [alert] = alerts as [Alert];
    assert.equal(alert.hostname, ATTACK_HOST);
    assert.equal(alert.destination.ip, ATTACKER_IP);
    assert.equal(alert.severity, 'critical');
    assert.equal(alert.connection.attribution, 'lineage');
    assert.equal(alert.build.trigger.remote_peer, '198.51.100.7:53422');
    assert.deepEqual(
      alert.evidence.map((e) => e.rule),
      ['T1612 Remote Docker API Connection', 'T1612 Builder Runtime Started', 'T1612 Build Step Outbound Connection'],
      'the evidence shows the remote accept, the build step and the download, in order',
    );
    assert.match(alert.evidence[0]?.output ?? '', /fd\.cip=198\.51\.100\.7/);
    const req = receiver.requests[0];
    assert.ok(req);
    assert.equal(req.headers['x-t1612d-delivery'], alert.id);
    assert.equal(req.headers['x-t1612d-signature'], `sha256=${createHmac('sha256', SECRET).update(req.body).digest('hex')}`);

    const m = daemon.metrics;
    assert.equal(await m.value('t1612d_falco_events_total', { source: 'grpc' }), demoScript().length);
    assert.equal(await m.value('t1612d_alerts_total', { severity: 'critical' }), 1);
    const text = await (await fetch(`http://127.0.0.1:${daemon.port}/metrics`)).text();
    assert.match(text, /t1612d_alerts_total\{severity="critical"\} 1/);
    assert.match(text, /t1612d_falco_connected 1/);
    await waitUntil('the delivery to be counted', async () => (await m.value('t1612d_deliveries_total', { status: 'ok' })) >= 1);

    // The known-IP set is in Redis, shared: another host's build reaching the same IP is quiet.
    const client = redis.client();
    cleanups.push(() => client.quit());
    const prefix = daemon.config.redisPrefix;
    assert.equal(await inRedisSet(client, prefix, 'default', ATTACKER_IP), true, 'the attacker IP is now known fleet-wide');
    assert.equal(await inRedisSet(client, prefix, 'default', '151.101.2.132'), true, 'baseline traffic was learned');
    assert.equal(await inRedisSet(client, prefix, 'default', '104.16.99.56'), false, 'allow-listed destinations are not recorded');
    const keys = await client.keys(`*${prefix}*`);
    assert.ok(keys.length > 0 && keys.every((k) => k.startsWith(`{${prefix}:default`)), `every key under an environment hash tag: ${keys.join(',')}`);
    // Every key that is not the known-IP set has a TTL (ARCHITECTURE.md "Redis keys").
    for (const k of keys) {
      if (isPermanentKey(k, prefix, 'default')) assert.equal(await client.pttl(k), -1, `${k} is permanent`);
      else assert.ok((await client.pttl(k)) > 0, `${k} has a TTL`);
    }
  });

  it('/readyz follows Falco: 503 while the gRPC server is down, 200 after it is back, and events flow again', async () => {
    const falco = await FalcoEmulator.start({ address: `unix://${join(dir, 'falco.sock')}` });
    cleanups.push(() => falco.close());
    const daemon = await startDaemon(config({ falcoGrpcAddress: falco.address }));
    await waitUntil('ready', async () => (await readyz(daemon.port)) === 200);

    await falco.stop();
    await waitUntil('not ready while Falco is down', async () => (await readyz(daemon.port)) === 503);
    assert.equal(await daemon.metrics.value('t1612d_falco_connected'), 0);
    const body = (await (await fetch(`http://127.0.0.1:${daemon.port}/readyz`)).json()) as { checks: Record<string, boolean> };
    assert.equal(body.checks['falco'], false);
    assert.equal(body.checks['redis'], true);

    await falco.restart();
    await waitUntil('ready again after Falco is back', async () => (await readyz(daemon.port)) === 200, 15_000);
    for (const line of await scriptJson()) falco.enqueue(responseFromJson(line));
    await receiver.waitFor(() => receiver.requests.length >= 1, 10_000, 'the alert after the restart');
    assert.equal(alertsReceived()[0]?.destination.ip, ATTACKER_IP);
  });

  it('Falco >= 0.44 mode: http_output bodies POSTed to /falco produce the same alert', async () => {
    const daemon = await startDaemon(config({ falcoGrpcAddress: '', httpToken: 'tok' }));
    assert.equal(await readyz(daemon.port), 200);
    for (const line of await scriptJson()) {
      // Falco's http_output: one event per POST, application/json.
      const res = await fetch(`http://127.0.0.1:${daemon.port}/falco`, {
        method: 'POST',
        body: line,
        headers: { 'content-type': 'application/json', authorization: 'Bearer tok' },
      });
      assert.equal(res.status, 200, await res.text());
    }
    await settled(daemon, receiver, demoScript().length);
    const alerts = alertsReceived();
    assert.equal(alerts.length, 1);
    assert.equal(alerts[0]?.severity, 'critical');
    assert.equal(await daemon.metrics.value('t1612d_falco_events_total', { source: 'http' }), demoScript().length);
  });

  it('starts while Redis is down, reports not ready, and decides the buffered events once Redis is up', async function () {
    if (!redis.controllable) this.skip(); // REDIS_URL points at a server this harness cannot stop
    const own = await TestRedis.start();
    cleanups.push(() => own.close());
    await own.stop();
    const daemon = await startDaemon(config({ falcoGrpcAddress: '', redisUrl: own.url }));
    const before = (await (await fetch(`http://127.0.0.1:${daemon.port}/readyz`)).json()) as { ready: boolean; checks: Record<string, boolean> };
    assert.equal(before.ready, false);
    assert.equal(before.checks['redis'], false);
    const res = await fetch(`http://127.0.0.1:${daemon.port}/falco`, { method: 'POST', body: (await scriptJson()).join('\n') });
    assert.equal(res.status, 200);
    // Held, not decided: every event is in, the egress ones wait in the correlator's buffer.
    await waitUntil('all events received', async () => (await daemon.metrics.value('t1612d_falco_events_total')) >= demoScript().length);
    await daemon.intake.whenIdle();
    assert.equal(await daemon.metrics.value('t1612d_alerts_total'), 0, 'nothing decided without Redis');
    assert.equal(receiver.requests.length, 0);

    await own.restart();
    await waitUntil('ready once Redis is back', async () => (await readyz(daemon.port)) === 200, 15_000);
    await receiver.waitFor(() => receiver.requests.length >= 1, 15_000, 'the buffered alert');
    assert.equal(alertsReceived()[0]?.destination.ip, ATTACKER_IP);
  });

  it('a graceful stop with in-memory stores first delivers the alerts still pending', async () => {
    let calls = 0;
    receiver.respond(() => (++calls <= 2 ? { status: 503 } : { status: 200 }));
    const daemon = await startDaemon(config({ falcoGrpcAddress: '', redisUrl: undefined, deliveryBackoffInitialMs: 200 }));
    const res = await fetch(`http://127.0.0.1:${daemon.port}/falco`, { method: 'POST', body: (await scriptJson()).join('\n') });
    assert.equal(res.status, 200);
    await receiver.waitFor(() => receiver.requests.length >= 1, 10_000, 'the first (refused) attempt');
    await daemon.close();
    assert.ok(calls >= 3, `delivered before close() resolved (attempts: ${calls})`);
    assert.equal(alertsReceived()[0]?.destination.ip, ATTACKER_IP);
  });

  it('refuses ingest beyond loopback without a token, and warns loudly when told to accept it', async () => {
    assert.throws(
      () => config({ falcoGrpcAddress: '', httpAddress: '0.0.0.0:0' }),
      (e: unknown) => e instanceof ConfigError && e.setting === 'http_token' && !e.message.includes('\n'),
    );
    const warned = async (overrides: Partial<Config>): Promise<boolean> => {
      const lines: string[] = [];
      const logger = createLogger({ level: 'warn', destination: { write: (l: string) => void lines.push(l) } });
      const d = new Daemon(config({ falcoGrpcAddress: '', httpAddress: '0.0.0.0:0', ...overrides }), { logger, metrics: new Metrics() });
      cleanups.push(() => d.close());
      await d.start();
      return lines.some((l) => l.includes('UNAUTHENTICATED INGEST') && l.includes('http_allow_unauthenticated'));
    };
    assert.equal(await warned({ httpAllowUnauthenticated: true }), true);
    assert.equal(await warned({ httpToken: 'tok' }), false);
  });

  it('close() is idempotent and leaves the daemon closed', async () => {
    const daemon = await startDaemon(config({ falcoGrpcAddress: '' }));
    const port = daemon.port;
    await Promise.all([daemon.close(), daemon.close()]);
    await daemon.close();
    await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`));
  });
});
