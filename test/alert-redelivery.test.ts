// Handing alerts to the sink: the event-to-alert latency recorded on success, a refused alert
// kept and retried on its own backoff until the sink takes it, the bounded backlog (overflow
// dropped, counted and logged), and stop().
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { AlertRedelivery } from '../src/detect/alert-redelivery.js';
import { buildAlert } from '../src/detect/build-alert.js';
import type { Alert } from '../src/model/alert.js';
import { Metrics } from '../src/ops/metrics.js';
import { ThrottledLog } from '../src/ops/throttled-log.js';
import { SIGNAL_TIME_MS, egressSignal, sessionRecord } from './support/records.js';
import { waitFor } from './support/wait.js';

function alert(ip: string): Alert {
  return buildAlert({
    builder: false,
    environment: 'default',
    session: sessionRecord({ host: 'node-a', startedAt: SIGNAL_TIME_MS, id: 's1' }),
    egress: egressSignal({ ip }),
    attribution: 'lineage',
    severity: 'high',
    firstSeenAt: SIGNAL_TIME_MS,
    nowMs: SIGNAL_TIME_MS,
  });
}

/** A sink that refuses while `refuse` is above zero (counting down), and keeps what it takes. */
class FlakySink {
  readonly taken: string[] = [];
  attempts = 0;
  /** Delay before answering, ms. */
  delayMs = 0;
  constructor(public refuse: number) {}
  async enqueue(a: Alert): Promise<void> {
    this.attempts++;
    if (this.delayMs > 0) await sleep(this.delayMs);
    if (this.refuse > 0) {
      this.refuse--;
      throw new Error('outbox unavailable');
    }
    this.taken.push(a.destination.ip);
  }
}

interface Harness {
  r: AlertRedelivery;
  sink: FlakySink;
  metrics: Metrics;
  lines: Record<string, unknown>[];
  idleCalls: { n: number };
}

function harness(refuse: number): Harness {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  const sink = new FlakySink(refuse);
  const metrics = new Metrics();
  const idleCalls = { n: 0 };
  const r = new AlertRedelivery({
    sink,
    metrics,
    logger,
    throttle: new ThrottledLog(logger, 10_000),
    onIdle: () => idleCalls.n++,
  });
  return { r, sink, metrics, lines, idleCalls };
}

async function latency(metrics: Metrics): Promise<{ count: number; sum: number }> {
  const data = await metrics.eventToAlertSeconds.get();
  const pick = (suffix: string): number => data.values.find((v) => v.metricName === `t1612d_event_to_alert_seconds${suffix}`)?.value ?? -1;
  return { count: pick('_count'), sum: pick('_sum') };
}

