/**
 * The outbox's public contract: the `Outbox` interface callers hold, its stats, the
 * dependencies and tuning knobs it is built from, and the Redis connection factory type.
 * Kept apart from the implementation so that outbox-impl.ts and outbox-factory.ts can both
 * depend on it while outbox.ts re-exports the factory, with no import cycle.
 */
import type { Logger } from 'pino';
import type { AlertSink } from '../model/alert.js';
import type { Metrics } from '../ops/metrics.js';
import type { RedisClient } from '../store/redis/connection.js';
import type { Sink } from './sink.js';

/** Builds Redis connections; `blocking` ones are used for XREADGROUP BLOCK only. */
export type RedisFactory = (options: { name: string; blocking: boolean }) => RedisClient;

/** Knobs below the configuration, for tests and embedding. All durations in ms. */
export interface OutboxTuning {
  /** Consumer name in every group. @default the `hostname` setting */
  consumerName?: string;
  /** Another consumer's entries idle this long are taken over. @default 60000 */
  claimIdleMs?: number;
  /** Longest blocking read. @default 1000 */
  blockMs?: number;
  /** Entries a lane holds at once (sending or waiting to retry). @default max(16, 8 * concurrency) */
  maxInFlight?: number;
  /** Gauge refresh interval. @default 5000 */
  maintenanceMs?: number;
  /** How long `enqueue` keeps retrying an unreachable store before it rejects. @default 30000 */
  enqueueTimeoutMs?: number;
  /** TTL of the attempt counters in Redis. @default 7 days */
  attemptsTtlMs?: number;
  /** Deadline for `close()` to let in-flight sends finish. @default cfg.shutdownTimeoutMs */
  closeTimeoutMs?: number;
}

export interface OutboxDeps {
  /** The outbox owns them: `close()` closes them. */
  sinks: Sink[];
  metrics: Metrics;
  logger: Logger;
  /** Redis connections; `false` forces the memory store; absent = from cfg (redis_url / cluster). */
  redis?: RedisFactory | false;
  tuning?: OutboxTuning;
}

export interface OutboxStats {
  /** Entries held in memory by all lanes now. */
  held: number;
  /** Largest number held by any one lane so far. */
  heldHighWater: number;
  /** The per-lane bound on held entries. */
  maxInFlight: number;
  /** Largest number of concurrent sends seen on any one lane. */
  sendingHighWater: number;
}

export interface Outbox extends AlertSink {
  readonly kind: 'redis' | 'memory';
  /** Begin delivering (idempotent). Enqueue works before start; delivery waits for it. */
  start(): void;
  /** Idempotent graceful stop within the close deadline; unfinished entries stay pending. */
  close(): Promise<void>;
  /** Resolves true once nothing is pending (false at the timeout). */
  drain(timeoutMs: number): Promise<boolean>;
  /** Alerts not yet acknowledged by the sink with the largest backlog. */
  pending(): Promise<number>;
  /** Entries in the dead letters. */
  deadLetters(): Promise<number>;
  /** Move dead letters back for another round of attempts; returns how many. */
  replayDeadLetters(sink?: string): Promise<number>;
  stats(): OutboxStats;
}
