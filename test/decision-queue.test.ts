// The decision queue on its own: what it reports (length, full, ready, outage, queued), how it
// runs rounds of store work (one at a time, until nothing is left), what flush() and room()
// wait for, and how it behaves while the store is unreachable (buffering, retries, the log
// lines an operator sees) and after stop().
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { DecisionQueue, MIN_BATCH, type Pending } from '../src/detect/decision-queue.js';
import { egressSignal } from './support/records.js';
import { waitFor, withinMs } from './support/wait.js';

function pending(ip: string, host = 'node-a'): Pending {
  return { sig: egressSignal({ ip, host }), nowMs: 0, t0: 0, token: ip };
}

interface Harness {
  q: DecisionQueue;
  /** The IPs (events) and refreshed IPs each round decided. */
  rounds: { ips: string[]; touched: string[] }[];
  lines: Record<string, unknown>[];
  up: { value: boolean };
  /** Store work outside the queue; a round clears it. */
  other: { value: boolean };
  othersIdle: { value: boolean };
  /** Rounds that should fail as an unreachable store does. */
  fail: { count: number };
  /** While set, rounds wait for it. */
  gate: { promise: Promise<void> | undefined };
  /** Called once by the next round, after it took its batch. */
  during: { fn: (() => void) | undefined };
}

/** A queue whose rounds decide everything queued, the way the correlator's do. */
function harness(bufferSize = 10): Harness {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  const h: Omit<Harness, 'q'> = {
    rounds: [],
    lines,
    up: { value: true },
    other: { value: false },
    othersIdle: { value: true },
    fail: { count: 0 },
    gate: { promise: undefined },
    during: { fn: undefined },
  };
  const q: DecisionQueue = new DecisionQueue({
    bufferSize,
    redisUp: () => h.up.value,
    logger,
    hasOtherWork: () => h.other.value,
    othersIdle: () => h.othersIdle.value,
    round: async () => {
      if (h.gate.promise) await h.gate.promise;
      if (h.fail.count > 0) {
        h.fail.count--;
        throw new Error('connection refused');
      }
      h.other.value = false;
      const batch = q.peek(1000);
      const touched = q.peekTouches(1000);
      q.remove(batch.length, touched);
      for (const p of batch) q.settle(p);
      h.rounds.push({ ips: batch.map((p) => p.sig.ip), touched });
      const during = h.during.fn;
      h.during.fn = undefined;
      during?.();
    },
  });
  return { ...h, q };
}

/** Timers and immediates the process holds (what keeps it from exiting). */
function held(kind: 'Timeout' | 'Immediate'): number {
  return process.getActiveResourcesInfo().filter((r) => r === kind).length;
}

/** A gate rounds wait at until opened. */
function gate(h: Harness): () => void {
  let open!: () => void;
  h.gate.promise = new Promise<void>((resolve) => (open = resolve));
  return () => {
    h.gate.promise = undefined;
    open();
  };
}

function messages(h: Harness): string[] {
  return h.lines.map((l) => String(l['msg']));
}

