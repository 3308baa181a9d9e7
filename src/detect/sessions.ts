/**
 * Build sessions in the correlator's memory: which builds are open on which host, and what
 * identifies them (builder pids, BuildKit/buildah cgroup ids, build containers, image tags).
 *
 * A session opens on the first build signal on a host that can start a build (a build CLI, a
 * step, a builder daemon start; a Docker API accept or a layer commit only ever extends or
 * marks one), is extended by every further build activity, and covers egress up to
 * `build_window` after its last activity. An egress that proves by its own lineage or cgroup
 * that it comes from a running build step is build activity too (`applyStepEgress`): it
 * re-opens its lapsed session, or opens one, so a step longer than the window is still seen. Clock: event time
 * only (windows must hold for replayed and late events), with `clock_skew` of tolerance on the
 * opening side. This table is the working copy; changes are handed to the store through
 * `takeDirty()` (write-through), and sessions loaded from the store after a restart are
 * merged in with `merge()`.
 */
import { createHash } from 'node:crypto';
import type { AlertEvidence } from '../model/alert.js';
import type { BuildSignal, EgressSignal, ProcInfo } from './classify.js';
import { cgroupMatches } from './classify.js';
import { DOCKER_API_ENGINES, normaliseImageRef, sameBuild } from './builders.js';
import { formatTimeNs } from '../model/event.js';
import { truncate } from '../ops/logger.js';
import type { HostSnapshot, RemoteAccept, SessionRecord, SessionWrite } from '../model/session.js';

const MAX_PIDS = 64;
const MAX_CGROUPS = 32;
const MAX_CONTAINERS = 16;
const MAX_IMAGES = 16;
const MAX_EVIDENCE = 4;
const MAX_OUTPUT = 1000;
/**
 * A remote Docker API accept makes build activity remote when it came at most this long
 * before (or `build_window`, when that is longer): a client uploads its build context between
 * the accept and the first build step, and a context of a few GB over a slow link takes many
 * minutes. Falco sees only the accept, not the upload, so the link must outlast it.
 */
export const REMOTE_LINK_MS = 120_000;

export interface SessionTableOptions {
  buildWindowMs: number;
  clockSkewMs: number;
  maxSessions: number;
}

/** How long before build activity a remote accept still makes it remote. */
export function remoteLinkMs(opts: SessionTableOptions): number {
  return Math.max(REMOTE_LINK_MS, opts.buildWindowMs);
}

interface HostState {
  sessions: SessionRecord[];
  remote: RemoteAccept | null;
  /** Latest event time seen for this host, ms (drives pruning). */
  latest: number;
}

interface DirtyHost {
  upsert: Map<string, SessionRecord>;
  remove: Set<string>;
  remote?: RemoteAccept | undefined;
}

function pushCapped<T>(list: T[], value: T, cap: number): void {
  if (!list.includes(value) && list.length < cap) list.push(value);
}

export function evidenceOf(sig: { event: BuildSignal['event'] }): AlertEvidence {
  return {
    time: formatTimeNs(sig.event.timeNs),
    rule: sig.event.rule,
    output: truncate(sig.event.output, MAX_OUTPUT),
  };
}

/** Lineage by recorded identity: pid tree, build cgroup, build container. */
export function sharesLineage(
  s: SessionRecord,
  sig: { proc: ProcInfo; cgroups: readonly string[]; containerId: string | null },
): boolean {
  if (sig.proc.pid !== null && s.pids.includes(sig.proc.pid)) return true;
  for (const p of sig.proc.ancestorPids) if (s.pids.includes(p)) return true;
  for (const c of sig.cgroups) for (const k of s.cgroups) if (cgroupMatches(c, k)) return true;
  return sig.containerId !== null && s.containers.includes(sig.containerId);
}

/** Does the build signal share an identity key with the session? */
function sharesKey(s: SessionRecord, sig: BuildSignal): boolean {
  if (sharesLineage(s, sig)) return true;
  for (const i of sig.images) if (s.images.includes(i)) return true;
  return false;
}

/**
 * Could the Docker API have driven this build? Only builds dockerd runs, and not one a local
 * CLI asked for over the daemon's socket.
 */
