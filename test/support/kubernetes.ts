/**
 * Checking the Kubernetes deployment without a cluster: rendering a kustomization with the
 * installed kubectl, validating objects against the Kubernetes OpenAPI schemas that the
 * `kubernetes-models` package ships (plus a check for fields the schemas do not know), reading
 * the metric names out of PromQL expressions, the shell commands the docs show, and the
 * environment a pod template gives its container.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import { parseAllDocuments } from 'yaml';
import { ROOT, map, type Yaml } from './compose.js';

export type { Yaml };

/** `kubectl` on PATH and its kustomize generation, or null when kubectl is absent. */
export interface Kubectl {
  /** Major version of the kustomize built into kubectl: 2 in kubectl <= 1.20, 5 today. */
  kustomizeMajor: number;
}

export function findKubectl(): Kubectl | null {
  const run = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8', timeout: 30_000 });
  if (run.error || run.status !== 0) return null;
  // kubectl >= 1.21 prints "Kustomize Version: v5.5.0"; 1.14–1.20 embed kustomize v2.0.3 and
  // print no such line.
  const m = /Kustomize Version:\s*v?(\d+)/.exec(run.stdout);
  return { kustomizeMajor: m ? Number(m[1]) : 2 };
}

/** `kubectl kustomize DIR`, parsed into its objects. */
export function kustomize(dir: string): Yaml[] {
  const run = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(run.error, undefined, `kubectl kustomize ${dir} ran`);
  assert.equal(run.status, 0, `kubectl kustomize ${dir} succeeds: ${run.stderr}`);
  return parseAllDocuments(run.stdout).map((doc, i) => {
    assert.equal(doc.errors.length, 0, `rendered document ${i} of ${dir} is YAML`);
    const obj: unknown = doc.toJS();
    assert.ok(typeof obj === 'object' && obj !== null && !Array.isArray(obj), `rendered document ${i} is an object`);
    return obj as Yaml;
  });
}

/** `Kind/name` of an object, for messages and lookups. */
export function idOf(obj: Yaml): string {
  const meta = obj['metadata'] as Yaml | undefined;
  return `${String(obj['kind'])}/${String(meta?.['name'])}`;
}

type SchemaValidate = ((data: unknown) => boolean) & { errors?: { instancePath: string; message?: string; keyword: string; params: unknown }[] | null };

/**
 * The compiled schema validator of an object's apiVersion and kind, from kubernetes-models'
 * `_schemas/IoK8sApi<Group><Version><Kind>` modules (core "v1" is group Core; a dotted group
 * contributes its first label: networking.k8s.io -> Networking).
 */
async function schemaFor(apiVersion: string, kind: string): Promise<SchemaValidate> {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['core', apiVersion];
  const cap = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);
  const name = `IoK8sApi${cap((group ?? '').split('.')[0] ?? '')}${cap(version ?? '')}${kind}`;
  const mod = (await import(`kubernetes-models/_schemas/${name}`)) as { validate?: SchemaValidate };
  assert.equal(typeof mod.validate, 'function', `kubernetes-models has a schema for ${apiVersion} ${kind}`);
  return mod.validate as SchemaValidate;
}

/** Validate one object against the Kubernetes schema of its apiVersion and kind. */
export async function validateObject(obj: Yaml): Promise<void> {
  validateAgainst(await schemaFor(String(obj['apiVersion']), String(obj['kind'])), obj, idOf(obj));
}

/** Validate a value against one named kubernetes-models schema, e.g. `IoK8sApiCoreV1EnvVar`. */
export async function validateAs(schema: string, value: unknown, what: string): Promise<void> {
  const mod = (await import(`kubernetes-models/_schemas/${schema}`)) as { validate?: SchemaValidate };
  assert.equal(typeof mod.validate, 'function', `kubernetes-models has the schema ${schema}`);
  validateAgainst(mod.validate as SchemaValidate, value, what);
}

/**
 * The schemas allow unknown properties (a misspelt `internalTrafficPolicy` would pass), so the
 * value is read through proxies that record which keys the validator looked at: a key it never
 * read in an object whose keys it never listed (maps such as labels are listed) is a field
 * Kubernetes does not have.
 */
