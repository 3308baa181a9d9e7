/**
 * GrpcSource: reads Falco ≤0.43 alerts over Falco's gRPC outputs API and pushes them, in
 * arrival order, into the Intake. It owns the connection lifecycle: one status union with one
 * transition function, reconnect-forever with capped backoff, polling of the `sub` stream, and
 * specific log lines for the failures people actually hit (socket missing, TLS rejected).
 *
 * Falco only writes after a request and keeps unread events in memory, so this source never
 * loses events by being slow: it stops asking (and stops reading) while the Intake is full.
 *
 * Option resolution and channel settings live in grpc-options.ts, failure classification and
 * logging in grpc-failures.ts.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { describeError, InvalidEventError } from '../model/errors.js';
import { Backoff, sleep } from '../ops/backoff.js';
import type { Metrics } from '../ops/metrics.js';
import { describeFailure, FailureLog, setupFailure, type Level } from './grpc-failures.js';
import { channelSetup, resolveOptions, type GrpcSourceOptions, type ResolvedGrpcSourceOptions } from './grpc-options.js';
import type { Intake } from './intake.js';
import { GET_PATH, InvalidResponse, loadFalcoProto, SUB_PATH, UndecodableResponse, type DecodedMessage } from './proto.js';
import { SubPoller } from './sub-poller.js';
import type { TlsMaterial } from './tls-diagnosis.js';


export type FalcoStatus = 'idle' | 'connecting' | 'connected' | 'backoff' | 'closed';

/**
 * After the server announced it is going away (GOAWAY, e.g. Falco shutting down) a `sub`
 * stream gets this long to deliver what Falco already wrote before we cancel it.
 */
const DRAIN_MS = 2000;
/** Events a stream may have waiting in the intake before it stops reading (see consume()). */
export const STREAM_HIGH_WATER = 2_000;

const TRANSITIONS: Record<FalcoStatus, readonly FalcoStatus[]> = {
  idle: ['connecting', 'closed'],
  connecting: ['connected', 'backoff', 'closed'],
  connected: ['connecting', 'backoff', 'closed'],
  backoff: ['connecting', 'closed'],
  closed: [],
};

type ReadCall = grpc.ClientReadableStream<DecodedMessage> | grpc.ClientDuplexStream<Record<string, never>, DecodedMessage>;

export class GrpcSource {
  private readonly opts: ResolvedGrpcSourceOptions;
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
  private readonly failureLog: FailureLog;

  constructor(options: GrpcSourceOptions, deps: { intake: Intake; metrics: Metrics; logger: Logger }) {
    this.opts = resolveOptions(options);
    this.intake = deps.intake;
    this.metrics = deps.metrics;
    this.logger = deps.logger;
    this.backoff = new Backoff(this.opts.backoff);
    this.failureLog = new FailureLog(deps.logger);
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
      this.logger.error({ err, address: this.opts.address }, 'falco grpc source stopped unexpectedly');
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
    const { creds, channelOptions, tlsMaterial } = channelSetup(o);
    this.tlsMaterial = tlsMaterial;
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
        const high = Math.min(this.intake.capacity, STREAM_HIGH_WATER);
        if (!paused && this.intake.size >= high) {
          // Backpressure: stop reading so HTTP/2 flow control holds Falco's writes. Falco
          // keeps its own queue, so a stream needs no deep one here (fewer events held, less
          // memory); the rest of the intake is room for HTTP bodies.
          paused = true;
          call.pause();
          void this.intake.whenBelow(Math.max(1, high >> 1)).then(() => {
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

  /** One message from Falco (already normalised by the deserialiser): push, or count it as invalid. Never throws. */
  private handleMessage(msg: DecodedMessage): void {
    if (msg instanceof UndecodableResponse) {
      const err = new InvalidEventError(`undecodable gRPC response: ${describeError(msg.error)}`);
      this.intake.invalid('grpc', err, `hex:${msg.bytes.subarray(0, 64).toString('hex')}`);
    } else if (msg instanceof InvalidResponse) {
      this.intake.invalid('grpc', msg.error, `hex:${msg.bytes.subarray(0, 64).toString('hex')}`);
    } else {
      this.intake.push(msg, 'grpc');
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
        ? setupFailure(end.error)
        : await describeFailure(end.status, {
            address: this.opts.address,
            unix: this.opts.unix,
            serverName: this.opts.serverName,
            readyThisAttempt: this.readyThisAttempt,
            drainedThisAttempt: this.drainedThisAttempt,
            tlsMaterial: this.tlsMaterial,
            signal: this.abort.signal,
          });
    let delay = this.backoff.next();
    if (!failure.retryable) delay = Math.max(delay, this.opts.backoff.maxMs);
    this.failureLog.log(failure, { address: this.opts.address, attempt: this.backoff.attempts, retryInMs: delay });
    return delay;
  }
}
