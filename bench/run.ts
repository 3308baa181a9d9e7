/**
 * `npm run bench`: t1612d side by side with the simplest programs that do part of its job, on
 * the same machine in the same run, so the figures are ratios rather than absolutes on a noisy
 * box. Prints the ratios first, then the figures behind them. Asserts nothing.
 *
 * Every program under test runs in its own process (bench/child.ts), fresh for each round:
 * - gRPC: a Falco-like server (own process, Falco's `sub` semantics, events encoded before the
 *   round) serves the same events to: a grpc-js client counting raw messages; a grpc-js client
 *   decoding with proto-loader; t1612d (Redis stores, webhook delivery to this process).
 *   Rounds are interleaved (the order rotates), medians and spread (min–max) are reported.
 * - HTTP: the same NDJSON bodies POSTed to t1612d and to a bare Node server that only
 *   JSON.parses each line.
 * - Latency: 5,000 events/s into Falco's queue, each stamped when queued; one in 50 goes to a
 *   never-seen IP inside a build, and its alert's arrival at the webhook is timed from that
 *   stamp (so the client's polling gaps count).
 * - Memory: peak RSS (VmHWM) of t1612d after 1M egress events over 100k distinct IPs, and
 *   Redis commands per event (INFO commandstats of a private redis-server).
 * Then the in-process micro benchmarks of bench/micro.ts (BENCH_MICRO=0 skips them).
 *
 * BENCH_SCALE (default 1) multiplies the event counts; BENCH_ROUNDS (default 3) the rounds;
 * BENCH_ONLY (e.g. `grpc,latency`) picks parts: grpc, http, latency, memory. BENCH_LAT_RATE and
 * BENCH_LAT_EVERY change the latency run's rate (5000/s) and alert share (1 in 50);
 * BENCH_DEBUG=1 prints the daemon's counters each second and every latency in arrival order;
 * BENCH_PROF=dir writes CPU profiles of the t1612d processes; BENCH_TSX=1 runs the measured
 * programs under tsx instead of compiled.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { falcoJsonLine } from '../src/demo/render.js';
import { parseIsoNs } from '../src/model/event.js';
import { TestRedis } from '../test/support/redis.js';
import type { FillSpec, Msg } from './child.js';
import { ipOf, OUTSIDE_BUILD, templates, variant, wallNs } from './events.js';
import { NODE_FLAGS } from '../src/ops/heap.js';
import { decodeBench } from './decode.js';
import { runMicro } from './micro.js';

const SCALE = Number(process.env['BENCH_SCALE'] ?? '1');
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? '3');
const ONLY = new Set((process.env['BENCH_ONLY'] ?? 'grpc,http,latency,memory').split(','));
const ROOT = fileURLToPath(new URL('..', import.meta.url));
/**
 * The measured processes run compiled JavaScript, as the image does (no TypeScript loader in
 * their CPU or memory figures): bench/child.ts and what it imports are compiled by
 * tsconfig.bench.json into node_modules/.cache before the first round. BENCH_TSX=1 runs them
 * under tsx instead.
 */
const UNDER_TSX = process.env['BENCH_TSX'] === '1';
const BUILD = join(ROOT, 'node_modules', '.cache', 't1612d-bench');
const CHILD = UNDER_TSX ? join(ROOT, 'bench', 'child.ts') : join(BUILD, 'bench', 'child.js');

function compileChildren(): void {
  if (UNDER_TSX) return;
  progress('compiling the measured programs (tsconfig.bench.json)');
  execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.bench.json')], { stdio: 'inherit' });
  // What the compiled code finds next to itself through import.meta.url.
  for (const name of ['package.json', 'proto']) {
    const link = join(BUILD, name);
    rmSync(link, { force: true, recursive: true });
    symlinkSync(join(ROOT, name), link);
  }
}

// --- child processes --------------------------------------------------------------------------

