/**
 * GrpcSource: reads Falco ≤0.43 alerts over Falco's gRPC outputs API and pushes them, in
 * arrival order, into the Intake. It owns the connection lifecycle: one status union with one
 * transition function, reconnect-forever with capped backoff, polling of the `sub` stream, and
 * specific log lines for the failures people actually hit (socket missing, TLS rejected).
 *
 * Falco only writes after a request and keeps unread events in memory, so this source never
 * loses events by being slow: it stops asking (and stops reading) while the Intake is full.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { ConfigError, describeError, InvalidEventError } from '../errors.js';
import { Backoff, sleep, type BackoffOptions } from '../ops/backoff.js';
import type { Metrics } from '../ops/metrics.js';
import { fromGrpcResponse } from './event.js';
import type { Intake } from './intake.js';
import { GET_PATH, loadFalcoProto, SUB_PATH, UndecodableResponse, type DecodedMessage } from './proto.js';
import { SubPoller } from './sub-poller.js';
import { probeTls, tlsProblem, type TlsMaterial } from './tls-diagnosis.js';

export type FalcoStatus = 'idle' | 'connecting' | 'connected' | 'backoff' | 'closed';

/** Options of the gRPC source. Durations in milliseconds. */
export interface GrpcSourceOptions {
  /** `unix:///run/falco/falco.sock` (no auth) or `host:port` (TCP, mutual TLS). */
  address: string;
  /** `sub` (bidirectional, polled) or `get` (repeated drains). @default 'sub' */
  method?: 'sub' | 'get';
  /** CA that signed Falco's server certificate (TCP). @default system roots */
  caFile?: string | undefined;
  /** Client certificate (TCP; Falco requires one). */
  certFile?: string | undefined;
  /** Client private key (TCP). */
  keyFile?: string | undefined;
  /** Name to verify the server certificate against, when it does not name the address. */
  serverName?: string | undefined;
  /**
   * An idle `sub` stream sends an empty request this often. @default 100
   *
   * Falco writes nothing until asked and stops when its queue is empty, so this bounds the
   * latency of an event that arrives while the stream is quiet. 100 ms keeps that well below
   * anything a human or a correlation window notices, while ten tiny HTTP/2 frames a second
   * cost nothing — no busy loop (client-py polls at the same rate; client-go every 1 s).
   */
  pollIntervalMs?: number;
  /** Pause between two `get` calls that returned nothing. @default 1000 */
  getIntervalMs?: number;
  /**
   * HTTP/2 keepalive ping interval. @default 300000
   *
   * Falco's gRPC C++ server keeps the core defaults: a ping sooner than 5 minutes after the
   * last one, while it has sent no data, is a strike, and the third strike closes the
   * connection with GOAWAY too_many_pings. A quiet Falco sends no data for hours.
   */
  keepaliveMs?: number;
  /** Reconnect delays. @default { initialMs: 1000, multiplier: 1.6, maxMs: 30000, jitter: 0.2 } */
  backoff?: BackoffOptions;
  /** A connection that stayed up this long resets the backoff. @default 30000 */
  healthyAfterMs?: number;
}

const DEFAULTS = {
  method: 'sub',
  pollIntervalMs: 100,
  getIntervalMs: 1000,
  keepaliveMs: 300_000,
  backoff: { initialMs: 1000, multiplier: 1.6, maxMs: 30_000, jitter: 0.2 },
  healthyAfterMs: 30_000,
} as const;

/**
 * Largest message accepted from Falco. Falco's server sets no send limit, and one alert with
 * long command lines and many fields can be large; grpc-js would otherwise fail the whole
 * stream at 4 MiB (RESOURCE_EXHAUSTED) and the popped event would be lost. Still bounded, so
 * a broken peer cannot make us buffer without limit.
 */
export const MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024 * 1024;
/**
 * After the server announced it is going away (GOAWAY, e.g. Falco shutting down) a `sub`
 * stream gets this long to deliver what Falco already wrote before we cancel it.
 */
const DRAIN_MS = 2000;
/** Repeats of the same failure line within this period are logged at debug level. */
const REPEAT_LOG_MS = 60_000;

