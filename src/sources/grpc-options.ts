/**
 * Settings of the gRPC source: the `GrpcSourceOptions` type with its defaults, the mapping from
 * the daemon configuration, validation into a fully resolved form (one clear error naming the
 * bad setting), and the channel built from it — credentials (insecure for the unix socket,
 * mutual TLS for TCP) and the grpc-js channel options for a long-lived Falco stream.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { Config } from '../config/config.js';
import { ConfigError, describeError } from '../model/errors.js';
import type { BackoffOptions } from '../ops/backoff.js';
import type { TlsMaterial } from './tls-diagnosis.js';

/** Options of the gRPC source. Durations in milliseconds. */
export interface GrpcSourceOptions {
  /** `unix:///run/falco/falco.sock` (no auth) or `host:port` (TCP, mutual TLS). */
  address: string;
  /** `sub` (bidirectional, polled) or `get` (repeated drains). @default 'sub' */
  method?: 'sub' | 'get';
  /**
   * CA that signed Falco's server certificate (TCP). The daemon's settings require it with a
   * TCP address (config.ts); left out here, the system roots verify the server.
   */
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

/** Options with every default applied and every value checked. */
export interface ResolvedGrpcSourceOptions {
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

/** Apply defaults and check values; throws ConfigError naming the bad setting. */
export function resolveOptions(o: GrpcSourceOptions): ResolvedGrpcSourceOptions {
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

/** What a channel to Falco is built from; `tlsMaterial` is kept for diagnosing TLS failures. */
export interface ChannelSetup {
  creds: grpc.ChannelCredentials;
  channelOptions: grpc.ChannelOptions;
  tlsMaterial: TlsMaterial | undefined;
}

/** HTTP/2 flow-control window of the channel (connection and streams). */
export const FLOW_CONTROL_WINDOW_BYTES = 4 * 1024 * 1024;

/** Credentials and channel options for `o`; throws ConfigError when a TLS file is unreadable. */
export function channelSetup(o: ResolvedGrpcSourceOptions): ChannelSetup {
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
    // HTTP/2's default 64 KiB window holds some thirty Falco events: Falco would stop and wait
    // for a window update every thirty events. The stream still pauses when the intake has
    // enough queued (grpc-source.ts STREAM_HIGH_WATER), so this bounds what is in flight.
    'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW_BYTES,
  };
  let creds: grpc.ChannelCredentials;
  let tlsMaterial: TlsMaterial | undefined;
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
    tlsMaterial = { ca, cert, key };
    if (o.serverName) channelOptions['grpc.ssl_target_name_override'] = o.serverName;
  }
  return { creds, channelOptions, tlsMaterial };
}
