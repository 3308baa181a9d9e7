/**
 * The first-seen set in Redis, sharded: an IP lives in bucket `fnv1a(address) % buckets`, a
 * small hash in its own cluster slot (keys.ts). A batch is decided by one Lua script on a single
 * Redis, and by one per bucket on a cluster (a script touches one slot there); each is atomic,
 * so of two daemons observing the same new IP exactly one is told `isNew`. The (session, IP)
 * dedupe claim carries the bucket's tag and is taken in the same script. A batch is grouped by
 * the node serving each bucket and pipelined: one round trip per node.
 *
 * Field = the address bytes (4 or 16); value = `<first minute * 2^26 + last minute>` (minutes
 * since the Unix epoch), with `|<first ms>|<decide token>` appended while the token matters
 * (TOKEN_KEEP_MS): a retried decide() whose reply was lost gets the same answer. This keeps
 * an IPv4 entry near 20 bytes in a listpack-encoded hash.
 *
 * Retention: a sweep visits every bucket, a chunk at a time, dropping IPs not seen within the
 * retention and tokens past their time. One daemon sweeps at a time (a lock in the
 * environment slot), and no more often than the set's size warrants.
 *
 * Migration: while the first layout's ZSET exists, decisions first read it (an IP known there
 * is known here, and is copied over), and maintenance moves it into the buckets chunk by
 * chunk (migrate.ts); an IP is always in one of the two.
 */
import type { RedisClient } from './connection.js';
import type { DecideBatch, DecideItem, DecideOptions, DecideResult, FirstSeenStore } from '../first-seen.js';
import { envKeys, legacyKeys } from './keys.js';
import { Layouts, markArgs, usedBuckets, type EnvLayout } from './layout.js';
import { migrateLegacy } from './migrate.js';
import { bucketOf, ipField, isCluster, pipelinePerNode } from './slots.js';

/** How long a decision's token is kept next to its IP (retries of a lost reply come sooner). */
export const TOKEN_KEEP_MS = 24 * 3_600_000;
/** Buckets per sweep step (one pipelined round trip per node). */
/** Items one decide script call takes at most. */
export const SCRIPT_ITEMS = 1_000;

const SWEEP_CHUNK = 256;
/** A sweep of N IPs waits N ms after the last one, at most an hour. */
const SWEEP_MS_PER_IP = 1;
const SWEEP_MAX_INTERVAL_MS = 3_600_000;
/** Lock held by the sweeping daemon (refreshed per chunk). */
const SWEEP_LOCK_MS = 60_000;
const MINUTE = 60_000;

/** Lua: value parsing and packing shared by the scripts. */
const VALUE_LUA = `
local P = 67108864
local function parse(rec)
  local b1 = string.find(rec, '|', 1, true)
  local packed = tonumber(b1 and string.sub(rec, 1, b1 - 1) or rec) or 0
  local last = packed % P
  local fmin = (packed - last) / P
  local fms, tok = nil, nil
  if b1 then
    local b2 = string.find(rec, '|', b1 + 1, true)
    if b2 then
      fms = tonumber(string.sub(rec, b1 + 1, b2 - 1))
      tok = string.sub(rec, b2 + 1)
    end
  end
  return last, fmin, fms, tok
end
local function pack(fmin, last)
  return string.format('%d', fmin * P + last)
end
`;

