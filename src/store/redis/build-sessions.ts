/**
 * Build sessions in Redis: one HASH per host in the host's own cluster slot
 * (`{prefix:env:host:<host>}:sessions`), field = session id, value = JSON; field `~remote`
 * holds the latest remote Docker API accept. Fields are written one by one (HSET), so two
 * daemons writing the same host merge instead of clobbering, and the key's TTL is refreshed on
 * every write: it expires a build window after the host's last build activity. Several hosts
 * are written and read with one pipeline per Redis node. A daemon that started while the
 * first layout (`{prefix:env}:sessions:<host>`) was still there, or within a day of the
 * move, reads it too.
 */
import type { RedisClient } from './connection.js';
import {
  parseRemoteAccept,
  parseSessionRecord,
  type HostSnapshot,
  type SessionWrite,
} from '../../model/session.js';
import type { BuildSessionStore } from '../build-sessions.js';
import { envKeys, legacyKeys } from './keys.js';
import type { Layouts } from './layout.js';
import { pipelinePerNode } from './slots.js';

const REMOTE_FIELD = '~remote';

type Command = { key: string; run: (pipe: ReturnType<RedisClient['pipeline']>) => void };

export class RedisBuildSessionStore implements BuildSessionStore {
  constructor(
    private readonly client: RedisClient,
    private readonly prefix: string,
    private readonly layouts?: Layouts,
  ) {}

  async write(environment: string, writes: readonly SessionWrite[], ttlMs: number): Promise<void> {
    if (writes.length === 0) return;
    const k = envKeys(this.prefix, environment);
    const commands: Command[] = [];
    const ttl = Math.max(1, Math.round(ttlMs));
    for (const w of writes) {
      const key = k.sessions(w.host);
      const fields: string[] = [];
      for (const s of w.upsert) fields.push(s.id, JSON.stringify(s));
      if (w.remote) fields.push(REMOTE_FIELD, JSON.stringify(w.remote));
      if (fields.length > 0) commands.push({ key, run: (p) => p.hset(key, ...fields) });
      if (w.remove.length > 0) commands.push({ key, run: (p) => p.hdel(key, ...w.remove) });
      commands.push({ key, run: (p) => p.pexpire(key, ttl) });
    }
    await pipelinePerNode(this.client, commands, (c) => c.key, (pipe, c) => c.run(pipe));
  }

  async load(environment: string, hosts: readonly string[]): Promise<Map<string, HostSnapshot>> {
    const out = new Map<string, HostSnapshot>();
    if (hosts.length === 0) return out;
    const k = envKeys(this.prefix, environment);
    const legacy = this.layouts && (await this.layouts.get(environment)).legacySessions ? legacyKeys(this.prefix, environment) : null;
    const perHost = new Map<string, { key: string }[]>();
    for (const host of hosts) {
      // The current layout first: its records win over the first layout's.
      const keys = [{ key: k.sessions(host) }];
      if (legacy) keys.push({ key: legacy.sessions(host) });
      perHost.set(host, keys);
    }
    const reads = [...perHost.values()].flat();
    const replies = await pipelinePerNode(this.client, reads, (r) => r.key, (pipe, r) => pipe.hgetall(r.key));
    for (const [host, keys] of perHost) {
      const snap: HostSnapshot = { sessions: [], remote: null };
      const ids = new Set<string>();
      for (const r of keys) {
        const hash = (replies.get(r) ?? {}) as Record<string, string>;
        for (const [field, text] of Object.entries(hash)) {
          if (field === REMOTE_FIELD) snap.remote ??= parseRemoteAccept(text);
          else if (!ids.has(field)) {
            const rec = parseSessionRecord(text);
            if (rec && rec.host === host) {
              ids.add(field);
              snap.sessions.push(rec);
            }
          }
        }
      }
      if (snap.sessions.length > 0 || snap.remote) out.set(host, snap);
    }
    return out;
  }
}