describe('alert redelivery', () => {
  it('an alert the sink takes: true, nothing kept, the event-to-alert time recorded in seconds', async () => {
    const h = harness(0);
    const t0 = performance.now() - 1_500;
    assert.equal(await h.r.deliver({ alert: alert('203.0.113.1'), t0 }), true);
    assert.deepEqual(h.sink.taken, ['203.0.113.1']);
    assert.equal(h.r.backlog, 0);
    assert.equal(h.r.idle, true);
    const l = await latency(h.metrics);
    assert.equal(l.count, 1);
    assert.ok(l.sum >= 1.5 && l.sum < 5, `recorded ${l.sum} s`);
    assert.equal(h.lines.length, 0);
  });

  it('a refused alert: false, one throttled warning naming it, kept and retried about 100 ms later until taken', async () => {
    const h = harness(2);
    const a = alert('203.0.113.2');
    const t = performance.now();
    assert.equal(await h.r.deliver({ alert: a, t0: t }), false);
    assert.equal(h.r.backlog, 1);
    assert.equal(h.r.idle, false);
    assert.deepEqual(h.sink.taken, []);
    const warn = h.lines.find((l) => l['msg'] === 'alert sink refused an alert; will retry');
    assert.equal(warn?.['level'], 40);
    assert.equal(warn?.['alert'], a.id);
    assert.match(JSON.stringify(warn?.['err']), /outbox unavailable/);
    await waitFor('the first retry', () => h.sink.attempts === 2, 5_000);
    assert.ok(performance.now() - t >= 70, 'not retried at once');
    assert.equal(h.idleCalls.n, 1, 'each retry round ends with onIdle');
    assert.equal(h.r.backlog, 1, 'refused again, kept again');
    await waitFor('delivery', () => h.sink.taken.length === 1, 5_000);
    assert.deepEqual(h.sink.taken, ['203.0.113.2']);
    assert.equal(h.r.backlog, 0);
    assert.equal(h.r.idle, true);
    assert.equal(h.idleCalls.n, 2);
    assert.equal((await latency(h.metrics)).count, 1, 'recorded once, when taken');
    assert.equal(h.lines.filter((l) => l['msg'] === 'alert sink refused an alert; will retry').length, 1, 'throttled');
    await sleep(300);
    assert.equal(h.sink.attempts, 3, 'no retries once delivered');
  });

  it('retries every kept alert in one round, in order', async () => {
    const h = harness(3);
    for (const ip of ['203.0.113.11', '203.0.113.12', '203.0.113.13']) assert.equal(await h.r.deliver({ alert: alert(ip), t0: 0 }), false);
    assert.equal(h.r.backlog, 3);
    await waitFor('delivery', () => h.sink.taken.length === 3, 5_000);
    assert.deepEqual(h.sink.taken, ['203.0.113.11', '203.0.113.12', '203.0.113.13']);
    assert.equal(h.idleCalls.n, 1);
  });

  it('is not idle while a retry round is running', async () => {
    const h = harness(1);
    await h.r.deliver({ alert: alert('203.0.113.21'), t0: 0 });
    h.sink.delayMs = 200;
    await waitFor('the retry round', () => h.sink.attempts === 2, 5_000);
    assert.equal(h.r.backlog, 0, 'taken out for the retry');
    assert.equal(h.r.idle, false, 'the retry is in flight');
    await waitFor('delivery', () => h.sink.taken.length === 1, 5_000);
    assert.equal(h.r.idle, true);
  });

  it('one retry round at a time: a slow round is not overlapped by the next timer', async () => {
    const h = harness(1_000);
    await h.r.deliver({ alert: alert('203.0.113.31'), t0: 0 });
    await h.r.deliver({ alert: alert('203.0.113.32'), t0: 0 });
    // Each attempt takes longer than the backoff: the first alert's refusal sets the next
    // timer, which fires while the second alert is still being tried.
    h.sink.delayMs = 400;
    let concurrent = 0;
    let maxConcurrent = 0;
    const enqueue = h.sink.enqueue.bind(h.sink);
    h.sink.enqueue = async (a: Alert) => {
      concurrent++;
      maxConcurrent = Math.max(maxConcurrent, concurrent);
      try {
        await enqueue(a);
      } finally {
        concurrent--;
      }
    };
    await waitFor('four retry attempts', () => h.sink.attempts >= 6, 10_000);
    h.r.stop();
    assert.equal(maxConcurrent, 1);
  });

  it('the retry delay grows while the sink keeps refusing', async () => {
    // Five refusals: at least 0.8 × (100 + 160 + 256 + 410 + 655) ms before the delivery;
    // with a delay that did not grow it would be about 100 + 4 × 160.
    const h = harness(5);
    const t = performance.now();
    await h.r.deliver({ alert: alert('203.0.113.45'), t0: 0 });
    await waitFor('delivery', () => h.sink.taken.length === 1, 10_000);
    const took = performance.now() - t;
    assert.ok(took >= 1_200, `delivered after ${Math.round(took)} ms`);
  });

  it('after a delivery the backoff starts over from its first delay', async () => {
    // Four refusals in a row: the next delay would be about 650 ms.
    const h = harness(4);
    await h.r.deliver({ alert: alert('203.0.113.41'), t0: 0 });
    await waitFor('delivery', () => h.sink.taken.length === 1, 10_000);
    // A new refusal after the delivery is retried after the first delay (about 100 ms) again.
    h.sink.refuse = 1;
    const t = performance.now();
    await h.r.deliver({ alert: alert('203.0.113.42'), t0: 0 });
    await waitFor('second delivery', () => h.sink.taken.length === 2, 10_000);
    assert.ok(performance.now() - t < 400, `retried after ${Math.round(performance.now() - t)} ms`);
  });

  it('keeps at most 10000 refused alerts; beyond that each is dropped, counted and logged as an error', async () => {
    const h = harness(Number.POSITIVE_INFINITY);
    const a = alert('203.0.113.51');
    for (let i = 0; i < 10_000; i++) await h.r.deliver({ alert: a, t0: 0 });
    assert.equal(h.r.backlog, 10_000);
    assert.equal(await h.metrics.value('t1612d_dropped_events_total'), 0);
    assert.equal(h.lines.filter((l) => l['level'] === 50).length, 0);
    assert.equal(await h.r.deliver({ alert: alert('203.0.113.52'), t0: 0 }), false);
    assert.equal(h.r.backlog, 10_000);
    assert.equal(await h.metrics.value('t1612d_dropped_events_total', { reason: 'sink_backlog_full' }), 1);
    const err = h.lines.find((l) => l['level'] === 50);
    assert.equal(err?.['msg'], 'alert sink backlog full: alert dropped');
    assert.equal((err?.['alert'] as { destination?: { ip?: string } } | undefined)?.destination?.ip, '203.0.113.52');
    h.r.stop();
  });

  it('after stop() nothing is retried and what waits stays undelivered', async () => {
    const h = harness(1);
    await h.r.deliver({ alert: alert('203.0.113.61'), t0: 0 });
    h.r.stop();
    await sleep(300);
    assert.equal(h.sink.attempts, 1);
    assert.equal(h.r.backlog, 1);
    // A refusal after stop is kept but not scheduled either.
    h.sink.refuse = 1;
    await h.r.deliver({ alert: alert('203.0.113.62'), t0: 0 });
    await sleep(300);
    assert.equal(h.sink.attempts, 2);
    assert.equal(h.r.backlog, 2);
    assert.equal(h.idleCalls.n, 0);
  });
});
