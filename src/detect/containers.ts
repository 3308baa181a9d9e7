/**
 * When each container started, as far as the daemon can tell: the container plugin's
 * `container.start_ts` when a rule prints it, else the event time of the first event the
 * daemon saw from that container. Image lineage needs it: only a container started after the
 * build that produced its image may inherit the build (a container running since yesterday
 * from the same tag may not). Bounded: the least recently inserted ids go first.
 */
import type { FalcoEvent } from '../model/event.js';
import { eventTimeMs, fieldOf } from '../model/event.js';

const CONTAINER_ID = /^[0-9a-f]{12}$/;
/** Nanosecond epoch times have 19 digits until 2286. */
const START_TS = /^\d{16,19}$/;

export class ContainerStarts {
  private readonly starts = new Map<string, number>();

  constructor(private readonly cap: number) {}

  get size(): number {
    return this.starts.size;
  }

  /**
   * Note the event's container. On the egress hot path: a known container costs one lookup
   * (an earlier event arriving late does not move the start back; attribution allows
   * `clock_skew` for that).
   */
  observe(ev: FalcoEvent): void {
    // An absent id, and `host`, fail the id pattern (told by length first: every host event has one of them).
    const id = fieldOf(ev, 'container.id') ?? '';
    if (id.length !== 12 || this.starts.has(id) || !CONTAINER_ID.test(id)) return;
    const start = this.startOf(ev);
    if (!Number.isFinite(start)) return;
    if (this.starts.size >= this.cap) {
      const oldest = this.starts.keys().next();
      if (!oldest.done) this.starts.delete(oldest.value);
    }
    this.starts.set(id, start);
  }

  /** Start time of a container, ms, or null when never seen. */
  startedAt(containerId: string | null): number | null {
    return containerId === null ? null : (this.starts.get(containerId) ?? null);
  }

  private startOf(ev: FalcoEvent): number {
    const ts = fieldOf(ev, 'container.start_ts');
    if (ts && START_TS.test(ts)) return Number(BigInt(ts) / 1_000_000n);
    return eventTimeMs(ev);
  }
}
