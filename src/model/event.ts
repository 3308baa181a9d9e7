/**
 * FalcoEvent: the one normalised shape of a Falco alert, whichever way it arrived (gRPC
 * `response`, json_output / http_output / file_output body). Field values are normalised to
 * strings, with Falco's "missing" spellings (`<NA>`, JSON `null`, gRPC's JSON-dumped `"null"`)
 * turned into `null`, so a gRPC event and its JSON twin normalise to equal objects.
 */
import { InvalidEventError } from './errors.js';

export const PRIORITIES = [
  'Emergency',
  'Alert',
  'Critical',
  'Error',
  'Warning',
  'Notice',
  'Informational',
  'Debug',
] as const;
export type Priority = (typeof PRIORITIES)[number];

/**
 * Caps on every field of an incoming event (README "Security"). Values Falco derives from the
 * monitored workload (output text, output_fields values) are cut at their cap, never refused:
 * refusing them would let a build hide its egress by padding a command line. Names that come
 * from the rules (rule, tags, field keys, source) are short by nature; an event over their caps
 * is refused.
 */
export const EVENT_LIMITS = {
  /** Characters of `rule`. */
  rule: 1024,
  /** Characters of `source` (a plugin name at most). */
  source: 64,
  /** Characters of `hostname` (a DNS name is at most 253). */
  hostname: 255,
  /** Characters of `output` kept; the rest is cut. */
  output: 8192,
  /** Entries of `tags`. */
  tags: 64,
  /** Characters of one tag. */
  tag: 128,
  /** Entries of `output_fields`. */
  fields: 512,
  /** Characters of one `output_fields` key. */
  fieldKey: 256,
  /** Characters of one `output_fields` value kept; the rest is cut. */
  fieldValue: 4096,
} as const;

/** Longest piece of input an error reason quotes. */
const QUOTE_CHARS = 32;

/** A short, single-line quote of untrusted input for an error reason: never the whole value. */
export function quoteInput(raw: unknown, max = QUOTE_CHARS): string {
  let text: string;
  if (typeof raw === 'string') text = raw;
  else if (raw === undefined) return 'undefined';
  else if (raw === null || typeof raw === 'number' || typeof raw === 'boolean') return String(raw);
  else return `(${Array.isArray(raw) ? 'array' : typeof raw})`;
  // JSON.stringify escapes control characters, so the quote stays on one line.
  const head = text.slice(0, max);
  return text.length <= max ? JSON.stringify(head) : `${JSON.stringify(head)}… (${text.length} chars)`;
}

