/**
 * Falco's gRPC outputs API, loaded at run time from proto/falco/*.proto with proto-loader.
 * Owns the method paths, the (de)serialisers and the decoding options; the gRPC source and
 * the Falco emulator both build on this so they speak exactly the same wire format.
 *
 * Client-side decoding reads the response field by field, varints as protobufjs' Reader reads
 * them (the library proto-loader itself uses, one level down; it still skips unknown fields
 * and reads long int64s), straight into a GrpcEvent: no intermediate message object, no
 * `toObject`, no second normalising pass, the text output only when asked for. It reads exactly what
 * proto-loader's decode followed by `fromGrpcResponse` would: unknown fields of every wire
 * type skipped, Falco ≤0.30 responses (no fields 8 and 9) with proto3 defaults, repeated
 * fields accumulated, the last `time`, scalar or map entry for a key winning. A known field
 * number arriving with another wire type is skipped like an unknown field (as protobuf's C++
 * parser does) rather than misread.
 *
 * Decoding never throws: bytes that are not a `falco.outputs.response` become an
 * `UndecodableResponse`, a response that is not a Falco event (no rule, no time, unknown
 * priority) an `InvalidResponse`; the source counts both as invalid events instead of letting
 * grpc-js fail the whole stream with INTERNAL.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs/minimal.js';
import {
  checkGrpcFields,
  EVENT_LIMITS,
  grpcFieldText,
  grpcHostname,
  grpcOutputText,
  grpcSource,
  grpcTimeNs,
  normalisePriority,
  normaliseTags,
  requireRule,
  type FalcoEvent,
  type FieldValue,
  type Priority,
} from '../model/event.js';

/** Full method paths, fixed by Falco's proto (package `falco.outputs`, service `service`). */
export const SUB_PATH = '/falco.outputs.service/sub';
export const GET_PATH = '/falco.outputs.service/get';
export const SERVICE_NAME = 'falco.outputs.service';

/**
 * proto-loader options. `longs: String` keeps Timestamp seconds exact, `enums: String` gives
 * names (`CRITICAL`, or the number itself for a value the proto does not know), `defaults`
 * fills absent scalars so a Falco ≤0.30 response (no fields 8/9) reads as `tags: []`,
 * `source: ''`; an absent `time` stays `null`.
 */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/**
 * The proto directory. src/falco/proto.ts (tsx) and dist/falco/proto.js (tsc with rootDir
 * src) are both two levels below the package root, so one relative URL serves both.
 */
export const PROTO_DIR = fileURLToPath(new URL('../../proto/falco/', import.meta.url));

/** Bytes Falco sent that do not decode as a `response`. */
export class UndecodableResponse {
  constructor(
    readonly error: unknown,
    readonly bytes: Buffer,
  ) {}
}

/** A well-formed `response` that is not a Falco event (the error says why). */
export class InvalidResponse {
  constructor(
    readonly error: unknown,
    readonly bytes: Buffer,
  ) {}
}

/** What the client deserialiser yields for each message. */
export type DecodedMessage = FalcoEvent | UndecodableResponse | InvalidResponse;

export interface FalcoProto {
  /** Service definition for `grpc.Server.addService` (standard proto-loader codecs). */
  service: grpc.ServiceDefinition;
  /** Client constructor with `sub()` / `get()` methods (standard codecs). */
  Client: grpc.ServiceClientConstructor;
  serializeRequest: (req: Record<string, never>) => Buffer;
  /** Encodes a plain object shaped like `response` (enum names or numbers accepted). */
  serializeResponse: (res: object) => Buffer;
  /** Never throws; see module comment. */
  decodeResponse: (bytes: Buffer) => DecodedMessage;
}

let cached: FalcoProto | undefined;

