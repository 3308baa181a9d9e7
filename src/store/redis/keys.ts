/**
 * Redis key names (ARCHITECTURE.md "Redis keys"). An environment's keys are spread over Redis
 * Cluster slots by their hash tags, so a cluster adds capacity and not only failover:
 *
 * - the known-IP set is cut into `buckets` small hashes, each with its own tag
 *   `{<prefix>:<env>:ip:<n>}`; an IP's dedupe claims carry its bucket's tag, so the decide
 *   script of one bucket touches one slot only;
 * - build sessions carry a tag per host `{<prefix>:<env>:host:<host>}`;
 * - outbox streams carry a tag per lane (sink) `{<prefix>:<env>:lane:<sink>}`;
 * - environment-wide singletons (learning start, layout, sweep state) share the environment
 *   tag `{<prefix>:<env>}`, as did every key of the first layout (`legacyKeys`).
 *
 * Only the known-IP buckets, the layout record and the used-bucket bitmap have no TTL; everything else expires.
 */

/** Keys of one environment. */
export interface EnvKeys {
  /** The environment tag `{<prefix>:<env>}` (singletons live in its slot). */
  tag: string;
  /** STRING learning-period start ms (TTL: retention + learning period, refreshed). */
  learning: string;
  /** STRING `2:<buckets>:<created ms>`: how the known-IP set is cut (no TTL). */
  layout: string;
  /** STRING bitmap, bit n set once bucket n has been written: the buckets a sweep visits (no TTL). */
  used: string;
  /** HASH `at` (ms of the last full sweep), `count` (IPs after it), `by` (sweeper) (TTL: 2 × sweep interval). */
  sweep: string;
  /** STRING lock held by the daemon sweeping the buckets (TTL: 1 minute, refreshed per chunk). */
  sweepLock: string;
  /** STRING lock held while one daemon moves the first layout's known IPs (TTL: 1 minute). */
  migrateLock: string;
  /** HASH of known-IP bucket `n`: address bytes -> `<last-seen minute>[|<first ms>|<token>]` (no TTL). */
  bucket(n: number): string;
  /** STRING per (session, IP) in the IP's bucket slot: the alert dedupe key (TTL: expires with the session). */
  alerted(bucket: number, sessionId: string, ip: string): string;
  /** HASH session id -> JSON, plus field `~remote`, one per host in its own slot (TTL: build window + skew). */
  sessions(host: string): string;
  /** Outbox keys of one delivery lane (sink), in the lane's own slot. */
  lane(sink: string): LaneKeys;
}

/** Outbox keys of one lane: the stream, its dead letters and its attempt counts share a slot. */
export interface LaneKeys {
  /** STREAM of alerts for this sink (`MAXLEN ~ outbox_max_len`, TTL refreshed by every alert). */
  stream: string;
  /** STREAM of this sink's dead letters. */
  dead: string;
  /** HASH entry id -> attempts started. */
  attempts: string;
}

/** Host names come from events; a DNS name is at most 253 characters. */
const MAX_HOST = 253;

export function envKeys(prefix: string, environment: string): EnvKeys {
  const base = `${prefix}:${environment}`;
  const tag = `{${base}}`;
  return {
    tag,
    learning: `${tag}:learning-start`,
    layout: `${tag}:layout`,
    used: `${tag}:buckets-used`,
    sweep: `${tag}:sweep`,
    sweepLock: `${tag}:sweep-lock`,
    migrateLock: `${tag}:migrate-lock`,
    bucket: (n) => `{${base}:ip:${n}}:known`,
    alerted: (n, sessionId, ip) => `{${base}:ip:${n}}:alerted:${sessionId}:${ip}`,
    // The host is inside the tag: a `}` in it only shortens the tag, which stays stable.
    sessions: (host) => `{${base}:host:${host.slice(0, MAX_HOST)}}:sessions`,
    lane: (sink) => {
      const t = `{${base}:lane:${sink}}`;
      return { stream: `${t}:outbox`, dead: `${t}:outbox:dead`, attempts: `${t}:outbox:attempts` };
    },
  };
}

/** Keys of the first layout (one hash tag per environment), read while migrating. */
export interface LegacyKeys {
  /** ZSET ip -> last-seen ms. */
  known: string;
  /** HASH ip -> `<first-seen ms>|<decision token>`. */
  first: string;
  /** HASH of a host's sessions. */
  sessions(host: string): string;
  /** The first layout's outbox stream, dead letters and attempt counts (one stream, a group per sink). */
  outbox: { stream: string; dead: string; attempts: (sink: string) => string };
}

export function legacyKeys(prefix: string, environment: string): LegacyKeys {
  const tag = `{${prefix}:${environment}}`;
  return {
    known: `${tag}:known`,
    first: `${tag}:first`,
    sessions: (host) => `${tag}:sessions:${host.slice(0, MAX_HOST)}`,
    outbox: {
      stream: `${tag}:outbox`,
      dead: `${tag}:outbox:dead`,
      attempts: (sink) => `${tag}:outbox:attempts:${sink}`,
    },
  };
}
