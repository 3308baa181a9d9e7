/**
 * Migration from the first layout (one hash tag per environment: `known` ZSET + `first`
 * HASH) to the sharded buckets: no known IP is lost or alerts again, whether decisions come
 * before, during or after the move, by the daemons' maintenance or by `t1612d migrate`.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { Correlator } from '../src/detect/correlator.js';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { createStores, type Stores } from '../src/store/stores.js';
import { envKeys, legacyKeys } from '../src/store/redis/keys.js';
import type { DecideItem } from '../src/store/first-seen.js';
import { TestRedis } from './support/redis.js';
import { CollectingSink, loadEvents, testConfig } from './support/scenarios.js';
import { inRedisSet } from './support/known.js';

const DAY = 86_400_000;
const RETENTION = 30 * DAY;
const events = loadEvents('buildkit-run-curl.jsonl');
/** Where the fixture's build connects. */
const BUILD_IPS = ['203.0.113.9', '192.0.2.10'];

/** Writes `ips` into the first layout as a daemon of that layout would have. */
async function writeLegacy(r: Redis, prefix: string, env: string, ips: string[], lastMs: number): Promise<void> {
  const k = legacyKeys(prefix, env);
  for (let i = 0; i < ips.length; i += 500) {
    const part = ips.slice(i, i + 500);
    await r.zadd(k.known, ...part.flatMap((ip) => [lastMs, ip]));
    await r.hset(k.first, ...part.flatMap((ip) => [ip, `${lastMs - DAY}|old-token`]));
  }
}

