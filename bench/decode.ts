import type * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fromGrpcResponse, type GrpcResponse } from '../src/model/event.js';
import { loadFalcoProto, LOADER_OPTIONS, PROTO_DIR, SERVICE_NAME } from '../src/sources/proto.js';
import { responseFromJson } from '../src/demo/emulator.js';
import { templates, variant, ipOf, wallNs } from './events.js';

/**
 * Decoding Falco's gRPC response into a FalcoEvent, in process: proto-loader + fromGrpcResponse
 * (a full decode to a plain object, then normalising) against the field-level decoder the
 * gRPC source uses. Medians of 7 interleaved runs of 100k decodes.
 */
export async function decodeBench(): Promise<void> {
  const t = await templates();
  const p = loadFalcoProto();
  const pkg = protoLoader.loadSync(`${PROTO_DIR}outputs.proto`, { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] });
  const ref = ((pkg[SERVICE_NAME] as grpc.ServiceDefinition)['sub'] as grpc.MethodDefinition<unknown, GrpcResponse>).responseDeserialize;
  const bufs: Buffer[] = [];
  for (let i = 0; i < 2000; i++) bufs.push(p.serializeResponse(responseFromJson(variant(t.egress, 'h', { 'fd.sip': ipOf(i) }, wallNs()))));
  let x = 0;
  const time = (f: (b: Buffer) => { rule: string }): number => {
    const t0 = performance.now();
    for (let i = 0; i < 100_000; i++) x += f(bufs[i % 2000] as Buffer).rule.length;
    return ((performance.now() - t0) * 1000) / 100_000;
  };
  const a: number[] = [];
  const b: number[] = [];
  for (let r = 0; r < 7; r++) {
    a.push(time((buf) => fromGrpcResponse(ref(buf))));
    b.push(time((buf) => p.decodeResponse(buf) as { rule: string }));
  }
  const med = (xs: number[]): number => [...xs].sort((m, n) => m - n)[xs.length >> 1] ?? NaN;
  console.log(`  ${'decode to FalcoEvent (in process)'.padEnd(44)} proto-loader + fromGrpcResponse ${med(a).toFixed(2)} µs, field-level ${med(b).toFixed(2)} µs, ratio ${(med(a) / med(b)).toFixed(2)} (${bufs[0]?.length} bytes, ${x > 0 ? 'checked' : ''})`);
}
