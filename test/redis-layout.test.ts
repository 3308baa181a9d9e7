// The sharded Redis layout's building blocks, checked against a real redis-server: which
// cluster slot a key lands in (Redis itself is the judge), the field an IP is stored under,
// the bucket it goes to, the used-bucket bitmap, the per-environment layout record, and the
// move of the first layout's known-IP set into the buckets.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { RedisBuildSessionStore } from '../src/store/redis/build-sessions.js';
import { RedisFirstSeenStore } from '../src/store/redis/first-seen.js';
import { envKeys, legacyKeys } from '../src/store/redis/keys.js';
import { Layouts, markArgs, usedBuckets } from '../src/store/redis/layout.js';
import { migrateLegacy } from '../src/store/redis/migrate.js';
import { bucketOf, ipField, keySlot, pipelinePerNode } from '../src/store/redis/slots.js';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { createStores } from '../src/store/stores.js';
import { sessionRecord } from './support/records.js';
import { TestRedis, commandCalls, freePort, spawnRedisServer } from './support/redis.js';
import { testConfig } from './support/scenarios.js';
import { waitFor } from './support/wait.js';

const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const RETENTION = 30 * DAY;
/** The packed bucket value: first minute * 2^26 + last minute. */
const packed = (firstMin: number, lastMin: number): string => String(firstMin * 2 ** 26 + lastMin);

