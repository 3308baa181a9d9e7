/** Asserting what the first-seen set knows, through decide() (the store's only way in). */
import type { Stores } from '../../src/store/stores.js';
import { envKeys } from '../../src/store/redis/keys.js';
import { bucketOf, ipField } from '../../src/store/redis/slots.js';

/**
 * True when the environment knows `ip` at `nowMs`. Like any last-seen refresh it records the
 * IP when it was not known, so ask once per IP and state.
 */
export async function isKnown(stores: Stores, environment: string, ip: string, nowMs: number, retentionMs: number): Promise<boolean> {
  const { results } = await stores.firstSeen.decide(environment, [{ ip, eventTimeMs: nowMs, token: '', claim: null }], {
    nowMs,
    retentionMs,
    learningPeriodMs: 0,
    learningStartCandidate: nowMs,
    claimTtlMs: 1,
  });
  return results[0]?.isNew === false;
}

/** Whether the sharded known-IP set in Redis holds `ip` (read directly, for layout tests). */
export async function inRedisSet(
  client: { hexists(key: string, field: Buffer): Promise<number> },
  prefix: string,
  environment: string,
  ip: string,
  buckets = 4096,
): Promise<boolean> {
  const field = ipField(ip);
  return (await client.hexists(envKeys(prefix, environment).bucket(bucketOf(field, buckets)), field)) === 1;
}

/** Keys of the known-IP set and its layout records, which have no TTL (ARCHITECTURE.md "Redis keys"). */
export function isPermanentKey(key: string, prefix: string, environment: string): boolean {
  const k = envKeys(prefix, environment);
  return /^\{[^}]*:ip:\d+\}:known$/.test(key) || key === k.layout || key === k.used;
}
