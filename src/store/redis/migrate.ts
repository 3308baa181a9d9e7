/**
 * Moving the first layout's known-IP set (`{p:e}:known` ZSET + `{p:e}:first` HASH, one slot)
 * into the sharded buckets, a chunk at a time. Order keeps every IP findable: a chunk is
 * written to its buckets before it is removed from the old set, and decisions read the old
 * set first while it exists (first-seen.ts). An entry refreshed by a daemon of the first
 * layout between read and removal keeps its place and is moved again with the next chunk.
 * Run by maintenance (one daemon at a time, under a lock) and by `t1612d migrate`.
 */
import type { RedisClient } from './connection.js';
import { envKeys, legacyKeys } from './keys.js';
import { markArgs, type EnvLayout } from './layout.js';
import { bucketOf, ipField, pipelinePerNode } from './slots.js';

const CHUNK = 1000;
const LOCK_MS = 60_000;

// KEYS: legacy known, legacy first. ARGV: count. Returns ip, last-seen score, first-seen (or '') triples.
const READ_LUA = `
local page = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local out = {}
for i = 1, #page, 2 do
  local rec = redis.call('HGET', KEYS[2], page[i]) or ''
  local bar = string.find(rec, '|', 1, true)
  out[#out + 1] = page[i]
  out[#out + 1] = page[i + 1]
  out[#out + 1] = bar and string.sub(rec, 1, bar - 1) or rec
end
return out
`;

// KEYS: bucket. ARGV: per IP field, last minute, first minute. Keeps the later last-seen, the
// earlier first-seen and any decide token already there.
const MERGE_LUA = `
local P = 67108864
for i = 1, #ARGV, 3 do
  local last, fmin = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local rec = redis.call('HGET', KEYS[1], ARGV[i])
  local rest = ''
  if rec then
    local bar = string.find(rec, '|', 1, true)
    local packed = tonumber(bar and string.sub(rec, 1, bar - 1) or rec) or 0
    local l = packed % P
    local f = (packed - l) / P
    if l > last then last = l end
    if f < fmin then fmin = f end
    if bar then rest = string.sub(rec, bar) end
  end
  redis.call('HSET', KEYS[1], ARGV[i], string.format('%d', fmin * P + last) .. rest)
end
return 1
`;

// KEYS: legacy known, legacy first. ARGV: ip, score pairs (as read). Removes the entries whose
// score did not change since; deletes both keys once the set is empty. Returns what is left.
const DROP_LUA = `
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
local left = redis.call('ZCARD', KEYS[1])
if left == 0 then redis.call('DEL', KEYS[1], KEYS[2]) end
return left
`;

type ScriptFn = (...args: (string | number | Buffer)[]) => Promise<unknown>;
type PipeScript = (...args: (string | number | Buffer)[]) => unknown;
/** The merge script as queued on a pipeline. */
interface PipeScripts {
  t1612dMigrateMerge: PipeScript;
}
interface Scripted {
  t1612dMigrateRead: ScriptFn;
  t1612dMigrateDrop: ScriptFn;
}

const defined = new WeakSet<RedisClient>();
function scripts(client: RedisClient): Scripted {
  if (!defined.has(client)) {
    client.defineCommand('t1612dMigrateRead', { lua: READ_LUA, numberOfKeys: 2 });
    client.defineCommand('t1612dMigrateMerge', { lua: MERGE_LUA, numberOfKeys: 1 });
    client.defineCommand('t1612dMigrateDrop', { lua: DROP_LUA, numberOfKeys: 2 });
    defined.add(client);
  }
  // defineCommand adds methods ioredis cannot type.
  return client as unknown as Scripted;
}

export interface MigrateOptions {
  nowMs: number;
  retentionMs: number;
  /** Lock holder name. */
  owner: string;
  /** Called after each chunk with the running totals. */
  progress?: (moved: number, expired: number) => void;
}

export interface MigrateResult {
  /** IPs written to the buckets. */
  moved: number;
  /** IPs past the retention, dropped instead. */
  expired: number;
  /** False when another daemon holds the migration lock (nothing was done). */
  ran: boolean;
}

export async function migrateLegacy(
  client: RedisClient,
  prefix: string,
  layout: EnvLayout,
  o: MigrateOptions,
): Promise<MigrateResult> {
  const s = scripts(client);
  const k = envKeys(prefix, layout.environment);
  const lk = legacyKeys(prefix, layout.environment);
  const result: MigrateResult = { moved: 0, expired: 0, ran: false };
  const got = await client.set(k.migrateLock, o.owner, 'PX', LOCK_MS, 'NX');
  if (got === null) return result;
  result.ran = true;
  const cutoffMs = o.nowMs - o.retentionMs;
  let before = Number.POSITIVE_INFINITY;
  try {
    for (;;) {
      const flat = (await s.t1612dMigrateRead(lk.known, lk.first, CHUNK)) as string[];
      if (flat.length === 0) {
        await client.del(lk.known, lk.first);
        break;
      }
      const byBucket = new Map<number, (string | number | Buffer)[]>();
      const seen: string[] = [];
      for (let i = 0; i < flat.length; i += 3) {
        const ip = flat[i] ?? '';
        const score = flat[i + 1] ?? '0';
        const lastMs = Number(score);
        const firstMs = Number(flat[i + 2]) || lastMs;
        seen.push(ip, score);
        if (!(lastMs >= cutoffMs)) {
          result.expired++;
          continue;
        }
        const field = ipField(ip);
        const b = bucketOf(field, layout.buckets);
        let args = byBucket.get(b);
        if (!args) byBucket.set(b, (args = []));
        args.push(field, Math.max(0, Math.floor(lastMs / 60_000)), Math.max(0, Math.floor(firstMs / 60_000)));
        result.moved++;
      }
      if (byBucket.size > 0) {
        await client.call('BITFIELD', k.used, ...markArgs(byBucket.keys()));
        for (const b of byBucket.keys()) layout.marked[b] = 1;
      }
      await pipelinePerNode(
        client,
        [...byBucket],
        ([b]) => k.bucket(b),
        (pipe, [b, args]) => (pipe as unknown as PipeScripts).t1612dMigrateMerge(k.bucket(b), ...args),
      );
      const left = Number(await s.t1612dMigrateDrop(lk.known, lk.first, ...seen));
      o.progress?.(result.moved, result.expired);
      if (left === 0) break;
      // Nothing could be removed (every entry refreshed under us): the next run goes on.
      if (left >= before) return result;
      before = left;
      await client.pexpire(k.migrateLock, LOCK_MS);
    }
    layout.legacy = false;
  } finally {
    if ((await client.get(k.migrateLock)) === o.owner) await client.del(k.migrateLock);
  }
  return result;
}
