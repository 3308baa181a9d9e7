// Normalisation of Falco JSON alerts and the big-integer-preserving JSON parser.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { InvalidEventError } from '../src/model/errors.js';
import {
  eventTimeMs,
  field,
  formatTimeNs,
  fromFalcoJson,
  fromGrpcResponse,
  kindOfTags,
  parseIsoNs,
  parseEventText,
  parseJsonPreservingBigInts,
  fieldOf,
  TEXT_EVENT_MAX_BYTES,
  TextEvent,
  type FalcoEvent,
} from '../src/model/event.js';
import { parseIngestBody } from '../src/sources/http-parse.js';
import { plainEvent } from './support/records.js';

const CAPTURES = new URL('./fixtures/falco-captures/', import.meta.url);

/** The lines of every real Falco capture. */
function captureLines(): string[] {
  return readdirSync(CAPTURES)
    .filter((f) => f.endsWith('.jsonl'))
    .flatMap((f) => readFileSync(new URL(f, CAPTURES), 'utf8').split('\n'))
    .filter((l) => l.trim() !== '');
}

const BASE = {
  time: '2023-05-25T13:44:05.478445995Z',
  rule: 'Terminal shell in container',
  priority: 'Critical',
  source: 'syscall',
  hostname: 'falco-xczjd',
  tags: ['container'],
  output: 'out',
};

