// The JSON-lines source against real files and streams feeding a real Intake.
import assert from 'node:assert/strict';
import { EVENT_LIMITS } from '../src/model/event.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { gzipSync } from 'node:zlib';
import type { FalcoEvent } from '../src/model/event.js';
import { readEventFile, readEventStream } from '../src/sources/file-source.js';
import { Intake } from '../src/sources/intake.js';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';

// `evt.time` as Falco writes it: a bare 19-digit number no double can hold.
function line(rule: string, tags: string[] = [], fields: Record<string, unknown> = {}): string {
  const text = JSON.stringify({
    time: '2024-01-02T03:04:05.000000001Z',
    rule,
    priority: 'Warning',
    source: 'syscall',
    hostname: 'node-b',
    tags,
    output: `${rule} output`,
    output_fields: { 'evt.time': 'EVT_TIME', ...fields },
  });
  return text.replace('"EVT_TIME"', '1704164645000000001');
}

/** Poll until `cond` holds; after `timeoutMs`, fail naming what was awaited. */
async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function harness(capacity = 1000, gated = false) {
  const metrics = new Metrics();
  const received: FalcoEvent[] = [];
  let release: () => void = () => undefined;
  const gate = gated ? new Promise<void>((r) => (release = r)) : undefined;
  const intake = new Intake({
    capacity,
    metrics,
    logger: silentLogger(),
    consumer: async (e) => {
      received.push(e);
      if (gate) await gate;
    },
  });
  const count = (kind: string, source = 'file') => metrics.value('t1612d_falco_events_total', { source, kind });
  return { metrics, intake, received, count, release: () => release() };
}

