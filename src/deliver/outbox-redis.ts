/**
 * The durable outbox: one Redis Stream per delivery lane (sink) of an environment, read by one
 * consumer group (the sink's name) with one consumer per daemon instance. Each lane's keys
 * carry its own hash tag `{<prefix>:<env>:lane:<sink>}`, so on Redis Cluster the lanes of an
 * environment spread over slots (and masters) instead of queueing on one:
 *
 * - `{p:e:lane:<sink>}:outbox`          stream of alerts (`alert` = body, `at` = ms, `sinks` = replay target), `MAXLEN ~ outbox_max_len`
 * - `{p:e:lane:<sink>}:outbox:dead`     dead letters (`alert`, `sink`, `error`, `status`, `response`, `attempts`, `entry`, `alert_id`, `failed_at`, `consumer`), `MAXLEN ~ outbox_max_len`
 * - `{p:e:lane:<sink>}:outbox:attempts` hash entry id -> attempts started (TTL, refreshed on each attempt)
 *
 * An alert is written to every sink's lane, one write per lane (they are in different slots,
 * so not atomic together): a lane whose write failed is retried alone, so a retry adds at
 * most a duplicate that receivers drop by X-T1612D-Delivery (the alert id). An entry is
 * acknowledged (XACK) when its sink delivered it or gave up on it, so each sink is
 * independently at-least-once. Entries read but not acknowledged by a stopped or crashed
 * consumer are taken over with XAUTOCLAIM once idle for `claimIdleMs`; a consumer keeps the
 * entries it is working on fresh (XCLAIM JUSTID) so nobody steals them mid-retry.
 *
 * The first layout (one stream `{p:e}:outbox` with a group per sink, `legacyKeys`) is drained
 * where found: each sink also delivers its group's pending and unread entries there, its dead
 * letters move to their sinks' lanes, and the old keys are deleted once no group owes anything.
 *
 * Appends go through one Lua script per lane that also recreates a missing group (a Redis that
 * lost its data) and counts the undelivered entries the length cap trimmed. Needs Redis >= 6.2
 * (XAUTOCLAIM); counting trimmed unread entries needs >= 7.0 (group lag).
 */
import type { Logger } from 'pino';
import type { RedisClient } from '../store/redis/connection.js';
import { envKeys, legacyKeys, type LaneKeys, type LegacyKeys } from '../store/redis/keys.js';
import { describeError } from '../model/errors.js';
import { truncate } from '../ops/logger.js';
import { PartialAppendError, type AppendResult, type DeadLetterInfo, type OutboxStore, type StoredEntry } from './outbox-store.js';

/** Keys of one sink's lane (`envKeys(prefix, env).lane(sink)`). */
export function laneKeys(prefix: string, environment: string, sink: string): LaneKeys {
  return envKeys(prefix, environment).lane(sink);
}

/** Keys of the first layout's single outbox stream. */
type LegacyOutboxKeys = LegacyKeys['outbox'];

export interface RedisOutboxStoreOptions {
  prefix: string;
  environment: string;
  /** Stream length cap (`MAXLEN ~`), for the outbox and the dead letters. */
  maxLen: number;
  /** Consumer groups = sink names this daemon delivers to. */
  sinks: string[];
  /** This daemon's consumer name in every group. */
  consumer: string;
  /** Entries idle this long in another consumer's hands are taken over. */
  claimIdleMs: number;
  /** Longest XREADGROUP BLOCK. */
  blockMs: number;
  /** TTL of the attempt-count hashes. */
  attemptsTtlMs: number;
  /** Non-blocking commands. */
  client: RedisClient;
  /** A dedicated connection per sink for XREADGROUP BLOCK. */
  blockingClient: (sink: string) => RedisClient;
  logger: Logger;
}

/**
 * Every key but the known-IP set has a TTL (ARCHITECTURE.md "Redis keys"). The streams are
 * capped by length too; their TTL only removes an environment's outbox after a month without
 * a single alert (everything in it long delivered or long dead), dead letters after 90 days.
 */
const OUTBOX_TTL_MS = 30 * 86_400_000;
const DEAD_TTL_MS = 90 * 86_400_000;

