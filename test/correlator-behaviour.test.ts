// The correlator's observable behaviour beyond the DETECTION.md scenarios: the local known-IP
// cache and its last-seen refreshes, destinations that are never decided, the host name
// fallback, coalesced bursts, alert ids and the write-ahead-log callback, the learning
// period's clock, the key lifetimes in Redis, the log lines and metrics an operator sees,
// and closing before every event is decided.
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Correlator } from '../src/detect/correlator.js';
import type { Config } from '../src/config/config.js';
import type { Alert } from '../src/model/alert.js';
import { TAG_BUILD, TAG_EGRESS, eventTimeMs, type FalcoEvent } from '../src/model/event.js';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { envKeys } from '../src/store/redis/keys.js';
import { createStores, type Stores } from '../src/store/stores.js';
import { isKnown } from './support/known.js';
import { TestRedis, freePort } from './support/redis.js';
import { CollectingSink, TestClock, loadEvents, testConfig, withDestination } from './support/scenarios.js';
import { waitFor } from './support/wait.js';

const events = loadEvents('buildkit-run-curl.jsonl');
const buildEvents = events.filter((e) => e.tags.includes(TAG_BUILD));
const stepEgress = events.at(-1) as FalcoEvent;
/** An egress from a host process with no build anywhere near it. */
const hostEgress = loadEvents('no-build-host-process.jsonl').find((e) => e.tags.includes(TAG_EGRESS)) as FalcoEvent;
const T = eventTimeMs(stepEgress);
/**
 * A host process whose parent is the `docker build` CLI of buildkit-run-curl (pid 24001), half a
 * second into that build: nothing but the build's own signals ties it to the build.
 */
const childOfCli = withFields(shifted(hostEgress, 500), { 'proc.ppid': '24001', 'fd.sip': '203.0.113.80' });
const UUID_V8 = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const MINUTE = 60_000;

/** A copy of an event moved in time by `ms`. */
function shifted(ev: FalcoEvent, ms: number): FalcoEvent {
  return { ...ev, timeNs: ev.timeNs + BigInt(ms) * 1_000_000n };
}

/** A copy of an event with other fields set. */
function withFields(ev: FalcoEvent, fields: Record<string, string | null>): FalcoEvent {
  return { ...ev, fields: { ...ev.fields, ...fields } };
}

interface Run {
  c: Correlator;
  cfg: Config;
  sink: CollectingSink;
  metrics: Metrics;
  stores: Stores;
  clock: TestClock;
  lines: Record<string, unknown>[];
  /** Tokens handed to onAlerted. */
  alerted: string[];
}