describe('FalcoEvent normalisation (fromFalcoJson)', () => {
  it('rejects what is not an event with InvalidEventError and a reason', () => {
    const cases: [unknown, RegExp][] = [
      [null, /JSON object/],
      [[BASE], /JSON object/],
      ['text', /JSON object/],
      [42, /JSON object/],
      [{ ...BASE, rule: undefined }, /rule/],
      [{ ...BASE, rule: '  ' }, /rule/],
      [{ ...BASE, rule: 7 }, /rule/],
      [{ ...BASE, time: undefined }, /time/],
      [{ ...BASE, time: 1685022245478 }, /time/],
      [{ ...BASE, time: 'yesterday' }, /time/],
      [{ ...BASE, time: '2023-05-25T13:44:05.1234567891Z' }, /time/],
      [{ ...BASE, time: '2023-13-25T13:44:05Z' }, /time/],
      [{ ...BASE, priority: 'Loud' }, /priority/],
      [{ ...BASE, priority: undefined }, /priority/],
      [{ ...BASE, priority: 9 }, /priority/],
      [{ ...BASE, tags: 'a,b' }, /tags/],
      [{ ...BASE, tags: ['a', 1] }, /tags/],
      [{ ...BASE, hostname: 5 }, /hostname/],
      [{ ...BASE, output: { text: 'x' } }, /output/],
      [{ ...BASE, source: ['syscall'] }, /source/],
      [{ ...BASE, output_fields: ['a'] }, /output_fields/],
      [{ ...BASE, output_fields: 'a=b' }, /output_fields/],
    ];
    for (const [raw, reason] of cases) {
      assert.throws(
        () => fromFalcoJson(raw),
        (err: unknown) => err instanceof InvalidEventError && reason.test(err.message),
        `expected InvalidEventError ${reason} for ${JSON.stringify(raw)}`,
      );
    }
  });

  it('turns <NA>, null, "null" and "" into null and everything else into strings', () => {
    const e = fromFalcoJson({
      ...BASE,
      output_fields: {
        'fd.sip': '<NA>',
        'fd.sip.name': null,
        'container.name': 'null',
        'user.name': '',
        'proc.pid': 1234,
        'fd.sport': 443,
        'evt.rawres': -2,
        ratio: 0.25,
        'evt.is_open': true,
        'proc.args': ['-c', 'x'],
        'evt.time': '1685022245478445995',
        'proc.name': 'sh',
      },
    });
    assert.deepEqual(e.fields, {
      'fd.sip': null,
      'fd.sip.name': null,
      'container.name': null,
      'user.name': null,
      'proc.pid': '1234',
      'fd.sport': '443',
      'evt.rawres': '-2',
      ratio: '0.25',
      'evt.is_open': 'true',
      'proc.args': '["-c","x"]',
      'evt.time': '1685022245478445995',
      'proc.name': 'sh',
    });
    assert.equal(field(e, 'fd.sip'), null);
    assert.equal(field(e, 'not.there'), null);
    assert.equal(field(e, 'proc.name'), 'sh');
  });

  it('defaults the optional keys', () => {
    const e = fromFalcoJson({ time: BASE.time, rule: 'r', priority: 'Debug' });
    assert.equal(e.source, 'syscall');
    assert.equal(e.hostname, '');
    assert.equal(e.output, '');
    assert.deepEqual(e.tags, []);
    assert.deepEqual(e.fields, {});
    assert.equal(fromFalcoJson({ ...BASE, source: null, tags: null, output_fields: null }).source, 'syscall');
    assert.equal(fromFalcoJson({ ...BASE, source: 'k8s_audit' }).source, 'k8s_audit');
  });

  it('keeps a __proto__ output field from touching the prototype', () => {
    const e = fromFalcoJson(JSON.parse(`{"time":"${BASE.time}","rule":"r","priority":"Notice","output_fields":{"__proto__":null,"a":"1"}}`));
    assert.equal(Object.getPrototypeOf(e.fields), Object.prototype);
    assert.deepEqual(e.fields, { a: '1' });
  });

  it('accepts priorities in any case, by number, and INFO', () => {
    const p = (priority: unknown) => fromFalcoJson({ ...BASE, priority }).priority;
    assert.equal(p('critical'), 'Critical');
    assert.equal(p('CRITICAL'), 'Critical');
    assert.equal(p('wArNiNg'), 'Warning');
    assert.equal(p('INFORMATIONAL'), 'Informational');
    assert.equal(p('info'), 'Informational');
    assert.equal(p('INFO'), 'Informational');
    assert.equal(p('Notice'), 'Notice');
    assert.throws(() => p('constructor'), /priority "constructor" is not one of/);
    assert.equal(p(0), 'Emergency');
    assert.equal(p(7), 'Debug');
    assert.equal(p('2'), 'Critical');
  });

  it('parses nanosecond times exactly, with and without fraction or offset', () => {
    assert.equal(fromFalcoJson(BASE).timeNs, 1685022245478445995n);
    assert.equal(parseIsoNs('2023-05-25T13:44:05Z'), 1685022245000000000n);
    assert.equal(parseIsoNs('2023-05-25T13:44:05.5Z'), 1685022245500000000n);
    assert.equal(parseIsoNs('2023-05-25T13:44:05.000000001Z'), 1685022245000000001n);
    assert.equal(parseIsoNs('2023-05-25T15:44:05.478445995+02:00'), 1685022245478445995n);
    assert.equal(parseIsoNs('1970-01-01T00:00:00Z'), 0n);
    assert.equal(parseIsoNs('not a time'), undefined);
    // Times in the second of the one before read only their fraction: same answers.
    assert.equal(parseIsoNs('2023-05-25T13:44:05.000000000Z'), 1685022245000000000n);
    assert.equal(parseIsoNs('2023-05-25T13:44:05.999999999Z'), 1685022245999999999n);
    assert.equal(parseIsoNs('2023-05-25T13:44:05.12345678xZ'), undefined);
    assert.equal(parseIsoNs('2023-05-25T13:44:06.000000001Z'), 1685022246000000001n);
    assert.equal(parseIsoNs('2023-05-25T15:44:06.000000002+02:00'), 1685022246000000002n);
    assert.equal(parseIsoNs('2023-05-25T13:44:06.000000003Z'), 1685022246000000003n);
    assert.equal(parseIsoNs('2023-05-25 13:44:05Z'), undefined);
  });

  it('round-trips formatTimeNs and parseIsoNs', () => {
    for (const ns of [1685022245478445995n, 0n, 1n, 999_999_999n, 1_000_000_000n, 1704164645000000001n, -1n, -1_500_000_000n]) {
      const text = formatTimeNs(ns);
      assert.match(text, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$/);
      assert.equal(parseIsoNs(text), ns, text);
    }
    assert.equal(formatTimeNs(1685022245478445995n), '2023-05-25T13:44:05.478445995Z');
    assert.equal(formatTimeNs(-1n), '1969-12-31T23:59:59.999999999Z');
    assert.equal(eventTimeMs(fromFalcoJson(BASE)), 1685022245478);
  });

  it('normalises a gRPC response and its JSON twin to equal events', () => {
    const fromJson = fromFalcoJson({
      ...BASE,
      output_fields: { 'evt.time': '1685022245478445995', 'fd.sip': null, 'proc.name': 'sh' },
    });
    const fromGrpc = fromGrpcResponse({
      time: { seconds: '1685022245', nanos: 478445995 },
      priority: 'CRITICAL',
      rule: BASE.rule,
      output: BASE.output,
      output_fields: { 'evt.time': '1685022245478445995', 'fd.sip': 'null', 'proc.name': 'sh' },
      hostname: BASE.hostname,
      tags: BASE.tags,
      source: '',
      source_deprecated: 'SYSCALL',
    });
    assert.deepEqual(fromGrpc, fromJson);
  });

  it("takes the text output from inside a gRPC output that carries the whole JSON line (Falco 0.43.1, json_output)", () => {
    const line = readFileSync(new URL('./fixtures/falco-captures/real-falco-0.43.1-builds.jsonl', import.meta.url), 'utf8').split('\n')[0] ?? '';
    const json = JSON.parse(line) as { output: string };
    const ev = fromGrpcResponse({
      time: { seconds: '1796174889', nanos: 433115774 },
      priority: 'INFORMATIONAL',
      rule: 'T1612 Container Outbound Connection',
      output: line,
      output_fields: { 'fd.sip': '203.0.113.10' },
      hostname: 'vm',
      tags: ['t1612_egress'],
      source: 'syscall',
    });
    assert.equal(ev.output, json.output);
    // Text that merely starts like JSON, or JSON without an output, is kept as given.
    for (const output of ['{"not json', '{"rule":"x"}']) {
      assert.equal(fromGrpcResponse({ time: { seconds: '1', nanos: 0 }, rule: 'r', output, output_fields: {}, tags: [] }).output, output);
    }
  });

  it('reads the output out of every real JSON line exactly as a full parse does, and odd lines by parsing them', () => {
    const dir = new URL('./fixtures/falco-captures/', import.meta.url);
    const lines = readdirSync(dir)
      .filter((f) => f.endsWith('.jsonl'))
      .flatMap((f) => readFileSync(new URL(f, dir), 'utf8').split('\n'))
      .filter((l) => l.trim() !== '');
    const odd = [
      // An object before the output: its own "output" must not be taken.
      '{"a":{"output":"inner"},"output":"outer","rule":"r"}',
      '{"a":["x"],"output":"outer"}',
      // Escapes and quotes inside the output, and an escaped backslash right before its end.
      '{"hostname":"h","output":"say \\"hi\\" \\\\","rule":"r"}',
      '{"hostname":"h","output":"\\u00e9t\\u00e9\\n","rule":"r"}',
      // A key that ends in output, and an output that is not a string.
      '{"x\\"output":"no","output":"yes"}',
      '{"hostname":"h","output":7}',
    ];
    const grpcOutput = (output: string): string =>
      fromGrpcResponse({ time: { seconds: '1', nanos: 0 }, rule: 'r', output, output_fields: {}, tags: [] }).output;
    for (const line of [...lines, ...odd]) {
      const parsed = (JSON.parse(line) as { output?: unknown }).output;
      assert.equal(grpcOutput(line), typeof parsed === 'string' ? parsed.slice(0, 8192) + (parsed.length > 8192 ? '…' : '') : line, line);
    }
    assert.equal(grpcOutput(odd[0] as string), 'outer');
    // Text that is not JSON after all is kept whole, however much it looks like a JSON line.
    assert.equal(grpcOutput('{"output":"x" trailing}'), '{"output":"x" trailing}');
  });

  it('classifies by tag', () => {
    assert.equal(kindOfTags(['t1612_build', 'T1612']), 'build');
    assert.equal(kindOfTags(['t1612_egress']), 'egress');
    assert.equal(kindOfTags(['t1612_build', 't1612_egress']), 'egress');
    assert.equal(kindOfTags(['container']), 'other');
    assert.equal(kindOfTags([]), 'other');
  });
});

