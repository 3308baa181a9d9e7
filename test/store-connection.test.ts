// The Redis connection the stores share: named clients, fast failure while Redis is down
// (no offline queue), reconnection once it is back, one log line per distinct error, the
// redis_connected gauge, and the store factory's choices.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { Redis } from 'ioredis';
import { Metrics } from '../src/ops/metrics.js';
import { silentLogger } from '../src/ops/logger.js';
import { createStores, memoryStores } from '../src/store/stores.js';
import { createRedisClient, waitReady } from '../src/store/redis/connection.js';
import { envKeys } from '../src/store/redis/keys.js';
import type { SessionRecord } from '../src/model/session.js';
import { sessionRecord } from './support/records.js';
import { TestRedis, freePort, spawnRedisServer } from './support/redis.js';
import { TestRedisCluster } from './support/redis-cluster.js';
import { testConfig } from './support/scenarios.js';
import { waitFor } from './support/wait.js';

interface LogLine {
  level: number;
  msg: string;
  err?: string;
  client?: string;
}

function capture(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done): void {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as LogLine);
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), lines };
}

async function gauge(m: Metrics): Promise<number | undefined> {
  return (await m.redisConnected.get()).values[0]?.value;
}

const T0 = Date.UTC(2026, 2, 2);

describe('redis connection', () => {
  it('a client of a down Redis fails commands fast, logs the error once, and reconnects when Redis is back', async function () {
    this.timeout(30_000);
    const port = await freePort();
    const { logger, lines } = capture();
    const client = createRedisClient({ url: `redis://127.0.0.1:${port}`, name: 't1612d-probe', logger });
    let server: Awaited<ReturnType<typeof spawnRedisServer>> | undefined;
    try {
      await assert.rejects(client.ping(), 'no offline queue: a command while down fails at once');
      await assert.rejects(waitReady(client, 50), /redis not ready after 50ms/);
      await waitFor('a redis error log', () => lines.some((l) => l.msg === 'redis error'));
      server = await spawnRedisServer(
        ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
        'redis-server',
      );
      await waitReady(client, 20_000);
      await waitFor('the reconnect log', () => lines.some((l) => l.msg === 'redis connected'));
      const errors = lines.filter((l) => l.msg === 'redis error');
      // However many reconnection attempts failed the same way, one line.
      assert.equal(errors.length, 1, JSON.stringify(errors));
      assert.equal(errors[0]?.client, 't1612d-probe');
      assert.match(errors[0]?.err ?? '', /ECONNREFUSED/);
      assert.equal(lines.find((l) => l.msg === 'redis connected')?.client, 't1612d-probe');
      assert.equal(await client.client('GETNAME'), 't1612d-probe');
      // Ready already: resolves at once.
      await waitReady(client, 1);
    } finally {
      client.disconnect();
      server?.kill('SIGKILL');
    }
  });

  it('names a client t1612d by default and does not log "connected" on a first clean connect', async () => {
    const redis = await TestRedis.start();
    const { logger, lines } = capture();
    const client = createRedisClient({ url: redis.url, logger });
    try {
      await waitReady(client, 10_000);
      assert.equal(await client.client('GETNAME'), 't1612d');
      assert.deepEqual(lines, []);
    } finally {
      client.disconnect();
      await redis.close();
    }
  });

  it('sends the commands of one turn in one write, with every reply in order, and later turns as before', async () => {
    const redis = await TestRedis.start();
    const client = createRedisClient({ url: redis.url, logger: silentLogger() }) as Redis;
    try {
      await waitReady(client, 10_000);
      const socket = client.stream;
      // Count what reaches the socket's own writes (one per command uncorked, one writev corked).
      const writes: number[] = [];
      const origWrite = socket._write.bind(socket);
      const origWritev = socket._writev?.bind(socket);
      socket._write = (chunk, enc, cb) => {
        writes.push(1);
        origWrite(chunk, enc, cb);
      };
      socket._writev = (chunks, cb) => {
        writes.push(chunks.length);
        (origWritev as NonNullable<typeof origWritev>)(chunks, cb);
      };
      const key = `${TestRedis.prefix()}coalesce`;
      const replies = Array.from({ length: 20 }, (_, i) => client.rpush(key, String(i)));
      assert.deepEqual(await Promise.all(replies), Array.from({ length: 20 }, (_, i) => i + 1));
      assert.deepEqual(writes, [20], 'twenty commands, one write');
      writes.length = 0;
      assert.equal(await client.llen(key), 20);
      assert.deepEqual(await client.lrange(key, 0, 2), ['0', '1', '2']);
      assert.deepEqual(writes, [1, 1], 'one command per turn, one write each');
    } finally {
      client.disconnect();
      await redis.close();
    }
  });

  it('refuses to build a client with neither a URL nor cluster nodes', () => {
    assert.throws(() => createRedisClient({ logger: silentLogger() }), /redis_url or redis_cluster_nodes/);
    assert.throws(() => createRedisClient({ clusterNodes: [], logger: silentLogger() }), /redis_url or redis_cluster_nodes/);
  });
});

