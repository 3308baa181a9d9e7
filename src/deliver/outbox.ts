/**
 * The outbox: at-least-once delivery of alerts to every configured sink.
 *
 * `enqueue` stores the alert (Redis Stream, or memory without Redis) before anything is sent.
 * One lane per sink then reads entries, sends them with at most `concurrency` requests in
 * flight and at most `maxInFlight` entries held in memory, acknowledges on success, retries
 * retryable failures with capped exponential backoff and jitter (honouring Retry-After), and
 * moves an entry to the dead letters after a permanent failure or `webhook_max_attempts`
 * attempts. Attempts are counted in the store, so a restart does not reset them. `close()`
 * stops reading, cuts retry sleeps short, lets in-flight sends finish until the deadline and
 * leaves everything unfinished pending for the next start (or another daemon) to resume.
 *
 * This module is the entry point and re-exports the pieces: the public types
 * (outbox-types.ts), `createOutbox` and `replayDeadLetters` (outbox-factory.ts), and
 * `retryDelayMs` (outbox-lane.ts). The implementation lives in outbox-impl.ts.
 */
export type { Outbox, OutboxDeps, OutboxStats, OutboxTuning, RedisFactory } from './outbox-types.js';
export { createOutbox, replayDeadLetters } from './outbox-factory.js';
export { retryDelayMs } from './outbox-lane.js';
