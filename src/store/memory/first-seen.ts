/**
 * In-memory first-seen set for the single-host, no-Redis mode (and `replay`). Same semantics
 * as the Redis store; bounded: past `maxIps` the least recently seen IPs are dropped, which
 * only makes them "new" again (a possible extra alert, never a missed one).
 */
import type { DecideBatch, DecideItem, DecideOptions, FirstSeenStore, ObserveResult } from '../first-seen.js';

interface Entry {
  first: number;
  last: number;
  token: string;
}

interface EnvState {
  ips: Map<string, Entry>;
  learningStart: number | null;
  claims: Map<string, { token: string; expires: number }>;
}

const MAX_CLAIMS = 100_000;

export class MemoryFirstSeenStore implements FirstSeenStore {
  private readonly envs = new Map<string, EnvState>();

  constructor(private readonly maxIps: number) {}

  private env(name: string): EnvState {
    let e = this.envs.get(name);
    if (!e) {
      e = { ips: new Map(), learningStart: null, claims: new Map() };
      this.envs.set(name, e);
    }
    return e;
  }

  private observeOne(e: EnvState, ip: string, nowMs: number, retentionMs: number, token: string): ObserveResult {
    const entry = e.ips.get(ip);
    if (entry && entry.last >= nowMs - retentionMs) {
      // Move to the back: Map order is the eviction order (least recently seen first).
      e.ips.delete(ip);
      entry.last = Math.max(entry.last, nowMs);
      e.ips.set(ip, entry);
      return { isNew: token !== '' && entry.token === token, firstSeenAt: entry.first };
    }
    if (entry) e.ips.delete(ip);
    e.ips.set(ip, { first: nowMs, last: nowMs, token });
    if (e.ips.size > this.maxIps) {
      const oldest = e.ips.keys().next();
      if (!oldest.done) e.ips.delete(oldest.value);
    }
    return { isNew: true, firstSeenAt: nowMs };
  }

  private claimOne(e: EnvState, key: string, token: string, ttlMs: number, nowMs: number): boolean {
    const held = e.claims.get(key);
    if (held && held.expires > nowMs) return token !== '' && held.token === token;
    e.claims.set(key, { token, expires: nowMs + ttlMs });
    if (e.claims.size > MAX_CLAIMS) {
      for (const [k, v] of e.claims) {
        if (v.expires <= nowMs || e.claims.size > MAX_CLAIMS) e.claims.delete(k);
        if (e.claims.size <= MAX_CLAIMS * 0.9) break;
      }
    }
    return true;
  }

  async decide(environment: string, items: readonly DecideItem[], o: DecideOptions): Promise<DecideBatch> {
    const e = this.env(environment);
    let start = -1;
    if (o.learningPeriodMs > 0) {
      e.learningStart ??= o.learningStartCandidate;
      start = e.learningStart;
    }
    // Dedupe keys expire on the real clock, like Redis PX, whatever clock drives retention.
    const results = items.map((it) => {
      const r = this.observeOne(e, it.ip, o.nowMs, o.retentionMs, it.token);
      const learning = start >= 0 && it.eventTimeMs < start + o.learningPeriodMs;
      const claimed =
        r.isNew && !learning && it.claim !== null
          ? this.claimOne(e, `${it.claim}:${it.ip}`, it.token, o.claimTtlMs, Date.now())
          : false;
      return { ...r, learning, claimed };
    });
    return { results, learningStart: start >= 0 ? start : null };
  }

  async claim(environment: string, sessionId: string, ip: string, token: string, ttlMs: number): Promise<boolean> {
    return this.claimOne(this.env(environment), `${sessionId}:${ip}`, token, ttlMs, Date.now());
  }

  async maintain(environment: string, nowMs: number, retentionMs: number): Promise<number> {
    const e = this.env(environment);
    const cutoff = nowMs - retentionMs;
    for (const [ip, entry] of e.ips) {
      // Map order is least recently seen first, so stop at the first fresh entry.
      if (entry.last >= cutoff) break;
      e.ips.delete(ip);
    }
    return e.ips.size;
  }
}