describe('migration from the single-slot layout', function () {
  this.timeout(60_000);
  let redis: TestRedis;
  let r: Redis;
  const open: Stores[] = [];

  before(async () => {
    redis = await TestRedis.start();
    r = new Redis(redis.url);
  });
  after(async () => {
    r.disconnect();
    await redis.close();
  });
  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
  });

  const v4 = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  const decideAll = (stores: Stores, env: string, ips: string[], now: number) =>
    stores.firstSeen.decide(
      env,
      ips.map((ip, i): DecideItem => ({ ip, eventTimeMs: now, token: `m-${i}-${Math.random()}`, claim: 'sess' })),
      { nowMs: now, retentionMs: RETENTION, learningPeriodMs: 0, learningStartCandidate: now, claimTtlMs: 60_000 },
    );

  it('reads both layouts while migrating, then moves every known IP and removes the old keys', async () => {
    const prefix = TestRedis.prefix();
    const env = 'prod';
    const now = Date.now();
    const known = Array.from({ length: 2500 }, (_, i) => v4(i));
    await writeLegacy(r, prefix, env, [...known, '2001:db8::42'], now - DAY);
    await writeLegacy(r, prefix, env, ['198.51.100.200'], now - 40 * DAY); // past the retention
    const cfg = testConfig({ redisUrl: redis.url, redisPrefix: prefix, environment: env });
    const stores = await createStores(cfg, { logger: silentLogger(), metrics: new Metrics() });
    open.push(stores);

    // Before any move: known IPs of the old layout are known, nothing is claimed for them.
    const before = await decideAll(stores, env, [known[0] ?? '', known[2499] ?? '', '2001:db8::42', '198.51.100.200'], now);
    assert.deepEqual(
      before.results.map((x) => [x.isNew, x.claimed]),
      [
        [false, false],
        [false, false],
        [false, false],
        [true, true],
      ],
    );
    assert.equal(before.results[0]?.firstSeenAt, now - 2 * DAY, 'first-seen carried over');

    // Maintenance moves the rest (several chunks) and deletes the old keys.
    const count = await stores.firstSeen.maintain(env, now, RETENTION);
    assert.equal(count, 2502, 'every known IP, the IPv6 one and the new one');
    const lk = legacyKeys(prefix, env);
    assert.equal(await r.exists(lk.known, lk.first), 0, 'old keys removed');

    // After: a fresh daemon (no memory of the old layout) knows every one of them.
    const fresh = await createStores(cfg, { logger: silentLogger(), metrics: new Metrics() });
    open.push(fresh);
    const after = await decideAll(fresh, env, [...known, '2001:db8::42'], now + 1000);
    assert.equal(after.results.filter((x) => x.isNew).length, 0, 'no known IP is new after the move');
  });

  it('a daemon started on the old layout does not alert for an IP known there', async () => {
    const prefix = TestRedis.prefix();
    const run = async (env: string): Promise<CollectingSink> => {
      const cfg = testConfig({ redisUrl: redis.url, redisPrefix: prefix, environment: env });
      const metrics = new Metrics();
      const stores = await createStores(cfg, { logger: silentLogger(), metrics });
      open.push(stores);
      const sink = new CollectingSink();
      const c = new Correlator(cfg, { stores, sink, metrics, logger: silentLogger() });
      for (const ev of events) await c.handle(ev);
      await c.flush();
      await c.close();
      return sink;
    };
    await writeLegacy(r, prefix, 'old', BUILD_IPS, Date.now() - DAY);
    const old = await run('old');
    assert.deepEqual(old.alerts.map((a) => a.destination.ip), [], 'known in the old layout: no alert');
    assert.deepEqual(
      (await run('control')).alerts.map((a) => a.destination.ip).sort(),
      [...BUILD_IPS].sort(),
      'the same build alerts where the IPs are unknown',
    );
    for (const ip of BUILD_IPS) assert.equal(await inRedisSet(r, prefix, 'old', ip), true, `${ip} copied into its bucket on first sight`);
  });

  it('session loads read the single-slot layout too, the sharded one winning', async () => {
    const prefix = TestRedis.prefix();
    const cfg = testConfig({ redisUrl: redis.url, redisPrefix: prefix, environment: 'sess' });
    await writeLegacy(r, prefix, 'sess', ['192.0.2.50'], Date.now() - DAY);
    const writer = await createStores(cfg, { logger: silentLogger(), metrics: new Metrics() });
    open.push(writer);
    // Sessions written in the current layout, then renamed to where the first layout kept them.
    const build = loadEvents('buildkit-run-curl.jsonl');
    const metrics = new Metrics();
    const c = new Correlator(cfg, { stores: writer, sink: new CollectingSink(), metrics, logger: silentLogger() });
    for (const ev of build.slice(0, -1)) await c.handle(ev);
    await c.flush();
    await c.close();
    const host = build[0]?.hostname ?? '';
    const now = await writer.sessions.load('sess', [host]);
    assert.ok((now.get(host)?.sessions.length ?? 0) > 0, 'the build opened a session');
    await r.rename(envKeys(prefix, 'sess').sessions(host), legacyKeys(prefix, 'sess').sessions(host));
    const reader = await createStores(cfg, { logger: silentLogger(), metrics: new Metrics() });
    open.push(reader);
    const loaded = await reader.sessions.load('sess', [host]);
    assert.deepEqual(
      loaded.get(host)?.sessions.map((x) => x.id),
      now.get(host)?.sessions.map((x) => x.id),
    );
  });

  it('`t1612d migrate` moves the set and says how many', async () => {
    const prefix = TestRedis.prefix();
    await writeLegacy(r, prefix, 'cli', ['192.0.2.1', '192.0.2.2', '192.0.2.3'], Date.now() - DAY);
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [join(import.meta.dirname, '..', 'bin', 't1612d.js'), 'migrate'], {
        env: {
          PATH: process.env['PATH'] ?? '',
          T1612D_REDIS_URL: redis.url,
          T1612D_REDIS_PREFIX: prefix,
          T1612D_ENVIRONMENT: 'cli',
          T1612D_LOG_LEVEL: 'warn',
        },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /^t1612d migrate: 3 known IPs moved to the sharded layout \(4096 buckets\), 0 past the retention dropped$/m);
    for (const ip of ['192.0.2.1', '192.0.2.2', '192.0.2.3']) assert.equal(await inRedisSet(r, prefix, 'cli', ip), true, ip);
    assert.equal(await r.exists(legacyKeys(prefix, 'cli').known), 0);
  });
});