// KEYS: buckets and claim keys (on a cluster: one bucket and its claim keys, all in its slot).
// ARGV: nowMin, nowMs, cutoffMin, learnStart (-1 = none), learnMs, claimTtl, tokenCutoffMs,
//       then per item: bucket KEYS index, field, eventTime, token, claim KEYS index (0 = none),
//       legacy first ms (-1 = not known there).
// Returns per item: isNew, firstSeenAt, learning, claimed.
const DECIDE_LUA = `${VALUE_LUA}
local nowMin, nowMs, cutoff = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local learnStart, learnMs, claimTtl = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local tokenCutoff = tonumber(ARGV[7])
local out = {}
local i = 8
while i <= #ARGV do
  local key = KEYS[tonumber(ARGV[i])]
  local field, t, token, ci, legacyFirst = ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  i = i + 6
  local isNew, first, known = 0, nowMs, false
  local rec = redis.call('HGET', key, field)
  if rec then
    local last, fmin, fms, tok = parse(rec)
    if last >= cutoff then
      known = true
      first = fms or fmin * 60000
      if token ~= '' and tok == token then isNew = 1 end
      if last < nowMin then
        local v = pack(fmin, nowMin)
        if tok and fms and fms >= tokenCutoff then v = v .. '|' .. string.format('%d', fms) .. '|' .. tok end
        redis.call('HSET', key, field, v)
      end
    end
  end
  if not known then
    if legacyFirst >= 0 then
      first = legacyFirst
      redis.call('HSET', key, field, pack(math.max(0, math.floor(legacyFirst / 60000)), nowMin))
    else
      local v = pack(nowMin, nowMin)
      if token ~= '' then v = v .. '|' .. string.format('%d', nowMs) .. '|' .. token end
      redis.call('HSET', key, field, v)
      isNew = 1
    end
  end
  local learning = 0
  if learnStart >= 0 and t < learnStart + learnMs then learning = 1 end
  local claimed = 0
  if isNew == 1 and learning == 0 and ci > 0 then
    if redis.call('SET', KEYS[ci], token, 'NX', 'PX', claimTtl) then
      claimed = 1
    elseif token ~= '' and redis.call('GET', KEYS[ci]) == token then
      claimed = 1
    end
  end
  out[#out + 1] = isNew
  out[#out + 1] = first
  out[#out + 1] = learning
  out[#out + 1] = claimed
end
return out
`;

// KEYS: bucket. ARGV: cutoffMin, tokenCutoffMs. Drops IPs last seen before the cutoff and
// tokens past theirs. Returns: IPs left, IPs dropped, 1 when the hash is still compactly encoded.
const SWEEP_LUA = `${VALUE_LUA}
local cutoff, tokenCutoff = tonumber(ARGV[1]), tonumber(ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local removed = 0
for i = 1, #all, 2 do
  local last, fmin, fms, tok = parse(all[i + 1])
  if last < cutoff then
    redis.call('HDEL', KEYS[1], all[i])
    removed = removed + 1
  elseif tok and not (fms and fms >= tokenCutoff) then
    redis.call('HSET', KEYS[1], all[i], pack(fmin, last))
  end
end
local n = redis.call('HLEN', KEYS[1])
local compact = 1
if n > 0 then
  local enc = redis.call('OBJECT', 'ENCODING', KEYS[1])
  if enc ~= 'listpack' and enc ~= 'ziplist' then compact = 0 end
end
return {n, removed, compact}
`;

// KEYS: sweep state, sweep lock. ARGV: nowMs, owner, lockMs, msPerIp, maxIntervalMs.
// Returns: 1 when the caller may sweep now (and holds the lock), the count of the last sweep.
const SWEEP_BEGIN_LUA = `
local at = tonumber(redis.call('HGET', KEYS[1], 'at'))
local count = tonumber(redis.call('HGET', KEYS[1], 'count')) or -1
local now = tonumber(ARGV[1])
if at and count >= 0 and now >= at and now - at < math.min(count * tonumber(ARGV[4]), tonumber(ARGV[5])) then
  return {0, count}
end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {0, count} end
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return {1, count}
`;

// KEYS: sweep state, sweep lock. ARGV: nowMs, count, owner, stateTtlMs.
const SWEEP_END_LUA = `
redis.call('HSET', KEYS[1], 'at', ARGV[1], 'count', ARGV[2], 'by', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
`;

