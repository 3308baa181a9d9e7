/**
 * Build sessions in Redis: one HASH per host (`{prefix:env}:sessions:<host>`), field = session
 * id, value = JSON; field `~remote` holds the latest remote Docker API accept. Fields are
 * written one by one (HSET), so two daemons writing the same host merge instead of clobbering,
 * and the key's TTL is refreshed on every write: it expires a build window after the host's
 * last build activity.
 */
import type { RedisClient } from './connection.js';
import {
  parseRemoteAccept,
  parseSessionRecord,
  type HostSnapshot,
  type SessionWrite,
} from '../../model/session.js';
import type { BuildSessionStore } from '../build-sessions.js';
import { envKeys } from './keys.js';

const REMOTE_FIELD = '~remote';

export class RedisBuildSessionStore implements BuildSessionStore {
  constructor(
    private readonly client: RedisClient,
    private readonly prefix: string,
  ) {}

  async write(environment: string, writes: readonly SessionWrite[], ttlMs: number): Promise<void> {
    if (writes.length === 0) return;
    const k = envKeys(this.prefix, environment);
    const pipe = this.client.pipeline();
    for (const w of writes) {
      const key = k.sessions(w.host);
      const fields: string[] = [];
      for (const s of w.upsert) fields.push(s.id, JSON.stringify(s));
      if (w.remote) fields.push(REMOTE_FIELD, JSON.stringify(w.remote));
      if (fields.length > 0) pipe.hset(key, ...fields);
      if (w.remove.length > 0) pipe.hdel(key, ...w.remove);
      pipe.pexpire(key, Math.max(1, Math.round(ttlMs)));
    }
    const results = await pipe.exec();
    const failed = results?.find(([err]) => err !== null);
    if (failed?.[0]) throw failed[0];
  }

  async load(environment: string, hosts: readonly string[]): Promise<Map<string, HostSnapshot>> {
    const out = new Map<string, HostSnapshot>();
    if (hosts.length === 0) return out;
    const k = envKeys(this.prefix, environment);
    const pipe = this.client.pipeline();
    for (const h of hosts) pipe.hgetall(k.sessions(h));
    const results = (await pipe.exec()) ?? [];
    hosts.forEach((host, i) => {
      const [err, value] = results[i] ?? [new Error('no reply'), null];
      if (err) throw err;
      const hash = (value ?? {}) as Record<string, string>;
      const snap: HostSnapshot = { sessions: [], remote: null };
      for (const [field, text] of Object.entries(hash)) {
        if (field === REMOTE_FIELD) snap.remote = parseRemoteAccept(text);
        else {
          const rec = parseSessionRecord(text);
          if (rec && rec.host === host) snap.sessions.push(rec);
        }
      }
      if (snap.sessions.length > 0 || snap.remote) out.set(host, snap);
    });
    return out;
  }
}
