/**
 * `t1612d replay FILE|-`: recorded Falco JSON events through the same pipeline as the daemon
 * (sources disabled), each alert printed as one JSON line. In-memory stores unless Redis is
 * configured. This is the tuning loop: record once, replay against new settings.
 */
import type { Readable, Writable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from './config/config.js';
import { Daemon } from './daemon.js';
import { readEventFile, readEventStream } from './sources/file-source.js';
import type { Alert, AlertSink } from './model/alert.js';

export interface ReplayResult {
  events: number;
  invalid: number;
  alerts: Alert[];
}

/** Replay FILE (`-` = stdin, `.gz` decompressed) or an already open stream. */
export async function runReplay(
  input: Readable | string,
  config: Config,
  out: Writable,
  logger: Logger,
): Promise<ReplayResult> {
  const alerts: Alert[] = [];
  const printer: AlertSink = {
    enqueue(alert: Alert): Promise<void> {
      alerts.push(alert);
      return new Promise((resolve, reject) =>
        out.write(`${JSON.stringify(alert)}\n`, (err) => (err ? reject(err) : resolve())),
      );
    },
  };
  const daemon = new Daemon(config, { logger, alertSink: printer, sources: false });
  await daemon.start();
  try {
    const counts =
      typeof input === 'string'
        ? await readEventFile(input, daemon.intake, { source: 'file' })
        : await readEventStream(input, daemon.intake, { source: 'file' });
    await daemon.intake.whenIdle();
    return { ...counts, alerts };
  } finally {
    // close() flushes the correlator, so every decided alert has been printed when it resolves.
    await daemon.close();
  }
}
