/**
 * Typed configuration: DEFAULTS <- YAML file (`--config` / T1612D_CONFIG) <- environment.
 *
 * Every setting has one YAML key (snake_case) and one environment variable, `T1612D_` plus the
 * key in upper case (`build_window` <-> `T1612D_BUILD_WINDOW`). `resolveConfig()` returns a
 * fully populated `Config` with durations in milliseconds, or throws a `ConfigError` whose
 * message is one line naming the bad setting and the expected form.
 */
import { readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { parse as parseYaml } from 'yaml';
import { ConfigError, describeError } from '../model/errors.js';
import { expected, parseValue, type Setting as ValueSetting } from './parse.js';


/** A setting of the table below: a field of Config, how to parse it, its default. */
interface Setting extends ValueSetting {
  key: keyof Config;
}

/** The resolved, fully required configuration. Durations are in milliseconds. */
export interface Config {
  /** Falco gRPC server: `unix:///path` or `host:port` (TCP, mutual TLS); '' disables. */
  falcoGrpcAddress: string;
  /** `sub` (bidirectional, polled) or `get` (repeated drains). */
  falcoGrpcMethod: 'sub' | 'get';
  /** CA, client certificate and key for TCP (mutual TLS); all three required with a TCP address. */
  falcoGrpcCaFile: string | undefined;
  falcoGrpcCertFile: string | undefined;
  falcoGrpcKeyFile: string | undefined;
  /** How often an idle `sub` stream sends an empty request to poll Falco's queue. @default 100ms */
  falcoGrpcPollIntervalMs: number;
  /** Pause between two `get` drains. @default 1s */
  falcoGrpcGetIntervalMs: number;
  /**
   * HTTP/2 keepalive ping interval on the Falco channel. @default 5m — Falco's gRPC core server
   * treats pings more often than every 5 minutes without server data as abuse (GOAWAY
   * too_many_pings), and a quiet Falco sends no data.
   */
  falcoGrpcKeepaliveMs: number;
  /** TLS server name override for TCP (when the certificate does not name the address). */
  falcoGrpcServerName: string | undefined;

  /** Health, metrics and Falco http_output ingest; '' disables. @default 127.0.0.1:2802 */
  httpAddress: string;
  /**
   * When set, ingest requires `Authorization: Bearer <token>` (or Basic auth with the token as
   * password, as Falco's http_output sends for `http://t1612d:<token>@host/falco`).
   */
  httpToken: string | undefined;
  /** Serve HTTPS with this certificate (PEM); needs http_tls_key_file. */
  httpTlsCertFile: string | undefined;
  httpTlsKeyFile: string | undefined;
  /** Require a client certificate signed by this CA (PEM) on every connection (mutual TLS). */
  httpTlsClientCaFile: string | undefined;
  /**
   * Accept unauthenticated ingest on an address beyond loopback (no token, no client CA).
   * Anyone who can reach the port can then teach the known-IP set. @default false
   */
  httpAllowUnauthenticated: boolean;
  /** Open connections to the HTTP server; beyond it idle ones are closed, then new ones. */
  httpMaxConnections: number;
  /** Ingest request bodies received or parsed at once; beyond it 503 + Retry-After. */
  httpMaxConcurrentBodies: number;
  /** Largest accepted ingest body (after decompression), bytes. @default 10 MiB */
  httpBodyLimit: number;
  /** Events buffered between the sources and the correlator; HTTP answers 503 when full. */
  intakeQueueSize: number;
  /**
   * Directory of the write-ahead log of acknowledged, not yet decided events (replayed at
   * start-up). Unset: no log, such events die with the process. The image sets /var/lib/t1612d.
   */
  dataDir: string | undefined;
  /** fsync the write-ahead log this often (power-loss safety); 0 leaves it to the page cache. */
  walFsyncIntervalMs: number;
  /** Largest write-ahead log; beyond it the oldest undecided events lose durability (counted). */
  walMaxBytes: number;

  redisUrl: string | undefined;
  /** Redis Cluster seed nodes `host:port`. */
  redisClusterNodes: string[];
  redisPrefix: string;

  /** The environment whose known-IP set is shared. */
  environment: string;
  /** Host name used when an event carries none. @default os.hostname() */
  hostname: string;
  /** Egress up to this long after the last build activity belongs to the build. */
  buildWindowMs: number;
  /** From the environment's first event: record IPs, raise nothing. */
  learningPeriodMs: number;
  /** An IP unseen this long is new again. */
  firstSeenRetentionMs: number;
  /** Networks never reported (parsed CIDRs). */
  allowCidrs: string[];
  /** Domain suffixes never reported (matched on fd.sip.name). */
  allowDomains: string[];
  /** Attribute egress to a build by same-host time window alone (weakest). */
  attributeWindowOnly: boolean;
  /**
   * Alert (medium; high for remote-API builds) when a builder itself (dockerd, buildkitd,
   * buildah, podman, kaniko's executor) reaches a never-seen IP during a build: base-image
   * pulls from a registry that is not allow-listed, or `ADD <url>`.
   */
  alertBuilderEgress: boolean;
  /** An egress stamped up to this long before a build opened still counts (out-of-order). */
  clockSkewMs: number;
  /** Upper bound on open build sessions held per daemon. */
  maxSessions: number;
  /** Bounded in-process cache of known IPs. */
  knownIpCacheSize: number;
  /**
   * Redis buckets the known-IP set is cut into (each a small hash in its own cluster slot).
   * Fixed per environment once written: the stored layout wins over a different setting.
   */
  knownIpBuckets: number;
  /** Undecided egress events held while Redis is unreachable. */
  redisBufferSize: number;

  webhookUrl: string | undefined;
  webhookSecret: string | undefined;
  webhookHeaders: Record<string, string>;
  webhookTimeoutMs: number;
  webhookConcurrency: number;
  webhookMaxAttempts: number;
  webhookCaFile: string | undefined;
  webhookCertFile: string | undefined;
  webhookKeyFile: string | undefined;
  webhookInsecure: boolean;
  sidekickUrl: string | undefined;
  /** First retry delay for deliveries. */
  deliveryBackoffInitialMs: number;
  /** Largest retry delay for deliveries. */
  deliveryBackoffMaxMs: number;
  /** Outbox stream length cap (`MAXLEN ~`). */
  outboxMaxLen: number;

  logLevel: string;
  /** Deadline for a graceful stop. */
  shutdownTimeoutMs: number;
}


/** Upper bound of known_ip_buckets: 16 buckets per cluster slot. */
const MAX_KNOWN_IP_BUCKETS = 262_144;

/** Every setting: camelCase field, parser kind, default. YAML/env names derive from `key`. */
const SETTINGS: Setting[] = [
  { key: 'falcoGrpcAddress', kind: 'grpcAddress', def: 'unix:///run/falco/falco.sock' },
  { key: 'falcoGrpcMethod', kind: 'method', def: 'sub' },
  { key: 'falcoGrpcCaFile', kind: 'file', def: undefined },
  { key: 'falcoGrpcCertFile', kind: 'file', def: undefined },
  { key: 'falcoGrpcKeyFile', kind: 'file', def: undefined },
  { key: 'falcoGrpcPollIntervalMs', kind: 'duration', def: '100ms', min: 1 },
  { key: 'falcoGrpcGetIntervalMs', kind: 'duration', def: '1s', min: 1 },
  { key: 'falcoGrpcKeepaliveMs', kind: 'duration', def: '5m', min: 1000 },
  { key: 'falcoGrpcServerName', kind: 'optString', def: undefined },
  { key: 'httpAddress', kind: 'listenAddress', def: '127.0.0.1:2802' },
  { key: 'httpToken', kind: 'optString', def: undefined },
  { key: 'httpTlsCertFile', kind: 'file', def: undefined },
  { key: 'httpTlsKeyFile', kind: 'file', def: undefined },
  { key: 'httpTlsClientCaFile', kind: 'file', def: undefined },
  { key: 'httpAllowUnauthenticated', kind: 'bool', def: false },
  { key: 'httpMaxConnections', kind: 'int', def: 256, min: 1 },
  { key: 'httpMaxConcurrentBodies', kind: 'int', def: 4, min: 1 },
  { key: 'httpBodyLimit', kind: 'bytes', def: '10mb', min: 1024 },
  { key: 'intakeQueueSize', kind: 'int', def: 10_000, min: 1 },
  { key: 'dataDir', kind: 'optString', def: undefined },
  { key: 'walFsyncIntervalMs', kind: 'duration', def: '0', min: 0 },
  { key: 'walMaxBytes', kind: 'bytes', def: '256mb', min: 1024 * 1024 },
  { key: 'redisUrl', kind: 'optUrl', def: undefined },
  { key: 'redisClusterNodes', kind: 'list', def: [] },
  { key: 'redisPrefix', kind: 'name', def: 't1612d' },
  { key: 'environment', kind: 'name', def: 'default' },
  { key: 'hostname', kind: 'string', def: osHostname() },
  { key: 'buildWindowMs', kind: 'duration', def: '15m', min: 1 },
  { key: 'learningPeriodMs', kind: 'duration', def: '0', min: 0 },
  { key: 'firstSeenRetentionMs', kind: 'duration', def: '30d', min: 1000 },
  { key: 'allowCidrs', kind: 'cidrs', def: [] },
  { key: 'allowDomains', kind: 'list', def: [] },
  { key: 'attributeWindowOnly', kind: 'bool', def: false },
  { key: 'alertBuilderEgress', kind: 'bool', def: true },
  { key: 'clockSkewMs', kind: 'duration', def: '30s', min: 0 },
  { key: 'maxSessions', kind: 'int', def: 10_000, min: 1 },
  { key: 'knownIpCacheSize', kind: 'int', def: 100_000, min: 0 },
  { key: 'knownIpBuckets', kind: 'int', def: 4096, min: 1 },
  { key: 'redisBufferSize', kind: 'int', def: 50_000, min: 1 },
  { key: 'webhookUrl', kind: 'optUrl', def: undefined },
  { key: 'webhookSecret', kind: 'optString', def: undefined },
  { key: 'webhookHeaders', kind: 'headers', def: {} },
  { key: 'webhookTimeoutMs', kind: 'duration', def: '10s', min: 1 },
  { key: 'webhookConcurrency', kind: 'int', def: 4, min: 1 },
  { key: 'webhookMaxAttempts', kind: 'int', def: 12, min: 1 },
  { key: 'webhookCaFile', kind: 'file', def: undefined },
  { key: 'webhookCertFile', kind: 'file', def: undefined },
  { key: 'webhookKeyFile', kind: 'file', def: undefined },
  { key: 'webhookInsecure', kind: 'bool', def: false },
  { key: 'sidekickUrl', kind: 'optUrl', def: undefined },
  { key: 'deliveryBackoffInitialMs', kind: 'duration', def: '1s', min: 1 },
  { key: 'deliveryBackoffMaxMs', kind: 'duration', def: '5m', min: 1 },
  { key: 'outboxMaxLen', kind: 'int', def: 100_000, min: 100 },
  { key: 'logLevel', kind: 'logLevel', def: 'info' },
  { key: 'shutdownTimeoutMs', kind: 'duration', def: '10s', min: 1 },
];

/** YAML key of a setting: `buildWindowMs` -> `build_window`. */
export function yamlKey(key: string): string {
  return key
    .replace(/Ms$/, '')
    .replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** Environment variable of a setting: `buildWindowMs` -> `T1612D_BUILD_WINDOW`. */
export function envName(key: string): string {
  return `T1612D_${yamlKey(key).toUpperCase()}`;
}

function invalid(s: Setting, origin: string, raw: unknown): ConfigError {
  const shown = typeof raw === 'string' ? JSON.stringify(raw) : JSON.stringify(raw) ?? String(raw);
  const secret = /secret|token/i.test(s.key);
  return new ConfigError(
    yamlKey(s.key),
    `invalid setting ${yamlKey(s.key)} (${envName(s.key)}) from ${origin}: expected ${expected(s.kind, s.min)}, got ${secret ? '[redacted]' : shown}`,
  );
}

export interface ResolveOptions {
  /** YAML file path; falls back to env T1612D_CONFIG. */
  file?: string | undefined;
  /** Environment to read. @default process.env */
  env?: NodeJS.ProcessEnv;
  /** Values that win over file and environment (tests, demo, CLI flags), camelCase keys. */
  overrides?: Partial<Config>;
}

/** Load and validate the configuration. Throws ConfigError (one line) on any invalid value. */
export function resolveConfig(options: ResolveOptions = {}): Config {
  const env = options.env ?? process.env;
  const file = options.file ?? (env['T1612D_CONFIG'] || undefined);
  let fileValues: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError('config', `cannot read config file ${file}: ${describeError(err)}`, { cause: err });
    }
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (err) {
      throw new ConfigError('config', `config file ${file} is not valid YAML: ${describeError(err)}`, { cause: err });
    }
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== 'object' || Array.isArray(doc)) {
        throw new ConfigError('config', `config file ${file} must be a YAML mapping of setting: value`);
      }
      fileValues = doc as Record<string, unknown>;
      const known = new Set(SETTINGS.map((s) => yamlKey(s.key)));
      for (const k of Object.keys(fileValues)) {
        if (!known.has(k)) {
          throw new ConfigError(k, `unknown setting ${k} in ${file}; known settings: ${[...known].join(', ')}`);
        }
      }
    }
  }
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    const yk = yamlKey(s.key);
    const en = envName(s.key);
    let raw: unknown = s.def;
    let origin = 'defaults';
    if (Object.hasOwn(fileValues, yk)) {
      raw = fileValues[yk];
      origin = `config file ${file}`;
    }
    if (env[en] !== undefined) {
      raw = env[en];
      origin = `environment ${en}`;
    }
    const parsed = parseValue(s, raw);
    if (parsed === undefined) throw invalid(s, origin, raw);
    out[s.key] = parsed === null ? undefined : parsed;
  }
  // `out` holds one parsed value for every key of Config: the loop above walks SETTINGS, which
  // lists them all (the config tests check the defaults of each).
  const cfg = { ...(out as unknown as Config), ...stripUndefined(options.overrides ?? {}) };
  crossCheck(cfg);
  return cfg;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function crossCheck(cfg: Config): void {
  const tcp = cfg.falcoGrpcAddress !== '' && !cfg.falcoGrpcAddress.startsWith('unix:');
  if (tcp) {
    for (const key of ['falcoGrpcCaFile', 'falcoGrpcCertFile', 'falcoGrpcKeyFile'] as const) {
      if (!cfg[key]) {
        throw new ConfigError(
          yamlKey(key),
          `missing setting ${yamlKey(key)} (${envName(key)}): falco_grpc_address ${cfg.falcoGrpcAddress} is TCP, which Falco serves only with mutual TLS; give the CA, client certificate and key files`,
        );
      }
    }
  }
  if (Boolean(cfg.webhookCertFile) !== Boolean(cfg.webhookKeyFile)) {
    throw new ConfigError(
      'webhook_cert_file',
      'invalid setting webhook_cert_file / webhook_key_file: a client certificate needs both the certificate and the key file',
    );
  }
  if (Boolean(cfg.httpTlsCertFile) !== Boolean(cfg.httpTlsKeyFile)) {
    throw new ConfigError(
      'http_tls_cert_file',
      'invalid setting http_tls_cert_file / http_tls_key_file (T1612D_HTTP_TLS_CERT_FILE / T1612D_HTTP_TLS_KEY_FILE): HTTPS needs both the certificate and the key file',
    );
  }
  if (cfg.httpTlsClientCaFile && !cfg.httpTlsCertFile) {
    throw new ConfigError(
      'http_tls_client_ca_file',
      'invalid setting http_tls_client_ca_file (T1612D_HTTP_TLS_CLIENT_CA_FILE): client certificates need HTTPS; set http_tls_cert_file and http_tls_key_file too',
    );
  }
  checkIngestAuth(cfg);
  if (cfg.deliveryBackoffMaxMs < cfg.deliveryBackoffInitialMs) {
    throw new ConfigError(
      'delivery_backoff_max',
      `invalid setting delivery_backoff_max (T1612D_DELIVERY_BACKOFF_MAX): must be >= delivery_backoff_initial (${cfg.deliveryBackoffInitialMs}ms)`,
    );
  }
  if (cfg.knownIpBuckets > MAX_KNOWN_IP_BUCKETS) {
    throw new ConfigError(
      'known_ip_buckets',
      `invalid setting known_ip_buckets (T1612D_KNOWN_IP_BUCKETS): at most ${MAX_KNOWN_IP_BUCKETS} (every bucket is a Redis key the retention sweep visits)`,
    );
  }
  if (cfg.redisUrl && cfg.redisClusterNodes.length > 0) {
    throw new ConfigError(
      'redis_cluster_nodes',
      'invalid setting redis_cluster_nodes (T1612D_REDIS_CLUSTER_NODES): set either redis_url or redis_cluster_nodes, not both',
    );
  }
}

