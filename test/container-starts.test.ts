// When each container started, as the daemon tells it: the container plugin's start time when
// a rule prints it, else the first event seen from the container; bounded, oldest out first.
import assert from 'node:assert/strict';
import { ContainerStarts } from '../src/detect/containers.js';
import { TAG_EGRESS, type FalcoEvent } from '../src/model/event.js';

const T = 1_772_446_500_000;

function ev(tMs: number, fields: Record<string, string | null>): FalcoEvent {
  return { timeNs: BigInt(tMs) * 1_000_000n, rule: 'r', priority: 'Notice', source: 'syscall', hostname: 'node-a', tags: [TAG_EGRESS], output: 'o', fields };
}

describe('container starts', () => {
  it("takes the plugin's start time (ns) when printed, else the event time", () => {
    const c = new ContainerStarts(10);
    c.observe(ev(T, { 'container.id': 'aaaaaaaaaaaa', 'container.start_ts': `${T - 60_000}123456` }));
    c.observe(ev(T, { 'container.id': 'bbbbbbbbbbbb' }));
    assert.equal(c.startedAt('aaaaaaaaaaaa'), T - 60_000);
    assert.equal(c.startedAt('bbbbbbbbbbbb'), T);
  });

  it('a start time that is no nanosecond epoch is not used', () => {
    const c = new ContainerStarts(10);
    const cases: [string, string][] = [
      ['a00000000001', '123456789012345'], // 15 digits
      ['a00000000002', '12345678901234567890'], // 20 digits
      ['a00000000003', `x${T}000000`],
      ['a00000000004', `${T}000000x`],
      ['a00000000005', ''],
    ];
    for (const [id, ts] of cases) c.observe(ev(T, { 'container.id': id, 'container.start_ts': ts }));
    for (const [id, ts] of cases) assert.equal(c.startedAt(id), T, ts);
    // 16 digits is the shortest accepted (ns since 1970-04-27).
    c.observe(ev(T, { 'container.id': 'a00000000006', 'container.start_ts': '1000000000000000' }));
    assert.equal(c.startedAt('a00000000006'), 1_000_000_000);
  });

  it('the first sighting holds: a later event does not move the start', () => {
    const c = new ContainerStarts(10);
    c.observe(ev(T, { 'container.id': 'aaaaaaaaaaaa' }));
    c.observe(ev(T - 5_000, { 'container.id': 'aaaaaaaaaaaa', 'container.start_ts': `${T - 60_000}000000` }));
    assert.equal(c.startedAt('aaaaaaaaaaaa'), T);
    assert.equal(c.size, 1);
  });

  it('ignores events from the host, without a container, or with an id that is not a short container id', () => {
    const c = new ContainerStarts(10);
    for (const id of ['host', null, 'AAAAAAAAAAAA', 'aaaaaaaaaaa', 'aaaaaaaaaaaaa', 'gggggggggggg', `x${'a'.repeat(12)}`]) {
      c.observe(ev(T, { 'container.id': id }));
    }
    c.observe(ev(T, {}));
    assert.equal(c.size, 0);
    assert.equal(c.startedAt('host'), null);
    assert.equal(c.startedAt(null), null);
    assert.equal(c.startedAt('cccccccccccc'), null, 'never seen');
  });

  it('an event time that is no number records nothing', () => {
    const c = new ContainerStarts(10);
    c.observe({ ...ev(T, { 'container.id': 'aaaaaaaaaaaa' }), timeNs: 10n ** 400n });
    assert.equal(c.size, 0);
    assert.equal(c.startedAt('aaaaaaaaaaaa'), null);
  });

  it('holds at most its cap, forgetting the earliest recorded first', () => {
    const c = new ContainerStarts(2);
    c.observe(ev(T, { 'container.id': 'aaaaaaaaaaaa' }));
    c.observe(ev(T + 1, { 'container.id': 'bbbbbbbbbbbb' }));
    c.observe(ev(T + 2, { 'container.id': 'aaaaaaaaaaaa' }));
    assert.equal(c.size, 2, 'a known one takes no room');
    c.observe(ev(T + 3, { 'container.id': 'cccccccccccc' }));
    assert.equal(c.size, 2);
    assert.deepEqual(
      ['aaaaaaaaaaaa', 'bbbbbbbbbbbb', 'cccccccccccc'].map((id) => c.startedAt(id)),
      [null, T + 1, T + 3],
    );
  });
});