describe('parseJsonPreservingBigInts', () => {
  it('quotes integers too big for a double that appear outside strings', () => {
    const v = parseJsonPreservingBigInts('{"a":1685022245478445995,"b":[9007199254740993, 12],"c":{"d":-12345678901234567890}}');
    assert.deepEqual(v, { a: '1685022245478445995', b: ['9007199254740993', 12], c: { d: '-12345678901234567890' } });
  });

  it('leaves digits inside strings alone, escaped quotes included', () => {
    const text = '{"s":"1685022245478445995","t":"say \\"1234567890123456789\\" ok","u":"\\\\","n":1234567890123456789}';
    assert.deepEqual(parseJsonPreservingBigInts(text), {
      s: '1685022245478445995',
      t: 'say "1234567890123456789" ok',
      u: '\\',
      n: '1234567890123456789',
    });
  });

  it('leaves floats, exponents and small numbers as numbers', () => {
    const v = parseJsonPreservingBigInts(
      '{"f":1.12345678901234567890,"g":12345678901234567.5,"e":1234567890123456789e2,"x":5e-1234567890123456,"small":-42,"z":0,"neg":-0.5}',
    ) as Record<string, unknown>;
    // Compared with what JSON.parse makes of the same text (the literals would lose precision).
    assert.equal(v['f'], Number('1.12345678901234567890'));
    assert.equal(v['g'], Number('12345678901234567.5'));
    assert.equal(v['e'], Number('1234567890123456789e2'));
    assert.equal(typeof v['g'], 'number');
    assert.equal(v['x'], 0);
    assert.equal(v['small'], -42);
    assert.equal(v['z'], 0);
    assert.equal(v['neg'], -0.5);
  });

  it('parses plain JSON unchanged and still rejects invalid JSON', () => {
    assert.deepEqual(parseJsonPreservingBigInts('[1,"2",true,null]'), [1, '2', true, null]);
    assert.equal(parseJsonPreservingBigInts('1234567890123456789'), '1234567890123456789');
    assert.throws(() => parseJsonPreservingBigInts('{"a":1234567890123456789'), SyntaxError);
    assert.throws(() => parseJsonPreservingBigInts('{"a": 01234567890123456789}'), SyntaxError);
  });

  it('keeps evt.time of a Falco event exact end to end', () => {
    const e = fromFalcoJson(
      parseJsonPreservingBigInts(
        `{"time":"2023-05-25T13:44:05.478445995Z","rule":"r","priority":"Critical","output_fields":{"evt.time":1685022245478445995,"proc.pid":7}}`,
      ),
    );
    assert.equal(e.fields['evt.time'], '1685022245478445995');
    assert.equal(e.fields['proc.pid'], '7');
    assert.equal(BigInt(e.fields['evt.time'] as string), e.timeNs);
  });
});

