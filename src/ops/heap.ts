/**
 * Heap sizing for the long-running daemon. What t1612d keeps is small and bounded (queues,
 * caches, sessions: tens of MB), but it allocates fast and briefly (objects per Falco event),
 * and V8's default lets the heap grow to several times what is live between full collections.
 * `t1612d run` sets the growth itself (tuneHeap): a small factor, with at least some MB of
 * room, so the peak stays near the live set without full collections back to back; unlike a
 * heap cap it cannot run the process out of memory. A growth factor given on node's own command
 * line (`node --heap-growing-percent=N`) is left alone.
 */
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';

/**
 * Flags node must be started with (V8 sizes the young generation and starts its collector
 * threads before any code runs, so `t1612d run` cannot set them itself): the image's
 * ENTRYPOINT passes them.
 * - A young generation of 3 x 4 MB instead of 3 x 16 MB: the events t1612d allocates die young
 *   either way, and the peak RSS of `npm run bench`'s memory run drops by about 17 MB at 8 MB
 *   (168 -> 151 MB), 10 MB more at 4 MB (139-142 -> 127-131 MB), with no measurable change in
 *   throughput or CPU per event (at 2 MB, scavenges cost HTTP ingest a fifth more CPU).
 * - Garbage collection on the main thread only: t1612d's heap is a few tens of MB, where
 *   helper threads cost more in hand-offs than they save, and on a shared host they take
 *   cores from the workloads and from Falco. In the bench's gRPC run (2 cores shared with the
 *   Falco-like server and Redis) t1612d's CPU per event went from 1.73–1.80x the decoding
 *   client's to 1.41–1.43x, its throughput from 0.70–0.72x to 0.80–0.84x of it.
 */
export const NODE_FLAGS = ['--max-semi-space-size=4', '--single-threaded-gc'] as const;

/** Least growth V8 is given over what is live after a full collection, percent. */
export const HEAP_GROWING_PERCENT = 20;
/** Most growth, percent: the factor V8 itself picks for a small heap is about this. */
export const HEAP_GROWING_PERCENT_MAX = 100;
/**
 * Least room, bytes, between the old generation's live size after a full collection and the
 * size that starts the next one. A full collection also promotes what the young generation
 * holds at that moment (the events in flight: a few MB), so a factor of 1.2 over a small live
 * set left about as much room as each collection itself filled, and full collections came
 * 6-9 times a second: in the bench's gRPC run (about 20 MB live) a quarter of t1612d's CPU.
 * Past 60 MB live, HEAP_GROWING_PERCENT gives at least this much anyway.
 */
export const HEAP_MIN_ROOM_BYTES = 12 * 1024 * 1024;

/** The growing percent that gives an old generation of `liveBytes` at least `roomBytes` of room, within bounds. */
export function growingPercentFor(liveBytes: number, roomBytes = HEAP_MIN_ROOM_BYTES): number {
  const pct = Math.ceil((100 * roomBytes) / Math.max(1, liveBytes));
  return Math.min(HEAP_GROWING_PERCENT_MAX, Math.max(HEAP_GROWING_PERCENT, pct));
}

/** Bytes used in the old generation (everything but the young generation's spaces). */
export function oldGenerationBytes(): number {
  let used = 0;
  for (const s of getHeapSpaceStatistics()) if (!s.space_name.startsWith('new_')) used += s.space_used_size;
  return used;
}

let observer: PerformanceObserver | undefined;
let current = 0;
let room = HEAP_MIN_ROOM_BYTES;

function setPercent(pct: number): void {
  if (pct === current) return;
  current = pct;
  setFlagsFromString(`--heap-growing-percent=${pct}`);
}

/**
 * Apply the daemon's heap sizing to this process (process-wide; once, at start-up): no
 * allocation-site pretenuring (below), and after every full collection the growth factor is
 * set from what is then live in the old generation (V8 reads it when it sizes the heap at the
 * end of the next one): at least `roomBytes` (HEAP_MIN_ROOM_BYTES) of room, and at least
 * HEAP_GROWING_PERCENT. False, and nothing set, when node's command line gives a factor
 * (`node --heap-growing-percent=N`).
 */
export function tuneHeap(execArgv: readonly string[] = process.execArgv, roomBytes = HEAP_MIN_ROOM_BYTES): boolean {
  if (execArgv.some((a) => /^--heap[-_]growing[-_]percent\b/.test(a))) return false;
  room = roomBytes;
  // V8 allocates straight into the old generation from code whose objects it saw survive: the
  // events in flight survive a young collection, so every event's objects went there and
  // filled it at tens of MB/s (gRPC run: a full collection every 150-250 ms even with room).
  setFlagsFromString('--no-allocation-site-pretenuring');
  setPercent(growingPercentFor(oldGenerationBytes(), room));
  if (!observer) {
    observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        // A gc entry's detail is { kind, flags } (the node version's types omit it).
        if ((e as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
          setPercent(growingPercentFor(oldGenerationBytes(), room));
          return;
        }
      }
    });
    observer.observe({ entryTypes: ['gc'] });
  }
  return true;
}

/** The growing percent last set by tuneHeap() (0: never). */
export function heapGrowingPercent(): number {
  return current;
}
