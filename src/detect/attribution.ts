/**
 * Attribution: which open build session, if any, an egress event belongs to, and how strongly.
 *
 * Order: lineage (the connecting process descends from the session's builder or build step,
 * or is a classic-builder step container the session's evidence explains), then image (a
 * container started from an image the session built, after the build began), then window
 * (same host, inside the window; only when `attribute_window_only` is on). Severity follows
 * from the attribution and whether the build came over the remote Docker API. Works on the
 * classified signal only (classify.ts); builder facts live in builders.ts.
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
import { CLASSIC_ENGINE, imageAliases, repositoryOf, sameBuild } from './builders.js';
import { sharesLineage } from './sessions.js';
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
  /** Clock-skew tolerance, ms (container start vs build start). */
  clockSkewMs: number;
}

/** What the correlator knows about the connecting container. */
export interface ContainerFacts {
  /** When the container started (the plugin's start time when printed, else first seen), ms. */
  startedAt: number | null;
}

/**
 * Does a running container's image match an image the build named? `running` is the signal's
 * canonical reference; a tagless one (the plugin dropped the tag, as it does for
 * `host:port/repo:tag`) matches any tag of the repository. `built` holds canonical references.
 */
export function imageMatches(built: readonly string[], running: string): boolean {
  const tagless = running.lastIndexOf(':') <= running.lastIndexOf('/');
  for (const b of built) {
    for (const alias of imageAliases(b)) {
      if (tagless ? repositoryOf(alias) === running : alias === running) return true;
    }
  }
  return false;
}

/**
 * A classic-builder step container without image metadata: a `sh -c` container (classified
 * as a candidate) that started while a `docker` build not known to be BuildKit (no
 * DOCKER_BUILDKIT=1 or buildx, no BuildKit step of its own) was open, and not before it. The
 * newest such build is the one.
 */
function classicSession(sig: EgressSignal, open: readonly SessionRecord[], c: ContainerFacts, skewMs: number): SessionRecord | undefined {
  if (!sig.classicCandidate || c.startedAt === null) return undefined;
  let best: SessionRecord | undefined;
  for (const s of open) {
    if (s.engine !== CLASSIC_ENGINE || s.cgroups.length > 0 || s.dockerBuilder === 'buildkit') continue;
    if (c.startedAt < s.startedAt - skewMs) continue;
    if (!best || s.startedAt > best.startedAt) best = s;
  }
  return best;
}

/**
 * Attribute an egress event to one of `open` (sessions on its host covering its time, most
 * recently active first). Null when nothing ties them; the correlator then lets a proven build
 * step open or re-open its own session (sessions.ts applyStepEgress).
 */
export function attribute(
  sig: EgressSignal,
  open: readonly SessionRecord[],
  opts: AttributionOptions,
  container: ContainerFacts = { startedAt: null },
): AttributionResult | null {
  const first = open[0];
  if (first === undefined) return null;
  if (sig.builderOwn) {
    if (!opts.builderEgress || !sig.fetching) return null;
    const tied = open.find((s) => sharesLineage(s, sig));
    // dockerd and buildkitd serve every build on the host: the newest build is the best guess.
    return tied ? { session: tied, kind: 'lineage', builder: true } : { session: first, kind: 'window', builder: true };
  }
  for (const s of open) if (sharesLineage(s, sig)) return { session: s, kind: 'lineage', builder: false };
  if (sig.step !== null) {
    // A step no session knows by key: the build in progress of the same builder, if any.
    const same = open.find((s) => sameBuild(s.engine, sig.engine));
    return same ? { session: same, kind: 'lineage', builder: false } : null;
  }
  const classic = classicSession(sig, open, container, opts.clockSkewMs);
  if (classic) return { session: classic, kind: 'lineage', builder: false };
  if (sig.imageRef !== null) {
    for (const s of open) {
      if (s.imageRefs.length === 0 || !imageMatches(s.imageRefs, sig.imageRef)) continue;
      // Only a container started from the built image after the build began inherits it.
      if (container.startedAt !== null && container.startedAt < s.startedAt - opts.clockSkewMs) continue;
      return { session: s, kind: 'image', builder: false };
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
