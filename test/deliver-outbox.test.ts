// The delivery outbox against a real webhook receiver, once with the Redis store and once in
// memory: retries through outages, timeouts, 429 Retry-After, dead letters and their replay,
// the concurrency bound under a burst, the length cap, idempotent close, and (Redis only)
// resuming and taking over pending alerts, a sink added later, malformed stream entries,
// a Redis restart that lost the stream, and key layout with TTLs.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { pino, type Logger } from 'pino';
import type { Redis } from 'ioredis';
import { resolveConfig, type Config } from '../src/config/config.js';
import { createOutbox, replayDeadLetters, retryDelayMs, type Outbox, type OutboxTuning } from '../src/deliver/outbox.js';
import { laneKeys } from '../src/deliver/outbox-redis.js';
import { keySlot } from '../src/store/redis/slots.js';
import { legacyKeys } from '../src/store/redis/keys.js';
import { createSinks } from '../src/deliver/sinks.js';
import { ClosedError } from '../src/model/errors.js';
import { Metrics } from '../src/ops/metrics.js';
import { silentLogger } from '../src/ops/logger.js';
import { TestRedis } from './support/redis.js';
import { WebhookReceiver, sampleAlert } from './support/webhook-receiver.js';
import { withinMs } from './support/wait.js';

const SECRET = 'test-secret';

function capturingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, lines };
}

function validSignature(req: { body: Buffer; headers: Record<string, unknown> }): boolean {
  return req.headers['x-t1612d-signature'] === `sha256=${createHmac('sha256', SECRET).update(req.body).digest('hex')}`;
}