describe('redis cluster connection', function () {
  this.timeout(60_000);
  let cluster: TestRedisCluster;
  before(async () => {
    cluster = await TestRedisCluster.start();
  });
  after(async () => {
    await cluster?.close();
  });

  it('cluster nodes as host:port or [host]:port: stores on the cluster decide like a single node', async () => {
    // One node is enough to discover the rest; the bracketed spelling is how IPv6 nodes are written.
    const [first = '', ...rest] = cluster.nodes;
    const i = first.lastIndexOf(':');
    const nodes = [`[${first.slice(0, i)}]${first.slice(i)}`, ...rest];
    const m = new Metrics();
    const s = await createStores(testConfig({ redisClusterNodes: nodes, redisPrefix: TestRedis.prefix() }), { logger: silentLogger(), metrics: m });
    try {
      assert.equal(s.kind, 'redis');
      await waitFor('the cluster client to be ready', () => s.redisUp());
      const o = { nowMs: T0, retentionMs: 86_400_000, learningPeriodMs: 0, learningStartCandidate: T0, claimTtlMs: 60_000 };
      const a = await s.firstSeen.decide('e', [{ ip: '203.0.113.1', eventTimeMs: T0, token: 'a', claim: 's' }], o);
      const b = await s.firstSeen.decide('e', [{ ip: '203.0.113.1', eventTimeMs: T0, token: 'b', claim: 's' }], o);
      assert.deepEqual([a.results[0]?.claimed, b.results[0]?.isNew], [true, false]);
    } finally {
      await s.close();
    }
  });
});

describe('store factory', () => {
  it('memory stores when no Redis is configured: connected gauge 1, always up', async () => {
    const m = new Metrics();
    const s = await createStores(testConfig({}), { logger: silentLogger(), metrics: m });
    assert.equal(s.kind, 'memory');
    assert.equal(await gauge(m), 1);
    await s.close();
  });

  it('the in-memory first-seen set holds at least 10,000 IPs whatever known_ip_cache_size says', async () => {
    const s = memoryStores(testConfig({ knownIpCacheSize: 0 }));
    const ips = Array.from({ length: 10_000 }, (_, i) => ({ ip: `10.0.${i >> 8}.${i & 255}`, eventTimeMs: T0, token: `t${i}`, claim: null }));
    const o = { nowMs: T0, retentionMs: 86_400_000, learningPeriodMs: 0, learningStartCandidate: T0, claimTtlMs: 1 };
    await s.firstSeen.decide('e', ips, o);
    const again = await s.firstSeen.decide('e', ips.map((x) => ({ ...x, token: 'again' })), o);
    assert.equal(again.results.filter((r) => r.isNew).length, 0);
  });

  it('redis stores: the connected gauge follows the client; an unreachable Redis is logged once at start-up', async () => {
    const redis = await TestRedis.start();
    const m = new Metrics();
    const s = await createStores(testConfig({ redisUrl: redis.url, redisPrefix: TestRedis.prefix() }), { logger: silentLogger(), metrics: m });
    try {
      assert.equal(s.kind, 'redis');
      assert.equal(await gauge(m), 1);
      const raw = new Redis(redis.url);
      try {
        assert.match(await raw.client('LIST') as string, /name=t1612d-correlator /);
      } finally {
        raw.disconnect();
      }
    } finally {
      await s.close();
      await redis.close();
    }
    await waitFor('the gauge to drop', async () => (await gauge(m)) === 0);

    const port = await freePort();
    const { logger, lines } = capture();
    const m2 = new Metrics();
    const down = await createStores(testConfig({ redisUrl: `redis://127.0.0.1:${port}` }), { logger, metrics: m2 });
    try {
      assert.equal(down.redisUp(), false);
      const warn = lines.filter((l) => l.msg === 'redis not reachable at start; buffering until it is');
      assert.equal(warn.length, 1);
      assert.match(warn[0]?.err ?? '', /redis not ready after/);
      assert.notEqual(await gauge(m2), 1);
    } finally {
      await down.close();
    }
  });
});