describe('parseEventText (the ingest fast path)', () => {
  const head = '"time":"2023-05-25T13:44:05.478445995Z","rule":"r","priority":"Notice"';
  const tricky = [
    // Falco's own shape: evt.time a bare 19-digit number.
    `{${head},"output_fields":{"evt.time":1685022245478445995,"proc.pid":7}}`,
    // The same key at the top level too: found twice, so the exact slow path.
    `{"evt.time":"x",${head},"output_fields":{"evt.time":1685022245478445995}}`,
    // The key text inside a string value is escaped, so it is no key.
    `{${head},"output":"\\"evt.time\\":1685022245478445996","output_fields":{"evt.time":1685022245478445995}}`,
    // A key that ends in the same text, holding a number that rounds to the same double.
    `{${head},"output_fields":{"x\\"evt.time":1685022245478445996,"evt.time":1685022245478445995}}`,
    // A duplicate key: JSON.parse keeps the last.
    `{${head},"output_fields":{"evt.time":1685022245478445996,"evt.time":1685022245478445995}}`,
    // Nested values, arrays, tags and top-level numbers that could hide big integers.
    `{${head},"output_fields":{"obj":{"n":1685022245478445995},"arr":[12345678901234567890]}}`,
    `{${head},"tags":[1234567890123456789],"output_fields":{}}`,
    `{${head},"extra":1234567890123456789,"output_fields":{}}`,
    `[{${head},"output_fields":{"evt.time":1685022245478445995}},{${head}}]`,
    '1234567890123456789',
    // Floats, exponents, safe 16-digit integers, negatives, spacing, escaped keys.
    `{${head},"output_fields":{"f":1.5e20,"e":1234567890123456789e2,"safe":1000000000000001,"neg":-12345678901234567890}}`,
    `{${head},"output_fields":{"evt.time" : 1685022245478445995}}`,
    `{${head},"output_fields":{"evt\\u002etime":1685022245478445995}}`,
    `{${head},"output_fields":{"__proto__":1685022245478445995,"a":1}}`,
    `{${head},"output_fields":{"a":"1685022245478445995","b":null,"c":true,"d":-0,"e":7}}`,
  ];

  it('gives exactly what the exact parser gives, on real captures and on tricky texts', () => {
    const lines = [...captureLines(), ...tricky];
    assert.ok(lines.length > 80);
    for (const text of lines) assert.deepEqual(parseEventText(text), parseJsonPreservingBigInts(text), text);
  });

  it('keeps every big integer exact where it is read back from the text', () => {
    const v = parseEventText(tricky[3] as string) as { output_fields: Record<string, unknown> };
    assert.equal(v.output_fields['evt.time'], '1685022245478445995');
    assert.equal(v.output_fields['x"evt.time'], '1685022245478445996');
    const w = parseEventText(tricky[10] as string) as { output_fields: Record<string, unknown> };
    assert.equal(w.output_fields['neg'], '-12345678901234567890');
    assert.equal(w.output_fields['safe'], '1000000000000001');
  });

  it('normalises a parsed event in place to the same event as a copy', () => {
    for (const text of captureLines().slice(0, 40)) {
      const copy = fromFalcoJson(parseJsonPreservingBigInts(text));
      const inPlace = fromFalcoJson(parseEventText(text), true);
      assert.deepEqual(inPlace, copy);
    }
    // A refused event is left as it came.
    const raw = JSON.parse(`{${head},"output_fields":{"a":7,"${'k'.repeat(300)}":1}}`) as { output_fields: Record<string, unknown> };
    assert.throws(() => fromFalcoJson(raw, true), InvalidEventError);
    assert.equal(raw.output_fields['a'], 7);
  });

  it('still rejects invalid JSON', () => {
    assert.throws(() => parseEventText('{"a":1234567890123456789'), SyntaxError);
    assert.throws(() => parseEventText('{"a": 01234567890123456789}'), SyntaxError);
  });
});