/**
 * Codes worth an ordinary reconnect: transport trouble and a Falco that restarts or is
 * overloaded. Anything else (UNIMPLEMENTED, PERMISSION_DENIED, …) means a misconfiguration; we
 * still retry forever (a daemon must come back once it is fixed) but at the longest delay.
 */
const RETRYABLE_CODES: ReadonlySet<grpc.status> = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.CANCELLED,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.ABORTED,
  grpc.status.INTERNAL,
  grpc.status.UNKNOWN,
  grpc.status.OK, // a stream the server ended: Falco shutting down
]);

const TRANSITIONS: Record<FalcoStatus, readonly FalcoStatus[]> = {
  idle: ['connecting', 'closed'],
  connecting: ['connected', 'backoff', 'closed'],
  connected: ['connecting', 'backoff', 'closed'],
  backoff: ['connecting', 'closed'],
  closed: [],
};

/** The gRPC source settings from the daemon configuration. */
export function grpcSourceOptionsFromConfig(cfg: Config): GrpcSourceOptions {
  return {
    address: cfg.falcoGrpcAddress,
    method: cfg.falcoGrpcMethod,
    caFile: cfg.falcoGrpcCaFile,
    certFile: cfg.falcoGrpcCertFile,
    keyFile: cfg.falcoGrpcKeyFile,
    serverName: cfg.falcoGrpcServerName,
    pollIntervalMs: cfg.falcoGrpcPollIntervalMs,
    getIntervalMs: cfg.falcoGrpcGetIntervalMs,
    keepaliveMs: cfg.falcoGrpcKeepaliveMs,
  };
}

interface Resolved {
  address: string;
  unix: boolean;
  method: 'sub' | 'get';
  caFile: string | undefined;
  certFile: string | undefined;
  keyFile: string | undefined;
  serverName: string | undefined;
  pollIntervalMs: number;
  getIntervalMs: number;
  keepaliveMs: number;
  backoff: Required<Omit<BackoffOptions, 'random'>> & Pick<BackoffOptions, 'random'>;
  healthyAfterMs: number;
}

function resolveOptions(o: GrpcSourceOptions): Resolved {
  if (!o.address) throw new ConfigError('falco_grpc_address', 'the gRPC source needs falco_grpc_address');
  // gRPC accepts `unix:path` and `unix:///absolute/path`; both reach the socket as given.
  const unix = o.address.startsWith('unix:');
  if (!unix && (!o.certFile || !o.keyFile)) {
    throw new ConfigError(
      'falco_grpc_cert_file',
      `falco_grpc_address ${o.address} is TCP, which Falco serves only with mutual TLS: set falco_grpc_cert_file and falco_grpc_key_file`,
    );
  }
  const positive = (name: string, v: number): number => {
    if (!Number.isFinite(v) || v <= 0) throw new ConfigError(name, `${name} must be a positive number of ms, got ${v}`);
    return v;
  };
  return {
    address: o.address,
    unix,
    method: o.method ?? DEFAULTS.method,
    caFile: o.caFile,
    certFile: o.certFile,
    keyFile: o.keyFile,
    serverName: o.serverName,
    pollIntervalMs: positive('falco_grpc_poll_interval', o.pollIntervalMs ?? DEFAULTS.pollIntervalMs),
    getIntervalMs: positive('falco_grpc_get_interval', o.getIntervalMs ?? DEFAULTS.getIntervalMs),
    keepaliveMs: positive('falco_grpc_keepalive', o.keepaliveMs ?? DEFAULTS.keepaliveMs),
    backoff: { ...DEFAULTS.backoff, ...o.backoff },
    healthyAfterMs: o.healthyAfterMs ?? DEFAULTS.healthyAfterMs,
  };
}

type Level = 'debug' | 'info' | 'warn' | 'error';

interface Failure {
  level: Level;
  /** Stable text; context goes into fields. */
  msg: string;
  retryable: boolean;
  fields: Record<string, unknown>;
}

type ReadCall = grpc.ClientReadableStream<DecodedMessage> | grpc.ClientDuplexStream<Record<string, never>, DecodedMessage>;