/** Cut a workload-derived text at `max` characters. */
function cap(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

/** Field value after normalisation: text, or null when Falco had no value. */
export type FieldValue = string | null;

export interface FalcoEvent {
  /** Event time, nanoseconds since the Unix epoch (Falco's precision). */
  timeNs: bigint;
  rule: string;
  priority: Priority;
  /** `syscall`, `k8s_audit`, `internal`, or a plugin source name. */
  source: string;
  hostname: string;
  tags: string[];
  output: string;
  /** `output_fields`, values as strings (`null` when missing / `<NA>`). */
  fields: Record<string, FieldValue>;
  /**
   * One of `fields`, where the event can find it without reading them all (an event read from
   * Falco's gRPC bytes); `fieldOf` uses it.
   */
  field?(name: string): FieldValue | undefined;
}

/**
 * The fields every egress event is asked for (the hot path's fieldOf calls): a TextEvent keeps
 * these and reads the others from its text again when asked.
 */
const HOT_FIELDS = ['fd.sip', 'fd.sip.name', 'container.id', 'container.start_ts'] as const;

/** `fields[k]` as fieldOf gives it: undefined unless an own entry. */
function own(fields: Record<string, FieldValue>, k: string): FieldValue | undefined {
  return Object.hasOwn(fields, k) ? fields[k] : undefined;
}

/** What a TextEvent keeps of an event's top level. */
type EventHead = Pick<FalcoEvent, 'timeNs' | 'rule' | 'priority' | 'source' | 'hostname' | 'tags'>;

/** Longest JSON text a TextEvent keeps, bytes: Falco's events are a few KiB; larger ones stay parsed. */
export const TEXT_EVENT_MAX_BYTES = 16 * 1024;

/**
 * A Falco JSON event that keeps its text (UTF-8 bytes) instead of its parsed output and
 * output_fields: what the hot path reads (time, rule, priority, source, hostname, tags,
 * HOT_FIELDS) is kept as parsed; `output` and `fields` are parsed from the text again the first
 * time they are asked for (an egress to a new IP, a build signal, an alert), then kept. An HTTP
 * body's events wait in the intake a while: kept whole, each is a few KB of small objects that
 * every young-generation collection copies and the next promotes; kept as bytes, they are off the heap.
 */
export class TextEvent implements FalcoEvent {
  readonly timeNs: bigint;
  readonly rule: string;
  readonly priority: Priority;
  readonly source: string;
  readonly hostname: string;
  readonly tags: string[];
  // Private, so that the own enumerable properties are exactly FalcoEvent's less `output` and `fields`.
  #text: Buffer;
  readonly #sip: FieldValue | undefined;
  readonly #sipName: FieldValue | undefined;
  readonly #containerId: FieldValue | undefined;
  readonly #containerStart: FieldValue | undefined;
  #full: FalcoEvent | undefined;

  /** `head`: the event's normalised top level; `hot`: its HOT_FIELDS, in that order (undefined: absent). */
  constructor(head: EventHead, hot: readonly [FieldValue | undefined, FieldValue | undefined, FieldValue | undefined, FieldValue | undefined], text: Buffer) {
    this.timeNs = head.timeNs;
    this.rule = head.rule;
    this.priority = head.priority;
    this.source = head.source;
    this.hostname = head.hostname;
    this.tags = head.tags;
    this.#text = text;
    [this.#sip, this.#sipName, this.#containerId, this.#containerStart] = hot;
  }

  /** `ev`: fromFalcoJson of `text` (the caller has just parsed it). */
  static of(ev: FalcoEvent, text: Buffer): TextEvent {
    const f = ev.fields;
    return new TextEvent(ev, [own(f, HOT_FIELDS[0]), own(f, HOT_FIELDS[1]), own(f, HOT_FIELDS[2]), own(f, HOT_FIELDS[3])], text);
  }

  get output(): string {
    return this.full().output;
  }

  get fields(): Record<string, FieldValue> {
    return this.full().fields;
  }

  /** The JSON text, as received. */
  get text(): Buffer {
    return this.#text;
  }

  /** One field, as `fields[name]` would give it: the hot ones without parsing again. */
  field(name: string): FieldValue | undefined {
    if (name === HOT_FIELDS[0]) return this.#sip;
    if (name === HOT_FIELDS[2]) return this.#containerId;
    if (name === HOT_FIELDS[1]) return this.#sipName;
    if (name === HOT_FIELDS[3]) return this.#containerStart;
    return this.fields[name];
  }

  /** Keep a copy of the text instead of a view of a larger buffer (which it would keep whole). */
  detach(): void {
    this.#text = Buffer.from(this.#text);
  }

  private full(): FalcoEvent {
    // The text parsed once already, so it parses again to the same event.
    this.#full ??= fromFalcoJson(parseEventText(this.#text.toString('utf8')), true);
    return this.#full;
  }
}

/** Where an event came from, for metrics labels. */
export type SourceName = 'grpc' | 'http' | 'file';

/** Milliseconds since the epoch of an event (for windows and clocks). */
export function eventTimeMs(ev: FalcoEvent): number {
  return Number(ev.timeNs / 1_000_000n);
}

/** ISO-8601 with nanoseconds, as Falco writes it. */
export function formatTimeNs(ns: bigint): string {
  // Floor, not truncate: BigInt division rounds toward zero, which breaks times before 1970.
  const frac = ((ns % 1_000_000_000n) + 1_000_000_000n) % 1_000_000_000n;
  const seconds = (ns - frac) / 1_000_000_000n;
  const iso = new Date(Number(seconds) * 1000).toISOString(); // yyyy-mm-ddThh:mm:ss.mmmZ
  return `${iso.slice(0, 19)}.${frac.toString().padStart(9, '0')}Z`;
}

/** `ev.fields[name]`, read alone where the event can (the egress hot path asks for two fields of thirty). */
export function fieldOf(ev: FalcoEvent, name: string): FieldValue | undefined {
  return ev.field !== undefined ? ev.field(name) : ev.fields[name];
}

/** Read a field: `null` when absent or missing. */
export function field(ev: FalcoEvent, name: string): string | null {
  const v = fieldOf(ev, name);
  return v === undefined ? null : v;
}

/** Falco's spellings of a missing value ('', `<NA>`, `null`), told by length first: a set look-up hashes the whole value. */
function isMissing(v: string): boolean {
  return v.length === 0 || (v.length === 4 && (v === '<NA>' || v === 'null'));
}

/** Normalise one raw output_fields value. */
function normaliseValue(v: unknown): FieldValue {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string') return isMissing(v) ? null : cap(v, EVENT_LIMITS.fieldValue);
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return null;
    return String(v);
  }
  if (typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  if (typeof v === 'object') {
    let text: string;
    try {
      text = JSON.stringify(v);
    } catch {
      // Nesting too deep for the stack: no Falco field is shaped like that.
      throw new InvalidEventError('an output_fields value is nested too deeply');
    }
    return cap(text, EVENT_LIMITS.fieldValue);
  }
  throw new InvalidEventError(`an output_fields value has unsupported type ${typeof v}`);
}

function normaliseFields(raw: unknown, owned: boolean): Record<string, FieldValue> {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new InvalidEventError('output_fields must be an object of field: value');
  }
  const src = raw as Record<string, unknown>;
  // Checked before anything is changed, so a refused event is left as it came.
  let count = 0;
  for (const k in src) {
    if (!Object.hasOwn(src, k)) continue;
    count++;
    if (k.length > EVENT_LIMITS.fieldKey) {
      throw new InvalidEventError(`an output_fields key is over the limit of ${EVENT_LIMITS.fieldKey} characters`);
    }
  }
  if (count > EVENT_LIMITS.fields) {
    throw new InvalidEventError(`output_fields has ${count} entries, over the limit of ${EVENT_LIMITS.fields}`);
  }
  // A freshly parsed object nobody else holds is normalised where it lies (no copy).
  const out: Record<string, unknown> = owned ? src : {};
  for (const k in src) {
    if (!Object.hasOwn(src, k)) continue;
    // Assigning `__proto__` would go through the prototype setter (JSON `null` there would
    // strip the object's prototype); no Falco field has that name.
    if (k === '__proto__') {
      if (owned) delete out[k];
      continue;
    }
    const v = src[k];
    const n = normaliseValue(v);
    if (n !== v || !owned) out[k] = n;
  }
  return out as Record<string, FieldValue>;
}

/** Priority names as Falco writes them and in lower case; Falco's enum also spells INFORMATIONAL as INFO in some clients. */
const PRIORITY_BY_NAME = new Map<string, Priority>([
  ...PRIORITIES.map((p) => [p, p] as const),
  ...PRIORITIES.map((p) => [p.toLowerCase(), p] as const),
  ['info', 'Informational'],
]);

export function normalisePriority(raw: unknown): Priority {
  if (typeof raw === 'number' && Number.isInteger(raw)) {
    const p = PRIORITIES[raw];
    if (p) return p;
  }
  // Longer than any name: refused before it is looked at any further.
  if (typeof raw === 'string' && raw !== '' && raw.length <= 16) {
    // As Falco writes it (`Notice`) without making a string; else in any case.
    const p = PRIORITY_BY_NAME.get(raw) ?? PRIORITY_BY_NAME.get(raw.toLowerCase());
    if (p) return p;
    if (/^\d$/.test(raw)) {
      const byNum = PRIORITIES[Number(raw)];
      if (byNum) return byNum;
    }
  }
  throw new InvalidEventError(`priority ${quoteInput(raw)} is not one of ${PRIORITIES.join(', ')}`);
}

export function requireRule(raw: unknown): string {
  if (typeof raw !== 'string' || raw.trim() === '') throw new InvalidEventError('rule is missing or not a string');
  if (raw.length > EVENT_LIMITS.rule) {
    throw new InvalidEventError(`rule is over the limit of ${EVENT_LIMITS.rule} characters`);
  }
  return raw;
}

export function normaliseTags(raw: unknown): string[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw) || !raw.every((t) => typeof t === 'string')) {
    throw new InvalidEventError('tags must be a list of strings');
  }
  if (raw.length > EVENT_LIMITS.tags) {
    throw new InvalidEventError(`tags has ${raw.length} entries, over the limit of ${EVENT_LIMITS.tags}`);
  }
  if (raw.some((t: string) => t.length > EVENT_LIMITS.tag)) {
    throw new InvalidEventError(`a tag is over the limit of ${EVENT_LIMITS.tag} characters`);
  }
  return raw as string[];
}

