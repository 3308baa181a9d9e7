/**
 * The daemon: wires sources -> intake -> correlator -> outbox -> sinks, and owns the
 * start/close lifecycle. One direction only: sources produce events, the correlator decides,
 * the outbox delivers. `close()` is idempotent and bounded by `shutdownTimeoutMs`.
 */
import type { Logger } from 'pino';
import type { Config } from './config/config.js';
import { describeError } from './model/errors.js';
import { Intake } from './sources/intake.js';
import { GrpcSource } from './sources/grpc-source.js';
import { grpcSourceOptionsFromConfig } from './sources/grpc-options.js';
import { HttpIngest } from './sources/http-ingest.js';
import { Wal } from './sources/wal.js';
import { HttpServer, type Readiness } from './ops/http-server.js';
import { Metrics } from './ops/metrics.js';
import { Correlator } from './detect/correlator.js';
import { createStores, type Stores } from './store/stores.js';
import { createOutbox, type Outbox } from './deliver/outbox.js';
import { createSinks } from './deliver/sinks.js';
import type { AlertSink } from './model/alert.js';

export interface DaemonDeps {
  logger: Logger;
  /** Defaults to a fresh registry with process metrics. */
  metrics?: Metrics;
  /**
   * Where decided alerts go instead of the durable outbox (replay prints them). When absent,
   * the outbox built from the configured sinks is used.
   */
  alertSink?: AlertSink;
  /** Start the Falco sources and the HTTP server. @default true (`replay` feeds the intake itself) */
  sources?: boolean;
}

type DaemonState = 'new' | 'starting' | 'running' | 'closing' | 'closed';


export class Daemon {
  readonly metrics: Metrics;
  readonly intake: Intake;
  private readonly logger: Logger;
  private state: DaemonState = 'new';
  private stores: Stores | undefined;
  private correlator: Correlator | undefined;
  private outbox: Outbox | undefined;
  private grpc: GrpcSource | undefined;
  private http: HttpServer | undefined;
  private ingest: HttpIngest | undefined;
  private wal: Wal | undefined;
  private walTrimming = false;
  private walStopped = false;
  private closing: Promise<void> | undefined;
  private httpPort: number | undefined;

  constructor(
    readonly config: Config,
    private readonly deps: DaemonDeps,
  ) {
    this.logger = deps.logger;
    this.metrics = deps.metrics ?? new Metrics({ defaultMetrics: true });
    const sources = deps.sources ?? true;
    // The log is for events this daemon acknowledges; `replay` (sources off) has none.
    this.wal =
      sources && config.dataDir
        ? Wal.open({
            dir: config.dataDir,
            maxBytes: config.walMaxBytes,
            fsyncIntervalMs: config.walFsyncIntervalMs,
            metrics: this.metrics,
            logger: this.logger,
          })
        : undefined;
    this.intake = new Intake({
      capacity: config.intakeQueueSize,
      metrics: this.metrics,
      logger: this.logger,
      wal: this.wal,
      // Before start() there is no correlator and no event: log whatever comes.
      needsLog: (ev) => this.correlator?.needsLog(ev) ?? true,
      onHanded: () => this.trimWal(),
      consumer: (ev, _source, token) => {
        // The correlator exists from start() on; events cannot arrive earlier.
        return this.correlator?.handle(ev, token);
      },
    });
  }

  private transition(to: DaemonState): void {
    const legal: Record<DaemonState, DaemonState[]> = {
      new: ['starting', 'closing'],
      starting: ['running', 'closing'],
      running: ['closing'],
      closing: ['closed'],
      closed: [],
    };
    if (!legal[this.state].includes(to)) throw new Error(`daemon cannot go from ${this.state} to ${to}`);
    this.logger.debug({ from: this.state, to }, 'daemon state');
    this.state = to;
  }

  /** The port the HTTP server listens on (useful with port 0). */
  get port(): number | undefined {
    return this.httpPort;
  }

  /** Readiness: the Falco source is up and Redis (when configured) is reachable. */
  readiness(): Readiness {
    const falco = this.grpc ? this.grpc.connected : this.http !== undefined;
    const redis = this.stores ? this.stores.redisUp() : false;
    const correlator = this.correlator ? this.correlator.ready : false;
    return { ready: falco && redis && correlator && this.state === 'running', checks: { falco, redis, correlator } };
  }

