/**
 * Attribution: which open build session, if any, an egress event belongs to, and how strongly.
 *
 * Order: lineage (the connecting process descends from the session's builder or build step,
 * or is a builder daemon pulling for the build), then image (a container started from an image
 * the session built), then window (same host, inside the window; only when
 * `attribute_window_only` is on). Severity follows from the attribution and whether the build
 * came over the remote Docker API.
 */
import type { Attribution, Severity } from './alert.js';
import type { EgressSignal } from './classify.js';
import {
  BUILDER_DAEMONS,
  STEP_PARENTS,
  STEP_RUNTIMES,
  cgroupMatches,
  isBareImageId,
  normaliseImageRef,
} from './classify.js';
import type { SessionRecord } from '../store/build-sessions.js';

export interface AttributionResult {
  session: SessionRecord;
  kind: Attribution;
}

/** Lineage by recorded identity: pid tree, build cgroup, build container. */
function sharesLineage(s: SessionRecord, sig: EgressSignal): boolean {
  if (sig.proc.pid !== null && s.pids.includes(sig.proc.pid)) return true;
  for (const p of sig.proc.ancestorPids) if (s.pids.includes(p)) return true;
  for (const c of sig.cgroups) for (const k of s.cgroups) if (cgroupMatches(c, k)) return true;
  return sig.containerId !== null && s.containers.includes(sig.containerId);
}

/**
 * Structural evidence that the process runs inside a build step, even when the step's own
 * build signal was missed: a step runtime exec'd directly by a builder (a normal container has
 * containerd-shim in between), a build cgroup, the kaniko executor container, or a container
 * started from an untagged image id (the classic builder's step containers).
 */
export function isBuildStep(sig: EgressSignal): boolean {
  if (sig.cgroups.length > 0) return true;
  const chain = [sig.proc.name, ...sig.proc.ancestorNames];
  for (let i = 0; i + 1 < chain.length; i++) {
    const a = chain[i];
    const b = chain[i + 1];
    if (a && b && STEP_RUNTIMES.has(a) && STEP_PARENTS.has(b)) return true;
  }
  if (sig.containerId === null) return false;
  const image = sig.image ?? '';
  return image.includes('kaniko-project/executor') || isBareImageId(image);
}

/** Is the connecting process a builder daemon (base-image pulls, registry traffic)? */
export function isBuilderDaemon(sig: EgressSignal): boolean {
  return sig.proc.name !== null && BUILDER_DAEMONS.has(sig.proc.name) && sig.cgroups.length === 0;
}

/**
 * Attribute an egress event to one of `open` (sessions on its host covering its time, most
 * recently active first). Null when nothing ties them.
 */
export function attribute(sig: EgressSignal, open: readonly SessionRecord[], windowOnly: boolean): AttributionResult | null {
  const first = open[0];
  if (first === undefined) return null;
  for (const s of open) if (sharesLineage(s, sig)) return { session: s, kind: 'lineage' };
  if (isBuildStep(sig) || isBuilderDaemon(sig)) return { session: first, kind: 'lineage' };
  const image = normaliseImageRef(sig.image);
  if (image !== null) {
    for (const s of open) {
      if (s.images.some((i) => normaliseImageRef(i) === image)) return { session: s, kind: 'image' };
    }
  }
  return windowOnly ? { session: first, kind: 'window' } : null;
}

/**
 * critical: a remote-API build reaching a new IP through its own lineage or image;
 * high: lineage or image; medium: window only (a remote build raises it to high).
 */
export function severityOf(session: SessionRecord, kind: Attribution): Severity {
  if (kind === 'window') return session.remotePeer !== null ? 'high' : 'medium';
  return session.remotePeer !== null ? 'critical' : 'high';
}
