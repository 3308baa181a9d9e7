/**
 * Storage behind the outbox: where alerts wait between `enqueue` and a sink's acknowledgement.
 * Two implementations share the delivery logic in outbox.ts: a Redis Stream with one consumer
 * group per sink (durable, shared by the environment's daemons) and an in-memory queue (one
 * process, lost on restart).
 */

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

export interface OutboxStore {
  readonly kind: 'redis' | 'memory';
  /** Create what must exist before the first append (consumer groups). Safe to call again. */
  prepare(): Promise<void>;
  /** Store one alert body durably for every sink. */
  append(body: string): Promise<AppendResult>;
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