const APPEND_SCRIPT = `
local key = KEYS[1]
local maxlen = tonumber(ARGV[1])
for i = 5, #ARGV do
  redis.pcall('XGROUP', 'CREATE', key, ARGV[i], '$', 'MKSTREAM')
end
local before = redis.call('XLEN', key)
-- Only an append past the cap can trim; only then is the backlog worth reading.
local unread = {}
local oldFirst = false
if before + 1 > maxlen and #ARGV >= 5 then
  oldFirst = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1][1]
  local wanted = {}
  for i = 5, #ARGV do wanted[ARGV[i]] = true end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local name, lag = false, false
    for j = 1, #g, 2 do
      if g[j] == 'name' then name = g[j + 1] elseif g[j] == 'lag' then lag = g[j + 1] end
    end
    if name and wanted[name] then
      -- Unread entries are the newest ones; lag may count entries trimmed earlier, so bound it.
      if type(lag) == 'number' then unread[name] = math.min(lag, before) + 1 else unread[name] = false end
    end
  end
end
local id
if ARGV[4] ~= '' then
  id = redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], '*', 'alert', ARGV[2], 'at', ARGV[3], 'sinks', ARGV[4])
else
  id = redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], '*', 'alert', ARGV[2], 'at', ARGV[3])
end
redis.call('PEXPIRE', key, ${OUTBOX_TTL_MS})
local out = {id}
local after = redis.call('XLEN', key)
if not oldFirst or after > before then return out end
local newFirst = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1][1]
for name, u in pairs(unread) do
  local lost = 0
  if u then lost = math.max(0, u - after) end
  -- Read but unacknowledged entries in the trimmed range.
  local pel = redis.call('XPENDING', key, name, oldFirst, '(' .. newFirst, 10000)
  lost = lost + #pel
  table.insert(out, name)
  table.insert(out, lost)
end
return out
`;

/**
 * Count an attempt (KEYS: attempts hash; ARGV: id, hash TTL) and acknowledge a delivery
 * (KEYS: stream, attempts hash; ARGV: group, id). One script call each instead of a MULTI of
 * two commands: the same atomic effect, for a third of the commands and of the client's work
 * per alert.
 */
const ATTEMPT_SCRIPT = `
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
`;
const ACK_SCRIPT = `
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
`;

interface OutboxCommands {
  t1612dOutboxAppend(key: string, ...args: (string | number)[]): Promise<unknown>;
  t1612dOutboxAttempt(attempts: string, id: string, ttlMs: number): Promise<unknown>;
  t1612dOutboxAck(stream: string, attempts: string, group: string, id: string): Promise<unknown>;
}

/** Register the outbox scripts on a client (idempotent). */
function withScripts(client: RedisClient): OutboxCommands {
  // defineCommand adds methods at run time that ioredis's types cannot know about.
  const c = client as unknown as Partial<OutboxCommands> & RedisClient;
  if (typeof c.t1612dOutboxAck !== 'function') {
    client.defineCommand('t1612dOutboxAppend', { numberOfKeys: 1, lua: APPEND_SCRIPT });
    client.defineCommand('t1612dOutboxAttempt', { numberOfKeys: 1, lua: ATTEMPT_SCRIPT });
    client.defineCommand('t1612dOutboxAck', { numberOfKeys: 2, lua: ACK_SCRIPT });
  }
  return client as unknown as OutboxCommands;
}

/** Run the append script: returns the id and per-group undelivered entries the trim dropped. */
export async function appendEntry(
  client: RedisClient,
  stream: string,
  maxLen: number,
  body: string,
  groups: string[],
  targetSinks?: string[],
): Promise<AppendResult> {
  const reply = await withScripts(client).t1612dOutboxAppend(stream, maxLen, body, Date.now(), targetSinks ? targetSinks.join(',') : '', ...groups);
  if (!Array.isArray(reply) || typeof reply[0] !== 'string') throw new Error('unexpected reply from the outbox append script');
  const lost: Record<string, number> = {};
  for (let i = 1; i + 1 < reply.length; i += 2) {
    const n = Number(reply[i + 1]);
    if (n > 0) lost[String(reply[i])] = n;
  }
  return { id: reply[0], lost };
}

