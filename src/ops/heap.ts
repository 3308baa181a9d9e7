/**
 * Heap sizing for the long-running daemon. What t1612d keeps is small and bounded (queues,
 * caches, sessions: tens of MB), but it allocates fast and briefly (objects per Falco event),
 * and V8's default lets the heap grow to several times what is live between full collections.
 * A smaller growth factor keeps the peak near the live set at the cost of a few more
 * collections; unlike a heap cap it cannot run the process out of memory. A growth factor
 * given on node's own command line (`node --heap-growing-percent=N`) is left alone.
 */
import { setFlagsFromString } from 'node:v8';

/**
 * Flags node must be started with (V8 sizes the young generation and starts its collector
 * threads before any code runs, so `t1612d run` cannot set them itself): the image's
 * ENTRYPOINT passes them.
 * - A young generation of 3 x 8 MB instead of 3 x 16 MB: the events t1612d allocates die young
 *   either way, and the peak RSS of `npm run bench`'s memory run drops by about 17 MB
 *   (168 -> 151 MB) with no measurable change in throughput.
 * - Garbage collection on the main thread only: t1612d's heap is a few tens of MB, where
 *   helper threads cost more in hand-offs than they save, and on a shared host they take
 *   cores from the workloads and from Falco. In the bench's gRPC run (2 cores shared with the
 *   Falco-like server and Redis) t1612d's CPU per event went from 1.73–1.80x the decoding
 *   client's to 1.41–1.43x, its throughput from 0.70–0.72x to 0.80–0.84x of it.
 */
export const NODE_FLAGS = ['--max-semi-space-size=8', '--single-threaded-gc'] as const;

/** V8's heap growing factor becomes 1 + this / 100. */
export const HEAP_GROWING_PERCENT = 20;

/** Apply the daemon's heap sizing to this process (process-wide; once, at start-up). */
export function tuneHeap(execArgv: readonly string[] = process.execArgv): boolean {
  if (execArgv.some((a) => /^--heap[-_]growing[-_]percent\b/.test(a))) return false;
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  return true;
}
