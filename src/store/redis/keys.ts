/**
 * Redis key names. Every key of one environment carries the hash tag `{<prefix>:<env>}`, so
 * all of them live in one Redis Cluster slot and Lua scripts may touch several at once.
 * Only the known-IP set (`known` + `first`) has no TTL; everything else expires.
 */

export interface EnvKeys {
  /** ZSET ip -> last-seen ms (the known-IP set; no TTL, aged by retention). */
  known: string;
  /** HASH ip -> "<first-seen ms>|<decision token>" (companion of `known`; no TTL). */
  first: string;
  /** STRING learning-period start ms (TTL: retention + learning period, refreshed). */
  learning: string;
  /** STRING per (session, IP): the alert dedupe key (TTL: expires with the session). */
  alerted(sessionId: string, ip: string): string;
  /** HASH session id -> JSON, plus field `~remote` (TTL: build window + skew). */
  sessions(host: string): string;
}

export function envKeys(prefix: string, environment: string): EnvKeys {
  const tag = `{${prefix}:${environment}}`;
  return {
    known: `${tag}:known`,
    first: `${tag}:first`,
    learning: `${tag}:learning-start`,
    alerted: (sessionId, ip) => `${tag}:alerted:${sessionId}:${ip}`,
    // Host names come from events; a DNS name is at most 253 characters.
    sessions: (host) => `${tag}:sessions:${host.slice(0, 253)}`,
  };
}