for (const kind of ['redis', 'memory'] as const) {
  describe(`deliver: outbox (${kind})`, function () {
    let redis: TestRedis | undefined;
    let rx: WebhookReceiver;
    let cfg: Config;
    let metrics: Metrics;
    const outboxes: Outbox[] = [];
    const clients: Redis[] = [];

    before(async () => {
      if (kind === 'redis') redis = await TestRedis.start();
    });
    after(async () => {
      await redis?.close();
    });
    beforeEach(async () => {
      rx = await WebhookReceiver.start();
      metrics = new Metrics();
      cfg = config();
    });
    afterEach(async () => {
      for (const o of outboxes.splice(0)) await o.close();
      for (const c of clients.splice(0)) c.disconnect();
      await rx.close();
    });

    function config(over: Partial<Config> = {}): Config {
      return resolveConfig({
        env: {},
        overrides: {
          redisUrl: redis?.url,
          redisPrefix: TestRedis.prefix(),
          webhookUrl: rx.url,
          webhookSecret: SECRET,
          // Generous, so a slow answer on a loaded runner is not a timeout (and an extra
          // attempt that would break the exact counts below); the timeout test lowers it.
          webhookTimeoutMs: 5_000,
          webhookConcurrency: 3,
          webhookMaxAttempts: 50,
          deliveryBackoffInitialMs: 20,
          deliveryBackoffMaxMs: 200,
          outboxMaxLen: 10_000,
          shutdownTimeoutMs: 2_000,
          ...over,
        },
      });
    }

    function outbox(c: Config = cfg, opts: { logger?: Logger; tuning?: OutboxTuning; metrics?: Metrics } = {}): Outbox {
      const logger = opts.logger ?? silentLogger();
      const o = createOutbox(c, {
        sinks: createSinks(c, { logger }),
        metrics: opts.metrics ?? metrics,
        logger,
        ...(kind === 'memory' ? { redis: false as const } : {}),
        tuning: { blockMs: 100, claimIdleMs: 400, maintenanceMs: 50, ...opts.tuning },
      });
      outboxes.push(o);
      return o;
    }

    it(`uses the ${kind} store`, () => {
      assert.equal(outbox().kind, kind);
    });

    it('a receiver down until every alert failed, then failing once, then up: every alert arrives, signed, with a stable delivery id', async function () {
      this.timeout(20_000);
      await rx.down();
      const { logger, lines } = capturingLogger();
      const o = outbox(cfg, { logger });
      o.start();
      const alerts = Array.from({ length: 12 }, (_, i) => sampleAlert(i));
      for (const a of alerts) await o.enqueue(a);
      // A receiver that is down records nothing, so the outbox's side shows the outage: every
      // alert has had a failed attempt (connection refused) and is still pending.
      const failed = (): Set<unknown> =>
        new Set(lines.filter((l) => l['msg'] === 'alert delivery failed; will retry').map((l) => l['alertId']));
      await waitFor(async () => failed().size === alerts.length, 10_000, () => `every alert to fail once while the receiver is down (${failed().size} of ${alerts.length} so far)`);
      assert.ok((await metrics.value('t1612d_deliveries_total', { sink: 'webhook', status: 'retry' })) >= alerts.length);
      assert.equal(await metrics.value('t1612d_deliveries_total', { sink: 'webhook', status: 'ok' }), 0);
      assert.equal(await o.pending(), alerts.length, 'every alert still pending during the outage');
      const seen = new Set<string>();
      rx.respond((req) => {
        const id = String(req.headers['x-t1612d-delivery']);
        if (seen.has(id)) return { status: 200 };
        seen.add(id);
        return { status: 503 };
      });
      await rx.up();
      assert.equal(await o.drain(10_000), true);
      assert.equal(rx.accepted.size, alerts.length);
      for (const a of alerts) {
        const reqs = rx.byDelivery(a.id);
        assert.ok(reqs.length >= 2, `alert ${a.id} was retried after a 503`);
        for (const r of reqs) {
          assert.ok(validSignature(r), 'signature valid on every attempt');
          assert.ok(r.body.equals(Buffer.from(JSON.stringify(a))), 'same bytes on every attempt');
        }
      }
      assert.equal(await metrics.value('t1612d_deliveries_total', { sink: 'webhook', status: 'ok' }), alerts.length);
      assert.ok((await metrics.value('t1612d_deliveries_total', { sink: 'webhook', status: 'retry' })) >= alerts.length);
      assert.equal(await metrics.value('t1612d_outbox_pending'), 0);
    });

    it('retries a 500 and a request slower than the timeout, and honours Retry-After on 429', async function () {
      this.timeout(15_000);
      const o = outbox(config({ webhookTimeoutMs: 500 }));
      o.start();
      const [a500, aSlow, a429] = [sampleAlert(1), sampleAlert(2), sampleAlert(3)];
      rx.respond((req) => {
        const id = req.headers['x-t1612d-delivery'];
        const n = rx.requests.filter((r) => r.headers['x-t1612d-delivery'] === id).length;
        if (n > 1) return { status: 200 };
        if (id === a500.id) return { status: 500, body: 'oops' };
        // Far beyond the 500ms timeout, so only a timeout ends it; the client's abort (or
        // rx.close() in afterEach) closes the response and cancels the delayed reply.
        if (id === aSlow.id) return { status: 200, delayMs: 5_000 };
        return { status: 429, headers: { 'Retry-After': '1' } };
      });
      for (const a of [a500, aSlow, a429]) await o.enqueue(a);
      assert.equal(await o.drain(10_000), true);
      assert.deepEqual([a500, aSlow, a429].map((a) => rx.byDelivery(a.id).length), [2, 2, 2]);
      const [first429, second429] = rx.byDelivery(a429.id);
      assert.ok(first429 && second429);
      // The plain backoff here is ~20ms; Retry-After: 1 stretches it to the 200ms cap.
      assert.ok(second429.at - first429.at >= 150, `spacing ${second429.at - first429.at}ms`);
    });

    it('Retry-After is honoured up to the backoff cap', async function () {
      this.timeout(15_000);
      const c = config({ deliveryBackoffMaxMs: 5_000 });
      const o = outbox(c);
      o.start();
      const a = sampleAlert(4);
      rx.respond(() => (rx.requests.length === 1 ? { status: 429, headers: { 'Retry-After': '1' } } : { status: 200 }));
      await o.enqueue(a);
      assert.equal(await o.drain(10_000), true);
      const [r1, r2] = rx.byDelivery(a.id);
      assert.ok(r1 && r2);
      assert.ok(r2.at - r1.at >= 900, `waited ${r2.at - r1.at}ms for Retry-After: 1`);
    });

    it('dead-letters a 400 at once, logging status and body; dead letters can be replayed', async function () {
      this.timeout(15_000);
      const { logger, lines } = capturingLogger();
      const o = outbox(cfg, { logger });
      o.start();
      const a = sampleAlert(5);
      rx.respond(() => ({ status: 400, body: 'missing field: tenant' }));
      await o.enqueue(a);
      assert.equal(await o.drain(5_000), true);
      assert.equal(rx.byDelivery(a.id).length, 1, 'no retry after a 400');
      assert.equal(await o.deadLetters(), 1);
      const log = lines.find((l) => l['msg'] === 'alert delivery gave up; moved to dead letters');
      assert.ok(log, 'gave-up line logged');
      assert.equal(log['status'], 400);
      assert.equal(log['body'], 'missing field: tenant');
      assert.equal(log['alertId'], a.id);
      assert.equal(await metrics.value('t1612d_deliveries_total', { sink: 'webhook', status: 'dead' }), 1);
      await waitFor(async () => (await metrics.value('t1612d_outbox_dead_letters')) === 1, 5_000, 'the dead-letter gauge to read 1');

      rx.respond(() => ({ status: 200 }));
      assert.equal(await o.replayDeadLetters(), 1);
      assert.equal(await o.drain(5_000), true);
      assert.equal(await o.deadLetters(), 0);
      assert.equal(rx.byDelivery(a.id).length, 2);
      assert.equal(rx.accepted.has(a.id), true);
      assert.equal(rx.byDelivery(a.id)[1]?.text, JSON.stringify(a), 'replayed with the same body and delivery id');
    });

    it('after the attempt limit an alert moves to the dead letters with the last error', async function () {
      this.timeout(15_000);
      const c = config({ webhookMaxAttempts: 3 });
      const o = outbox(c);
      o.start();
      const a = sampleAlert(6);
      rx.respond(() => ({ status: 502, body: 'bad gateway' }));
      await o.enqueue(a);
      assert.equal(await o.drain(5_000), true);
      assert.equal(rx.byDelivery(a.id).length, 3);
      assert.equal(await o.deadLetters(), 1);
      if (redis) {
        const r = redis.client();
        clients.push(r);
        const [[, fields] = ['', []]] = await r.xrange(laneKeys(c.redisPrefix, c.environment, 'webhook').dead, '-', '+');
        const f = Object.fromEntries(Array.from({ length: fields.length / 2 }, (_, i) => [fields[2 * i], fields[2 * i + 1]]));
        assert.equal(f['error'], 'HTTP 502');
        assert.equal(f['status'], '502');
        assert.equal(f['response'], 'bad gateway');
        assert.equal(f['attempts'], '3');
        assert.equal(f['sink'], 'webhook');
        assert.equal(f['alert_id'], a.id);
        assert.equal(f['alert'], JSON.stringify(a));
        // The CLI path: replay from another process's point of view.
        rx.respond(() => ({ status: 200 }));
        assert.equal(await replayDeadLetters(c, { logger: silentLogger() }), 1);
        assert.equal(await o.drain(5_000), true);
        assert.equal(rx.accepted.has(a.id), true);
        assert.equal(await r.xlen(laneKeys(c.redisPrefix, c.environment, 'webhook').dead), 0);
      } else {
        rx.respond(() => ({ status: 200 }));
        assert.equal(await o.replayDeadLetters('webhook'), 1);
        assert.equal(await o.drain(5_000), true);
        assert.equal(rx.accepted.has(a.id), true);
      }
    });

    it('a burst of 1,000 alerts with 3 concurrent requests: all delivered, bound respected, memory bounded', async function () {
      this.timeout(30_000);
      const o = outbox(cfg, { tuning: { maxInFlight: 24 } });
      rx.respond(() => ({ status: 200, delayMs: 1 }));
      o.start();
      const n = 1_000;
      await Promise.all(Array.from({ length: n }, (_, i) => o.enqueue(sampleAlert(i))));
      assert.equal(await o.drain(25_000), true);
      assert.equal(rx.accepted.size, n);
      assert.ok(rx.maxInFlight <= 3, `receiver saw ${rx.maxInFlight} concurrent requests`);
      assert.equal(rx.maxInFlight, 3, 'the bound is used, not undershot');
      const s = o.stats();
      assert.ok(s.sendingHighWater <= 3);
      assert.ok(s.heldHighWater <= 24, `outbox held ${s.heldHighWater} entries at once`);
      assert.equal(s.held, 0);
    });

    it('counts undelivered alerts dropped by the length cap', async function () {
      this.timeout(15_000);
      const c = config({ outboxMaxLen: 100 });
      const o = outbox(c);
      // Not started: nothing is delivered, so trimming can only drop undelivered alerts.
      for (let i = 0; i < 400; i++) await o.enqueue(sampleAlert(i));
      const trimmed = await metrics.value('t1612d_outbox_trimmed_undelivered_total');
      assert.ok(trimmed >= 100, `trimmed ${trimmed}`);
      assert.equal(trimmed + (await o.pending()), 400, 'every alert is either still pending or counted as trimmed');
    });

    it('close() is idempotent, cuts retry sleeps short and refuses new alerts', async function () {
      this.timeout(45_000);
      const c = config({ deliveryBackoffInitialMs: 60_000, deliveryBackoffMaxMs: 60_000 });
      const o = outbox(c);
      o.start();
      rx.respond(() => ({ status: 503 }));
      await o.enqueue(sampleAlert(1));
      await rx.waitFor(() => rx.requests.length === 1, 5_000, 'first attempt');
      // The retry sleep is ~60s (48s at the least jitter): finishing well inside 30s proves
      // close() aborted it rather than waiting it out. A bound, not a speed measurement.
      await withinMs(Promise.all([o.close(), o.close()]), 30_000, 'close() to cut the 60s retry sleep short');
      await assert.rejects(o.enqueue(sampleAlert(2)), ClosedError);
    });

    if (kind === 'redis') {
      it('stopped with alerts pending, a new outbox resumes them: none lost, each seen once by a deduplicating receiver', async function () {
        this.timeout(20_000);
        // First run: the receiver accepts a few, then starts failing.
        rx.respond(() => (rx.accepted.size < 5 ? { status: 200 } : { status: 503 }));
        const first = outbox(cfg, { tuning: { consumerName: 'node-a:1' } });
        first.start();
        const alerts = Array.from({ length: 40 }, (_, i) => sampleAlert(i));
        for (const a of alerts) await first.enqueue(a);
        await rx.waitFor(() => rx.requests.length >= 20, 5_000, 'some attempts');
        await first.close();
        assert.ok((await pendingOf(cfg)) > 0, 'alerts were pending at the stop');

        // Second run under the same consumer name: resumes its own pending entries at once.
        rx.respond(() => ({ status: 200 }));
        const second = outbox(cfg, { tuning: { consumerName: 'node-a:1' } });
        second.start();
        assert.equal(await second.drain(10_000), true);
        assert.equal(rx.accepted.size, alerts.length, 'every alert delivered');
        for (const a of alerts) assert.ok(rx.accepted.has(a.id));
      });

      it("another daemon takes over a stopped consumer's pending alerts once they are idle", async function () {
        this.timeout(20_000);
        rx.respond(() => ({ status: 503 }));
        const crashed = outbox(cfg, { tuning: { consumerName: 'node-a:1' } });
        crashed.start();
        const alerts = Array.from({ length: 10 }, (_, i) => sampleAlert(100 + i));
        for (const a of alerts) await crashed.enqueue(a);
        await rx.waitFor(() => new Set(rx.requests.map((r) => r.headers['x-t1612d-delivery'])).size === 10, 5_000, 'all attempted');
        await crashed.close();

        rx.respond(() => ({ status: 200 }));
        const t0 = Date.now();
        const other = outbox(cfg, { tuning: { consumerName: 'node-b:7', claimIdleMs: 400 } });
        other.start();
        assert.equal(await other.drain(10_000), true);
        assert.equal(rx.accepted.size, alerts.length);
        assert.ok(Date.now() - t0 >= 150, 'waited for the entries to go idle');
      });

      it('a sink added later sees new alerts only; each sink acknowledges independently', async function () {
        this.timeout(15_000);
        const sidekickRx = await WebhookReceiver.start();
        try {
          const webhookOnly = outbox(cfg);
          await webhookOnly.enqueue(sampleAlert(1));
          await webhookOnly.close();
          const c = config({ redisPrefix: cfg.redisPrefix, sidekickUrl: sidekickRx.url });
          sidekickRx.respond(() => ({ status: 500 }));
          const both = outbox(c, { tuning: { consumerName: 'x:1' } });
          both.start();
          await both.enqueue(sampleAlert(2));
          await rx.waitFor(() => rx.accepted.size === 2, 5_000, 'webhook deliveries');
          await sidekickRx.waitFor(() => sidekickRx.requests.length >= 2, 5_000, 'sidekick retries');
          assert.deepEqual(new Set(sidekickRx.requests.map((r) => r.headers['x-t1612d-delivery'])), new Set([sampleAlert(2).id]));
          assert.equal(await both.pending(), 1, 'sidekick still owes one');
          sidekickRx.respond(() => ({ status: 200 }));
          assert.equal(await both.drain(5_000), true);
          assert.equal(rx.duplicates, 0);
        } finally {
          for (const o of outboxes.splice(0)) await o.close();
          await sidekickRx.close();
        }
      });

      it('dead-letters a malformed stream entry instead of crashing, and keeps delivering', async function () {
        this.timeout(10_000);
        const o = outbox();
        await o.enqueue(sampleAlert(1)); // creates the group
        const r = redis!.client();
        clients.push(r);
        const { stream } = laneKeys(cfg.redisPrefix, cfg.environment, 'webhook');
        await r.xadd(stream, '*', 'alert', '{not json');
        await r.xadd(stream, '*', 'something', 'else');
        await o.enqueue(sampleAlert(2));
        o.start();
        assert.equal(await o.drain(5_000), true);
        assert.equal(rx.accepted.size, 2);
        assert.equal(await o.deadLetters(), 2);
      });

      it('survives a Redis restart that lost the stream: reads resume and new alerts are delivered', async function () {
        this.timeout(20_000);
        // REDIS_URL points at a server this harness did not start and cannot restart.
        if (!redis?.controllable) this.skip();
        const o = outbox();
        o.start();
        await o.enqueue(sampleAlert(1));
        await rx.waitFor(() => rx.accepted.size === 1, 5_000, 'first delivery');
        await redis.restart();
        await o.enqueue(sampleAlert(2));
        await rx.waitFor(() => rx.accepted.size === 2, 10_000, 'delivery after the restart');
        assert.equal(await o.drain(5_000), true);
      });

      it('started on an outbox in the single-stream layout: delivers everything still owed there, moves its dead letters, then deletes it', async function () {
        this.timeout(20_000);
        const sidekickRx = await WebhookReceiver.start();
        try {
          const r = redis!.client();
          clients.push(r);
          // The first layout, written as the previous version did: one stream, a group per sink.
          const old = legacyKeys(cfg.redisPrefix, 'default').outbox;
          await r.xgroup('CREATE', old.stream, 'webhook', '$', 'MKSTREAM');
          await r.xgroup('CREATE', old.stream, 'sidekick', '$');
          const alerts = Array.from({ length: 6 }, (_, i) => sampleAlert(300 + i));
          const ids: string[] = [];
          for (const a of alerts) ids.push(String(await r.xadd(old.stream, '*', 'alert', JSON.stringify(a), 'at', String(Date.now()))));
          // A dead letter replayed for sidekick only (the `sinks` field).
          const replayed = sampleAlert(310);
          await r.xadd(old.stream, '*', 'alert', JSON.stringify(replayed), 'at', String(Date.now()), 'sinks', 'sidekick');
          // webhook: a stopped daemon read the first two and delivered only the first.
          await r.xreadgroup('GROUP', 'webhook', 'old-node:1', 'COUNT', 2, 'STREAMS', old.stream, '>');
          await r.xack(old.stream, 'webhook', ids[0]!);
          await r.hset(old.attempts('webhook'), ids[1]!, '1');
          // sidekick: read everything, delivered the first three.
          await r.xreadgroup('GROUP', 'sidekick', 'old-node:1', 'STREAMS', old.stream, '>');
          await r.xack(old.stream, 'sidekick', ids[0]!, ids[1]!, ids[2]!);
          const dead = sampleAlert(320);
          await r.xadd(old.dead, '*', 'alert', JSON.stringify(dead), 'sink', 'webhook', 'error', 'HTTP 400', 'attempts', '1', 'alert_id', dead.id);

          const c = config({ redisPrefix: cfg.redisPrefix, sidekickUrl: sidekickRx.url });
          const o = outbox(c, { tuning: { consumerName: 'new-node:1', claimIdleMs: 400 } });
          o.start();
          const fresh = sampleAlert(330);
          await o.enqueue(fresh);
          await waitFor(async () => (await r.exists(old.stream, old.dead, old.attempts('webhook'))) === 0, 10_000, 'the single-stream keys to be deleted');
          assert.equal(await o.drain(5_000), true);
          const got = (x: WebhookReceiver): string[] => [...x.accepted.keys()].sort();
          assert.deepEqual(got(rx), [...alerts.slice(1), fresh].map((a) => a.id).sort(), 'webhook: the pending, the unread and the new one');
          assert.deepEqual(got(sidekickRx), [...alerts.slice(3), replayed, fresh].map((a) => a.id).sort(), 'sidekick: its own backlog there and the new one');
          assert.equal(rx.duplicates + sidekickRx.duplicates, 0);
          // The old dead letter now sits in the webhook lane, and replays from there.
          assert.equal(await o.deadLetters(), 1);
          assert.equal(await r.xlen(laneKeys(c.redisPrefix, c.environment, 'webhook').dead), 1);
          assert.equal(await replayDeadLetters(c, { logger: silentLogger() }), 1);
          assert.equal(await o.drain(5_000), true);
          assert.equal(rx.accepted.has(dead.id), true);
          assert.deepEqual(await r.keys(`{${cfg.redisPrefix}:default}*`), [], 'nothing left in the single-slot layout');
        } finally {
          for (const o of outboxes.splice(0)) await o.close();
          await sidekickRx.close();
        }
      });

      it('keeps the single-stream outbox while a sink no running daemon serves still owes alerts there', async function () {
        this.timeout(20_000);
        const sidekickRx = await WebhookReceiver.start();
        try {
          const r = redis!.client();
          clients.push(r);
          const old = legacyKeys(cfg.redisPrefix, 'default').outbox;
          await r.xgroup('CREATE', old.stream, 'webhook', '$', 'MKSTREAM');
          await r.xgroup('CREATE', old.stream, 'sidekick', '$');
          const alerts = Array.from({ length: 3 }, (_, i) => sampleAlert(500 + i));
          for (const a of alerts) await r.xadd(old.stream, '*', 'alert', JSON.stringify(a), 'at', String(Date.now()));
          // A daemon with the webhook only delivers its share and must leave sidekick's there.
          const webhookOnly = outbox(cfg, { tuning: { consumerName: 'a:1' } });
          webhookOnly.start();
          await rx.waitFor(() => alerts.every((a) => rx.accepted.has(a.id)), 10_000, 'webhook deliveries');
          assert.equal(await webhookOnly.drain(5_000), true);
          assert.equal(await r.exists(old.stream), 1, 'kept: sidekick has not read its alerts yet');
          await webhookOnly.close();
          // A daemon with both sinks delivers sidekick's share; then the old keys go.
          const both = outbox(config({ redisPrefix: cfg.redisPrefix, sidekickUrl: sidekickRx.url }), { tuning: { consumerName: 'b:1' } });
          both.start();
          await sidekickRx.waitFor(() => alerts.every((a) => sidekickRx.accepted.has(a.id)), 10_000, 'sidekick deliveries');
          await waitFor(async () => (await r.exists(old.stream)) === 0, 10_000, 'the single-stream outbox to be deleted');
          assert.equal(rx.accepted.size, alerts.length, 'nothing sent twice to the webhook');
          assert.equal(rx.duplicates, 0);
        } finally {
          for (const o of outboxes.splice(0)) await o.close();
          await sidekickRx.close();
        }
      });

      it("a lane whose write fails is retried alone: the other lane's receiver gets the alert once", async function () {
        this.timeout(15_000);
        const sidekickRx = await WebhookReceiver.start();
        try {
          const r = redis!.client();
          clients.push(r);
          const c = config({ redisPrefix: cfg.redisPrefix, sidekickUrl: sidekickRx.url });
          // A value of the wrong type makes every write to the sidekick lane fail until removed.
          const broken = laneKeys(c.redisPrefix, c.environment, 'sidekick').stream;
          await r.set(broken, 'not a stream');
          const { logger, lines } = capturingLogger();
          const o = outbox(c, { logger });
          o.start();
          const a = sampleAlert(400);
          const enqueued = o.enqueue(a);
          // Awaited below; a failed assertion before that must not leave it unhandled.
          enqueued.catch(() => undefined);
          // (A write before the connection is up fails for both lanes; those lines are not these.)
          const wrongType = (): Record<string, unknown>[] =>
            lines.filter((l) => l['msg'] === 'outbox write failed; retrying' && String(l['err']).includes('WRONGTYPE'));
          await waitFor(async () => wrongType().length >= 3, 10_000, 'retried writes');
          assert.deepEqual(wrongType().map((l) => l['sinks']), wrongType().map(() => ['sidekick']), 'only the failed lane is retried');
          await r.del(broken);
          await enqueued;
          await sidekickRx.waitFor(() => sidekickRx.accepted.has(a.id), 10_000, 'the sidekick delivery');
          assert.equal(await o.drain(5_000), true);
          assert.equal(rx.byDelivery(a.id).length, 1, 'the webhook lane was written once');
          assert.equal(await r.xlen(laneKeys(c.redisPrefix, c.environment, 'webhook').stream), 1);
        } finally {
          for (const o of outboxes.splice(0)) await o.close();
          await sidekickRx.close();
        }
      });

      it("keeps each sink's keys in its lane's own slot, each with a TTL", async function () {
        this.timeout(10_000);
        const sidekickRx = await WebhookReceiver.start();
        try {
          rx.respond(() => ({ status: 503 }));
          sidekickRx.respond(() => ({ status: 400 }));
          const c = config({ redisPrefix: cfg.redisPrefix, sidekickUrl: sidekickRx.url });
          const o = outbox(c);
          o.start();
          await o.enqueue(sampleAlert(1));
          await rx.waitFor(() => rx.requests.length >= 1, 5_000);
          await waitFor(async () => (await o.deadLetters()) === 1, 5_000, 'the sidekick dead letter');
          const r = redis!.client();
          clients.push(r);
          const keys = (await r.keys(`*${cfg.redisPrefix}*`)).sort();
          const lanes = { webhook: laneKeys(cfg.redisPrefix, 'default', 'webhook'), sidekick: laneKeys(cfg.redisPrefix, 'default', 'sidekick') };
          // The webhook lane: stream and attempt counts; the sidekick lane: stream and dead letters.
          assert.deepEqual(keys, [lanes.sidekick.stream, lanes.sidekick.dead, lanes.webhook.stream, lanes.webhook.attempts].sort());
          assert.equal(lanes.webhook.stream, `{${cfg.redisPrefix}:default:lane:webhook}:outbox`);
          for (const [sink, lane] of Object.entries(lanes)) {
            for (const k of keys.filter((k) => k.includes(`:lane:${sink}}`))) assert.equal(keySlot(k), keySlot(lane.stream), `${k} in the ${sink} lane's slot`);
          }
          assert.notEqual(keySlot(lanes.webhook.stream), keySlot(lanes.sidekick.stream), 'the lanes are in different slots');
          assert.notEqual(keySlot(lanes.webhook.stream), keySlot(legacyKeys(cfg.redisPrefix, 'default').outbox.stream));
          // Every key but the known-IP set has a TTL: the streams too (long, refreshed on use).
          for (const k of keys) assert.ok((await r.pttl(k)) > 0, `${k} has a TTL`);
        } finally {
          for (const o of outboxes.splice(0)) await o.close();
          await sidekickRx.close();
        }
      });
    }

    async function pendingOf(c: Config): Promise<number> {
      const r = redis!.client();
      clients.push(r);
      const groups = (await r.xinfo('GROUPS', laneKeys(c.redisPrefix, c.environment, 'webhook').stream)) as unknown[][];
      let n = 0;
      for (const g of groups) n += Number(g[g.indexOf('pending') + 1]);
      return n;
    }
  });
}

describe('deliver: retry delays', () => {
  it('grow exponentially with ±20% jitter up to the cap', () => {
    const mid = (): number => 0.5;
    assert.deepEqual([1, 2, 3, 4, 5, 6].map((n) => retryDelayMs(n, 1_000, 10_000, mid)), [1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
    assert.equal(retryDelayMs(1, 1_000, 10_000, () => 0), 800);
    assert.equal(retryDelayMs(10, 1_000, 10_000, () => 0.999), 10_000, 'jitter never exceeds the cap');
  });
});

/** Poll until `pred` holds; after `timeoutMs`, fail naming what was awaited. */
async function waitFor(pred: () => Promise<boolean>, timeoutMs: number, what: string | (() => string) = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${typeof what === 'string' ? what : what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

