/**
 * The durable outbox: one Redis Stream per environment, one consumer group per sink, one
 * consumer per daemon instance. Keys share the hash tag `{<prefix>:<env>}` (Redis Cluster):
 *
 * - `{p:e}:outbox`                 stream of alerts (`alert` = body, `at` = ms, `sinks` = replay target), `MAXLEN ~ outbox_max_len`
 * - `{p:e}:outbox:dead`            dead letters (`alert`, `sink`, `error`, `status`, `response`, `attempts`, `entry`, `alert_id`, `failed_at`, `consumer`), `MAXLEN ~ outbox_max_len`
 * - `{p:e}:outbox:attempts:<sink>` hash entry id -> attempts started (TTL, refreshed on each attempt)
 *
 * An entry is acknowledged (XACK) per group when its sink delivered it or gave up on it, so
 * each sink is independently at-least-once. Entries read but not acknowledged by a stopped or
 * crashed consumer are taken over with XAUTOCLAIM once idle for `claimIdleMs`; a consumer keeps
 * the entries it is working on fresh (XCLAIM JUSTID) so nobody steals them mid-retry.
 *
 * Appends go through one Lua script that also recreates missing groups (a Redis that lost its
 * data) and counts the undelivered entries that the length cap trimmed. Needs Redis >= 6.2
 * (XAUTOCLAIM); counting trimmed unread entries needs >= 7.0 (group lag).
 */
import type { Logger } from 'pino';
import type { RedisClient } from '../store/redis/connection.js';
import { describeError } from '../model/errors.js';
import { truncate } from '../ops/logger.js';
import type { AppendResult, DeadLetterInfo, OutboxStore, StoredEntry } from './outbox-store.js';

/** Keys of one environment's outbox. */
export function outboxKeys(prefix: string, environment: string): { stream: string; dead: string; attempts: (sink: string) => string } {
  const tag = `{${prefix}:${environment}}`;
  return {
    stream: `${tag}:outbox`,
    dead: `${tag}:outbox:dead`,
    attempts: (sink) => `${tag}:outbox:attempts:${sink}`,
  };
}

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

interface AppendCommand {
  t1612dOutboxAppend(key: string, ...args: (string | number)[]): Promise<unknown>;
}

/** Register the append script on a client (idempotent). */
function withAppend(client: RedisClient): AppendCommand {
  // defineCommand adds methods at run time that ioredis's types cannot know about.
  const c = client as unknown as Partial<AppendCommand> & RedisClient;
  if (typeof c.t1612dOutboxAppend !== 'function') {
    client.defineCommand('t1612dOutboxAppend', { numberOfKeys: 1, lua: APPEND_SCRIPT });
  }
  return client as unknown as AppendCommand;
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
  const reply = await withAppend(client).t1612dOutboxAppend(stream, maxLen, body, Date.now(), targetSinks ? targetSinks.join(',') : '', ...groups);
  if (!Array.isArray(reply) || typeof reply[0] !== 'string') throw new Error('unexpected reply from the outbox append script');
  const lost: Record<string, number> = {};
  for (let i = 1; i + 1 < reply.length; i += 2) {
    const n = Number(reply[i + 1]);
    if (n > 0) lost[String(reply[i])] = n;
  }
  return { id: reply[0], lost };
}

