/**
 * The Falco HTTP ingest (`POST /falco`, `POST /`): a drop-in target for Falco's `http_output`
 * (Falco >= 0.44) and Falcosidekick-style senders, mounted on the ops HTTP server.
 *
 * The ingest answers as soon as the events are in the intake (and the write-ahead log), never
 * after processing: Falco's http_output posts synchronously, so a slow receiver would stall
 * Falco itself. A body is taken whole or not at all (503 + Retry-After when the intake has no
 * room), so a sender's retry never duplicates events.
 *
 * Bounded by construction: the body size (as sent and decompressed), the number of bodies
 * received or parsed at once, the number of events per body (the free room in the intake,
 * checked before parsing), every field of an event (src/model/event.ts), and the reasons sent
 * back and logged (short, categorised, never the input).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createGunzip, createInflate, type Gunzip, type Inflate } from 'node:zlib';
import { describeError, InvalidEventError } from '../model/errors.js';
import { truncate, type Logger } from '../ops/logger.js';
import type { Metrics } from '../ops/metrics.js';
import { HttpRejection, sendBody, type HttpRoute } from '../ops/http-server.js';
import { parseIngestBody, TooManyEventsError, type ParsedEvents } from './http-parse.js';
import type { Intake } from './intake.js';

export interface HttpIngestOptions {
  /**
   * When set, ingest requires `Authorization: Bearer <token>` — or Basic auth whose password is
   * the token, which is what Falco's http_output sends for `http://t1612d:<token>@host/falco`
   * (it has no header option).
   */
  token?: string | undefined;
  /** Largest body in bytes, both as sent and after decompression. */
  bodyLimit: number;
  /** Bodies received or parsed at once; beyond it 503. @default 4 */
  maxConcurrentBodies?: number;
  /** `Retry-After` on 503. @default 1 */
  retryAfterSeconds?: number;
}

export interface HttpIngestDeps {
  intake: Intake;
  metrics: Metrics;
  logger: Logger;
  /** Answers a refusal (status, reason, log, metric): the ops server's `reject`. */
  reject: (req: IncomingMessage, res: ServerResponse, r: HttpRejection) => void;
}