/** An optional text field; over `max` it is refused, or cut when `cut` (workload-derived text). */
function optString(raw: unknown, name: string, max: number, cut = false): string {
  if (raw === undefined || raw === null) return '';
  if (typeof raw !== 'string') throw new InvalidEventError(`${name} must be a string`);
  if (raw.length <= max) return raw;
  if (cut) return cap(raw, max);
  throw new InvalidEventError(`${name} is over the limit of ${max} characters`);
}

const ISO_RE = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})$/;

/**
 * The second (`YYYY-MM-DDTHH:MM:SS`, UTC) of the last time parsed, and its ns: a burst of
 * events shares its seconds, so the next one reads only its nine fraction digits.
 */
let lastSecond = '';
let lastSecondNs = 0n;

/** Parse Falco's ISO-8601 time (nanosecond fraction) to ns since epoch. */
export function parseIsoNs(text: string): bigint | undefined {
  // As Falco writes it (`…:SS.123456789Z`), in the second of the last one.
  if (text.length === 30 && text.charCodeAt(19) === 46 /* . */ && text.charCodeAt(29) === 90 /* Z */ && lastSecond !== '' && text.startsWith(lastSecond)) {
    let frac = 0;
    for (let i = 20; i < 29; i++) {
      const d = text.charCodeAt(i) - 48;
      if (d < 0 || d > 9) return undefined; // not a time: the pattern below would not match either
      frac = frac * 10 + d;
    }
    return lastSecondNs + BigInt(frac);
  }
  const m = ISO_RE.exec(text);
  if (!m) return undefined;
  const zone = m[3] === 'Z' ? 'Z' : m[3];
  const baseMs = Date.parse(`${m[1]}${zone}`);
  if (Number.isNaN(baseMs)) return undefined;
  const frac = BigInt((m[2] ?? '').padEnd(9, '0'));
  const secondNs = BigInt(baseMs) * 1_000_000n;
  if (zone === 'Z') {
    lastSecond = m[1] as string;
    lastSecondNs = secondNs;
  }
  return secondNs + frac;
}