/** Load (once per process) and return the Falco outputs API. */
export function loadFalcoProto(): FalcoProto {
  if (cached) return cached;
  const file = `${PROTO_DIR}outputs.proto`;
  if (!existsSync(file)) throw new Error(`Falco proto not found at ${file}`);
  // schema.proto is imported by bare name, so its own directory is the include dir; the
  // google/protobuf well-known types come bundled with protobufjs.
  const pkg = protoLoader.loadSync(file, { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] });
  const service = pkg[SERVICE_NAME] as grpc.ServiceDefinition;
  const sub = service['sub'];
  if (!sub || sub.path !== SUB_PATH || !service['get'] || service['get'].path !== GET_PATH) {
    throw new Error(`Falco proto at ${file} does not define ${SUB_PATH} and ${GET_PATH}`);
  }
  const decodeResponse = (bytes: Buffer): DecodedMessage => {
    try {
      return readResponse(bytes);
    } catch (err) {
      return err instanceof WireError ? new UndecodableResponse(err.reason, bytes) : new InvalidResponse(err, bytes);
    }
  };
  const Client = grpc.makeClientConstructor(service, SERVICE_NAME);
  cached = {
    service,
    Client,
    serializeRequest: sub.requestSerialize as (req: Record<string, never>) => Buffer,
    serializeResponse: sub.responseSerialize as (res: object) => Buffer,
    decodeResponse,
  };
  return cached;
}

// --- field-level decoding of falco.outputs.response ----------------------------------------

/**
 * A FalcoEvent read from Falco's gRPC bytes. Its `output_fields` and text output are taken out
 * of the bytes when something asks for them: a busy host's egress event is looked up by two
 * fields (`field()`), so it never builds the other thirty strings nor the object holding them,
 * and only build signals keep the 1–2 KB text output (as evidence). The response was checked
 * whole when it was read (wire format, field count, key lengths), so reading it later cannot fail.
 * `wire` is the response as Falco sent it; the write-ahead log stores it as it is.
 */
export class GrpcEvent implements FalcoEvent {
  // Private, so that the own enumerable properties are exactly FalcoEvent's less `output` and `fields`.
  readonly #wire: Buffer;
  readonly #outputStart: number;
  readonly #outputEnd: number;
  readonly #fieldsStart: number;
  readonly #fieldsEnd: number;
  #output: string | undefined;
  #fields: Record<string, FieldValue> | undefined;
  #lookups = 0;

  constructor(
    readonly timeNs: bigint,
    readonly rule: string,
    readonly priority: Priority,
    readonly source: string,
    readonly hostname: string,
    readonly tags: string[],
    wire: Buffer,
    outputStart: number,
    outputEnd: number,
    fieldsStart: number,
    fieldsEnd: number,
  ) {
    this.#wire = wire;
    this.#outputStart = outputStart;
    this.#outputEnd = outputEnd;
    this.#fieldsStart = fieldsStart;
    this.#fieldsEnd = fieldsEnd;
  }

  get output(): string {
    if (this.#output === undefined) {
      this.#output = this.#outputEnd > this.#outputStart ? grpcOutputText(utf8(this.#wire, this.#outputStart, this.#outputEnd)) : '';
    }
    return this.#output;
  }

  /** `output_fields`, read from the bytes the first time (then kept). */
  get fields(): Record<string, FieldValue> {
    this.#fields ??= readFields(this.#wire, this.#fieldsStart, this.#fieldsEnd);
    return this.#fields;
  }

