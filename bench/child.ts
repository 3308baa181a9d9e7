/**
 * The bench's separate processes, one role each (argv[2]); the parent (bench/run.ts) drives
 * them over the IPC channel, one request and one reply at a time.
 *
 * - falco: a Falco-like gRPC server with Falco's `sub` semantics (one process-wide queue; a
 *   request makes it write every queued event until the queue is empty, requests that arrive
 *   meanwhile are read afterwards, a request that finds the queue empty gets nothing). Events
 *   are encoded before a timed round starts, so serving costs only the writes.
 * - raw / decode: baseline grpc-js clients that count messages as bytes, or decoded by
 *   proto-loader into plain objects (what a typical client does).
 * - daemon: t1612d itself (gRPC or HTTP source, Redis stores, webhook delivery).
 * - bare: a Node HTTP server that only JSON.parses each NDJSON line of each body.
 *
 * Every role reports its CPU time and peak RSS (VmHWM) with its result.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { resolveConfig } from '../src/config/config.js';
import { Daemon } from '../src/daemon.js';
import { responseFromJson } from '../src/demo/emulator.js';
import { falcoJsonLine } from '../src/demo/render.js';
import { silentLogger } from '../src/ops/logger.js';
import { tuneHeap } from '../src/ops/heap.js';
import { Metrics } from '../src/ops/metrics.js';
import { MAX_RECEIVE_MESSAGE_BYTES } from '../src/sources/grpc-options.js';
import { loadFalcoProto, LOADER_OPTIONS, PROTO_DIR, SERVICE_NAME, SUB_PATH } from '../src/sources/proto.js';
import { ipOf, OUTSIDE_BUILD, templates, variant, wallNs, type Json } from './events.js';

export type Msg = Record<string, unknown> & { op: string };

/** What the events of a fill look like. */
export interface FillSpec {
  /** Events to queue. */
  n: number;
  /** Distinct destination IPs, cycled. */
  distinct: number;
  host: string;
  /** Queue a build trigger and step first, so the egress events fall inside a build. */
  build: boolean;
  ipBase: number;
}

export interface Usage {
  cpuMs: number;
  /** Time spent in garbage collection pauses (all kinds) since the phase started. */
  gcMs: number;
  hwmMb: number;
  rssMb: number;
}

// Garbage collection pause time, summed as the entries arrive; usage() reports the part since cpuStart.
let gcMs = 0;
let gcAtStart = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcMs += e.duration;
}).observe({ entryTypes: ['gc'] });

function usage(cpu0: NodeJS.CpuUsage): Usage {
  const cpu = process.cpuUsage(cpu0);
  const gc = gcMs - gcAtStart;
  const status = readFileSync('/proc/self/status', 'utf8');
  const kb = (name: string): number => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
  return { cpuMs: (cpu.user + cpu.system) / 1000, gcMs: gc, hwmMb: kb('VmHWM') / 1024, rssMb: kb('VmRSS') / 1024 };
}

const raw = (b: Buffer): Buffer => b;

function varint(v: bigint): Buffer {
  const out: number[] = [];
  do {
    const b = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v > 0n ? b | 0x80 : b);
  } while (v > 0n);
  return Buffer.from(out);
}
const reply = (m: Msg): void => void process.send?.(m);

/**
 * The gRPC response Falco 0.43.1 sends for an alert with the shipped configuration
 * (deploy/falco, `json_output: true`): its `output` carries the whole JSON line.
 */
function asFalcoSends(j: Json): object {
  return { ...responseFromJson(j), output: falcoJsonLine(j) };
}

// --- falco ------------------------------------------------------------------------------------

class FalcoLike {
  private queue: Buffer[] = [];
  private head = 0;
  private readonly encoded = new Map<string, Buffer[]>();
  private server: grpc.Server | undefined;
  requests = 0;

