/**
 * Per-environment layout state shared by the Redis stores: how many buckets the known-IP set
 * is cut into (recorded in Redis by the first daemon; the record wins over a different
 * setting, because re-cutting would forget every known IP), whether the first layout's keys
 * are still there (then decisions read both), and the environment's learning start.
 *
 * The learning start is an environment-wide singleton: one `SET NX` in the environment slot
 * decides it for every daemon, and once set it never changes while it exists, so a daemon
 * may cache it and hand it to the bucket scripts (which live in other slots).
 */
import type { RedisClient } from './connection.js';
import { envKeys, legacyKeys } from './keys.js';

/** Layout record version: `2:<buckets>:<created ms>` (the first layout had no record). */
const LAYOUT_VERSION = 2;
/**
 * For this long after the layout record was created, session loads also read the first
 * layout's session keys: builds in progress when the fleet moved keep their sessions.
 */
const LEGACY_SESSIONS_MS = 24 * 3_600_000;

// KEYS: layout, legacy known. ARGV: the record to write when none exists.
// Returns: the record, whether the legacy set exists.
const INIT_LUA = `
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return {redis.call('GET', KEYS[1]), redis.call('EXISTS', KEYS[2])}
`;

// KEYS: learning. ARGV: candidate start, TTL. Returns the start.
const LEARNING_LUA = `
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local start = redis.call('GET', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return start
`;

export interface EnvLayout {
  readonly environment: string;
  readonly buckets: number;
  /** The first layout's known set exists (or did when last looked): decisions read it too. */
  legacy: boolean;
  /** The first layout may still hold sessions: session loads read it too. */
  readonly legacySessions: boolean;
  /** The environment's learning start (ms) once known. */
  learningStart: number | null;
  /** Buckets this daemon has marked in the used-bucket bitmap (1 = marked). */
  readonly marked: Uint8Array;
}

/** BITFIELD arguments marking `buckets` as used (bit n = bucket n). */
export function markArgs(buckets: Iterable<number>): (string | number)[] {
  const args: (string | number)[] = [];
  for (const b of buckets) args.push('SET', 'u1', `#${b}`, 1);
  return args;
}

/** Bucket numbers whose bit is set in a used-bucket bitmap, below `buckets`. */
export function usedBuckets(bitmap: Buffer | null, buckets: number): number[] {
  const out: number[] = [];
  if (!bitmap) return out;
  for (let byte = 0; byte < bitmap.length; byte++) {
    const v = bitmap[byte] ?? 0;
    if (v === 0) continue;
    for (let bit = 0; bit < 8; bit++) {
      const n = byte * 8 + bit;
      if (v & (0x80 >> bit) && n < buckets) out.push(n);
    }
  }
  return out;
}

type ScriptFn = (...args: (string | number | Buffer)[]) => Promise<unknown>;
interface Scripted {
  t1612dInit: ScriptFn;
  t1612dLearning: ScriptFn;
}

export class Layouts {
  private readonly envs = new Map<string, Promise<EnvLayout>>();
  private readonly scripts: Scripted;

  constructor(
    readonly client: RedisClient,
    readonly prefix: string,
    private readonly buckets: number,
    private readonly warn: (fields: Record<string, unknown>, msg: string) => void = () => {},
  ) {
    client.defineCommand('t1612dInit', { lua: INIT_LUA, numberOfKeys: 2 });
    client.defineCommand('t1612dLearning', { lua: LEARNING_LUA, numberOfKeys: 1 });
    // defineCommand adds methods ioredis cannot type.
    this.scripts = client as unknown as Scripted;
  }

  /** The environment's layout; one round trip the first time (retried after a failure). */
  get(environment: string): Promise<EnvLayout> {
    let p = this.envs.get(environment);
    if (!p) {
      p = this.init(environment);
      this.envs.set(environment, p);
      p.catch(() => this.envs.delete(environment));
    }
    return p;
  }

  private async init(environment: string): Promise<EnvLayout> {
    const k = envKeys(this.prefix, environment);
    const wanted = `${LAYOUT_VERSION}:${this.buckets}:${Date.now()}`;
    const [record, legacy] = (await this.scripts.t1612dInit(k.layout, legacyKeys(this.prefix, environment).known, wanted)) as [
      string,
      number,
    ];
    const m = /^2:(\d+)(?::(\d+))?$/.exec(String(record));
    const stored = m ? Number(m[1]) : 0;
    const created = Number(m?.[2] ?? 0);
    if (!(stored >= 1)) throw new Error(`unreadable known-IP layout record ${JSON.stringify(String(record).slice(0, 40))} at ${k.layout}`);
    if (stored !== this.buckets) {
      this.warn(
        { environment, setting: this.buckets, stored },
        'known_ip_buckets differs from the layout the environment was written with; using the stored bucket count',
      );
    }
    return {
      environment,
      buckets: stored,
      legacy: legacy === 1,
      legacySessions: legacy === 1 || Date.now() - created < LEGACY_SESSIONS_MS,
      learningStart: null,
      marked: new Uint8Array(stored),
    };
  }

  /**
   * Set (if unset) and read the learning start, refreshing its TTL. `candidate` is only used
   * by the first daemon of the environment to get there.
   */
  async learning(layout: EnvLayout, candidate: number, ttlMs: number): Promise<number> {
    const k = envKeys(this.prefix, layout.environment);
    const start = Number(await this.scripts.t1612dLearning(k.learning, candidate, Math.max(1, Math.round(ttlMs))));
    layout.learningStart = Number.isFinite(start) ? start : candidate;
    return layout.learningStart;
  }
}
