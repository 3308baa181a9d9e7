/**
 * FalcoEmulator: a real grpc-js server speaking Falco's gRPC outputs API the way Falco 0.43
 * serves it (FALCO-FACTS.md), for tests and for `t1612d demo`:
 * - ONE process-wide queue; every call pops from it, so several clients split the events;
 * - `sub` reads one request, writes every queued event until the queue is empty, then waits
 *   for the next request (nothing is pushed without a request);
 * - `get` drains what is queued and ends the stream with OK;
 * - a unix socket has no auth; TCP uses mutual TLS (the client certificate is required).
 *
 * `stop()` + `restart()` model a Falco restart: the queue lives in Falco's memory, so it is
 * emptied on stop. Events enqueued while stopped are kept — they stand for what the new Falco
 * process produces right after it starts.
 */
import { rmSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { InvalidEventError } from '../model/errors.js';
import { parseIsoNs, parseJsonPreservingBigInts, type GrpcResponse } from '../model/event.js';
import { loadFalcoProto } from '../sources/proto.js';

/** A plain object shaped like `falco.outputs.response` (enum names or numbers). */
export type EmulatorResponse = GrpcResponse;

export type EmulatorMessage = EmulatorResponse | Uint8Array;

export interface FalcoEmulatorOptions {
  /** `unix:///tmp/x.sock` or `host:port` (port 0 picks a free port). */
  address: string;
  /** Server mutual TLS (clients must present a certificate signed by `ca`). TCP only. */
  tls?: { ca: Buffer; cert: Buffer; key: Buffer };
}

const SOURCE_ENUM: Record<string, string> = {
  syscall: 'SYSCALL',
  k8s_audit: 'K8S_AUDIT',
  internal: 'INTERNAL',
};

/**
 * Convert a Falco JSON alert (text, or an already parsed object) into the gRPC `response`
 * Falco would have sent for the same event: Timestamp from the ISO time, priority enum,
 * output_fields as strings (non-strings JSON-dumped, as Falco does), tags, source string and
 * the deprecated source enum. Pass text to keep 19-digit numbers such as `evt.time` exact.
 */
export function responseFromJson(falcoJson: string | object): EmulatorResponse {
  const raw = typeof falcoJson === 'string' ? parseJsonPreservingBigInts(falcoJson) : falcoJson;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new InvalidEventError('a Falco JSON alert must be an object');
  }
  const o = raw as Record<string, unknown>;
  const ns = typeof o['time'] === 'string' ? parseIsoNs(o['time']) : undefined;
  if (ns === undefined) throw new InvalidEventError('time is missing or not ISO-8601');
  const source = typeof o['source'] === 'string' && o['source'] !== '' ? o['source'] : 'syscall';
  const fields: Record<string, string> = {};
  const rawFields = o['output_fields'];
  if (typeof rawFields === 'object' && rawFields !== null) {
    for (const [k, v] of Object.entries(rawFields as Record<string, unknown>)) {
      fields[k] = typeof v === 'string' ? v : typeof v === 'bigint' ? v.toString() : (JSON.stringify(v) ?? 'null');
    }
  }
  return {
    time: { seconds: (ns / 1_000_000_000n).toString(), nanos: Number(ns % 1_000_000_000n) },
    priority: typeof o['priority'] === 'string' ? o['priority'].toUpperCase() : (o['priority'] as number | undefined),
    source_deprecated: SOURCE_ENUM[source] ?? 'PLUGIN',
    rule: typeof o['rule'] === 'string' ? o['rule'] : '',
    output: typeof o['output'] === 'string' ? o['output'] : '',
    output_fields: fields,
    hostname: typeof o['hostname'] === 'string' ? o['hostname'] : '',
    tags: Array.isArray(o['tags']) ? o['tags'].map(String) : [],
    source,
  };
}

type Writer = grpc.ServerWritableStream<unknown, EmulatorMessage> | grpc.ServerDuplexStream<unknown, EmulatorMessage>;

/** Resolves when a server stream may be written again, or can never be. */
function writable(call: Writer): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      for (const ev of ['drain', 'cancelled', 'error', 'close', 'finish']) call.off(ev, done);
      resolve();
    };
    for (const ev of ['drain', 'cancelled', 'error', 'close', 'finish']) call.once(ev, done);
  });
}

export class FalcoEmulator {
  /** Slots before `head` are cleared (undefined) so sent messages can be collected. */
  private queue: (EmulatorMessage | undefined)[] = [];
  private head = 0;
  private server: grpc.Server | undefined;
  private bound: string;
  private requestCount = 0;
  private closed = false;
  private readonly unixPath: string | undefined;

  private constructor(private readonly opts: FalcoEmulatorOptions) {
    this.bound = opts.address;
    this.unixPath = opts.address.startsWith('unix://') ? opts.address.slice('unix://'.length) : undefined;
    if (this.unixPath !== undefined && opts.tls) {
      throw new Error('Falco serves unix sockets without TLS; give tls only with a host:port address');
    }
  }

  /** Bind and serve. */
  static async start(opts: FalcoEmulatorOptions): Promise<FalcoEmulator> {
    const em = new FalcoEmulator(opts);
    await em.listen();
    return em;
  }