/** `[[id, [k, v, ...] | null], ...]` -> entries; deleted entries (null fields) are returned in `gone`. */
function parseEntries(raw: unknown): { entries: StoredEntry[]; gone: string[] } {
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
      id,
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

interface SinkReadState {
  /** Cursor through this consumer's own pending entries (a previous run under the same name). */
  ownCursor: string | undefined;
  claimCursor: string;
  lastClaimScan: number;
}

export class RedisOutboxStore implements OutboxStore {
  readonly kind = 'redis' as const;
  private readonly keys: ReturnType<typeof outboxKeys>;
  private readonly readState = new Map<string, SinkReadState>();

  constructor(private readonly o: RedisOutboxStoreOptions) {
    this.keys = outboxKeys(o.prefix, o.environment);
  }

  get streamKey(): string {
    return this.keys.stream;
  }

  get deadKey(): string {
    return this.keys.dead;
  }

  async prepare(): Promise<void> {
    for (const sink of this.o.sinks) await ensureGroup(this.o.client, this.keys.stream, sink);
  }

  append(body: string): Promise<AppendResult> {
    return appendEntry(this.o.client, this.keys.stream, this.o.maxLen, body, this.o.sinks);
  }

  private state(sink: string): SinkReadState {
    let s = this.readState.get(sink);
    if (!s) {
      s = { ownCursor: '0', claimCursor: '0-0', lastClaimScan: 0 };
      this.readState.set(sink, s);
    }
    return s;
  }

  async read(sink: string, max: number, signal: AbortSignal): Promise<StoredEntry[]> {
    try {
      return await this.readOnce(sink, max, signal);
    } catch (err) {
      if (isNoGroup(err)) {
        // Redis lost the stream (restart without persistence): recreate and read again soon.
        await this.prepare();
        return [];
      }
      throw err;
    }
  }

  private async readOnce(sink: string, max: number, signal: AbortSignal): Promise<StoredEntry[]> {
    const s = this.state(sink);
    const { stream } = this.keys;
    if (s.ownCursor !== undefined) {
      // Entries this consumer name read before a restart and never acknowledged.
      const raw = await this.o.client.xreadgroup('GROUP', sink, this.o.consumer, 'COUNT', max, 'STREAMS', stream, s.ownCursor);
      const batch = firstStreamEntries(raw);
      const { entries, gone } = parseEntries(batch);
      await this.forget(sink, gone);
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
        const { entries, gone } = parseEntries(raw[1]);
        const deleted = Array.isArray(raw[2]) ? raw[2].map(String) : [];
        if (deleted.length > 0 || gone.length > 0) {
          this.o.logger.warn({ sink, entries: [...deleted, ...gone].slice(0, 20), count: deleted.length + gone.length }, 'outbox entries were trimmed before delivery');
        }
        await this.forget(sink, [...gone, ...deleted]);
        if (entries.length > 0) {
          this.o.logger.info({ sink, count: entries.length }, 'outbox took over entries from a stopped consumer');
          return entries;
        }
      }
    }
    if (signal.aborted) return [];
    const raw = await this.o.blockingClient(sink).xreadgroup('GROUP', sink, this.o.consumer, 'COUNT', max, 'BLOCK', this.o.blockMs, 'STREAMS', stream, '>');
    return parseEntries(firstStreamEntries(raw)).entries;
  }

  /** Acknowledge ids whose stream entry no longer exists (trimmed). */
  private async forget(sink: string, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.o.client.multi().xack(this.keys.stream, sink, ...ids).hdel(this.keys.attempts(sink), ...ids).exec();
  }

  async attempt(sink: string, id: string): Promise<number> {
    const key = this.keys.attempts(sink);
    const res = await this.o.client.multi().hincrby(key, id, 1).pexpire(key, this.o.attemptsTtlMs).exec();
    const first = res?.[0];
    if (!first || first[0]) throw first?.[0] ?? new Error('attempt count transaction aborted');
    return Number(first[1]);
  }

  async ack(sink: string, id: string): Promise<void> {
    const res = await this.o.client.multi().xack(this.keys.stream, sink, id).hdel(this.keys.attempts(sink), id).exec();
    throwIfFailed(res);
  }

  async deadLetter(sink: string, entry: StoredEntry, info: DeadLetterInfo): Promise<void> {
    const alertId = /"id"\s*:\s*"([^"]{1,200})"/.exec(entry.body)?.[1] ?? '';
    const res = await this.o.client
      .multi()
      .xadd(
        this.keys.dead,
        'MAXLEN',
        '~',
        this.o.maxLen,
        '*',
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
        entry.id,
        'alert_id',
        alertId,
        'failed_at',
        new Date().toISOString(),
        'consumer',
        this.o.consumer,
      )
      .pexpire(this.keys.dead, DEAD_TTL_MS)
      .xack(this.keys.stream, sink, entry.id)
      .hdel(this.keys.attempts(sink), entry.id)
      .exec();
    throwIfFailed(res);
  }

  async keepAlive(sink: string, ids: string[]): Promise<void> {
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500);
      await this.o.client.call('XCLAIM', this.keys.stream, sink, this.o.consumer, '0', ...chunk, 'JUSTID');
    }
  }

  async pending(): Promise<number> {
    return streamBacklog(this.o.client, this.keys.stream, this.o.sinks);
  }

  async deadLetterCount(): Promise<number> {
    return this.o.client.xlen(this.keys.dead);
  }

  replayDeadLetters(sink?: string): Promise<number> {
    return replayDead(this.o.client, this.keys, this.o.maxLen, this.o.logger, sink);
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
 * Move dead letters back into the outbox, each addressed to the sink that gave up on it (other
 * sinks skip it), then delete it from the dead letters. Not atomic per entry: a crash between
 * the two steps replays that entry twice, which at-least-once delivery allows.
 */
export async function replayDead(
  client: RedisClient,
  keys: ReturnType<typeof outboxKeys>,
  maxLen: number,
  logger: Logger,
  onlySink?: string,
): Promise<number> {
  let moved = 0;
  let cursor = '-';
  for (;;) {
    const batch = await client.xrange(keys.dead, cursor, '+', 'COUNT', 200);
    if (batch.length === 0) break;
    for (const [id, fields] of batch) {
      cursor = `(${id}`;
      const f = flatToObject(fields);
      const sink = typeof f['sink'] === 'string' ? f['sink'] : '';
      const body = typeof f['alert'] === 'string' ? f['alert'] : undefined;
      if (onlySink !== undefined && sink !== onlySink) continue;
      if (body === undefined || sink === '') {
        logger.warn({ entry: id }, 'dead letter without alert or sink left in place');
        continue;
      }
      // The append script creates the sink's group when it is missing.
      await appendEntry(client, keys.stream, maxLen, body, [sink], [sink]);
      await client.xdel(keys.dead, id);
      moved += 1;
    }
    if (batch.length < 200) break;
  }
  if (moved > 0) logger.info({ moved, sink: onlySink ?? 'all' }, 'dead letters moved back to the outbox');
  return moved;
}
