/**
 * Body handling for the Falco HTTP ingest, without any server: turns a request body into
 * normalised events plus the items that were not events. Accepts what real senders post:
 * - one JSON event per request (Falco's `http_output` with `json_output: true`);
 * - a JSON array of events (Falcosidekick-style forwarders and batchers);
 * - newline-delimited JSON, one event (or array of events) per line.
 * The ingest (src/sources/http-ingest.ts) decides status codes; this module only parses.
 *
 * Large bodies never block the event loop for long: the body is first cut into items by a
 * byte scanner (no JSON.parse of the whole), which counts them and stops as soon as there are
 * more than the intake can take; then each item is parsed on its own, yielding to the event
 * loop every few milliseconds. Items over `MAX_EVENT_BYTES` or nested deeper than
 * `MAX_DEPTH` are refused without being parsed.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { describeError, InvalidEventError } from '../model/errors.js';
import { fromFalcoJson, parseEventText, TEXT_EVENT_MAX_BYTES, TextEvent, textEventOf, type FalcoEvent } from '../model/event.js';

/** An item of a body that could not be normalised, with a short sample for the log. */
export interface InvalidItem {
  error: InvalidEventError;
  sample: string;
}

export interface ParsedEvents {
  events: FalcoEvent[];
  invalid: InvalidItem[];
  /**
   * Per event, the JSON text it was parsed from, as bytes of the body, where the event is a
   * whole item (not one of an array): the write-ahead log stores it instead of serialising the event.
   */
  texts?: (Buffer | undefined)[];
}

/** Largest single event, bytes: Falco's are a few KiB; parsing 1 MiB takes a few ms. */
export const MAX_EVENT_BYTES = 1024 * 1024;
/** Deepest nesting of one event: Falco's is 3 (event, output_fields, a JSON value). */
export const MAX_DEPTH = 32;
/** Longest sample of a bad item kept for logging. */
const SAMPLE_CHARS = 120;
/** Work between two yields to the event loop. */
const SLICE_MS = 4;
const SCAN_SLICE_BYTES = 1024 * 1024;

/** The body holds more items than the caller can take; nothing was parsed. */
export class TooManyEventsError extends Error {
  override readonly name = 'TooManyEventsError';
  readonly code = 'T1612D_TOO_MANY_EVENTS';
  constructor(readonly limit: number) {
    super(`body holds more than ${limit} events`);
  }
}

function sampleOf(text: string): string {
  return text.length <= SAMPLE_CHARS ? text : `${text.slice(0, SAMPLE_CHARS)}…`;
}

/** One line, bounded: JSON.parse messages quote the input, raw newlines included. */
function oneLine(text: string, max = 120): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length <= max ? flat : `${flat.slice(0, max)}…`;
}

function syntaxError(err: unknown, where: string): InvalidEventError {
  return new InvalidEventError(`${where} is not valid JSON: ${oneLine(describeError(err))}`, { cause: err });
}

function toInvalidEventError(err: unknown): InvalidEventError {
  return err instanceof InvalidEventError ? err : new InvalidEventError(oneLine(describeError(err)), { cause: err });
}