class Child {
  private readonly proc: ChildProcess;
  private waiting: ((m: Msg) => void) | undefined;
  private readonly inbox: Msg[] = [];

  constructor(role: string) {
    // BENCH_PROF=dir writes a CPU profile of each t1612d process there (node --cpu-prof).
    const prof = process.env['BENCH_PROF'] && role === 'daemon' ? ['--cpu-prof', `--cpu-prof-dir=${process.env['BENCH_PROF']}`] : [];
    this.proc = fork(CHILD, [role], { execArgv: [...(UNDER_TSX ? ['--import', 'tsx'] : []), ...(role === 'daemon' ? [...NODE_FLAGS, ...(process.env['BENCH_DAEMON_ARGS'] ?? '').split(' ').filter(Boolean)] : []), ...prof], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.proc.on('message', (m: Msg) => {
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = undefined;
        w(m);
      } else this.inbox.push(m);
    });
  }

  private next(): Promise<Msg> {
    const m = this.inbox.shift();
    if (m) return Promise.resolve(m);
    return new Promise((resolve) => (this.waiting = resolve));
  }

  static async start(role: string): Promise<Child> {
    const c = new Child(role);
    await c.next(); // 'up'
    return c;
  }

  async ask(m: Msg): Promise<Msg> {
    this.proc.send(m);
    const r = await this.next();
    if (r.op === 'error') throw new Error(`child: ${String(r['error'])}`);
    return r;
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()));
    this.proc.disconnect();
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

// --- webhook receiver -------------------------------------------------------------------------

class Receiver {
  alerts = 0;
  /** Latencies (ms) from the event's own time to arrival, while `timing` is on. */
  latencies: number[] = [];
  timing = false;
  private server: Server | undefined;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const now = wallNs();
        this.alerts++;
        if (this.timing) {
          const a = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { connection?: { time?: string } };
          const ns = parseIsoNs(a.connection?.time ?? '');
          if (ns !== undefined) this.latencies.push(Number(now - ns) / 1e6);
        }
        res.writeHead(204).end();
      });
    });
    this.server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', () => resolve()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/alerts`;
  }

  close(): void {
    this.server?.closeAllConnections();
    this.server?.close();
  }
}

// --- redis counters ---------------------------------------------------------------------------

async function commandStats(r: Redis): Promise<Map<string, number>> {
  const text = await r.info('commandstats');
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1] as string, Number(m[2]));
  return out;
}

function diff(a: Map<string, number>, b: Map<string, number>): { total: number; byCmd: Map<string, number> } {
  const byCmd = new Map<string, number>();
  let total = 0;
  for (const [k, v] of b) {
    // The bench's own INFO calls are not the daemon's.
    if (k === 'info') continue;
    const d = v - (a.get(k) ?? 0);
    if (d > 0) {
      byCmd.set(k, d);
      total += d;
    }
  }
  return { total, byCmd };
}

// --- statistics -------------------------------------------------------------------------------

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

function quantile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

/** "median (min–max)" of rates. */
function spread(xs: number[]): string {
  return `${fmt(median(xs))} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})`;
}

function progress(s: string): void {
  process.stderr.write(`  · ${s}\n`);
}

// --- the runs ---------------------------------------------------------------------------------

interface Result {
  rate: number;
  cpuUsPerEvent: number;
  /** Of the CPU time, what garbage collection pauses took. */
  gcUsPerEvent: number;
  hwmMb: number;
}

/** Per round, `a`'s figure over `b`'s (rounds are interleaved, so round i of each ran side by side). */
function roundRatios(a: Result[], b: Result[], figure: (r: Result) => number): number[] {
  return a.map((x, i) => figure(x) / (b[i] ? figure(b[i]) : NaN));
}

function listed(xs: number[]): string {
  return xs.map((x) => x.toFixed(2)).join(', ');
}