describe('correlator behaviour', () => {
  let redis: TestRedis;
  const open: Run[] = [];

  before(async () => {
    redis = await TestRedis.start();
  });
  after(async () => {
    await redis.close();
  });
  afterEach(async () => {
    for (const r of open.splice(0)) {
      await r.c.close();
      await r.stores.close();
    }
  });

  /** A correlator on memory stores (or Redis with `redis: true`), its clock at the step egress. */
  async function start(over: Partial<Config> = {}, opts: { redis?: boolean; prefix?: string; sink?: CollectingSink } = {}): Promise<Run> {
    const cfg = testConfig({
      allowCidrs: ['192.0.2.0/24'],
      ...(opts.redis ? { redisUrl: redis.url, redisPrefix: opts.prefix ?? TestRedis.prefix() } : {}),
      ...over,
    });
    const clock = new TestClock(T);
    const metrics = new Metrics();
    const stores = await createStores(cfg, { logger: silentLogger(), metrics, now: clock.now });
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
    const sink = opts.sink ?? new CollectingSink();
    const alerted: string[] = [];
    const c = new Correlator(cfg, { stores, sink, metrics, logger, now: clock.now, onAlerted: (t) => alerted.push(t) });
    const r = { c, cfg, sink, metrics, stores, clock, lines, alerted };
    open.push(r);
    return r;
  }

  async function feed(r: Run, evs: readonly FalcoEvent[]): Promise<void> {
    for (const ev of evs) await r.c.handle(ev);
    await r.c.flush();
  }

  function ips(r: Run): string[] {
    return r.sink.alerts.map((a) => a.destination.ip).sort();
  }

  function logged(r: Run, msg: string): Record<string, unknown>[] {
    return r.lines.filter((l) => l['msg'] === msg);
  }

  describe('the known-IP cache', () => {
    it('an IP decided once is answered from the cache: nothing queued, no second decision', async () => {
      const r = await start();
      await feed(r, [withDestination(hostEgress, '198.51.100.1')]);
      assert.equal(r.c.handle(withDestination(hostEgress, '198.51.100.1')), undefined);
      assert.equal(r.c.backlog, 0);
      // An IP not decided yet is queued.
      void r.c.handle(withDestination(hostEgress, '198.51.100.2'));
      assert.equal(r.c.backlog, 1);
      await r.c.flush();
    });

    it('with known_ip_cache_size 0 every event goes to the store', async () => {
      const r = await start({ knownIpCacheSize: 0 });
      await feed(r, [withDestination(hostEgress, '198.51.100.1')]);
      void r.c.handle(withDestination(hostEgress, '198.51.100.1'));
      assert.equal(r.c.backlog, 1);
      await r.c.flush();
    });

    it('keeps known_ip_cache_size IPs, the least recently decided one leaves first', async () => {
      const r = await start({ knownIpCacheSize: 2 });
      for (const ip of ['198.51.100.1', '198.51.100.2', '198.51.100.3']) await feed(r, [withDestination(hostEgress, ip)]);
      for (const [ip, queued] of [
        ['198.51.100.2', 0],
        ['198.51.100.3', 0],
        ['198.51.100.1', 1],
      ] as const) {
        void r.c.handle(withDestination(hostEgress, ip));
        assert.equal(r.c.backlog, queued, ip);
      }
      await r.c.flush();
    });

    it('an IP decided in its IPv4-mapped IPv6 spelling is cached under its canonical form', async () => {
      const r = await start();
      await feed(r, [withDestination(hostEgress, '::ffff:198.51.100.7')]);
      void r.c.handle(withDestination(hostEgress, '198.51.100.7'));
      assert.equal(r.c.backlog, 0);
      void r.c.handle(withDestination(hostEgress, '::ffff:198.51.100.7'));
      assert.equal(r.c.backlog, 0);
    });

    it('a cached IP is trusted for the retention, then decided again', async () => {
      const retention = 60_000;
      const r = await start({ firstSeenRetentionMs: retention });
      await feed(r, [withDestination(hostEgress, '198.51.100.1')]);
      r.clock.ms = T + retention - 1;
      // Settled on arrival exactly while it is trusted: no write-ahead log needed (Intake).
      assert.equal(r.c.needsLog(withDestination(hostEgress, '198.51.100.1')), false);
      assert.equal(r.c.needsLog(withDestination(hostEgress, '198.51.100.2')), true);
      assert.equal(r.c.needsLog(buildEvents[0] as FalcoEvent), true);
      void r.c.handle(withDestination(hostEgress, '198.51.100.1'));
      assert.equal(r.c.backlog, 0, 'still trusted');
      await r.c.flush();
      const r2 = await start({ firstSeenRetentionMs: retention });
      await feed(r2, [withDestination(hostEgress, '198.51.100.1')]);
      r2.clock.ms = T + retention;
      assert.equal(r2.c.needsLog(withDestination(hostEgress, '198.51.100.1')), true);
      void r2.c.handle(withDestination(hostEgress, '198.51.100.1'));
      assert.equal(r2.c.backlog, 1, 'decided again');
      await r2.c.flush();
    });

    it('a cached IP seen again refreshes its last-seen in the store after a quarter of the retention, not before', async () => {
      const retention = 60_000;
      for (const [after, refreshed] of [
        [retention / 4 - 1, false],
        [retention / 4, true],
      ] as const) {
        const r = await start({ firstSeenRetentionMs: retention });
        await feed(r, [withDestination(hostEgress, '198.51.100.1')]);
        r.clock.ms = T + after;
        await feed(r, [withDestination(hostEgress, '198.51.100.1')]);
        assert.equal(r.c.backlog, 0);
        // Known just past a retention after the first decision only if the refresh reached the store.
        assert.equal(await isKnown(r.stores, r.cfg.environment, '198.51.100.1', T + retention + 10, retention), refreshed, `after ${after} ms`);
      }
    });

    it('refreshes at most every 10 minutes however long the retention', async () => {
      const r = await start({ firstSeenRetentionMs: 24 * 60 * MINUTE });
      await feed(r, [withDestination(hostEgress, '198.51.100.1')]);
      r.clock.ms = T + 10 * MINUTE;
      void r.c.handle(withDestination(hostEgress, '198.51.100.1'));
      await r.c.flush();
      const r2 = await start({ firstSeenRetentionMs: 24 * 60 * MINUTE });
      await feed(r2, [withDestination(hostEgress, '198.51.100.1')]);
      r2.clock.ms = T + 10 * MINUTE - 1;
      void r2.c.handle(withDestination(hostEgress, '198.51.100.1'));
      await r2.c.flush();
      // The memory store's last-seen: known a day after the refresh, not a day after the first.
      const day = 24 * 60 * MINUTE;
      assert.equal(await isKnown(r.stores, r.cfg.environment, '198.51.100.1', T + day + 5 * MINUTE, day), true);
      assert.equal(await isKnown(r2.stores, r2.cfg.environment, '198.51.100.1', T + day + 5 * MINUTE, day), false);
    });
  });

  describe('destinations that are never decided', () => {
    it('loopback, link-local and multicast, allow-listed networks and allow-listed domains: nothing queued, nothing recorded', async () => {
      const r = await start({ allowCidrs: ['198.51.100.0/24'], allowDomains: ['mirror.example.com'] });
      for (const ev of [
        withDestination(stepEgress, '127.0.0.1'),
        withDestination(stepEgress, '169.254.169.254'),
        withDestination(stepEgress, '224.0.0.251'),
        withDestination(stepEgress, '198.51.100.9'),
        withFields(withDestination(stepEgress, '203.0.113.70'), { 'fd.sip.name': 'eu.mirror.example.com' }),
      ]) {
        assert.equal(r.c.handle(ev), undefined);
        assert.equal(r.c.backlog, 0, String(ev.fields['fd.sip']));
      }
      await r.c.flush();
      assert.equal(await isKnown(r.stores, r.cfg.environment, '203.0.113.70', T, r.cfg.firstSeenRetentionMs), false);
      // A name outside the allow-list is decided.
      void r.c.handle(withFields(withDestination(stepEgress, '203.0.113.71'), { 'fd.sip.name': 'example.org' }));
      assert.equal(r.c.backlog, 1);
    });

    it('an event without tags, or with neither tag, is ignored', async () => {
      const r = await start();
      assert.equal(r.c.handle({ ...stepEgress, tags: undefined as unknown as string[] }), undefined); // a malformed event from a source
      assert.equal(r.c.handle({ ...stepEgress, tags: ['other'] }), undefined);
      // Nothing to keep in the write-ahead log for them, whatever their destination.
      assert.equal(r.c.needsLog({ ...stepEgress, tags: undefined as unknown as string[] }), false);
      assert.equal(r.c.needsLog(withDestination({ ...stepEgress, tags: ['other'] }, '198.51.100.9')), false);
      assert.equal(r.c.backlog, 0);
      await r.c.flush();
      assert.equal(r.lines.length, 0);
    });

    it('an event it cannot use is logged as a warning with its rule, never thrown', async () => {
      const r = await start();
      // A malformed event from a source: no fields at all.
      const bad = { ...stepEgress, fields: undefined as unknown as FalcoEvent['fields'] };
      assert.doesNotThrow(() => r.c.handle(bad));
      const warn = logged(r, 'correlator could not use event');
      assert.equal(warn.length, 1);
      assert.equal(warn[0]?.['rule'], stepEgress.rule);
      assert.equal(warn[0]?.['level'], 40);
      assert.ok(warn[0]?.['err']);
    });
  });

  describe('hosts and bursts', () => {
    it('events without a host name are the configured host\'s', async () => {
      const r = await start({ hostname: 'build-7' });
      await feed(r, [...buildEvents, stepEgress].map((e) => ({ ...e, hostname: '' })));
      assert.deepEqual(ips(r), ['203.0.113.9']);
      assert.equal(r.sink.alerts[0]?.hostname, 'build-7');
    });

    it('a burst to one unknown IP from a host without builds queues one event once the host is loaded', async () => {
      const r = await start();
      // Not loaded yet: every event is queued (a build signal may still come with the load).
      void r.c.handle(withDestination(hostEgress, '198.51.100.20'));
      void r.c.handle(withDestination(hostEgress, '198.51.100.20'));
      assert.equal(r.c.backlog, 2);
      await r.c.flush();
      void r.c.handle(withDestination(hostEgress, '198.51.100.21'));
      void r.c.handle(withDestination(hostEgress, '198.51.100.21'));
      void r.c.handle(withDestination(hostEgress, '198.51.100.22'));
      assert.equal(r.c.backlog, 2, 'the second event to .21 is coalesced');
      await r.c.flush();
    });

    it('a burst from a host with a build open is not coalesced: each event may be the build\'s', async () => {
      const r = await start();
      await feed(r, buildEvents);
      void r.c.handle(withDestination(stepEgress, '203.0.113.20'));
      void r.c.handle(withDestination(stepEgress, '203.0.113.20'));
      assert.equal(r.c.backlog, 2);
      await r.c.flush();
      assert.deepEqual(ips(r), ['203.0.113.20']);
    });

    it('forgets which hosts it loaded once it has loaded four times max_sessions hosts', async () => {
      const r = await start({ maxSessions: 2 });
      const from = (h: number, ip: string): FalcoEvent => withDestination({ ...hostEgress, hostname: `h${h}` }, ip);
      for (let h = 1; h <= 8; h++) await feed(r, [from(h, `198.51.100.${h}`)]);
      // h1 is still loaded: a burst from it is coalesced.
      void r.c.handle(from(1, '198.51.100.30'));
      void r.c.handle(from(1, '198.51.100.30'));
      assert.equal(r.c.backlog, 1);
      await r.c.flush();
      // A ninth host: the loaded set starts over, h1 must be loaded again.
      await feed(r, [from(9, '198.51.100.9')]);
      void r.c.handle(from(1, '198.51.100.31'));
      void r.c.handle(from(1, '198.51.100.31'));
      assert.equal(r.c.backlog, 2);
      await r.c.flush();
    });
  });

  describe('alerts', () => {
    it('an alert\'s id is a UUID named by its decision: the same token gives the same id, another token another', async () => {
      const a = await start();
      await feed(a, buildEvents);
      await a.c.handle(stepEgress, 'wal:1');
      await a.c.flush();
      const b = await start();
      await feed(b, buildEvents);
      await b.c.handle(stepEgress, 'wal:1');
      await b.c.flush();
      const c = await start();
      await feed(c, buildEvents);
      await c.c.handle(stepEgress, 'wal:2');
      await c.c.flush();
      const [ida, idb, idc] = [a, b, c].map((r) => r.sink.alerts[0]?.id);
      assert.match(ida ?? '', UUID_V8);
      assert.match(idc ?? '', UUID_V8);
      assert.equal(ida, idb);
      assert.notEqual(ida, idc);
      assert.deepEqual(a.alerted, ['wal:1']);
      assert.deepEqual(c.alerted, ['wal:2']);
    });

    it('ids differ per session and per IP, and events without a token get distinct ones', async () => {
      const r = await start();
      await feed(r, buildEvents);
      await feed(r, [withDestination(stepEgress, '203.0.113.31'), withDestination(stepEgress, '203.0.113.32')]);
      const ids = r.sink.alerts.map((a) => a.id);
      assert.equal(ids.length, 2);
      for (const id of ids) assert.match(id, UUID_V8);
      assert.notEqual(ids[0], ids[1]);
      assert.equal(r.alerted.length, 2);
      assert.notEqual(r.alerted[0], r.alerted[1], 'each event has its own token');
    });

    it('a decision replayed with its token against the same Redis raises the alert again under the same id', async () => {
      const prefix = TestRedis.prefix();
      const a = await start({}, { redis: true, prefix });
      await feed(a, buildEvents);
      await a.c.handle(stepEgress, 'wal:7');
      await a.c.flush();
      const b = await start({}, { redis: true, prefix });
      await feed(b, buildEvents);
      await b.c.handle(stepEgress, 'wal:7');
      await b.c.flush();
      assert.equal(a.sink.alerts.length, 1);
      assert.deepEqual(b.sink.alerts.map((x) => x.id), a.sink.alerts.map((x) => x.id));
      // Without the token it is an ordinary repeat: known, no alert.
      const c = await start({}, { redis: true, prefix });
      await feed(c, [...buildEvents, stepEgress]);
      assert.equal(c.sink.alerts.length, 0);
    });

    it('onAlerted is told only once the sink took the alert', async () => {
      let refuse = true;
      const sink = new CollectingSink();
      const enqueue = sink.enqueue.bind(sink);
      sink.enqueue = async (al: Alert) => {
        if (refuse) throw new Error('outbox unavailable');
        await enqueue(al);
      };
      const r = await start({}, { sink });
      await feed(r, buildEvents);
      void r.c.handle(stepEgress, 'wal:9');
      await waitFor('the refusal', () => logged(r, 'alert sink refused an alert; will retry').length === 1);
      assert.deepEqual(r.alerted, []);
      refuse = false;
      await r.c.flush();
      assert.equal(sink.alerts.length, 1);
      assert.deepEqual(r.alerted, [], 'a redelivered alert is not reported');
    });

    it('each alert is counted by severity and logged with its id, session, IP, attribution and host', async () => {
      const r = await start();
      await feed(r, [...buildEvents, stepEgress]);
      const al = r.sink.alerts[0];
      assert.ok(al);
      assert.equal(await r.metrics.value('t1612d_alerts_total', { severity: 'high' }), 1);
      const line = logged(r, 'T1612 alert');
      assert.equal(line.length, 1);
      assert.deepEqual(
        { ...line[0], time: undefined, pid: undefined, hostname: undefined },
        {
          level: 30,
          time: undefined,
          pid: undefined,
          hostname: undefined,
          alert: al.id,
          severity: 'high',
          session: al.build.session_id,
          ip: '203.0.113.9',
          attribution: 'lineage',
          host: 'node-a',
          msg: 'T1612 alert',
        },
      );
      assert.equal(r.sink.alerts[0]?.time, new Date(T).toISOString(), 'stamped with the wall clock');
    });

    it('a new IP from an expected build is learnt and logged at debug, never alerted', async () => {
      const r = await start();
      const expected = buildEvents.map((e) => ({ ...e, tags: [...e.tags, 't1612_expected'] }));
      await feed(r, [...expected, stepEgress]);
      assert.equal(r.sink.alerts.length, 0);
      assert.equal(await r.metrics.value('t1612d_alerts_total'), 0);
      const line = logged(r, 'new IP from an expected build');
      assert.equal(line.length, 1);
      assert.equal(line[0]?.['level'], 20);
      assert.equal(line[0]?.['ip'], '203.0.113.9');
      assert.equal(line[0]?.['host'], 'node-a');
      assert.equal(typeof line[0]?.['session'], 'string');
      assert.equal(await isKnown(r.stores, r.cfg.environment, '203.0.113.9', T, r.cfg.firstSeenRetentionMs), true);
    });
  });

  describe('the learning period', () => {
    it('starts at the first event\'s own time, not when the daemon decides it', async () => {
      const hour = 60 * MINUTE;
      const r = await start({ learningPeriodMs: hour });
      // Decided two hours late (a replay): the environment's first event is from T.
      r.clock.ms = T + 2 * hour;
      await feed(r, [withDestination(hostEgress, '198.51.100.40')]);
      const later = hour + MINUTE;
      await feed(r, [...buildEvents.map((e) => shifted(e, later)), withDestination(stepEgress, '203.0.113.41', later)]);
      assert.deepEqual(ips(r), ['203.0.113.41']);
    });

    it('a Redis that lost its data does not start learning over', async () => {
      const hour = 60 * MINUTE;
      const prefix = TestRedis.prefix();
      const r = await start({ learningPeriodMs: hour }, { redis: true, prefix });
      await feed(r, [withDestination(hostEgress, '198.51.100.50')]);
      const client = redis.client();
      try {
        const keys = await client.keys(`*${prefix}*`);
        assert.ok(keys.length > 0);
        await client.del(...keys);
      } finally {
        client.disconnect();
      }
      const later = hour + MINUTE;
      r.clock.ms = T + later;
      await feed(r, [...buildEvents.map((e) => shifted(e, later)), withDestination(stepEgress, '203.0.113.51', later)]);
      assert.deepEqual(ips(r), ['203.0.113.51']);
    });
  });

  describe('key lifetimes in Redis', () => {
    it('a session lives the build window and skew (plus a minute); a dedupe claim twice the window and skew (plus a minute)', async () => {
      const prefix = TestRedis.prefix();
      const skew = 90_000;
      const r = await start({ buildWindowMs: 10 * MINUTE, clockSkewMs: skew }, { redis: true, prefix });
      await feed(r, [...buildEvents, stepEgress]);
      assert.equal(r.sink.alerts.length, 1);
      const client = redis.client();
      try {
        const k = envKeys(prefix, r.cfg.environment);
        const sessionTtl = await client.pttl(k.sessions('node-a'));
        const lifetime = 10 * MINUTE + skew;
        assert.ok(sessionTtl > lifetime && sessionTtl <= lifetime + MINUTE, `session TTL ${sessionTtl}`);
        const [claim] = await client.keys(`*${prefix}*alerted*`);
        assert.ok(claim);
        const claimTtl = await client.pttl(claim);
        const twice = 2 * 10 * MINUTE + skew;
        assert.ok(claimTtl > twice && claimTtl <= twice + MINUTE, `claim TTL ${claimTtl}`);
      } finally {
        client.disconnect();
      }
    });
  });

  describe('closing', () => {
    it('closing with everything decided drops nothing and warns about nothing', async () => {
      const r = await start();
      await feed(r, [...buildEvents, stepEgress]);
      await r.c.close();
      assert.equal(await r.metrics.value('t1612d_dropped_events_total'), 0);
      assert.equal(logged(r, 'correlator closed before every event was decided').length, 0);
    });

    it('closing while the store does not answer: the undecided events are counted as dropped and logged', async () => {
      const own = await TestRedis.start();
      const admin = own.client();
      admin.on('error', () => undefined);
      try {
        const cfg = testConfig({ redisUrl: own.url, redisPrefix: TestRedis.prefix(), shutdownTimeoutMs: 300 });
        const metrics = new Metrics();
        const stores = await createStores(cfg, { logger: silentLogger(), metrics });
        const lines: Record<string, unknown>[] = [];
        const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
        const c = new Correlator(cfg, { stores, sink: new CollectingSink(), metrics, logger });
        try {
          await admin.call('CLIENT', 'PAUSE', '3000', 'WRITE');
          for (let i = 1; i <= 3; i++) void c.handle(withDestination(hostEgress, `198.51.100.${60 + i}`));
          await c.close();
          assert.equal(await metrics.value('t1612d_dropped_events_total', { reason: 'shutdown' }), 3);
          const warn = lines.filter((l) => l['msg'] === 'correlator closed before every event was decided');
          assert.equal(warn.length, 1);
          assert.equal(warn[0]?.['undecided'], 3);
          assert.equal(warn[0]?.['undelivered'], 0);
          assert.equal(warn[0]?.['level'], 40);
        } finally {
          await admin.call('CLIENT', 'UNPAUSE');
          await stores.close();
        }
      } finally {
        admin.disconnect();
        await own.close();
      }
    });
  });
  describe('late build signals', () => {
    it('a new IP decided before the build signal that explains it alerts when the signal arrives within the skew', async () => {
      const r = await start();
      await feed(r, [childOfCli]);
      assert.equal(r.sink.alerts.length, 0);
      await feed(r, buildEvents);
      assert.deepEqual(ips(r), ['203.0.113.80']);
      const al = r.sink.alerts[0];
      assert.equal(al?.connection.attribution, 'lineage');
      assert.equal(al?.severity, 'high');
      assert.equal(al?.build.trigger.cmdline, 'docker build -t webapp:1.4 .');
      assert.match(al?.id ?? '', UUID_V8);
      assert.equal(r.alerted.length, 1);
      assert.equal(await r.metrics.value('t1612d_alerts_total', { severity: 'high' }), 1);
      // Taken: a later build signal does not raise it again.
      await feed(r, buildEvents.map((e) => shifted(e, 1_000)));
      assert.equal(r.sink.alerts.length, 1);
    });

    it('the build signal arriving later than the skew (wall clock) finds nothing to explain', async () => {
      const r = await start({ clockSkewMs: 30_000 });
      await feed(r, [childOfCli]);
      r.clock.ms = T + 30_001;
      await feed(r, buildEvents);
      assert.equal(r.sink.alerts.length, 0);
    });

    it('an IP that was already known, or seen during learning, is not kept for a late build signal', async () => {
      const known = await start();
      await feed(known, [withDestination(hostEgress, '203.0.113.80')]);
      await feed(known, [childOfCli]);
      await feed(known, buildEvents);
      assert.equal(known.sink.alerts.length, 0);
      const learning = await start({ learningPeriodMs: 60 * MINUTE });
      await feed(learning, [childOfCli]);
      await feed(learning, buildEvents);
      assert.equal(learning.sink.alerts.length, 0);
    });

    it('with window-only attribution any late build on the host takes the host\'s orphans', async () => {
      const r = await start({ attributeWindowOnly: true });
      // No pid, cgroup, container or image ties this one to the build: only the window does.
      await feed(r, [withDestination(shifted(hostEgress, 500), '203.0.113.81')]);
      await feed(r, buildEvents);
      assert.deepEqual(ips(r), ['203.0.113.81']);
      assert.equal(r.sink.alerts[0]?.connection.attribution, 'window');
      assert.equal(r.sink.alerts[0]?.severity, 'medium');
    });

    it('without window-only attribution an orphan nothing ties to the build stays unexplained', async () => {
      const r = await start();
      await feed(r, [withDestination(shifted(hostEgress, 500), '203.0.113.81')]);
      await feed(r, buildEvents);
      assert.equal(r.sink.alerts.length, 0);
    });

    it('the same egress decided by two daemons before its build signal: one alert between them', async () => {
      const prefix = TestRedis.prefix();
      const a = await start({}, { redis: true, prefix });
      const b = await start({}, { redis: true, prefix });
      // Both decide a copy of the event, neither knows the build yet: only one finds it new.
      await a.c.handle(childOfCli, 'wal:a');
      await b.c.handle(childOfCli, 'wal:b');
      await Promise.all([a.c.flush(), b.c.flush()]);
      for (const ev of buildEvents) {
        await a.c.handle(ev);
        await b.c.handle(ev);
      }
      await Promise.all([a.c.flush(), b.c.flush()]);
      assert.equal(a.sink.alerts.length + b.sink.alerts.length, 1);
    });

    it('a build signal that lands while the decision is in flight still explains the egress', async () => {
      const prefix = TestRedis.prefix();
      const r = await start({}, { redis: true, prefix });
      const admin = redis.client();
      admin.on('error', () => undefined);
      try {
        // Load the host first, so the round below only decides.
        await feed(r, [withDestination(hostEgress, '198.51.100.90')]);
        await admin.call('CLIENT', 'PAUSE', '2000', 'WRITE');
        void r.c.handle(childOfCli);
        await new Promise((resolve) => setTimeout(resolve, 100));
        for (const ev of buildEvents) void r.c.handle(ev);
        await admin.call('CLIENT', 'UNPAUSE');
        await r.c.flush();
        assert.deepEqual(ips(r), ['203.0.113.80']);
      } finally {
        await admin.call('CLIENT', 'UNPAUSE').catch(() => undefined);
        admin.disconnect();
      }
    });

    it('an egress from a container of a bare image id is no build step without a build: recorded, no alert', async () => {
      const r = await start();
      const ev = withFields(withDestination(hostEgress, '203.0.113.82'), {
        'container.id': 'abcdef012345',
        'container.image.repository': 'sha256:0123456789abcdef',
        'proc.pname': 'sh',
      });
      await feed(r, [ev]);
      assert.equal(r.sink.alerts.length, 0);
      assert.equal(await isKnown(r.stores, r.cfg.environment, '203.0.113.82', T, r.cfg.firstSeenRetentionMs), true);
    });
  });

  describe('more on events and the learning period', () => {
    it('an event tagged neither build nor egress opens no build', async () => {
      const r = await start();
      await feed(r, buildEvents.map((e) => ({ ...e, tags: ['other'] })));
      await feed(r, [stepEgress]);
      // The step proves itself (its own session), but no CLI build was opened: no trigger command.
      for (const al of r.sink.alerts) assert.notEqual(al.build.trigger.cmdline, 'docker build -t webapp:1.4 .');
    });

    it('a null event is logged, never thrown', async () => {
      const r = await start();
      assert.doesNotThrow(() => r.c.handle(null as unknown as FalcoEvent)); // what a broken source could hand in
      assert.equal(logged(r, 'correlator could not use event').length, 1);
    });

    it('learning starts at the earliest event of the first batch', async () => {
      const hour = 60 * MINUTE;
      const r = await start({ learningPeriodMs: hour });
      // Handed in together: one batch, events half an hour apart.
      void r.c.handle(withDestination(hostEgress, '198.51.100.41'));
      void r.c.handle(withDestination(hostEgress, '198.51.100.42', 30 * MINUTE));
      await r.c.flush();
      const later = hour + MINUTE;
      await feed(r, [...buildEvents.map((e) => shifted(e, later)), withDestination(stepEgress, '203.0.113.43', later)]);
      assert.deepEqual(ips(r), ['203.0.113.43']);
    });

    it('learning starts with the first egress decided, not with the build signals before it', async () => {
      const later = 61 * MINUTE;
      const r = await start({ learningPeriodMs: 60 * MINUTE });
      await feed(r, buildEvents.map((e) => shifted(e, later)));
      await feed(r, [withDestination(stepEgress, '203.0.113.44', later)]);
      assert.equal(r.sink.alerts.length, 0, 'the first egress is inside its own learning period');
    });

    it('the known-IP gauge is counted after the first round trip, then only by the periodic maintenance', async () => {
      const r = await start();
      await feed(r, [withDestination(hostEgress, '198.51.100.71')]);
      await waitFor('t1612d_known_ips = 1', async () => (await r.metrics.value('t1612d_known_ips')) === 1);
      await feed(r, [withDestination(hostEgress, '198.51.100.72'), withDestination(hostEgress, '198.51.100.73')]);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(await r.metrics.value('t1612d_known_ips'), 1, 'not recounted on every round');
    });

    it('build signals are written to Redis without anyone waiting for them', async () => {
      const prefix = TestRedis.prefix();
      const r = await start({}, { redis: true, prefix });
      const client = redis.client();
      try {
        const key = envKeys(prefix, r.cfg.environment).sessions('node-a');
        for (const ev of buildEvents) void r.c.handle(ev);
        await waitFor('the session written', async () => (await client.hlen(key)) > 0, 5_000);
        const stored = async (): Promise<number[]> =>
          Object.entries(await client.hgetall(key))
            .filter(([f]) => !f.startsWith('~'))
            .map(([, v]) => (JSON.parse(v) as { lastActivity: number }).lastActivity);
        const first = Math.max(...(await stored()));
        // More activity of the same build, on a host already loaded: written too.
        void r.c.handle(shifted(buildEvents.at(-1) as FalcoEvent, MINUTE));
        await waitFor('the activity written', async () => Math.max(...(await stored())) > first, 5_000);
      } finally {
        client.disconnect();
      }
    });

    it('a session write Redis refuses is kept and written once it accepts again', async () => {
      const own = await TestRedis.start();
      const admin = own.client();
      admin.on('error', () => undefined);
      const prefix = TestRedis.prefix();
      const cfg = testConfig({ redisUrl: own.url, redisPrefix: prefix, allowCidrs: ['192.0.2.0/24'] });
      const metrics = new Metrics();
      const stores = await createStores(cfg, { logger: silentLogger(), metrics });
      const c = new Correlator(cfg, { stores, sink: new CollectingSink(), metrics, logger: silentLogger() });
      try {
        // Every write fails (out of memory) while reads still work.
        await admin.config('SET', 'maxmemory-policy', 'noeviction');
        await admin.config('SET', 'maxmemory', '1');
        for (const ev of buildEvents) void c.handle(ev);
        await waitFor('the failed write', () => !c.ready, 5_000);
        await admin.config('SET', 'maxmemory', '0');
        await c.flush();
        assert.equal(c.ready, true);
        assert.ok((await admin.hlen(envKeys(prefix, cfg.environment).sessions('node-a'))) > 0);
      } finally {
        await admin.config('SET', 'maxmemory', '0').catch(() => undefined);
        await c.close();
        await stores.close();
        admin.disconnect();
        await own.close();
      }
    });

    it('while Redis is unreachable and the buffer is full, each dropped event is counted and logged (throttled)', async function () {
      this.timeout(20_000);
      const r = await start({ redisUrl: `redis://127.0.0.1:${await freePort()}`, redisBufferSize: 1, shutdownTimeoutMs: 100 });
      void r.c.handle(withDestination(stepEgress, '203.0.113.91'));
      await waitFor('not ready', () => !r.c.ready, 5_000);
      assert.equal(r.c.handle(withDestination(stepEgress, '203.0.113.92')), undefined);
      assert.equal(r.c.handle(withDestination(stepEgress, '203.0.113.93')), undefined);
      assert.equal(await r.metrics.value('t1612d_dropped_events_total', { reason: 'redis_buffer_full' }), 2);
      const warn = logged(r, 'redis unreachable and decision buffer full: egress event dropped');
      assert.equal(warn.length, 1);
      assert.equal(warn[0]?.['level'], 40);
      assert.equal(warn[0]?.['buffer'], 1);
      assert.equal(warn[0]?.['ip'], '203.0.113.92');
      assert.equal(warn[0]?.['rule'], stepEgress.rule);
      assert.equal(r.c.backlog, 1);
    });
  });
});
