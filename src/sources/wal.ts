/**
 * Write-ahead log of acknowledged events, in `data_dir`. Every event the HTTP ingest answers
 * 200 for, or the gRPC source reads from Falco, is appended here before it is queued (except
 * those the correlator settles on arrival, see Correlator.needsLog); after a
 * crash (SIGKILL, OOM) the events not yet decided are read back and decided again, with the
 * decide token they had the first time, so the store gives the same answer (and the alert the
 * same id) as before the crash.
 *
 * Layout of the directory:
 * - `wal-<first seq>.log`  segments of records: events as JSON lines `{"s":seq,"k":token,"o":source,"e":event}`,
 *                          an event from gRPC as a line `{"s":seq,"k":token,"o":"grpc","b":length}`
 *                          followed by the bytes Falco sent and a newline, an event from a
 *                          JSON body likewise with `"j":length` and the JSON text it was parsed from,
 *                          and alert marks `{"a":seq}` (that event's alert is in the sink);
 * - `decided`              the highest sequence number whose events are decided (atomic rename);
 * - `id`                   random id of this log, the prefix of its decide tokens;
 * - `lock`                 pid of the process that has the log open.
 *
 * Writes go to the page cache (they survive a crash of the process, not of the machine);
 * `fsyncIntervalMs` adds a periodic fsync for power loss. Segments whose events are all decided
 * are deleted. Events are trimmed in order, so one slow decision holds back the mark of later,
 * already alerted ones; the alert marks close that gap: a replayed event whose alert is marked
 * is skipped, so a crash never sends an alert twice. The log is bounded by `maxBytes`: past it the oldest segments are deleted even if
 * undecided, and their events counted in `t1612d_dropped_events_total{reason="wal_full"}` (they
 * are still decided normally unless the process dies before).
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
  writeSync,
  writevSync,
} from 'node:fs';
import { join } from 'node:path';
import { describeError } from '../model/errors.js';
import { fromFalcoJson, parseEventText, PRIORITIES, TextEvent, type FalcoEvent, type SourceName } from '../model/event.js';
import type { Logger } from '../ops/logger.js';
import type { Metrics } from '../ops/metrics.js';
import { ThrottledLog } from '../ops/throttled-log.js';
import { GrpcEvent, loadFalcoProto } from './proto.js';

export interface WalOptions {
  dir: string;
  /** Largest total size of the segments. */
  maxBytes: number;
  /** fsync this often; 0 never (page cache only). */
  fsyncIntervalMs: number;
  metrics: Metrics;
  logger: Logger;
}

/** An event read back from the log. */
export interface WalRecord {
  seq: number;
  token: string;
  source: SourceName;
  ev: FalcoEvent;
}

/** Sequence number and decide token given to an appended event. */
export interface WalStamp {
  seq: number;
  token: string;
}

interface Segment {
  file: string;
  firstSeq: number;
  lastSeq: number;
  bytes: number;
}

/** The log cannot be opened or written; the message names data_dir. */
export class WalError extends Error {
  override readonly name = 'WalError';
  readonly code = 'T1612D_WAL';
}

const SEGMENT_MAX_BYTES = 8 * 1024 * 1024;
/**
 * The decided mark is written at most this often while marks keep coming. Each write renames
 * a file and may start a segment and delete one, so under load it is kept to once a second: a
 * replay after a crash then decides up to a second more of events again, under their tokens.
 */
const DECIDED_WRITE_MS = 1_000;
const SOURCES = new Set<SourceName>(['grpc', 'http', 'file']);

function segmentName(firstSeq: number): string {
  return `wal-${String(firstSeq).padStart(16, '0')}.log`;
}

const NL = Buffer.from('\n');

/**
 * Push one event's record onto `out`: a header line, then what Falco sent (its gRPC bytes, or
 * the JSON text the event was parsed from) and a newline; or, for an event known only as
 * parsed, a JSON line of it. What Falco sent is stored as it came: no serialising per event,
 * and replay reads it exactly as the first time.
 */
function encode(out: (string | Buffer)[], seq: number, token: string, source: SourceName, ev: FalcoEvent, text?: Buffer): void {
  if (ev instanceof GrpcEvent) {
    out.push(`{"s":${seq},"k":${JSON.stringify(token)},"o":"${source}","b":${ev.wire.length}}\n`, ev.wire, NL);
    return;
  }
  // An event that kept its text (TextEvent) is logged as that text, given or not.
  text ??= ev instanceof TextEvent ? ev.text : undefined;
  if (text) {
    out.push(`{"s":${seq},"k":${JSON.stringify(token)},"o":"${source}","j":${text.length}}\n`, text, NL);
    return;
  }
  out.push(`${JSON.stringify({ s: seq, k: token, o: source, e: { ...ev, timeNs: ev.timeNs.toString() } })}\n`);
}

