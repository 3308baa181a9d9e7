/**
 * Build-session persistence. The correlator keeps the sessions it works with in memory
 * (detect/sessions.ts) and writes them through to a store so that a restarted daemon — or a
 * second daemon watching the same host — can pick up a build in progress. Sessions expire by
 * TTL (build window + clock skew) in the store.
 */
import type { HostSnapshot, SessionWrite } from '../model/session.js';

export interface BuildSessionStore {
  /** Write changes for several hosts; every key written gets `ttlMs`. */
  write(environment: string, writes: readonly SessionWrite[], ttlMs: number): Promise<void>;
  /** Read what is stored for several hosts. Unknown hosts are absent from the map. */
  load(environment: string, hosts: readonly string[]): Promise<Map<string, HostSnapshot>>;
}