/** `[[id, [k, v, ...] | null], ...]` -> entries (ids behind `prefix`); deleted entries (null fields) are returned in `gone`, bare. */
function parseEntries(raw: unknown, prefix = ''): { entries: StoredEntry[]; gone: string[] } {
  const entries: StoredEntry[] = [];
  const gone: string[] = [];
  if (!Array.isArray(raw)) return { entries, gone };
  for (const item of raw) {
    if (!Array.isArray(item) || typeof item[0] !== 'string') continue;
    const id = item[0];
    const fields = item[1];
    if (!Array.isArray(fields)) {
      gone.push(id);
      continue;
    }
    const map = new Map<string, string>();
    for (let i = 0; i + 1 < fields.length; i += 2) map.set(String(fields[i]), String(fields[i + 1]));
    const at = Number(map.get('at'));
    const sinks = map.get('sinks');
    entries.push({
      id: prefix + id,
      // A malformed entry (no `alert` field) still flows through so it can be dead-lettered.
      body: map.get('alert') ?? '',
      enqueuedAt: Number.isFinite(at) && at > 0 ? at : Number(id.split('-')[0]) || Date.now(),
      sinks: sinks ? sinks.split(',').filter((s) => s !== '') : undefined,
    });
  }
  return { entries, gone };
}

/** Flat `[k, v, k, v]` reply -> object. */
function flatToObject(raw: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!Array.isArray(raw)) return out;
  for (let i = 0; i + 1 < raw.length; i += 2) out[String(raw[i])] = raw[i + 1];
  return out;
}

function isNoGroup(err: unknown): boolean {
  return /NOGROUP/.test(describeError(err));
}

/** Where an entry lives: its lane's stream, or the first layout's single stream while it drains. */
interface Source {
  stream: string;
  attempts: string;
  /** Prefix of the ids handed to the lane (`legacy/` for the first layout), so ids never collide. */
  prefix: string;
}

interface SinkReadState {
  /** Cursor through this consumer's own pending entries (a previous run under the same name). */
  ownCursor: string | undefined;
  claimCursor: string;
  lastClaimScan: number;
}

/** Prefix of ids read from the first layout's stream. */
const LEGACY = 'legacy/';

/** How often a sink looks at the first layout's stream again while it still exists. */
const LEGACY_POLL_MS = 1_000;

export class RedisOutboxStore implements OutboxStore {
  readonly kind = 'redis' as const;
  private readonly lanes = new Map<string, LaneKeys>();
  private readonly old: LegacyOutboxKeys;
  private readonly readState = new Map<string, SinkReadState>();
  private readonly legacyState = new Map<string, SinkReadState>();
  /** Per sink: when to look at the first layout's stream next (0 = now); absent = drained. */
  private readonly legacyNext = new Map<string, number>();
  /** The first layout's stream was seen and is not known to be gone. */
  private legacySeen = false;
  private legacyLookedAt = 0;

  constructor(private readonly o: RedisOutboxStoreOptions) {
    for (const sink of o.sinks) this.lanes.set(sink, laneKeys(o.prefix, o.environment, sink));
    this.old = legacyKeys(o.prefix, o.environment).outbox;
  }

  /** The keys of one sink's lane. */
  lane(sink: string): LaneKeys {
    let k = this.lanes.get(sink);
    if (!k) this.lanes.set(sink, (k = laneKeys(this.o.prefix, this.o.environment, sink)));
    return k;
  }

  async prepare(): Promise<void> {
    for (const sink of this.o.sinks) {
      const { stream } = this.lane(sink);
      await ensureGroup(this.o.client, stream, sink);
      // MKSTREAM made a key without a TTL; every outbox key expires (refreshed by appends).
      await this.o.client.pexpire(stream, OUTBOX_TTL_MS);
    }
    await this.checkLegacy();
  }

  /**
   * Looks for the first layout's outbox. When present, its dead letters move to their sinks'
   * lanes and every sink drains its group there (pending and unread) besides its lane; once
   * every group is empty the old keys are deleted.
   */
  private async checkLegacy(): Promise<void> {
    this.legacyLookedAt = Date.now();
    const present = (await this.o.client.exists(this.old.stream, this.old.dead)) > 0;
    if (!present) {
      this.legacySeen = false;
      return;
    }
    if (!this.legacySeen) this.o.logger.info({ stream: this.old.stream }, 'outbox in the single-stream layout found; draining it into delivery');
    this.legacySeen = true;
    for (const sink of this.o.sinks) if (!this.legacyNext.has(sink)) this.legacyNext.set(sink, 0);
    await this.finishLegacy();
  }