/**
 * Normalise a parsed Falco JSON alert (json_output / http_output / file_output body).
 * Throws InvalidEventError with the reason when it is not a Falco event. `owned`: the value was
 * just parsed and nobody else holds it, so its `output_fields` are normalised in place.
 */
export function fromFalcoJson(raw: unknown, owned = false): FalcoEvent {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new InvalidEventError('event must be a JSON object');
  }
  const o = raw as Record<string, unknown>;
  const ev = headOf(o) as FalcoEvent;
  // Set on the object just made (a spread copied it at several times the cost).
  ev.output = optString(o['output'], 'output', EVENT_LIMITS.output, true);
  ev.fields = normaliseFields(o['output_fields'], owned);
  return ev;
}

/** The normalised top level of a parsed Falco JSON event, less output and output_fields; throws InvalidEventError. */
function headOf(o: Record<string, unknown>): EventHead {
  const rule = requireRule(o['rule']);
  let timeNs: bigint | undefined;
  if (typeof o['time'] === 'string') timeNs = parseIsoNs(o['time']);
  if (timeNs === undefined) throw new InvalidEventError('time is missing or not ISO-8601');
  return {
    timeNs,
    rule,
    priority: normalisePriority(o['priority']),
    source: optString(o['source'], 'source', EVENT_LIMITS.source) || 'syscall',
    hostname: optString(o['hostname'], 'hostname', EVENT_LIMITS.hostname),
    tags: normaliseTags(o['tags']),
  };
}

/** gRPC `response` as decoded by proto-loader with `longs: String, enums: String, defaults: true`. */
export interface GrpcResponse {
  time?: { seconds?: string | number; nanos?: number } | null;
  priority?: string | number;
  source_deprecated?: string | number;
  rule?: string;
  output?: string;
  output_fields?: Record<string, string>;
  hostname?: string;
  tags?: string[];
  source?: string;
}

const GRPC_SOURCES: Record<string, string> = {
  SYSCALL: 'syscall',
  K8S_AUDIT: 'k8s_audit',
  INTERNAL: 'internal',
  PLUGIN: 'plugin',
  '0': 'syscall',
  '1': 'k8s_audit',
  '2': 'internal',
  '3': 'plugin',
};