/** Normalise a value just parsed here (so normalised in place): an event, or an array of events. */
function collect(value: unknown, into: ParsedEvents): void {
  const items = Array.isArray(value) ? (value as unknown[]) : [value];
  for (const item of items) {
    try {
      into.events.push(fromFalcoJson(item, true));
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
 * Parse one JSON text holding an event or an array of events (one line of a file). Throws
 * InvalidEventError (one-line reason) when the text is not JSON at all; items that are JSON but
 * not events are returned in `invalid`.
 */
export function parseEventJson(text: string, where = 'body'): ParsedEvents {
  let value: unknown;
  try {
    value = parseEventText(text);
  } catch (err) {
    throw syntaxError(err, where);
  }
  const out: ParsedEvents = { events: [], invalid: [] };
  collect(value, out);
  return out;
}

/** Where one item of a body lies, and what the scanner already knows is wrong with it. */
interface Span {
  start: number;
  end: number;
  /** Why the item is refused without parsing, if it is. */
  flaw?: string;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function isSpace(b: number): boolean {
  return b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
}

/** Index just past the string that opens at `i` (a quote), or -1 when it never closes. */
function stringEnd(buf: Buffer, i: number): number {
  let j = i + 1;
  for (;;) {
    const q = buf.indexOf(QUOTE, j);
    if (q < 0) return -1;
    let bs = 0;
    for (let k = q - 1; k > i && buf[k] === BACKSLASH; k--) bs++;
    if (bs % 2 === 0) return q + 1;
    j = q + 1;
  }
}

/**
 * Cut a body into items without parsing them: top-level objects and scalars, and the elements
 * of top-level arrays (NDJSON lines are top-level values too). Throws TooManyEventsError once
 * there are more than `maxItems`. Yields to the event loop every `SCAN_SLICE_BYTES`.
 */
async function scanItems(buf: Buffer, from: number, maxItems: number): Promise<Span[]> {
  const spans: Span[] = [];
  const n = buf.length;
  let i = from;
  let inTopArray = false;
  let nextYield = i + SCAN_SLICE_BYTES;
  const add = (s: Span): void => {
    spans.push(s);
    if (spans.length > maxItems) throw new TooManyEventsError(maxItems);
  };
  while (i < n) {
    if (i >= nextYield) {
      await nextTurn();
      nextYield = i + SCAN_SLICE_BYTES;
    }
    const b = buf[i] as number;
    if (isSpace(b) || (inTopArray && b === 0x2c /* , */)) {
      i++;
      continue;
    }
    if (!inTopArray && b === 0x5b /* [ */) {
      inTopArray = true;
      i++;
      continue;
    }
    if (inTopArray && b === 0x5d /* ] */) {
      inTopArray = false;
      i++;
      continue;
    }
    const start = i;
    if (b === 0x7b /* { */ || b === 0x5b) {
      // A structured value: find its matching close, strings skipped whole.
      let depth = 0;
      let maxDepth = 0;
      let end = -1;
      while (i < n) {
        if (i >= nextYield) {
          await nextTurn();
          nextYield = i + SCAN_SLICE_BYTES;
        }
        const c = buf[i] as number;
        if (c === QUOTE) {
          const e = stringEnd(buf, i);
          if (e < 0) break;
          i = e;
          continue;
        }
        if (c === 0x7b || c === 0x5b) {
          depth++;
          if (depth > maxDepth) maxDepth = depth;
        } else if (c === 0x7d || c === 0x5d) {
          depth--;
          if (depth === 0) {
            end = i + 1;
            break;
          }
        }
        i++;
      }
      if (end < 0) {
        add({ start, end: n, flaw: 'is not valid JSON: the value never closes' });
        break;
      }
      i = end;
      const flaw =
        maxDepth > MAX_DEPTH
          ? `is nested more than ${MAX_DEPTH} levels deep`
          : end - start > MAX_EVENT_BYTES
            ? `is over the limit of ${MAX_EVENT_BYTES} bytes`
            : undefined;
      add(flaw ? { start, end, flaw } : { start, end });
      continue;
    }
    if (b === QUOTE) {
      const e = stringEnd(buf, i);
      i = e < 0 ? n : e;
      add({ start, end: i });
      continue;
    }
    // A scalar, or text that is not JSON: up to the next separator (newline ends a line of text).
    while (i < n) {
      const c = buf[i] as number;
      if (c === 0x0a || (inTopArray && (c === 0x2c || c === 0x5d))) break;
      if (!inTopArray && i - start > MAX_EVENT_BYTES) break;
      i++;
    }
    add({ start, end: i });
    if (!inTopArray) {
      const nl = buf.indexOf(0x0a, i);
      i = nl < 0 ? n : nl + 1;
    }
  }
  return spans;
}

/**
 * The usual body the short way: NDJSON whose every line is one event textEventOf reads (what
 * Falco's http_output and the bench post), cut at newlines and read without the scanner, from
 * the chunks the body came in (no copy of the whole: an event's text is a view of its chunk, or
 * a copy of its pieces when it straddles two). Undefined as soon as a line is anything else,
 * there are more lines than `maxItems`, or the body opens with a byte order mark or holds no
 * line: the caller then reads the whole body the long way, so every body comes out as the
 * scanner and the general parse would have it (a line that parses as one object is the item
 * the scanner finds there), refusals and their reasons included, at most once more.
 */
async function parseEventLines(chunks: readonly Buffer[], maxItems: number): Promise<ParsedEvents | undefined> {
  const first = chunks[0];
  if (first && first[0] === 0xef) return undefined; // maybe a byte order mark: the long way knows
  // Each line as the buffer it is in and where it starts and ends there, blanks trimmed.
  const bufs: Buffer[] = [];
  const cuts: number[] = [];
  let total = 0;
  let carry: Buffer[] = [];
  let carried = 0;
  const line = (buf: Buffer, from: number, to: number): boolean => {
    // Longer than any line read here (blanks around an event included): the long way.
    if (to - from > TEXT_EVENT_MAX_BYTES + 64) return false;
    let start = from;
    while (start < to && isSpace(buf[start] as number)) start++;
    let end = to;
    while (end > start && isSpace(buf[end - 1] as number)) end--;
    if (start === end) return true;
    if (buf[start] !== 0x7b || buf[end - 1] !== 0x7d || end - start > TEXT_EVENT_MAX_BYTES) return false;
    bufs.push(buf);
    cuts.push(start, end);
    return bufs.length <= maxItems;
  };
  let lines = 0;
  let sliceStart = performance.now();
  for (const c of chunks) {
    total += c.length;
    let i = 0;
    for (;;) {
      // Blank lines count for nothing: a body of millions of them yields like any other.
      if (++lines % 1024 === 0 && performance.now() - sliceStart >= SLICE_MS) {
        await nextTurn();
        sliceStart = performance.now();
      }
      const nl = c.indexOf(0x0a, i);
      const to = nl < 0 ? c.length : nl;
      if (nl < 0 || carried > 0) {
        // A line that goes on in the next chunk, or ends one that began in an earlier one.
        carried += to - i;
        if (carried > TEXT_EVENT_MAX_BYTES + 64) return undefined;
        if (to > i) carry.push(c.subarray(i, to));
        if (nl < 0) break;
        const whole = Buffer.concat(carry, carried);
        carry = [];
        carried = 0;
        if (!line(whole, 0, whole.length)) return undefined;
      } else if (!line(c, i, to)) return undefined;
      i = nl + 1;
    }
  }
  if (carried > 0) {
    const whole = Buffer.concat(carry, carried);
    if (!line(whole, 0, whole.length)) return undefined;
  }
  if (bufs.length === 0) return undefined;

  const out: ParsedEvents = { events: [], invalid: [] };
  const texts: Buffer[] = [];
  let kept = 0;
  for (let k = 0; k < bufs.length; k++) {
    if (performance.now() - sliceStart >= SLICE_MS) {
      await nextTurn();
      sliceStart = performance.now();
    }
    const buf = bufs[k] as Buffer;
    const start = cuts[2 * k] as number;
    const end = cuts[2 * k + 1] as number;
    const bytes = buf.subarray(start, end);
    const ev = textEventOf(buf.toString('utf8', start, end), bytes);
    if (!ev) return undefined;
    texts.push(bytes);
    out.events.push(ev);
    kept += end - start;
  }
  out.texts = texts;
  if (2 * kept < total) for (const ev of out.events) (ev as TextEvent).detach();
  return out;
}

/**
 * Parse an ingest request body (already decompressed; whole, or in the chunks it came in). The
 * content type is not needed: Falco sends `application/json` or `text/plain`, other senders
 * anything or nothing, and JSON, arrays and NDJSON are told apart by the bytes.
 *
 * Throws InvalidEventError with a one-line reason when the body is empty or not JSON, and
 * TooManyEventsError when it holds more than `maxItems` items (before parsing any, except the
 * lines the short way read before it met one it could not take: at most `maxItems` of them).
 * `keepText`: an event that is a whole item of up to TEXT_EVENT_MAX_BYTES comes back as a
 * TextEvent (its text kept, its output and fields parsed again when asked for). Their texts are
 * views of the body (or of its chunks) when they make up at least half of it, else copies, so a
 * few events cannot keep a large body alive.
 */
export async function parseIngestBody(input: Buffer | readonly Buffer[], maxItems: number, keepText = false): Promise<ParsedEvents> {
  const chunks = Buffer.isBuffer(input) ? [input] : input;
  if (keepText) {
    const lines = await parseEventLines(chunks, maxItems);
    if (lines) return lines;
  }
  const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
  let from = 0;
  if (body[0] === 0xef && body[1] === 0xbb && body[2] === 0xbf) from = 3; // UTF-8 byte order mark
  while (from < body.length && isSpace(body[from] as number)) from++;
  if (from >= body.length) throw new InvalidEventError('body is empty');
  const first = body[from] as number;
  const spans = await scanItems(body, from, maxItems);

  const out: ParsedEvents = { events: [], invalid: [] };
  const texts: (Buffer | undefined)[] = [];
  let kept = 0;
  let sliceStart = performance.now();
  for (let k = 0; k < spans.length; k++) {
    if (performance.now() - sliceStart >= SLICE_MS) {
      await nextTurn();
      sliceStart = performance.now();
    }
    const s = spans[k] as Span;
    const where = `item ${k + 1}`;
    if (s.flaw) {
      const head = body.toString('utf8', s.start, Math.min(s.end, s.start + SAMPLE_CHARS));
      out.invalid.push({ error: new InvalidEventError(`${where} ${s.flaw}`), sample: sampleOf(head) });
      continue;
    }
    const text = body.toString('utf8', s.start, s.end);
    if (keepText && s.end - s.start <= TEXT_EVENT_MAX_BYTES) {
      // The common case read once; anything else (refusals included) takes the way below.
      const bytes = body.subarray(s.start, s.end);
      const lone = textEventOf(text, bytes);
      if (lone) {
        texts[out.events.length] = bytes;
        out.events.push(lone);
        kept += bytes.length;
        continue;
      }
    }
    let value: unknown;
    try {
      value = parseEventText(text);
    } catch (err) {
      out.invalid.push({ error: syntaxError(err, where), sample: sampleOf(text) });
      continue;
    }
    if (Array.isArray(value)) {
      // An array nested in a top-level array, or an NDJSON line holding an array of events.
      collect(value, out);
    } else {
      const before = out.events.length;
      collect([value], out);
      if (out.events.length > before) {
        const bytes = body.subarray(s.start, s.end);
        texts[before] = bytes;
        if (keepText && bytes.length <= TEXT_EVENT_MAX_BYTES) {
          out.events[before] = TextEvent.of(out.events[before] as FalcoEvent, bytes);
          kept += bytes.length;
        }
      }
    }
  }
  out.texts = texts;
  if (kept > 0 && 2 * kept < body.length) {
    for (const ev of out.events) if (ev instanceof TextEvent) ev.detach();
  }
  if (out.events.length === 0 && first !== 0x7b && first !== 0x5b) {
    throw new InvalidEventError('body is not JSON (for Falco, set json_output: true so http_output posts JSON events)');
  }
  return out;
}