  /** Deletes the first layout's keys when no group there owes anything; true once gone. */
  private async finishLegacy(): Promise<boolean> {
    await moveLegacyDead(this.o.client, this.o.prefix, this.o.environment, this.o.maxLen, this.o.logger);
    const gone = await finishLegacyOutbox(this.o.client, this.old);
    if (gone) {
      if (this.legacySeen) this.o.logger.info({ stream: this.old.stream }, 'outbox in the single-stream layout drained and deleted');
      this.legacySeen = false;
      this.legacyNext.clear();
    }
    return gone;
  }

  async append(body: string, only?: string[]): Promise<AppendResult> {
    const targets = only ?? this.o.sinks;
    const lost: Record<string, number> = {};
    const failed: string[] = [];
    let id = '';
    let firstError: unknown;
    // One write per lane, each in its own slot, all at once. Not atomic across lanes: the
    // caller retries only the lanes that failed, so a retry duplicates nothing that landed.
    const results = await Promise.allSettled(targets.map((sink) => appendEntry(this.o.client, this.lane(sink).stream, this.o.maxLen, body, [sink])));
    results.forEach((r, i) => {
      const sink = targets[i] as string;
      if (r.status === 'fulfilled') {
        id ||= r.value.id;
        const n = r.value.lost[sink];
        if (n) lost[sink] = n;
      } else {
        failed.push(sink);
        firstError ??= r.reason;
      }
    });
    if (failed.length > 0) throw new PartialAppendError(failed, lost, firstError);
    return { id, lost };
  }

  private state(map: Map<string, SinkReadState>, sink: string): SinkReadState {
    let s = map.get(sink);
    if (!s) {
      s = { ownCursor: '0', claimCursor: '0-0', lastClaimScan: 0 };
      map.set(sink, s);
    }
    return s;
  }

  private laneSource(sink: string): Source {
    const k = this.lane(sink);
    return { stream: k.stream, attempts: k.attempts, prefix: '' };
  }

  private legacySource(sink: string): Source {
    return { stream: this.old.stream, attempts: this.old.attempts(sink), prefix: LEGACY };
  }

  /** The source an id handed out belongs to, and the stream id inside it. */
  private where(sink: string, id: string): { src: Source; id: string } {
    return id.startsWith(LEGACY) ? { src: this.legacySource(sink), id: id.slice(LEGACY.length) } : { src: this.laneSource(sink), id };
  }

  async read(sink: string, max: number, signal: AbortSignal): Promise<StoredEntry[]> {
    const legacy = await this.readLegacy(sink, max);
    if (legacy.length > 0) return legacy;
    try {
      return await this.readOnce(this.laneSource(sink), this.state(this.readState, sink), sink, max, signal, true);
    } catch (err) {
      if (isNoGroup(err)) {
        // Redis lost the stream (restart without persistence): recreate and read again soon.
        await this.prepare();
        return [];
      }
      throw err;
    }
  }

  /** Entries of the first layout's stream for `sink`, while it has any (see checkLegacy). */
  private async readLegacy(sink: string, max: number): Promise<StoredEntry[]> {
    const now = Date.now();
    const next = this.legacyNext.get(sink);
    if (next === undefined) {
      // None here: look again now and then, since a daemon of the previous version may still
      // be writing there during a rolling upgrade.
      if (now - this.legacyLookedAt < Math.max(LEGACY_POLL_MS * 10, this.o.claimIdleMs)) return [];
      this.legacyLookedAt = now;
      await this.checkLegacy();
      if (!this.legacyNext.has(sink)) return [];
    } else if (now < next) {
      return [];
    }
    let entries: StoredEntry[];
    try {
      entries = await this.readOnce(this.legacySource(sink), this.state(this.legacyState, sink), sink, max, undefined, false);
    } catch (err) {
      if (!isNoGroup(err)) throw err;
      // No group for this sink there (or the stream is gone): nothing this sink owes.
      entries = [];
    }
    if (entries.length > 0) return entries;
    const s = this.state(this.legacyState, sink);
    // Nothing now; entries held by another consumer become claimable later, so look again.
    this.legacyNext.set(sink, now + Math.min(LEGACY_POLL_MS, Math.max(50, this.o.claimIdleMs / 2)));
    if (s.claimCursor === '0-0' && s.ownCursor === undefined) await this.finishLegacy();
    return [];
  }

