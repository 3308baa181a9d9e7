/**
 * A well-formed build-session record for store and session-table tests: every field set to a
 * neutral value, the ones a test cares about given as overrides. Likewise an egress signal
 * tied to nothing (no pid, cgroup, container or image) unless the overrides say so.
 */
import type { EgressSignal } from '../../src/detect/classify.js';
import type { FalcoEvent } from '../../src/model/event.js';
import type { SessionRecord } from '../../src/model/session.js';

export function sessionRecord(over: Partial<SessionRecord> & Pick<SessionRecord, 'host' | 'startedAt'>): SessionRecord {
  return {
    id: 'x',
    lastActivity: over.startedAt,
    remotePeer: null,
    trigger: { rule: 'r', proc_name: 'docker', cmdline: null, user: null, container_id: null, remote_peer: null },
    evidence: [],
    pids: [],
    cgroups: [],
    containers: [],
    images: [],
    imageRefs: [],
    engine: null,
    expected: false,
    dockerBuilder: null,
    localClient: false,
    ...over,
  };
}

/** A signal's event time when none is given (2026-03-02). */
export const SIGNAL_TIME_MS = 1_772_446_500_000;

export function egressSignal(over: Partial<EgressSignal> = {}, proc: Partial<EgressSignal['proc']> = {}): EgressSignal {
  const host = over.host ?? 'node-a';
  const timeMs = over.timeMs ?? SIGNAL_TIME_MS;
  const event: FalcoEvent = {
    timeNs: BigInt(timeMs) * 1_000_000n,
    rule: 'egress',
    priority: 'Notice',
    source: 'syscall',
    hostname: host,
    tags: ['t1612_egress'],
    output: 'o',
    fields: {},
  };
  return {
    type: 'egress',
    host,
    timeMs,
    proc: { pid: null, name: 'curl', exepath: null, cmdline: null, pcmdline: null, user: null, ancestorPids: [], ancestorNames: [], ...proc },
    cgroups: [],
    containerId: null,
    image: null,
    imageRef: null,
    engine: null,
    expected: false,
    event,
    ip: '203.0.113.1',
    port: 443,
    proto: 'tcp',
    domain: null,
    step: null,
    builderOwn: false,
    fetching: false,
    classicCandidate: false,
    ...over,
  };
}

/** A normalised Falco event with only the given fields and tags (classification tests). */
export function falcoEvent(fields: Record<string, string | null>, tags: string[], timeNs = 1_772_446_500_000_000_000n): FalcoEvent {
  return { timeNs, rule: 'r', priority: 'Notice', source: 'syscall', hostname: 'h', tags, output: 'o', fields };
}

/**
 * An event as a plain object. A gRPC event reads its text output and its fields from Falco's
 * bytes when asked (getters), so a deep comparison with a plain event goes through this.
 */
export function plainEvent(ev: FalcoEvent): FalcoEvent {
  return { ...ev, output: ev.output, fields: ev.fields };
}
