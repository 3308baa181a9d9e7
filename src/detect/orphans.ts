/**
 * Orphans: new, unattributed egress destinations kept for a clock-skew's time, in case the
 * build signal that explains them arrives late (several Falco sources, reconnects). When a
 * build opens or extends on their host, the correlator retro-attributes them. Bounded per host
 * and in total; what does not fit is simply not retro-attributed (the IP is already recorded).
 *
 * Indexed by what can tie an orphan to a session (pids, cgroup ids, container, image
 * repository), so a build signal looks only at the orphans its session could explain, not at
 * every orphan on the host. Orphans that any session could take (a proven build step, a
 * classic-builder candidate, a builder's own connection) are always looked at.
 */
import type { EgressSignal } from './classify.js';
import { imageAliases, repositoryOf } from './builders.js';
import type { SessionRecord } from '../model/session.js';

/** A new, unattributed egress kept briefly in case its build signal arrives late. */
export interface Orphan {
  sig: EgressSignal;
  /** When the environment first saw the destination, ms. */
  firstSeenAt: number;
  /** The first-seen decision token (reused for the dedupe claim). */
  token: string;
  /** performance.now() when the event was handed in (event-to-alert histogram). */
  t0: number;
  /** Wall clock when kept, ms. */
  addedAt: number;
}

const MAX_ORPHANS = 1024;
const MAX_ORPHANS_PER_HOST = 128;

/** A cgroup key's index form: kind and the first 3 id characters (the plugin's short ids). */
function cgroupIndex(key: string): string {
  const [kind = '', id = ''] = key.split(':', 2);
  return `c:${kind}:${id.slice(0, 3)}`;
}

/** Index keys of an orphan; empty for one any session could take. */
function orphanKeys(sig: EgressSignal): string[] | null {
  if (sig.step !== null || sig.classicCandidate || sig.builderOwn) return null;
  const keys: string[] = [];
  if (sig.proc.pid !== null) keys.push(`p:${sig.proc.pid}`);
  for (const p of sig.proc.ancestorPids) keys.push(`p:${p}`);
  for (const c of sig.cgroups) keys.push(cgroupIndex(c));
  if (sig.containerId !== null) keys.push(`k:${sig.containerId}`);
  if (sig.imageRef !== null) keys.push(`i:${repositoryOf(sig.imageRef)}`);
  return keys;
}

/** Index keys a session can be found by. */
export function sessionKeys(s: SessionRecord): string[] {
  const keys: string[] = [];
  for (const p of s.pids) keys.push(`p:${p}`);
  for (const c of s.cgroups) keys.push(cgroupIndex(c));
  for (const c of s.containers) keys.push(`k:${c}`);
  for (const i of s.imageRefs) for (const a of imageAliases(i)) keys.push(`i:${repositoryOf(a)}`);
  return keys;
}

interface HostPool {
  all: Orphan[];
  /** Orphans any session could take. */
  wild: Set<Orphan>;
  byKey: Map<string, Set<Orphan>>;
}

export class OrphanPool {
  private readonly byHost = new Map<string, HostPool>();
  private count = 0;

  /** @param keepMs how long an orphan waits for its build signal (the clock skew). */
  constructor(private readonly keepMs: number) {}

  get size(): number {
    return this.count;
  }

  keep(o: Orphan, now: number): void {
    this.expire(now);
    let pool = this.byHost.get(o.sig.host);
    if (!pool) {
      pool = { all: [], wild: new Set(), byKey: new Map() };
      this.byHost.set(o.sig.host, pool);
    }
    if (pool.all.length >= MAX_ORPHANS_PER_HOST || this.count >= MAX_ORPHANS) return;
    pool.all.push(o);
    this.count++;
    const keys = orphanKeys(o.sig);
    if (keys === null) {
      pool.wild.add(o);
      return;
    }
    for (const k of keys) {
      let set = pool.byKey.get(k);
      if (!set) {
        set = new Set();
        pool.byKey.set(k, set);
      }
      set.add(o);
    }
  }

  /**
   * Hand the host's live orphans that `keys` could explain (all of them when `keys` is null,
   * e.g. window-only attribution or sessions loaded from the store) to `match`; those it
   * accepts leave the pool and come back paired with the match.
   */
  take<T>(host: string, now: number, keys: readonly string[] | null, match: (o: Orphan) => T | null): { orphan: Orphan; match: T }[] {
    if (!this.byHost.has(host)) return [];
    this.expire(now);
    const pool = this.byHost.get(host);
    if (!pool) return [];
    let candidates: Iterable<Orphan>;
    if (keys === null) {
      candidates = pool.all;
    } else {
      const set = new Set(pool.wild);
      for (const k of keys) for (const o of pool.byKey.get(k) ?? []) set.add(o);
      candidates = set;
    }
    const out: { orphan: Orphan; match: T }[] = [];
    for (const o of candidates) {
      const m = match(o);
      if (m !== null) out.push({ orphan: o, match: m });
    }
    if (out.length > 0) {
      const taken = new Set(out.map((x) => x.orphan));
      this.rebuild(host, pool.all.filter((o) => !taken.has(o)));
    }
    return out;
  }

  private rebuild(host: string, keep: Orphan[]): void {
    const pool = this.byHost.get(host);
    if (!pool) return;
    this.count -= pool.all.length;
    this.byHost.delete(host);
    for (const o of keep) this.keep(o, Number.NEGATIVE_INFINITY);
  }

  private expire(now: number): void {
    if (now === Number.NEGATIVE_INFINITY) return;
    const horizon = now - this.keepMs;
    for (const [host, pool] of this.byHost) {
      if (pool.all.every((o) => o.addedAt >= horizon)) continue;
      this.rebuild(host, pool.all.filter((o) => o.addedAt >= horizon));
    }
  }
}