  async start(): Promise<void> {
    this.transition('starting');
    const cfg = this.config;
    try {
      this.stores = await createStores(cfg, { logger: this.logger, metrics: this.metrics });
      let sink = this.deps.alertSink;
      if (!sink) {
        const sinks = createSinks(cfg, { logger: this.logger });
        this.outbox = createOutbox(cfg, { sinks, metrics: this.metrics, logger: this.logger });
        this.outbox.start();
        sink = this.outbox;
      }
      this.correlator = new Correlator(cfg, {
        stores: this.stores,
        sink,
        metrics: this.metrics,
        logger: this.logger,
        onAlerted: this.wal ? (token) => this.wal?.markAlerted(token) : undefined,
      });
      const sources = this.deps.sources ?? true;
      if (this.wal) await this.replayWal(this.wal);
      else if (sources) {
        this.logger.warn('data_dir is not set: events acknowledged but not yet decided are lost if the process dies');
      }
      if (sources && cfg.httpAddress !== '') {
        const http = new HttpServer(
          {
            address: cfg.httpAddress,
            maxConnections: cfg.httpMaxConnections,
            tls: cfg.httpTlsCertFile && cfg.httpTlsKeyFile
              ? { certFile: cfg.httpTlsCertFile, keyFile: cfg.httpTlsKeyFile, clientCaFile: cfg.httpTlsClientCaFile }
              : undefined,
          },
          { metrics: this.metrics, logger: this.logger, readiness: () => this.readiness() },
        );
        this.http = http;
        this.ingest = new HttpIngest(
          { token: cfg.httpToken, bodyLimit: cfg.httpBodyLimit, maxConcurrentBodies: cfg.httpMaxConcurrentBodies },
          { intake: this.intake, metrics: this.metrics, logger: this.logger, reject: (req, res, r) => http.reject(req, res, r) },
        );
        http.mount(this.ingest);
        const bound = await http.listen();
        this.httpPort = bound.port;
        if (!cfg.httpToken && !cfg.httpTlsClientCaFile && cfg.httpAllowUnauthenticated) {
          this.logger.warn(
            { address: cfg.httpAddress, setting: 'http_allow_unauthenticated' },
            'UNAUTHENTICATED INGEST: anyone who can reach this port can post events and teach the known-IP set, silencing later attacks; set http_token (T1612D_HTTP_TOKEN) or http_tls_client_ca_file',
          );
        }
      }
      if (sources && cfg.falcoGrpcAddress !== '') {
        this.grpc = new GrpcSource(grpcSourceOptionsFromConfig(cfg), {
          intake: this.intake,
          metrics: this.metrics,
          logger: this.logger,
        });
        this.grpc.start();
      } else if (this.http) {
        // HTTP-only mode (Falco >= 0.44 http_output): the source is "connected" while ingest listens.
        this.metrics.falcoConnected.set(1);
      }
      if (sources && !this.grpc && !this.http) {
        this.logger.warn('no Falco source: both falco_grpc_address and http_address are empty');
      }
      this.transition('running');
      this.logger.info(
        {
          environment: cfg.environment,
          grpc: cfg.falcoGrpcAddress || 'disabled',
          method: cfg.falcoGrpcMethod,
          redis: cfg.redisUrl ? 'redis' : cfg.redisClusterNodes.length ? 'cluster' : 'memory',
          buildWindowMs: cfg.buildWindowMs,
        },
        't1612d started',
      );
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** Feed the undecided events of the log to the intake, before any source starts. */
  private async replayWal(wal: Wal): Promise<void> {
    let n = 0;
    for (const rec of wal.replay()) {
      if (this.intake.full) await this.intake.whenWritable();
      this.intake.pushReplayed(rec);
      n++;
    }
    if (n > 0) this.logger.info({ events: n, dataDir: this.config.dataDir }, 'replaying acknowledged events not decided before the last stop');
  }

  /**
   * Record as decided every event the correlator has taken and finished deciding, as soon as
   * it has: the sooner the mark, the smaller the window in which a crash makes an already
   * delivered alert go out again (under the same id, which receivers dedupe on).
   */
  private trimWal(): void {
    const wal = this.wal;
    const correlator = this.correlator;
    if (!wal || !correlator || this.walTrimming || this.walStopped) return;
    this.walTrimming = true;
    void (async () => {
      try {
        while (!this.walStopped && this.intake.handedSeq > wal.decided) {
          const handed = this.intake.handedSeq;
          await correlator.flush();
          if (!this.walStopped) wal.markDecided(handed);
        }
      } catch (err) {
        this.logger.warn({ err: describeError(err) }, 'write-ahead log trim failed');
      } finally {
        this.walTrimming = false;
      }
    })();
  }

  /**
   * Resolves once every event received so far has been decided and its alerts handed to the
   * outbox (not necessarily delivered): the intake is empty and the correlator idle.
   */
  async settle(): Promise<void> {
    await this.intake.whenIdle();
    await this.correlator?.flush();
  }

  /** Idempotent graceful stop: sources, then pending decisions, then deliveries, then stores. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (this.state !== 'closing') this.transition('closing');
    const deadline = Date.now() + this.config.shutdownTimeoutMs;
    const step = async (name: string, fn: () => Promise<unknown> | undefined): Promise<void> => {
      const left = Math.max(1, deadline - Date.now());
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          fn(),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`timed out after ${left}ms`)), left);
            timer.unref();
          }),
        ]);
      } catch (err) {
        this.logger.warn({ step: name, err }, 'shutdown step failed');
      } finally {
        if (timer) clearTimeout(timer);
      }
    };
    await step('grpc source', () => this.grpc?.close());
    await step('http server', () => this.http?.close());
    await step('intake', () => this.intake.whenIdle());
    const wal = this.wal;
    if (wal) {
      await step('write-ahead log', async () => {
        const handed = this.intake.handedSeq;
        await this.correlator?.flush();
        wal.markDecided(handed);
      });
    }
    this.walStopped = true;
    await step('correlator', () => this.correlator?.close());
    const outbox = this.outbox;
    if (outbox?.kind === 'memory') {
      // In-memory alerts do not survive the process: give deliveries half the time left.
      await step('outbox drain', async () => {
        const drained = await outbox.drain(Math.max(0, (deadline - Date.now()) / 2));
        if (!drained) this.logger.warn({ pending: await outbox.pending() }, 'in-memory alerts still undelivered at shutdown are lost');
      });
    }
    await step('outbox', () => outbox?.close());
    await step('stores', () => this.stores?.close());
    try {
      wal?.close();
    } catch (err) {
      this.logger.warn({ err: describeError(err) }, 'write-ahead log close failed');
    }
    this.metrics.falcoConnected.set(0);
    this.transition('closed');
    this.logger.info('t1612d stopped');
  }
}