describe('file source', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 't1612d-file-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads valid lines, counts garbage, partial and non-event lines, handles CRLF and blanks', async () => {
    const h = harness();
    const file = join(dir, 'events.jsonl');
    const na = line('na', ['t1612_egress'], { 'fd.sip': '<NA>', 'fd.sip.name': null, 'proc.name': '<NA>' });
    writeFileSync(
      file,
      [
        line('first', ['t1612_build']),
        'this is not json',
        '{"rule":"partial","time":"2024-01-02T03:',
        na,
        '',
        '{"hello":"world"}',
        `${line('crlf')}\r`,
        '   ',
        line('last-no-newline', ['t1612_build']),
      ].join('\n'),
    );
    const r = await readEventFile(file, h.intake);
    assert.deepEqual(r, { events: 4, invalid: 3 });
    await h.intake.whenIdle();
    assert.deepEqual(
      h.received.map((e) => e.rule),
      ['first', 'na', 'crlf', 'last-no-newline'],
    );
    const naEv = h.received[1] as FalcoEvent;
    assert.equal(naEv.fields['fd.sip'], null);
    assert.equal(naEv.fields['fd.sip.name'], null);
    assert.equal(naEv.fields['proc.name'], null);
    assert.equal(naEv.fields['evt.time'], '1704164645000000001');
    assert.equal(naEv.timeNs, 1704164645000000001n);
    assert.equal(await h.count('build'), 2);
    assert.equal(await h.count('egress'), 1);
    assert.equal(await h.count('other'), 1);
    assert.equal(await h.count('invalid'), 3);
  });

  it('reads a stdin-style stream split at awkward places, with very long lines', async () => {
    const h = harness();
    const input = new PassThrough();
    const long = 'x'.repeat(2 * 1024 * 1024);
    const text = `\uFEFF${line('ünïcödé')}\r\n${line('long', [], { 'proc.cmdline': long })}\n[${line('a1')},${line('a2')}]\n`;
    const bytes = Buffer.from(text, 'utf8');
    const reading = readEventStream(input, h.intake, { source: 'file' });
    // Odd chunk sizes split multi-byte characters, CRLF pairs and the long line.
    for (let i = 0, size = 1; i < bytes.length; i += size, size = size * 3 + 1) {
      input.write(bytes.subarray(i, i + size));
    }
    input.end();
    const r = await reading;
    assert.deepEqual(r, { events: 4, invalid: 0 });
    await h.intake.whenIdle();
    assert.deepEqual(
      h.received.map((e) => e.rule),
      ['ünïcödé', 'long', 'a1', 'a2'],
    );
    // The line is read whole; the value is then cut at its documented cap (EVENT_LIMITS).
    const cmdline = h.received[1]?.fields['proc.cmdline'] ?? '';
    assert.equal(cmdline.length, EVENT_LIMITS.fieldValue + 1);
    assert.ok(long.startsWith(cmdline.slice(0, -1)) && cmdline.endsWith('…'));
  });

  it('skips a line over maxLineBytes without buffering it and keeps reading', async () => {
    const h = harness();
    const input = new PassThrough();
    const reading = readEventStream(input, h.intake, { maxLineBytes: 1024 });
    input.write(`${line('before')}\n`);
    for (let i = 0; i < 10; i++) input.write('y'.repeat(1000));
    input.write(`\n${line('after')}\n`);
    input.end();
    assert.deepEqual(await reading, { events: 2, invalid: 1 });
    await h.intake.whenIdle();
    assert.deepEqual(
      h.received.map((e) => e.rule),
      ['before', 'after'],
    );
  });

  it('waits for room in a small intake instead of overfilling it', async () => {
    const h = harness(2, true);
    const input = new PassThrough();
    const lines = Array.from({ length: 20 }, (_, i) => line(`e${i}`));
    input.end(`${lines.join('\n')}\n`);
    let settled = false;
    const reading = readEventStream(input, h.intake).then((r) => {
      settled = true;
      return r;
    });
    try {
      await waitFor(() => h.received.length > 0, 'the first event to reach the consumer');
      // Give an overfilling reader the chance to show itself before looking.
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(h.received.length, 1);
      assert.ok(h.intake.size >= 1 && h.intake.size <= 2, `the reader stops at the capacity (${h.intake.size})`);
      assert.equal(settled, false);
    } finally {
      h.release();
    }
    assert.deepEqual(await reading, { events: 20, invalid: 0 });
    await h.intake.whenIdle();
    assert.deepEqual(
      h.received.map((e) => e.rule),
      lines.map((_, i) => `e${i}`),
    );
    assert.equal(await h.count('other'), 20);
  });

  it('stops on abort with what it read so far', async () => {
    const h = harness(1, true);
    const input = new PassThrough();
    input.end(`${Array.from({ length: 10 }, (_, i) => line(`e${i}`)).join('\n')}\n`);
    const ac = new AbortController();
    const reading = readEventStream(input, h.intake, { signal: ac.signal });
    try {
      await waitFor(() => h.received.length > 0, 'the first event to reach the consumer');
      // Abort while the reader is (most likely) parked waiting for room, not mid-line.
      await new Promise((r) => setTimeout(r, 20));
    } finally {
      ac.abort();
    }
    const r = await reading;
    assert.ok(r.events >= 1 && r.events <= 2, `read ${r.events} before the abort`);
    h.release();
    await h.intake.whenIdle();
    assert.equal(h.received.length, r.events);
  });

  it('reads gzip files and fails clearly on a missing file', async () => {
    const h = harness();
    const file = join(dir, 'events.jsonl.gz');
    writeFileSync(file, gzipSync(`${line('z1', ['t1612_build'])}\n${line('z2')}\n`));
    assert.deepEqual(await readEventFile(file, h.intake), { events: 2, invalid: 0 });
    await h.intake.whenIdle();
    assert.equal(h.received.length, 2);
    await assert.rejects(readEventFile(join(dir, 'nope.jsonl'), h.intake), /cannot read .*nope\.jsonl: .*ENOENT/);
  });

  it('labels events with the given source', async () => {
    const h = harness();
    const input = new PassThrough();
    input.end(`${line('s', ['t1612_build'])}\nnope\n`);
    assert.deepEqual(await readEventStream(input, h.intake, { source: 'http' }), { events: 1, invalid: 1 });
    assert.equal(await h.count('build', 'http'), 1);
    assert.equal(await h.count('invalid', 'http'), 1);
  });
});
