/**
 * In-process micro benchmarks of the correlator, run by `npm run bench` after the side-by-side
 * figures (bench/run.ts). Prints numbers; asserts nothing.
 *
 * 1. correlator, memory stores, warm known-IP cache (the busy-host steady state)
 * 2. correlator, Redis stores, warm cache
 * 3. correlator, Redis stores, cold: every event a never-seen IP outside any build (batched
 *    first-seen writes)
 * 4. event-to-alert latency: builds whose step reaches a new IP, Redis stores
 *
 * Redis: a private redis-server (or REDIS_URL). Sizes scale with BENCH_SCALE (default 1).
 */
import { performance } from 'node:perf_hooks';
import { resolveConfig, type Config } from '../src/config/config.js';
import { Correlator } from '../src/detect/correlator.js';
import type { Alert } from '../src/model/alert.js';
import { fromFalcoJson, type FalcoEvent } from '../src/model/event.js';
import { Metrics } from '../src/ops/metrics.js';
import { silentLogger } from '../src/ops/logger.js';
import { createStores } from '../src/store/stores.js';
import { templates } from './events.js';
import { TestRedis } from '../test/support/redis.js';

const logger = silentLogger();

function config(overrides: Partial<Config>): Config {
  return resolveConfig({
    env: {},
    overrides: { falcoGrpcAddress: '', httpAddress: '', logLevel: 'silent', ...overrides },
  });
}

function withChanges(tpl: Record<string, unknown>, host: string, fields: Record<string, unknown>, timeMs: number): FalcoEvent {
  const of = { ...(tpl['output_fields'] as Record<string, unknown>), ...fields };
  return fromFalcoJson({ ...tpl, hostname: host, output_fields: of, time: new Date(timeMs).toISOString() });
}

function ipOf(i: number, base = 20): string {
  return `${base + ((i >> 16) & 0x3f)}.${(i >> 8) & 0xff}.${i & 0xff}.${7 + (i % 200)}`;
}

interface Collector {
  alerts: Alert[];
  at: number[];
  enqueue(a: Alert): Promise<void>;
}

function collector(): Collector {
  const c: Collector = {
    alerts: [],
    at: [],
    enqueue(a: Alert) {
      c.alerts.push(a);
      c.at.push(performance.now());
      return Promise.resolve();
    },
  };
  return c;
}

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** A correlator on the configured stores, with a collecting sink; `done()` closes both. */
async function correlatorFor(cfg: Config): Promise<{ corr: Correlator; sink: Collector; done: () => Promise<void> }> {
  const metrics = new Metrics();
  const stores = await createStores(cfg, { logger, metrics });
  const sink = collector();
  const corr = new Correlator(cfg, { stores, sink, metrics, logger });
  return {
    corr,
    sink,
    done: async () => {
      await corr.close();
      await stores.close();
    },
  };
}

async function warmCache(label: string, cfg: Config, n: number, ips: number): Promise<void> {
  const { corr, sink, done } = await correlatorFor(cfg);
  const t = await templates();
  const now = Date.now();
  // One open build per host, so every egress also goes through attribution.
  const hosts = ['node-a', 'node-b', 'node-c', 'node-d'];
  for (const h of hosts) {
    await corr.handle(withChanges(t.trigger, h, {}, now));
    await corr.handle(withChanges(t.step, h, {}, now));
  }
  const events: FalcoEvent[] = [];
  for (let i = 0; i < ips; i++) events.push(withChanges(t.egress, hosts[i % hosts.length] ?? 'node-a', { 'fd.sip': ipOf(i) }, now));
  // Warm-up: learn the IPs (these are alerts: new IPs from a build); then measure.
  for (const ev of events) await corr.handle(ev);
  await corr.flush();
  const learned = sink.alerts.length;
  const mem0 = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const r = corr.handle(events[i % events.length] as FalcoEvent);
    if (r) await r;
  }
  await corr.flush();
  const secs = (performance.now() - t0) / 1000;
  const mem1 = process.memoryUsage().heapUsed;
  console.log(
    `${label.padEnd(44)} ${fmt(n / secs).padStart(10)} events/s  (${fmt(n)} events over ${ips} known IPs, ${secs.toFixed(2)} s, ` +
      `${learned} alerts while learning, ${sink.alerts.length - learned} after, heap ${((mem1 - mem0) / 1e6).toFixed(1)} MB)`,
  );
  await done();
}

async function cold(cfg: Config, n: number): Promise<void> {
  const { corr, sink, done } = await correlatorFor(cfg);
  const t = await templates();
  const now = Date.now();
  // Host traffic outside any build: container egress, every IP never seen.
  const events: FalcoEvent[] = [];
  for (let i = 0; i < n; i++) events.push(withChanges(t.egress, `idle-${i % 8}`, { 'fd.sip': ipOf(i, 80), 'thread.cgroups': null, 'proc.apid[2]': null, 'proc.aname[2]': 'containerd-shim' }, now));
  const t0 = performance.now();
  for (const ev of events) {
    const r = corr.handle(ev);
    if (r) await r;
  }
  await corr.flush();
  const secs = (performance.now() - t0) / 1000;
  console.log(`${'correlator, redis, cold (all IPs new, no build)'.padEnd(44)} ${fmt(n / secs).padStart(10)} events/s  (${fmt(n)} events, ${secs.toFixed(2)} s, ${sink.alerts.length} alerts)`);
  await done();
}

async function latency(cfg: Config, builds: number): Promise<void> {
  const { corr, sink, done } = await correlatorFor(cfg);
  const t = await templates();
  const now = Date.now();
  const sent = new Map<string, number>();
  for (let b = 0; b < builds; b++) {
    const host = `builder-${b}`;
    await corr.handle(withChanges(t.trigger, host, {}, now));
    await corr.handle(withChanges(t.step, host, {}, now));
    const ip = ipOf(b, 150);
    sent.set(`${host}|${ip}`, performance.now());
    await corr.handle(withChanges(t.egress, host, { 'fd.sip': ip }, now));
    // Pace like real builds: a few per millisecond at most.
    if (b % 20 === 0) await new Promise((r) => setTimeout(r, 1));
  }
  await corr.flush();
  const lat: number[] = [];
  sink.alerts.forEach((a, i) => {
    const s = sent.get(`${a.hostname}|${a.destination.ip}`);
    if (s !== undefined) lat.push((sink.at[i] ?? s) - s);
  });
  lat.sort((a, b) => a - b);
  const q = (p: number): string => (lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? NaN).toFixed(2);
  console.log(`${'event-to-alert latency, redis'.padEnd(44)} p50 ${q(0.5)} ms  p99 ${q(0.99)} ms  max ${q(1)} ms  (${lat.length}/${builds} alerts)`);
  await done();
}

/** The in-process micro benchmarks (correlator alone, memory and Redis stores). */
export async function runMicro(scale: number): Promise<void> {
  await warmCache('correlator, memory, warm cache', config({}), 1_000_000 * scale, 5_000);
  const redis = await TestRedis.start();
  try {
    const redisCfg = (extra: Partial<Config> = {}): Config => config({ redisUrl: redis.url, redisPrefix: TestRedis.prefix(), ...extra });
    await warmCache('correlator, redis, warm cache', redisCfg(), 1_000_000 * scale, 5_000);
    await cold(redisCfg(), 50_000 * scale);
    await latency(redisCfg(), 2_000 * scale);
  } finally {
    await redis.close();
  }
}
