/**
 * Why a gRPC attempt against Falco ended, in words an operator can act on: the failures people
 * actually hit (socket missing or not permitted, TLS rejected, too_many_pings, a server that
 * is not Falco ≤0.43), which status codes are worth an ordinary reconnect, and the rule that
 * the same failure line repeated within a minute drops to debug level.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { describeError } from '../model/errors.js';
import { probeTls, tlsProblem, type TlsMaterial } from './tls-diagnosis.js';

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

export type Level = 'debug' | 'info' | 'warn' | 'error';

/** A failure, classified: the line to log and whether it deserves an ordinary reconnect. */
export interface Failure {
  level: Level;
  /** Stable text; context goes into fields. */
  msg: string;
  retryable: boolean;
  fields: Record<string, unknown>;
}

/** What the source knew about the attempt that ended. */
export interface FailureContext {
  address: string;
  unix: boolean;
  serverName: string | undefined;
  /** The channel reached READY during the attempt (so TLS was accepted). */
  readyThisAttempt: boolean;
  /** The server announced it is going away (GOAWAY) during the attempt. */
  drainedThisAttempt: boolean;
  tlsMaterial: TlsMaterial | undefined;
  /** Aborted at close(): cuts the TLS probe short. */
  signal: AbortSignal;
}

/** The attempt could not even start (e.g. a TLS file became unreadable). */
export function setupFailure(error: unknown): Failure {
  return { level: 'error', msg: 'falco grpc client setup failed', retryable: true, fields: { err: describeError(error) } };
}

/** Logs failures, demoting a line repeated within REPEAT_LOG_MS to debug. */
export class FailureLog {
  private lastLogged: { msg: string; at: number } | undefined;

  constructor(private readonly logger: Logger) {}

  log(failure: Failure, fields: Record<string, unknown>): void {
    const now = Date.now();
    const repeat = this.lastLogged?.msg === failure.msg && now - this.lastLogged.at < REPEAT_LOG_MS;
    if (!repeat) this.lastLogged = { msg: failure.msg, at: now };
    this.logger[repeat ? 'debug' : failure.level]({ ...fields, ...failure.fields }, failure.msg);
  }
}

/** Classify a call's final status; may probe TLS once to learn why a handshake failed. */
export async function describeFailure(status: grpc.StatusObject, ctx: FailureContext): Promise<Failure> {
  const code = grpc.status[status.code] ?? String(status.code);
  const details = status.details;
  const fields = { code, details };
  if (!ctx.unix && !ctx.readyThisAttempt) {
    let problem = tlsProblem(details);
    let detail = details;
    if (!problem && /Failed to connect|Connection dropped|ECONNRESET|socket hang up|closed/i.test(details)) {
      // grpc-js reports a TLS 1.3 rejection of our certificate only as "Failed to connect";
      // one plain TLS handshake tells us what the server actually said.
      const said = ctx.tlsMaterial && (await probeTls(ctx.address, ctx.tlsMaterial, ctx.serverName, ctx.signal));
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
  if (ctx.drainedThisAttempt && RETRYABLE_CODES.has(status.code)) {
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