  private async readOnce(src: Source, s: SinkReadState, sink: string, max: number, signal: AbortSignal | undefined, block: boolean): Promise<StoredEntry[]> {
    const { stream } = src;
    if (s.ownCursor !== undefined) {
      // Entries this consumer name read before a restart and never acknowledged.
      const raw = await this.o.client.xreadgroup('GROUP', sink, this.o.consumer, 'COUNT', max, 'STREAMS', stream, s.ownCursor);
      const batch = firstStreamEntries(raw);
      const { entries, gone } = parseEntries(batch, src.prefix);
      await this.forget(src, sink, gone);
      const last = Array.isArray(batch) && batch.length > 0 ? (batch[batch.length - 1] as unknown[])[0] : undefined;
      s.ownCursor = typeof last === 'string' && Array.isArray(batch) && batch.length >= max ? last : undefined;
      if (entries.length > 0) return entries;
    }
    const now = Date.now();
    if (s.claimCursor !== '0-0' || now - s.lastClaimScan >= Math.max(50, this.o.claimIdleMs / 2)) {
      const raw = (await this.o.client.call('XAUTOCLAIM', stream, sink, this.o.consumer, String(this.o.claimIdleMs), s.claimCursor, 'COUNT', String(max))) as unknown;
      if (Array.isArray(raw)) {
        const next = typeof raw[0] === 'string' ? raw[0] : '0-0';
        if (next === '0-0') s.lastClaimScan = now;
        s.claimCursor = next;
        const { entries, gone } = parseEntries(raw[1], src.prefix);
        const deleted = Array.isArray(raw[2]) ? raw[2].map(String) : [];
        if (deleted.length > 0 || gone.length > 0) {
          this.o.logger.warn({ sink, entries: [...deleted, ...gone].slice(0, 20), count: deleted.length + gone.length }, 'outbox entries were trimmed before delivery');
        }
        await this.forget(src, sink, [...gone, ...deleted]);
        if (entries.length > 0) {
          this.o.logger.info({ sink, count: entries.length }, 'outbox took over entries from a stopped consumer');
          return entries;
        }
      }
    }
    if (signal?.aborted) return [];
    if (!block) {
      // The first layout's stream: take what is there, never wait on it.
      const raw = await this.o.client.xreadgroup('GROUP', sink, this.o.consumer, 'COUNT', max, 'STREAMS', stream, '>');
      return parseEntries(firstStreamEntries(raw), src.prefix).entries;
    }
    const raw = await this.o.blockingClient(sink).xreadgroup('GROUP', sink, this.o.consumer, 'COUNT', max, 'BLOCK', this.o.blockMs, 'STREAMS', stream, '>');
    return parseEntries(firstStreamEntries(raw), src.prefix).entries;
  }

  /** Acknowledge ids whose stream entry no longer exists (trimmed). */
  private async forget(src: Source, sink: string, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.o.client.multi().xack(src.stream, sink, ...ids).hdel(src.attempts, ...ids).exec();
  }

  async attempt(sink: string, handle: string): Promise<number> {
    const { src, id } = this.where(sink, handle);
    const n = Number(await withScripts(this.o.client).t1612dOutboxAttempt(src.attempts, id, this.o.attemptsTtlMs));
    if (!Number.isInteger(n) || n < 1) throw new Error('unexpected reply from the outbox attempt script');
    return n;
  }

  async ack(sink: string, handle: string): Promise<void> {
    const { src, id } = this.where(sink, handle);
    await withScripts(this.o.client).t1612dOutboxAck(src.stream, src.attempts, sink, id);
  }

