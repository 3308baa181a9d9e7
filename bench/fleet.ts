/**
 * Fleet-scale figures for the sharded known-IP set (`npm run bench` runs this last; alone:
 * `npx tsx bench/fleet.ts`). Prints numbers; asserts nothing.
 *
 * 1. bytes per IP: `used_memory` delta of a private redis-server after FLEET_IPV4 random IPv4
 *    addresses (default 1M × BENCH_SCALE) and FLEET_IPV6 random IPv6 ones (100k × BENCH_SCALE),
 *    written through the store's decide() with Redis' default `hash-max-listpack-entries`
 *    (512), decide tokens swept away as they are after a day;
 * 2. decisions per second on 1 master and on a 3-master cluster: several store clients, each
 *    deciding correlator-sized batches (1,000) of never-seen IPs (the costliest case), and the
 *    Redis time per decision (EVALSHA `usec` from INFO commandstats, summed over masters) and
 *    how it splits between the masters.
 *
 * Always a private redis-server / cluster (REDIS_URL is ignored: the memory figures need a
 * server nobody else writes to).
 */
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { resolveConfig, type Config } from '../src/config/config.js';
import { Metrics } from '../src/ops/metrics.js';
import { silentLogger } from '../src/ops/logger.js';
import { createStores, type Stores } from '../src/store/stores.js';
import type { DecideItem } from '../src/store/first-seen.js';
import { TestRedis } from '../test/support/redis.js';
import { TestRedisCluster } from '../test/support/redis-cluster.js';

const SCALE = Number(process.env['BENCH_SCALE'] ?? '1');
const IPV4 = Number(process.env['FLEET_IPV4'] ?? String(Math.round(1_000_000 * SCALE)));
const IPV6 = Number(process.env['FLEET_IPV6'] ?? String(Math.round(100_000 * SCALE)));
const LOAD_BATCH = 20_000;
const DECIDE_BATCH = 1_000;
const CLIENTS = 4;
const DAY = 86_400_000;

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

function config(overrides: Partial<Config>): Config {
  return resolveConfig({ env: {}, overrides: { falcoGrpcAddress: '', httpAddress: '', logLevel: 'silent', ...overrides } });
}

/** Deterministic pseudo-random 32-bit numbers (xorshift), so runs compare. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>>= 0);
  };
}

function randomV4(next: () => number): string {
  const n = next();
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

function randomV6(next: () => number): string {
  const g: string[] = ['2001', (next() & 0xffff).toString(16)];
  for (let i = 0; i < 6; i++) g.push((next() & 0xffff).toString(16));
  return g.join(':');
}

async function usedMemory(r: Redis): Promise<number> {
  const info = await r.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0);
}

let seq = 0;
async function load(stores: Stores, env: string, ips: string[]): Promise<void> {
  const now = Date.now();
  for (let i = 0; i < ips.length; i += LOAD_BATCH) {
    const items = ips.slice(i, i + LOAD_BATCH).map((ip): DecideItem => ({ ip, eventTimeMs: now, token: `b${seq++}`, claim: null }));
    await stores.firstSeen.decide(env, items, {
      nowMs: now,
      retentionMs: 30 * DAY,
      learningPeriodMs: 0,
      learningStartCandidate: now,
      claimTtlMs: 60_000,
    });
  }
  // Decide tokens are kept for a day; a sweep a day later drops them (the steady state).
  await stores.firstSeen.maintain(env, now + DAY + 3_600_000, 30 * DAY);
}

async function bytesPerIp(): Promise<void> {
  const redis = await TestRedis.start();
  const probe = new Redis(redis.url);
  try {
    const limit = (await probe.config('GET', 'hash-max-listpack-entries')) as string[];
    const cfg = config({ redisUrl: redis.url, redisPrefix: 'bench' });
    const stores = await createStores(cfg, { logger: silentLogger(), metrics: new Metrics() });
    try {
      for (const [kind, n, make] of [
        ['IPv4', IPV4, randomV4],
        ['IPv6', IPV6, randomV6],
      ] as const) {
        const next = rng(n + kind.length);
        const ips = Array.from({ length: n }, () => make(next));
        const before = await usedMemory(probe);
        const t0 = performance.now();
        await load(stores, `mem-${kind}`, ips);
        const secs = (performance.now() - t0) / 1000;
        const delta = (await usedMemory(probe)) - before;
        console.log(
          `${`known-IP set, ${fmt(n)} ${kind}, listpack-entries ${limit[1]}`.padEnd(58)} ${(delta / n).toFixed(1).padStart(8)} bytes/IP  (${cfg.knownIpBuckets} buckets, loaded in ${secs.toFixed(1)} s)`,
        );
      }
    } finally {
      await stores.close();
    }
  } finally {
    probe.disconnect();
    await redis.close();
  }
}

/** EVALSHA microseconds per server so far (INFO commandstats). */
async function evalUsec(urls: string[]): Promise<number[]> {
  const out: number[] = [];
  for (const url of urls) {
    const r = new Redis(url);
    try {
      const m = /cmdstat_evalsha:calls=\d+,usec=(\d+)/.exec(await r.info('commandstats'));
      out.push(Number(m?.[1] ?? 0));
    } finally {
      r.disconnect();
    }
  }
  return out;
}

