/**
 * Heap sizing for the long-running daemon. What t1612d keeps is small and bounded (queues,
 * caches, sessions: tens of MB), but it allocates fast and briefly (objects per Falco event),
 * and V8's default lets the heap grow to several times what is live between full collections.
 * A smaller growth factor keeps the peak near the live set at the cost of a few more
 * collections; unlike a heap cap it cannot run the process out of memory. A growth factor
 * given on node's own command line (`node --heap-growing-percent=N`) is left alone.
 */
import { setFlagsFromString } from 'node:v8';

/** V8's heap growing factor becomes 1 + this / 100. */
export const HEAP_GROWING_PERCENT = 20;

/** Apply the daemon's heap sizing to this process (process-wide; once, at start-up). */
export function tuneHeap(execArgv: readonly string[] = process.execArgv): boolean {
  if (execArgv.some((a) => /^--heap[-_]growing[-_]percent\b/.test(a))) return false;
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  return true;
}
