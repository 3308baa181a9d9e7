/**
 * Body handling for the Falco HTTP ingest, without any server: turns a request body into
 * normalised events plus the items that were not events. Accepts what real senders post:
 * - one JSON event per request (Falco's `http_output` with `json_output: true`);
 * - a JSON array of events (Falcosidekick-style forwarders and batchers);
 * - newline-delimited JSON, one event (or array of events) per line.
 * The server (http-server.ts) decides status codes; this module only parses.
 */
import { describeError, InvalidEventError } from '../model/errors.js';
import { fromFalcoJson, parseJsonPreservingBigInts, type FalcoEvent } from '../model/event.js';

/** An item of a body that could not be normalised, with a short sample for the log. */
export interface InvalidItem {
  error: InvalidEventError;
  sample: string;
}

export interface ParsedEvents {
  events: FalcoEvent[];
  invalid: InvalidItem[];
}

/** Longest sample of a bad item kept for logging. */
const SAMPLE_CHARS = 300;

function sampleOf(text: string): string {
  return text.length <= SAMPLE_CHARS ? text : `${text.slice(0, SAMPLE_CHARS)}…`;
}

/** One line, bounded: JSON.parse messages quote the input, raw newlines included. */
function oneLine(text: string, max = 200): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length <= max ? flat : `${flat.slice(0, max)}…`;
}

function syntaxError(err: unknown, where: string): InvalidEventError {
  return new InvalidEventError(`${where} is not valid JSON: ${oneLine(describeError(err))}`, { cause: err });
}

function toInvalidEventError(err: unknown): InvalidEventError {
  return err instanceof InvalidEventError ? err : new InvalidEventError(oneLine(describeError(err)), { cause: err });
}

/** Normalise an already parsed value: an event, or an array of events. */
function collect(value: unknown, into: ParsedEvents): void {
  const items = Array.isArray(value) ? (value as unknown[]) : [value];
  for (const item of items) {
    try {
      into.events.push(fromFalcoJson(item));
    } catch (err) {
      let sample: string;
      try {
        sample = sampleOf(JSON.stringify(item) ?? String(item));
      } catch {
        sample = '(unprintable)';
      }
      into.invalid.push({ error: toInvalidEventError(err), sample });
    }
  }
}

/**
 * Parse one JSON text holding an event or an array of events. Throws InvalidEventError
 * (one-line reason) when the text is not JSON at all; items that are JSON but not events are
 * returned in `invalid`.
 */
export function parseEventJson(text: string, where = 'body'): ParsedEvents {
  let value: unknown;
  try {
    value = parseJsonPreservingBigInts(text);
  } catch (err) {
    throw syntaxError(err, where);
  }
  const out: ParsedEvents = { events: [], invalid: [] };
  collect(value, out);
  return out;
}

function isNdjsonType(contentType: string | undefined): boolean {
  return contentType !== undefined && /ndjson|jsonl|json-seq|jsonlines/i.test(contentType);
}

function parseLines(text: string): ParsedEvents {
  const out: ParsedEvents = { events: [], invalid: [] };
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (line === '') continue;
    try {
      const part = parseEventJson(line, `line ${i + 1}`);
      out.events.push(...part.events);
      out.invalid.push(...part.invalid);
    } catch (err) {
      out.invalid.push({ error: toInvalidEventError(err), sample: sampleOf(line) });
    }
  }
  return out;
}

/**
 * Parse an ingest request body (already decompressed). The content type is only a hint:
 * Falco sends `application/json` or `text/plain`, other senders anything or nothing, so
 * every body is tried as JSON, then as newline-delimited JSON.
 *
 * Throws InvalidEventError with a one-line reason when the body is empty or not JSON.
 */
export function parseIngestBody(body: Buffer, contentType?: string): ParsedEvents {
  let text = body.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const trimmed = text.trim();
  if (trimmed === '') throw new InvalidEventError('body is empty');

  if (isNdjsonType(contentType)) return parseLines(trimmed);
  try {
    return parseEventJson(trimmed);
  } catch (err) {
    // Several values on separate lines is NDJSON; anything else is a syntax error.
    if (!trimmed.includes('\n')) {
      const looksLikeText = !/^[[{]/.test(trimmed);
      if (looksLikeText) {
        throw new InvalidEventError(
          'body is not JSON (for Falco, set json_output: true so http_output posts JSON events)',
          { cause: err },
        );
      }
      throw err;
    }
    return parseLines(trimmed);
  }
}