/**
 * With `json_output: true`, Falco's gRPC `output` carries the whole JSON line (seen on 0.43.1),
 * not the text output: take the text from inside it. Anything else is kept as given.
 */
function plainOutput(output: string): string {
  // A JSON line past the output cap is not unwrapped: parsing it would cost more than it shows.
  if (!output.startsWith('{"') || output.length > 4 * EVENT_LIMITS.output) return output;
  const quick = outputOfJsonLine(output);
  if (quick !== undefined) return quick;
  try {
    const o = JSON.parse(output) as { output?: unknown };
    return typeof o.output === 'string' ? o.output : output;
  } catch {
    return output;
  }
}

/**
 * The `output` string of a Falco JSON line without parsing the rest of it: Falco writes its
 * keys in order (`hostname`, then `output`), so the first `"output":"` is the top-level key
 * when nothing before it opens an object or array. Undefined when the line is shaped any other
 * way (then the whole line is parsed). The rest of the line is not checked: a text output
 * would have to be shaped exactly like a JSON line for this to take a piece of it.
 */
function outputOfJsonLine(line: string): string | undefined {
  const at = line.indexOf('"output":"');
  if (at < 1 || !line.endsWith('}')) return undefined;
  const before = line.charCodeAt(at - 1);
  if (before !== 123 /* { */ && before !== 44 /* , */) return undefined;
  const head = line.slice(1, at);
  if (head.includes('{') || head.includes('[')) return undefined;
  const start = at + 9;
  let q = start;
  for (;;) {
    q = line.indexOf('"', q + 1);
    if (q < 0) return undefined;
    let bs = 0;
    for (let k = q - 1; line.charCodeAt(k) === 92 /* \\ */; k--) bs++;
    if (bs % 2 === 0) break;
  }
  const after = line.charCodeAt(q + 1);
  if (after !== 44 /* , */ && after !== 125 /* } */) return undefined;
  try {
    const text: unknown = JSON.parse(line.slice(start, q + 1));
    return typeof text === 'string' ? text : undefined;
  } catch {
    return undefined;
  }
}

/** Normalise a decoded gRPC `falco.outputs.response` (Falco 0.24 – 0.43). */
export function fromGrpcResponse(r: GrpcResponse): FalcoEvent {
  const rule = requireRule(r.rule);
  const t = r.time;
  if (!t || t.seconds === undefined || t.seconds === null) throw new InvalidEventError('time is missing');
  let seconds: bigint;
  try {
    seconds = BigInt(t.seconds);
  } catch {
    throw new InvalidEventError('time.seconds is not an integer');
  }
  // Checked in this order (rule, time, source, then the rest), as the field-level decoder does.
  const timeNs = grpcTimeNs(seconds, t.nanos ?? 0);
  const source = grpcSource(r.source, r.source_deprecated);
  return {
    timeNs,
    rule,
    priority: normalisePriority(r.priority ?? 0),
    source,
    hostname: grpcHostname(r.hostname ?? ''),
    tags: normaliseTags(r.tags ?? []),
    output: grpcOutputText(r.output ?? ''),
    fields: normaliseFields(r.output_fields ?? {}, false),
  };
}

/*
 * The checks `fromGrpcResponse` makes, one piece at a time, for the field-level decoder
 * (src/sources/proto.ts) that reads a `response` straight off the wire: it gets the same
 * event, or the same refusal, without building the intermediate object.
 */

/** The event time from Timestamp `seconds` (undefined when absent) and `nanos`; throws when missing. */
export function grpcTimeNs(seconds: bigint | undefined, nanos: number): bigint {
  if (seconds === undefined || (seconds <= 0n && nanos === 0)) throw new InvalidEventError('time is missing');
  return seconds * 1_000_000_000n + BigInt(nanos);
}

/** `source`, or from `source_deprecated` (an enum name or number, undefined when absent) when it is ''. */
export function grpcSource(source: string | undefined, sourceDeprecated: string | number | undefined): string {
  const s = optString(source, 'source', EVENT_LIMITS.source);
  if (s !== '') return s;
  return sourceDeprecated === undefined ? 'syscall' : (GRPC_SOURCES[String(sourceDeprecated).toUpperCase()] ?? 'syscall');
}

