/**
 * Structured logging (pino). One event per line, stable message text, context in fields.
 * Secrets are redacted by path; payloads are truncated with `truncate()` before logging.
 */
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger } from 'pino';

export interface LoggerOptions {
  /** pino level. @default 'info' */
  level?: string;
  /** Where lines go. @default stdout (fd 1) — stderr for commands that print results on stdout */
  destination?: DestinationStream;
}

const REDACT = [
  'secret',
  'token',
  'password',
  '*.secret',
  '*.token',
  '*.password',
  'headers.authorization',
  '*.headers.authorization',
];

export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      name: 't1612d',
      level: options.level ?? 'info',
      redact: { paths: REDACT, censor: '[redacted]' },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    options.destination ?? pino.destination({ fd: 1, sync: false }),
  );
}

/** A logger that writes nothing, for library use and tests that do not inspect logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** Cut long strings (payloads, response bodies) so a log line stays readable. */
export function truncate(text: string, max = 512): string {
  return text.length <= max ? text : `${text.slice(0, max)}…(${text.length - max} more chars)`;
}