async function decisionsPerSecond(what: string, cfg: Config, total: number, servers: string[]): Promise<void> {
  const fleet = await Promise.all(Array.from({ length: CLIENTS }, () => createStores(cfg, { logger: silentLogger(), metrics: new Metrics() })));
  try {
    const env = 'rate';
    const now = Date.now();
    const per = Math.ceil(total / CLIENTS / DECIDE_BATCH);
    // Warm up: scripts loaded, layout read, connections to every node.
    await Promise.all(fleet.map((s, c) => load(s, env, Array.from({ length: 100 }, (_, i) => `198.18.${c}.${i}`))));
    const usec0 = await evalUsec(servers);
    const t0 = performance.now();
    await Promise.all(
      fleet.map(async (s, c) => {
        const next = rng(1000 + c);
        for (let b = 0; b < per; b++) {
          const items = Array.from({ length: DECIDE_BATCH }, (): DecideItem => ({ ip: randomV4(next), eventTimeMs: now, token: `r${seq++}`, claim: null }));
          await s.firstSeen.decide(env, items, { nowMs: now, retentionMs: 30 * DAY, learningPeriodMs: 0, learningStartCandidate: now, claimTtlMs: 60_000 });
        }
      }),
    );
    const secs = (performance.now() - t0) / 1000;
    const n = per * DECIDE_BATCH * CLIENTS;
    const perServer = (await evalUsec(servers)).map((u, i) => u - (usec0[i] ?? 0));
    const usec = perServer.reduce((a, b) => a + b, 0);
    const shares = perServer.map((u) => `${Math.round((100 * u) / Math.max(1, usec))}%`).join('/');
    console.log(
      `${`decisions, ${what}`.padEnd(58)} ${fmt(n / secs).padStart(8)} decisions/s  (${CLIENTS} clients, batches of ${DECIDE_BATCH}, ${fmt(n)} new IPs; Redis ${(usec / n).toFixed(1)} µs/decision, split ${shares})`,
    );
  } finally {
    await Promise.all(fleet.map((s) => s.close()));
  }
}

export async function fleetBench(): Promise<void> {
  delete process.env['REDIS_URL'];
  await bytesPerIp();
  const total = Math.round(200_000 * SCALE);
  const single = await TestRedis.start();
  try {
    await decisionsPerSecond('1 master', config({ redisUrl: single.url, redisPrefix: 'bench' }), total, [single.url]);
  } finally {
    await single.close();
  }
  const cluster = await TestRedisCluster.start(3);
  try {
    await decisionsPerSecond(
      '3-master cluster',
      config({ redisClusterNodes: cluster.nodes, redisPrefix: 'bench' }),
      total,
      cluster.nodes.map((n) => `redis://${n}`),
    );
  } finally {
    await cluster.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(`t1612d fleet bench (node ${process.version}, scale ${SCALE})`);
  fleetBench().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