function remoteCapable(s: SessionRecord): boolean {
  return s.engine !== null && DOCKER_API_ENGINES.has(s.engine) && !s.localClient;
}

/** Same builder (or one its CLI drives), or one side does not know yet. */
function sameEngine(s: SessionRecord, engine: string | null): boolean {
  return sameBuild(s.engine, engine);
}

/** Has the session seen a step of its own yet (a cgroup or a build container)? */
function hasSteps(s: SessionRecord): boolean {
  return s.cgroups.length > 0 || s.containers.length > 0;
}

function sharesRecordKey(a: SessionRecord, b: SessionRecord): boolean {
  return (
    a.pids.some((p) => b.pids.includes(p)) ||
    a.cgroups.some((c) => b.cgroups.some((k) => cgroupMatches(c, k))) ||
    a.containers.some((c) => b.containers.includes(c))
  );
}

/** Container ids worth recording: the build runs inside them (kaniko, classic-builder steps). */
function buildContainer(sig: BuildSignal | EgressSignal): string | null {
  if (sig.containerId === null) return null;
  if (sig.type === 'egress' || sig.activity === 'step' || sig.engine === 'kaniko') return sig.containerId;
  return null;
}

function sessionId(host: string, key: string, startedAt: number): string {
  return createHash('sha256').update(`${host}\u0000${key}\u0000${startedAt}`).digest('hex').slice(0, 20);
}

export class SessionTable {
  private readonly hosts = new Map<string, HostState>();
  private readonly dirty = new Map<string, DirtyHost>();
  private total = 0;

  constructor(private readonly opts: SessionTableOptions) {}

  /** Open sessions held, all hosts. */
  get size(): number {
    return this.total;
  }

  get hasDirty(): boolean {
    return this.dirty.size > 0;
  }

  /** True when the host holds any session at all (cheap pre-check for the hot path). */
  hasAny(host: string): boolean {
    const h = this.hosts.get(host);
    return h !== undefined && h.sessions.length > 0;
  }

  /** Does session `s` cover event time `t`? */
  covers(s: SessionRecord, t: number): boolean {
    return s.startedAt - this.opts.clockSkewMs <= t && t <= s.lastActivity + this.opts.buildWindowMs;
  }

  /** Sessions on `host` covering event time `t`, most recently active first. */
  openAt(host: string, t: number): SessionRecord[] {
    const h = this.hosts.get(host);
    if (!h || h.sessions.length === 0) return [];
    const out = h.sessions.filter((s) => this.covers(s, t));
    if (out.length > 1) out.sort((a, b) => b.lastActivity - a.lastActivity);
    return out;
  }

  /**
   * Apply a build signal; returns the session it opened or extended, or null (an API accept
   * with nothing to extend, or a layer commit outside any build).
   */
  applyBuild(sig: BuildSignal): SessionRecord | null {
    const h = this.host(sig.host);
    const t = sig.timeMs;
    h.latest = Math.max(h.latest, t);
    this.prune(sig.host, h);
    // Pruning may have dropped the host (nothing left on it); what this signal opens is kept.
    if (!this.hosts.has(sig.host)) this.hosts.set(sig.host, h);
    if (sig.activity === 'api') {
      if (sig.remotePeer === null) return null;
      if (!h.remote || h.remote.timeMs <= t) {
        h.remote = { peer: sig.remotePeer, timeMs: t, evidence: evidenceOf(sig) };
        this.markRemote(sig.host, h.remote);
      }
      // A build that opened just after this accept but whose signals arrived first (several
      // Falco sources, reconnects). Builds already running before it are never linked: that
      // client did not ask for them (linkRemote).
      for (const s of h.sessions) {
        if (s.remotePeer === null && remoteCapable(s) && s.startedAt >= t - this.opts.clockSkewMs && s.startedAt <= t + remoteLinkMs(this.opts)) {
          this.setRemote(s, h.remote);
          this.markUpsert(s);
        }
      }
      return null;
    }
    const open = h.sessions.filter((s) => this.covers(s, t));
    let s = open.find((x) => sharesKey(x, sig));
    // A step, a daemon start or a layer commit carries no link to the CLI that asked for it
    // (the CLI talks to the daemon over a socket): it belongs to a build in progress.
    if (!s && sig.activity !== 'cli') s = this.inProgress(open, sig.engine);
    if (!s) {
      if (sig.activity === 'commit') return null;
      s = this.open(sig, h);
    } else {
      this.extend(s, sig);
    }
    this.linkRemote(s, h, t);
    this.markUpsert(s);
    return s;
  }

