// Memory bounds of the daemon's own queues, and its heap sizing.
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { DecisionQueue, UP_LIMIT, type Pending } from '../src/detect/decision-queue.js';
import { growingPercentFor, HEAP_GROWING_PERCENT, HEAP_GROWING_PERCENT_MAX, HEAP_MIN_ROOM_BYTES, heapGrowingPercent, oldGenerationBytes, tuneHeap } from '../src/ops/heap.js';
import { silentLogger } from '../src/ops/logger.js';

function pending(i: number): Pending {
  // Only the host and IP are read by the queue itself.
  return { sig: { host: 'h', ip: `10.0.${i >> 8}.${i & 255}` } as Pending['sig'], nowMs: 0, t0: 0, token: `t${i}` };
}

describe('decision queue bound', () => {
  const make = (up: { value: boolean }, bufferSize: number): DecisionQueue =>
    new DecisionQueue({
      bufferSize,
      redisUp: () => up.value,
      logger: silentLogger(),
      hasOtherWork: () => false,
      othersIdle: () => true,
      round: () => Promise.resolve(),
    });

  it('is full at UP_LIMIT while Redis answers and at redis_buffer_size during an outage', () => {
    const up = { value: true };
    const q = make(up, 50_000);
    for (let i = 0; i < UP_LIMIT - 1; i++) q.add(pending(i));
    assert.equal(q.full, false);
    q.add(pending(UP_LIMIT));
    assert.equal(q.full, true);
    up.value = false;
    assert.equal(q.full, false, 'an outage buffers up to redis_buffer_size');
    for (let i = q.length; i < 50_000; i++) q.add(pending(i));
    assert.equal(q.full, true);
    q.stop();
  });

  it('keeps a smaller redis_buffer_size as the bound in both cases', () => {
    const up = { value: true };
    const q = make(up, 100);
    for (let i = 0; i < 100; i++) q.add(pending(i));
    assert.equal(q.full, true);
    up.value = false;
    assert.equal(q.full, true);
    q.stop();
  });
});

describe('heap sizing', () => {
  it('sets the growth factor unless node was started with one', () => {
    assert.equal(tuneHeap(['--heap-growing-percent=50']), false);
    assert.equal(tuneHeap(['--heap_growing_percent=50']), false);
    assert.equal(tuneHeap(['--max-old-space-size=192']), true);
    assert.equal(heapGrowingPercent(), growingPercentFor(oldGenerationBytes()));
  });

  it('gives a small old generation at least the minimum room and a large one the least factor', () => {
    const MB = 1024 * 1024;
    assert.equal(growingPercentFor(4 * MB), HEAP_GROWING_PERCENT_MAX, 'capped');
    assert.equal(growingPercentFor(HEAP_MIN_ROOM_BYTES), 100);
    assert.equal(growingPercentFor(24 * MB), Math.ceil((100 * HEAP_MIN_ROOM_BYTES) / (24 * MB)));
    assert.ok(growingPercentFor(24 * MB) > HEAP_GROWING_PERCENT && growingPercentFor(24 * MB) < HEAP_GROWING_PERCENT_MAX);
    assert.equal(growingPercentFor((100 * HEAP_MIN_ROOM_BYTES) / HEAP_GROWING_PERCENT), HEAP_GROWING_PERCENT);
    assert.equal(growingPercentFor(500 * MB), HEAP_GROWING_PERCENT);
    assert.equal(growingPercentFor(0), HEAP_GROWING_PERCENT_MAX);
    assert.equal(growingPercentFor(40 * MB, 20 * MB), 50);
  });

  it('sets the factor again from the old generation after each full collection', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const MB = 1024 * 1024;
    const settle = async (): Promise<number> => {
      gc();
      await new Promise((r) => setTimeout(r, 20));
      return oldGenerationBytes();
    };
    // Room of twice what is live now: the most growth.
    const live0 = await settle();
    const room = 2 * live0;
    tuneHeap([], room);
    assert.equal(heapGrowingPercent(), HEAP_GROWING_PERCENT_MAX);
    // Live grows to well past 5 x the room (1 MB arrays): the next full collection sets the least growth.
    const keep: number[][] = [];
    for (let i = 0; i < Math.ceil((12 * live0) / MB); i++) keep.push(new Array<number>(128 * 1024).fill(i));
    let live = await settle();
    assert.equal(heapGrowingPercent(), growingPercentFor(live, room), `live ${live}`);
    assert.equal(heapGrowingPercent(), HEAP_GROWING_PERCENT);
    // And back once it is collected.
    keep.length = 0;
    live = await settle();
    assert.equal(heapGrowingPercent(), growingPercentFor(live, room));
    assert.equal(heapGrowingPercent(), HEAP_GROWING_PERCENT_MAX);
    tuneHeap([]);
  });
});