  async deadLetter(sink: string, entry: StoredEntry, info: DeadLetterInfo): Promise<void> {
    const { src, id } = this.where(sink, entry.id);
    const dead = this.lane(sink).dead;
    const alertId = /"id"\s*:\s*"([^"]{1,200})"/.exec(entry.body)?.[1] ?? '';
    const fields = [
      'alert',
      entry.body,
      'sink',
      sink,
      'error',
      truncate(info.error, 1000),
      'status',
      info.status !== undefined ? String(info.status) : '',
      'response',
      truncate(info.responseBody ?? '', 1000),
      'attempts',
      String(info.attempts),
      'entry',
      id,
      'alert_id',
      alertId,
      'failed_at',
      new Date().toISOString(),
      'consumer',
      this.o.consumer,
    ];
    if (src.prefix === '') {
      // The lane's stream, dead letters and attempt counts share a slot: one transaction.
      const res = await this.o.client
        .multi()
        .xadd(dead, 'MAXLEN', '~', this.o.maxLen, '*', ...fields)
        .pexpire(dead, DEAD_TTL_MS)
        .xack(src.stream, sink, id)
        .hdel(src.attempts, id)
        .exec();
      throwIfFailed(res);
      return;
    }
    // An entry of the first layout: its stream is in another slot. Record first, then forget;
    // a crash in between delivers it again and may record it twice (at least once).
    throwIfFailed(await this.o.client.multi().xadd(dead, 'MAXLEN', '~', this.o.maxLen, '*', ...fields).pexpire(dead, DEAD_TTL_MS).exec());
    throwIfFailed(await this.o.client.multi().xack(src.stream, sink, id).hdel(src.attempts, id).exec());
  }

  async keepAlive(sink: string, handles: string[]): Promise<void> {
    const bySource = new Map<string, { src: Source; ids: string[] }>();
    for (const h of handles) {
      const { src, id } = this.where(sink, h);
      let g = bySource.get(src.stream);
      if (!g) bySource.set(src.stream, (g = { src, ids: [] }));
      g.ids.push(id);
    }
    for (const { src, ids } of bySource.values()) {
      for (let i = 0; i < ids.length; i += 500) {
        const chunk = ids.slice(i, i + 500);
        await this.o.client.call('XCLAIM', src.stream, sink, this.o.consumer, '0', ...chunk, 'JUSTID');
      }
    }
  }

  async pending(): Promise<number> {
    let worst = 0;
    for (const sink of this.o.sinks) {
      let n = await streamBacklog(this.o.client, this.lane(sink).stream, [sink]);
      if (this.legacySeen) n += await streamBacklog(this.o.client, this.old.stream, [sink]);
      worst = Math.max(worst, n);
    }
    return worst;
  }

  async deadLetterCount(): Promise<number> {
    let n = 0;
    for (const sink of this.o.sinks) n += await this.o.client.xlen(this.lane(sink).dead);
    // Dead letters of the first layout not moved to their lanes yet.
    return n + (await this.o.client.xlen(this.old.dead));
  }

  async replayDeadLetters(sink?: string): Promise<number> {
    if (this.legacySeen) await moveLegacyDead(this.o.client, this.o.prefix, this.o.environment, this.o.maxLen, this.o.logger);
    let moved = 0;
    for (const s of sink !== undefined ? [sink] : this.o.sinks) moved += await replayDead(this.o.client, s, this.lane(s), this.o.maxLen, this.o.logger);
    return moved;
  }

  async close(): Promise<void> {
    // Connections belong to the outbox, which closes them.
  }
}

/** XREADGROUP reply `[[key, entries]]` -> entries of the only stream. */
function firstStreamEntries(raw: unknown): unknown {
  if (!Array.isArray(raw) || raw.length === 0) return [];
  const first = raw[0] as unknown;
  return Array.isArray(first) ? first[1] : [];
}

function throwIfFailed(res: [Error | null, unknown][] | null): void {
  if (!res) throw new Error('transaction aborted');
  for (const [err] of res) if (err) throw err;
}

/** XGROUP CREATE at `$` unless it exists. New sinks see new alerts, not the stream's history. */
export async function ensureGroup(client: RedisClient, stream: string, group: string): Promise<void> {
  try {
    await client.xgroup('CREATE', stream, group, '$', 'MKSTREAM');
  } catch (err) {
    if (!/BUSYGROUP/.test(describeError(err))) throw err;
  }
}

/**
 * Largest backlog among `groups`: pending (read, unacknowledged) + not yet read. The unread
 * count is the group's lag (Redis >= 7), bounded by the stream length since trimmed entries
 * stay in the lag; older servers fall back to counting entries after last-delivered-id.
 */
export async function streamBacklog(client: RedisClient, stream: string, groups: string[]): Promise<number> {
  if (groups.length === 0) return 0;
  let infos: unknown;
  try {
    infos = await client.xinfo('GROUPS', stream);
  } catch (err) {
    if (/no such key/i.test(describeError(err))) return 0;
    throw err;
  }
  const len = await client.xlen(stream);
  let worst = 0;
  if (!Array.isArray(infos)) return 0;
  for (const raw of infos) {
    const g = flatToObject(raw);
    if (!groups.includes(String(g['name']))) continue;
    const pending = Number(g['pending']) || 0;
    let unread: number;
    if (typeof g['lag'] === 'number') {
      unread = Math.min(g['lag'], len);
    } else {
      const after = await client.xrange(stream, `(${String(g['last-delivered-id'] ?? '0-0')}`, '+', 'COUNT', 10_000);
      unread = after.length;
    }
    worst = Math.max(worst, pending + unread);
  }
  return worst;
}