  /**
   * An egress proven to come from a build step (its cgroup or lineage) that no open session
   * covers: the step outlived the window, or its build signals were missed. It re-opens the
   * session it shares an identity with (lapsed but not yet pruned), or opens one from its own
   * evidence. Either way the session's activity moves to the egress's time.
   */
  applyStepEgress(sig: EgressSignal): SessionRecord {
    const h = this.host(sig.host);
    const t = sig.timeMs;
    h.latest = Math.max(h.latest, t);
    let s = h.sessions.find((x) => sharesLineage(x, sig));
    if (s) this.extend(s, sig);
    else s = this.open(sig, h);
    this.linkRemote(s, h, t);
    this.markUpsert(s);
    return s;
  }

  /**
   * The open build a step with no identity link belongs to: one of the same builder that has
   * no step yet (the newest such: its CLI just asked for this step), else the most recently
   * active one of the same builder. Null when no open build is of that builder.
   */
  private inProgress(open: readonly SessionRecord[], engine: string | null): SessionRecord | undefined {
    let fresh: SessionRecord | undefined;
    let active: SessionRecord | undefined;
    for (const x of open) {
      if (!sameEngine(x, engine)) continue;
      if (!hasSteps(x) && (!fresh || x.startedAt > fresh.startedAt)) fresh = x;
      if (!active || x.lastActivity > active.lastActivity) active = x;
    }
    return fresh ?? active;
  }

  /**
   * A remote accept makes a build dockerd runs remote when the build began after it (within
   * the skew, and at most the link time later): a build already running before the accept was
   * not asked for by that client, however late its next step comes.
   */
  private linkRemote(s: SessionRecord, h: HostState, t: number): void {
    if (s.remotePeer !== null || !remoteCapable(s) || !h.remote) return;
    const a = h.remote.timeMs;
    if (a <= t + this.opts.clockSkewMs && s.startedAt >= a - this.opts.clockSkewMs && s.startedAt <= a + remoteLinkMs(this.opts)) {
      this.setRemote(s, h.remote);
    }
  }

  /** Merge sessions loaded from the store (after a restart, or written by another daemon). */
  merge(host: string, snap: HostSnapshot): void {
    const h = this.host(host);
    if (snap.remote && (!h.remote || h.remote.timeMs < snap.remote.timeMs)) h.remote = snap.remote;
    for (const rec of snap.sessions) {
      h.latest = Math.max(h.latest, rec.lastActivity);
      const local = h.sessions.find((s) => s.id === rec.id) ?? h.sessions.find((s) => sharesRecordKey(s, rec));
      if (!local) {
        if (rec.imageRefs.length === 0) for (const i of rec.images) this.addImage(rec, i);
        h.sessions.push(rec);
        this.total++;
        continue;
      }
      // Keep the older id: it is the one other daemons and dedupe keys already use.
      if (rec.startedAt < local.startedAt) {
        const oldId = local.id;
        local.id = rec.id;
        local.trigger = rec.trigger;
        local.startedAt = rec.startedAt;
        this.dirtyHost(host).upsert.delete(oldId);
        this.dirtyHost(host).remove.add(oldId);
      }
      local.lastActivity = Math.max(local.lastActivity, rec.lastActivity);
      if (local.remotePeer === null && rec.remotePeer !== null) {
        local.remotePeer = rec.remotePeer;
        local.trigger = { ...local.trigger, remote_peer: rec.remotePeer };
      }
      for (const p of rec.pids) pushCapped(local.pids, p, MAX_PIDS);
      for (const c of rec.cgroups) pushCapped(local.cgroups, c, MAX_CGROUPS);
      for (const c of rec.containers) pushCapped(local.containers, c, MAX_CONTAINERS);
      for (const i of rec.images) pushCapped(local.images, i, MAX_IMAGES);
      for (const i of rec.imageRefs) pushCapped(local.imageRefs, i, MAX_IMAGES);
      local.engine ??= rec.engine;
      local.expected ||= rec.expected;
      local.dockerBuilder ??= rec.dockerBuilder;
      this.markUpsert(local);
    }
    this.prune(host, h);
    this.evict();
  }