  /**
   * One field, as `fields[name]` would give it, found in the bytes without reading the others.
   * An event asked for more than a few reads them all once instead.
   */
  field(name: string): FieldValue | undefined {
    if (this.#fields !== undefined || ++this.#lookups > LOOKUPS_BEFORE_READING_ALL || !isAscii(name) || name === '__proto__') {
      return this.fields[name];
    }
    return findField(this.#wire, this.#fieldsStart, this.#fieldsEnd, name);
  }

  /** The response's bytes, as Falco sent them. */
  get wire(): Buffer {
    return this.#wire;
  }
}

/** Field look-ups in the bytes before an event reads all its fields into an object. */
const LOOKUPS_BEFORE_READING_ALL = 4;
/** Names compared byte for byte with the keys: ASCII, where a character is a byte. */
function isAscii(name: string): boolean {
  for (let i = 0; i < name.length; i++) if (name.charCodeAt(i) > 0x7f) return false;
  return true;
}

const LEN = 2; // length-delimited wire type
const VARINT = 0;

/**
 * Buffer's own UTF-8 slice, which protobufjs uses too: `toString('utf8', a, b)` costs a
 * wrapper call and an encoding lookup per string, and a response has dozens.
 */
type Sliceable = Buffer & { utf8Slice?: (start: number, end: number) => string };

function utf8(b: Sliceable, start: number, end: number): string {
  return b.utf8Slice ? b.utf8Slice(start, end) : b.toString('utf8', start, end);
}

// The reader's state: one response is read at a time, start to end, without yielding.
let buf: Sliceable = Buffer.alloc(0);
let pos = 0;

/** A varint as protobufjs' `uint32()` reads it (a longer one keeps its low 32 bits). */
function u32(): number {
  let b = buf[pos++] ?? 0x80;
  let v = b & 127;
  if (b < 128) return v;
  b = buf[pos++] ?? 0x80;
  v |= (b & 127) << 7;
  if (b < 128) return v;
  b = buf[pos++] ?? 0x80;
  v |= (b & 127) << 14;
  if (b < 128) return v;
  b = buf[pos++] ?? 0x80;
  v |= (b & 127) << 21;
  if (b < 128) return v;
  b = buf[pos++] ?? 0x80;
  v = (v | ((b & 15) << 28)) >>> 0;
  if (b < 128) return v;
  pos += 5;
  if (pos > buf.length) throw new RangeError('varint runs past the end of the message');
  return v;
}

/** int64 as a bigint; the common short case without protobufjs. */
function i64(): bigint {
  let v = 0;
  let scale = 1;
  for (let i = 0; i < 7; i++) {
    const b = buf[pos + i] ?? 0x80;
    v += (b & 127) * scale;
    if (b < 128) {
      pos += i + 1;
      return BigInt(v); // under 2^49: exact
    }
    scale *= 128;
  }
  const r = protobuf.Reader.create(buf);
  r.pos = pos;
  const x = r.int64() as number | { low: number; high: number };
  pos = r.pos;
  if (typeof x === 'number') return BigInt(x);
  return BigInt.asIntN(64, (BigInt(x.high >>> 0) << 32n) | BigInt(x.low >>> 0));
}

/** Skip a field of any wire type, as protobufjs does (groups included). */
function skip(wire: number): void {
  const r = protobuf.Reader.create(buf);
  r.pos = pos;
  r.skipType(wire);
  pos = r.pos;
}

/** A length-delimited field's end, checked against the enclosing message's end. */
function lengthEnd(end: number): number {
  const len = u32();
  const e = pos + len;
  if (e > end) throw new RangeError(`length ${len} runs past the end of the message`);
  return e;
}

/**
 * Names that come from Falco's configuration and rules (field keys, tags, rule, hostname,
 * source) repeat in every response: they are read through a small table of the strings
 * already made, checked byte for byte, so each is made once instead of per event. Field
 * values (workload text) are not: they are mostly one-off.
 */
const NAME_SLOTS = 1024;
const NAME_MAX_BYTES = 64;
const nameText: string[] = new Array<string>(NAME_SLOTS).fill('');

function name(start: number, end: number): string {
  const n = end - start;
  if (n > NAME_MAX_BYTES) return utf8(buf, start, end);
  // A few bytes pick the slot (names share their starts, so the end counts most); the check
  // below compares every byte. A stored string equals the bytes only if they are ASCII: a
  // byte over 127 never decodes to a character of the same code.
  let h = n;
  if (n >= 6) {
    h = Math.imul(h ^ (buf[end - 1] as number), 0x01000193);
    h = Math.imul(h ^ (buf[end - 2] as number), 0x01000193);
    h = Math.imul(h ^ (buf[end - 3] as number), 0x01000193);
    h = Math.imul(h ^ (buf[start + (n >> 1)] as number), 0x01000193);
    h = Math.imul(h ^ (buf[start + 5] as number), 0x01000193);
  } else {
    for (let i = start; i < end; i++) h = Math.imul(h ^ (buf[i] as number), 0x01000193);
  }
  const slot = (h ^ (h >>> 15)) & (NAME_SLOTS - 1);
  const known = nameText[slot] as string;
  if (known.length === n) {
    let i = 0;
    while (i < n && known.charCodeAt(i) === buf[start + i]) i++;
    if (i === n) return known;
  }
  const text = utf8(buf, start, end);
  nameText[slot] = text;
  return text;
}

/** An output_fields value: Falco's "missing" spellings ('', `<NA>`, `null`) are null. */
function fieldValue(start: number, end: number): FieldValue {
  const n = end - start;
  if (n === 0) return null;
  if (n === 4) {
    const b0 = buf[start];
    if (b0 === 0x3c /* < */ && buf[start + 1] === 0x4e && buf[start + 2] === 0x41 && buf[start + 3] === 0x3e) return null;
    if (b0 === 0x6e /* n */ && buf[start + 1] === 0x75 && buf[start + 2] === 0x6c && buf[start + 3] === 0x6c) return null;
  }
  return grpcFieldText(utf8(buf, start, end));
}

/** One `falco.outputs.response` to an event; throws on bytes that are not one, or on a response that is no event. */
function readResponse(bytes: Buffer): GrpcEvent {
  buf = bytes;
  pos = 0;
  const end = bytes.length;
  let seconds: bigint | undefined;
  let nanos = 0;
  let priority = 0;
  let sourceDeprecated: number | undefined;
  let rule = '';
  let outputStart = 0;
  let outputEnd = 0;
  let hostname = '';
  let source = '';
  let entries = 0;
  let longKey = false;
  // Where the map entries are (the first one's tag to the last one's end); read on demand.
  let fieldsStart = 0;
  let fieldsEnd = 0;
  const tags: string[] = [];
  try {
    while (pos < end) {
      const at = pos;
      const tag = u32();
      const wire = tag & 7;
      const id = tag >>> 3;
      if (wire === LEN && id === 6) {
        // map<string,string> entry: key = 1, value = 2. Checked here, read later.
        const e = lengthEnd(end);
        while (pos < e) {
          const t = u32();
          if (t === 10 || t === 18) {
            const fe = lengthEnd(e);
            if (t === 10 && fe - pos > EVENT_LIMITS.fieldKey) longKey = true;
            pos = fe;
          } else skip(t & 7);
        }
        if (pos !== e) throw new RangeError('map entry runs past its length');
        if (entries++ === 0) fieldsStart = at;
        fieldsEnd = e;
      } else if (wire === LEN && id === 8) {
        const e = lengthEnd(end);
        tags.push(name(pos, e));
        pos = e;
      } else if (wire === LEN && id === 1) {
        // google.protobuf.Timestamp: seconds = 1 (int64), nanos = 2 (int32). A repeated one
        // replaces the earlier one, as protobufjs' own decoder (and so proto-loader) does.
        const e = lengthEnd(end);
        seconds = 0n;
        nanos = 0;
        while (pos < e) {
          const t = u32();
          if (t === 8) seconds = i64();
          else if (t === 16) nanos = u32() | 0;
          else skip(t & 7);
        }
        if (pos !== e) throw new RangeError('time runs past its length');
      } else if (wire === LEN && id === 5) {
        outputEnd = lengthEnd(end);
        outputStart = pos;
        pos = outputEnd;
      } else if (wire === LEN && (id === 4 || id === 7 || id === 9)) {
        const e = lengthEnd(end);
        const text = name(pos, e);
        pos = e;
        if (id === 4) rule = text;
        else if (id === 7) hostname = text;
        else source = text;
      } else if (wire === VARINT && id === 2) priority = u32() | 0;
      else if (wire === VARINT && id === 3) sourceDeprecated = u32() | 0;
      else skip(wire);
    }
    if (pos !== end) throw new RangeError('field runs past the end of the message');
  } catch (err) {
    throw new WireError(err);
  } finally {
    buf = EMPTY;
  }
  // The checks in fromGrpcResponse's order, so a response with several faults is refused for the same one.
  const rule_ = requireRule(rule);
  const timeNs = grpcTimeNs(seconds, nanos);
  const source_ = grpcSource(source, sourceDeprecated);
  // Keys and entries were counted as read; only a response past a cap needs the exact count.
  if (entries > EVENT_LIMITS.fields || longKey) checkGrpcFields(readFields(bytes, fieldsStart, fieldsEnd));
  return new GrpcEvent(
    timeNs,
    rule_,
    normalisePriority(priority),
    source_,
    grpcHostname(hostname),
    normaliseTags(tags),
    bytes,
    outputStart,
    outputEnd,
    fieldsStart,
    fieldsEnd,
  );
}

/** Skip to the next map entry before `end`: its end, with `pos` at its first byte; -1 when there is none. */
function nextEntry(end: number): number {
  while (pos < end) {
    const tag = u32();
    if (tag === 50 /* field 6, length-delimited */) return lengthEnd(end);
    skip(tag & 7);
  }
  return -1;
}

/**
 * Calls `visit` with the byte ranges of the key and the value of each map entry between
 * `start` and `end`, in order (an absent key or value is the empty range 0–0). Only for a
 * response readResponse accepted, whose shape was checked: this walk does not check it again.
 */
function eachEntry(bytes: Buffer, start: number, end: number, visit: (ks: number, ke: number, vs: number, ve: number) => void): void {
  buf = bytes;
  pos = start;
  try {
    for (let e = nextEntry(end); e >= 0; e = nextEntry(end)) {
      let ks = 0;
      let ke = 0;
      let vs = 0;
      let ve = 0;
      while (pos < e) {
        const t = u32();
        if (t === 10 || t === 18) {
          const fe = lengthEnd(e);
          if (t === 10) {
            ks = pos;
            ke = fe;
          } else {
            vs = pos;
            ve = fe;
          }
          pos = fe;
        } else skip(t & 7);
      }
      visit(ks, ke, vs, ve);
    }
  } finally {
    buf = EMPTY;
  }
}

/** The map entries between `start` and `end` as `output_fields`: the last entry for a key wins, absent keys and values are ''. */
function readFields(bytes: Buffer, start: number, end: number): Record<string, FieldValue> {
  const fields: Record<string, FieldValue> = {};
  eachEntry(bytes, start, end, (ks, ke, vs, ve) => {
    const k = name(ks, ke);
    // Assigning `__proto__` would go through the prototype setter; no Falco field has that name.
    if (k !== '__proto__') fields[k] = fieldValue(vs, ve);
  });
  return fields;
}

/**
 * The value of the last entry keyed `key` (ASCII) between `start` and `end`, as readFields
 * would give it. An entry laid out as protobuf writes one (key, then value, nothing else) is
 * told apart by its key's length and bytes and skipped whole; any other layout is read field
 * by field. Called on every egress event (twice), so it makes no closure and no string but the value.
 */
function findField(bytes: Buffer, start: number, end: number, key: string): FieldValue | undefined {
  const n = key.length;
  let found = false;
  let vs = 0;
  let ve = 0;
  buf = bytes;
  pos = start;
  try {
    for (let e = nextEntry(end); e >= 0; e = nextEntry(end)) {
      // Canonical layout: 0x0a <key length> key 0x12 <value length> value, ending at e.
      const kl = buf[pos + 1] as number;
      if (buf[pos] === 10 && kl < 128 && pos + 2 + kl < e && buf[pos + 2 + kl] === 18) {
        const ks = pos + 2;
        pos = ks + kl + 1;
        const vEnd = lengthEnd(e);
        if (vEnd === e) {
          if (kl === n && keyEquals(ks, key)) {
            found = true;
            vs = pos;
            ve = e;
          }
          pos = e;
          continue;
        }
        pos = ks - 2; // not canonical after all: read it field by field
      }
      let match = n === 0; // an absent key is ''
      let s = 0;
      let f = 0;
      while (pos < e) {
        const t = u32();
        if (t === 10) {
          const ke = lengthEnd(e);
          match = ke - pos === n && keyEquals(pos, key);
          pos = ke;
        } else if (t === 18) {
          f = lengthEnd(e);
          s = pos;
          pos = f;
        } else skip(t & 7);
      }
      if (match) {
        found = true;
        vs = s;
        ve = f;
      }
    }
    return found ? fieldValue(vs, ve) : undefined;
  } finally {
    buf = EMPTY;
  }
}

/** Are the bytes at `at` the ASCII `key` (whose length the caller checked)? */
function keyEquals(at: number, key: string): boolean {
  for (let i = 0; i < key.length; i++) if (buf[at + i] !== key.charCodeAt(i)) return false;
  return true;
}

const EMPTY: Sliceable = Buffer.alloc(0);

/** The bytes are not a `falco.outputs.response`. */
class WireError extends Error {
  constructor(readonly reason: unknown) {
    super('not a falco.outputs.response');
  }
}