/** One program's line of figures: rate (median and spread), CPU and GC per event, peak RSS. */
function figuresLine(label: string, rs: Result[]): string {
  const med = (f: (r: Result) => number): number => median(rs.map(f));
  return `${label.padEnd(40)} ${spread(rs.map((x) => x.rate)).padStart(28)} ev/s  CPU ${med((x) => x.cpuUsPerEvent).toFixed(1)} µs/ev (GC ${med((x) => x.gcUsPerEvent).toFixed(1)})  VmHWM ${med((x) => x.hwmMb).toFixed(0)} MB`;
}

/** The `n` Redis commands called most, with their counts. */
function topCommands(byCmd: Map<string, number>, n: number): string {
  return [...byCmd].sort((a, b) => b[1] - a[1]).slice(0, n).map(([c, k]) => `${c} ${fmt(k)}`).join(', ');
}

type GrpcKind = 'raw' | 'decode' | 'daemon';

async function grpcRounds(falco: Child, address: string, redis: Redis, redisUrl: string, webhook: Receiver, n: number): Promise<{ results: Map<GrpcKind, Result[]>; cmdsPerEvent: number[]; top: string }> {
  const results = new Map<GrpcKind, Result[]>([
    ['raw', []],
    ['decode', []],
    ['daemon', []],
  ]);
  const cmdsPerEvent: number[] = [];
  let top = '';
  const kinds: GrpcKind[] = ['raw', 'decode', 'daemon'];
  const spec: FillSpec = { n, distinct: 2000, host: 'node-grpc', build: true, ipBase: 30 };
  for (let r = 0; r < ROUNDS; r++) {
    for (let k = 0; k < kinds.length; k++) {
      const kind = kinds[(k + r) % kinds.length] as GrpcKind;
      await falco.ask({ op: 'fill', spec });
      const child = await Child.start(kind === 'daemon' ? 'daemon' : kind);
      let res: Msg;
      if (kind === 'daemon') {
        const before = await commandStats(redis);
        res = await child.ask({ op: 'grpc', n, spec: { grpcAddress: address, redisUrl, prefix: TestRedis.prefix(), webhookUrl: webhook.url } });
        const d = diff(before, await commandStats(redis));
        cmdsPerEvent.push(d.total / n);
        top = topCommands(d.byCmd, 6);
      } else {
        res = await child.ask({ op: 'run', address, n });
      }
      await child.stop();
      const secs = res['secs'] as number;
      results.get(kind)?.push({ rate: n / secs, cpuUsPerEvent: ((res['cpuMs'] as number) * 1000) / n, gcUsPerEvent: ((res['gcMs'] as number) * 1000) / n, hwmMb: res['hwmMb'] as number });
      progress(`grpc round ${r + 1} ${kind}: ${fmt(n / secs)} ev/s`);
    }
  }
  return { results, cmdsPerEvent, top };
}

type HttpKind = 'bare' | 'daemon';