  /** Changes since the last call, to write through to the store. */
  takeDirty(): SessionWrite[] {
    const out: SessionWrite[] = [];
    for (const [host, d] of this.dirty) {
      out.push({ host, upsert: [...d.upsert.values()], remove: [...d.remove], remote: d.remote });
    }
    this.dirty.clear();
    return out;
  }

  /** Put changes back after a failed write (newer changes win). */
  restoreDirty(writes: readonly SessionWrite[]): void {
    for (const w of writes) {
      const d = this.dirtyHost(w.host);
      for (const s of w.upsert) if (!d.upsert.has(s.id) && !d.remove.has(s.id)) d.upsert.set(s.id, s);
      for (const id of w.remove) if (!d.upsert.has(id)) d.remove.add(id);
      if (w.remote && (!d.remote || d.remote.timeMs < w.remote.timeMs)) d.remote = w.remote;
    }
  }

  private host(name: string): HostState {
    let h = this.hosts.get(name);
    if (!h) {
      if (this.hosts.size >= 2 * this.opts.maxSessions) {
        // Hosts that only remember a remote accept are the cheapest to forget.
        for (const [n, x] of this.hosts) if (x.sessions.length === 0) this.hosts.delete(n);
      }
      h = { sessions: [], remote: null, latest: 0 };
      this.hosts.set(name, h);
    }
    return h;
  }

  private dirtyHost(host: string): DirtyHost {
    let d = this.dirty.get(host);
    if (!d) {
      d = { upsert: new Map(), remove: new Set() };
      this.dirty.set(host, d);
    }
    return d;
  }

  private markUpsert(s: SessionRecord): void {
    const d = this.dirtyHost(s.host);
    d.remove.delete(s.id);
    d.upsert.set(s.id, s);
  }

  private markRemote(host: string, r: RemoteAccept): void {
    this.dirtyHost(host).remote = r;
  }

  private setRemote(s: SessionRecord, remote: RemoteAccept): void {
    s.remotePeer = remote.peer;
    s.trigger = { ...s.trigger, remote_peer: remote.peer };
    // The accept is the strongest evidence of a remote build; it came first, so it goes first
    // (the trigger is kept in build.trigger should the cap push it out of the list).
    if (remote.evidence && !s.evidence.some((e) => e.time === remote.evidence?.time && e.rule === remote.evidence.rule)) {
      if (s.evidence.length >= MAX_EVIDENCE) s.evidence.splice(1, 1);
      s.evidence.unshift(remote.evidence);
    }
  }

  private open(sig: BuildSignal | EgressSignal, h: HostState): SessionRecord {
    const key =
      sig.cgroups[0] ??
      buildContainer(sig) ??
      (sig.type === 'build' ? sig.images[0] : undefined) ??
      (sig.proc.pid !== null ? `pid:${sig.proc.pid}` : `${sig.type === 'build' ? sig.activity : 'egress'}:${sig.event.rule}`);
    const s: SessionRecord = {
      id: sessionId(sig.host, key, sig.timeMs),
      host: sig.host,
      startedAt: sig.timeMs,
      lastActivity: sig.timeMs,
      remotePeer: null,
      trigger: {
        rule: sig.event.rule,
        proc_name: sig.proc.name,
        cmdline: sig.proc.cmdline === null ? null : truncate(sig.proc.cmdline, MAX_OUTPUT),
        user: sig.proc.user,
        container_id: sig.containerId ?? (sig.event.fields['container.id'] ?? null),
        remote_peer: null,
      },
      evidence: [],
      pids: [],
      cgroups: [],
      containers: [],
      images: [],
      imageRefs: [],
      engine: sig.engine,
      expected: sig.expected,
      localClient: sig.type === 'build' && sig.localClient,
      dockerBuilder: sig.type === 'build' ? sig.dockerBuilder : sig.cgroups.length > 0 && sig.engine === 'docker' ? 'buildkit' : null,
    };
    this.addKeys(s, sig);
    s.evidence.push(evidenceOf(sig));
    h.sessions.push(s);
    this.total++;
    this.evict();
    return s;
  }

