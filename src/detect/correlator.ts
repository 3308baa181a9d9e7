/**
 * The Correlator: the Intake's consumer. Build signals open and extend sessions; egress events
 * feed the environment's first-seen set; an attributed egress to a new IP (past learning, not
 * allow-listed) raises one alert per (session, IP), deduplicated fleet-wide.
 *
 * Hot path: an egress to an IP in the local known-IP cache is decided synchronously with no
 * allocation beyond reading its fields. Everything else (cache misses, session write-through,
 * last-seen refreshes) is collected and decided in batches, one store round trip per batch.
 * While Redis is unreachable the batch waits in a bounded buffer (`redis_buffer_size`) and
 * `ready` is false; overflow is counted and logged. The buffer and its retry loop live in
 * decision-queue.ts; handing alerts to the sink (and retrying refusals) in alert-redelivery.ts.
 *
 * Clocks:
 * - event time (Falco's stamp) for build windows, skew tolerance and the learning period, so
 *   late and replayed events are judged by when they happened;
 * - `now()` (wall clock, injectable) for first-seen retention and last-seen refreshes, the
 *   local cache's validity, the alert's `time`, and the out-of-order grace of unattributed
 *   egress (how long we wait for a late build signal).
 */
import { performance } from 'node:perf_hooks';
import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import { describeError } from '../model/errors.js';
import { fieldOf, TAG_BUILD, TAG_EGRESS, type FalcoEvent } from '../model/event.js';
import type { Metrics } from '../ops/metrics.js';
import { ThrottledLog } from '../ops/throttled-log.js';
import type { Stores } from '../store/stores.js';
import type { DecideItem, DecideResult } from '../store/first-seen.js';
import type { AlertSink } from '../model/alert.js';
import { AlertRedelivery } from './alert-redelivery.js';
import { attribute, severityOf, type AttributionOptions, type AttributionResult } from './attribution.js';
import { buildAlert } from './build-alert.js';
import { classifyBuild, classifyEgress, egressDestination, type EgressSignal } from './classify.js';
import { DecisionQueue, type Pending } from './decision-queue.js';
import { CidrSet, DomainSuffixSet, isIgnoredAddress } from './net.js';
import { ContainerStarts } from './containers.js';
import { OrphanPool, sessionKeys, type Orphan } from './orphans.js';
import { SessionTable } from './sessions.js';
import type { SessionRecord } from '../model/session.js';

export interface CorrelatorDeps {
  stores: Stores;
  sink: AlertSink;
  metrics: Metrics;
  logger: Logger;
  /** Wall clock, ms. @default Date.now */
  now?: () => number;
  /**
   * An alert decided for the event with this decide token is in the sink. The write-ahead log
   * records it, so a crash before the event is trimmed does not raise the alert again.
   */
  onAlerted?: (token: string) => void;
}

/** A retro-attributed orphan waiting for its dedupe claim. */
interface Retro {
  orphan: Orphan;
  attribution: AttributionResult;
}

const BATCH = 1000;
/** Containers whose start time is remembered (image lineage start order). */
const MAX_CONTAINERS = 16_384;
const MAINTAIN_EVERY_MS = 30_000;
const LOG_EVERY_MS = 10_000;
/** Cached known IPs refresh their last-seen at most this often (retention is days). */
const MAX_REFRESH_MS = 10 * 60_000;
/** How long after their window a session's dedupe key lives, beyond the window itself. */
const SESSION_TTL_MARGIN_MS = 60_000;

