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

/** Read a field: `null` when absent or missing. */
export function field(ev: FalcoEvent, name: string): string | null {
  const v = ev.fields[name];
  return v === undefined ? null : v;
}

const MISSING = new Set(['<NA>', 'null', '']);

/** Normalise one raw output_fields value. */
function normaliseValue(name: string, v: unknown): FieldValue {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string') return MISSING.has(v) ? null : v;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return null;
    return String(v);
  }
  if (typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  if (typeof v === 'object') return JSON.stringify(v);
  throw new InvalidEventError(`output_fields.${name} has unsupported type ${typeof v}`);
}

function normaliseFields(raw: unknown): Record<string, FieldValue> {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new InvalidEventError('output_fields must be an object of field: value');
  }
  const out: Record<string, FieldValue> = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    // Assigning `__proto__` would go through the prototype setter (JSON `null` there would
    // strip the object's prototype); no Falco field has that name.
    if (k === '__proto__') continue;
    out[k] = normaliseValue(k, v);
  }
  return out;
}

function normalisePriority(raw: unknown): Priority {
  if (typeof raw === 'number' && Number.isInteger(raw)) {
    const p = PRIORITIES[raw];
    if (p) return p;
  }
  if (typeof raw === 'string' && raw !== '') {
    const lower = raw.toLowerCase();
    // Falco's enum also spells INFORMATIONAL as INFO in some clients.
    const p = PRIORITIES.find((x) => x.toLowerCase() === lower) ?? (lower === 'info' ? 'Informational' : undefined);
    if (p) return p;
    if (/^\d$/.test(raw)) {
      const byNum = PRIORITIES[Number(raw)];
      if (byNum) return byNum;
    }
  }
  throw new InvalidEventError(`priority ${JSON.stringify(raw)} is not one of ${PRIORITIES.join(', ')}`);
}

function requireRule(raw: unknown): string {
  if (typeof raw !== 'string' || raw.trim() === '') throw new InvalidEventError('rule is missing or not a string');
  return raw;
}

function normaliseTags(raw: unknown): string[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw) || !raw.every((t) => typeof t === 'string')) {
    throw new InvalidEventError('tags must be a list of strings');
  }
  return raw as string[];
}

function optString(raw: unknown, name: string): string {
  if (raw === undefined || raw === null) return '';
  if (typeof raw !== 'string') throw new InvalidEventError(`${name} must be a string`);
  return raw;
}

const ISO_RE = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})$/;

/** Parse Falco's ISO-8601 time (nanosecond fraction) to ns since epoch. */
export function parseIsoNs(text: string): bigint | undefined {
  const m = ISO_RE.exec(text);
  if (!m) return undefined;
  const zone = m[3] === 'Z' ? 'Z' : m[3];
  const baseMs = Date.parse(`${m[1]}${zone}`);
  if (Number.isNaN(baseMs)) return undefined;
  const frac = BigInt((m[2] ?? '').padEnd(9, '0'));
  return BigInt(baseMs) * 1_000_000n + frac;
}

/**
 * Normalise a parsed Falco JSON alert (json_output / http_output / file_output body).
 * Throws InvalidEventError with the reason when it is not a Falco event.
 */
export function fromFalcoJson(raw: unknown): FalcoEvent {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new InvalidEventError('event must be a JSON object');
  }
  const o = raw as Record<string, unknown>;
  const rule = requireRule(o['rule']);
  let timeNs: bigint | undefined;
  if (typeof o['time'] === 'string') timeNs = parseIsoNs(o['time']);
  if (timeNs === undefined) throw new InvalidEventError('time is missing or not ISO-8601');
  return {
    timeNs,
    rule,
    priority: normalisePriority(o['priority']),
    source: optString(o['source'], 'source') || 'syscall',
    hostname: optString(o['hostname'], 'hostname'),
    tags: normaliseTags(o['tags']),
    output: optString(o['output'], 'output'),
    fields: normaliseFields(o['output_fields']),
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
  if (!output.startsWith('{"')) return output;
  try {
    const o = JSON.parse(output) as { output?: unknown };
    return typeof o.output === 'string' ? o.output : output;
  } catch {
    return output;
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
  const nanos = BigInt(t.nanos ?? 0);
  if (seconds <= 0n && nanos === 0n) throw new InvalidEventError('time is missing');
  let source = r.source ?? '';
  if (source === '') {
    const dep = r.source_deprecated;
    source = dep === undefined ? 'syscall' : (GRPC_SOURCES[String(dep).toUpperCase()] ?? 'syscall');
  }
  return {
    timeNs: seconds * 1_000_000_000n + nanos,
    rule,
    priority: normalisePriority(r.priority ?? 0),
    source,
    hostname: r.hostname ?? '',
    tags: normaliseTags(r.tags ?? []),
    output: plainOutput(r.output ?? ''),
    fields: normaliseFields(r.output_fields ?? {}),
  };
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
