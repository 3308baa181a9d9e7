/**
 * The Dockerfile and .dockerignore, checked without a Docker engine: a pinned multi-stage
 * Node 20 build that ships production dependencies only, copies what the daemon reads at run
 * time (and nothing .dockerignore hides), and runs non-root under tini.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NODE_FLAGS } from '../src/ops/heap.js';
import { ROOT } from './support/compose.js';

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

  it('needs no frontend image: no `# syntax=` line, so BuildKit builds offline with its built-in parser', () => {
    const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    assert.doesNotMatch(text, /^#\s*syntax\s*=/im, 'a syntax directive makes BuildKit pull its frontend image from a registry');
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
    // node gets the daemon's heap flags, before the script.
    assert.deepEqual(entrypoint.slice(entrypoint.indexOf('node') + 1, entrypoint.indexOf('/app/bin/t1612d.js')), [...NODE_FLAGS]);
    assert.deepEqual(JSON.parse(last('CMD') ?? 'null'), ['run']);
    assert.ok(final.steps.some((i) => i.op === 'RUN' && /install\b.*\btini\b/.test(i.args)), 'tini is installed');
  });
});