  private extend(s: SessionRecord, sig: BuildSignal | EgressSignal): void {
    s.lastActivity = Math.max(s.lastActivity, sig.timeMs);
    // An earlier signal arriving late moves the start back (it stays the trigger's session).
    s.startedAt = Math.min(s.startedAt, sig.timeMs);
    s.engine ??= sig.engine;
    if (sig.type === 'build' && sig.dockerBuilder !== null && s.dockerBuilder !== 'buildkit') s.dockerBuilder = sig.dockerBuilder;
    // The user's tuning names one event of the build (its CLI, agent or host); the rest of the
    // build inherits it.
    if (sig.expected) s.expected = true;
    this.addKeys(s, sig);
    // The first signal stays (it is the trigger); the rest is the most recent activity.
    if (s.evidence.length >= MAX_EVIDENCE) s.evidence.splice(1, 1);
    s.evidence.push(evidenceOf(sig));
  }

  private addKeys(s: SessionRecord, sig: BuildSignal | EgressSignal): void {
    if (sig.proc.pid !== null && sig.type === 'build') {
      if (s.pids.length >= MAX_PIDS) s.pids.splice(1, 1); // keep the builder's own pid
      pushCapped(s.pids, sig.proc.pid, MAX_PIDS);
    }
    for (const c of sig.cgroups) pushCapped(s.cgroups, c, MAX_CGROUPS);
    const ctr = buildContainer(sig);
    if (ctr !== null) pushCapped(s.containers, ctr, MAX_CONTAINERS);
    if (sig.type === 'build') for (const i of sig.images) this.addImage(s, i);
  }

  /** Record an image the build names, and its canonical form once (attribution matches that). */
  private addImage(s: SessionRecord, ref: string): void {
    pushCapped(s.images, ref, MAX_IMAGES);
    const canonical = normaliseImageRef(ref);
    if (canonical !== null) pushCapped(s.imageRefs, canonical, MAX_IMAGES);
  }

  /**
   * Drop sessions long past their window. The grace of one more window keeps a session around
   * for egress events that are still waiting for a decision (a Redis outage) when newer build
   * activity on the host has moved `latest` on.
   */
  private prune(host: string, h: HostState): void {
    const horizon = h.latest - 2 * this.opts.buildWindowMs - this.opts.clockSkewMs;
    if (h.sessions.every((s) => s.lastActivity >= horizon)) return;
    h.sessions = h.sessions.filter((s) => {
      if (s.lastActivity >= horizon) return true;
      this.total--;
      this.dirtyHost(host).upsert.delete(s.id);
      this.dirtyHost(host).remove.add(s.id);
      return false;
    });
    if (h.sessions.length === 0 && (!h.remote || h.remote.timeMs < horizon)) this.hosts.delete(host);
  }

  /** Keep at most `maxSessions`: the least recently active go first. */
  private evict(): void {
    while (this.total > this.opts.maxSessions) {
      let victimHost: string | undefined;
      let victim: SessionRecord | undefined;
      for (const [name, h] of this.hosts) {
        for (const s of h.sessions) {
          if (!victim || s.lastActivity < victim.lastActivity) {
            victim = s;
            victimHost = name;
          }
        }
      }
      if (!victim || victimHost === undefined) return;
      const h = this.hosts.get(victimHost);
      if (!h) return;
      h.sessions = h.sessions.filter((s) => s !== victim);
      this.total--;
      this.dirtyHost(victimHost).upsert.delete(victim.id);
      if (h.sessions.length === 0 && !h.remote) this.hosts.delete(victimHost);
    }
  }
}
