// Logs: an unexpected error keeps its stack (pino's err serializer), an expected failure is one
// line. A bug in the consumer must be diagnosable from the log alone.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { fromFalcoJson } from '../src/model/event.js';
import { describeError } from '../src/model/errors.js';
import { Metrics } from '../src/ops/metrics.js';
import { Intake } from '../src/sources/intake.js';
import { waitFor } from './support/wait.js';

function capture(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, dest), lines };
}

describe('logging', () => {
  it('logs an unexpected consumer failure with its type and stack', async () => {
    const { logger, lines } = capture();
    function consumerWithABug(): never {
      throw new TypeError('cannot read properties of undefined\nsecond line of detail');
    }
    const intake = new Intake({ capacity: 10, metrics: new Metrics(), logger, consumer: consumerWithABug });
    intake.push(fromFalcoJson({ time: '2026-01-01T00:00:00Z', rule: 'r', priority: 'Notice', output: 'o', output_fields: {} }), 'http');
    await waitFor('the consumer failure log line', () => lines.some((l) => l.msg === 'event consumer failed'));
    const line = lines.find((l) => l.msg === 'event consumer failed') as { err: { type: string; message: string; stack: string } };
    assert.equal(line.err.type, 'TypeError');
    assert.match(line.err.message, /second line of detail/);
    assert.match(line.err.stack, /consumerWithABug/, 'the stack names the failing function');
  });

  it('describes an expected failure in one line', () => {
    assert.equal(describeError(new Error('connect ECONNREFUSED 127.0.0.1:6379\n    at x')), 'connect ECONNREFUSED 127.0.0.1:6379');
    assert.equal(describeError('plain'), 'plain');
    assert.equal(describeError(Object.assign(new Error(''), { name: 'AbortError' })), 'AbortError', 'an empty message falls back to the name');
  });
});
