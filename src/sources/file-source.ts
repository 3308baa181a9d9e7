/**
 * JSON-lines source: Falco events one per line, as Falco's json_output, file_output and
 * http_output bodies look (a line may also hold an array of events). Feeds `t1612d replay`.
 * Lines are split on raw bytes, so very long lines, CRLF and multi-byte characters across
 * read chunks are handled, and a runaway line without a newline is bounded by `maxLineBytes`
 * instead of filling memory. Backpressure comes from the intake: reading pauses while it is
 * full.
 */
import { open } from 'node:fs/promises';
import { addAbortSignal, Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { describeError, InvalidEventError } from '../model/errors.js';
import type { SourceName } from '../model/event.js';
import { parseEventJson, type ParsedEvents } from './http-parse.js';
import type { Intake } from './intake.js';

export interface ReadEventsOptions {
  /** Stops reading; the promise then resolves with what was read so far. */
  signal?: AbortSignal;
  /** Source label for metrics and logs. @default 'file' */
  source?: SourceName;
  /** A longer line is counted invalid and skipped without being buffered. @default 64 MiB */
  maxLineBytes?: number;
}

export interface ReadEventsResult {
  /** Events pushed into the intake. */
  events: number;
  /** Lines (or array items) that were not Falco events. */
  invalid: number;
}

const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;
const SAMPLE_CHARS = 300;

function isAbort(err: unknown, signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true || (err instanceof Error && err.name === 'AbortError');
}

/** Resolves when the intake has room, or when the signal aborts. */
async function writable(intake: Intake, signal: AbortSignal | undefined): Promise<void> {
  if (!intake.full) return;
  if (!signal) return intake.whenWritable();
  if (signal.aborted) return;
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<void>((resolve) => {
    onAbort = resolve;
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    await Promise.race([intake.whenWritable(), aborted]);
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

/**
 * Read Falco JSON lines from a stream into the intake. Blank lines are skipped; lines that are
 * not JSON or not events are counted with `intake.invalid()` (the log sample names the line
 * number). Resolves once the last event has been pushed; the caller awaits
 * `intake.whenIdle()` for processing to finish. Read errors reject.
 */
export async function readEventStream(
  input: NodeJS.ReadableStream,
  intake: Intake,
  options: ReadEventsOptions = {},
): Promise<ReadEventsResult> {
  const { signal } = options;
  const source = options.source ?? 'file';
  const maxLine = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  const result: ReadEventsResult = { events: 0, invalid: 0 };
  if (signal?.aborted) return result;
  if (signal && input instanceof Readable) addAbortSignal(signal, input);

  let lineNo = 0;
  let parts: Buffer[] = [];
  let partsLen = 0;
  let overlong = false;

  const bad = (err: unknown, text: string): void => {
    result.invalid++;
    const sample = text.length <= SAMPLE_CHARS ? text : `${text.slice(0, SAMPLE_CHARS)}…`;
    intake.invalid(source, err, `line ${lineNo}: ${sample}`);
  };

  const handleLine = async (bytes: Buffer): Promise<void> => {
    lineNo++;
    let text = bytes.toString('utf8');
    if (lineNo === 1 && text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    text = text.trim(); // also drops the \r of CRLF
    if (text === '') return;
    let parsed: ParsedEvents;
    try {
      parsed = parseEventJson(text, `line ${lineNo}`);
    } catch (err) {
      bad(err, text);
      return;
    }
    for (const item of parsed.invalid) bad(item.error, item.sample);
    for (const ev of parsed.events) {
      await writable(intake, signal);
      if (signal?.aborted) return;
      intake.push(ev, source);
      result.events++;
    }
  };

  const endLine = async (tail: Buffer): Promise<void> => {
    if (overlong) {
      lineNo++;
      result.invalid++;
      intake.invalid(
        source,
        new InvalidEventError(`line is longer than ${maxLine} bytes`),
        `line ${lineNo}: (skipped)`,
      );
    } else {
      const line = parts.length === 0 ? tail : Buffer.concat([...parts, tail]);
      await handleLine(line);
    }
    parts = [];
    partsLen = 0;
    overlong = false;
  };

  try {
    for await (const chunk of input) {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
      let start = 0;
      let nl: number;
      while ((nl = buf.indexOf(10, start)) !== -1) {
        await endLine(buf.subarray(start, nl));
        if (signal?.aborted) return result;
        start = nl + 1;
      }
      if (start < buf.length && !overlong) {
        const rest = buf.subarray(start);
        partsLen += rest.length;
        if (partsLen > maxLine) {
          overlong = true;
          parts = [];
        } else {
          parts.push(rest);
        }
      }
    }
    if (parts.length > 0 || overlong) await endLine(Buffer.alloc(0));
  } catch (err) {
    if (isAbort(err, signal)) return result;
    throw err;
  }
  return result;
}

/**
 * Read a JSON-lines file (`-` = stdin; a `.gz` name is decompressed) into the intake.
 * Rejects with one clear line when the file cannot be read.
 */
export async function readEventFile(
  pathOrDash: string,
  intake: Intake,
  options: ReadEventsOptions = {},
): Promise<ReadEventsResult> {
  if (pathOrDash === '-') return readEventStream(process.stdin, intake, options);
  let handle;
  try {
    handle = await open(pathOrDash, 'r');
  } catch (err) {
    throw new Error(`cannot read ${pathOrDash}: ${describeError(err)}`, { cause: err });
  }
  const file = handle.createReadStream({ highWaterMark: 256 * 1024 });
  try {
    const input = pathOrDash.endsWith('.gz') ? file.pipe(createGunzip()) : file;
    if (input !== file) file.on('error', (err) => input.destroy(err));
    return await readEventStream(input, intake, options);
  } catch (err) {
    throw new Error(`cannot read ${pathOrDash}: ${describeError(err)}`, { cause: err });
  } finally {
    file.destroy();
    await handle.close().catch(() => undefined);
  }
}