  /** The bound address (the real port when started with port 0). */
  get address(): string {
    return this.bound;
  }

  /** Messages waiting in the shared queue. */
  get queued(): number {
    return this.queue.length - this.head;
  }

  /** Requests received so far: one per `get` call, one per `sub` poll. */
  get requests(): number {
    return this.requestCount;
  }

  /** True while the server is bound. */
  get running(): boolean {
    return this.server !== undefined;
  }

  /** Queue events (shared by all clients, like Falco's single output queue). */
  enqueue(...messages: EmulatorMessage[]): void {
    this.queue.push(...messages);
  }

  /** Force-stop the server as a crashed/restarted Falco would: calls die, the queue is lost. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.queue = [];
    this.head = 0;
    if (server) {
      server.forceShutdown();
      // Let the cancelled calls and closed sockets settle before anyone rebinds.
      await new Promise<void>((r) => setImmediate(r));
    }
    if (this.unixPath !== undefined) rmSync(this.unixPath, { force: true });
  }

  /** Start again on the same address (a restarted Falco starts with an empty queue). */
  async restart(): Promise<void> {
    if (this.closed) throw new Error('FalcoEmulator is closed');
    await this.stop();
    await this.listen();
  }

  /** Stop for good. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    await this.stop();
  }

  private take(): EmulatorMessage | undefined {
    if (this.head >= this.queue.length) return undefined;
    const m = this.queue[this.head];
    this.queue[this.head] = undefined;
    this.head++;
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    }
    return m;
  }

  /** Write queued messages until the queue is empty (or the call is gone). */
  private async drainTo(call: Writer, gone: () => boolean): Promise<void> {
    while (!gone()) {
      const m = this.take();
      if (m === undefined) return;
      if (!call.write(m)) await writable(call);
    }
  }

  private handleSub(call: grpc.ServerDuplexStream<unknown, EmulatorMessage>): void {
    let pending = 0;
    let pumping = false;
    const closed = watchGone(call);
    let halfClosed = false;
    const gone = (): boolean => halfClosed || closed();
    // The client half-closed: nothing more to answer, finish the call OK.
    call.on('end', () => {
      if (!gone()) call.end();
      halfClosed = true;
    });
    const pump = async (): Promise<void> => {
      pumping = true;
      try {
        while (pending > 0 && !gone()) {
          pending--;
          await this.drainTo(call, gone);
        }
      } finally {
        pumping = false;
      }
    };
    call.on('data', () => {
      this.requestCount++;
      pending++;
      if (!pumping) void pump();
    });
  }

  private handleGet(call: grpc.ServerWritableStream<unknown, EmulatorMessage>): void {
    this.requestCount++;
    const gone = watchGone(call);
    void this.drainTo(call, gone).then(() => {
      if (!gone()) call.end();
    });
  }

  private async listen(): Promise<void> {
    const base = loadFalcoProto().service;
    // Raw bytes go out untouched so tests can send what no encoder would produce.
    const service: grpc.ServiceDefinition = Object.fromEntries(
      Object.entries(base).map(([name, def]) => {
        const encode = def.responseSerialize;
        return [name, { ...def, responseSerialize: (v: unknown) => (v instanceof Uint8Array ? Buffer.from(v) : encode(v)) }];
      }),
    );
    const tls = this.opts.tls;
    const creds = tls
      ? grpc.ServerCredentials.createSsl(tls.ca, [{ private_key: tls.key, cert_chain: tls.cert }], true)
      : grpc.ServerCredentials.createInsecure();
    // A stale socket file (crashed run) would make bind fail with EADDRINUSE.
    if (this.unixPath !== undefined) rmSync(this.unixPath, { force: true });
    // A just-closed TCP port can take a moment to become bindable again on restart.
    let lastErr: unknown;
    for (let attempt = 0; attempt < 50; attempt++) {
      // A fresh server per attempt: grpc-js remembers a failed bind on the server object.
      const server = new grpc.Server();
      server.addService(service, {
        sub: (call: grpc.ServerDuplexStream<unknown, EmulatorMessage>) => this.handleSub(call),
        get: (call: grpc.ServerWritableStream<unknown, EmulatorMessage>) => this.handleGet(call),
      });
      try {
        const port = await new Promise<number>((resolve, reject) => {
          server.bindAsync(this.bound, creds, (err, p) => (err ? reject(err) : resolve(p)));
        });
        if (this.unixPath === undefined) {
          const i = this.bound.lastIndexOf(':');
          this.bound = `${this.bound.slice(0, i)}:${port}`;
        }
        if (this.closed) {
          server.forceShutdown(); // close() won the race with this bind
          return;
        }
        this.server = server;
        return;
      } catch (err) {
        server.forceShutdown();
        lastErr = err;
        await new Promise((r) => setTimeout(r, 40));
      }
    }
    throw new Error(`FalcoEmulator could not bind ${this.bound}`, { cause: lastErr });
  }
}

/** Whether a server call is over: cancelled, failed or closed. */
function watchGone(call: NodeJS.EventEmitter): () => boolean {
  let gone = false;
  const end = (): void => {
    gone = true;
  };
  for (const ev of ['cancelled', 'error', 'close']) call.on(ev, end);
  return () => gone;
}