export class GrpcSource {
  private readonly opts: Resolved;
  private readonly intake: Intake;
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private readonly backoff: Backoff;
  private readonly abort = new AbortController();
  private state: FalcoStatus = 'idle';
  private client: grpc.Client | undefined;
  private tlsMaterial: TlsMaterial | undefined;
  private call: ReadCall | undefined;
  private poller: SubPoller | undefined;
  private loop: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private readyThisAttempt = false;
  /** The channel left READY while a `sub` call was open: the server is going away. */
  private drainedThisAttempt = false;
  private drainTimer: NodeJS.Timeout | undefined;
  private connectedSince: number | undefined;
  private lastLogged: { msg: string; at: number } | undefined;

  constructor(options: GrpcSourceOptions, deps: { intake: Intake; metrics: Metrics; logger: Logger }) {
    this.opts = resolveOptions(options);
    this.intake = deps.intake;
    this.metrics = deps.metrics;
    this.logger = deps.logger;
    this.backoff = new Backoff(this.opts.backoff);
    loadFalcoProto(); // fail at construction, not on the first connect, if the proto is missing
  }

  get status(): FalcoStatus {
    return this.state;
  }

  get connected(): boolean {
    return this.state === 'connected';
  }

  /** Connect and keep reading until `close()`. Calling it again is a no-op. */
  start(): void {
    if (this.loop || this.closing) return;
    this.loop = this.run().catch((err: unknown) => {
      // Unreachable by design; a bug here must not take the daemon down silently.
      this.logger.error({ err: describeError(err), address: this.opts.address }, 'falco grpc source stopped unexpectedly');
    });
  }

