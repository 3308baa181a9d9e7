/**
 * Orphans: new, unattributed egress destinations kept for a clock-skew's time, in case the
 * build signal that explains them arrives late (several Falco sources, reconnects). When a
 * build opens or extends on their host, the correlator retro-attributes them. Bounded per host
 * and in total; what does not fit is simply not retro-attributed (the IP is already recorded).
 */
import type { EgressSignal } from './classify.js';

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

export class OrphanPool {
  private readonly byHost = new Map<string, Orphan[]>();
  private count = 0;

  /** @param keepMs how long an orphan waits for its build signal (the clock skew). */
  constructor(private readonly keepMs: number) {}

  get size(): number {
    return this.count;
  }

  keep(o: Orphan, now: number): void {
    this.expire(now);
    let list = this.byHost.get(o.sig.host);
    if (!list) {
      list = [];
      this.byHost.set(o.sig.host, list);
    }
    if (list.length >= MAX_ORPHANS_PER_HOST || this.count >= MAX_ORPHANS) return;
    list.push(o);
    this.count++;
  }

  /**
   * Hand the host's live orphans to `match`; those it accepts (returns non-null for) leave the
   * pool and come back paired with the match.
   */
  take<T>(host: string, now: number, match: (o: Orphan) => T | null): { orphan: Orphan; match: T }[] {
    if (!this.byHost.has(host)) return [];
    this.expire(now);
    const list = this.byHost.get(host);
    if (!list) return [];
    const out: { orphan: Orphan; match: T }[] = [];
    const keep: Orphan[] = [];
    for (const o of list) {
      const m = match(o);
      if (m !== null) out.push({ orphan: o, match: m });
      else keep.push(o);
    }
    this.count -= list.length - keep.length;
    if (keep.length > 0) this.byHost.set(host, keep);
    else this.byHost.delete(host);
    return out;
  }

  private expire(now: number): void {
    const horizon = now - this.keepMs;
    for (const [host, list] of this.byHost) {
      const keep = list.filter((o) => o.addedAt >= horizon);
      this.count -= list.length - keep.length;
      if (keep.length === 0) this.byHost.delete(host);
      else if (keep.length !== list.length) this.byHost.set(host, keep);
    }
  }
}
