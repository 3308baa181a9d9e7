/**
 * The Kubernetes deployment, checked without a cluster: the kustomize bases that
 * docs/kubernetes.md applies are rendered with kubectl and every object is validated against
 * the Kubernetes schemas, then held to the facts that make the wiring work (node-local
 * routing, the Secret the docs create, probes, non-root, NetworkPolicy selecting Falco, the
 * settings passing the real config parser). The dashboard and the alert rules may name only
 * metrics a real `Metrics` registry exports, and the Falco chart values only keys the pinned
 * chart version has.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { resolveConfig } from '../src/config/config.js';
import { Metrics } from '../src/ops/metrics.js';
import { ROOT, map, readYaml, type Yaml } from './support/compose.js';
import {
  bytes,
  containerEnv,
  containers,
  exportedSeries,
  findKubectl,
  flagValues,
  idOf,
  kustomize,
  labelsMatch,
  podSpec,
  promqlRefs,
  renderOverlay,
  secretRefs,
  shellCommands,
  validateAs,
  validateObject,
  type ExportedSeries,
  type Kubectl,
} from './support/kubernetes.js';

const DOCS = readFileSync(join(ROOT, 'docs/kubernetes.md'), 'utf8');
const FIXTURE = readYaml('test/fixtures/kubernetes/falco-chart-9.1.0.yaml');
const VALUES_FILE = 'deploy/kubernetes/falco-values.yaml';
const VALUES = readYaml(VALUES_FILE);
/** Labels Prometheus adds to every scraped series (target labels, the ServiceMonitor's `node`). */
const TARGET_LABELS = new Set(['job', 'instance', 'namespace', 'pod', 'service', 'endpoint', 'container', 'node']);

// ---------------------------------------------------------------- docs: the commands users run

/** The body of the first fenced block of `lang` after the heading `## title`. */
function docBlock(title: string, lang: string): string {
  const start = DOCS.indexOf(`\n## ${title}\n`);
  assert.ok(start >= 0, `docs/kubernetes.md has a "${title}" section`);
  const m = new RegExp('```' + lang + '\\n([\\s\\S]*?)```').exec(DOCS.slice(start));
  assert.ok(m?.[1], `the "${title}" section has a ${lang} block`);
  return m[1];
}

const INSTALL = shellCommands(docBlock('Install', 'sh'));
const [SECRET_CMD = [], APPLY_CMD = [], HELM_CMD = []] = INSTALL;
const BASE_DIR = flagValues(APPLY_CMD, '-k')[0] ?? '';
const MONITORING_DIR = flagValues(shellCommands(docBlock('Monitoring', 'sh'))[0] ?? [], '-k')[0] ?? '';
const NAMESPACE = flagValues(SECRET_CMD, '-n')[0] ?? '';
const SECRET_NAME = SECRET_CMD[SECRET_CMD.indexOf('generic') + 1] ?? '';
const SECRET_KEYS = flagValues(SECRET_CMD, '--from-literal').map((kv) => kv.slice(0, kv.indexOf('=')));