function validateAgainst(validate: SchemaValidate, obj: unknown, what: string): void {
  const tracked: { target: Yaml; read: Set<string>; listed: boolean; path: string }[] = [];
  const wrap = (value: unknown, path: string): unknown => {
    if (typeof value !== 'object' || value === null) return value;
    const rec = { target: value as Yaml, read: new Set<string>(), listed: false, path };
    tracked.push(rec);
    const children = new Map<string, unknown>();
    return new Proxy(value as Yaml, {
      get(target, key, receiver) {
        if (typeof key !== 'string') return Reflect.get(target, key, receiver) as unknown;
        rec.read.add(key);
        if (!children.has(key)) children.set(key, wrap(target[key], `${path}/${key}`));
        return children.get(key);
      },
      has(target, key) {
        if (typeof key === 'string') rec.read.add(key);
        return Reflect.has(target, key);
      },
      ownKeys(target) {
        rec.listed = true;
        return Reflect.ownKeys(target);
      },
    });
  };
  const ok = validate(wrap(obj, ''));
  const errors = (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.keyword} ${JSON.stringify(e.params)}`);
  assert.ok(ok, `${what} matches the Kubernetes schema: ${errors.join('; ')}`);
  const unknown: string[] = [];
  for (const rec of tracked) {
    if (Array.isArray(rec.target) || rec.listed) continue;
    for (const key of Object.keys(rec.target)) if (!rec.read.has(key)) unknown.push(`${rec.path}/${key}`);
  }
  assert.deepEqual(unknown, [], `${what} has no fields unknown to Kubernetes`);
}

/** PromQL words that are not metric names: functions, aggregations, operators, modifiers. */
const PROMQL_WORDS = new Set([
  'sum', 'min', 'max', 'avg', 'count', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'group', 'count_values',
  'rate', 'irate', 'increase', 'delta', 'idelta', 'deriv', 'changes', 'resets', 'absent', 'absent_over_time',
  'histogram_quantile', 'avg_over_time', 'max_over_time', 'min_over_time', 'sum_over_time', 'count_over_time',
  'last_over_time', 'clamp_min', 'clamp_max', 'abs', 'ceil', 'floor', 'round', 'vector', 'scalar', 'time',
  'and', 'or', 'unless', 'bool', 'offset',
]);
/** Clauses followed by a parenthesised list of label names. */
const GROUPING = /\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g;

/** What a PromQL expression refers to: metric (series) names and label names. */
export interface PromqlRefs {
  metrics: string[];
  labels: string[];
}

export function promqlRefs(expr: string): PromqlRefs {
  const labels: string[] = [];
  let rest = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""'); // string literals (label values)
  rest = rest.replace(GROUPING, (_m, _kw: string, list: string) => {
    labels.push(...list.split(',').map((l) => l.trim()).filter(Boolean));
    return ' ';
  });
  rest = rest.replace(/\{([^}]*)\}/g, (_m, matchers: string) => {
    for (const m of matchers.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)) labels.push(m[1] ?? '');
    return ' ';
  });
  rest = rest.replace(/\[[^\]]*\]/g, ' '); // range selectors, Grafana's $__rate_interval
  const metrics = [...rest.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)]
    .map((m) => m[0])
    .filter((w) => !PROMQL_WORDS.has(w) && !/^\d/.test(w));
  return { metrics, labels };
}

/** A series name the daemon exports, with the labels it can carry. */
export interface ExportedSeries {
  metric: string;
  type: string;
  labels: Set<string>;
}

/**
 * Every series name a registry exposes, read from its Prometheus text (`# TYPE` lines) the way
 * a scraper sees it: a histogram `h` is scraped as `h_bucket` (with `le`), `h_sum` and
 * `h_count`; a summary as `s` (with `quantile`), `s_sum` and `s_count`.
 */
export async function exportedSeries(registry: Registry): Promise<Map<string, ExportedSeries>> {
  const text = await registry.metrics();
  const labelsOf = new Map<string, Set<string>>();
  for (const metric of registry.getMetricsAsArray()) {
    // prom-client keeps the label names a metric was declared with on the instance; its
    // typings do not expose them.
    const declared = (metric as unknown as { labelNames?: readonly string[] }).labelNames;
    assert.ok(Array.isArray(declared), `prom-client still exposes labelNames on ${metric.name}`);
    labelsOf.set(metric.name, new Set(declared));
  }
  const out = new Map<string, ExportedSeries>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, metric = '', type = ''] = m;
    const labels = labelsOf.get(metric) ?? new Set<string>();
    const add = (name: string, extra: string[] = []): void => {
      out.set(name, { metric, type, labels: new Set([...labels, ...extra]) });
    };
    if (type === 'histogram') {
      add(`${metric}_bucket`, ['le']);
      add(`${metric}_sum`);
      add(`${metric}_count`);
    } else if (type === 'summary') {
      add(metric, ['quantile']);
      add(`${metric}_sum`);
      add(`${metric}_count`);
    } else {
      add(metric);
    }
  }
  return out;
}

// ---------------------------------------------------------------- docs commands

/** Shell words of one command line: quotes removed, `$(…)` kept as written. */
export function shellWords(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quote: string | null = null;
  let started = false;
  for (const ch of line) {
    if (quote) {
      if (ch === quote) quote = null;
      else cur += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      started = true;
    } else if (/\s/.test(ch)) {
      if (started || cur) out.push(cur);
      cur = '';
      started = false;
    } else {
      cur += ch;
    }
  }
  if (started || cur) out.push(cur);
  return out;
}