/** One record of a segment, in the order written. */
export type WalEntry =
  | { kind: 'event'; header: string; bytes?: Buffer }
  | { kind: 'alerted'; seq: number }
  | { kind: 'torn' };

const ALERT_MARK = /^\{"a":(\d+)\}$/;

/**
 * The records of one segment, in the order written. A line that is not a record is torn (a
 * write cut short by a crash, or damage) and skipped. A binary record cut short ends the
 * walk: what follows it cannot be told from its bytes, and taking its bytes for lines would let
 * a field value pass for a record.
 */
export function* segmentEntries(data: Buffer): Generator<WalEntry> {
  let pos = 0;
  while (pos < data.length) {
    const nl = data.indexOf(0x0a, pos);
    if (nl < 0) {
      yield { kind: 'torn' }; // the last line, cut short
      return;
    }
    const line = data.toString('utf8', pos, nl);
    pos = nl + 1;
    if (line === '') continue;
    const mark = ALERT_MARK.exec(line);
    if (mark) {
      yield { kind: 'alerted', seq: Number(mark[1]) };
      continue;
    }
    const len = /"[bj]":(\d+)\}$/.exec(line);
    if (!len) {
      yield { kind: 'event', header: line };
      continue;
    }
    const n = Number(len[1]);
    if (pos + n >= data.length || data[pos + n] !== 0x0a) {
      yield { kind: 'torn' };
      return;
    }
    yield { kind: 'event', header: line, bytes: data.subarray(pos, pos + n) };
    pos += n + 1;
  }
}

/** An event record back to a record; undefined when it is torn or not ours (it is skipped and counted). */
export function decodeEntry(entry: { header: string; bytes?: Buffer }): WalRecord | undefined {
  try {
    const o = JSON.parse(entry.header) as { s?: unknown; k?: unknown; o?: unknown; e?: Record<string, unknown>; b?: unknown; j?: unknown };
    if (typeof o.s !== 'number' || typeof o.k !== 'string' || !SOURCES.has(o.o as SourceName)) return undefined;
    if (entry.bytes && o.b === entry.bytes.length) {
      const ev = loadFalcoProto().decodeResponse(entry.bytes);
      return ev instanceof GrpcEvent ? { seq: o.s, token: o.k, source: o.o as SourceName, ev } : undefined;
    }
    if (entry.bytes && o.j === entry.bytes.length) {
      const ev = fromFalcoJson(parseEventText(entry.bytes.toString('utf8')), true);
      return { seq: o.s, token: o.k, source: o.o as SourceName, ev };
    }
    if (entry.bytes) return undefined;
    const e = o.e;
    if (!e || typeof e['timeNs'] !== 'string') return undefined;
    if (!PRIORITIES.includes(e['priority'] as (typeof PRIORITIES)[number])) return undefined;
    const ev = { ...e, timeNs: BigInt(e['timeNs']) } as unknown as FalcoEvent;
    if (typeof ev.rule !== 'string' || !Array.isArray(ev.tags) || typeof ev.fields !== 'object') return undefined;
    return { seq: o.s, token: o.k, source: o.o as SourceName, ev };
  } catch {
    return undefined;
  }
}

/** Buffers handed to one writev: under every system's IOV_MAX (1,024 on Linux). */
const WRITEV_PARTS = 512;

/**
 * Write `parts` in order with writev (no copy into one buffer: Falco's bytes go to the file as
 * they came); a short write goes on from where it stopped. Returns the bytes written.
 */
function writeAll(fd: number, parts: Buffer[]): number {
  let total = 0;
  for (let i = 0; i < parts.length; i += WRITEV_PARTS) {
    const group = parts.slice(i, i + WRITEV_PARTS);
    const size = group.reduce((n, b) => n + b.length, 0);
    const done = writevSync(fd, group);
    if (done < size) {
      const rest = Buffer.concat(group).subarray(done);
      let off = 0;
      while (off < rest.length) off += writeSync(fd, rest, off);
    }
    total += size;
  }
  return total;
}

export class Wal {
  private readonly segments: Segment[] = [];
  private readonly id: string;
  private readonly throttle: ThrottledLog;
  private readonly segmentMax: number;
  private fd: number | undefined;
  private nextSeq = 1;
  private decidedSeq = 0;
  private pending: (string | Buffer)[] = [];
  private pendingLast = 0;
  private flushScheduled = false;
  private dirty = false;
  private fsyncTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private replayed = false;
  private decidedOnDisk = 0;
  private decidedWrittenAt = -Infinity;
  private decidedTimer: NodeJS.Timeout | undefined;