describe('docs/kubernetes.md install commands', () => {
  it('installs in three commands: the Secret, the kustomize base, the Falco release', () => {
    assert.equal(INSTALL.length, 3);
    assert.deepEqual(SECRET_CMD.slice(0, 1), ['kubectl']);
    assert.ok(SECRET_CMD.join(' ').includes('create secret generic'), SECRET_CMD.join(' '));
    assert.deepEqual(APPLY_CMD.slice(0, 2), ['kubectl', 'apply']);
    assert.equal(BASE_DIR, 'deploy/kubernetes');
    assert.deepEqual(HELM_CMD.slice(0, 2), ['helm', 'upgrade']);
    assert.equal(MONITORING_DIR, 'deploy/kubernetes/monitoring');
  });

  it('generates every secret value fresh (none is written in the docs)', () => {
    for (const kv of flagValues(SECRET_CMD, '--from-literal')) {
      assert.match(kv, /^[a-z-]+=\$\(openssl rand -hex \d+\)$/, kv);
    }
  });

  it('upgrades the falcosecurity/falco chart at the pinned version with the values file and the shipped rules', () => {
    assert.equal(HELM_CMD[3], `falcosecurity/${String(FIXTURE['chart'])}`);
    assert.deepEqual(flagValues(HELM_CMD, '-n', '--namespace'), [NAMESPACE]);
    assert.deepEqual(flagValues(HELM_CMD, '--version'), [String(FIXTURE['version'])]);
    assert.ok(HELM_CMD.includes('--reuse-values'), 'keeps the existing release values');
    assert.deepEqual(flagValues(HELM_CMD, '-f', '--values'), [VALUES_FILE]);
    const files = flagValues(HELM_CMD, '--set-file');
    assert.equal(files.length, 1);
    const [key = '', file = ''] = (files[0] ?? '').split('=');
    // `\.` keeps the dot in the file name instead of nesting; Falco >= 0.41 loads only
    // .yaml/.yml files from the rules.d directory the chart mounts customRules in.
    assert.match(key, /^customRules\.[a-z0-9_]+\\\.yaml$/);
    assert.ok((FIXTURE['open'] as string[]).includes('customRules'));
    assert.equal(file, 'falco-rules/t1612_rules.yaml');
    assert.ok(existsSync(join(ROOT, file)));
  });

  it('every helm line of the page targets the same release, namespace and pinned chart version', () => {
    const lines = [...DOCS.matchAll(/helm upgrade [^`\n]+/g)].map((m) => shellCommands(m[0])[0] ?? []);
    assert.ok(lines.length >= 3, `${lines.length} helm lines`);
    for (const cmd of lines) assert.deepEqual(cmd.slice(0, 9), HELM_CMD.slice(0, 9), cmd.join(' '));
    // The values file's header shows the install line too.
    const header = readFileSync(join(ROOT, VALUES_FILE), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('#   '))
      .map((l) => l.slice(4))
      .join('\n');
    assert.deepEqual(shellCommands(header), [HELM_CMD]);
  });

  it('repeats the same helm line, plus a tuning file that loads after the rules, in "Tune"', () => {
    const helm = HELM_CMD.map((w) => (w.includes(' ') || w.includes('\\') ? `'${w}'` : w)).join(' ');
    const tune = DOCS.slice(DOCS.indexOf('\n## Tune\n'));
    assert.ok(tune.includes(`\`${helm} --set-file 'customRules.t1612_tuning\\.yaml=my-tuning.yaml'\``), 'tuning helm line');
    assert.ok('t1612_rules.yaml' < 't1612_tuning.yaml', 'rules.d loads in name order');
  });
});

// ---------------------------------------------------------------- the Falco chart values

/** Dotted paths of a values tree, stopping at the chart's open (user content) keys. */
function valuePaths(tree: Yaml, open: Set<string>, prefix = ''): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const [k, v] of Object.entries(tree)) {
    const path = prefix ? `${prefix}.${k}` : k;
    if (!open.has(path) && typeof v === 'object' && v !== null && !Array.isArray(v)) {
      for (const [p, x] of valuePaths(v as Yaml, open, path)) out.set(p, x);
    } else {
      out.set(path, v);
    }
  }
  return out;
}

