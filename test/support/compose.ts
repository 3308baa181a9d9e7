/**
 * Reading the deployment files in tests without a Docker engine: YAML loading with shape
 * checks, compose variable interpolation, and the short volume/environment/image syntax the
 * compose files use.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';

/** The repository root. */
export const ROOT = join(import.meta.dirname, '..', '..');

export type Yaml = Record<string, unknown>;

function isMap(v: unknown): v is Yaml {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function readYaml(rel: string): Yaml {
  const doc: unknown = parseYaml(readFileSync(join(ROOT, rel), 'utf8'));
  assert.ok(isMap(doc), `${rel} is a YAML mapping`);
  return doc;
}

export function map(v: unknown, what: string): Yaml {
  assert.ok(isMap(v), `${what} is a mapping`);
  return v;
}

export function strings(v: unknown, what: string): string[] {
  assert.ok(Array.isArray(v) && v.every((x) => typeof x === 'string'), `${what} is a list of strings`);
  return v as string[];
}

/**
 * Compose variable interpolation as `docker compose` does it for the forms these files use:
 * `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}` (fails when unset or empty,
 * as compose refuses to start) and `$$`. `env` stands for the shell plus .env.
 */
export function interpolate(text: string, env: Record<string, string> = {}): string {
  return text.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}/g, (whole, name?: string, op?: string, def?: string) => {
    if (whole === '$$') return '$';
    const value = env[name ?? ''];
    if (op === ':-') return value === undefined || value === '' ? (def ?? '') : value;
    if (op === '-') return value === undefined ? (def ?? '') : value;
    if ((op === ':?' && (value === undefined || value === '')) || (op === '?' && value === undefined)) {
      throw new Error(`required variable ${name} is missing a value: ${def ?? ''}`);
    }
    return value ?? '';
  });
}

export interface Mount {
  source: string;
  target: string;
  readOnly: boolean;
  /** A named volume rather than a host path. */
  named: boolean;
}

/** Short volume syntax `SOURCE:TARGET[:MODE]`. */
export function mounts(service: Yaml): Mount[] {
  return strings(service['volumes'] ?? [], 'volumes').map((spec) => {
    const [source = '', target = '', mode = ''] = spec.split(':');
    return { source, target, readOnly: mode.split(',').includes('ro'), named: !/^[./~]/.test(source) };
  });
}

export function mountAt(service: Yaml, target: string): Mount | undefined {
  return mounts(service).find((m) => m.target === target);
}

export function environment(service: Yaml, env: Record<string, string> = {}): Record<string, string> {
  const raw = map(service['environment'], 'environment');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) out[k] = interpolate(v === null ? '' : String(v), env);
  return out;
}

/** `host:port` -> port; `[::]:2802` too. */
export function portOf(address: string): number {
  const m = /:(\d+)$/.exec(address);
  assert.ok(m, `${address} has a port`);
  return Number(m[1]);
}

/** Semver-ish tag -> [major, minor, patch]; undefined when it is not a release tag. */
export function releaseOf(tag: string): [number, number, number] | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)(?:-[A-Za-z0-9.]+)?$/.exec(tag);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

export function splitImage(image: string): { name: string; tag: string } {
  const at = image.lastIndexOf(':');
  assert.ok(at > 0 && !image.slice(at).includes('/'), `${image} names a tag`);
  return { name: image.slice(0, at), tag: image.slice(at + 1) };
}

/** Finds keys anywhere in a YAML tree. */
export function keysDeep(v: unknown, out: string[] = []): string[] {
  if (Array.isArray(v)) for (const x of v) keysDeep(x, out);
  else if (isMap(v))
    for (const [k, x] of Object.entries(v)) {
      out.push(k);
      keysDeep(x, out);
    }
  return out;
}
