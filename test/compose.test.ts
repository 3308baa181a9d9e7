/**
 * The container deployment, checked without a Docker engine: both compose files and the
 * Falco config snippets they mount are parsed and held to the facts that make the stack work
 * (pinned images, the shared gRPC socket, the http_output URL matching t1612d's port, mounted
 * rules that exist, t1612d's environment passing the real config parser). The Dockerfile and
 * the demo receiver have their own files (dockerfile.test.ts, webhook-echo.test.ts).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import { resolveConfig } from '../src/config/config.js';
import {
  ROOT,
  environment,
  interpolate,
  keysDeep,
  map,
  mountAt,
  mounts,
  portOf,
  readYaml,
  releaseOf,
  splitImage,
  strings,
  type Yaml,
} from './support/compose.js';

interface Variant {
  file: string;
  snippet: string;
  grpc: boolean;
}

/** What an operator's .env holds at the least: the ingest token (compose refuses to start without it). */
const DOT_ENV = { T1612D_HTTP_TOKEN: 'c0ffee0123456789c0ffee0123456789' };

const VARIANTS: Variant[] = [
  { file: 'docker-compose.yml', snippet: 'deploy/falco/t1612d-grpc.yaml', grpc: true },
  { file: 'docker-compose.falco-0.44.yml', snippet: 'deploy/falco/t1612d-http.yaml', grpc: false },
];

