/**
 * The environment's first-seen IP set: which destination IPs the whole environment has
 * contacted, with first-seen and last-seen times. Deciding "new" is atomic across daemons
 * (two hosts observing the same new IP at the same moment get exactly one `isNew`).
 *
 * `decide()` is the correlator's batched entry point: one round trip observes many IPs, checks
 * the environment's learning period, and claims the per-(session, IP) dedupe keys of the new
 * ones, all in one atomic step. Clocks: `nowMs` (the daemon's wall clock) stamps last-seen and
 * drives retention; each item's `eventTimeMs` drives the learning period, which starts at the
 * environment's first recorded event.
 */

export interface ObserveResult {
  /** True when the environment had not seen the IP within the retention. */
  isNew: boolean;
  /**
   * When the environment first saw the IP (ms, the observer's wall clock): exact when `isNew`;
   * for a known IP the Redis store keeps it to the minute.
   */
  firstSeenAt: number;
}

export interface DecideItem {
  ip: string;
  /** Event time (ms) for the learning period. */
  eventTimeMs: number;
  /**
   * Unique per decision; a retried decide() of the same item (a reply lost to a disconnect)
   * gets the same answer instead of "not new". Empty for last-seen refreshes.
   */
  token: string;
  /** Session id whose dedupe key to claim when the IP is new and learning is over; null for none. */
  claim: string | null;
}

export interface DecideResult extends ObserveResult {
  /** The event falls inside the environment's learning period. */
  learning: boolean;
  /** This call claimed the (session, IP) dedupe key: raise the alert. */
  claimed: boolean;
}

export interface DecideBatch {
  results: DecideResult[];
  /** The environment's learning-period start (ms), null when no learning period is set. */
  learningStart: number | null;
}

export interface DecideOptions {
  nowMs: number;
  retentionMs: number;
  learningPeriodMs: number;
  /** Learning start to record if the environment has none yet (ms). */
  learningStartCandidate: number;
  /** TTL of a dedupe key (it expires with the session). */
  claimTtlMs: number;
}

export interface FirstSeenStore {
  /** Observe many IPs and claim dedupe keys in one atomic round trip; results in item order. */
  decide(environment: string, items: readonly DecideItem[], options: DecideOptions): Promise<DecideBatch>;
  /** Claim one (session, IP) dedupe key; true when this caller got it (or already held it with `token`). */
  claim(environment: string, sessionId: string, ip: string, token: string, ttlMs: number): Promise<boolean>;
  /**
   * Drop IPs unseen since `nowMs - retentionMs`; returns the size of the set afterwards. The
   * Redis store sweeps its buckets at most as often as the set's size warrants and, while
   * another daemon sweeps, returns the size the last sweep found.
   */
  maintain(environment: string, nowMs: number, retentionMs: number): Promise<number>;
}