/** A listen host only this machine can reach. */
export function isLoopbackHost(host: string | undefined): boolean {
  if (host === undefined || host === '') return false; // all interfaces
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * Secure by default: ingest reachable beyond loopback must authenticate its senders (a token
 * or client certificates), or say out loud that it does not (http_allow_unauthenticated).
 * Whoever can POST events can teach the known-IP set and silence a later real attack.
 */
function checkIngestAuth(cfg: Config): void {
  if (cfg.httpAddress === '' || cfg.httpToken || cfg.httpTlsClientCaFile || cfg.httpAllowUnauthenticated) return;
  const host = /^(.*):\d+$/.exec(cfg.httpAddress)?.[1];
  if (isLoopbackHost(host)) return;
  throw new ConfigError(
    'http_token',
    `missing setting http_token (T1612D_HTTP_TOKEN): http_address ${cfg.httpAddress} is reachable beyond loopback, so ingest needs a token or client certificates (http_tls_client_ca_file); or bind http_address to 127.0.0.1, or set http_allow_unauthenticated=true to accept anyone`,
  );
}

/** The list of all settings, for documentation and `--help`. */
export function describeSettings(): { yaml: string; env: string; default: unknown }[] {
  return SETTINGS.map((s) => ({ yaml: yamlKey(s.key), env: envName(s.key), default: s.def }));
}
