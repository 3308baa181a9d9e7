/**
 * The first-seen set in Redis. All decisions run in Lua so they are atomic across daemons:
 * `ZSCORE` + `ZADD` of one IP cannot interleave with another daemon's, so exactly one
 * observer of a new IP is told `isNew`. One script call decides a whole batch (the correlator
 * never awaits Redis once per event).
 */
import type { RedisClient } from './connection.js';
import type { DecideBatch, DecideItem, DecideOptions, DecideResult, FirstSeenStore, ObserveResult } from '../first-seen.js';
import { envKeys } from './keys.js';

// KEYS: known, first, learning, claim keys...
// ARGV: now, retention, learningMs, learningCandidate, learningTtl, claimTtl, then per item:
//       ip, eventTime, token, claim KEYS index (0 = none).
// Returns: learningStart (-1 = none), then per item isNew, firstSeenAt, learning, claimed.
const DECIDE_LUA = `
local now = tonumber(ARGV[1])
local cutoff = now - tonumber(ARGV[2])
local learnMs = tonumber(ARGV[3])
local learnStart = -1
if learnMs > 0 then
  redis.call('SET', KEYS[3], ARGV[4], 'NX')
  learnStart = tonumber(redis.call('GET', KEYS[3])) or tonumber(ARGV[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
local claimTtl = ARGV[6]
local out = {learnStart}
local i = 7
while i <= #ARGV do
  local ip, t, token, ci = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  local isNew, first = 0, now
  local score = redis.call('ZSCORE', KEYS[1], ip)
  if score and tonumber(score) >= cutoff then
    if tonumber(score) < now then redis.call('ZADD', KEYS[1], now, ip) end
    local rec = redis.call('HGET', KEYS[2], ip)
    if rec then
      local bar = string.find(rec, '|', 1, true)
      first = tonumber(bar and string.sub(rec, 1, bar - 1) or rec) or now
      if token ~= '' and bar and string.sub(rec, bar + 1) == token then isNew = 1 end
    end
  else
    redis.call('ZADD', KEYS[1], now, ip)
    redis.call('HSET', KEYS[2], ip, now .. '|' .. token)
    isNew = 1
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

// KEYS: known, first. ARGV: cutoff, limit. Drops IPs last seen before cutoff; returns ZCARD.
const MAINTAIN_LUA = `
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, ip in ipairs(old) do
  redis.call('ZREM', KEYS[1], ip)
  redis.call('HDEL', KEYS[2], ip)
end
return {#old, redis.call('ZCARD', KEYS[1])}
`;

const CLAIM_LUA = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
`;

type ScriptFn = (...args: (string | number)[]) => Promise<unknown>;

interface Scripted {
  t1612dDecide: ScriptFn;
  t1612dMaintain: ScriptFn;
  t1612dClaim: ScriptFn;
}

const MAINTAIN_CHUNK = 1000;

export class RedisFirstSeenStore implements FirstSeenStore {
  private readonly scripts: Scripted;

  constructor(
    client: RedisClient,
    private readonly prefix: string,
  ) {
    client.defineCommand('t1612dDecide', { lua: DECIDE_LUA });
    client.defineCommand('t1612dMaintain', { lua: MAINTAIN_LUA, numberOfKeys: 2 });
    client.defineCommand('t1612dClaim', { lua: CLAIM_LUA, numberOfKeys: 1 });
    // defineCommand adds methods ioredis cannot type.
    this.scripts = client as unknown as Scripted;
  }

  async observe(environment: string, ip: string, timeMs: number, retentionMs: number): Promise<ObserveResult> {
    const {
      results: [r],
    } = await this.decide(environment, [{ ip, eventTimeMs: timeMs, token: '', claim: null }], {
      nowMs: timeMs,
      retentionMs,
      learningPeriodMs: 0,
      learningStartCandidate: timeMs,
      claimTtlMs: 1,
    });
    return { isNew: r?.isNew ?? false, firstSeenAt: r?.firstSeenAt ?? timeMs };
  }

  async decide(environment: string, items: readonly DecideItem[], o: DecideOptions): Promise<DecideBatch> {
    if (items.length === 0) return { results: [], learningStart: null };
    const k = envKeys(this.prefix, environment);
    const keys = [k.known, k.first, k.learning];
    const args: (string | number)[] = [
      o.nowMs,
      o.retentionMs,
      o.learningPeriodMs,
      o.learningStartCandidate,
      Math.max(1, o.retentionMs + o.learningPeriodMs),
      Math.max(1, o.claimTtlMs),
    ];
    for (const it of items) {
      let ci = 0;
      if (it.claim !== null) {
        keys.push(k.alerted(it.claim, it.ip));
        ci = keys.length;
      }
      args.push(it.ip, it.eventTimeMs, it.token, ci);
    }
    const reply = (await this.scripts.t1612dDecide(keys.length, ...keys, ...args)) as number[];
    const out: DecideResult[] = [];
    for (let i = 0; i < items.length; i++) {
      const b = 1 + i * 4;
      out.push({
        isNew: reply[b] === 1,
        firstSeenAt: Number(reply[b + 1]),
        learning: reply[b + 2] === 1,
        claimed: reply[b + 3] === 1,
      });
    }
    const start = Number(reply[0]);
    return { results: out, learningStart: start >= 0 ? start : null };
  }

  async claim(environment: string, sessionId: string, ip: string, token: string, ttlMs: number): Promise<boolean> {
    const key = envKeys(this.prefix, environment).alerted(sessionId, ip);
    return (await this.scripts.t1612dClaim(key, token, Math.max(1, ttlMs))) === 1;
  }

  async maintain(environment: string, nowMs: number, retentionMs: number): Promise<number> {
    const k = envKeys(this.prefix, environment);
    for (;;) {
      const [removed, size] = (await this.scripts.t1612dMaintain(
        k.known,
        k.first,
        nowMs - retentionMs,
        MAINTAIN_CHUNK,
      )) as [number, number];
      if (removed < MAINTAIN_CHUNK) return size;
    }
  }
}
