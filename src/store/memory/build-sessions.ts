/**
 * In-memory build-session store for the no-Redis mode. It keeps serialised copies (like Redis)
 * so a second correlator sharing the same Stores sees a restart-like view; bounded by
 * `maxSessions` in total and by TTL per host.
 */
import {
  parseRemoteAccept,
  parseSessionRecord,
  type HostSnapshot,
  type SessionWrite,
} from '../../model/session.js';
import type { BuildSessionStore } from '../build-sessions.js';

interface HostEntry {
  sessions: Map<string, string>;
  remote: string | null;
  expires: number;
}

export class MemoryBuildSessionStore implements BuildSessionStore {
  private readonly hosts = new Map<string, HostEntry>();
  private count = 0;

  constructor(
    private readonly maxSessions: number,
    private readonly now: () => number = Date.now,
  ) {}

  async write(environment: string, writes: readonly SessionWrite[], ttlMs: number): Promise<void> {
    const now = this.now();
    for (const w of writes) {
      const key = `${environment}\u0000${w.host}`;
      let e = this.hosts.get(key);
      if (e && e.expires <= now) {
        this.count -= e.sessions.size;
        this.hosts.delete(key);
        e = undefined;
      }
      if (!e) {
        e = { sessions: new Map(), remote: null, expires: 0 };
      }
      // Re-insert so Map order is least recently written first (the eviction order).
      this.hosts.delete(key);
      this.hosts.set(key, e);
      for (const s of w.upsert) {
        if (!e.sessions.has(s.id)) this.count++;
        e.sessions.set(s.id, JSON.stringify(s));
      }
      for (const id of w.remove) if (e.sessions.delete(id)) this.count--;
      if (w.remote) e.remote = JSON.stringify(w.remote);
      e.expires = now + ttlMs;
    }
    for (const [key, e] of this.hosts) {
      if (this.count <= this.maxSessions) break;
      this.count -= e.sessions.size;
      this.hosts.delete(key);
    }
  }

  async load(environment: string, hosts: readonly string[]): Promise<Map<string, HostSnapshot>> {
    const now = this.now();
    const out = new Map<string, HostSnapshot>();
    for (const host of hosts) {
      const e = this.hosts.get(`${environment}\u0000${host}`);
      if (!e || e.expires <= now) continue;
      const sessions = [...e.sessions.values()]
        .map(parseSessionRecord)
        .filter((s): s is NonNullable<typeof s> => s !== null);
      out.set(host, { sessions, remote: parseRemoteAccept(e.remote) });
    }
    return out;
  }
}
