/**
 * stdout sink: one JSON line per alert (the exact outbox body), for `replay` and `demo`.
 * Writes are serialised (concurrency 1) so lines never interleave and back-pressure holds.
 */
import type { Writable } from 'node:stream';
import type { Alert } from '../model/alert.js';
import { describeError } from '../model/errors.js';
import type { SendResult, Sink } from './sink.js';

export class StdoutSink implements Sink {
  readonly name: string;
  readonly concurrency = 1;

  constructor(
    private readonly out: Writable = process.stdout,
    options: { name?: string } = {},
  ) {
    this.name = options.name ?? 'stdout';
  }

  send(_alert: Alert, body: string): Promise<SendResult> {
    // The body is JSON.stringify output, which never holds a raw newline; guard anyway so
    // one alert is always exactly one line.
    const line = `${body.replace(/[\r\n]+/g, ' ')}\n`;
    return new Promise((resolve) => {
      if (this.out.destroyed || this.out.writableEnded) {
        resolve({ kind: 'fail', error: 'output stream is closed' });
        return;
      }
      try {
        // The callback fires once the line is handed to the OS (or failed), which is also
        // the back-pressure point: the next alert waits for it.
        this.out.write(line, (err) => {
          resolve(err ? { kind: 'fail', error: describeError(err) } : { kind: 'ok' });
        });
      } catch (err) {
        resolve({ kind: 'fail', error: describeError(err) });
      }
    });
  }
}
