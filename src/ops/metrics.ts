/**
 * Prometheus metrics. Names are part of the external contract (ARCHITECTURE.md); each
 * daemon instance owns its own registry so several can live in one process (tests, demo).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();

  /**
   * Falco events counted by `countFalcoEvent` and not yet added to `falcoEvents`, by source
   * and kind (both closed sets). Reading the counter adds them first.
   */
  private readonly falcoPending = new Map<string, Map<string, number>>();

  /** Reads the intake's depth when `intakeDepth` is read; see `intakeDepthFrom`. */
  private readIntakeDepth: (() => number) | undefined;

  /** Falco events accepted by a source, by classification. */
  readonly falcoEvents = new Counter({
    name: 't1612d_falco_events_total',
    help: 'Falco events received, by source (grpc|http|file) and kind (build|egress|other|invalid)',
    labelNames: ['source', 'kind'] as const,
    registers: [this.registry],
    collect: () => this.flushFalcoEvents(),
  });

  readonly alerts = new Counter({
    name: 't1612d_alerts_total',
    help: 'T1612 alerts raised, by severity',
    labelNames: ['severity'] as const,
    registers: [this.registry],
  });

  readonly deliveries = new Counter({
    name: 't1612d_deliveries_total',
    help: 'Alert delivery attempts, by sink and status (ok|retry|dead|error)',
    labelNames: ['sink', 'status'] as const,
    registers: [this.registry],
  });

  readonly falcoConnected = new Gauge({
    name: 't1612d_falco_connected',
    help: '1 while the Falco gRPC stream is connected; in HTTP-only mode, while ingest listens',
    registers: [this.registry],
  });

  readonly knownIps = new Gauge({
    name: 't1612d_known_ips',
    help: "IPs in the environment's first-seen set (as last counted)",
    registers: [this.registry],
  });

  readonly eventToAlertSeconds = new Histogram({
    name: 't1612d_event_to_alert_seconds',
    help: 'Time from receiving the egress event to the alert being written to the outbox',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  readonly droppedEvents = new Counter({
    name: 't1612d_dropped_events_total',
    help: 'Events dropped because a bounded buffer overflowed, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly intakeDepth = new Gauge({
    name: 't1612d_intake_queue_depth',
    help: 'Events waiting in the intake queue',
    registers: [this.registry],
    collect: () => {
      if (this.readIntakeDepth) this.intakeDepth.set(this.readIntakeDepth());
    },
  });

  readonly redisConnected = new Gauge({
    name: 't1612d_redis_connected',
    help: '1 when Redis is reachable (always 1 with in-memory stores)',
    registers: [this.registry],
  });

  readonly outboxPending = new Gauge({
    name: 't1612d_outbox_pending',
    help: 'Alerts written to the outbox and not yet acknowledged',
    registers: [this.registry],
  });

  readonly outboxDeadLetters = new Gauge({
    name: 't1612d_outbox_dead_letters',
    help: 'Alerts in the dead-letter stream',
    registers: [this.registry],
  });

  readonly outboxTrimmed = new Counter({
    name: 't1612d_outbox_trimmed_undelivered_total',
    help: 'Undelivered outbox entries lost to the stream length cap',
    registers: [this.registry],
  });

  readonly deliverySeconds = new Histogram({
    name: 't1612d_delivery_seconds',
    help: 'Time from an alert entering the outbox to its acknowledgement, by sink',
    labelNames: ['sink'] as const,
    buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800],
    registers: [this.registry],
  });

  readonly ingestRefused = new Counter({
    name: 't1612d_ingest_refused_total',
    help: 'HTTP ingest requests refused, by reason (too_large|too_many_bodies|too_many_connections|unauthenticated|invalid|queue_full|wal_error)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly walBytes = new Gauge({
    name: 't1612d_wal_bytes',
    help: 'Bytes in the write-ahead log of acknowledged, not yet decided events',
    registers: [this.registry],
  });

  readonly walReplayed = new Counter({
    name: 't1612d_wal_replayed_events_total',
    help: 'Events read back from the write-ahead log at start-up (acknowledged before a crash, not decided)',
    registers: [this.registry],
  });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics) {
      collectDefaultMetrics({ register: this.registry, prefix: 't1612d_' });
    }
  }

  /** Current value of a counter/gauge series, for tests and the demo summary. */
  async value(name: string, labels: Record<string, string> = {}): Promise<number> {
    const metric = this.registry.getSingleMetric(name);
    if (!metric) return 0;
    const data = await metric.get();
    let sum = 0;
    for (const v of data.values) {
      const l = v.labels as Record<string, string | number>;
      if (Object.entries(labels).every(([k, want]) => String(l[k]) === want)) sum += v.value;
    }
    return sum;
  }

  /**
   * Count Falco events for `falcoEvents` on the hot path: a labelled `inc` hashes its labels
   * each time (about half a microsecond), this is two map look-ups. Added to the counter
   * whenever it is read (scrape, `get()`).
   */
  countFalcoEvent(source: string, kind: string, n = 1): void {
    let bySource = this.falcoPending.get(source);
    if (bySource === undefined) {
      bySource = new Map();
      this.falcoPending.set(source, bySource);
    }
    bySource.set(kind, (bySource.get(kind) ?? 0) + n);
  }

  private flushFalcoEvents(): void {
    for (const [source, kinds] of this.falcoPending) {
      for (const [kind, n] of kinds) if (n > 0) this.falcoEvents.inc({ source, kind }, n);
      kinds.clear();
    }
  }

  /** `intakeDepth` is read from `depth` whenever it is read, instead of being set per event. */
  intakeDepthFrom(depth: () => number): void {
    this.readIntakeDepth = depth;
  }
}