  async start(address: string): Promise<void> {
    const server = new grpc.Server();
    const sub: grpc.MethodDefinition<Buffer, Buffer> = {
      path: SUB_PATH,
      requestStream: true,
      responseStream: true,
      requestSerialize: raw,
      requestDeserialize: raw,
      responseSerialize: raw,
      responseDeserialize: raw,
    };
    server.addService({ sub }, { sub: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => this.sub(call) });
    await new Promise<number>((resolve, reject) => server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    this.server = server;
  }

  close(): void {
    this.server?.forceShutdown();
  }

  get queued(): number {
    return this.queue.length - this.head;
  }

  enqueue(b: Buffer): void {
    this.queue.push(b);
  }

  async fill(spec: FillSpec): Promise<void> {
    const key = JSON.stringify({ ...spec, n: 0 });
    let bufs = this.encoded.get(key);
    if (!bufs) {
      const t = await templates();
      const now = wallNs();
      const proto = loadFalcoProto();
      const enc = (j: Json): Buffer => proto.serializeResponse(asFalcoSends(j));
      bufs = [];
      for (let i = 0; i < spec.distinct; i++) {
        bufs.push(enc(variant(t.egress, spec.host, { 'fd.sip': ipOf(i, spec.ipBase), ...(spec.build ? {} : OUTSIDE_BUILD) }, now)));
      }
      if (spec.build) bufs.unshift(enc(variant(t.trigger, spec.host, {}, now)), enc(variant(t.step, spec.host, {}, now)));
      this.encoded.set(key, bufs);
    }
    const pre = spec.build ? 2 : 0;
    for (let i = 0; i < pre; i++) this.queue.push(bufs[i] as Buffer);
    for (let i = 0; i < spec.n - pre; i++) this.queue.push(bufs[pre + (i % spec.distinct)] as Buffer);
  }

  /**
   * `rate` events/s for `seconds`, each stamped with the moment it is queued; every
   * `newEvery`-th a never-seen IP inside one build on `host` (an alert). Bodies are encoded
   * beforehand without their time; queuing one only prepends the encoded time (protobuf
   * fields may come in any order), so the generator keeps pace on a busy box.
   */
  async stream(o: { rate: number; seconds: number; host: string; newEvery: number; ipBase: number; warm: number }): Promise<number> {
    const t = await templates();
    const proto = loadFalcoProto();
    const body = (j: Json): Buffer => {
      const r: Record<string, unknown> = { ...asFalcoSends(j) };
      delete r['time'];
      return proto.serializeResponse(r);
    };
    const stamped = (b: Buffer): Buffer => {
      const ns = wallNs();
      const ts = Buffer.concat([Buffer.from([0x08]), varint(ns / 1_000_000_000n), Buffer.from([0x10]), varint(ns % 1_000_000_000n)]);
      return Buffer.concat([Buffer.from([0x0a]), varint(BigInt(ts.length)), ts, b]);
    };
    const total = Math.round(o.rate * o.seconds);
    const now = wallNs();
    // Alerts: a never-seen IP from the build. The rest: the same few IPs from a host without
    // builds (learned on first sight, never alerted), so the figure is about events reaching
    // decisions rather than about alert delivery throughput.
    const fresh: Buffer[] = [];
    for (let i = 0; i * o.newEvery < total; i++) fresh.push(body(variant(t.egress, o.host, { 'fd.sip': ipOf(1000 + i, o.ipBase) }, now)));
    const busy: Buffer[] = [];
    for (let i = 0; i < o.warm; i++) busy.push(body(variant(t.egress, `${o.host}-busy`, { 'fd.sip': ipOf(i, o.ipBase), ...OUTSIDE_BUILD }, now)));
    this.enqueue(stamped(body(variant(t.trigger, o.host, {}, now))));
    this.enqueue(stamped(body(variant(t.step, o.host, {}, now))));
    const t0 = performance.now();
    let sent = 0;
    while (sent < total) {
      const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * o.rate));
      for (; sent < due; sent++) {
        this.enqueue(stamped(sent % o.newEvery === 0 ? (fresh[sent / o.newEvery] as Buffer) : (busy[sent % o.warm] as Buffer)));
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    return fresh.length;
  }

  private sub(call: grpc.ServerDuplexStream<Buffer, Buffer>): void {
    let writing = false;
    let pending = 0;
    let gone = false;
    const end = (): void => {
      gone = true;
    };
    call.on('cancelled', end);
    call.on('error', end);
    call.on('end', () => {
      if (!gone) call.end();
      end();
    });
    const burst = async (): Promise<void> => {
      writing = true;
      try {
        while (!gone && this.head < this.queue.length) {
          const b = this.queue[this.head] as Buffer;
          this.queue[this.head++] = undefined as unknown as Buffer;
          if (!call.write(b)) {
            await new Promise<void>((r) => call.once('drain', () => r()));
          }
        }
        if (this.head === this.queue.length) {
          this.queue = [];
          this.head = 0;
        }
      } finally {
        writing = false;
      }
      // Requests read after the burst: the first that finds events starts the next burst;
      // those that find the queue empty are answered with nothing, like Falco.
      if (pending > 0 && !gone) {
        pending = 0;
        if (this.head < this.queue.length) void burst();
      }
    };
    call.on('data', () => {
      this.requests++;
      if (writing) pending++;
      else void burst();
    });
  }
}

// --- baseline clients -------------------------------------------------------------------------

async function baselineClient(kind: 'raw' | 'decode', address: string, n: number): Promise<Msg> {
  let deserialize: (b: Buffer) => unknown = raw;
  if (kind === 'decode') {
    const pkg = protoLoader.loadSync(`${PROTO_DIR}outputs.proto`, { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] });
    const svc = pkg[SERVICE_NAME] as grpc.ServiceDefinition;
    deserialize = (svc['sub'] as grpc.MethodDefinition<unknown, unknown>).responseDeserialize;
  }
  const client = new grpc.Client(address, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': MAX_RECEIVE_MESSAGE_BYTES });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const call = client.makeBidiStreamRequest(SUB_PATH, (_: object) => Buffer.alloc(0), deserialize);
  let count = 0;
  let sink = 0;
  await new Promise<void>((resolve) => {
    // Poll like Falco's Python client: a request every 100 ms.
    const timer = setInterval(() => call.write({}), 100);
    call.write({});
    call.on('data', (m: unknown) => {
      // Touch the result so the decode cannot be skipped.
      if (kind === 'decode') sink += (m as { rule?: string }).rule?.length ?? 0;
      if (++count === n) {
        clearInterval(timer);
        resolve();
      }
    });
    call.on('error', () => undefined);
  });
  const secs = (performance.now() - t0) / 1000;
  const u = usage(cpu0);
  call.cancel();
  client.close();
  return { op: 'result', secs, count, sink, ...u };
}

// --- daemon -----------------------------------------------------------------------------------

interface DaemonSpec {
  grpcAddress?: string;
  http?: boolean;
  redisUrl: string;
  prefix: string;
  webhookUrl: string;
}

let daemon: Daemon | undefined;
let dataDir: string | undefined;

/**
 * The shipped compose files and manifests set a data_dir, so t1612d runs with its write-ahead
 * log as users run it; BENCH_WAL=0 leaves it off.
 */
function freshDataDir(): string | undefined {
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  dataDir = process.env['BENCH_WAL'] === '0' ? undefined : mkdtempSync(join(tmpdir(), 't1612d-bench-wal-'));
  return dataDir;
}
process.on('exit', () => {
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

async function startDaemon(s: DaemonSpec): Promise<Daemon> {
  const cfg = resolveConfig({
    env: {},
    overrides: {
      falcoGrpcAddress: s.grpcAddress ?? '',
      httpAddress: s.http ? '127.0.0.1:0' : '',
      logLevel: 'silent',
      redisUrl: s.redisUrl,
      redisPrefix: s.prefix,
      webhookUrl: s.webhookUrl,
      dataDir: freshDataDir(),
    },
  });
  daemon = new Daemon(cfg, { logger: silentLogger(), metrics: new Metrics() });
  await daemon.start();
  return daemon;
}

async function waitEvents(d: Daemon, n: number): Promise<void> {
  while ((await d.metrics.value('t1612d_falco_events_total')) < n) await new Promise((r) => setTimeout(r, 2));
  await d.settle();
}

// --- bare HTTP --------------------------------------------------------------------------------

let bareCount = 0;
let bareWaiter: { n: number; resolve: () => void } | undefined;

function bareServer(): Promise<number> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      for (const line of Buffer.concat(chunks).toString('utf8').split('\n')) {
        if (line.trim() === '') continue;
        JSON.parse(line);
        bareCount++;
      }
      res.writeHead(200).end();
      if (bareWaiter && bareCount >= bareWaiter.n) bareWaiter.resolve();
    });
  });
  server.keepAliveTimeout = 60_000;
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

