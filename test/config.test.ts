// Settings resolution: the documented defaults, YAML and environment layering, duration
// parsing, and one clear, secret-free error line naming the setting for each kind of bad input.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig, envName, yamlKey } from '../src/config/config.js';
import { parseDuration } from '../src/config/parse.js';
import { testPki } from './support/certs.js';
import { ConfigError } from '../src/model/errors.js';

describe('config', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 't1612d-cfg-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('maps settings to YAML keys and env names from the contract', () => {
    assert.equal(envName('falcoGrpcAddress'), 'T1612D_FALCO_GRPC_ADDRESS');
    assert.equal(envName('buildWindowMs'), 'T1612D_BUILD_WINDOW');
    assert.equal(envName('firstSeenRetentionMs'), 'T1612D_FIRST_SEEN_RETENTION');
    assert.equal(yamlKey('redisClusterNodes'), 'redis_cluster_nodes');
  });

  it('known_ip_buckets: 4096 by default, bounded, named when wrong', () => {
    assert.equal(resolveConfig({ env: {} }).knownIpBuckets, 4096);
    assert.equal(resolveConfig({ env: { T1612D_KNOWN_IP_BUCKETS: '32768' } }).knownIpBuckets, 32768);
    for (const bad of ['0', '-1', 'many', '262145']) {
      assert.throws(
        () => resolveConfig({ env: { T1612D_KNOWN_IP_BUCKETS: bad } }),
        (err: unknown) => err instanceof ConfigError && /known_ip_buckets/.test(err.message),
        bad,
      );
    }
  });

  it('has the documented defaults', () => {
    const c = resolveConfig({ env: {} });
    assert.equal(c.falcoGrpcAddress, 'unix:///run/falco/falco.sock');
    assert.equal(c.falcoGrpcMethod, 'sub');
    assert.equal(c.httpAddress, '127.0.0.1:2802');
    assert.equal(c.redisPrefix, 't1612d');
    assert.equal(c.environment, 'default');
    assert.equal(c.buildWindowMs, 15 * 60_000);
    assert.equal(c.learningPeriodMs, 0);
    assert.equal(c.firstSeenRetentionMs, 30 * 86_400_000);
    assert.equal(c.logLevel, 'info');
    assert.equal(c.redisUrl, undefined);
  });

  it('layers defaults <- YAML file <- environment', () => {
    const file = join(dir, 'layers.yaml');
    writeFileSync(file, 'build_window: 5m\nenvironment: prod\nallow_cidrs: [10.0.0.0/8, 192.0.2.1]\nwebhook_headers: {X-Team: sec}\n');
    const c = resolveConfig({ file, env: { T1612D_ENVIRONMENT: 'staging', T1612D_ALLOW_DOMAINS: 'docker.io, .gcr.io' } });
    assert.equal(c.buildWindowMs, 300_000);
    assert.equal(c.environment, 'staging');
    assert.deepEqual(c.allowCidrs, ['10.0.0.0/8', '192.0.2.1/32']);
    assert.deepEqual(c.allowDomains, ['docker.io', '.gcr.io']);
    assert.deepEqual(c.webhookHeaders, { 'X-Team': 'sec' });
  });

  it("accepts gRPC's unix socket spellings without asking for TLS files", () => {
    for (const address of ['unix:///run/falco/falco.sock', 'unix:/run/falco/falco.sock']) {
      assert.equal(resolveConfig({ env: { T1612D_FALCO_GRPC_ADDRESS: address } }).falcoGrpcAddress, address);
    }
    assert.throws(() => resolveConfig({ env: { T1612D_FALCO_GRPC_ADDRESS: 'unix://' } }), /falco_grpc_address/);
  });

  it('parses durations with every suffix', () => {
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('2s'), 2000);
    assert.equal(parseDuration('1.5h'), 5_400_000);
    assert.equal(parseDuration('7d'), 604_800_000);
    assert.equal(parseDuration('0'), 0);
    assert.equal(parseDuration('5 minutes'), undefined);
  });

  const bad: [Record<string, string>, RegExp][] = [
    [{ T1612D_BUILD_WINDOW: 'soon' }, /^invalid setting build_window \(T1612D_BUILD_WINDOW\) from environment T1612D_BUILD_WINDOW: expected a duration/],
    [{ T1612D_FALCO_GRPC_METHOD: 'poll' }, /falco_grpc_method .*expected sub or get, got "poll"/],
    [{ T1612D_ALLOW_CIDRS: '10.0.0.0/33' }, /allow_cidrs .*networks like/],
    [{ T1612D_WEBHOOK_URL: 'not a url' }, /webhook_url .*a URL/],
    [{ T1612D_HTTP_ADDRESS: 'localhost' }, /http_address .*host:port/],
    [{ T1612D_WEBHOOK_HEADERS: 'NoColon' }, /webhook_headers .*Name:value/],
    [{ T1612D_LOG_LEVEL: 'loud' }, /log_level .*one of fatal/],
    [{ T1612D_WEBHOOK_CONCURRENCY: '0' }, /webhook_concurrency .*whole number >= 1/],
    [{ T1612D_ENVIRONMENT: 'prod {x}' }, /environment .*no spaces or braces/],
    [{ T1612D_FALCO_GRPC_ADDRESS: 'falco:5060' }, /^missing setting falco_grpc_ca_file .*mutual TLS/],
    [{ T1612D_FALCO_GRPC_CA_FILE: '/nonexistent/ca.pem' }, /falco_grpc_ca_file .*readable file/],
  ];
  for (const [env, re] of bad) {
    it(`rejects ${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ')} with one line naming the setting`, () => {
      assert.throws(
        () => resolveConfig({ env }),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError);
          assert.match(err.message, re);
          assert.ok(!err.message.includes('\n'), 'one line');
          return true;
        },
      );
    });
  }

  it('never echoes a secret in the error', () => {
    assert.throws(() => resolveConfig({ env: { T1612D_WEBHOOK_SECRET: 's3cr3t', T1612D_WEBHOOK_CONCURRENCY: 'x' } }), /concurrency/);
    const file = join(dir, 'secret.yaml');
    writeFileSync(file, 'http_token: [1, 2]\n');
    assert.throws(() => resolveConfig({ file, env: {} }), (e: unknown) => e instanceof ConfigError && e.message.includes('[redacted]') && !e.message.includes('1,2'));
  });

  it('rejects unknown keys and non-mapping YAML files', () => {
    const f1 = join(dir, 'unknown-key.yaml');
    writeFileSync(f1, 'build_windw: 5m\n');
    assert.throws(() => resolveConfig({ file: f1, env: {} }), /unknown setting build_windw/);
    const f2 = join(dir, 'list.yaml');
    writeFileSync(f2, '- a\n- b\n');
    assert.throws(() => resolveConfig({ file: f2, env: {} }), /must be a YAML mapping/);
    const f3 = join(dir, 'broken.yaml');
    writeFileSync(f3, 'a: [\n');
    assert.throws(() => resolveConfig({ file: f3, env: {} }), /not valid YAML/);
  });

  describe('ingest authentication at start-up', () => {
    const refused = (env: Record<string, string>): void =>
      assert.throws(
        () => resolveConfig({ env: { T1612D_FALCO_GRPC_ADDRESS: '', ...env } }),
        (e: unknown) => e instanceof ConfigError && e.setting === 'http_token' && /T1612D_HTTP_TOKEN/.test(e.message) && !e.message.includes('\n'),
      );
    const accepted = (env: Record<string, string>): void => {
      resolveConfig({ env: { T1612D_FALCO_GRPC_ADDRESS: '', ...env } });
    };

    it('refuses ingest beyond loopback with neither a token nor a client CA', () => {
      for (const address of ['0.0.0.0:2802', ':2802', '[::]:2802', '10.1.2.3:2802', 'node-a.example:2802']) {
        refused({ T1612D_HTTP_ADDRESS: address });
        refused({ T1612D_HTTP_ADDRESS: address, T1612D_HTTP_TOKEN: '' });
      }
    });

    it('accepts loopback, a token, client certificates, or the loud opt-out', () => {
      for (const address of ['127.0.0.1:2802', '127.8.9.10:0', '[::1]:2802', 'localhost:2802', '']) {
        accepted({ T1612D_HTTP_ADDRESS: address });
      }
      accepted({ T1612D_HTTP_ADDRESS: '0.0.0.0:2802', T1612D_HTTP_TOKEN: 'tok' });
      accepted({ T1612D_HTTP_ADDRESS: '0.0.0.0:2802', T1612D_HTTP_ALLOW_UNAUTHENTICATED: 'true' });
      const pki = testPki();
      accepted({
        T1612D_HTTP_ADDRESS: '0.0.0.0:2802',
        T1612D_HTTP_TLS_CERT_FILE: pki.server.certFile,
        T1612D_HTTP_TLS_KEY_FILE: pki.server.keyFile,
        T1612D_HTTP_TLS_CLIENT_CA_FILE: pki.caFile,
      });
      // HTTPS alone authenticates nobody.
      refused({ T1612D_HTTP_ADDRESS: '0.0.0.0:2802', T1612D_HTTP_TLS_CERT_FILE: pki.server.certFile, T1612D_HTTP_TLS_KEY_FILE: pki.server.keyFile });
    });

    it('wants TLS files in pairs, a client CA only with HTTPS, and readable files', () => {
      const pki = testPki();
      assert.throws(() => resolveConfig({ env: { T1612D_HTTP_TLS_CERT_FILE: pki.server.certFile } }), /http_tls_cert_file \/ http_tls_key_file/);
      assert.throws(() => resolveConfig({ env: { T1612D_HTTP_TLS_CLIENT_CA_FILE: pki.caFile } }), /http_tls_client_ca_file .*need HTTPS/);
      assert.throws(() => resolveConfig({ env: { T1612D_HTTP_TLS_CERT_FILE: '/nonexistent/t1612d.crt' } }), /http_tls_cert_file/);
    });

    it('reads the write-ahead log settings', () => {
      const c = resolveConfig({ env: { T1612D_DATA_DIR: '/var/lib/t1612d', T1612D_WAL_FSYNC_INTERVAL: '1s', T1612D_WAL_MAX_BYTES: '64mb' } });
      assert.equal(c.dataDir, '/var/lib/t1612d');
      assert.equal(c.walFsyncIntervalMs, 1000);
      assert.equal(c.walMaxBytes, 64 * 1024 * 1024);
      const d = resolveConfig({ env: {} });
      assert.equal(d.dataDir, undefined);
      assert.equal(d.walFsyncIntervalMs, 0);
      assert.throws(() => resolveConfig({ env: { T1612D_WAL_MAX_BYTES: '10kb' } }), /wal_max_bytes/);
    });
  });
});