  /** Stop reading: aborts sleeps, cancels the call, closes the channel. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.abort.abort();
    clearTimeout(this.drainTimer);
    try {
      this.poller?.stop();
    } catch {
      /* best effort */
    }
    try {
      this.call?.cancel();
    } catch {
      /* best effort */
    }
    try {
      this.client?.close();
    } catch {
      /* best effort */
    }
    try {
      await this.loop;
    } catch {
      /* logged in start() */
    }
    this.setStatus('closed');
  }

  private get closed(): boolean {
    return this.abort.signal.aborted;
  }

  /** The one place the status changes: checks the move, logs old → new, drives the gauge. */
  private setStatus(next: FalcoStatus, fields: Record<string, unknown> = {}): void {
    const prev = this.state;
    if (prev === next) return;
    if (!TRANSITIONS[prev].includes(next)) {
      // Late callbacks after close() land here harmlessly; anything else is a bug worth a line.
      if (prev !== 'closed') this.logger.error({ from: prev, to: next }, 'falco grpc illegal status change ignored');
      return;
    }
    this.state = next;
    this.metrics.falcoConnected.set(next === 'connected' ? 1 : 0);
    if (next === 'connected') this.connectedSince = Date.now();
    const level: Level = next === 'connecting' || next === 'backoff' ? 'debug' : 'info';
    this.logger[level]({ address: this.opts.address, from: prev, to: next, ...fields }, 'falco grpc status');
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      this.setStatus('connecting');
      let end: { status: grpc.StatusObject } | { error: unknown };
      try {
        const client = this.ensureClient();
        this.readyThisAttempt = false;
        this.drainedThisAttempt = false;
        this.onChannelState(client);
        end = { status: this.opts.method === 'sub' ? await this.runSub(client) : await this.runGets(client) };
      } catch (error) {
        end = { error };
      }
      if (this.closed) break;
      const delay = await this.failed(end);
      if (this.closed) break;
      this.setStatus('backoff', { retryInMs: delay });
      await sleep(delay, this.abort.signal);
    }
  }

  /**
   * One channel for the source's lifetime: grpc-js then keeps what it learns about the
   * connection (e.g. a server's GOAWAY "too_many_pings" doubles the keepalive interval).
   */
  private ensureClient(): grpc.Client {
    if (this.client) return this.client;
    const o = this.opts;
    const channelOptions: grpc.ChannelOptions = {
      // Pings find a dead TCP peer (a pulled cable never sends FIN). Falco's C++ server punishes
      // pings sent while no call is open, hence no pings without calls.
      'grpc.keepalive_time_ms': o.keepaliveMs,
      'grpc.keepalive_timeout_ms': Math.min(20_000, o.keepaliveMs),
      'grpc.keepalive_permit_without_calls': 0,
      // Our loop is the retry policy: no hidden retries, and channel reconnects on our scale.
      'grpc.enable_retries': 0,
      'grpc.initial_reconnect_backoff_ms': o.backoff.initialMs,
      'grpc.max_reconnect_backoff_ms': o.backoff.maxMs,
      'grpc.use_local_subchannel_pool': 1,
      'grpc.max_receive_message_length': MAX_RECEIVE_MESSAGE_BYTES,
    };
    let creds: grpc.ChannelCredentials;
    if (o.unix) {
      creds = grpc.credentials.createInsecure();
    } else {
      const read = (setting: string, file: string | undefined): Buffer | undefined => {
        if (!file) return undefined;
        try {
          return readFileSync(file);
        } catch (err) {
          throw new ConfigError(setting, `cannot read ${setting} ${file}: ${describeError(err)}`, { cause: err });
        }
      };
      const ca = read('falco_grpc_ca_file', o.caFile);
      const cert = read('falco_grpc_cert_file', o.certFile) as Buffer;
      const key = read('falco_grpc_key_file', o.keyFile) as Buffer;
      creds = grpc.credentials.createSsl(ca ?? null, key, cert);
      this.tlsMaterial = { ca, cert, key };
      if (o.serverName) channelOptions['grpc.ssl_target_name_override'] = o.serverName;
    }
    this.client = new grpc.Client(o.address, creds, channelOptions);
    this.watchChannel(this.client);
    return this.client;
  }

  /**
   * "Connected" means the channel is READY while we have a call on it. grpc-js streams raise
   * no event on connect, and Falco sends no headers until it has an event, so response
   * metadata cannot tell. READY is reached only after the TLS handshake and the server's
   * HTTP/2 SETTINGS, so a server that rejects our certificate never looks connected.
   */
  private watchChannel(client: grpc.Client): void {
    const channel = client.getChannel();
    const watch = (): void => {
      let state: grpc.connectivityState;
      try {
        state = channel.getConnectivityState(false);
        if (state === grpc.connectivityState.SHUTDOWN) return;
        channel.watchConnectivityState(state, Infinity, () => {
          this.onChannelState(client);
          watch();
        });
      } catch {
        // The channel was closed between the two calls: nothing left to watch.
      }
    };
    watch();
  }

  private onChannelState(client: grpc.Client): void {
    if (this.client !== client || this.closed) return;
    const ready = client.getChannel().getConnectivityState(false) === grpc.connectivityState.READY;
    if (ready) {
      this.readyThisAttempt = true;
      if (this.state === 'connecting') this.setStatus('connected');
    } else {
      if (this.state === 'connected') this.setStatus('connecting');
      // Before the first READY the call is only waiting for a connection: nothing to drain.
      if (this.readyThisAttempt && this.poller?.running) this.drainSub();
    }
  }

  /**
   * The channel left READY while a `sub` call is open. With a call open grpc-js never idles
   * the channel, so the connection broke (the call fails by itself) or the server sent GOAWAY
   * and is shutting down. Falco's shutdown waits, without a deadline, for open calls to
   * finish, and Falco never finishes a `sub` call itself: a client that keeps polling keeps
   * Falco from exiting. So stop polling, half-close (Falco ends the call when its next read
   * fails, after writing what it already popped), and cancel if that takes too long.
   */
  private drainSub(): void {
    const poller = this.poller;
    const call = this.call;
    if (!poller || !call || !('end' in call)) return;
    this.drainedThisAttempt = true;
    poller.stop();
    try {
      call.end();
    } catch {
      /* the call is already over */
    }
    clearTimeout(this.drainTimer);
    this.drainTimer = setTimeout(() => {
      if (this.call === call) call.cancel();
    }, DRAIN_MS);
    this.drainTimer.unref();
  }

  private runSub(client: grpc.Client): Promise<grpc.StatusObject> {
    const proto = loadFalcoProto();
    const call = client.makeBidiStreamRequest(SUB_PATH, proto.serializeRequest, proto.decodeResponse);
    const poller = new SubPoller(call, this.intake, this.opts.pollIntervalMs);
    this.poller = poller;
    poller.start();
    return this.consume(call, () => poller.onMessage()).then(({ status }) => {
      poller.stop();
      clearTimeout(this.drainTimer);
      return status;
    });
  }

  private async runGets(client: grpc.Client): Promise<grpc.StatusObject> {
    const proto = loadFalcoProto();
    for (;;) {
      if (this.intake.full) await this.roomOrClose();
      if (this.closed) return { code: grpc.status.CANCELLED, details: 'closed', metadata: new grpc.Metadata() };
      const call = client.makeServerStreamRequest(GET_PATH, proto.serializeRequest, proto.decodeResponse, {});
      const { status, count } = await this.consume(call);
      if (status.code !== grpc.status.OK || this.closed) return status;
      // A call that returned events may have left more behind: drain a busy Falco at once.
      if (count === 0) await sleep(this.opts.getIntervalMs, this.abort.signal);
    }
  }

  /** Resolves when the Intake has room again, or at close(). */
  private roomOrClose(): Promise<void> {
    return new Promise((resolve) => {
      const signal = this.abort.signal;
      const done = (): void => {
        signal.removeEventListener('abort', done);
        resolve();
      };
      signal.addEventListener('abort', done, { once: true });
      void this.intake.whenWritable().then(done);
    });
  }

  /** Read a call to its end (status received and every message handled), or until close(). */
  private consume(call: ReadCall, onMessage?: () => void): Promise<{ status: grpc.StatusObject; count: number }> {
    this.call = call;
    return new Promise((resolve) => {
      let status: grpc.StatusObject | undefined;
      let ended = false;
      let paused = false;
      let count = 0;
      const signal = this.abort.signal;
      const settle = (s: grpc.StatusObject): void => {
        signal.removeEventListener('abort', onAbort);
        if (this.call === call) this.call = undefined;
        resolve({ status: s, count });
      };
      const onAbort = (): void => settle({ code: grpc.status.CANCELLED, details: 'closed', metadata: new grpc.Metadata() });
      signal.addEventListener('abort', onAbort, { once: true });
      call.on('data', (msg: DecodedMessage) => {
        count++;
        this.handleMessage(msg);
        onMessage?.();
        if (!paused && this.intake.full) {
          // Backpressure: stop reading so HTTP/2 flow control holds Falco's writes.
          paused = true;
          call.pause();
          void this.intake.whenWritable().then(() => {
            paused = false;
            call.resume();
          });
        }
      });
      // The 'status' event carries the same information; this listener keeps it from throwing.
      call.on('error', () => undefined);
      call.on('status', (s: grpc.StatusObject) => {
        status = s;
        if (ended) settle(s);
      });
      // 'status' can overtake buffered messages; the call is over once both have been seen.
      call.on('end', () => {
        ended = true;
        if (status) settle(status);
      });
    });
  }

  /** One message from Falco: normalise and push, or count it as invalid. Never throws. */
  private handleMessage(msg: DecodedMessage): void {
    if (msg instanceof UndecodableResponse) {
      const err = new InvalidEventError(`undecodable gRPC response: ${describeError(msg.error)}`);
      this.intake.invalid('grpc', err, `hex:${msg.bytes.subarray(0, 64).toString('hex')}`);
      return;
    }
    try {
      this.intake.push(fromGrpcResponse(msg), 'grpc');
    } catch (err) {
      let sample: string | undefined;
      try {
        sample = JSON.stringify(msg);
      } catch {
        sample = undefined;
      }
      this.intake.invalid('grpc', err, sample);
    }
  }

  /** Log why an attempt ended and pick the delay before the next one. */
  private async failed(end: { status: grpc.StatusObject } | { error: unknown }): Promise<number> {
    if (this.connectedSince !== undefined && Date.now() - this.connectedSince >= this.opts.healthyAfterMs) {
      this.backoff.reset();
    }
    this.connectedSince = undefined;
    const failure =
      'error' in end
        ? { level: 'error' as const, msg: 'falco grpc client setup failed', retryable: true, fields: { err: describeError(end.error) } }
        : await this.describeFailure(end.status);
    let delay = this.backoff.next();
    if (!failure.retryable) delay = Math.max(delay, this.opts.backoff.maxMs);
    const now = Date.now();
    const repeat = this.lastLogged?.msg === failure.msg && now - this.lastLogged.at < REPEAT_LOG_MS;
    if (!repeat) this.lastLogged = { msg: failure.msg, at: now };
    this.logger[repeat ? 'debug' : failure.level](
      { address: this.opts.address, attempt: this.backoff.attempts, retryInMs: delay, ...failure.fields },
      failure.msg,
    );
    return delay;
  }

  private async describeFailure(status: grpc.StatusObject): Promise<Failure> {
    const code = grpc.status[status.code] ?? String(status.code);
    const details = status.details;
    const fields = { code, details };
    if (!this.opts.unix && !this.readyThisAttempt) {
      let problem = tlsProblem(details);
      let detail = details;
      if (!problem && /Failed to connect|Connection dropped|ECONNRESET|socket hang up|closed/i.test(details)) {
        // grpc-js reports a TLS 1.3 rejection of our certificate only as "Failed to connect";
        // one plain TLS handshake tells us what the server actually said.
        const said = this.tlsMaterial && (await probeTls(this.opts.address, this.tlsMaterial, this.opts.serverName, this.abort.signal));
        if (said !== undefined) {
          problem = tlsProblem(said) ?? said;
          detail = said;
        }
      }
      if (problem) {
        const tlsFields = detail === details ? fields : { ...fields, tls: detail };
        return { level: 'error', msg: `falco grpc TLS handshake failed: ${problem}`, retryable: true, fields: tlsFields };
      }
    }
    if (/ENOENT/.test(details)) {
      return { level: 'warn', msg: 'falco grpc socket not found (is Falco running with grpc and grpc_output enabled?)', retryable: true, fields };
    }
    if (/EACCES|EPERM/.test(details)) {
      return { level: 'error', msg: 'falco grpc socket permission denied (run t1612d as a user that may open it)', retryable: true, fields };
    }
    if (/ECONNREFUSED/.test(details)) return { level: 'warn', msg: 'falco grpc connection refused', retryable: true, fields };
    if (status.code === grpc.status.UNIMPLEMENTED) {
      return { level: 'error', msg: 'falco grpc server does not implement falco.outputs.service (is it Falco ≤0.43 with grpc_output enabled?)', retryable: false, fields };
    }
    if (status.code === grpc.status.RESOURCE_EXHAUSTED && /Bandwidth exhausted|too_many_pings|ENHANCE_YOUR_CALM/i.test(details)) {
      // GOAWAY ENHANCE_YOUR_CALM: Falco's server counts pings sooner than 5 minutes apart,
      // while it sent no data, as abuse. grpc-js doubles its interval by itself.
      return { level: 'warn', msg: 'falco grpc server rejected our keepalive pings (too_many_pings): raise falco_grpc_keepalive to 5m or more', retryable: true, fields };
    }
    if (this.drainedThisAttempt && RETRYABLE_CODES.has(status.code)) {
      // Falco (GOAWAY) is shutting down or restarting: expected, and the next lines say
      // whether it comes back.
      return { level: 'info', msg: 'falco grpc server is going away (GOAWAY); reconnecting', retryable: true, fields };
    }
    if (RETRYABLE_CODES.has(status.code)) {
      const msg = status.code === grpc.status.OK ? 'falco grpc stream ended by the server' : 'falco grpc stream failed';
      return { level: 'warn', msg, retryable: true, fields };
    }
    return { level: 'error', msg: 'falco grpc call rejected (not a transient error; retrying at the longest backoff)', retryable: false, fields };
  }
}
