/**
 * Spreading work over a Redis Cluster: the hash slot of a key (CRC16 of its hash tag, as
 * Redis computes it), IP -> known-IP bucket, and pipelines grouped by the node that serves
 * each slot, so a batch costs one round trip per node whatever the number of buckets.
 */
import { Cluster } from 'ioredis';
import type { RedisClient } from './connection.js';

/** CRC16/XMODEM, the checksum Redis Cluster uses for slots. */
function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** The cluster slot of `key` (0..16383), honouring a `{tag}`. */
export function keySlot(key: string): number {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  return crc16(Buffer.from(key, 'utf8')) % 16384;
}

/**
 * The field an IP is stored under: its address bytes (4 for IPv4, 16 for IPv6), which is
 * what keeps the set near 20 bytes per IP. Anything else (never produced by the correlator,
 * which normalises addresses) is kept as text behind `~`, padded so its length is never 4 or
 * 16 and cannot collide with an address.
 */
export function ipField(ip: string): Buffer {
  const v4 = parseV4(ip);
  if (v4) return v4;
  const v6 = ip.includes(':') ? parseV6(ip) : null;
  if (v6) return v6;
  let text = `~${ip}`;
  while (text.length === 4 || text.length === 16) text = `~${text}`;
  return Buffer.from(text, 'utf8');
}

function parseV4(text: string): Buffer | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const out = Buffer.alloc(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i] ?? '';
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return null;
    out[i] = Number(p);
  }
  return out;
}

function parseV6(text: string): Buffer | null {
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const groups = (s: string): number[] | null => {
    if (s === '') return [];
    const out: number[] = [];
    const parts = s.split(':');
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i] ?? '';
      if (i === parts.length - 1 && p.includes('.')) {
        const v4 = parseV4(p);
        if (!v4) return null;
        out.push(((v4[0] ?? 0) << 8) | (v4[1] ?? 0), ((v4[2] ?? 0) << 8) | (v4[3] ?? 0));
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) out.push(parseInt(p, 16));
      else return null;
    }
    return out;
  };
  const head = groups(halves[0] ?? '');
  const tail = halves.length === 2 ? groups(halves[1] ?? '') : [];
  if (!head || !tail) return null;
  const fill = 8 - head.length - tail.length;
  if (halves.length === 1 ? fill !== 0 : fill < 1) return null;
  const all = [...head, ...new Array<number>(halves.length === 2 ? fill : 0).fill(0), ...tail];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

/**
 * Bucket of an IP field: FNV-1a (32 bit) of the address bytes modulo the bucket count. Stable
 * across versions and daemons: changing it would forget the environment's known IPs.
 */
export function bucketOf(field: Uint8Array, buckets: number): number {
  let h = 0x811c9dc5;
  for (const b of field) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h % buckets;
}

/**
 * The group a key's commands can be pipelined in: the node set serving its slot on a
 * cluster (the grouping ioredis itself requires of a cluster pipeline), one group otherwise.
 */
export function nodeGroupOf(client: RedisClient, key: string): string {
  if (!(client instanceof Cluster)) return '';
  const slot = keySlot(key);
  const nodes = client.slots[slot];
  // Slots not known yet (cluster still connecting): a pipeline per slot is always valid.
  return nodes && nodes.length > 0 ? nodes.join(';') : `slot:${slot}`;
}

/** Whether the client is a Redis Cluster client (a script may touch one slot only there). */
export function isCluster(client: RedisClient): boolean {
  return client instanceof Cluster;
}

type Pipeline = ReturnType<RedisClient['pipeline']>;

/**
 * Runs `add` for every key group on one pipeline per node, all nodes at once; returns the
 * replies per group, in the order each group's commands were added. Throws the first
 * command error (the caller's retry makes the whole batch safe to run again).
 */
export async function pipelinePerNode<T>(
  client: RedisClient,
  work: readonly T[],
  keyOf: (w: T) => string,
  add: (pipe: Pipeline, w: T) => void,
): Promise<Map<T, unknown>> {
  const groups = new Map<string, T[]>();
  for (const w of work) {
    const g = nodeGroupOf(client, keyOf(w));
    let list = groups.get(g);
    if (!list) groups.set(g, (list = []));
    list.push(w);
  }
  const out = new Map<T, unknown>();
  await Promise.all(
    [...groups.values()].map(async (list) => {
      const pipe = client.pipeline();
      for (const w of list) add(pipe, w);
      const replies = (await pipe.exec()) ?? [];
      list.forEach((w, i) => {
        const [err, value] = replies[i] ?? [new Error('no reply from redis'), null];
        if (err) throw err;
        out.set(w, value);
      });
    }),
  );
  return out;
}