/** `hostname` of a gRPC response; throws over its cap. */
export function grpcHostname(hostname: string): string {
  return optString(hostname, 'hostname', EVENT_LIMITS.hostname);
}

/** The text output of a gRPC `output` (the text, or Falco's JSON line that carries it), cut at its cap. */
export function grpcOutputText(output: string): string {
  return optString(plainOutput(output), 'output', EVENT_LIMITS.output, true);
}

/** One `output_fields` value that is not one of Falco's "missing" spellings, cut at its cap. */
export function grpcFieldText(v: string): string {
  return v.length <= EVENT_LIMITS.fieldValue ? v : cap(v, EVENT_LIMITS.fieldValue);
}

/** Throws when `output_fields` has more entries, or a longer key, than an event may have. */
export function checkGrpcFields(fields: Record<string, FieldValue>): void {
  let nFields = 0;
  for (const k in fields) {
    if (++nFields > EVENT_LIMITS.fields) {
      throw new InvalidEventError(`output_fields has more than ${EVENT_LIMITS.fields} entries`);
    }
    if (k.length > EVENT_LIMITS.fieldKey) {
      throw new InvalidEventError(`an output_fields key is over the limit of ${EVENT_LIMITS.fieldKey} characters`);
    }
  }
}

/** Integers from here on have 16+ digits: parseJsonPreservingBigInts keeps them as text. */
const BIG_DIGITS = 1e15;

function isBigInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && Math.abs(v) >= BIG_DIGITS;
}

/**
 * The exact digits of the `output_fields` number under `key`, read back from the text, or
 * undefined when they cannot be found without doubt: the key must occur once in the whole text,
 * as a key (a quote inside a string is always escaped, so an unescaped `"key":` is a key), with
 * a plain integer after it that parses to the same double.
 */
function digitsOf(text: string, key: string, v: number): string | undefined {
  const needle = `${JSON.stringify(key)}:`;
  const at = text.indexOf(needle);
  if (at <= 0 || text.charCodeAt(at - 1) === 92 /* \ */ || text.indexOf(needle, at + 1) >= 0) return undefined;
  let i = at + needle.length;
  const start = i;
  if (text.charCodeAt(i) === 45 /* - */) i++;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) break;
    i++;
  }
  const next = text.charCodeAt(i);
  if (next === 46 /* . */ || next === 101 /* e */ || next === 69 /* E */) return undefined;
  const digits = text.slice(start, i);
  return Number(digits) === v ? digits : undefined;
}

/**
 * Parse one JSON text: the same value as parseJsonPreservingBigInts, at the cost of one
 * JSON.parse for what Falco sends. A Falco event's only big integers are `output_fields`
 * numbers (`evt.time` in ns); those are read back exactly from the text. Anything else shaped
 * so that a big integer could hide in it (arrays, nested objects, big top-level numbers, a key
 * that occurs twice) takes the exact slow path.
 */
export function parseEventText(text: string): unknown {
  const value: unknown = JSON.parse(text);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return /\d{16}/.test(text) ? parseJsonPreservingBigInts(text) : value;
  }
  const o = value as Record<string, unknown>;
  for (const k in o) {
    const v = o[k];
    if (isBigInteger(v)) return parseJsonPreservingBigInts(text);
    if (typeof v !== 'object' || v === null) continue;
    if (k === 'tags' && Array.isArray(v) && v.every((t) => typeof t === 'string')) continue;
    if (k !== 'output_fields' || Array.isArray(v)) return parseJsonPreservingBigInts(text);
    const fields = v as Record<string, unknown>;
    for (const f in fields) {
      const x = fields[f];
      if (typeof x === 'object' && x !== null) return parseJsonPreservingBigInts(text);
      if (isBigInteger(x)) {
        if (Number.isSafeInteger(x)) {
          fields[f] = String(x);
          continue;
        }
        const digits = digitsOf(text, f, x);
        if (digits === undefined) return parseJsonPreservingBigInts(text);
        fields[f] = digits;
      }
    }
  }
  return value;
}

