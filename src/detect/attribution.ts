/**
 * Attribution: which open build session, if any, an egress event belongs to, and how strongly.
 *
 * Order: lineage (the connecting process descends from the session's builder or build step),
 * then image (a container started from an image the session built), then window (same host,
 * inside the window; only when `attribute_window_only` is on). Severity follows from the
 * attribution and whether the build came over the remote Docker API.
 *
 * A builder's own connections (dockerd, buildkitd, buildah, podman, kaniko's executor) are a
 * class of their own: mostly base-image pulls and pushes, whose registries rotate CDN
 * addresses, but also `ADD <url>` downloads. They alert only when `alert_builder_egress` is on
 * (the default), one step below a RUN step's download: medium, high for remote-API builds.
 * containerd's own connections never alert: it pulls for Kubernetes (CRI) and `ctr`, while
 * builds fetch through dockerd, buildkitd, buildah or podman themselves.
 */
import type { Attribution, Severity } from '../model/alert.js';
import type { EgressSignal } from './classify.js';
import {
  STEP_PARENTS,
  STEP_RUNTIMES,
  cgroupMatches,
  isBareImageId,
  isKanikoExecutor,
  normaliseImageRef,
} from './classify.js';
import type { SessionRecord } from '../model/session.js';

export interface AttributionResult {
  session: SessionRecord;
  kind: Attribution;
  /** The connection came from a builder itself (pull, push, `ADD <url>`), not a build step. */
  builder: boolean;
}

export interface AttributionOptions {
  /** `attribute_window_only`: same host and window is enough. */
  windowOnly: boolean;
  /** `alert_builder_egress`: a builder's own connections during a build count. */
  builderEgress: boolean;
}

/** Builders whose own connections during a build are build inputs (pulls, `ADD <url>`). */
const FETCHING_BUILDERS: ReadonlySet<string> = new Set(['dockerd', 'buildkitd', 'buildah', 'podman']);

/** Lineage by recorded identity: pid tree, build cgroup, build container. */
function sharesLineage(s: SessionRecord, sig: EgressSignal): boolean {
  if (sig.proc.pid !== null && s.pids.includes(sig.proc.pid)) return true;
  for (const p of sig.proc.ancestorPids) if (s.pids.includes(p)) return true;
  for (const c of sig.cgroups) for (const k of s.cgroups) if (cgroupMatches(c, k)) return true;
  return sig.containerId !== null && s.containers.includes(sig.containerId);
}

/**
 * Structural evidence that the process runs inside a build step, even when the step's own
 * build signal was missed: a step runtime with a builder above it (a normal container has
 * containerd-shim instead, and runc long gone), a build cgroup, the kaniko executor container,
 * or a container started from an untagged image id (the classic builder's step containers).
 * The runtime and the builder need not be adjacent: buildah runs its runtime through a
 * re-executed helper (`exe`), as the rules' `proc.aname in (…)` allows too.
 */
export function isBuildStep(sig: EgressSignal): boolean {
  if (sig.cgroups.length > 0) return true;
  let runtime = STEP_RUNTIMES.has(sig.proc.name ?? '');
  for (const a of sig.proc.ancestorNames) {
    if (a === null) continue;
    if (runtime && STEP_PARENTS.has(a)) return true;
    if (STEP_RUNTIMES.has(a)) runtime = true;
  }
  if (sig.containerId === null) return false;
  const image = sig.image ?? '';
  return image.includes('kaniko-project/executor') || isBareImageId(image);
}

/** Is the connecting process a builder daemon (dockerd, buildkitd, containerd, buildah, podman)? */
export function isBuilderDaemon(sig: EgressSignal): boolean {
  return sig.proc.name !== null && STEP_PARENTS.has(sig.proc.name) && sig.cgroups.length === 0;
}

/** A builder fetching for a build: a builder daemon but containerd, or kaniko's executor itself. */
function isFetchingBuilder(sig: EgressSignal): boolean {
  if (sig.cgroups.length > 0) return false;
  return (sig.proc.name !== null && FETCHING_BUILDERS.has(sig.proc.name)) || isKanikoExecutor(sig.proc, sig.containerId);
}

/**
 * Does a running container's image match an image the build named? Both are normalised
 * (docker.io/library/ spelled out, :latest implied, registry host:port kept). podman and
 * buildah store an unqualified `-t app:1` as `localhost/app:1`, so that spelling matches too.
 */
export function imageMatches(built: string, running: string): boolean {
  const b = normaliseImageRef(built);
  if (b === null) return false;
  if (b === running) return true;
  const hub = 'docker.io/library/';
  return b.startsWith(hub) && running === `localhost/${b.slice(hub.length)}`;
}

/**
 * Attribute an egress event to one of `open` (sessions on its host covering its time, most
 * recently active first). Null when nothing ties them.
 */
export function attribute(
  sig: EgressSignal,
  open: readonly SessionRecord[],
  opts: AttributionOptions,
): AttributionResult | null {
  const first = open[0];
  if (first === undefined) return null;
  if (isBuilderDaemon(sig) || isKanikoExecutor(sig.proc, sig.containerId)) {
    if (!opts.builderEgress || !isFetchingBuilder(sig)) return null;
    const tied = open.find((s) => sharesLineage(s, sig));
    // dockerd and buildkitd serve every build on the host: the newest build is the best guess.
    return tied ? { session: tied, kind: 'lineage', builder: true } : { session: first, kind: 'window', builder: true };
  }
  for (const s of open) if (sharesLineage(s, sig)) return { session: s, kind: 'lineage', builder: false };
  if (isBuildStep(sig)) return { session: first, kind: 'lineage', builder: false };
  const image = normaliseImageRef(sig.image);
  if (image !== null) {
    for (const s of open) {
      if (s.images.some((i) => imageMatches(i, image))) return { session: s, kind: 'image', builder: false };
    }
  }
  return opts.windowOnly ? { session: first, kind: 'window', builder: false } : null;
}

/**
 * critical: a remote-API build reaching a new IP through its own lineage or image;
 * high: lineage or image; medium: window only, or a builder's own connection (a remote build
 * raises both to high).
 */
export function severityOf(session: SessionRecord, kind: Attribution, builder = false): Severity {
  if (kind === 'window' || builder) return session.remotePeer !== null ? 'high' : 'medium';
  return session.remotePeer !== null ? 'critical' : 'high';
}
