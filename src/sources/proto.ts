/**
 * Falco's gRPC outputs API, loaded at run time from proto/falco/*.proto with proto-loader.
 * Owns the method paths, the (de)serialisers and the decoding options; the gRPC source and
 * the Falco emulator both build on this so they speak exactly the same wire format.
 *
 * Decoding never throws: bytes that are not a `falco.outputs.response` become an
 * `UndecodableResponse`, which the source counts as an invalid event instead of letting
 * grpc-js fail the whole stream with INTERNAL.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { GrpcResponse } from '../model/event.js';

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

/** What the client deserialiser yields for each message. */
export type DecodedMessage = GrpcResponse | UndecodableResponse;

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
  const rawDecode = sub.responseDeserialize as (b: Buffer) => GrpcResponse;
  const decodeResponse = (bytes: Buffer): DecodedMessage => {
    try {
      return rawDecode(bytes);
    } catch (err) {
      return new UndecodableResponse(err, bytes);
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