/**
 * A TextEvent straight from one JSON text, or undefined when the text takes the usual way
 * (`TextEvent.of(fromFalcoJson(parseEventText(text)))`): what is kept is read as that way
 * reads it, and an event is taken here only when that way would take it too (the same checks,
 * in the same helpers). What is not kept is checked but not normalised, and big integers are
 * read back exactly only for the kept fields: the rest is parsed again, exactly, when asked
 * for. Anything unusual (not an object, a big integer at the top level, nested values in
 * output_fields, a kept big integer that cannot be read back without doubt, any refusal)
 * returns undefined, so refusals keep their reasons.
 */
export function textEventOf(text: string, bytes: Buffer): TextEvent | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const o = value as Record<string, unknown>;
  for (const k in o) {
    const v = o[k];
    if (isBigInteger(v)) return undefined;
    if (typeof v !== 'object' || v === null) continue;
    if (k === 'tags' && Array.isArray(v) && v.every((t) => typeof t === 'string')) continue;
    if (k !== 'output_fields' || Array.isArray(v)) return undefined;
  }
  try {
    const head = headOf(o);
    optString(o['output'], 'output', EVENT_LIMITS.output, true);
    const raw = o['output_fields'];
    if (raw !== undefined && raw !== null && typeof raw !== 'object') return undefined;
    const fields = raw === undefined || raw === null ? {} : (raw as Record<string, unknown>);
    let count = 0;
    for (const k in fields) {
      if (!Object.hasOwn(fields, k)) continue;
      count++;
      const v = fields[k];
      if (k.length > EVENT_LIMITS.fieldKey || (typeof v === 'object' && v !== null)) return undefined;
    }
    if (count > EVENT_LIMITS.fields) return undefined;
    const hot = (k: string): FieldValue | undefined => {
      if (!Object.hasOwn(fields, k)) return undefined;
      const v = fields[k];
      if (isBigInteger(v) && !Number.isSafeInteger(v)) {
        const digits = digitsOf(text, k, v);
        if (digits === undefined) throw new InvalidEventError('not read here');
        return digits;
      }
      return normaliseValue(v);
    };
    return new TextEvent(head, [hot(HOT_FIELDS[0]), hot(HOT_FIELDS[1]), hot(HOT_FIELDS[2]), hot(HOT_FIELDS[3])], bytes);
  } catch {
    return undefined;
  }
}

/**
 * JSON.parse that keeps integers too large for a double (Falco's `evt.time` in ns) exact, by
 * quoting digit runs of 16+ characters that appear outside strings before parsing.
 */
export function parseJsonPreservingBigInts(text: string): unknown {
  if (!/\d{16}/.test(text)) return JSON.parse(text);
  let out = '';
  let last = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) inString = false;
      continue;
    }
    if (c === 34) {
      inString = true;
      continue;
    }
    if ((c >= 48 && c <= 57) || c === 45 /* - */) {
      let j = i + 1;
      while (j < text.length) {
        const d = text.charCodeAt(j);
        if (d >= 48 && d <= 57) j++;
        else break;
      }
      const next = text.charCodeAt(j);
      const isPlainInt = next !== 46 /* . */ && next !== 101 && next !== 69; /* e E */
      const digits = j - i - (c === 45 ? 1 : 0);
      // A leading zero is invalid JSON; quoting it would make it valid, so leave it to fail.
      const leadingZero = text.charCodeAt(c === 45 ? i + 1 : i) === 48;
      if (isPlainInt && digits >= 16 && !leadingZero) {
        out += `${text.slice(last, i)}"${text.slice(i, j)}"`;
        last = j;
      } else if (!isPlainInt) {
        // Skip the fraction and exponent so their digits are not taken for a new number.
        while (j < text.length && /[0-9.eE+-]/.test(text.charAt(j))) j++;
      }
      i = j - 1;
    }
  }
  return JSON.parse(out + text.slice(last));
}

/** Tags that make an event a build or egress signal (rules contract, ARCHITECTURE.md). */
export const TAG_BUILD = 't1612_build';
export const TAG_EGRESS = 't1612_egress';
/**
 * Build activity the user declared expected (rules README, "Tuning"): the daemon keeps the
 * build's session, so its steps join it, and raises nothing for the whole build.
 */
export const TAG_EXPECTED = 't1612_expected';

/** Coarse kind of an event by its tags, for counting. */
export function kindOfTags(tags: readonly string[]): 'build' | 'egress' | 'other' {
  if (tags.includes(TAG_EGRESS)) return 'egress';
  if (tags.includes(TAG_BUILD)) return 'build';
  return 'other';
}