describe('redis layout: cluster slots', () => {
  let child: ChildProcess | undefined;
  let dir = '';
  let node: Redis;
  let nodeAddress = '';

  before(async function () {
    this.timeout(30_000);
    // A cluster-enabled node answers CLUSTER KEYSLOT: Redis's own slot of a key.
    dir = mkdtempSync(join(tmpdir(), 't1612d-keyslot-'));
    const port = await freePort();
    child = await spawnRedisServer(
      ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'),
        '--cluster-announce-ip', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      'keyslot node',
    );
    node = new Redis({ port, host: '127.0.0.1' });
    // Serving every slot, it is also a one-node cluster.
    await node.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
    nodeAddress = `127.0.0.1:${port}`;
  });
  after(() => {
    node?.disconnect();
    child?.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('keySlot() agrees with Redis for plain keys, hash tags, empty and unclosed tags, and UTF-8', async () => {
    const k = envKeys('t1612d', 'prod');
    const keys = [
      '', 'a', 'foo', '123456789', 'user1000', '{user1000}.following', 'x{user1000}.followers', '{}', '{}user', 'a{}b{c}',
      '{a', 'a}b{c}d', 'ab}cd', 'a}{b}', 'x{y}{z}', '{{a}}', 'héllo wörld ✓', '}{', 'a{b', k.learning, k.layout, k.bucket(4095),
      k.alerted(7, 'sess', '203.0.113.1'), k.sessions('host-1'), k.lane('webhook').stream,
      ...Array.from({ length: 200 }, (_, i) => `key:${i}:${'z'.repeat(i % 13)}`),
    ];
    for (const key of keys) {
      const want = Number(await node.cluster('KEYSLOT', key));
      assert.equal(keySlot(key), want, JSON.stringify(key));
    }
  });

  it('the stores on a cluster client: decisions, sweep, migration and sessions, pipelined per node', async () => {
    await waitFor('the one-node cluster', async () => String(await node.call('CLUSTER', 'INFO')).includes('cluster_state:ok'));
    const prefix = TestRedis.prefix();
    const now = Date.now();
    await node.zadd(legacyKeys(prefix, 'e').known, now - DAY, '192.0.2.1', now - DAY, '192.0.2.2');
    const stores = await createStores(testConfig({ redisClusterNodes: [nodeAddress], redisPrefix: prefix, knownIpBuckets: 16 }), {
      logger: silentLogger(),
      metrics: new Metrics(),
    });
    try {
      await waitFor('the cluster client', () => stores.redisUp());
      assert.match(String(await node.call('CLIENT', 'LIST')), /name=t1612d-correlator /, 'cluster connections are named too');
      const ips = Array.from({ length: 40 }, (_, i) => `198.51.100.${i}`);
      const o = { nowMs: now, retentionMs: RETENTION, learningPeriodMs: 0, learningStartCandidate: now, claimTtlMs: 60_000 };
      const r = await stores.firstSeen.decide('e', ['192.0.2.1', ...ips].map((ip, i) => ({ ip, eventTimeMs: now, token: `t${i}`, claim: 's' })), o);
      assert.deepEqual(r.results.map((x) => x.isNew), [false, ...ips.map(() => true)]);
      assert.equal(await stores.firstSeen.maintain('e', now, RETENTION), 42, 'the first layout moved in, every bucket swept');
      const hosts = ['h1', 'h2', 'h3'];
      await stores.sessions.write('e', hosts.map((host) => ({ host, upsert: [sessionRecord({ id: `s-${host}`, host, startedAt: now })], remove: [] })), 60_000);
      const loaded = await stores.sessions.load('e', hosts);
      assert.deepEqual(hosts.map((h) => loaded.get(h)?.sessions[0]?.id), ['s-h1', 's-h2', 's-h3']);
    } finally {
      await stores.close();
    }
  });

  it('every key of a bucket shares the bucket\'s slot; environment singletons share the environment\'s', () => {
    const k = envKeys('p', 'e');
    for (const n of [0, 1, 17, 4095]) assert.equal(keySlot(k.alerted(n, 's', '203.0.113.1')), keySlot(k.bucket(n)));
    const envSlot = keySlot(k.tag);
    for (const key of [k.learning, k.layout, k.used, k.sweep, k.sweepLock, k.migrateLock]) assert.equal(keySlot(key), envSlot, key);
    const lk = legacyKeys('p', 'e');
    for (const key of [lk.known, lk.first, lk.sessions('h'), lk.outbox.stream]) assert.equal(keySlot(key), envSlot, key);
  });
});

describe('redis layout: IP fields and buckets', () => {
  const hex = (ip: string): string => ipField(ip).toString('hex');
  const text = (ip: string): string => ipField(ip).toString('utf8');

  it('an IPv4 address is stored as its 4 bytes', () => {
    assert.equal(hex('203.0.113.7'), 'cb007107');
    assert.equal(hex('0.0.0.0'), '00000000');
    assert.equal(hex('255.255.255.255'), 'ffffffff');
    assert.equal(hex('10.1.2.003'), '0a010203');
  });

  it('an IPv6 address is stored as its 16 bytes, in any of its spellings', () => {
    assert.equal(hex('2001:db8::1'), '20010db8000000000000000000000001');
    assert.equal(hex('2001:DB8:0:0:0:0:0:1'), hex('2001:db8::1'));
    assert.equal(hex('::'), '0'.repeat(32));
    assert.equal(hex('::1'), `${'0'.repeat(30)}01`);
    assert.equal(hex('fe80::'), `fe80${'0'.repeat(28)}`);
    assert.equal(hex('1:2:3:4:5:6:7:8'), '00010002000300040005000600070008');
    assert.equal(hex('1:2:3::6:7:8'), '00010002000300000000000600070008');
    assert.equal(hex('1:2:3:4::5:6:7'), '00010002000300040000000500060007', ':: standing for one group');
    assert.equal(hex('1:2:3:4:5:6:7::'), '00010002000300040005000600070000');
    assert.equal(hex('::2:3:4:5:6:7:8'), '00000002000300040005000600070008');
    assert.equal(hex('1::8'), '00010000000000000000000000000008');
    assert.equal(hex('::ffff:192.0.2.128'), '00000000000000000000ffffc0000280');
    assert.equal(hex('64:ff9b::1.2.3.4'), '0064ff9b000000000000000001020304');
    assert.equal(hex('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'), 'f'.repeat(32));
  });

  it('anything else is kept as text behind "~", never 4 or 16 bytes long (no clash with an address)', () => {
    for (const bad of [
      '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.-4', '1.2.3.1000', '1.2..4', 'a.b.c.d', '', 'host.example',
      '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1::2::3', '1:2:3:4::5:6:7:8', '12345::1', 'g::1', '::ffff:1.2.3', '::1.2.3.4.5',
      '::ffff:300.2.3.4', 'fe80::1%eth0', '1.2.3.4:1::', '::1.2.3.4:1', ':1:2:3:4:5:6:7', '1:2:3:4:5:6:7:', '1:2:3:4:5:6:1.2.3.4:8',
    ]) {
      const f = ipField(bad);
      assert.ok(f.length !== 4 && f.length !== 16, `${bad}: ${f.length} bytes`);
      assert.equal(f.toString('utf8').replace(/^~+/, ''), bad, bad);
      assert.ok(f.toString('utf8').startsWith('~'), bad);
    }
    assert.equal(text('abc'), '~~abc', 'a 3-character name would be 4 bytes');
    assert.equal(text('abcdefghijklmno'), '~~abcdefghijklmno', 'a 15-character name would be 16 bytes');
    assert.equal(text('ab'), '~ab');
    assert.equal(text('1:2:3:4:5:6:7'), '~1:2:3:4:5:6:7');
  });

  it('an IPv6 address with an embedded IPv4 part only takes it last, and only as the last 32 bits', () => {
    assert.equal(hex('::1.2.3.4'), `${'0'.repeat(24)}01020304`);
    assert.equal(hex('1:2:3:4:5:6:1.2.3.4'), '00010002000300040005000601020304');
    assert.ok(ipField('1:2:3:4:5:6:7:1.2.3.4').toString('utf8').startsWith('~'), 'too many groups');
  });

  it('buckets are FNV-1a (32 bit) of the field, so every daemon and version agrees', () => {
    // The published FNV-1a test vectors, with a modulus that keeps the whole hash.
    const full = 2 ** 32;
    assert.equal(bucketOf(Buffer.from(''), full), 0x811c9dc5);
    assert.equal(bucketOf(Buffer.from('a'), full), 0xe40c292c);
    assert.equal(bucketOf(Buffer.from('foobar'), full), 0xbf9cf968);
    assert.equal(bucketOf(Buffer.from('foobar'), 1000), 0xbf9cf968 % 1000);
  });

  it('every bucket is within the count and all of them get used', () => {
    for (const buckets of [1, 7, 64]) {
      const hit = new Set<number>();
      for (let i = 0; i < 2000; i++) {
        const b = bucketOf(ipField(`10.0.${i >> 8}.${i & 255}`), buckets);
        assert.ok(Number.isInteger(b) && b >= 0 && b < buckets, `bucket ${b} of ${buckets}`);
        hit.add(b);
      }
      assert.equal(hit.size, buckets);
    }
  });
});

describe('redis layout: records, bitmap, migration', function () {
  this.timeout(30_000);
  let redis: TestRedis;
  let client: Redis;
  let prefix: string;

  before(async () => {
    redis = await TestRedis.start();
    client = new Redis(redis.url);
  });
  after(async () => {
    client.disconnect();
    await redis.close();
  });
  beforeEach(() => {
    prefix = TestRedis.prefix();
  });

  it('pipelinePerNode answers each command with its own reply and throws a command\'s error', async () => {
    const keys = ['a', 'b', 'c', 'd'].map((s) => `${prefix}:${s}`);
    const replies = await pipelinePerNode(client, keys, (k) => k, (pipe, k) => pipe.incrby(k, k.length + keys.indexOf(k)));
    assert.deepEqual(
      keys.map((k) => replies.get(k)),
      keys.map((k, i) => k.length + i),
    );
    await client.set(keys[1] ?? '', 'not a number');
    await assert.rejects(
      pipelinePerNode(client, keys, (k) => k, (pipe, k) => pipe.incr(k)),
      /not an integer/,
    );
    assert.deepEqual(await pipelinePerNode(client, [], (k: string) => k, () => {}), new Map());
  });

  it('the used-bucket bitmap: what markArgs sets in Redis, usedBuckets reads back (below the bucket count)', async () => {
    const key = `${prefix}:used`;
    assert.deepEqual(usedBuckets(await client.getBuffer(key), 64), [], 'no bitmap yet');
    await client.call('BITFIELD', key, ...markArgs([0, 7, 8, 13, 30, 31, 40]));
    const bitmap = await client.getBuffer(key);
    assert.deepEqual(usedBuckets(bitmap, 64), [0, 7, 8, 13, 30, 31, 40]);
    assert.deepEqual(usedBuckets(bitmap, 31), [0, 7, 8, 13, 30], 'bits past the count are ignored');
    assert.deepEqual(usedBuckets(bitmap, 30), [0, 7, 8, 13]);
    assert.deepEqual(usedBuckets(bitmap, 1), [0]);
    assert.deepEqual(usedBuckets(Buffer.alloc(3), 24), []);
    assert.deepEqual(markArgs([]), []);
  });

  it('the first daemon records the bucket count; a later one with another setting keeps it and warns', async () => {
    const warnings: { fields: Record<string, unknown>; msg: string }[] = [];
    const before = Date.now();
    const first = await new Layouts(client, prefix, 16).get('e');
    assert.equal(first.buckets, 16);
    assert.equal(first.environment, 'e');
    assert.equal(first.legacy, false);
    assert.equal(first.learningStart, null);
    assert.equal(first.marked.length, 16);
    assert.equal(first.legacySessions, true, 'a new record: sessions of the first layout are read for a day');
    const m = /^2:16:(\d+)$/.exec((await client.get(envKeys(prefix, 'e').layout)) ?? '');
    assert.ok(m && Number(m[1]) >= before && Number(m[1]) <= Date.now(), 'layout record with its creation time');
    const layouts = new Layouts(client, prefix, 64, (fields, msg) => warnings.push({ fields, msg }));
    const second = await layouts.get('e');
    assert.equal(second.buckets, 16);
    assert.equal(second.marked.length, 16);
    assert.deepEqual(warnings.map((w) => w.fields), [{ environment: 'e', setting: 64, stored: 16 }]);
    assert.match(warnings[0]?.msg ?? '', /known_ip_buckets differs/);
    assert.equal(await layouts.get('e'), second, 'one look-up per environment');
    await new Layouts(client, prefix, 16, (fields, msg) => warnings.push({ fields, msg })).get('e');
    assert.equal(warnings.length, 1, 'no warning when the setting matches');
  });

  it('an unreadable layout record is an error, and the next look-up tries again', async () => {
    const k = envKeys(prefix, 'e');
    const layouts = new Layouts(client, prefix, 8);
    for (const bad of ['garbage', '2:0:1', '3:8:1', '2:x:1', '2:8:', '12:8:1']) {
      await client.set(k.layout, bad);
      await assert.rejects(new Layouts(client, prefix, 8).get('e'), /unreadable known-IP layout record/, bad);
    }
    await client.set(k.layout, 'x'.repeat(100));
    await assert.rejects(layouts.get('e'), (err: Error) => err.message.includes(`"${'x'.repeat(40)}" at ${k.layout}`));
    await client.set(k.layout, '2:8');
    const ok = await layouts.get('e');
    assert.equal(ok.buckets, 8);
    assert.equal(ok.legacySessions, false, 'a record without a creation time is old');
  });

  it('sessions of the first layout are read while its set exists or for a day after the record was made', async () => {
    const host = 'h1';
    const rec = sessionRecord({ id: 'old', host, startedAt: Date.now() });
    const cases: [string, boolean, boolean][] = [
      [`2:8:${Date.now() - 23 * HOUR}`, false, true],
      [`2:8:${Date.now() - 25 * HOUR}`, false, false],
      [`2:8:${Date.now() - 25 * HOUR}`, true, true],
    ];
    for (const [i, [record, legacySet, read]] of cases.entries()) {
      const env = `e${i}`;
      await client.set(envKeys(prefix, env).layout, record);
      if (legacySet) await client.zadd(legacyKeys(prefix, env).known, Date.now(), '192.0.2.1');
      await client.hset(legacyKeys(prefix, env).sessions(host), 'old', JSON.stringify(rec));
      const layouts = new Layouts(client, prefix, 8);
      assert.equal((await layouts.get(env)).legacy, legacySet);
      const loaded = await new RedisBuildSessionStore(client, prefix, layouts).load(env, [host]);
      assert.equal(loaded.has(host), read, record);
      const noLayouts = await new RedisBuildSessionStore(client, prefix).load(env, [host]);
      assert.equal(noLayouts.has(host), false, 'without layouts only the current layout is read');
    }
  });

  it('the learning start: set once, kept, its TTL refreshed; a stored value that is not a number yields the candidate', async () => {
    const layouts = new Layouts(client, prefix, 8);
    const layout = await layouts.get('e');
    const key = envKeys(prefix, 'e').learning;
    assert.equal(await layouts.learning(layout, 1000, 5_000.4), 1000);
    assert.equal(layout.learningStart, 1000);
    let ttl = await client.pttl(key);
    assert.ok(ttl > 4_000 && ttl <= 5_000, `PTTL ${ttl}`);
    assert.equal(await layouts.learning(layout, 2000, 50_000), 1000, 'the first start stays');
    ttl = await client.pttl(key);
    assert.ok(ttl > 40_000 && ttl <= 50_000, `PTTL ${ttl}`);
    await layouts.learning(layout, 2000, 0);
    assert.ok((await client.pttl(key)) <= 1, 'a TTL of at least 1 ms');
    await client.set(key, 'soon');
    assert.equal(await layouts.learning(layout, 3000, 10_000), 3000);
    assert.equal(layout.learningStart, 3000);
  });

  describe('migration of the first layout', () => {
    const env = 'm';
    const now = Date.UTC(2026, 5, 1, 12, 0, 0);
    async function legacy(entries: [ip: string, lastMs: number, first: string | null][]): Promise<void> {
      const lk = legacyKeys(prefix, env);
      for (const [ip, last, first] of entries) {
        await client.zadd(lk.known, last, ip);
        if (first !== null) await client.hset(lk.first, ip, first);
      }
    }
    const bucketValue = async (ip: string, buckets: number): Promise<string | undefined> =>
      (await client.hgetBuffer(envKeys(prefix, env).bucket(bucketOf(ipField(ip), buckets)), ipField(ip)))?.toString();

    it('moves fresh IPs with their first and last minutes, drops expired ones, reports progress, leaves no lock or old key', async () => {
      const last = now - DAY;
      await legacy([
        ['192.0.2.1', last, `${last - 5 * DAY}|tok`],
        ['192.0.2.2', last + 90_000, `${last - 2 * DAY}`],
        ['192.0.2.3', last, null],
        ['192.0.2.4', last, 'garbage'],
        ['2001:db8::9', now - RETENTION, null],
        ['192.0.2.5', now - RETENTION - 1, `${now - 40 * DAY}|x`],
        ['192.0.2.6', now - 60 * DAY, null],
      ]);
      const layouts = new Layouts(client, prefix, 8);
      const layout = await layouts.get(env);
      assert.equal(layout.legacy, true);
      const progress: [number, number][] = [];
      await client.config('RESETSTAT');
      const r = await migrateLegacy(client, prefix, layout, {
        nowMs: now,
        retentionMs: RETENTION,
        owner: 'me',
        progress: (m, e) => progress.push([m, e]),
      });
      assert.deepEqual(r, { moved: 5, expired: 2, ran: true });
      assert.deepEqual(progress, [[5, 2]]);
      assert.equal(await commandCalls(client, 'zrange'), 1, 'a set smaller than a chunk is read once');
      assert.equal(layout.legacy, false);
      const lm = Math.floor(last / MIN);
      assert.equal(await bucketValue('192.0.2.1', 8), packed(lm - 5 * 24 * 60, lm));
      assert.equal(await bucketValue('192.0.2.2', 8), packed(lm - 2 * 24 * 60, lm + 1), 'last-seen to the minute');
      assert.equal(await bucketValue('192.0.2.3', 8), packed(lm, lm), 'no first-seen record: first = last');
      assert.equal(await bucketValue('192.0.2.4', 8), packed(lm, lm));
      const em = Math.floor((now - RETENTION) / MIN);
      assert.equal(await bucketValue('2001:db8::9', 8), packed(em, em), 'exactly at the retention: kept');
      assert.equal(await bucketValue('192.0.2.5', 8), undefined);
      assert.equal(await bucketValue('192.0.2.6', 8), undefined);
      const lk = legacyKeys(prefix, env);
      assert.equal(await client.exists(lk.known, lk.first, envKeys(prefix, env).migrateLock), 0);
      // The moved IPs' buckets are marked used: a sweep finds all five.
      const marked = usedBuckets(await client.getBuffer(envKeys(prefix, env).used), 8);
      const want = [...new Set(['192.0.2.1', '192.0.2.2', '192.0.2.3', '192.0.2.4', '2001:db8::9'].map((ip) => bucketOf(ipField(ip), 8)))].sort((a, b) => a - b);
      assert.deepEqual(marked, want);
      for (const b of want) assert.equal(layout.marked[b], 1);
      assert.equal(layout.marked.filter((x) => x === 1).length, want.length);
      const store = new RedisFirstSeenStore(client, prefix, { buckets: 8 });
      assert.equal(await store.maintain(env, now, RETENTION), 5);
    });

    it('merging keeps the later last-seen, the earlier first-seen and a decision token already in the bucket', async () => {
      const buckets = 8;
      const store = new RedisFirstSeenStore(client, prefix, { buckets });
      const t = now - 2 * DAY;
      // The sharded layout saw .1 two days ago (with a token) and .2 just now.
      await store.decide(env, [{ ip: '192.0.2.1', eventTimeMs: t, token: 'tok-1', claim: null }], opts(t));
      await store.decide(env, [{ ip: '192.0.2.2', eventTimeMs: now, token: '', claim: null }], opts(now));
      await legacy([
        ['192.0.2.1', now - DAY, `${now - 10 * DAY}|old`],
        ['192.0.2.2', now - 3 * DAY, `${now - 3 * DAY}`],
      ]);
      const layout = await new Layouts(client, prefix, buckets).get(env);
      const r = await migrateLegacy(client, prefix, layout, { nowMs: now, retentionMs: RETENTION, owner: 'me' });
      assert.deepEqual(r, { moved: 2, expired: 0, ran: true });
      const m = (ms: number): number => Math.floor(ms / MIN);
      assert.equal(await bucketValue('192.0.2.1', buckets), `${packed(m(now - 10 * DAY), m(now - DAY))}|${t}|tok-1`);
      assert.equal(await bucketValue('192.0.2.2', buckets), packed(m(now - 3 * DAY), m(now)));
    });

    it('a set larger than one chunk moves in several steps, each reported', async () => {
      const ips = Array.from({ length: 2300 }, (_, i) => `10.9.${i >> 8}.${i & 255}`);
      const lk = legacyKeys(prefix, env);
      await client.zadd(lk.known, ...ips.flatMap((ip, i) => [i < 100 ? now - 40 * DAY : now - HOUR, ip]));
      const layout = await new Layouts(client, prefix, 64).get(env);
      const progress: [number, number][] = [];
      const r = await migrateLegacy(client, prefix, layout, { nowMs: now, retentionMs: RETENTION, owner: 'me', progress: (a, b) => progress.push([a, b]) });
      assert.deepEqual(r, { moved: 2200, expired: 100, ran: true });
      assert.ok(progress.length >= 3, `${progress.length} steps`);
      for (let i = 1; i < progress.length; i++) {
        const [m0 = 0, e0 = 0] = progress[i - 1] ?? [];
        const [m1 = 0, e1 = 0] = progress[i] ?? [];
        assert.ok(m1 + e1 > m0 + e0, 'each step moves on');
      }
      assert.deepEqual(progress.at(-1), [2200, 100]);
      assert.equal(await client.exists(lk.known), 0);
      const store = new RedisFirstSeenStore(client, prefix, { buckets: 64 });
      assert.equal(await store.maintain(env, now, RETENTION), 2200);
    });

    it('another daemon holding the lock: nothing is done and its lock stays', async () => {
      await legacy([['192.0.2.1', now - DAY, null]]);
      const k = envKeys(prefix, env);
      await client.set(k.migrateLock, 'other', 'PX', 60_000);
      const layout = await new Layouts(client, prefix, 8).get(env);
      const r = await migrateLegacy(client, prefix, layout, { nowMs: now, retentionMs: RETENTION, owner: 'me' });
      assert.deepEqual(r, { moved: 0, expired: 0, ran: false });
      assert.equal(layout.legacy, true);
      assert.equal(await client.get(k.migrateLock), 'other');
      assert.equal(await client.zcard(legacyKeys(prefix, env).known), 1);
    });

    it('a lock that moved to another daemon meanwhile is not released by this one', async () => {
      await legacy([['192.0.2.1', now - DAY, null]]);
      const k = envKeys(prefix, env);
      const layout = await new Layouts(client, prefix, 8).get(env);
      const r = await migrateLegacy(client, prefix, layout, {
        nowMs: now,
        retentionMs: RETENTION,
        owner: 'me',
        progress: () => void client.set(k.migrateLock, 'other', 'PX', 60_000),
      });
      assert.equal(r.ran, true);
      assert.equal(await client.get(k.migrateLock), 'other');
    });

    it('a first layout already gone by the time the move starts: the leftovers are removed', async () => {
      const lk = legacyKeys(prefix, env);
      await legacy([['192.0.2.1', now - DAY, `${now - DAY}`]]);
      const layout = await new Layouts(client, prefix, 8).get(env);
      assert.equal(layout.legacy, true);
      await client.del(lk.known);
      const r = await migrateLegacy(client, prefix, layout, { nowMs: now, retentionMs: RETENTION, owner: 'me' });
      assert.deepEqual(r, { moved: 0, expired: 0, ran: true });
      assert.equal(layout.legacy, false);
      assert.equal(await client.exists(lk.first, envKeys(prefix, env).migrateLock), 0);
      assert.equal(await client.exists(envKeys(prefix, env).used), 0, 'no bucket marked');
    });

    it('only expired IPs: nothing is written to the buckets, the old keys go', async () => {
      await legacy([['192.0.2.7', now - 40 * DAY, null]]);
      const layout = await new Layouts(client, prefix, 8).get(env);
      await client.config('RESETSTAT');
      const r = await migrateLegacy(client, prefix, layout, { nowMs: now, retentionMs: RETENTION, owner: 'me' });
      assert.deepEqual(r, { moved: 0, expired: 1, ran: true });
      assert.equal(await commandCalls(client, 'bitfield'), 0, 'no bucket to mark');
      assert.deepEqual(await client.keys(`{${prefix}:${env}:ip:*`), []);
      assert.equal(await client.exists(envKeys(prefix, env).used, legacyKeys(prefix, env).known), 0);
    });
  });
});

function opts(nowMs: number) {
  return { nowMs, retentionMs: RETENTION, learningPeriodMs: 0, learningStartCandidate: nowMs, claimTtlMs: 60_000 };
}