describe(`${VALUES_FILE} (Falco chart ${String(FIXTURE['version'])})`, () => {
  const defaults = map(FIXTURE['defaults'], 'fixture defaults');
  const open = new Set(FIXTURE['open'] as string[]);
  const paths = valuePaths(VALUES, open);
  const falco = map(VALUES['falco'], 'falco');
  const http = map(falco['http_output'], 'falco.http_output');

  it('pins a 9.x chart that ships Falco 0.44 or later', () => {
    assert.equal(FIXTURE['chart'], 'falco');
    assert.match(String(FIXTURE['version']), /^9\.\d+\.\d+$/);
    const [major = 0, minor = 0] = String(FIXTURE['appVersion']).split('.').map(Number);
    assert.ok(major > 0 || minor >= 44, `appVersion ${String(FIXTURE['appVersion'])}`);
  });

  it("sets only keys the chart's values.yaml has, with the default's type", () => {
    assert.ok(paths.size > 0);
    for (const [path, value] of paths) {
      assert.ok(Object.hasOwn(defaults, path), `${path} is a key of the chart's values.yaml`);
      const def = defaults[path];
      const kind = (x: unknown): string => (Array.isArray(x) ? 'array' : x === null ? 'null' : typeof x);
      assert.equal(kind(value), kind(def), `${path} has the type of its default`);
    }
  });

  it('carries none of the keys the chart refuses (gRPC was removed in Falco 0.44)', () => {
    for (const removed of FIXTURE['removed'] as string[]) {
      const [head = '', ...tail] = removed.split('.');
      const parent = VALUES[head];
      const present = tail.length === 0 ? parent !== undefined : typeof parent === 'object' && parent !== null && Object.hasOwn(parent, tail.join('.'));
      assert.ok(!present, `${removed} is not set`);
    }
    assert.ok(!JSON.stringify(VALUES).includes('grpc'), 'no grpc anywhere');
  });

  it('turns on what t1612d reads: JSON with tags and output, every matching rule', () => {
    assert.equal(falco['json_output'], true);
    assert.equal(falco['json_include_output_property'], true);
    assert.equal(falco['json_include_tags_property'], true);
    assert.equal(falco['rule_matching'], 'all');
    assert.notEqual(map(VALUES['falcosidekick'] ?? {}, 'falcosidekick')['enabled'], true, 'the chart would point http_output at Falcosidekick');
  });

  it('passes Kubernetes-valid env entries and pod labels to the Falco pods', async () => {
    const env = map(VALUES['extra'], 'extra')['env'] as unknown[];
    for (const [i, e] of env.entries()) await validateAs('IoK8sApiCoreV1EnvVar', e, `extra.env[${i}]`);
    for (const [k, v] of Object.entries(map(VALUES['podLabels'], 'podLabels'))) {
      assert.match(k, /^([a-z0-9]([-a-z0-9]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/, `label key ${k}`);
      assert.equal(typeof v, 'string', `label ${k} is a string`);
    }
  });

  it('posts to the node-local t1612d Service with the token from the Secret as the password', () => {
    assert.equal(http['enabled'], true);
    assert.equal(http['keep_alive'], true);
    const url = new URL(String(http['url']));
    assert.equal(url.protocol, 'http:');
    assert.equal(url.pathname, '/falco');
    assert.equal(url.username, '');
    // Falco expands ${VAR} in its configuration from its environment.
    assert.equal(decodeURIComponent(url.password), '${T1612D_HTTP_TOKEN}');
    const env = (map(VALUES['extra'], 'extra')['env'] as Yaml[]).find((e) => e['name'] === 'T1612D_HTTP_TOKEN');
    assert.ok(env, 'extra.env sets T1612D_HTTP_TOKEN');
    const ref = map(map(env['valueFrom'], 'valueFrom')['secretKeyRef'], 'secretKeyRef');
    assert.equal(ref['name'], SECRET_NAME, 'the Secret the docs create');
    assert.ok(SECRET_KEYS.includes(String(ref['key'])), `the docs create key ${String(ref['key'])}`);
    assert.notEqual(ref['optional'], true);
  });
});

// ---------------------------------------------------------------- metric names

describe('dashboard and alert rules use only metrics t1612d exports', () => {
  let exported: Map<string, ExportedSeries>;
  const rule = readYaml('deploy/kubernetes/monitoring/prometheusrule.yaml');
  const dashboard = JSON.parse(readFileSync(join(ROOT, 'deploy/kubernetes/monitoring/t1612d-dashboard.json'), 'utf8')) as Yaml;

  before(async () => {
    // The daemon's own registry, default process metrics included, as /metrics renders it.
    exported = await exportedSeries(new Metrics({ defaultMetrics: true }).registry);
    assert.ok(exported.has('t1612d_falco_events_total') && exported.has('t1612d_event_to_alert_seconds_bucket'));
  });

  function checkExpr(where: string, expr: string): void {
    const refs = promqlRefs(expr);
    assert.ok(refs.metrics.length > 0, `${where} reads a metric: ${expr}`);
    const labels = new Set(TARGET_LABELS);
    for (const name of refs.metrics) {
      const series = exported.get(name);
      assert.ok(series, `${where}: ${name} is exported by t1612d`);
      for (const l of series.labels) labels.add(l);
    }
    for (const l of refs.labels) assert.ok(labels.has(l), `${where}: label ${l} exists on ${refs.metrics.join(', ')}`);
  }

  it('the reference parser finds metrics and labels, and would catch a wrong one', () => {
    assert.deepEqual(promqlRefs('sum by (kind) (rate(t1612d_falco_events_total{node=~"$node"}[$__rate_interval])) or on (node) up * 0'), {
      metrics: ['t1612d_falco_events_total', 'up'],
      labels: ['kind', 'node', 'node'],
    });
    assert.ok(!exported.has('t1612d_falco_event_total'));
    assert.throws(() => checkExpr('probe', 'rate(t1612d_falco_event_total[5m])'), /is exported/);
    assert.throws(() => checkExpr('probe', 'sum by (reason) (t1612d_alerts_total)'), /label reason/);
  });

  it('every PrometheusRule expression', () => {
    const groups = map(rule['spec'], 'spec')['groups'] as Yaml[];
    let n = 0;
    for (const g of groups) {
      for (const r of g['rules'] as Yaml[]) {
        checkExpr(`alert ${String(r['alert'])}`, String(r['expr']));
        n++;
      }
    }
    assert.ok(n >= 5);
  });

  it('alerts on what operators need: Falco source, no events, drops, Redis, dead letters', () => {
    const rules = (map(rule['spec'], 'spec')['groups'] as Yaml[]).flatMap((g) => g['rules'] as Yaml[]);
    const reading = (metric: string): Yaml[] => rules.filter((r) => promqlRefs(String(r['expr'])).metrics.includes(metric));
    for (const m of ['t1612d_falco_connected', 't1612d_falco_events_total', 't1612d_dropped_events_total', 't1612d_redis_connected', 't1612d_outbox_dead_letters']) {
      assert.ok(reading(m).length > 0, `an alert reads ${m}`);
    }
    for (const r of rules) {
      assert.match(String(r['alert']), /^T1612d[A-Z]\w+$/);
      assert.ok(['critical', 'warning', 'info'].includes(String(map(r['labels'], 'labels')['severity'])));
      assert.ok(map(r['annotations'], 'annotations')['summary']);
    }
  });

  it('every dashboard query, and the node variable', () => {
    const panels = dashboard['panels'] as Yaml[];
    let n = 0;
    for (const p of panels) {
      for (const t of (p['targets'] as Yaml[] | undefined) ?? []) {
        checkExpr(`panel "${String(p['title'])}"`, String(t['expr']));
        n++;
      }
    }
    assert.ok(n >= 15, `${n} queries`);
    const vars = (map(dashboard['templating'], 'templating')['list'] as Yaml[]).filter((v) => v['type'] === 'query');
    for (const v of vars) {
      const m = /^label_values\((\w+),\s*(\w+)\)$/.exec(String(v['definition']));
      assert.ok(m, `variable ${String(v['name'])} uses label_values(metric, label)`);
      assert.ok(exported.has(m[1] ?? ''), `${m[1]} is exported`);
      assert.ok(TARGET_LABELS.has(m[2] ?? ''));
    }
  });

  it('shows events by kind, alerts by severity, deliveries, decision latency, known IPs and Redis', () => {
    const exprs = (dashboard['panels'] as Yaml[]).flatMap((p) => ((p['targets'] as Yaml[] | undefined) ?? []).map((t) => String(t['expr'])));
    const has = (re: RegExp): boolean => exprs.some((e) => re.test(e));
    assert.ok(has(/by \(kind\) \(rate\(t1612d_falco_events_total/));
    assert.ok(has(/by \(severity\) .*t1612d_alerts_total/));
    assert.ok(has(/by \(sink, status\) .*t1612d_deliveries_total/));
    assert.ok(has(/t1612d_deliveries_total\{[^}]*status="retry"/));
    assert.ok(has(/histogram_quantile\(0\.99, .*t1612d_event_to_alert_seconds_bucket/));
    assert.ok(has(/t1612d_known_ips/));
    assert.ok(has(/t1612d_redis_connected/));
    const ids = (dashboard['panels'] as Yaml[]).map((p) => p['id']);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  });
});

// ---------------------------------------------------------------- rendered manifests

describe('deploy/kubernetes rendered with kubectl kustomize', function () {
  let kubectl: Kubectl | null = null;
  let base: Yaml[] = [];
  const find = (kind: string, name: string): Yaml => {
    const o = base.find((x) => x['kind'] === kind && map(x['metadata'], 'metadata')['name'] === name);
    assert.ok(o, `${kind}/${name} is rendered`);
    return o;
  };
  const secrets = (): Record<string, string> => Object.fromEntries(SECRET_KEYS.map((k, i) => [k, `${i}`.repeat(64)]));

  before(function () {
    kubectl = findKubectl();
    if (!kubectl) {
      if (process.env['CI']) assert.fail('kubectl is not installed, but CI is set and .ci/run installs it');
      this.skip(); // rendering needs kubectl (Debian: kubernetes-client)
    }
    base = kustomize(join(ROOT, BASE_DIR));
  });

  it('renders the expected objects, all in the namespace the docs use', () => {
    assert.deepEqual(base.map(idOf).sort(), [
      'ConfigMap/' + String(map(base.find((o) => o['kind'] === 'ConfigMap')?.['metadata'], 'ConfigMap metadata')['name']),
      'DaemonSet/t1612d',
      'NetworkPolicy/t1612d-ingest',
      'NetworkPolicy/t1612d-redis',
      'Service/t1612d',
      'Service/t1612d-redis',
      'ServiceAccount/t1612d',
      'StatefulSet/t1612d-redis',
    ].sort());
    for (const o of base) assert.equal(map(o['metadata'], 'metadata')['namespace'], NAMESPACE, `${idOf(o)} namespace`);
    assert.equal(NAMESPACE, 'falco', "Falco's namespace: Falco reads the same Secret");
  });

  it('validates every object against the Kubernetes schemas, with no unknown field', async () => {
    for (const o of base) await validateObject(o);
  });

  it('the schema check rejects a misspelt field and a wrong type', async () => {
    const svc = structuredClone(find('Service', 't1612d'));
    (svc['spec'] as Yaml)['internalTraficPolicy'] = 'Local';
    await assert.rejects(validateObject(svc), /unknown to Kubernetes/);
    const ds = structuredClone(find('DaemonSet', 't1612d'));
    ((containers(ds)[0] as Yaml)['ports'] as Yaml[])[0] = { containerPort: '2802' };
    await assert.rejects(validateObject(ds), /matches the Kubernetes schema/);
  });

  it('routes each Falco to the t1612d on its node, on the port of T1612D_HTTP_ADDRESS and http_output.url', () => {
    const svc = map(find('Service', 't1612d')['spec'], 'spec');
    const ds = find('DaemonSet', 't1612d');
    assert.equal(svc['internalTrafficPolicy'], 'Local');
    assert.equal(svc['publishNotReadyAddresses'], true, 'a pod waiting for Redis still takes events');
    const podLabels = map(map(map(ds['spec'], 'spec')['template'], 'template')['metadata'], 'metadata')['labels'] as Yaml;
    assert.ok(labelsMatch(map(svc['selector'], 'selector'), podLabels));
    const [port] = svc['ports'] as Yaml[];
    const c = containers(ds)[0] as Yaml;
    const cport = (c['ports'] as Yaml[]).find((p) => p['name'] === port?.['targetPort']);
    assert.ok(cport, 'the Service targets a named container port');
    const env = containerEnv(c, base, secrets());
    assert.equal(Number(env['T1612D_HTTP_ADDRESS']?.split(':').pop()), cport['containerPort']);
    const url = new URL(String(map(map(VALUES['falco'], 'falco')['http_output'], 'http_output')['url']));
    assert.equal(url.hostname, 't1612d');
    assert.equal(Number(url.port), port?.['port']);
    const strategy = map(map(ds['spec'], 'spec')['updateStrategy'], 'updateStrategy');
    assert.deepEqual(strategy['rollingUpdate'], { maxSurge: 1, maxUnavailable: 0 }, 'new pod before the old one stops');
  });

  it("gives t1612d settings the real config parser accepts: gRPC off, token, Redis service, node name", () => {
    const ds = find('DaemonSet', 't1612d');
    const env = containerEnv(containers(ds)[0] as Yaml, base, secrets());
    const cfg = resolveConfig({ env });
    assert.equal(cfg.falcoGrpcAddress, '', 'Falco 0.44 has no gRPC server');
    assert.equal(cfg.httpToken, secrets()['token']);
    assert.equal(cfg.hostname, 'node-a');
    const redisUrl = new URL(cfg.redisUrl ?? '');
    assert.equal(decodeURIComponent(redisUrl.password), secrets()['redis-password']);
    const redisSvc = find('Service', 't1612d-redis');
    assert.equal(redisUrl.hostname, map(redisSvc['metadata'], 'metadata')['name']);
    assert.equal(Number(redisUrl.port), ((map(redisSvc['spec'], 'spec')['ports'] as Yaml[])[0] as Yaml)['port']);
    assert.equal(cfg.environment, 'default');
  });

  it('reads secrets only from the Secret the docs create, with the keys they create', () => {
    const refs = secretRefs(base);
    assert.ok(refs.length >= 3);
    for (const [name, key, optional] of refs) {
      assert.equal(name, SECRET_NAME);
      if (!optional) assert.ok(SECRET_KEYS.includes(key), `the docs create key ${key}`);
    }
    const required = new Set(refs.filter(([, , o]) => !o).map(([, k]) => k));
    assert.deepEqual([...required].sort(), [...SECRET_KEYS].sort(), 'the docs create no unused key');
  });

  it('keeps the write-ahead log on a writable volume that survives a container restart', () => {
    const ds = find('DaemonSet', 't1612d');
    const c = containers(ds)[0] as Yaml;
    const dir = containerEnv(c, base, secrets())['T1612D_DATA_DIR'];
    assert.ok(dir);
    const mount = (c['volumeMounts'] as Yaml[]).find((m) => m['mountPath'] === dir);
    assert.ok(mount, `${dir} is a mount`);
    assert.notEqual(mount['readOnly'], true);
    const vol = (podSpec(ds)['volumes'] as Yaml[]).find((v) => v['name'] === mount['name']);
    assert.ok(vol?.['emptyDir'], 'an emptyDir lives as long as the pod');
  });

  it('runs every container non-root, read-only, without capabilities, with requests and limits', () => {
    for (const w of base.filter((o) => o['kind'] === 'DaemonSet' || o['kind'] === 'StatefulSet')) {
      const pod = podSpec(w);
      assert.equal(pod['automountServiceAccountToken'], false, `${idOf(w)} needs no API token`);
      assert.equal(map(pod['securityContext'], 'securityContext')['runAsNonRoot'], true);
      for (const c of containers(w)) {
        const sc = map(c['securityContext'], `${idOf(w)} securityContext`);
        assert.equal(sc['readOnlyRootFilesystem'], true, `${idOf(w)} read-only root`);
        assert.equal(sc['allowPrivilegeEscalation'], false);
        assert.deepEqual(map(sc['capabilities'], 'capabilities')['drop'], ['ALL']);
        const res = map(c['resources'], 'resources');
        for (const side of ['requests', 'limits']) {
          const r = map(res[side], `${idOf(w)} ${side}`);
          assert.ok(r['cpu'] && r['memory'], `${idOf(w)} ${side} cpu and memory`);
        }
      }
    }
    const t = map(map(containers(find('DaemonSet', 't1612d'))[0]?.['resources'], 'resources')['limits'], 'limits');
    const limit = bytes(String(t['memory']));
    assert.ok(limit >= 100 * 2 ** 20 && limit <= 400 * 2 ** 20, `t1612d memory limit ${String(t['memory'])} fits the benchmark`);
  });

  it('probes /healthz for liveness and /readyz for readiness on the ingest port', () => {
    const c = containers(find('DaemonSet', 't1612d'))[0] as Yaml;
    const get = (probe: string): Yaml => map(map(c[probe], probe)['httpGet'], `${probe}.httpGet`);
    assert.equal(get('livenessProbe')['path'], '/healthz');
    assert.equal(get('startupProbe')['path'], '/healthz');
    assert.equal(get('readinessProbe')['path'], '/readyz');
    for (const p of ['livenessProbe', 'readinessProbe', 'startupProbe']) assert.equal(get(p)['port'], 'http');
  });

  it('runs Redis with the append-only file on its persistent volume', () => {
    const sts = find('StatefulSet', 't1612d-redis');
    const c = containers(sts)[0] as Yaml;
    const args = (c['args'] as string[]).join(' ');
    assert.match(args, /--appendonly yes/);
    assert.match(args, /--appendfsync everysec/);
    assert.match(args, /--requirepass \$\(REDIS_PASSWORD\)/);
    const dir = /--dir (\S+)/.exec(args)?.[1];
    const mount = (c['volumeMounts'] as Yaml[]).find((m) => m['mountPath'] === dir);
    const claims = (map(sts['spec'], 'spec')['volumeClaimTemplates'] as Yaml[]).map((v) => map(v['metadata'], 'metadata')['name']);
    assert.ok(mount && claims.includes(mount['name']), 'the AOF directory is the volume claim');
    assert.match(String(c['image']), /^redis:\d+\.\d+\.\d+-alpine$/, 'a pinned Redis release');
  });

  it('lets only Falco (labelled by falco-values.yaml) reach the ingest, and only t1612d reach Redis', () => {
    const ingest = map(find('NetworkPolicy', 't1612d-ingest')['spec'], 'spec');
    const ds = find('DaemonSet', 't1612d');
    const dsLabels = map(map(map(ds['spec'], 'spec')['template'], 'template')['metadata'], 'metadata')['labels'] as Yaml;
    assert.ok(labelsMatch(map(map(ingest['podSelector'], 'podSelector')['matchLabels'], 'matchLabels'), dsLabels));
    assert.deepEqual(ingest['policyTypes'], ['Ingress']);
    const [falcoRule] = ingest['ingress'] as Yaml[];
    const [peer] = falcoRule?.['from'] as Yaml[];
    assert.equal(peer?.['namespaceSelector'], undefined, 'Falco in the same namespace');
    const falcoLabels = map(VALUES['podLabels'], 'podLabels');
    assert.ok(labelsMatch(map(map(peer?.['podSelector'], 'podSelector')['matchLabels'], 'matchLabels'), falcoLabels), 'selects the label falco-values.yaml sets');
    const portNames = (containers(ds)[0]?.['ports'] as Yaml[]).map((p) => p['name']);
    for (const r of ingest['ingress'] as Yaml[]) for (const p of r['ports'] as Yaml[]) assert.ok(portNames.includes(p['port']));

    const redis = map(find('NetworkPolicy', 't1612d-redis')['spec'], 'spec');
    const stsLabels = map(map(map(find('StatefulSet', 't1612d-redis')['spec'], 'spec')['template'], 'template')['metadata'], 'metadata')['labels'] as Yaml;
    assert.ok(labelsMatch(map(map(redis['podSelector'], 'podSelector')['matchLabels'], 'matchLabels'), stsLabels));
    const peers = (redis['ingress'] as Yaml[]).flatMap((r) => r['from'] as Yaml[]);
    assert.equal(peers.length, 1);
    assert.ok(labelsMatch(map(map(peers[0]?.['podSelector'], 'podSelector')['matchLabels'], 'matchLabels'), dsLabels));
    assert.ok(!labelsMatch(map(map(peers[0]?.['podSelector'], 'podSelector')['matchLabels'], 'matchLabels'), falcoLabels));
  });

  it('takes the t1612d image by name, so kustomize `images:` sets it', () => {
    const image = String(containers(find('DaemonSet', 't1612d'))[0]?.['image']);
    assert.match(image, /^t1612d:\d+\.\d+\.\d+$/);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(image, `t1612d:${pkg.version}`);
  });

  it('renders the overlay of "Tune": image, merged settings, the rest of the base unchanged', () => {
    const block = /## Tune\n[\s\S]*?```yaml\n([\s\S]*?)```/.exec(DOCS)?.[1];
    assert.ok(block, 'the Tune section shows an overlay');
    let overlay = block;
    const first = map(parseYaml(overlay), 'overlay')['resources'];
    assert.deepEqual(first, ['../../deploy/kubernetes']);
    // The kustomize v2 in Debian's kubectl 1.20 reads a directory only under `bases:`.
    if (kubectl && kubectl.kustomizeMajor < 3) overlay = overlay.replace(/^resources:/m, 'bases:');
    const objects = renderOverlay('production', overlay);
    assert.deepEqual(objects.map(idOf).filter((id) => !id.startsWith('ConfigMap/')).sort(), base.map(idOf).filter((id) => !id.startsWith('ConfigMap/')).sort());
    const ds = objects.find((o) => idOf(o) === 'DaemonSet/t1612d') as Yaml;
    const c = containers(ds)[0] as Yaml;
    assert.equal(c['image'], 'registry.example.com/security/t1612d:0.1.0');
    const cfg = resolveConfig({ env: containerEnv(c, objects, secrets()) });
    assert.equal(cfg.learningPeriodMs, 7 * 86_400_000);
    assert.equal(cfg.webhookUrl, 'https://siem.example.com/t1612');
    assert.equal(cfg.environment, 'production');
    assert.equal(cfg.buildWindowMs, 15 * 60_000, 'settings the overlay leaves alone keep the base value');
    assert.equal(cfg.falcoGrpcAddress, '');
  });

  it('renders the Redis Cluster overlay of "Scaling": no bundled Redis, cluster nodes instead of the URL', async function () {
    // `patches:` with inline patches came with kustomize 3; Debian's kubectl 1.20 has v2.
    if (kubectl && kubectl.kustomizeMajor < 3) this.skip();
    const scaling = DOCS.slice(DOCS.indexOf('\n## Scaling\n'));
    const block = /\n( *)```yaml\n([\s\S]*?)\n\1```/.exec(scaling);
    assert.ok(block?.[2], 'the Scaling section shows an overlay');
    const indent = block[1]?.length ?? 0;
    const overlay = block[2].split('\n').map((l) => l.slice(indent)).join('\n') + '\n';
    const objects = renderOverlay('redis-cluster', overlay);
    assert.deepEqual(objects.map(idOf).filter((id) => id.includes('redis')), [], 'the bundled Redis is gone');
    for (const o of objects) await validateObject(o);
    const c = containers(objects.find((o) => idOf(o) === 'DaemonSet/t1612d') as Yaml)[0] as Yaml;
    const cfg = resolveConfig({ env: containerEnv(c, objects, secrets()) });
    assert.equal(cfg.redisUrl, undefined);
    assert.equal(cfg.redisClusterNodes.length, 3);
    assert.equal(cfg.falcoGrpcAddress, '');
  });

  describe('monitoring', () => {
    let monitoring: Yaml[] = [];
    before(function () {
      if (!kubectl) this.skip();
      monitoring = kustomize(join(ROOT, MONITORING_DIR));
    });

    it('renders a ServiceMonitor, a PrometheusRule and the dashboard ConfigMap', () => {
      assert.deepEqual(monitoring.map(idOf).sort(), ['ConfigMap/t1612d-dashboard', 'PrometheusRule/t1612d', 'ServiceMonitor/t1612d']);
      for (const o of monitoring) assert.equal(map(o['metadata'], 'metadata')['namespace'], NAMESPACE);
    });

    it('the dashboard ConfigMap is a valid ConfigMap the Grafana sidecar picks up, holding the JSON file', async () => {
      const cm = monitoring.find((o) => o['kind'] === 'ConfigMap') as Yaml;
      await validateObject(cm);
      assert.equal(map(map(cm['metadata'], 'metadata')['labels'], 'labels')['grafana_dashboard'], '1');
      const data = map(cm['data'], 'data');
      const json = readFileSync(join(ROOT, MONITORING_DIR, 't1612d-dashboard.json'), 'utf8');
      assert.equal(data['t1612d-dashboard.json'], json);
      const dash = JSON.parse(json) as Yaml;
      assert.equal(typeof dash['uid'], 'string');
      assert.ok(Number(dash['schemaVersion']) >= 36);
    });

    // ServiceMonitor and PrometheusRule are CRDs of the Prometheus Operator: no schema in
    // kubernetes-models, so their shape is checked here, field by field that matters.
    it('the ServiceMonitor scrapes /metrics on the t1612d Service port and labels series by node', () => {
      const sm = monitoring.find((o) => o['kind'] === 'ServiceMonitor') as Yaml;
      assert.equal(sm['apiVersion'], 'monitoring.coreos.com/v1');
      assert.deepEqual(Object.keys(sm).sort(), ['apiVersion', 'kind', 'metadata', 'spec']);
      const spec = map(sm['spec'], 'spec');
      const svc = find('Service', 't1612d');
      assert.ok(labelsMatch(map(map(spec['selector'], 'selector')['matchLabels'], 'matchLabels'), map(map(svc['metadata'], 'metadata')['labels'], 'labels')));
      const endpoints = spec['endpoints'] as Yaml[];
      assert.equal(endpoints.length, 1);
      const ep = endpoints[0] as Yaml;
      const portNames = (map(svc['spec'], 'spec')['ports'] as Yaml[]).map((p) => p['name']);
      assert.ok(portNames.includes(ep['port']), 'endpoint port is a Service port name');
      assert.equal(ep['path'], '/metrics');
      assert.match(String(ep['interval']), /^\d+[sm]$/);
      for (const k of Object.keys(ep)) assert.ok(['port', 'path', 'interval', 'scrapeTimeout', 'relabelings', 'scheme'].includes(k), `endpoint field ${k}`);
      const relabel = (ep['relabelings'] as Yaml[]).find((r) => r['targetLabel'] === 'node');
      assert.deepEqual(relabel?.['sourceLabels'], ['__meta_kubernetes_pod_node_name']);
    });

    it('the PrometheusRule has groups of alerts with expr, for, labels and annotations', () => {
      const pr = monitoring.find((o) => o['kind'] === 'PrometheusRule') as Yaml;
      assert.equal(pr['apiVersion'], 'monitoring.coreos.com/v1');
      const groups = map(pr['spec'], 'spec')['groups'] as Yaml[];
      assert.ok(groups.length > 0);
      const names = new Set<string>();
      for (const g of groups) {
        assert.equal(typeof g['name'], 'string');
        for (const r of g['rules'] as Yaml[]) {
          for (const k of Object.keys(r)) assert.ok(['alert', 'expr', 'for', 'labels', 'annotations'].includes(k), `rule field ${k}`);
          assert.equal(typeof r['alert'], 'string');
          assert.ok(!names.has(String(r['alert'])), `alert ${String(r['alert'])} is unique`);
          names.add(String(r['alert']));
          assert.equal(typeof r['expr'], 'string');
          if (r['for'] !== undefined) assert.match(String(r['for']), /^\d+[smh]$/);
          for (const v of Object.values(map(r['labels'], 'labels'))) assert.equal(typeof v, 'string');
          for (const v of Object.values(map(r['annotations'], 'annotations'))) assert.equal(typeof v, 'string');
        }
      }
    });
  });
});