/**
 * Move a lane's dead letters back into its stream, addressed to its sink, then delete each from
 * the dead letters. Not atomic per entry: a crash between the two steps replays that entry
 * twice, which at-least-once delivery allows.
 */
export async function replayDead(client: RedisClient, sink: string, lane: LaneKeys, maxLen: number, logger: Logger): Promise<number> {
  let moved = 0;
  let cursor = '-';
  for (;;) {
    const batch = await client.xrange(lane.dead, cursor, '+', 'COUNT', 200);
    if (batch.length === 0) break;
    for (const [id, fields] of batch) {
      cursor = `(${id}`;
      const body = flatToObject(fields)['alert'];
      if (typeof body !== 'string') {
        logger.warn({ entry: id, sink }, 'dead letter without alert left in place');
        continue;
      }
      // The append script creates the sink's group when it is missing.
      await appendEntry(client, lane.stream, maxLen, body, [sink], [sink]);
      await client.xdel(lane.dead, id);
      moved += 1;
    }
    if (batch.length < 200) break;
  }
  if (moved > 0) logger.info({ moved, sink }, 'dead letters moved back to the outbox');
  return moved;
}

/**
 * Move the first layout's dead letters to the dead letters of the lane of the sink that gave
 * up on each (fields kept as they are), so `outbox replay-dead` finds them. Copy, then delete:
 * a crash in between leaves a copy in both, replayed at most twice.
 */
export async function moveLegacyDead(client: RedisClient, prefix: string, environment: string, maxLen: number, logger: Logger): Promise<number> {
  const old = legacyKeys(prefix, environment).outbox;
  let moved = 0;
  let cursor = '-';
  for (;;) {
    const batch = await client.xrange(old.dead, cursor, '+', 'COUNT', 200);
    if (batch.length === 0) break;
    for (const [id, fields] of batch) {
      cursor = `(${id}`;
      const f = flatToObject(fields);
      const sink = f['sink'];
      if (typeof sink !== 'string' || sink === '' || typeof f['alert'] !== 'string') {
        logger.warn({ entry: id }, 'dead letter of the single-stream layout without alert or sink left in place');
        continue;
      }
      const dead = laneKeys(prefix, environment, sink).dead;
      throwIfFailed(await client.multi().xadd(dead, 'MAXLEN', '~', maxLen, '*', ...fields).pexpire(dead, DEAD_TTL_MS).exec());
      await client.xdel(old.dead, id);
      moved += 1;
    }
    if (batch.length < 200) break;
  }
  if (moved > 0) logger.info({ moved }, 'dead letters of the single-stream layout moved to their lanes');
  return moved;
}

/**
 * Deletes the first layout's stream and attempt counts once no consumer group there has a
 * pending or unread entry, and its dead letters once empty, in one script (one slot) so an
 * alert appended meanwhile by a daemon of the previous version is never deleted unread.
 * Returns 1 once the stream is gone.
 */
const FINISH_LEGACY_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 1 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local pending, last = 0, '0-0'
    for j = 1, #g, 2 do
      if g[j] == 'pending' then pending = g[j + 1] elseif g[j] == 'last-delivered-id' then last = g[j + 1] end
    end
    if pending > 0 then return 0 end
    if #redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1) > 0 then return 0 end
  end
  redis.call('DEL', KEYS[1])
end
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('XLEN', KEYS[2]) == 0 then redis.call('DEL', KEYS[2]) end
return 1
`;

export async function finishLegacyOutbox(client: RedisClient, old: LegacyOutboxKeys): Promise<boolean> {
  let groups: string[] = [];
  try {
    const infos = await client.xinfo('GROUPS', old.stream);
    if (Array.isArray(infos)) groups = infos.map((g) => String(flatToObject(g)['name']));
  } catch (err) {
    if (!/no such key/i.test(describeError(err))) throw err;
  }
  const keys = [old.stream, old.dead, ...groups.map((g) => old.attempts(g))];
  const res = await client.eval(FINISH_LEGACY_SCRIPT, keys.length, ...keys);
  return Number(res) === 1;
}