/** A request that ended before the ingest could answer it; nothing to respond to. */
class RequestAbortedError extends Error {
  override readonly name = 'RequestAbortedError';
  readonly code = 'T1612D_REQUEST_ABORTED';
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** The token in `Bearer <token>`, or the password of `Basic base64(user:password)`. */
function presentedToken(header: string): string | undefined {
  if (header.length > 4096) return undefined;
  const bearer = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  if (bearer) return bearer[1];
  const basic = /^Basic[ \t]+([A-Za-z0-9+/=]+)[ \t]*$/i.exec(header);
  if (!basic) return undefined;
  const decoded = Buffer.from(basic[1] as string, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon >= 0 ? decoded.slice(colon + 1) : undefined;
}

/** The first `n` bytes of a body that came in chunks. */
function firstBytes(chunks: readonly Buffer[], n: number): Buffer {
  const parts: Buffer[] = [];
  let got = 0;
  for (const c of chunks) {
    if (got >= n) break;
    parts.push(c);
    got += c.length;
  }
  return Buffer.concat(parts).subarray(0, n);
}

export class HttpIngest implements HttpRoute {
  readonly paths = ['/', '/falco', '/falco/'] as const;
  private readonly tokenDigest: Buffer | undefined;
  private readonly maxBodies: number;
  private readonly retryAfter: string;
  private bodies = 0;

  constructor(
    private readonly opts: HttpIngestOptions,
    private readonly deps: HttpIngestDeps,
  ) {
    // An empty token means none, as in the config.
    this.tokenDigest = opts.token ? sha256(opts.token) : undefined;
    this.maxBodies = Math.max(1, opts.maxConcurrentBodies ?? 4);
    this.retryAfter = String(Math.max(1, Math.ceil(opts.retryAfterSeconds ?? 1)));
  }

  /** Bodies being received or parsed now (tests, diagnostics). */
  get activeBodies(): number {
    return this.bodies;
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    if (req.method !== 'POST') {
      this.deps.reject(req, res, new HttpRejection(405, 'use POST', undefined, { Allow: 'POST' }));
      return;
    }
    const early = this.precheck(req);
    if (early) {
      this.deps.reject(req, res, early);
      return;
    }
    if (this.bodies >= this.maxBodies) {
      this.deps.reject(req, res, this.busy('too_many_bodies', 'too many uploads at once, retry later'));
      return;
    }
    this.bodies++;
    this.ingest(req, res)
      .catch((err: unknown) => {
        // Last line of defence: a bug here must cost one request, not the process.
        this.deps.logger.error({ err }, 'ingest failed');
        sendBody(res, 500, JSON.stringify({ error: 'internal error' }));
      })
      .finally(() => this.bodies--);
  }

  /** Checks that need only the headers: token, declared size, encoding. */
  precheck(req: IncomingMessage): HttpRejection | undefined {
    if (this.tokenDigest) {
      const header = req.headers.authorization ?? '';
      const presented = presentedToken(header);
      // Compare digests, not tokens: equal lengths for timingSafeEqual and no length leak.
      if (presented === undefined || !timingSafeEqual(sha256(presented), this.tokenDigest)) {
        return new HttpRejection(401, header === '' ? 'missing bearer token' : 'wrong bearer token', 'unauthenticated', {
          'WWW-Authenticate': 'Bearer',
        });
      }
    }
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > this.opts.bodyLimit) {
      return new HttpRejection(413, `body is over the limit of ${this.opts.bodyLimit} bytes`, 'too_large');
    }
    const enc = (req.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
    if (!['identity', '', 'gzip', 'x-gzip', 'deflate'].includes(enc)) {
      return new HttpRejection(415, `content-encoding ${JSON.stringify(truncate(enc, 20))} is not supported (use gzip or none)`, 'invalid');
    }
    return undefined;
  }

  private busy(reason: 'too_many_bodies' | 'queue_full', message: string): HttpRejection {
    return new HttpRejection(503, message, reason, { 'Retry-After': this.retryAfter });
  }

  private async ingest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { intake, reject } = this.deps;
    let body: Buffer[];
    try {
      body = await this.readBody(req);
    } catch (err) {
      if (err instanceof RequestAbortedError) {
        this.deps.logger.debug({ reason: err.message }, 'ingest request aborted by the client');
        return;
      }
      reject(req, res, err instanceof HttpRejection ? err : new HttpRejection(400, describeError(err), 'invalid'));
      return;
    }

    // More events than the intake has room for are refused before the body is parsed.
    const free = Math.max(0, intake.capacity - intake.size);
    let parsed: ParsedEvents;
    try {
      parsed = await parseIngestBody(body, free, true);
    } catch (err) {
      if (err instanceof TooManyEventsError) {
        reject(
          req,
          res,
          free >= intake.capacity
            ? new HttpRejection(413, `body holds more events than the intake holds (${intake.capacity}); send smaller batches`, 'too_large')
            : this.busy('queue_full', 'intake queue is full, retry later'),
        );
        return;
      }
      const reason = err instanceof InvalidEventError ? err.message : describeError(err);
      intake.invalid('http', err, firstBytes(body, 120).toString('utf8'));
      reject(req, res, new HttpRejection(400, reason, 'invalid'));
      return;
    }
    const { events, invalid, texts } = parsed;
    if (events.length === 0) {
      for (const bad of invalid) intake.invalid('http', bad.error, bad.sample);
      const first = invalid[0];
      const reason = first ? `no Falco event in body: ${first.error.message}` : 'no Falco event in body';
      reject(req, res, new HttpRejection(400, reason, 'invalid'));
      return;
    }
    // Decide before counting anything: a 503 is retried, and a retry must not count twice.
    let taken: boolean;
    try {
      taken = intake.offerBatch(events, 'http', texts);
    } catch (err) {
      this.deps.logger.error({ err: describeError(err) }, 'write-ahead log write failed; ingest refused');
      reject(req, res, new HttpRejection(503, 'cannot store events, retry later', 'wal_error', { 'Retry-After': this.retryAfter }));
      return;
    }
    if (!taken) {
      reject(req, res, this.busy('queue_full', 'intake queue is full, retry later'));
      return;
    }
    for (const bad of invalid) intake.invalid('http', bad.error, bad.sample);
    sendBody(res, 200, JSON.stringify({ accepted: events.length, invalid: invalid.length }));
  }

  /**
   * Read the body, decompressing, with the byte limit enforced on both sides of zlib: the
   * chunks it came in (parsing reads the usual body from them without copying it whole).
   */
  private readBody(req: IncomingMessage): Promise<Buffer[]> {
    const limit = this.opts.bodyLimit;
    const enc = (req.headers['content-encoding'] ?? '').trim().toLowerCase();
    return new Promise<Buffer[]>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let raw = 0;
      let size = 0;
      let done = false;
      let zlib: Gunzip | Inflate | undefined;
      const finish = (err: Error | undefined): void => {
        if (done) return;
        done = true;
        if (zlib) {
          req.unpipe(zlib);
          zlib.destroy();
        }
        if (err) {
          chunks.length = 0;
          reject(err);
        } else resolve(chunks);
      };
      const tooLarge = (): HttpRejection => new HttpRejection(413, `body is over the limit of ${limit} bytes`, 'too_large');
      const collect = (chunk: Buffer): void => {
        if (done) return;
        size += chunk.length;
        if (size > limit) finish(tooLarge());
        else chunks.push(chunk);
      };
      req.on('data', (chunk: Buffer) => {
        if (done) return;
        raw += chunk.length;
        if (raw > limit) finish(tooLarge());
      });
      req.on('close', () => {
        if (!req.complete) finish(new RequestAbortedError('connection closed before the body ended'));
      });
      if (enc === 'gzip' || enc === 'x-gzip' || enc === 'deflate') {
        zlib = enc === 'deflate' ? createInflate() : createGunzip();
        zlib.on('data', collect);
        zlib.on('error', () => finish(new HttpRejection(400, `invalid ${enc} body`, 'invalid')));
        zlib.on('end', () => finish(undefined));
        req.pipe(zlib);
      } else {
        req.on('data', collect);
        req.on('end', () => finish(undefined));
      }
    });
  }
}