  private constructor(private readonly opts: WalOptions) {
    this.throttle = new ThrottledLog(opts.logger, 10_000);
    this.segmentMax = Math.max(64 * 1024, Math.min(SEGMENT_MAX_BYTES, Math.floor(opts.maxBytes / 4)));
    const { dir } = opts;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      this.lock();
      const idFile = join(dir, 'id');
      if (!existsSync(idFile)) writeFileSync(idFile, randomBytes(8).toString('hex'), { mode: 0o600 });
      this.id = readFileSync(idFile, 'utf8').trim();
      const decidedFile = join(dir, 'decided');
      if (existsSync(decidedFile)) this.decidedSeq = Number(readFileSync(decidedFile, 'utf8').trim()) || 0;
      this.decidedOnDisk = this.decidedSeq;
      for (const f of readdirSync(dir).sort()) {
        const m = /^wal-(\d{16})\.log$/.exec(f);
        if (!m) continue;
        const bytes = statSync(join(dir, f)).size;
        // Its last sequence number is known only once replay() has read it: until then, undecided.
        this.segments.push({ file: f, firstSeq: Number(m[1]), lastSeq: Number.MAX_SAFE_INTEGER, bytes });
      }
    } catch (err) {
      if (err instanceof WalError) throw err;
      throw new WalError(`data_dir ${dir} (T1612D_DATA_DIR) cannot be used: ${describeError(err)}`, { cause: err });
    }
    this.nextSeq = this.decidedSeq + 1;
  }

  /** Open (creating) the log in `dir`; throws WalError naming data_dir when it cannot. */
  static open(opts: WalOptions): Wal {
    return new Wal(opts);
  }

  /** Highest sequence number known decided. */
  get decided(): number {
    return this.decidedSeq;
  }

  /** Bytes on disk in segments. */
  get bytes(): number {
    return this.segments.reduce((n, s) => n + s.bytes, 0);
  }

  /**
   * The undecided events, oldest first, one segment at a time. Call once, before appending:
   * it also learns the highest sequence number, and opens the log for writing at the end.
   */
  *replay(): Generator<WalRecord> {
    let torn = 0;
    this.replayed = true;
    // First the alert marks (a mark can sit in a later segment than its event).
    const alerted = new Set<number>();
    const datas = new Map<string, Buffer>();
    for (const seg of this.segments) {
      try {
        const data = readFileSync(join(this.opts.dir, seg.file));
        for (const entry of segmentEntries(data)) if (entry.kind === 'alerted') alerted.add(entry.seq);
        // Kept only while the log is small; a big one is read again below, segment by segment.
        if (datas.size < 4) datas.set(seg.file, data);
      } catch (err) {
        this.opts.logger.warn({ file: seg.file, err: describeError(err) }, 'write-ahead log segment unreadable; skipped');
      }
    }
    for (const seg of [...this.segments]) {
      seg.lastSeq = seg.firstSeq - 1;
      let data: Buffer;
      try {
        data = datas.get(seg.file) ?? readFileSync(join(this.opts.dir, seg.file));
        datas.delete(seg.file);
      } catch {
        continue; // reported above
      }
      for (const entry of segmentEntries(data)) {
        if (entry.kind === 'alerted') continue;
        const rec = entry.kind === 'event' ? decodeEntry(entry) : undefined;
        if (!rec) {
          torn++; // a write cut short by the crash, or damage
          continue;
        }
        seg.lastSeq = Math.max(seg.lastSeq, rec.seq);
        if (rec.seq >= this.nextSeq) this.nextSeq = rec.seq + 1;
        if (rec.seq <= this.decidedSeq || alerted.has(rec.seq)) continue;
        this.opts.metrics.walReplayed.inc();
        yield rec;
      }
    }
    if (torn > 0) this.opts.logger.warn({ lines: torn }, 'write-ahead log lines unreadable (torn by a crash); skipped');
    this.startWriting();
  }

  /** Open a fresh segment for appends and start the fsync timer (after replay). */
  private startWriting(): void {
    if (this.fd !== undefined || this.closed) return;
    // New numbers must follow the old ones, which only replay() has read.
    if (!this.replayed && this.segments.length > 0) throw new WalError('write-ahead log must be replayed before it is written');
    this.replayed = true;
    this.rotate();
    if (this.opts.fsyncIntervalMs > 0) {
      this.fsyncTimer = setInterval(() => this.fsync(), this.opts.fsyncIntervalMs);
      this.fsyncTimer.unref();
    }
    this.trim();
  }

  /**
   * Append a batch and write it now; throws when the write fails (nothing is then acknowledged).
   * `texts[i]`, when given, is the JSON text `events[i]` was parsed from (stored instead of it).
   */
  appendBatch(events: readonly FalcoEvent[], source: SourceName, texts?: readonly (Buffer | undefined)[]): WalStamp[] {
    this.startWriting();
    const stamps: WalStamp[] = [];
    for (let i = 0; i < events.length; i++) {
      const stamp = this.stamp();
      encode(this.pending, stamp.seq, stamp.token, source, events[i] as FalcoEvent, texts?.[i]);
      this.pendingLast = stamp.seq;
      stamps.push(stamp);
    }
    this.flushSync();
    return stamps;
  }

  /** Append one event, written at the end of this turn of the event loop; undefined when closed. */
  append(ev: FalcoEvent, source: SourceName): WalStamp | undefined {
    if (this.closed) return undefined;
    this.startWriting();
    const stamp = this.stamp();
    encode(this.pending, stamp.seq, stamp.token, source, ev);
    this.pendingLast = stamp.seq;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        try {
          this.flushSync();
        } catch (err) {
          this.opts.metrics.droppedEvents.inc({ reason: 'wal_error' });
          this.throttle.log('error', 'write', { err: describeError(err) }, 'write-ahead log write failed');
        }
      });
    }
    return stamp;
  }

  /**
   * The alert decided for the event with this token is in the sink: written now, before the
   * sink can have delivered it, so a replay after a crash skips the event instead of alerting
   * twice. Tokens not of this log are ignored.
   */
  markAlerted(token: string): void {
    if (this.closed || !token.startsWith(`${this.id}:`)) return;
    const seq = parseInt(token.slice(this.id.length + 1), 36);
    if (!(seq > this.decidedSeq)) return;
    this.pending.push(`{"a":${seq}}\n`);
    try {
      this.flushSync();
    } catch (err) {
      this.throttle.log('warn', 'write', { err: describeError(err) }, 'write-ahead log write failed');
    }
  }

  /**
   * Everything with a sequence number up to `seq` is decided: record it, delete what is done.
   * The mark is written at once, then at most every DECIDED_WRITE_MS while marks keep coming
   * (the last one by a timer, and at close): a mark that lags only makes a replay decide some
   * events again, under the same tokens, and the alert marks keep their alerts from going out twice.
   */
  markDecided(seq: number): void {
    if (seq <= this.decidedSeq || this.closed) return;
    this.decidedSeq = seq;
    const since = performance.now() - this.decidedWrittenAt;
    if (since >= DECIDED_WRITE_MS) this.recordDecided();
    else if (!this.decidedTimer) {
      this.decidedTimer = setTimeout(() => {
        this.decidedTimer = undefined;
        if (!this.closed) this.recordDecided();
      }, DECIDED_WRITE_MS - since);
      this.decidedTimer.unref();
    }
  }

  /** Write the decided mark; then, unless closing, delete what it makes deletable. */
  private recordDecided(tidy = true): void {
    this.decidedWrittenAt = performance.now();
    const seq = this.decidedSeq;
    if (seq <= this.decidedOnDisk) return;
    const file = join(this.opts.dir, 'decided');
    try {
      writeFileSync(`${file}.tmp`, String(seq));
      renameSync(`${file}.tmp`, file);
      this.decidedOnDisk = seq;
    } catch (err) {
      this.throttle.log('warn', 'decided', { err: describeError(err) }, 'write-ahead log progress not recorded');
      return;
    }
    if (!tidy) return;
    // The open segment too, once all of it is decided and it holds something: start a new one.
    const cur = this.segments[this.segments.length - 1];
    if (cur && cur.bytes > 0 && cur.lastSeq <= seq && this.pending.length === 0 && this.fd !== undefined) this.rotate();
    this.trim();
  }

  /** Write what is pending; throws on failure. */
  flushSync(): void {
    if (this.pending.length === 0) return;
    if (this.fd === undefined) throw new WalError('write-ahead log is closed');
    const parts = this.pending.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : p));
    this.pending = [];
    const total = writeAll(this.fd, parts);
    const cur = this.segments[this.segments.length - 1] as Segment;
    cur.bytes += total;
    cur.lastSeq = this.pendingLast;
    this.dirty = true;
    if (cur.bytes >= this.segmentMax) this.rotate();
    this.trim();
  }

  /** Flush, fsync and release the directory. Idempotent. */
  close(): void {
    if (this.closed) return;
    try {
      this.flushSync();
    } catch (err) {
      this.opts.logger.warn({ err: describeError(err) }, 'write-ahead log: last writes lost at close');
    }
    if (this.decidedTimer) clearTimeout(this.decidedTimer);
    this.decidedTimer = undefined;
    if (this.fd !== undefined) this.recordDecided(false);
    this.closed = true;
    if (this.fsyncTimer) clearInterval(this.fsyncTimer);
    this.fsync();
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    try {
      unlinkSync(join(this.opts.dir, 'lock'));
    } catch {
      // already gone: nothing to release
    }
  }

  private stamp(): WalStamp {
    const seq = this.nextSeq++;
    return { seq, token: `${this.id}:${seq.toString(36)}` };
  }

  private fsync(): void {
    if (!this.dirty || this.fd === undefined) return;
    try {
      fsyncSync(this.fd);
      this.dirty = false;
    } catch (err) {
      this.throttle.log('warn', 'fsync', { err: describeError(err) }, 'write-ahead log fsync failed');
    }
  }

  private rotate(): void {
    if (this.fd !== undefined) {
      // With fsync_interval 0 the log is for crashes of the process, not of the machine.
      if (this.opts.fsyncIntervalMs > 0) this.fsync();
      closeSync(this.fd);
    }
    const file = segmentName(this.nextSeq);
    this.fd = openSync(join(this.opts.dir, file), 'a', 0o600);
    // An empty segment of that name left by a crash right after a rotation is simply reused.
    if (this.segments[this.segments.length - 1]?.file !== file) {
      this.segments.push({ file, firstSeq: this.nextSeq, lastSeq: this.nextSeq - 1, bytes: 0 });
    }
  }

  /** Delete decided segments, then the oldest ones while over the size bound. */
  private trim(): void {
    while (this.segments.length > 1) {
      const old = this.segments[0] as Segment;
      const decided = old.lastSeq <= this.decidedSeq;
      if (!decided && this.bytes <= this.opts.maxBytes) break;
      if (!decided) {
        const lost = old.lastSeq - Math.max(old.firstSeq, this.decidedSeq + 1) + 1;
        if (lost > 0) this.opts.metrics.droppedEvents.inc({ reason: 'wal_full' }, lost);
        this.throttle.log('warn', 'full', { maxBytes: this.opts.maxBytes, events: lost },
          'write-ahead log full: oldest undecided events are no longer crash-safe');
      }
      try {
        unlinkSync(join(this.opts.dir, old.file));
      } catch (err) {
        this.throttle.log('warn', 'unlink', { err: describeError(err) }, 'write-ahead log segment not deleted');
      }
      this.segments.shift();
    }
    this.opts.metrics.walBytes.set(this.bytes);
  }

  /** One process per directory: a second daemon on the same log would replay it twice. */
  private lock(): void {
    const file = join(this.opts.dir, 'lock');
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        // The pid and its start time: in a container every start begins a fresh pid namespace,
        // so a stale lock's pid is often taken again (by another process, or a thread of ours).
        writeFileSync(file, `${process.pid} ${startTime(process.pid) ?? ''}`.trim(), { flag: 'wx', mode: 0o600 });
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const [pidText = '', started] = readFileSync(file, 'utf8').trim().split(/\s+/);
      const pid = Number(pidText);
      if (pid > 0 && pid !== process.pid && holder(pid, started)) {
        throw new WalError(`data_dir ${this.opts.dir} (T1612D_DATA_DIR) is in use by process ${pid}; give each daemon its own`);
      }
      unlinkSync(file); // left by a process that died (a crash is what the log is for)
    }
    throw new WalError(`data_dir ${this.opts.dir} (T1612D_DATA_DIR): cannot take the lock`);
  }
}

/**
 * Start time of a process or thread (clock ticks since boot, field 22 of /proc/PID/stat), or
 * undefined without such an entry (or without /proc).
 */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/**
 * Whether the process that wrote the lock still runs. With /proc: a process (not a thread:
 * kill(2) also reaches thread ids) with that pid and, when the lock records one, the same
 * start time. Without /proc: any process with that pid.
 */
function holder(pid: number, started: string | undefined): boolean {
  if (!existsSync('/proc/self/stat')) return alive(pid);
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return false;
  }
  if (Number(/^Tgid:\s*(\d+)/m.exec(status)?.[1]) !== pid) return false;
  return started === undefined || startTime(pid) === started;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