// KEYS: legacy known, legacy first. ARGV: cutoffMs, ips...
// Returns: 1 when the legacy set exists (else just {0}), then per IP its first-seen ms or -1.
const LEGACY_LOOKUP_LUA = `
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local cutoff = tonumber(ARGV[1])
local out = {1}
for i = 2, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  local f = -1
  if s and tonumber(s) >= cutoff then
    f = tonumber(s)
    local rec = redis.call('HGET', KEYS[2], ARGV[i])
    if rec then
      local bar = string.find(rec, '|', 1, true)
      f = tonumber(bar and string.sub(rec, 1, bar - 1) or rec) or f
    end
  end
  out[#out + 1] = f
end
return out
`;

const CLAIM_LUA = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
`;

type ScriptFn = (...args: (string | number | Buffer)[]) => Promise<unknown>;
type PipeScript = (...args: (string | number | Buffer)[]) => unknown;
/** The same scripts queued on a pipeline (t1612dLearning is defined by Layouts). */
interface PipeScripts {
  t1612dDecide3: PipeScript;
  t1612dSweep: PipeScript;
  t1612dLearning: PipeScript;
}

interface Scripted {
  t1612dSweep: ScriptFn;
  t1612dSweepBegin: ScriptFn;
  t1612dSweepEnd: ScriptFn;
  t1612dLegacyLookup: ScriptFn;
  t1612dClaim: ScriptFn;
}

/** Minutes since the Unix epoch (never negative: clocks before 1970 count as 0). */
function minuteOf(ms: number): number {
  return Math.max(0, Math.floor(ms / MINUTE));
}

export interface RedisFirstSeenOptions {
  /** Bucket count for an environment written for the first time (`known_ip_buckets`). */
  buckets: number;
  /** Names this daemon as the holder of the sweep and migration locks. */
  owner?: string;
  warn?: (fields: Record<string, unknown>, msg: string) => void;
}

export class RedisFirstSeenStore implements FirstSeenStore {
  readonly layouts: Layouts;
  private readonly scripts: Scripted;
  private readonly owner: string;
  private readonly warn: (fields: Record<string, unknown>, msg: string) => void;
  private readonly maintaining = new Map<string, Promise<number>>();
  private warnedLoose = false;

  constructor(
    private readonly client: RedisClient,
    private readonly prefix: string,
    options: RedisFirstSeenOptions,
  ) {
    this.warn = options.warn ?? (() => {});
    this.layouts = new Layouts(client, prefix, options.buckets, this.warn);
    this.owner = options.owner ?? `t1612d-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    client.defineCommand('t1612dDecide3', { lua: DECIDE_LUA });
    client.defineCommand('t1612dSweep', { lua: SWEEP_LUA, numberOfKeys: 1 });
    client.defineCommand('t1612dSweepBegin', { lua: SWEEP_BEGIN_LUA, numberOfKeys: 2 });
    client.defineCommand('t1612dSweepEnd', { lua: SWEEP_END_LUA, numberOfKeys: 2 });
    client.defineCommand('t1612dLegacyLookup', { lua: LEGACY_LOOKUP_LUA, numberOfKeys: 2 });
    client.defineCommand('t1612dClaim', { lua: CLAIM_LUA, numberOfKeys: 1 });
    // defineCommand adds methods ioredis cannot type.
    this.scripts = client as unknown as Scripted;
  }

  async decide(environment: string, items: readonly DecideItem[], o: DecideOptions): Promise<DecideBatch> {
    if (items.length === 0) return { results: [], learningStart: null };
    const layout = await this.layouts.get(environment);
    const learningTtl = Math.max(1, o.retentionMs + o.learningPeriodMs);
    let learnStart = -1;
    if (o.learningPeriodMs > 0) {
      learnStart = layout.learningStart ?? (await this.layouts.learning(layout, o.learningStartCandidate, learningTtl));
    }
    const legacyFirst = layout.legacy ? await this.legacyLookup(layout, items, o) : null;

    // Items by script call, in batch order within one (the same IP twice: first one wins). A
    // script may touch keys of one cluster slot only, so on a cluster a call decides one
    // bucket's share; a single Redis takes the whole batch in one call.
    const k = envKeys(this.prefix, environment);
    const fields = items.map((it) => ipField(it.ip));
    const bucketOfItem = fields.map((f) => bucketOf(f, layout.buckets));
    const perBucket = isCluster(this.client);
    const groups = new Map<number, number[]>();
    bucketOfItem.forEach((b, i) => {
      const g = perBucket ? b : 0;
      let list = groups.get(g);
      if (!list) groups.set(g, (list = []));
      list.push(i);
    });
    type Work =
      | { kind: 'decide'; key: string; items: number[] }
      | { kind: 'learning'; key: string }
      | { kind: 'mark'; key: string; buckets: number[] };
    // A call takes at most SCRIPT_ITEMS items (its arguments are spread onto the stack); the
    // calls of one pipeline run in order, so a later call sees what an earlier one recorded.
    const work: Work[] = [];
    for (const list of groups.values()) {
      for (let at = 0; at < list.length; at += SCRIPT_ITEMS) {
        const part = list.slice(at, at + SCRIPT_ITEMS);
        work.push({ kind: 'decide', key: k.bucket(bucketOfItem[part[0] as number] as number), items: part });
      }
    }
    // The learning key's TTL is refreshed with every batch, on the same round trip.
    if (o.learningPeriodMs > 0) work.push({ kind: 'learning', key: k.learning });
    // Buckets this daemon has not marked used yet are marked on the same round trip, so no
    // bucket holds an IP the sweep would not visit.
    const unmarked = [...new Set(bucketOfItem)].filter((b) => layout.marked[b] !== 1);
    if (unmarked.length > 0) work.push({ kind: 'mark', key: k.used, buckets: unmarked });
    const nowMs = o.nowMs;
    const head = [
      minuteOf(nowMs),
      nowMs,
      minuteOf(nowMs - o.retentionMs),
      learnStart,
      o.learningPeriodMs,
      Math.max(1, o.claimTtlMs),
      nowMs - TOKEN_KEEP_MS,
    ];
    const replies = await pipelinePerNode(
      this.client,
      work,
      (w) => w.key,
      (pipe, w) => {
        const p = pipe as unknown as PipeScripts;
        if (w.kind === 'mark') {
          pipe.call('BITFIELD', w.key, ...markArgs(w.buckets));
          return;
        }
        if (w.kind === 'learning') {
          p.t1612dLearning(w.key, o.learningStartCandidate, learningTtl);
          return;
        }
        const keys: string[] = [];
        const keyIndex = new Map<number, number>();
        const args: (string | number | Buffer)[] = [...head];
        for (const i of w.items) {
          const it = items[i] as DecideItem;
          const b = bucketOfItem[i] as number;
          let bi = keyIndex.get(b);
          if (bi === undefined) {
            keys.push(k.bucket(b));
            keyIndex.set(b, (bi = keys.length));
          }
          let ci = 0;
          if (it.claim !== null) {
            keys.push(k.alerted(b, it.claim, it.ip));
            ci = keys.length;
          }
          args.push(bi, fields[i] as Buffer, it.eventTimeMs, it.token, ci, legacyFirst?.[i] ?? -1);
        }
        p.t1612dDecide3(keys.length, ...keys, ...args);
      },
    );
    const out: DecideResult[] = new Array<DecideResult>(items.length);
    for (const w of work) {
      const reply = replies.get(w);
      if (w.kind === 'mark') {
        for (const b of w.buckets) layout.marked[b] = 1;
        continue;
      }
      if (w.kind === 'learning') {
        const start = Number(reply);
        if (Number.isFinite(start)) layout.learningStart = start;
        continue;
      }
      const r = reply as number[];
      w.items.forEach((i, j) => {
        const b = j * 4;
        out[i] = { isNew: r[b] === 1, firstSeenAt: Number(r[b + 1]), learning: r[b + 2] === 1, claimed: r[b + 3] === 1 };
      });
    }
    return { results: out, learningStart: learnStart >= 0 ? learnStart : null };
  }

  /** First-seen ms per item from the first layout (-1 = not known there); clears `legacy` once it is gone. */
  private async legacyLookup(layout: EnvLayout, items: readonly DecideItem[], o: DecideOptions): Promise<number[]> {
    const lk = legacyKeys(this.prefix, layout.environment);
    const reply = (await this.scripts.t1612dLegacyLookup(
      lk.known,
      lk.first,
      o.nowMs - o.retentionMs,
      ...items.map((it) => it.ip),
    )) as number[];
    if (reply[0] !== 1) {
      layout.legacy = false;
      return items.map(() => -1);
    }
    return items.map((_, i) => Number(reply[i + 1]));
  }

  async claim(environment: string, sessionId: string, ip: string, token: string, ttlMs: number): Promise<boolean> {
    const layout = await this.layouts.get(environment);
    const key = envKeys(this.prefix, environment).alerted(bucketOf(ipField(ip), layout.buckets), sessionId, ip);
    return (await this.scripts.t1612dClaim(key, token, Math.max(1, ttlMs))) === 1;
  }

  maintain(environment: string, nowMs: number, retentionMs: number): Promise<number> {
    // One maintenance per environment at a time in this process; callers share its answer.
    let p = this.maintaining.get(environment);
    if (!p) {
      p = this.maintainNow(environment, nowMs, retentionMs).finally(() => this.maintaining.delete(environment));
      this.maintaining.set(environment, p);
    }
    return p;
  }

  private async maintainNow(environment: string, nowMs: number, retentionMs: number): Promise<number> {
    const layout = await this.layouts.get(environment);
    if (layout.legacy) {
      await migrateLegacy(this.client, this.prefix, layout, { nowMs, retentionMs, owner: this.owner });
    }
    return this.sweep(layout, nowMs, retentionMs);
  }

  /** Sweep every bucket if it is this daemon's turn; returns the set's size (as last swept). */
  private async sweep(layout: EnvLayout, nowMs: number, retentionMs: number): Promise<number> {
    const k = envKeys(this.prefix, layout.environment);
    const [mine, last] = (await this.scripts.t1612dSweepBegin(
      k.sweep,
      k.sweepLock,
      nowMs,
      this.owner,
      SWEEP_LOCK_MS,
      SWEEP_MS_PER_IP,
      SWEEP_MAX_INTERVAL_MS,
    )) as [number, number];
    if (mine !== 1) return Math.max(0, Number(last));
    let count = 0;
    let loose = 0;
    const cutoff = minuteOf(nowMs - retentionMs);
    const used = usedBuckets(await this.client.getBuffer(k.used), layout.buckets);
    for (let from = 0; from < used.length; from += SWEEP_CHUNK) {
      const chunk = used.slice(from, from + SWEEP_CHUNK);
      const replies = await pipelinePerNode(
        this.client,
        chunk,
        (b) => k.bucket(b),
        (pipe, b) => (pipe as unknown as PipeScripts).t1612dSweep(k.bucket(b), cutoff, nowMs - TOKEN_KEEP_MS),
      );
      for (const r of replies.values()) {
        const [n, , compact] = r as [number, number, number];
        count += Number(n);
        if (compact === 0) loose++;
      }
      await this.client.pexpire(k.sweepLock, SWEEP_LOCK_MS);
    }
    await this.scripts.t1612dSweepEnd(k.sweep, k.sweepLock, nowMs, count, this.owner, 2 * SWEEP_MAX_INTERVAL_MS + SWEEP_LOCK_MS);
    if (loose > 0 && !this.warnedLoose) {
      this.warnedLoose = true;
      this.warn(
        { environment: layout.environment, buckets: layout.buckets, looseBuckets: loose, ips: count },
        'known-IP buckets outgrew the compact hash encoding (several times the memory per IP): raise hash-max-listpack-entries (docs/deploy.md, Sizing and Redis)',
      );
    }
    return count;
  }
}