// --- dispatch ---------------------------------------------------------------------------------

const role = process.argv[2];
// The daemon's process runs with the heap sizing `t1612d run` applies.
if (role === 'daemon') tuneHeap();
const falco = new FalcoLike();
let cpuStart = process.cpuUsage();

async function handle(m: Msg): Promise<Msg> {
  switch (`${role}:${m.op}`) {
    case 'falco:start':
      await falco.start(m['address'] as string);
      return { op: 'ready' };
    case 'falco:fill':
      await falco.fill(m['spec'] as FillSpec);
      return { op: 'filled', queued: falco.queued };
    case 'falco:stream':
      return { op: 'streamed', fresh: await falco.stream(m['spec'] as Parameters<FalcoLike['stream']>[0]) };
    case 'falco:stats':
      return { op: 'stats', queued: falco.queued, requests: falco.requests };
    case 'raw:run':
    case 'decode:run':
      return baselineClient(role as 'raw' | 'decode', m['address'] as string, m['n'] as number);
    case 'daemon:grpc': {
      const spec = m['spec'] as DaemonSpec;
      const n = m['n'] as number;
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      // Where the memory goes: the largest V8 heap and off-heap (Buffers) seen, sampled.
      let heapMb = 0;
      let offHeapMb = 0;
      const sampler = setInterval(() => {
        const u = process.memoryUsage();
        heapMb = Math.max(heapMb, u.heapTotal / 2 ** 20);
        offHeapMb = Math.max(offHeapMb, u.external / 2 ** 20);
      }, 50);
      const d = await startDaemon(spec);
      await waitEvents(d, n);
      clearInterval(sampler);
      const secs = (performance.now() - t0) / 1000;
      return { op: 'result', secs, heapMb, offHeapMb, ...usage(cpu0) };
    }
    case 'daemon:http': {
      const d = await startDaemon({ ...(m['spec'] as DaemonSpec), http: true });
      cpuStart = process.cpuUsage();
      gcAtStart = gcMs;
      return { op: 'listening', port: d.port };
    }
    case 'daemon:wait': {
      if (!daemon) throw new Error('no daemon');
      await waitEvents(daemon, m['n'] as number);
      return { op: 'result', ...usage(cpuStart) };
    }
    case 'daemon:stream': {
      // Latency run: start and report once the daemon is connected; the parent waits for alerts.
      const d = await startDaemon(m['spec'] as DaemonSpec);
      cpuStart = process.cpuUsage();
      gcAtStart = gcMs;
      if (process.env['BENCH_DEBUG']) {
        setInterval(() => {
          void (async () => {
            const v = async (n: string): Promise<number> => d.metrics.value(n);
            process.stderr.write(
              `daemon: events ${await v('t1612d_falco_events_total')} intake ${await v('t1612d_intake_depth')} alerts ${await v('t1612d_alerts_total')} outbox ${await v('t1612d_outbox_pending')}\n`,
            );
          })();
        }, 1000).unref();
      }
      return { op: 'started' };
    }
    case 'daemon:usage':
      if (daemon) await daemon.settle();
      return { op: 'usage', ...usage(cpuStart) };
    case 'bare:listen':
      cpuStart = process.cpuUsage();
      gcAtStart = gcMs;
      return { op: 'listening', port: await bareServer() };
    case 'bare:wait': {
      const n = m['n'] as number;
      if (bareCount < n) await new Promise<void>((resolve) => (bareWaiter = { n, resolve }));
      return { op: 'result', ...usage(cpuStart) };
    }
    default:
      throw new Error(`role ${role} has no op ${m.op}`);
  }
}

process.on('message', (m: Msg) => {
  handle(m).then(reply, (err: unknown) => reply({ op: 'error', error: String((err as Error)?.stack ?? err) }));
});
process.on('disconnect', () => {
  falco.close();
  void daemon?.close().finally(() => process.exit(0));
  if (!daemon) process.exit(0);
});
reply({ op: 'up' });