for (const variant of VARIANTS) {
  describe(`${variant.file} (Falco ${variant.grpc ? '<= 0.43, gRPC' : '>= 0.44, http_output'})`, () => {
    const doc = readYaml(variant.file);
    const services = map(doc['services'], 'services');
    const falco = map(services['falco'], 'falco');
    const redis = map(services['redis'], 'redis');
    const t1612d = map(services['t1612d'], 't1612d');
    const echo = map(services['webhook-echo'], 'webhook-echo');
    const falcoConfigMount = mounts(falco).find((m) => m.target.startsWith('/etc/falco/config.d/'));
    const falcoConfig = readYaml(variant.snippet);
    const t1612dEnv = environment(t1612d, DOT_ENV);

    it('defines falco, redis, t1612d and the demo receiver', () => {
      assert.deepEqual(Object.keys(services).sort(), ['falco', 'redis', 't1612d', 'webhook-echo']);
    });

    it('pins every pulled image to a release tag and builds t1612d from the Dockerfile', () => {
      for (const [name, raw] of Object.entries(services)) {
        const svc = map(raw, name);
        if (svc['build'] !== undefined) {
          assert.equal(svc['build'], '.', `${name} builds from the repository root`);
          assert.ok(existsSync(join(ROOT, 'Dockerfile')));
          continue;
        }
        assert.equal(typeof svc['image'], 'string', `${name} has an image`);
        const { tag } = splitImage(String(svc['image']));
        assert.notEqual(tag, 'latest', `${name} is not :latest`);
        assert.ok(releaseOf(tag), `${name} image tag ${tag} is a full release version`);
      }
    });

    it(`pins Falco to ${variant.grpc ? 'a 0.43.x release (the last with gRPC)' : '0.44 or later'}`, () => {
      const { name, tag } = splitImage(String(falco['image']));
      assert.equal(name, 'falcosecurity/falco');
      const release = releaseOf(tag);
      assert.ok(release);
      const [major, minor] = release;
      if (variant.grpc) assert.deepEqual([major, minor], [0, 43]);
      else assert.ok(major > 0 || minor >= 44, `${tag} >= 0.44`);
    });

    it("gives Falco the privileges and host mounts of Falco's container docs", () => {
      const caps = strings(falco['cap_add'] ?? [], 'cap_add').map((c) => c.toUpperCase());
      const privileged = falco['privileged'] === true;
      assert.ok(privileged || ['SYS_ADMIN', 'SYS_RESOURCE', 'SYS_PTRACE'].every((c) => caps.includes(c)));
      if (!privileged) assert.deepEqual(strings(falco['cap_drop'], 'cap_drop'), ['ALL']);
      assert.equal(mountAt(falco, '/host/var/run/docker.sock')?.source, '/var/run/docker.sock');
      const hostMount = { readOnly: true, named: false };
      assert.deepEqual(mountAt(falco, '/host/proc'), { source: '/proc', target: '/host/proc', ...hostMount });
      assert.deepEqual(mountAt(falco, '/host/etc'), { source: '/etc', target: '/host/etc', ...hostMount });
      assert.ok(map(falco['environment'], 'falco environment')['FALCO_HOSTNAME'], 'alerts carry a real host name');
    });

    it('mounts its Falco config snippet into config.d, read-only', () => {
      assert.ok(falcoConfigMount, 'a file is mounted into /etc/falco/config.d/');
      assert.equal(posix.normalize(falcoConfigMount.source), posix.normalize(`./${variant.snippet}`));
      assert.ok(falcoConfigMount.readOnly);
      assert.match(falcoConfigMount.target, /\.ya?ml$/);
    });

    it('runs the modern eBPF probe with JSON output and every rule evaluated', () => {
      assert.deepEqual(falcoConfig['engine'], { kind: 'modern_ebpf' });
      assert.equal(falcoConfig['json_output'], true);
      assert.equal(falcoConfig['json_include_tags_property'], true, 't1612d classifies by tags');
      assert.equal(falcoConfig['rule_matching'], 'all');
    });

    it('does not load the container plugin a second time (the image already does)', () => {
      assert.equal(falcoConfig['load_plugins'], undefined);
      assert.equal(falcoConfig['plugins'], undefined);
    });

    it('mounts falco-rules/ into Falco and lists only rules files that exist in the repository', () => {
      const rulesMount = mounts(falco).find((m) => posix.normalize(m.source) === 'falco-rules');
      assert.ok(rulesMount, 'falco-rules/ is mounted');
      assert.ok(rulesMount.readOnly);
      const listed = strings(falcoConfig['rules_files'], 'rules_files');
      assert.ok(listed.length > 0);
      for (const file of listed) {
        assert.ok(file.startsWith(`${rulesMount.target}/`), `${file} lies in the mounted falco-rules/`);
        const local = join(ROOT, 'falco-rules', file.slice(rulesMount.target.length + 1));
        assert.ok(existsSync(local) && statSync(local).isFile(), `${local} exists`);
      }
      assert.ok(listed.some((f) => f.endsWith('/t1612_rules.yaml')));
    });

    it("passes t1612d's environment through the real config parser", () => {
      const cfg = resolveConfig({ env: t1612dEnv });
      assert.equal(cfg.redisUrl, 'redis://redis:6379/0');
      assert.equal(new URL(cfg.redisUrl).hostname, 'redis', 'Redis is the compose service');
      assert.equal(cfg.httpAddress, '0.0.0.0:2802');
      assert.equal(cfg.hostname, 'docker-host');
      const webhook = new URL(cfg.webhookUrl ?? '');
      assert.equal(webhook.hostname, 'webhook-echo', 'by default alerts go to the demo receiver');
      assert.equal(Number(webhook.port), Number(environment(echo)['PORT']));
      // An operator's .env wins over the defaults.
      const prod = resolveConfig({
        env: environment(t1612d, { ...DOT_ENV, T1612D_WEBHOOK_URL: 'https://siem.example/hook', T1612D_LEARNING_PERIOD: '7d' }),
      });
      assert.equal(prod.webhookUrl, 'https://siem.example/hook');
      assert.equal(prod.learningPeriodMs, 7 * 86_400_000);
    });

    it('requires the ingest token: compose refuses to start without it, t1612d would too', () => {
      assert.throws(() => environment(t1612d), /T1612D_HTTP_TOKEN/);
      assert.throws(() => environment(t1612d, { T1612D_HTTP_TOKEN: '' }), /T1612D_HTTP_TOKEN/);
      const cfg = resolveConfig({ env: t1612dEnv });
      assert.equal(cfg.httpToken, DOT_ENV.T1612D_HTTP_TOKEN);
      // Ingest beyond loopback without the token is refused by t1612d itself.
      const tokenless = Object.fromEntries(Object.entries(t1612dEnv).filter(([k]) => k !== 'T1612D_HTTP_TOKEN'));
      assert.throws(() => resolveConfig({ env: tokenless }), /http_token/);
    });

    it('keeps the write-ahead log on a named volume under a read-only root', () => {
      assert.equal(t1612d['read_only'], true);
      const dataDir = resolveConfig({ env: t1612dEnv }).dataDir ?? '';
      assert.equal(dataDir, '/var/lib/t1612d');
      const data = mountAt(t1612d, dataDir);
      assert.ok(data?.named && !data.readOnly, `${dataDir} is a writable named volume`);
      assert.ok(Object.hasOwn(map(doc['volumes'], 'volumes'), data.source));
    });

    it('starts t1612d after a healthy Redis, restarts it, and health-checks /healthz on its port', () => {
      const deps = map(t1612d['depends_on'], 't1612d depends_on');
      assert.deepEqual(deps['redis'], { condition: 'service_healthy' });
      assert.equal(t1612d['restart'], 'unless-stopped');
      const port = portOf(t1612dEnv['T1612D_HTTP_ADDRESS'] ?? '');
      const test = strings(map(t1612d['healthcheck'], 'healthcheck')['test'], 'healthcheck.test').join(' ');
      assert.ok(test.includes(`:${port}/healthz`), test);
      const published = strings(t1612d['ports'], 'ports').map((p) => Number(p.split(':').pop()));
      assert.ok(published.includes(port), `container port ${port} is published`);
      assert.ok(mounts(t1612d).some((m) => posix.normalize(m.source) === 'falco-rules' && m.readOnly));
    });

    it('persists Redis with append-only files on a named volume and health-checks it', () => {
      const command = strings(redis['command'], 'redis command').join(' ');
      assert.match(command, /--appendonly yes/);
      const data = mountAt(redis, '/data');
      assert.ok(data?.named, 'Redis data lives on a named volume');
      assert.ok(Object.hasOwn(map(doc['volumes'], 'volumes'), data.source));
      assert.match(strings(map(redis['healthcheck'], 'healthcheck')['test'], 'test').join(' '), /redis-cli ping/);
    });

    it('has the webhook receiver only under the demo profile, running the mounted script', () => {
      assert.deepEqual(echo['profiles'], ['demo']);
      for (const name of ['falco', 'redis', 't1612d']) assert.equal(map(services[name], name)['profiles'], undefined);
      const script = mounts(echo).find((m) => m.source.endsWith('webhook-echo.mjs'));
      assert.ok(script?.readOnly);
      assert.ok(existsSync(join(ROOT, script.source)));
      assert.ok(strings(echo['command'], 'command').includes(script.target));
    });

    if (variant.grpc) {
      it('enables the gRPC server and output on a unix socket', () => {
        assert.equal(map(falcoConfig['grpc'], 'grpc')['enabled'], true);
        assert.equal(map(falcoConfig['grpc_output'], 'grpc_output')['enabled'], true);
        assert.match(String(map(falcoConfig['grpc'], 'grpc')['bind_address']), /^unix:\/\//);
      });

      it("shares the socket's directory between falco and t1612d through one named volume", () => {
        const bind = String(map(falcoConfig['grpc'], 'grpc')['bind_address']);
        assert.equal(t1612dEnv['T1612D_FALCO_GRPC_ADDRESS'], bind, 't1612d dials the address Falco binds');
        const dir = posix.dirname(bind.slice('unix://'.length));
        const inFalco = mountAt(falco, dir);
        const inT1612d = mountAt(t1612d, dir);
        assert.ok(inFalco?.named && inT1612d?.named, `${dir} is a named volume in both`);
        assert.equal(inFalco.source, inT1612d.source);
        assert.ok(Object.hasOwn(map(doc['volumes'], 'volumes'), inFalco.source));
        const others = Object.entries(services)
          .filter(([n]) => n !== 'falco' && n !== 't1612d')
          .filter(([n, s]) => mounts(map(s, n)).some((m) => m.source === inFalco.source));
        assert.deepEqual(others, [], 'no other service can reach the unauthenticated socket');
        assert.equal(resolveConfig({ env: t1612dEnv }).falcoGrpcAddress, bind);
      });

      it('lets t1612d open the root-owned socket as uid 0 without capabilities', () => {
        assert.equal(t1612d['user'], '0:0');
        assert.deepEqual(t1612d['cap_drop'], ['ALL']);
        assert.ok(strings(t1612d['security_opt'], 'security_opt').includes('no-new-privileges:true'));
        assert.equal(t1612d['read_only'], true);
        assert.deepEqual(map(t1612d['depends_on'], 'depends_on')['falco'], { condition: 'service_started' });
      });
    } else {
      it('has no gRPC keys anywhere in the Falco 0.44 config (Falco would refuse to start)', () => {
        assert.deepEqual(
          keysDeep(falcoConfig).filter((k) => k.startsWith('grpc')),
          [],
        );
      });

      it("posts Falco's alerts to t1612d's /falco on the port t1612d listens on, with the token", () => {
        const out = map(falcoConfig['http_output'], 'http_output');
        assert.equal(out['enabled'], true);
        // Falco expands ${VAR} in its config from its own environment, which compose fills
        // from the same .env value t1612d gets.
        const falcoEnv = environment(falco, DOT_ENV);
        const url = new URL(interpolate(String(out['url']), falcoEnv));
        assert.equal(decodeURIComponent(url.password), t1612dEnv['T1612D_HTTP_TOKEN'], "the URL's password is t1612d's token");
        assert.equal(decodeURIComponent(url.password), resolveConfig({ env: t1612dEnv }).httpToken);
        assert.equal(url.protocol, 'http:');
        assert.equal(url.hostname, 't1612d', 'the host is the t1612d service');
        assert.ok(Object.hasOwn(services, url.hostname));
        assert.equal(Number(url.port), portOf(t1612dEnv['T1612D_HTTP_ADDRESS'] ?? ''));
        assert.equal(url.pathname, '/falco');
      });

      it('disables the gRPC source, runs t1612d as the image user, and starts Falco after it', () => {
        assert.equal(t1612dEnv['T1612D_FALCO_GRPC_ADDRESS'], '');
        assert.equal(resolveConfig({ env: t1612dEnv }).falcoGrpcAddress, '');
        assert.equal(t1612d['user'], undefined);
        assert.deepEqual(
          mounts(t1612d).filter((m) => m.named).map((m) => m.target),
          ['/var/lib/t1612d'],
          'no socket volume, only the write-ahead log',
        );
        assert.deepEqual(map(falco['depends_on'], 'depends_on')['t1612d'], { condition: 'service_healthy' });
      });
    }
  });
}

describe('deploy/env.example', () => {
  it('names only variables the compose files use, with values t1612d accepts', () => {
    const compose = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');
    const assignments = readFileSync(join(ROOT, 'deploy', 'env.example'), 'utf8')
      .split(/\r?\n/)
      .map((l) => /^#?\s*([A-Z][A-Z0-9_]*)=(.*)$/.exec(l.trim()))
      .filter((m): m is RegExpExecArray => m !== null);
    assert.ok(assignments.length >= 10);
    const env: Record<string, string> = {};
    for (const [, name = '', value = ''] of assignments) {
      assert.ok(compose.includes(`\${${name}:-`) || compose.includes(`\${${name}:?`), `${name} is read by docker-compose.yml`);
      env[name] = value;
    }
    const t1612d = map(map(readYaml('docker-compose.yml')['services'], 'services')['t1612d'], 't1612d');
    const cfg = resolveConfig({ env: environment(t1612d, env) });
    assert.equal(cfg.webhookUrl, env['T1612D_WEBHOOK_URL']);
    assert.equal(cfg.learningPeriodMs, 7 * 86_400_000);
    assert.equal(cfg.hostname, env['FALCO_HOSTNAME']);
  });
});

describe('the two compose files together', () => {
  it('share the project name and keep the same t1612d settings apart from the Falco source', () => {
    const a = readYaml(VARIANTS[0]?.file ?? '');
    const b = readYaml(VARIANTS[1]?.file ?? '');
    assert.equal(a['name'], b['name']);
    const envA = map(map(map(a['services'], 's')['t1612d'], 't')['environment'], 'e');
    const envB = map(map(map(b['services'], 's')['t1612d'], 't')['environment'], 'e');
    const omit = (e: Yaml): Yaml => Object.fromEntries(Object.entries(e).filter(([k]) => k !== 'T1612D_FALCO_GRPC_ADDRESS'));
    assert.deepEqual(omit(envA), omit(envB));
  });
});
