/**
 * Storage behind the outbox: where alerts wait between `enqueue` and a sink's acknowledgement.
 * Two implementations share the delivery logic in outbox.ts: a Redis Stream per sink (lane),
 * each read by the sink's consumer group (durable, shared by the environment's daemons;
 * outbox-redis.ts), and the in-memory queue below (one process, lost on restart).
 */
import type { Logger } from 'pino';

/** One alert waiting for one sink. */
export interface StoredEntry {
  /** Stream entry id (Redis) or sequence number (memory). */
  id: string;
  /** The alert JSON exactly as enqueued: the bytes the webhook sends. */
  body: string;
  /** When it entered the outbox (ms since epoch). */
  enqueuedAt: number;
  /** Only these sinks deliver it (set by a dead-letter replay); undefined = every sink. */
  sinks: string[] | undefined;
}

/** Why an entry moved to the dead letters. */
export interface DeadLetterInfo {
  error: string;
  attempts: number;
  status?: number | undefined;
  /** Truncated response body of the last attempt, when there was one. */
  responseBody?: string | undefined;
}

/** Result of an append: the entry id, and how many undelivered entries the length cap dropped. */
export interface AppendResult {
  id: string;
  /** Per sink: undelivered entries dropped by this append's trim. */
  lost: Record<string, number>;
}

/**
 * An append that reached some sinks and not others: `failed` are the sinks whose write did not
 * land (retry those only), `lost` the trim counts of the writes that did.
 */
