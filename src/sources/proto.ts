/**
 * Falco's gRPC outputs API, loaded at run time from proto/falco/*.proto with proto-loader.
 * Owns the method paths, the (de)serialisers and the decoding options; the gRPC source and
 * the Falco emulator both build on this so they speak exactly the same wire format.
 *
 * Client-side decoding reads the response field by field with protobufjs' Reader (the library
 * proto-loader itself uses, one level down) straight into a FalcoEvent: no intermediate
 * message object, no `toObject`, no second normalising pass. It reads exactly what
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
import { fromGrpcParts, grpcFieldValue, type FalcoEvent, type FieldValue } from '../model/event.js';

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
    let parts: ReturnType<typeof readResponse>;
    try {
      parts = readResponse(bytes);
    } catch (err) {
      return new UndecodableResponse(err, bytes);
    }
    try {
      return fromGrpcParts(parts);
    } catch (err) {
      return new InvalidResponse(err, bytes);
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

const LEN = 2; // length-delimited wire type
const VARINT = 0;

/** A length-delimited field's end, checked against the enclosing message's end. */
function lengthEnd(r: protobuf.Reader, end: number): number {
  const len = r.uint32();
  const e = r.pos + len;
  if (e > end) throw new RangeError(`length ${len} runs past the end of the message`);
  return e;
}

/**
 * Buffer's own UTF-8 slice, which protobufjs uses too: `toString('utf8', a, b)` costs a
 * wrapper call and an encoding lookup per string, and a response has dozens of strings.
 */
type Utf8Sliceable = Buffer & { utf8Slice?: (start: number, end: number) => string };

function readString(r: protobuf.Reader, buf: Utf8Sliceable, end: number): string {
  const e = lengthEnd(r, end);
  const s = buf.utf8Slice ? buf.utf8Slice(r.pos, e) : buf.toString('utf8', r.pos, e);
  r.pos = e;
  return s;
}

/** int64 as a bigint, whether protobufjs found long.js (a Long) or not (a number). */
function readInt64(r: protobuf.Reader): bigint {
  const v = r.int64() as number | { low: number; high: number };
  if (typeof v === 'number') return BigInt(v);
  return BigInt.asIntN(64, (BigInt(v.high >>> 0) << 32n) | BigInt(v.low >>> 0));
}

/** The wire fields of one `falco.outputs.response`; throws on bytes that are not one. */
function readResponse(bytes: Buffer): Parameters<typeof fromGrpcParts>[0] {
  const r = protobuf.Reader.create(bytes);
  const end = r.len;
  let seconds: bigint | undefined;
  let nanos = 0;
  let priority = 0;
  let sourceDeprecated: number | undefined;
  let rule = '';
  let output = '';
  let hostname = '';
  let source = '';
  const tags: string[] = [];
  const fields: Record<string, FieldValue> = {};
  while (r.pos < end) {
    const tag = r.uint32();
    const wire = tag & 7;
    const id = tag >>> 3;
    if (wire === LEN && id === 6) {
      // map<string,string> entry: key = 1, value = 2; absent ones are ''.
      const e = lengthEnd(r, end);
      let k = '';
      let v = '';
      while (r.pos < e) {
        const t = r.uint32();
        if (t === 10) k = readString(r, bytes, e);
        else if (t === 18) v = readString(r, bytes, e);
        else r.skipType(t & 7);
      }
      if (r.pos !== e) throw new RangeError('map entry runs past its length');
      // Assigning `__proto__` would go through the prototype setter; no Falco field has that name.
      if (k !== '__proto__') fields[k] = grpcFieldValue(v);
    } else if (wire === LEN && id === 8) tags.push(readString(r, bytes, end));
    else if (wire === LEN && id === 1) {
      // google.protobuf.Timestamp: seconds = 1 (int64), nanos = 2 (int32). A repeated one
      // replaces the earlier one, as protobufjs' own decoder (and so proto-loader) does.
      const e = lengthEnd(r, end);
      seconds = 0n;
      nanos = 0;
      while (r.pos < e) {
        const t = r.uint32();
        if (t === 8) seconds = readInt64(r);
        else if (t === 16) nanos = r.int32();
        else r.skipType(t & 7);
      }
      if (r.pos !== e) throw new RangeError('time runs past its length');
    } else if (wire === LEN && id === 4) rule = readString(r, bytes, end);
    else if (wire === LEN && id === 5) output = readString(r, bytes, end);
    else if (wire === LEN && id === 7) hostname = readString(r, bytes, end);
    else if (wire === LEN && id === 9) source = readString(r, bytes, end);
    else if (wire === VARINT && id === 2) priority = r.int32();
    else if (wire === VARINT && id === 3) sourceDeprecated = r.int32();
    else r.skipType(wire);
  }
  if (r.pos !== end) throw new RangeError('field runs past the end of the message');
  return { seconds, nanos, priority, sourceDeprecated, rule, output, hostname, tags, source, fields };
}