describe('TextEvent (an HTTP body event kept as its text)', () => {
  const head = '"time":"2023-05-25T13:44:05.478445995Z","rule":"r","priority":"Notice","tags":["t1612"]';
  const extra = [
    // Hot fields missing, spelled missing, as numbers, and a big integer start time.
    `{${head},"output":"o","output_fields":{"fd.sip":"<NA>","container.id":"host"}}`,
    `{${head},"output_fields":{"fd.sip.name":null,"container.start_ts":1685022245478445995,"container.id":"0123456789ab"}}`,
    `{${head},"output_fields":{"fd.sip":"2001:db8::1","other":"é ü"}}`,
    `{${head}}`,
  ];
  const HOT = ['fd.sip', 'fd.sip.name', 'container.id', 'container.start_ts'];

  it('gives every field, the output and the fields exactly as the parsed event does', async () => {
    const body = Buffer.from([...captureLines(), ...extra].join('\n'));
    const plain = await parseIngestBody(body, 1e6);
    const first = await parseIngestBody(body, 1e6, true);
    const second = await parseIngestBody(body, 1e6, true);
    assert.equal(first.events.length, plain.events.length);
    assert.ok(plain.events.length > 20);
    plain.events.forEach((want, i) => {
      const lone = first.events[i] as FalcoEvent;
      assert.ok(lone instanceof TextEvent);
      // Field by field before anything parses the text again, then whole.
      for (const k of [...HOT, ...Object.keys(want.fields), 'absent.field']) {
        assert.equal(fieldOf(lone, k), Object.hasOwn(want.fields, k) ? want.fields[k] : undefined, `${i} ${k}`);
      }
      assert.deepEqual(plainEvent(lone), plainEvent(want));
      const other = second.events[i] as TextEvent;
      assert.equal(other.output, want.output);
      assert.deepEqual(other.fields, want.fields);
      assert.equal(other.text.toString('utf8'), (plain.texts?.[i] as Buffer).toString('utf8'));
    });
  });

  it('takes and refuses exactly what the usual way takes and refuses, with the same reasons', async () => {
    const many = Object.fromEntries(Array.from({ length: 513 }, (_, i) => [`f${i}`, 'v']));
    const items = [
      `{${head},"output_fields":"abc"}`,
      `{${head},"output_fields":5}`,
      `{${head},"output_fields":[1]}`,
      `{${head},"output_fields":${JSON.stringify(many)}}`,
      `{${head},"output_fields":{"${'k'.repeat(300)}":"v"}}`,
      `{"time":"2023-05-25T13:44:05.478445995Z","priority":"Notice","output_fields":{}}`,
      `{"rule":"r","priority":"Notice","output_fields":{}}`,
      `{"time":"x","rule":"r","output_fields":{}}`,
      `{${head},"hostname":"${'h'.repeat(300)}","output_fields":{}}`,
      `{${head},"source":"${'s'.repeat(100)}","output_fields":{}}`,
      `{${head},"output":7,"output_fields":{}}`,
      `{"time":"2023-05-25T13:44:05.478445995Z","rule":"r","priority":"Nope","tags":"t1612","output_fields":{}}`,
      `{${head},"extra":1234567890123456789,"output_fields":{"container.start_ts":1685022245478445995}}`,
      `{${head},"output_fields":{"obj":{"n":1},"fd.sip":"203.0.113.1"}}`,
      `{${head},"output_fields":{"container.start_ts":1685022245478445995,"container.start_ts":1685022245478445996}}`,
      `{${head},"output_fields":{"__proto__":"x","fd.sip":7,"fd.sip.name":true,"container.id":"<NA>"}}`,
      `{${head},"output":"${'o'.repeat(9000)}","output_fields":{"container.start_ts":1000000000000001}}`,
      `{${head},"output_fields":{"fd.sip":"${'9'.repeat(5000)}"}}`,
      '"just a string"',
      '{"not":"json"',
    ];
    const body = Buffer.from(items.join('\n'));
    const plain = await parseIngestBody(body, 100);
    const lone = await parseIngestBody(body, 100, true);
    assert.deepEqual(
      lone.invalid.map((i) => [i.error.message, i.sample]),
      plain.invalid.map((i) => [i.error.message, i.sample]),
    );
    assert.ok(plain.invalid.length >= 12, `${plain.invalid.length} refused`);
    assert.equal(lone.events.length, plain.events.length);
    plain.events.forEach((want, i) => {
      const got = lone.events[i] as FalcoEvent;
      for (const k of HOT) assert.equal(fieldOf(got, k), Object.hasOwn(want.fields, k) ? want.fields[k] : undefined, `${i} ${k}`);
      assert.deepEqual(plainEvent(got), plainEvent(want));
    });
  });

  it('reads NDJSON of objects line by line as the scanner would: lines holding two objects, strings across lines, deep nesting, too many lines', async () => {
    const ok = (ip: string): string => `{${head},"output_fields":{"fd.sip":"${ip}"}}`;
    const deep = `{${head},"output_fields":{},"x":${'['.repeat(40)}${']'.repeat(40)}}`;
    const bodies = [
      [ok('203.0.113.1'), `${ok('203.0.113.2')} ${ok('203.0.113.3')}`, ok('203.0.113.4')],
      [ok('203.0.113.1'), `{"rule":"}`, `{"x":1}"}`, ok('203.0.113.4')],
      [ok('203.0.113.1'), deep, ok('203.0.113.4')],
      [ok('203.0.113.1'), `${ok('203.0.113.2')}x}`, `{${head},"output_fields":"abc"}`, ok('203.0.113.4')],
      [`  ${ok('203.0.113.1')}\r`, '', `\t${ok('203.0.113.2')}  `],
    ];
    for (const lines of bodies) {
      const body = Buffer.from(lines.join('\n'));
      const plain = await parseIngestBody(body, 100);
      const lone = await parseIngestBody(body, 100, true);
      assert.deepEqual(lone.events.map(plainEvent), plain.events.map(plainEvent), lines.join(' | '));
      assert.deepEqual(
        lone.invalid.map((i) => [i.error.message, i.sample]),
        plain.invalid.map((i) => [i.error.message, i.sample]),
      );
    }
    const three = Buffer.from([ok('203.0.113.1'), ok('203.0.113.2'), ok('203.0.113.3')].join('\n'));
    assert.equal((await parseIngestBody(three, 3, true)).events.length, 3);
    await assert.rejects(parseIngestBody(three, 2, true), /more than 2 events/);
    await assert.rejects(parseIngestBody(three, 2), /more than 2 events/);
    // Two objects on a line are two items: over the limit of two with two lines.
    const twoLines = Buffer.from([ok('203.0.113.1'), `${ok('203.0.113.2')}${ok('203.0.113.3')}`].join('\n'));
    await assert.rejects(parseIngestBody(twoLines, 2, true), /more than 2 events/);
    // Lines padded with more blank than events: copies, not views of the body.
    const padded = Buffer.from(`${ok('203.0.113.1')}\n${' '.repeat(100_000)}\n${ok('203.0.113.2')}`);
    const r = await parseIngestBody(padded, 100, true);
    assert.equal(r.events.length, 2);
    for (const e of r.events) assert.notEqual((e as TextEvent).text.buffer, padded.buffer);
    assert.equal(fieldOf(r.events[1] as FalcoEvent, 'fd.sip'), '203.0.113.2');
  });

  it('reads a body from the chunks it came in as from the whole, however it is cut', async () => {
    const ok = (ip: string): string => `{${head},"output_fields":{"fd.sip":"${ip}"}}`;
    const bodies = [
      [ok('203.0.113.1'), `  ${ok('203.0.113.2')}\r`, '', ok('203.0.113.3')].join('\n'),
      `\ufeff${ok('203.0.113.1')}\n${ok('203.0.113.2')}`,
      [ok('203.0.113.1'), `${ok('203.0.113.2')} ${ok('203.0.113.3')}`].join('\n'),
      [ok('203.0.113.1'), `{"output":"${'o'.repeat(TEXT_EVENT_MAX_BYTES)}"}`, ok('203.0.113.3')].join('\n'),
      `[${ok('203.0.113.1')},${ok('203.0.113.2')}]`,
      '   \n \n',
      `${ok('203.0.113.1')}\n`,
    ];
    for (const text of bodies) {
      const whole = Buffer.from(text);
      let want: unknown;
      try {
        const r = await parseIngestBody(whole, 100);
        want = [r.events.map(plainEvent), r.invalid.map((i) => i.error.message)];
      } catch (err) {
        want = (err as Error).message;
      }
      for (const size of [1, 2, 7, 64, 1000, whole.length]) {
        const chunks: Buffer[] = [];
        for (let i = 0; i < whole.length; i += size) chunks.push(Buffer.from(whole.subarray(i, i + size)));
        let got: unknown;
        try {
          const r = await parseIngestBody(chunks, 100, true);
          got = [r.events.map(plainEvent), r.invalid.map((i) => i.error.message)];
          r.events.forEach((ev, i) => assert.equal((ev as TextEvent).text.toString('utf8'), (r.texts?.[i] as Buffer).toString('utf8')));
        } catch (err) {
          got = (err as Error).message;
        }
        assert.deepEqual(got, want, `${JSON.stringify(text.slice(0, 60))} in chunks of ${size}`);
      }
    }
    // Views of the chunks an event lies in; a copy for one that straddles two.
    // (Buffers of their own: small Buffer.from()s share one pool.)
    const own = (text: string): Buffer => {
      const buf = Buffer.alloc(Buffer.byteLength(text));
      buf.write(text);
      return buf;
    };
    const a = own(`${ok('203.0.113.1')}\n${ok('203.0.113.2').slice(0, 10)}`);
    const b = own(`${ok('203.0.113.2').slice(10)}\n`);
    const r = await parseIngestBody([a, b], 100, true);
    assert.equal(r.events.length, 2);
    assert.equal((r.events[0] as TextEvent).text.buffer, a.buffer);
    assert.notEqual((r.events[1] as TextEvent).text.buffer, a.buffer);
    assert.notEqual((r.events[1] as TextEvent).text.buffer, b.buffer);
    assert.equal(fieldOf(r.events[1] as FalcoEvent, 'fd.sip'), '203.0.113.2');
    // A chunk that opens with the newline ending the line before, then holds a line of its own.
    const c = own(`${ok('203.0.113.1')}\n${ok('203.0.113.2')}`);
    const d = own(`\n${ok('203.0.113.3')}\n`);
    const r2 = await parseIngestBody([c, d], 100, true);
    assert.deepEqual(
      r2.events.map((ev) => fieldOf(ev, 'fd.sip')),
      ['203.0.113.1', '203.0.113.2', '203.0.113.3'],
    );
    assert.deepEqual(
      r2.events.map((ev) => [(ev as TextEvent).text.buffer === c.buffer, (ev as TextEvent).text.buffer === d.buffer]),
      [
        [true, false],
        [false, false],
        [false, true],
      ],
    );
  });

  it("keeps views of a body its events fill, and copies of a body that is mostly something else", async () => {
    const ev = `{${head},"output_fields":{"fd.sip":"203.0.113.9"}}`;
    const full = Buffer.from([ev, ev, ev].join('\n'));
    const shared = await parseIngestBody(full, 100, true);
    for (const e of shared.events) assert.equal((e as TextEvent).text.buffer, full.buffer);
    const padded = Buffer.from(`${ev}\n"${'x'.repeat(100_000)}"\n`);
    const copied = await parseIngestBody(padded, 100, true);
    assert.equal(copied.events.length, 1);
    assert.equal(copied.invalid.length, 1);
    const text = (copied.events[0] as TextEvent).text;
    assert.notEqual(text.buffer, padded.buffer);
    assert.equal(text.toString('utf8'), ev);
    assert.equal(fieldOf(copied.events[0] as FalcoEvent, 'fd.sip'), '203.0.113.9');
  });

  it('keeps an event over TEXT_EVENT_MAX_BYTES, and one of an array inside an item, parsed', async () => {
    const big = `{${head},"output":"${'y'.repeat(TEXT_EVENT_MAX_BYTES)}","output_fields":{}}`;
    const small = `{${head},"output_fields":{}}`;
    const r = await parseIngestBody(Buffer.from(`${big}\n[[${small}]]\n${small}`), 100, true);
    assert.equal(r.events.length, 3);
    assert.ok(!(r.events[0] instanceof TextEvent));
    assert.ok(!(r.events[1] instanceof TextEvent));
    assert.ok(r.events[2] instanceof TextEvent);
  });
});
