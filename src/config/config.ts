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

  /** Health, metrics and Falco http_output ingest; '' disables. */
  httpAddress: string;
  /** When set, ingest requires `Authorization: Bearer <token>`. */
  httpToken: string | undefined;
  /** Largest accepted ingest body (after decompression), bytes. @default 10 MiB */
  httpBodyLimit: number;
  /** Events buffered between the sources and the correlator; HTTP answers 503 when full. */
  intakeQueueSize: number;

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
  { key: 'httpAddress', kind: 'listenAddress', def: '0.0.0.0:2802' },
  { key: 'httpToken', kind: 'optString', def: undefined },
  { key: 'httpBodyLimit', kind: 'bytes', def: '10mb', min: 1024 },
  { key: 'intakeQueueSize', kind: 'int', def: 10_000, min: 1 },
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

/** The list of all settings, for documentation and `--help`. */
export function describeSettings(): { yaml: string; env: string; default: unknown }[] {
  return SETTINGS.map((s) => ({ yaml: yamlKey(s.key), env: envName(s.key), default: s.def }));
}