describe('redis build-session layout', () => {
  let redis: TestRedis;
  let raw: Redis;
  before(async () => {
    redis = await TestRedis.start();
    raw = new Redis(redis.url);
  });
  after(async () => {
    raw.disconnect();
    await redis.close();
  });

  function rec(id: string, host: string): SessionRecord {
    return sessionRecord({ id, host, startedAt: T0, pids: [1], engine: 'docker' });
  }

  it('one hash per host, the remote accept in field ~remote, host names cut at 253 characters; foreign records are ignored', async () => {
    const prefix = TestRedis.prefix();
    const s = await createStores(testConfig({ redisUrl: redis.url, redisPrefix: prefix }), { logger: silentLogger(), metrics: new Metrics() });
    try {
      const long = `${'h'.repeat(260)}`;
      await s.sessions.write('e', [{ host: long, upsert: [rec('a', long)], remove: [], remote: { peer: '198.51.100.1:1', timeMs: T0 } }], 60_000);
      const key = envKeys(prefix, 'e').sessions('h'.repeat(253));
      assert.equal(envKeys(prefix, 'e').sessions(long), key);
      assert.deepEqual(Object.keys(await raw.hgetall(key)).sort(), ['a', '~remote']);
      assert.equal((await s.sessions.load('e', [long])).get(long)?.sessions[0]?.id, 'a');
      // A record whose host is not the key's host (written by something else) is not loaded.
      const k = envKeys(prefix, 'e').sessions('h1');
      await raw.hset(k, 'x', JSON.stringify(rec('x', 'h2')), 'y', JSON.stringify(rec('y', 'h1')), 'z', 'not json');
      const got = await s.sessions.load('e', ['h1']);
      assert.deepEqual(got.get('h1')?.sessions.map((r) => r.id), ['y']);
      await raw.hset(envKeys(prefix, 'e').sessions('h3'), 'x', JSON.stringify(rec('x', 'h2')));
      assert.equal((await s.sessions.load('e', ['h3'])).has('h3'), false, 'nothing usable: the host is absent');
    } finally {
      await s.close();
    }
  });

  it('a Redis error on write or load is thrown, not swallowed', async () => {
    const prefix = TestRedis.prefix();
    const s = await createStores(testConfig({ redisUrl: redis.url, redisPrefix: prefix }), { logger: silentLogger(), metrics: new Metrics() });
    try {
      await raw.set(envKeys(prefix, 'e').sessions('h1'), 'a string, not a hash');
      await assert.rejects(s.sessions.write('e', [{ host: 'h1', upsert: [rec('a', 'h1')], remove: [] }], 60_000), /WRONGTYPE/);
      await assert.rejects(s.sessions.write('e', [{ host: 'h1', upsert: [], remove: ['a'] }], 60_000), /WRONGTYPE/);
      await assert.rejects(s.sessions.load('e', ['h1']), /WRONGTYPE/);
    } finally {
      await s.close();
    }
  });

  it('an empty-token claim is never "held by the caller"', async () => {
    for (const s of [memoryStores(testConfig({})), await createStores(testConfig({ redisUrl: redis.url, redisPrefix: TestRedis.prefix() }), { logger: silentLogger(), metrics: new Metrics() })]) {
      try {
        assert.equal(await s.firstSeen.claim('e', 's', '203.0.113.1', '', 60_000), true);
        assert.equal(await s.firstSeen.claim('e', 's', '203.0.113.1', '', 60_000), false, s.kind);
      } finally {
        await s.close();
      }
    }
  });
});