async function postAll(port: number, bodies: string[], n: number, perBody: number): Promise<number> {
  let next = 0;
  let retries = 0;
  const url = `http://127.0.0.1:${port}/falco`;
  const worker = async (): Promise<void> => {
    while (next * perBody < n) {
      const body = bodies[next++ % bodies.length] as string;
      for (;;) {
        const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/x-ndjson' } });
        await res.arrayBuffer();
        if (res.status === 503) {
          retries++;
          await new Promise((r) => setTimeout(r, 5));
          continue;
        }
        if (!res.ok) throw new Error(`ingest answered ${res.status}`);
        break;
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  return retries;
}

async function httpRounds(redisUrl: string, webhook: Receiver, n: number): Promise<Map<HttpKind, Result[]>> {
  const perBody = 500;
  const t = await templates();
  const bodies: string[] = [];
  const now = wallNs();
  for (let b = 0; b < 4; b++) {
    const lines: string[] = [];
    for (let i = 0; i < perBody; i++) lines.push(falcoJsonLine(variant(t.egress, 'node-http', { 'fd.sip': ipOf((b * perBody + i) % 1000, 60), ...OUTSIDE_BUILD }, now)));
    bodies.push(lines.join('\n'));
  }
  const results = new Map<HttpKind, Result[]>([
    ['bare', []],
    ['daemon', []],
  ]);
  const kinds: HttpKind[] = ['bare', 'daemon'];
  const total = Math.ceil(n / perBody) * perBody;
  for (let r = 0; r < ROUNDS; r++) {
    for (let k = 0; k < kinds.length; k++) {
      const kind = kinds[(k + r) % kinds.length] as HttpKind;
      const child = await Child.start(kind);
      const listening = await child.ask(
        kind === 'daemon' ? { op: 'http', spec: { redisUrl, prefix: TestRedis.prefix(), webhookUrl: webhook.url } } : { op: 'listen' },
      );
      const t0 = performance.now();
      const retries = await postAll(listening['port'] as number, bodies, total, perBody);
      const res = await child.ask({ op: 'wait', n: total });
      const secs = (performance.now() - t0) / 1000;
      await child.stop();
      results.get(kind)?.push({ rate: total / secs, cpuUsPerEvent: ((res['cpuMs'] as number) * 1000) / total, gcUsPerEvent: ((res['gcMs'] as number) * 1000) / total, hwmMb: res['hwmMb'] as number });
      progress(`http round ${r + 1} ${kind}: ${fmt(total / secs)} ev/s (${retries} 503 retries)`);
    }
  }
  return results;
}

async function latencyRun(falco: Child, address: string, redisUrl: string, webhook: Receiver, seconds: number): Promise<{ sorted: number[]; expected: number; hwmMb: number; warmup: number[] }> {
  const child = await Child.start('daemon');
  await child.ask({ op: 'stream', spec: { grpcAddress: address, redisUrl, prefix: TestRedis.prefix(), webhookUrl: webhook.url } });
  const rate = Number(process.env['BENCH_LAT_RATE'] ?? '5000');
  const newEvery = Number(process.env['BENCH_LAT_EVERY'] ?? '50');
  const untilAlerts = async (n: number, count: () => number): Promise<void> => {
    const deadline = performance.now() + 30_000;
    while (count() < n && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  };
  // Warm-up, not timed: the same flow for 2 s from a just-started process (connection set-up,
  // code not yet optimised) makes a backlog of its own; its latencies are reported apart.
  webhook.latencies = [];
  webhook.timing = true;
  const warmed = await falco.ask({ op: 'stream', spec: { rate, seconds: 2, host: 'lat-warm', newEvery, ipBase: 95, warm: 200 } });
  await untilAlerts(warmed['fresh'] as number, () => webhook.latencies.length);
  const warmup = [...webhook.latencies].sort((a, b) => a - b);
  webhook.latencies = [];
  const streamed = await falco.ask({ op: 'stream', spec: { rate, seconds, host: 'lat-host', newEvery, ipBase: 90, warm: 200 } });
  const expected = streamed['fresh'] as number;
  await untilAlerts(expected, () => webhook.latencies.length);
  webhook.timing = false;
  const u = await child.ask({ op: 'usage' });
  await child.stop();
  if (process.env['BENCH_DEBUG']) process.stderr.write(`latencies in arrival order: ${webhook.latencies.map((x) => x.toFixed(0)).join(' ')}\n`);
  return { sorted: [...webhook.latencies].sort((a, b) => a - b), expected, hwmMb: u['hwmMb'] as number, warmup };
}

async function memoryRun(falco: Child, address: string, redis: Redis, redisUrl: string, webhook: Receiver, n: number, ips: number): Promise<{ hwmMb: number; rssMb: number; heapMb: number; offHeapMb: number; rate: number; cmds: number; top: string; ipsPerScript: number }> {
  await falco.ask({ op: 'fill', spec: { n, distinct: ips, host: 'node-mem', build: false, ipBase: 100 } satisfies FillSpec });
  const child = await Child.start('daemon');
  const before = await commandStats(redis);
  const res = await child.ask({ op: 'grpc', n, spec: { grpcAddress: address, redisUrl, prefix: TestRedis.prefix(), webhookUrl: webhook.url } });
  const d = diff(before, await commandStats(redis));
  await child.stop();
  // Decide calls: every script call but the 30 s sweep's, which runs one per bucket and calls
  // HGETALL once each (the only other HGETALL is a host's session load, once per host).
  const scripts = (d.byCmd.get('evalsha') ?? 0) + (d.byCmd.get('eval') ?? 0) - (d.byCmd.get('hgetall') ?? 0);
  const top = topCommands(d.byCmd, 4);
  return { hwmMb: res['hwmMb'] as number, rssMb: res['rssMb'] as number, heapMb: res['heapMb'] as number, offHeapMb: res['offHeapMb'] as number, rate: n / (res['secs'] as number), cmds: d.total / n, top, ipsPerScript: ips / Math.max(1, scripts) };
}

async function main(): Promise<void> {
  const started = performance.now();
  const header = `t1612d bench ${new Date().toISOString()} (node ${process.version}, scale ${SCALE}, ${ROUNDS} rounds, measured programs ${UNDER_TSX ? 'under tsx' : 'compiled'})`;
  process.stderr.write(`${header}\n`);
  compileChildren();
  const redisServer = await TestRedis.start();
  const redis = new Redis(redisServer.url);
  const webhook = new Receiver();
  await webhook.start();
  const dir = mkdtempSync(join(tmpdir(), 't1612d-bench-'));
  const address = `unix://${join(dir, 'falco.sock')}`;
  const falco = await Child.start('falco');
  const lines: string[] = [];
  const ratios: string[] = [];
  try {
    await falco.ask({ op: 'start', address });
    if (ONLY.has('grpc')) {
      const nGrpc = 200_000 * SCALE;
      const g = await grpcRounds(falco, address, redis, redisServer.url, webhook, nGrpc);
      const of = (k: GrpcKind): Result[] => g.results.get(k) ?? [];
      const byRate = roundRatios(of('daemon'), of('decode'), (x) => x.rate);
      ratios.push(`gRPC sub end to end vs proto-loader-decoding client   ${median(byRate).toFixed(2)}×  (per round ${listed(byRate)}; goal ≥ 1.0)`);
      ratios.push(`gRPC sub end to end vs raw counting client            ${median(roundRatios(of('daemon'), of('raw'), (x) => x.rate)).toFixed(2)}×`);
      // CPU time per event moves less with what else the box runs than throughput does.
      const byCpu = roundRatios(of('daemon'), of('decode'), (x) => x.cpuUsPerEvent);
      ratios.push(`gRPC CPU per event, t1612d ÷ decoding client         ${median(byCpu).toFixed(2)}×  (per round ${listed(byCpu)}; ≤ 1.0 would match it)`);
      lines.push(figuresLine('grpc-js client, counting raw messages', of('raw')));
      lines.push(figuresLine('grpc-js client + proto-loader decode', of('decode')));
      lines.push(figuresLine('t1612d (sub, Redis, webhook)', of('daemon')));
      lines.push(`${'  Redis commands per event'.padEnd(40)} ${median(g.cmdsPerEvent).toFixed(4)}  (${fmt(nGrpc)} events over 2,000 IPs in one build: 2,000 alerts through the outbox; calls inside scripts count; last round: ${g.top})`);
    }
    if (ONLY.has('http')) {
      const nHttp = 100_000 * SCALE;
      const h = await httpRounds(redisServer.url, webhook, nHttp);
      const of = (k: HttpKind): Result[] => h.get(k) ?? [];
      const byRate = roundRatios(of('daemon'), of('bare'), (x) => x.rate);
      ratios.push(`HTTP NDJSON ingest vs bare JSON.parse-only server     ${median(byRate).toFixed(2)}×  (per round ${listed(byRate)}; goal ≥ 1.0)`);
      const byCpu = roundRatios(of('daemon'), of('bare'), (x) => x.cpuUsPerEvent);
      ratios.push(`HTTP CPU per event, t1612d ÷ bare parse server       ${median(byCpu).toFixed(2)}×  (per round ${listed(byCpu)})`);
      lines.push(figuresLine('bare node:http, JSON.parse per line', of('bare')));
      lines.push(figuresLine('t1612d HTTP ingest (Redis, webhook)', of('daemon')));
    }
    if (ONLY.has('latency')) {
      const lat = await latencyRun(falco, address, redisServer.url, webhook, 10 * SCALE);
      const p = (q: number): string => quantile(lat.sorted, q).toFixed(1);
      ratios.push(`event→webhook from Falco's enqueue at 5k ev/s        p50 ${p(0.5)} ms  p99 ${p(0.99)} ms  (goal p99 ≤ 50 ms)`);
      lines.push(`${'latency from enqueue, 5,000 ev/s'.padEnd(40)} p50 ${p(0.5)} ms  p90 ${p(0.9)} ms  p99 ${p(0.99)} ms  max ${p(1)} ms  (${lat.sorted.length}/${lat.expected} alerts, VmHWM ${lat.hwmMb.toFixed(0)} MB)`);
      const w = (q: number): string => quantile(lat.warmup, q).toFixed(1);
      lines.push(`${'  the 2 s warm-up after start, not timed'.padEnd(40)} p50 ${w(0.5)} ms  p99 ${w(0.99)} ms  max ${w(1)} ms  (${lat.warmup.length} alerts)`);

    }
    if (ONLY.has('memory')) {
      const nMem = 1_000_000 * SCALE;
      const mem = await memoryRun(falco, address, redis, redisServer.url, webhook, nMem, 100_000);
      ratios.push(`peak RSS after ${fmt(nMem)} egress events over 100k IPs   ${mem.hwmMb.toFixed(0)} MB  (goal ≤ 150 MB)`);
      lines.push(
        `${`${fmt(nMem)} egress events, 100k new IPs`.padEnd(40)} ${fmt(mem.rate).padStart(28)} ev/s  VmHWM ${mem.hwmMb.toFixed(0)} MB  RSS at end ${mem.rssMb.toFixed(0)} MB  largest JS heap ${mem.heapMb.toFixed(0)} MB, off-heap ${mem.offHeapMb.toFixed(0)} MB  ` +
          `Redis ${mem.cmds.toFixed(4)} cmd/ev incl. calls inside scripts (${mem.top})  ${mem.ipsPerScript.toFixed(0)} IPs per decide script call`,
      );
    }
  } finally {
    await falco.stop();
    webhook.close();
    redis.disconnect();
    await redisServer.close();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(header);
  console.log('\nRatios (same machine, same run; medians of interleaved rounds)');
  for (const r of ratios) console.log(`  ${r}`);
  console.log('\nFigures (median (min–max) over rounds)');
  for (const l of lines) console.log(`  ${l}`);
  console.log(`\nside-by-side took ${((performance.now() - started) / 1000).toFixed(0)} s`);
  if (process.env['BENCH_MICRO'] !== '0') {
    console.log('\nIn-process micro benchmarks');
    await decodeBench();
    await runMicro(SCALE);
  }
  if (process.env['BENCH_STORM'] !== '0') {
    console.log('\nIngest storms: event-loop delay, RSS, /healthz (bench/storm.ts)');
    await (await import('./storm.js')).runStorms();
  }
  if (process.env['BENCH_FLEET'] !== '0') {
    console.log('\nKnown-IP set at fleet scale (bench/fleet.ts)');
    await (await import('./fleet.js')).fleetBench();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