export class PartialAppendError extends Error {
  constructor(
    readonly failed: string[],
    readonly lost: Record<string, number>,
    readonly cause: unknown,
  ) {
    super(`outbox write failed for ${failed.join(', ')}: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'PartialAppendError';
  }
}

export interface OutboxStore {
  readonly kind: 'redis' | 'memory';
  /** Create what must exist before the first append (consumer groups). Safe to call again. */
  prepare(): Promise<void>;
  /**
   * Store one alert body durably for every sink (or only the sinks `only` names, to retry a
   * partial failure). Throws PartialAppendError naming the sinks whose write failed.
   */
  append(body: string, only?: string[]): Promise<AppendResult>;
  /**
   * Up to `max` entries for `sink` that nobody is delivering: new ones, a previous run's
   * leftovers, and ones whose consumer stopped (idle too long). May wait briefly for new entries;
   * returns early (possibly empty) when `signal` aborts.
   */
  read(sink: string, max: number, signal: AbortSignal): Promise<StoredEntry[]>;
  /** Count one more attempt for (sink, entry); returns the attempt number (1 for the first). */
  attempt(sink: string, id: string): Promise<number>;
  /** Delivered: forget the entry for this sink. */
  ack(sink: string, id: string): Promise<void>;
  /** Give up: record the entry in the dead letters and forget it for this sink. */
  deadLetter(sink: string, entry: StoredEntry, info: DeadLetterInfo): Promise<void>;
  /** Still working on these entries (keeps other consumers from reclaiming them). */
  keepAlive(sink: string, ids: string[]): Promise<void>;
  /** Entries not yet acknowledged, for the sink with the largest backlog. */
  pending(): Promise<number>;
  /** Entries in the dead letters. */
  deadLetterCount(): Promise<number>;
  /** Move dead letters back in, each for the sink that gave up on it; returns how many moved. */
  replayDeadLetters(sink?: string): Promise<number>;
  close(): Promise<void>;
}

interface MemEntry {
  entry: StoredEntry;
  /** Sinks that have not acknowledged it yet. */
  remaining: Set<string>;
}

export interface DeadLetter {
  sink: string;
  entry: StoredEntry;
  info: DeadLetterInfo;
  failedAt: string;
}

export interface MemoryOutboxStoreOptions {
  sinks: string[];
  maxLen: number;
  /** Longest wait in `read` for a new entry. */
  blockMs: number;
  logger: Logger;
}

export class MemoryOutboxStore implements OutboxStore {
  readonly kind = 'memory' as const;
  private seq = 0;
  /** Insertion-ordered, so the first key is the oldest entry. */
  private readonly entries = new Map<string, MemEntry>();
  /** Per sink: ids not handed out yet (FIFO). */
  private readonly queues = new Map<string, string[]>();
  private readonly backlog = new Map<string, number>();
  private readonly attempts = new Map<string, number>();
  private readonly dead: DeadLetter[] = [];
  private readonly waiters = new Set<() => void>();

  constructor(private readonly o: MemoryOutboxStoreOptions) {
    for (const s of o.sinks) {
      this.queues.set(s, []);
      this.backlog.set(s, 0);
    }
  }

  async prepare(): Promise<void> {}

  async append(body: string, only?: string[]): Promise<AppendResult> {
    return this.insert(body, only ?? this.o.sinks);
  }

  private insert(body: string, sinks: string[]): AppendResult {
    const lost: Record<string, number> = {};
    while (this.entries.size >= this.o.maxLen) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      const victim = this.entries.get(oldest.value);
      this.entries.delete(oldest.value);
      for (const s of victim?.remaining ?? []) {
        lost[s] = (lost[s] ?? 0) + 1;
        this.backlog.set(s, (this.backlog.get(s) ?? 1) - 1);
        this.attempts.delete(`${s}\0${oldest.value}`);
      }
    }
    const id = String(++this.seq);
    const targets = sinks.filter((s) => this.queues.has(s));
    if (targets.length > 0) {
      const entry: StoredEntry = { id, body, enqueuedAt: Date.now(), sinks: sinks === this.o.sinks ? undefined : [...sinks] };
      this.entries.set(id, { entry, remaining: new Set(targets) });
      for (const s of targets) {
        this.queues.get(s)?.push(id);
        this.backlog.set(s, (this.backlog.get(s) ?? 0) + 1);
      }
      for (const wake of this.waiters) wake();
    }
    return { id, lost };
  }

  async read(sink: string, max: number, signal: AbortSignal): Promise<StoredEntry[]> {
    let out = this.take(sink, max);
    if (out.length > 0 || signal.aborted) return out;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, this.o.blockMs);
      timer.unref();
      this.waiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
    out = this.take(sink, max);
    return out;
  }

  private take(sink: string, max: number): StoredEntry[] {
    const q = this.queues.get(sink);
    const out: StoredEntry[] = [];
    while (q && q.length > 0 && out.length < max) {
      const id = q.shift() as string;
      const e = this.entries.get(id);
      // Dropped by the cap while queued: nothing to hand out.
      if (e && e.remaining.has(sink)) out.push(e.entry);
    }
    return out;
  }

  async attempt(sink: string, id: string): Promise<number> {
    const key = `${sink}\0${id}`;
    const n = (this.attempts.get(key) ?? 0) + 1;
    this.attempts.set(key, n);
    return n;
  }

  async ack(sink: string, id: string): Promise<void> {
    this.attempts.delete(`${sink}\0${id}`);
    const e = this.entries.get(id);
    if (!e || !e.remaining.delete(sink)) return;
    this.backlog.set(sink, (this.backlog.get(sink) ?? 1) - 1);
    if (e.remaining.size === 0) this.entries.delete(id);
  }

  async deadLetter(sink: string, entry: StoredEntry, info: DeadLetterInfo): Promise<void> {
    this.dead.push({ sink, entry, info, failedAt: new Date().toISOString() });
    if (this.dead.length > this.o.maxLen) this.dead.shift();
    await this.ack(sink, entry.id);
  }

  async keepAlive(): Promise<void> {}

  async pending(): Promise<number> {
    let worst = 0;
    for (const n of this.backlog.values()) worst = Math.max(worst, n);
    return worst;
  }

  async deadLetterCount(): Promise<number> {
    return this.dead.length;
  }

  /** The dead letters, oldest first (for tests and the demo). */
  deadLetters(): readonly DeadLetter[] {
    return this.dead;
  }

  async replayDeadLetters(sink?: string): Promise<number> {
    const keep: DeadLetter[] = [];
    const move: DeadLetter[] = [];
    for (const d of this.dead) (sink === undefined || d.sink === sink ? move : keep).push(d);
    this.dead.length = 0;
    this.dead.push(...keep);
    for (const d of move) this.insert(d.entry.body, [d.sink]);
    if (move.length > 0) this.o.logger.info({ moved: move.length, sink: sink ?? 'all' }, 'dead letters moved back to the outbox');
    return move.length;
  }

  async close(): Promise<void> {
    for (const wake of this.waiters) wake();
  }
}
