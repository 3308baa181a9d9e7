/**
 * Build-session records: what detect/sessions.ts keeps per build and what the stores persist,
 * plus defensive parsers for what comes back from a store.
 */
import type { AlertEvidence, AlertTrigger } from './alert.js';

/** One build session as stored (JSON-serialisable, bounded by the caps in detect/sessions.ts). */
export interface SessionRecord {
  /** Stable id: a digest of host, strongest identity key and start time. */
  id: string;
  host: string;
  /** Event time of the first build signal, ms. */
  startedAt: number;
  /** Event time of the latest build activity, ms. */
  lastActivity: number;
  /** `ip:port` of the Docker API client when the build came over the network. */
  remotePeer: string | null;
  trigger: AlertTrigger;
  /** Build-trigger evidence: the first signal and the most recent ones. */
  evidence: AlertEvidence[];
  /** Builder process ids (build CLIs, step runtimes, builder daemons started for the build). */
  pids: number[];
  /** Build-step cgroup markers (`buildkit:<id>`, `buildah:buildah<N>`). */
  cgroups: string[];
  /** Container ids that are part of the build (kaniko executor, classic-builder steps). */
  containers: string[];
  /** Image references the build produces, as written on the command line. */
  images: string[];
  /** The same, canonical (detect/builders.ts normaliseImageRef), for matching running images. */
  imageRefs: string[];
  /** The builder engine (`docker`, `buildah`, …) once evidence names it; null until then. */
  engine: string | null;
  /** The user declared this build expected (rules tuning): it never alerts. */
  expected: boolean;
  /**
   * Which of dockerd's builders runs a `docker` build, when evidence says: `classic`
   * (DOCKER_BUILDKIT=0 on the command line), `buildkit` (DOCKER_BUILDKIT=1, buildx, or a
   * BuildKit step seen); null when unknown.
   */
  dockerBuilder: 'classic' | 'buildkit' | null;
  /** Opened by a build CLI on this host talking to the local daemon's socket: not remote. */
  localClient: boolean;
}

/** A non-loopback Docker API connection recently accepted on a host. */
export interface RemoteAccept {
  peer: string;
  /** Event time, ms. */
  timeMs: number;
  /** The accept event, shown in the alert's evidence of the builds it makes remote. */
  evidence?: AlertEvidence | undefined;
}

/** What a store holds for one host. */
export interface HostSnapshot {
  sessions: SessionRecord[];
  remote: RemoteAccept | null;
}

/** Changes for one host, written in one round trip. */
export interface SessionWrite {
  host: string;
  upsert: SessionRecord[];
  /** Ids of sessions that closed. */
  remove: string[];
  /** A newer remote accept to remember, or undefined for no change. */
  remote?: RemoteAccept | undefined;
}

/** Parse a stored session defensively: anything that is not a well-formed record is dropped. */
export function parseSessionRecord(text: string): SessionRecord | null {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof o !== 'object' || o === null) return null;
  const r = o as Partial<SessionRecord>;
  const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
  if (
    typeof r.id !== 'string' ||
    typeof r.host !== 'string' ||
    typeof r.startedAt !== 'number' ||
    typeof r.lastActivity !== 'number' ||
    typeof r.trigger !== 'object' ||
    r.trigger === null ||
    !Array.isArray(r.evidence) ||
    !Array.isArray(r.pids) ||
    !r.pids.every((p) => typeof p === 'number') ||
    !strings(r.cgroups) ||
    !strings(r.containers) ||
    !strings(r.images)
  ) {
    return null;
  }
  return {
    ...(r as SessionRecord),
    remotePeer: typeof r.remotePeer === 'string' ? r.remotePeer : null,
    // Records written before these fields existed: recomputed / unknown / not expected.
    imageRefs: strings(r.imageRefs) ? r.imageRefs : [],
    engine: typeof r.engine === 'string' ? r.engine : null,
    expected: r.expected === true,
    localClient: r.localClient === true,
    dockerBuilder: r.dockerBuilder === 'classic' || r.dockerBuilder === 'buildkit' ? r.dockerBuilder : null,
  };
}

export function parseRemoteAccept(text: string | null | undefined): RemoteAccept | null {
  if (!text) return null;
  try {
    const o = JSON.parse(text) as Partial<RemoteAccept>;
    if (typeof o.peer !== 'string' || typeof o.timeMs !== 'number') return null;
    const e = o.evidence;
    const evidence =
      e && typeof e === 'object' && typeof e.time === 'string' && typeof e.rule === 'string' && typeof e.output === 'string'
        ? { time: e.time, rule: e.rule, output: e.output }
        : undefined;
    return { peer: o.peer, timeMs: o.timeMs, evidence };
  } catch {
    return null;
  }
}