/** Commands of a sh block: comments dropped, `\` continuations joined. */
export function shellCommands(block: string): string[][] {
  return block
    .replace(/\\\n\s*/g, ' ')
    .split('\n')
    .map((l) => l.replace(/\s+#\s.*$/, '').trim())
    .filter((l) => l && !l.startsWith('#'))
    .map(shellWords);
}

/** Value of `--flag VALUE`, `-f VALUE` or `--flag=VALUE`; every occurrence. */
export function flagValues(cmd: string[], ...names: string[]): string[] {
  const out: string[] = [];
  cmd.forEach((w, i) => {
    for (const n of names) {
      if (w === n && cmd[i + 1] !== undefined) out.push(cmd[i + 1] as string);
      else if (w.startsWith(`${n}=`)) out.push(w.slice(n.length + 1));
    }
  });
  return out;
}

// ---------------------------------------------------------------- pod templates

/** Pod template spec of a workload. */
export function podSpec(obj: Yaml): Yaml {
  return map(map(map(obj['spec'], 'spec')['template'], 'template')['spec'], `${idOf(obj)} pod spec`);
}

export function containers(obj: Yaml): Yaml[] {
  return podSpec(obj)['containers'] as Yaml[];
}

/**
 * The environment the kubelet would give a container: envFrom ConfigMaps, then env in
 * order with `$(VAR)` expanded from earlier entries; Secret values are stand-ins, optional
 * Secret keys absent, fieldRefs resolved to a node name.
 */
export function containerEnv(c: Yaml, objects: Yaml[], secrets: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of (c['envFrom'] as Yaml[] | undefined) ?? []) {
    const name = String(map(from['configMapRef'], 'configMapRef')['name']);
    const cm = objects.find((o) => o['kind'] === 'ConfigMap' && map(o['metadata'], 'metadata')['name'] === name);
    assert.ok(cm, `ConfigMap ${name} is rendered`);
    for (const [k, v] of Object.entries(map(cm['data'], 'data'))) env[k] = String(v);
  }
  for (const e of (c['env'] as Yaml[] | undefined) ?? []) {
    const name = String(e['name']);
    if (e['value'] !== undefined) {
      env[name] = String(e['value']).replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, v: string) => env[v] ?? whole);
      continue;
    }
    const from = map(e['valueFrom'], `${name} valueFrom`);
    if (from['fieldRef']) env[name] = 'node-a';
    else {
      const ref = map(from['secretKeyRef'], `${name} secretKeyRef`);
      const value = secrets[String(ref['key'])];
      if (value !== undefined) env[name] = value;
      else assert.equal(ref['optional'], true, `${name}: key ${String(ref['key'])} is created or optional`);
    }
  }
  return env;
}

/** Every secretKeyRef in the pod templates: [secret, key, optional]. */
export function secretRefs(objects: Yaml[]): [string, string, boolean][] {
  const out: [string, string, boolean][] = [];
  for (const o of objects.filter((x) => x['kind'] === 'DaemonSet' || x['kind'] === 'StatefulSet')) {
    for (const c of containers(o)) {
      for (const e of (c['env'] as Yaml[] | undefined) ?? []) {
        const ref = (e['valueFrom'] as Yaml | undefined)?.['secretKeyRef'] as Yaml | undefined;
        if (ref) out.push([String(ref['name']), String(ref['key']), ref['optional'] === true]);
      }
    }
  }
  return out;
}

export function labelsMatch(selector: Yaml, labels: Yaml): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** Bytes of a Kubernetes memory quantity (Mi/Gi/M/G). */
export function bytes(q: string): number {
  const m = /^(\d+)(Ki|Mi|Gi|k|M|G)?$/.exec(q);
  assert.ok(m, `memory quantity ${q}`);
  const unit = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, k: 1e3, M: 1e6, G: 1e9 }[m[2] ?? ''] ?? 1;
  return Number(m[1]) * unit;
}

/**
 * Render an overlay shown in the docs as it would sit in a checkout:
 * `<tmp>/overlays/<name>/kustomization.yaml` beside a link to the repository's deploy/.
 */
export function renderOverlay(name: string, kustomization: string): Yaml[] {
  const tmp = mkdtempSync(join(tmpdir(), 't1612d-k8s-'));
  try {
    mkdirSync(join(tmp, 'overlays', name), { recursive: true });
    symlinkSync(join(ROOT, 'deploy'), join(tmp, 'deploy'));
    writeFileSync(join(tmp, 'overlays', name, 'kustomization.yaml'), kustomization);
    return kustomize(join(tmp, 'overlays', name));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