/** A UUID-shaped id derived from the decision (token, session, IP): unique, and stable across a replay. */
function alertId(token: string, sessionId: string, ip: string): string {
  const h = createHash('sha256').update(`${token}\u0000${sessionId}\u0000${ip}`).digest('hex');
  // Version 8 (custom) and the RFC 4122 variant, so it parses as a UUID everywhere.
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-${((parseInt(h.charAt(16), 16) & 0x3) | 0x8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export class Correlator {
  private readonly now: () => number;
  private readonly table: SessionTable;
  private readonly allowCidrs: CidrSet;
  private readonly allowDomains: DomainSuffixSet;
  /** Known IPs -> wall-clock ms their last-seen was last written; Map order approximates LRU. */
  private readonly cache = new Map<string, number>();
  private readonly refreshMs: number;
  private readonly queue: DecisionQueue;
  private readonly redelivery: AlertRedelivery;
  private readonly throttle: ThrottledLog;
  private readonly orphans: OrphanPool;
  private readonly containers = new ContainerStarts(MAX_CONTAINERS);
  private readonly attribution: AttributionOptions;
  private retro: Retro[] = [];
  private readonly loadedHosts = new Set<string>();
  private readonly hostsToLoad = new Set<string>();
  private readonly tokenPrefix = randomBytes(6).toString('hex');
  private tokenSeq = 0;
  private readonly maintainTimer: NodeJS.Timeout;
  private learningStart: number | undefined;
  /** The known-IP gauge is first set after the first successful round trip. */
  private counted = false;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly cfg: Config,
    private readonly deps: CorrelatorDeps,
  ) {
    this.now = deps.now ?? Date.now;
    this.table = new SessionTable({
      buildWindowMs: cfg.buildWindowMs,
      clockSkewMs: cfg.clockSkewMs,
      maxSessions: cfg.maxSessions,
    });
    this.allowCidrs = new CidrSet(cfg.allowCidrs);
    this.allowDomains = new DomainSuffixSet(cfg.allowDomains);
    this.refreshMs = Math.min(MAX_REFRESH_MS, Math.floor(cfg.firstSeenRetentionMs / 4));
    this.orphans = new OrphanPool(cfg.clockSkewMs);
    this.attribution = {
      windowOnly: cfg.attributeWindowOnly,
      builderEgress: cfg.alertBuilderEgress,
      clockSkewMs: cfg.clockSkewMs,
    };
    this.throttle = new ThrottledLog(deps.logger, LOG_EVERY_MS);
    this.redelivery = new AlertRedelivery({
      sink: deps.sink,
      metrics: deps.metrics,
      logger: deps.logger,
      throttle: this.throttle,
      onIdle: () => this.queue.resolveIdle(),
    });
    this.queue = new DecisionQueue({
      bufferSize: cfg.redisBufferSize,
      redisUp: () => deps.stores.redisUp(),
      logger: deps.logger,
      hasOtherWork: () => this.retro.length > 0 || this.hostsToLoad.size > 0 || this.table.hasDirty,
      othersIdle: () => this.redelivery.idle,
      round: () => this.round(),
    });
    this.maintainTimer = setInterval(() => void this.maintain(), MAINTAIN_EVERY_MS);
    this.maintainTimer.unref();
  }

  /** False while Redis is unreachable and egress decisions are being buffered. */
  get ready(): boolean {
    return this.queue.ready;
  }

  /** Egress events waiting for a decision (tests, diagnostics). */
  get backlog(): number {
    return this.queue.length;
  }

  /**
   * The Intake consumer. Synchronous except when the decision buffer is full while Redis is
   * up: then it returns a promise that resolves when there is room (backpressure).
   * `token`: the decide token persisted with the event (write-ahead log); a replayed event
   * brings the same one back, so the store answers it as it did before a crash.
   */
  handle(ev: FalcoEvent, token?: string): void | Promise<void> {
    if (this.closed) {
      // Only after the shutdown deadline cut the intake short: counted, never silent.
      this.deps.metrics.droppedEvents.inc({ reason: 'shutdown' });
      return;
    }
    try {
      const tags = ev.tags;
      if (!Array.isArray(tags)) return;
      if (tags.includes(TAG_EGRESS)) return this.onEgress(ev, token);
      if (tags.includes(TAG_BUILD)) this.onBuild(ev);
    } catch (err) {
      this.throttle.log('warn', 'event-failed', { err: describeError(err), rule: ev?.rule }, 'correlator could not use event');
    }
    return;
  }

  /**
   * Whether `ev`, handed in now, could still lead to anything a crash would lose: a decision
   * in the store, an alert, a build session. False for an event this correlator settles on
   * arrival with nothing to write: one with neither T1612 tag, and an egress to an IP its
   * known-IP cache holds (a known IP stays known for the retention, days: whenever the event
   * is handled it raises nothing). The intake keeps such events out of the write-ahead log.
   */
  needsLog(ev: FalcoEvent): boolean {
    const tags = ev.tags;
    if (!Array.isArray(tags)) return false;
    if (tags.includes(TAG_EGRESS)) {
      const raw = fieldOf(ev, 'fd.sip');
      const seen = raw ? this.cache.get(raw) : undefined;
      return seen === undefined || this.now() - seen >= this.cfg.firstSeenRetentionMs;
    }
    return tags.includes(TAG_BUILD);
  }

  /** Resolves once every event handed in so far is decided and its alerts are enqueued. */
  flush(): Promise<void> {
    return this.queue.flush();
  }

  /** Stop taking events, flush within `shutdown_timeout`, stop timers. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      clearInterval(this.maintainTimer);
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), this.cfg.shutdownTimeoutMs);
        timer.unref();
      });
      const result = await Promise.race([this.flush().then(() => 'ok' as const), deadline]);
      clearTimeout(timer);
      this.redelivery.stop();
      if (result === 'timeout') {
        const lost = this.queue.length + this.retro.length;
        if (lost > 0) this.deps.metrics.droppedEvents.inc({ reason: 'shutdown' }, lost);
        this.deps.logger.warn(
          { undecided: lost, undelivered: this.redelivery.backlog },
          'correlator closed before every event was decided',
        );
      }
      this.queue.stop();
    })();
    return this.closing;
  }

  // ---------------------------------------------------------------------------------------
  // Event intake
  // ---------------------------------------------------------------------------------------

  private onEgress(ev: FalcoEvent, token: string | undefined): void | Promise<void> {
    this.containers.observe(ev);
    // Only canonical texts enter the cache, so a raw hit needs no normalising (IPv6 parsing
    // allocates); a miss normalises and looks again.
    const raw = fieldOf(ev, 'fd.sip');
    let seen = raw ? this.cache.get(raw) : undefined;
    const ip = seen !== undefined ? (raw as string) : egressDestination(ev);
    if (ip === null) return;
    if (seen === undefined && ip !== raw) seen = this.cache.get(ip);
    const now = this.now();
    if (seen !== undefined && now - seen < this.cfg.firstSeenRetentionMs) {
      if (now - seen >= this.refreshMs) this.refresh(ip, now);
      return;
    }
    if (isIgnoredAddress(ip) || this.allowCidrs.contains(ip)) return;
    if (!this.allowDomains.empty && this.allowDomains.matches(fieldOf(ev, 'fd.sip.name') ?? null)) return;
    const host = ev.hostname || this.cfg.hostname;
    // A burst to one unknown IP from a host with no build in sight: the first event records it.
    if (this.loadedHosts.has(host) && !this.table.hasAny(host) && this.queue.queued(host, ip)) return;
    const sig = classifyEgress(ev, host, ip);
    if (sig === null) return;
    return this.enqueue({ sig, nowMs: now, t0: performance.now(), token: token ?? this.token() });
  }

  private onBuild(ev: FalcoEvent): void {
    this.containers.observe(ev);
    const sig = classifyBuild(ev, ev.hostname || this.cfg.hostname);
    if (!this.loadedHosts.has(sig.host)) this.hostsToLoad.add(sig.host);
    const session = this.table.applyBuild(sig);
    if (session) this.retroAttribute(sig.host, session);
    if (this.table.hasDirty || this.hostsToLoad.size > 0 || this.retro.length > 0) this.queue.schedule();
  }

  private enqueue(p: Pending): void | Promise<void> {
    if (this.queue.full) {
      if (this.queue.outage) {
        this.deps.metrics.droppedEvents.inc({ reason: 'redis_buffer_full' });
        this.throttle.log('warn', 'buffer-full', { buffer: this.cfg.redisBufferSize, ip: p.sig.ip, rule: p.sig.event.rule },
          'redis unreachable and decision buffer full: egress event dropped');
        return;
      }
      this.push(p);
      return this.queue.room();
    }
    this.push(p);
    return;
  }

  private push(p: Pending): void {
    this.queue.add(p);
    if (!this.loadedHosts.has(p.sig.host)) this.hostsToLoad.add(p.sig.host);
    this.queue.schedule();
  }

  private refresh(ip: string, now: number): void {
    // Re-insert so the Map's order tracks use; the store write is batched and lazy.
    this.cache.delete(ip);
    this.cache.set(ip, now);
    this.queue.touch(ip);
  }

  private remember(ip: string, now: number): void {
    if (this.cfg.knownIpCacheSize === 0) return;
    this.cache.delete(ip);
    this.cache.set(ip, now);
    if (this.cache.size > this.cfg.knownIpCacheSize) {
      const oldest = this.cache.keys().next();
      if (!oldest.done) this.cache.delete(oldest.value);
    }
  }

  private token(): string {
    return `${this.tokenPrefix}:${(this.tokenSeq++).toString(36)}`;
  }

  // ---------------------------------------------------------------------------------------
  // Batched decisions
  // ---------------------------------------------------------------------------------------

  /** One round of store work, run by the decision queue while it or we have work. */
  private async round(): Promise<void> {
    await this.persistAndLoad();
    await this.decideBatch();
    await this.claimRetro();
    if (!this.counted) {
      this.counted = true;
      void this.maintain();
    }
  }

  private async persistAndLoad(): Promise<void> {
    const env = this.cfg.environment;
    if (this.hostsToLoad.size > 0) {
      const hosts = [...this.hostsToLoad];
      const loaded = await this.deps.stores.sessions.load(env, hosts);
      for (const h of hosts) {
        const snap = loaded.get(h);
        if (snap) this.table.merge(h, snap);
        this.hostsToLoad.delete(h);
        if (this.loadedHosts.size >= 4 * this.cfg.maxSessions) this.loadedHosts.clear();
        this.loadedHosts.add(h);
      }
      if (loaded.size > 0) for (const h of loaded.keys()) this.retroAttribute(h);
    }
    if (this.table.hasDirty) {
      const writes = this.table.takeDirty();
      try {
        await this.deps.stores.sessions.write(env, writes, this.sessionTtl());
      } catch (err) {
        this.table.restoreDirty(writes);
        throw err;
      }
    }
  }

  private sessionTtl(): number {
    return this.cfg.buildWindowMs + this.cfg.clockSkewMs + SESSION_TTL_MARGIN_MS;
  }

  private claimTtl(): number {
    return 2 * this.cfg.buildWindowMs + this.cfg.clockSkewMs + SESSION_TTL_MARGIN_MS;
  }

  private async decideBatch(): Promise<void> {
    if (this.queue.length === 0 && !this.queue.hasTouches) return;
    const batch = this.queue.peek(BATCH);
    const items: DecideItem[] = [];
    let minTime = Number.POSITIVE_INFINITY;
    for (const p of batch) {
      if (p.attribution === undefined) p.attribution = this.attributeOrOpen(p.sig);
      minTime = Math.min(minTime, p.sig.timeMs);
      items.push({ ip: p.sig.ip, eventTimeMs: p.sig.timeMs, token: p.token, claim: p.attribution?.session.id ?? null });
    }
    const now = this.now();
    const touched = this.queue.peekTouches(2 * BATCH - items.length);
    for (const ip of touched) items.push({ ip, eventTimeMs: now, token: '', claim: null });
    const { results, learningStart } = await this.deps.stores.firstSeen.decide(this.cfg.environment, items, {
      nowMs: now,
      retentionMs: this.cfg.firstSeenRetentionMs,
      learningPeriodMs: this.cfg.learningPeriodMs,
      learningStartCandidate: this.learningStart ?? (Number.isFinite(minTime) ? minTime : now),
      claimTtlMs: this.claimTtl(),
    });
    this.queue.remove(batch.length, touched);
    const decided: Promise<void>[] = [];
    batch.forEach((p, i) => {
      this.queue.settle(p);
      const r = results[i];
      if (r) decided.push(this.decided(p, r));
    });
    // Remembered so a Redis that lost its data (no persistence) cannot restart learning.
    if (learningStart !== null) this.learningStart = learningStart;
    this.queue.wakeRoom();
    await Promise.all(decided);
  }

  private async decided(p: Pending, r: DecideResult): Promise<void> {
    this.remember(p.sig.ip, p.nowMs);
    if (!r.isNew || r.learning) return;
    const a = p.attribution;
    if (!a) {
      const orphan = { sig: p.sig, firstSeenAt: r.firstSeenAt, token: p.token, t0: p.t0, addedAt: this.now() };
      // A build signal may have landed while this decision was in flight.
      const late = this.attributeTo(p.sig);
      if (late) this.retro.push({ orphan, attribution: late });
      else this.orphans.keep(orphan, this.now());
      return;
    }
    if (!r.claimed) return; // this (session, IP) already alerted, here or on another daemon
    await this.raise(p.sig, a, r.firstSeenAt, p.t0, p.token);
  }

  /** Attribution among the sessions open at the egress's time. */
  private attributeTo(sig: EgressSignal): AttributionResult | null {
    const container = { startedAt: this.containers.startedAt(sig.containerId) };
    return attribute(sig, this.table.openAt(sig.host, sig.timeMs), this.attribution, container);
  }

  /**
   * Attribution, or for an egress that proves it runs in a build step (cgroup, runtime or
   * helper lineage, kaniko) with no open session to take it: its own session, re-opened or
   * opened from the egress (a step that outlived the window, or whose build signals were missed).
   */
  private attributeOrOpen(sig: EgressSignal): AttributionResult | null {
    const a = this.attributeTo(sig);
    // An untagged image id is a classic step only while a build runs (`docker run <id>` too).
    if (a !== null || sig.step === null || sig.step === 'image-id') return a;
    return { session: this.table.applyStepEgress(sig), kind: 'lineage', builder: false };
  }

  private async raise(sig: EgressSignal, a: AttributionResult, firstSeenAt: number, t0: number, token: string): Promise<void> {
    if (a.session.expected) {
      // The user declared this build expected: its new IPs are learnt, never alerted.
      this.deps.logger.debug({ session: a.session.id, ip: sig.ip, host: sig.host }, 'new IP from an expected build');
      return;
    }
    const severity = severityOf(a.session, a.kind, a.builder);
    const built = buildAlert({
      builder: a.builder,
      environment: this.cfg.environment,
      session: a.session,
      egress: sig,
      attribution: a.kind,
      severity,
      firstSeenAt,
      nowMs: this.now(),
    });
    // Named by its decision: an event decided again after a crash (same token, from the
    // write-ahead log) raises the alert under the same id, which receivers dedupe on.
    const alert = { ...built, id: alertId(token, a.session.id, sig.ip) };
    this.deps.metrics.alerts.inc({ severity });
    this.deps.logger.info(
      { alert: alert.id, severity, session: a.session.id, ip: sig.ip, attribution: a.kind, host: sig.host },
      'T1612 alert',
    );
    if (await this.redelivery.deliver({ alert, t0 })) this.deps.onAlerted?.(token);
  }

  // ---------------------------------------------------------------------------------------
  // Late build signals: unattributed new IPs wait a clock-skew's time for their session
  // ---------------------------------------------------------------------------------------

  /** Orphans on `host` that `session` (or, without one, any session) may now explain. */
  private retroAttribute(host: string, session?: SessionRecord): void {
    const keys = session === undefined || this.attribution.windowOnly ? null : sessionKeys(session);
    const found = this.orphans.take(host, this.now(), keys, (o) => this.attributeTo(o.sig));
    for (const f of found) this.retro.push({ orphan: f.orphan, attribution: f.match });
    if (this.retro.length > 0) this.queue.schedule();
  }

  private async claimRetro(): Promise<void> {
    while (this.retro.length > 0) {
      // Sent together: ioredis writes them back to back, one round trip for the lot.
      const batch = this.retro.slice(0, BATCH);
      const claimed = await Promise.all(
        batch.map((r) =>
          this.deps.stores.firstSeen.claim(
            this.cfg.environment,
            r.attribution.session.id,
            r.orphan.sig.ip,
            r.orphan.token,
            this.claimTtl(),
          ),
        ),
      );
      this.retro.splice(0, batch.length);
      await Promise.all(
        batch.map((r, i) =>
          claimed[i] ? this.raise(r.orphan.sig, r.attribution, r.orphan.firstSeenAt, r.orphan.t0, r.orphan.token) : undefined,
        ),
      );
    }
  }

  // ---------------------------------------------------------------------------------------
  // Housekeeping
  // ---------------------------------------------------------------------------------------

  private async maintain(): Promise<void> {
    if (!this.deps.stores.redisUp()) return;
    try {
      const n = await this.deps.stores.firstSeen.maintain(this.cfg.environment, this.now(), this.cfg.firstSeenRetentionMs);
      this.deps.metrics.knownIps.set(n);
    } catch (err) {
      this.throttle.log('warn', 'maintain-failed', { err: describeError(err) }, 'first-seen maintenance failed');
    }
  }
}