describe('decision queue: state it reports', () => {
  it('counts queued events and is full at the buffer size', () => {
    const h = harness(2);
    assert.equal(h.q.length, 0);
    assert.equal(h.q.full, false);
    h.q.add(pending('198.18.0.1'));
    assert.equal(h.q.length, 1);
    assert.equal(h.q.full, false);
    h.q.add(pending('198.18.0.2'));
    assert.equal(h.q.length, 2);
    assert.equal(h.q.full, true);
    h.q.stop();
  });

  it('knows which (host, IP) pairs are waiting, per host, until each of their events is settled', () => {
    const h = harness();
    const a = pending('198.18.0.1', 'node-a');
    const b = pending('198.18.0.1', 'node-a');
    h.q.add(a);
    h.q.add(b);
    assert.equal(h.q.queued('node-a', '198.18.0.1'), true);
    assert.equal(h.q.queued('node-b', '198.18.0.1'), false, 'another host');
    assert.equal(h.q.queued('node-a', '198.18.0.2'), false, 'another IP');
    assert.equal(h.q.queued('node-a198.18.0.', '1'), false, 'host and IP are kept apart');
    h.q.remove(2, []);
    h.q.settle(a);
    assert.equal(h.q.queued('node-a', '198.18.0.1'), true, 'one of two still waits');
    h.q.settle(b);
    assert.equal(h.q.queued('node-a', '198.18.0.1'), false);
    // Settling what is not counted (any more) is harmless.
    h.q.settle(b);
    assert.equal(h.q.queued('node-a', '198.18.0.1'), false);
    h.q.add(b);
    assert.equal(h.q.queued('node-a', '198.18.0.1'), true);
    h.q.stop();
  });

  it('peek hands out the oldest events without removing them; remove drops them and the refreshed IPs', () => {
    const h = harness();
    for (let i = 1; i <= 3; i++) h.q.add(pending(`198.18.0.${i}`));
    assert.deepEqual(h.q.peek(2).map((p) => p.sig.ip), ['198.18.0.1', '198.18.0.2']);
    assert.equal(h.q.length, 3);
    h.q.touch('198.18.1.1');
    h.q.touch('198.18.1.2');
    h.q.touch('198.18.1.3');
    assert.equal(h.q.hasTouches, true);
    assert.deepEqual(h.q.peekTouches(2), ['198.18.1.1', '198.18.1.2']);
    assert.deepEqual(h.q.peekTouches(0), []);
    h.q.remove(2, ['198.18.1.1', '198.18.1.3']);
    assert.deepEqual(h.q.peek(10).map((p) => p.sig.ip), ['198.18.0.3']);
    assert.deepEqual(h.q.peekTouches(10), ['198.18.1.2']);
    h.q.remove(1, ['198.18.1.2']);
    assert.equal(h.q.hasTouches, false);
    assert.equal(h.q.length, 0);
    h.q.stop();
  });

  it('keeps at most 10000 refreshes waiting', () => {
    const h = harness();
    for (let i = 0; i < 10_001; i++) h.q.touch(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`);
    assert.equal(h.q.peekTouches(20_000).length, 10_000);
    h.q.stop();
  });

  it('is ready only while the store is up and the last round did not fail', async () => {
    const h = harness();
    assert.equal(h.q.ready, true);
    assert.equal(h.q.outage, false);
    h.up.value = false;
    assert.equal(h.q.ready, false);
    assert.equal(h.q.outage, true);
    h.up.value = true;
    h.fail.count = 1;
    h.q.add(pending('198.18.0.1'));
    h.q.schedule();
    await waitFor('the failed round', () => !h.q.ready);
    assert.equal(h.q.outage, true, 'a failed round is an outage although the client says up');
    await withinMs(h.q.flush(), 5_000, 'flush after the retry');
    assert.equal(h.q.ready, true);
    assert.equal(h.q.outage, false);
    h.q.stop();
  });
});

describe('decision queue: rounds', () => {
  it('runs a round soon after schedule(), deciding what is queued, and runs none without schedule()', async () => {
    const h = harness();
    h.q.add(pending('198.18.0.1'));
    await sleep(20);
    assert.equal(h.rounds.length, 0, 'add() alone starts nothing');
    h.q.schedule();
    h.q.schedule();
    await waitFor('a round', () => h.rounds.length > 0);
    await sleep(20);
    assert.deepEqual(h.rounds, [{ ips: ['198.18.0.1'], touched: [] }]);
    h.q.stop();
  });

  it('a refresh schedules its own round', async () => {
    const h = harness();
    h.q.touch('198.18.1.1');
    await waitFor('a round', () => h.rounds.length > 0);
    assert.deepEqual(h.rounds, [{ ips: [], touched: ['198.18.1.1'] }]);
    assert.equal(h.q.hasTouches, false);
    h.q.stop();
  });

  it('keeps running rounds while there is work, its own or the correlator\'s, and one at a time', async () => {
    const h = harness();
    const open = gate(h);
    h.q.add(pending('198.18.0.1'));
    h.q.schedule();
    await sleep(10);
    // Arrives while the first round waits: not decided concurrently, but right after.
    h.q.add(pending('198.18.0.2'));
    h.q.schedule();
    h.other.value = true;
    await sleep(10);
    assert.equal(h.rounds.length, 0);
    open();
    await withinMs(h.q.flush(), 5_000, 'flush');
    assert.deepEqual(
      h.rounds.map((r) => r.ips),
      [['198.18.0.1', '198.18.0.2']],
    );
    // Work of the correlator's own (no events) still gets a round.
    h.other.value = true;
    h.q.schedule();
    await withinMs(h.q.flush(), 5_000, 'flush');
    assert.equal(h.rounds.length, 2);
    assert.equal(h.other.value, false);
    h.q.stop();
  });

  it('a round that leaves work behind is followed by another without a new schedule()', async () => {
    const h = harness();
    h.q.add(pending('198.18.0.1'));
    // Arrives after the round took its batch, with nobody scheduling.
    h.during.fn = () => h.q.add(pending('198.18.0.2'));
    h.q.schedule();
    await waitFor('a second round', () => h.rounds.length === 2, 5_000);
    assert.deepEqual(h.rounds.map((r) => r.ips), [['198.18.0.1'], ['198.18.0.2']]);
    h.q.stop();
  });
});

describe('decision queue: flush and backpressure', () => {
  it('flush resolves at once when idle, and waits for queued work and for others in flight', async () => {
    const h = harness();
    await withinMs(h.q.flush(), 1_000, 'idle flush');
    h.q.add(pending('198.18.0.1'));
    // flush() itself starts the round.
    await withinMs(h.q.flush(), 5_000, 'flush');
    assert.equal(h.rounds.length, 1);
    h.othersIdle.value = false;
    let done = false;
    const f = h.q.flush().then(() => (done = true));
    await sleep(30);
    assert.equal(done, false, 'alerts still being delivered');
    h.othersIdle.value = true;
    h.q.resolveIdle();
    await withinMs(f, 1_000, 'flush after others went idle');
    h.q.stop();
  });

  it('resolveIdle releases nobody while work is left', async () => {
    const h = harness();
    h.othersIdle.value = false;
    h.q.add(pending('198.18.0.1'));
    let done = false;
    const f = h.q.flush().then(() => (done = true));
    await waitFor('the round', () => h.rounds.length === 1);
    h.q.add(pending('198.18.0.2'));
    h.othersIdle.value = true;
    h.q.resolveIdle();
    await sleep(10);
    assert.equal(done, false, 'an event is still queued');
    h.q.schedule();
    await withinMs(f, 5_000, 'flush');
    assert.equal(h.q.length, 0);
    h.q.stop();
  });

  it('room() waits until a round makes room, and resolves at stop()', async () => {
    const h = harness(1);
    const open = gate(h);
    h.q.add(pending('198.18.0.1'));
    let roomy = false;
    const r = h.q.room().then(() => (roomy = true));
    await sleep(20);
    assert.equal(roomy, false);
    h.q.schedule();
    await sleep(20);
    assert.equal(roomy, false, 'the round is still in flight');
    open();
    await withinMs(r, 5_000, 'room after the round');
    // A waiter with no round to come is released by stop().
    h.q.add(pending('198.18.0.2'));
    let released = false;
    const s = h.q.room().then(() => (released = true));
    await sleep(20);
    assert.equal(released, false);
    h.q.stop();
    await withinMs(s, 1_000, 'room at stop');
  });
});

describe('decision queue: store outage', () => {
  it('while the store is down: no round runs, the events stay queued, one warning, retries until it is back', async () => {
    const h = harness();
    h.up.value = false;
    for (let i = 1; i <= 3; i++) h.q.add(pending(`198.18.0.${i}`));
    h.q.schedule();
    await waitFor('the warning', () => messages(h).includes('redis unavailable; buffering egress decisions'));
    const warn = h.lines.find((l) => l['msg'] === 'redis unavailable; buffering egress decisions');
    assert.equal(warn?.['backlog'], 3);
    assert.equal(warn?.['level'], 40);
    assert.match(String((warn?.['err'] as { message?: string } | undefined)?.message ?? JSON.stringify(warn?.['err'])), /redis is not connected/);
    assert.equal(h.q.ready, false);
    // Retries (100 ms, growing) keep failing quietly.
    await sleep(400);
    assert.equal(h.rounds.length, 0);
    assert.equal(h.q.length, 3);
    assert.equal(messages(h).filter((m) => m.startsWith('redis unavailable')).length, 1, 'warned once');
    h.up.value = true;
    await waitFor('the buffered events decided', () => h.rounds.length === 1, 5_000);
    assert.deepEqual(h.rounds[0]?.ips, ['198.18.0.1', '198.18.0.2', '198.18.0.3']);
    const info = h.lines.find((l) => l['msg'] === 'redis reachable again; deciding buffered events');
    assert.equal(info?.['backlog'], 0);
    assert.equal(info?.['level'], 30);
    assert.equal(h.q.ready, true);
    h.q.stop();
  });

  it('rounds that never failed log nothing', async () => {
    const h = harness();
    for (let i = 1; i <= 3; i++) {
      h.q.add(pending(`198.18.0.${i}`));
      await withinMs(h.q.flush(), 5_000, 'flush');
    }
    assert.equal(h.rounds.length, 3);
    assert.deepEqual(h.lines, []);
    h.q.stop();
  });

  it('a failing round is retried with backoff, first after about 100 ms', async () => {
    const h = harness();
    h.fail.count = 1;
    h.q.add(pending('198.18.0.1'));
    const t = performance.now();
    h.q.schedule();
    await waitFor('the retry', () => h.rounds.length === 1, 5_000);
    const took = performance.now() - t;
    assert.ok(took >= 70 && took < 1_000, `retried after ${took} ms`);
    h.q.stop();
  });

  it('after a recovery the backoff starts again from its first delay', async () => {
    const h = harness();
    // Four failures: the next retry delay would be about 650 ms.
    h.fail.count = 4;
    h.q.add(pending('198.18.0.1'));
    h.q.schedule();
    await waitFor('recovery', () => h.rounds.length === 1, 5_000);
    h.fail.count = 1;
    h.q.add(pending('198.18.0.2'));
    const t = performance.now();
    h.q.schedule();
    await waitFor('the second recovery', () => h.rounds.length === 2, 5_000);
    const took = performance.now() - t;
    assert.ok(took < 400, `retried after ${took} ms, the backoff was not reset`);
    h.q.stop();
  });

  it('schedule() does not jump the retry timer; the retry decides what arrived meanwhile', async () => {
    const h = harness();
    h.fail.count = 1;
    h.q.add(pending('198.18.0.1'));
    h.q.schedule();
    await waitFor('the failure', () => !h.q.ready);
    h.q.add(pending('198.18.0.2'));
    h.q.schedule();
    await sleep(30);
    assert.equal(h.rounds.length, 0, 'no round before the retry is due');
    await waitFor('the retry', () => h.rounds.length === 1, 5_000);
    assert.deepEqual(h.rounds[0]?.ips, ['198.18.0.1', '198.18.0.2']);
    h.q.stop();
  });

  it('a failure releases backpressure waiters: while the store is down overflow is dropped, not waited for', async () => {
    const h = harness(1);
    h.fail.count = 1;
    h.q.add(pending('198.18.0.1'));
    let roomy = false;
    void h.q.room().then(() => (roomy = true));
    h.q.schedule();
    await waitFor('room after the failure', () => roomy);
    assert.equal(h.q.length, 1, 'still queued');
    assert.equal(h.rounds.length, 0);
    h.q.stop();
  });
});

describe('decision queue: stop', () => {
  it('stop releases flush waiters, flush resolves at once afterwards, and no round starts again', async () => {
    const h = harness();
    h.othersIdle.value = false;
    const f = h.q.flush();
    h.q.stop();
    await withinMs(f, 1_000, 'flush released by stop');
    h.q.add(pending('198.18.0.1'));
    await withinMs(h.q.flush(), 1_000, 'flush after stop');
    h.q.schedule();
    h.q.touch('198.18.1.1');
    await sleep(30);
    assert.equal(h.rounds.length, 0);
  });

  it('stop cancels a round scheduled but not yet started', async () => {
    const h = harness();
    h.q.add(pending('198.18.0.1'));
    h.q.schedule();
    h.q.stop();
    await sleep(30);
    assert.equal(h.rounds.length, 0);
  });

  it('stop cancels a pending retry', async () => {
    const h = harness();
    h.fail.count = 1;
    h.q.add(pending('198.18.0.1'));
    h.q.schedule();
    await waitFor('the failure', () => !h.q.ready);
    h.q.stop();
    await sleep(300);
    assert.equal(h.rounds.length, 0);
  });

  it('stop releases the scheduled round and the retry timer at once, so the process can exit', async () => {
    const h = harness();
    h.q.add(pending('198.18.0.1'));
    const immediates = held('Immediate');
    h.q.schedule();
    assert.equal(held('Immediate'), immediates + 1);
    h.q.stop();
    assert.equal(held('Immediate'), immediates);

    const g = harness();
    g.fail.count = 1;
    g.q.add(pending('198.18.0.1'));
    g.q.schedule();
    await waitFor('the failure', () => !g.q.ready);
    const timers = held('Timeout');
    g.q.stop();
    assert.equal(held('Timeout'), timers - 1);
  });

  it('a round in flight at stop finishes, and no other follows', async () => {
    const h = harness();
    const open = gate(h);
    h.q.add(pending('198.18.0.1'));
    h.q.schedule();
    await sleep(10);
    h.q.stop();
    h.q.add(pending('198.18.0.2'));
    open();
    await sleep(50);
    assert.deepEqual(h.rounds.map((r) => r.ips), [['198.18.0.1', '198.18.0.2']]);
    h.q.add(pending('198.18.0.3'));
    h.q.schedule();
    await sleep(30);
    assert.equal(h.rounds.length, 1);
  });

  it('a round failing after stop sets no retry', async () => {
    const h = harness();
    const open = gate(h);
    h.fail.count = 5;
    h.q.add(pending('198.18.0.1'));
    h.q.schedule();
    await sleep(10);
    h.q.stop();
    const timers = held('Timeout');
    open();
    for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
    assert.equal(h.fail.count, 4, 'the round in flight ran and failed');
    assert.ok(held('Timeout') <= timers, 'no retry timer');
    await sleep(400);
    assert.equal(h.fail.count, 4, 'only the round in flight ran');
  });
});

describe('decision queue: batching under load', () => {
  it('after a quiet spell the first event goes out at once, without waiting for the next', async () => {
    const h = harness();
    h.q.add(pending('198.18.0.1'));
    h.q.schedule();
    // Arrives one event-loop turn later.
    setImmediate(() => {
      h.q.add(pending('198.18.0.2'));
      h.q.schedule();
    });
    await waitFor('both decided', () => h.rounds.reduce((n, r) => n + r.ips.length, 0) === 2);
    assert.deepEqual(h.rounds.map((r) => r.ips), [['198.18.0.1'], ['198.18.0.2']]);
    h.q.stop();
  });

  it('a round waits for a flow for a couple of milliseconds at most, not until the flow ends', async () => {
    const h = harness(10_000);
    h.q.add(pending('198.18.0.0'));
    h.q.schedule();
    await waitFor('the first round', () => h.rounds.length === 1);
    // One event per turn, each turn a quarter of a millisecond long: 15 ms of flow.
    let i = 1;
    const feed = (): void => {
      if (i > 60) return;
      const until = performance.now() + 0.25;
      while (performance.now() < until) {
        // a busy producer
      }
      h.q.add(pending(`198.18.1.${i++}`));
      h.q.schedule();
      setImmediate(feed);
    };
    feed();
    await waitFor('every event decided', () => h.rounds.reduce((n, r) => n + r.ips.length, 0) === 61, 5_000);
    assert.ok(h.rounds.length > 3, `rounds: ${h.rounds.map((r) => r.ips.length).join(',')}`);
    h.q.stop();
  });

  it('while events keep arriving right after a round, the next round waits for more (up to MIN_BATCH)', async () => {
    const h = harness(10_000);
    h.q.add(pending('198.18.0.0'));
    h.q.schedule();
    await waitFor('the first round', () => h.rounds.length === 1);
    // A steady flow: one event per event-loop turn, scheduled each time, as the intake does.
    let i = 1;
    const feed = (): void => {
      if (i > 60) return;
      h.q.add(pending(`198.18.1.${i++}`));
      h.q.schedule();
      setImmediate(feed);
    };
    feed();
    await waitFor('every event decided', () => h.rounds.reduce((n, r) => n + r.ips.length, 0) === 61, 5_000);
    const sizes = h.rounds.slice(1).map((r) => r.ips.length);
    assert.ok(Math.max(...sizes) > 2, `rounds batched nothing: ${sizes.join(',')}`);
    assert.ok(MIN_BATCH > 60);
    h.q.stop();
  });
});
