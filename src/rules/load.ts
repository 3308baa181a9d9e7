/**
 * Reading Falco rules files for the checker: file-list expansion in Falco's load order, YAML
 * parsing with line numbers (the `yaml` package's Document API with a LineCounter), and the
 * per-item shape checks Falco's rule reader makes (known keys per item type, required keys,
 * value types, priorities, override operations).
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { LineCounter, isMap, isScalar, isSeq, parseAllDocuments } from 'yaml';
import type { Node as YamlNode } from 'yaml';
import { IDENTIFIER_RE } from './condition.js';

/** One problem found in a rules file; `line` is 1-based (0 when no position applies). */
export interface Diagnostic {
  file: string;
  line: number;
  message: string;
  rule?: string;
}

export type ItemKind = 'rule' | 'macro' | 'list' | 'required_engine_version' | 'required_plugin_versions';

/** A top-level item of a rules file, as plain data plus the line of each key. */
export interface ParsedItem {
  kind: ItemKind;
  /** rule/macro/list name ('' for version items). */
  name: string;
  file: string;
  line: number;
  data: Record<string, unknown>;
  /** 1-based line of each key's value. */
  lines: Record<string, number>;
  /** False when a shape error was reported: the item only reserves its name. */
  valid: boolean;
}

/** Falco's priorities (parse_priority is case-insensitive and also takes "info"). */
export const PRIORITY_NAMES = new Set([
  'emergency', 'alert', 'critical', 'error', 'warning', 'notice', 'informational', 'info', 'debug',
]);

const RULE_KEYS = new Set([
  'rule', 'desc', 'condition', 'output', 'priority', 'source', 'enabled', 'tags', 'exceptions',
  'override', 'append', 'warn_evttypes', 'skip-if-unknown-filter', 'capture', 'capture_duration',
  'capture_events', 'capture_filesize',
]);
const MACRO_KEYS = new Set(['macro', 'condition', 'override', 'append']);
const LIST_KEYS = new Set(['list', 'items', 'override', 'append']);
const EXCEPTION_KEYS = new Set(['name', 'fields', 'comps', 'values']);
const PLUGIN_KEYS = new Set(['name', 'version', 'alternatives']);

/** Which rule keys an override may append to / replace (Falco rule_loader_reader). */
export const RULE_APPENDABLE = new Set(['condition', 'output', 'desc', 'tags', 'exceptions']);
export const RULE_REPLACEABLE = new Set([
  'condition', 'output', 'desc', 'priority', 'tags', 'exceptions', 'enabled', 'warn_evttypes',
  'skip-if-unknown-filter', 'capture', 'capture_duration', 'capture_events', 'capture_filesize',
]);

const BOOL_WORDS = new Set(['true', 'false', 'yes', 'no', 'on', 'off', 'y', 'n']);
const SEMVER_RE = /^\d+\.\d+\.\d+$/;

/**
 * Expand arguments to files in Falco's load order: a directory contributes its *.yaml / *.yml
 * files sorted by name (not recursive, so examples/ is only loaded when named).
 */
export async function expandRuleFiles(paths: readonly string[]): Promise<{ files: string[]; diagnostics: Diagnostic[] }> {
  const files: string[] = [];
  const diagnostics: Diagnostic[] = [];
  for (const p of paths) {
    let st;
    try {
      st = await stat(p);
    } catch {
      diagnostics.push({ file: p, line: 0, message: 'no such file or directory' });
      continue;
    }
    if (st.isDirectory()) {
      const entries = (await readdir(p, { withFileTypes: true }))
        .filter((e) => e.isFile() && /\.ya?ml$/.test(e.name))
        .map((e) => e.name)
        .sort();
      if (entries.length === 0) diagnostics.push({ file: p, line: 0, message: 'directory holds no .yaml/.yml files' });
      files.push(...entries.map((e) => join(p, e)));
    } else files.push(p);
  }
  return { files, diagnostics };
}

function typeName(v: unknown): string {
  if (v === null || v === undefined) return 'empty';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `a ${typeof v}`;
}

function isScalarValue(v: unknown): v is string | number | boolean {
  return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
}

/** Parse one file into items; YAML errors stop the file, as in Falco. */
export async function parseRulesFile(file: string): Promise<{ items: ParsedItem[]; diagnostics: Diagnostic[] }> {
  const diagnostics: Diagnostic[] = [];
  const items: ParsedItem[] = [];
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    diagnostics.push({ file, line: 0, message: `cannot read: ${(err as Error).message}` });
    return { items, diagnostics };
  }
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter, prettyErrors: true });
  const docList = Array.isArray(docs) ? docs : [];
  const lineOf = (offset: number | undefined): number => (offset === undefined ? 0 : lineCounter.linePos(offset).line);
  for (const doc of docList) {
    for (const e of doc.errors) {
      const line = e.linePos?.[0].line ?? lineOf(e.pos[0]);
      const first = (e.message.split('\n')[0] ?? e.code).replace(/ at line \d+, column \d+:?$/, '');
      diagnostics.push({ file, line, message: `YAML error: ${first}` });
    }
  }
  if (diagnostics.length > 0) return { items, diagnostics };

  for (const doc of docList) {
    const root = doc.contents;
    if (root === null || (isScalar(root) && (root.value === null || root.value === ''))) continue;
    if (!isSeq(root)) {
      diagnostics.push({ file, line: lineOf(root.range?.[0]), message: 'rules content must be a YAML list of items' });
      continue;
    }
    for (const node of root.items) {
      const itemNode = node as YamlNode | null;
      if (itemNode === null || (isScalar(itemNode) && itemNode.value === null)) continue;
      const line = lineOf(itemNode.range?.[0]);
      if (!isMap(itemNode)) {
        diagnostics.push({ file, line, message: 'item must be a mapping (rule, macro, list, required_engine_version or required_plugin_versions)' });
        continue;
      }
      const data: Record<string, unknown> = {};
      const lines: Record<string, number> = {};
      for (const pair of itemNode.items) {
        const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
        const valueNode = pair.value as YamlNode | null;
        data[key] = valueNode === null ? null : valueNode.toJS(doc);
        const keyNode = pair.key as YamlNode | null;
        lines[key] = lineOf(valueNode?.range?.[0] ?? keyNode?.range?.[0]) || line;
      }
      const item = classify(file, line, data, lines, diagnostics);
      if (item) items.push(item);
    }
  }
  return { items, diagnostics };
}

function classify(
  file: string,
  line: number,
  data: Record<string, unknown>,
  lines: Record<string, number>,
  diagnostics: Diagnostic[],
): ParsedItem | undefined {
  const kind: ItemKind | undefined = (
    ['required_engine_version', 'required_plugin_versions', 'list', 'macro', 'rule'] as const
  ).find((k) => k in data);
  if (!kind) {
    const keys = Object.keys(data).join(', ');
    diagnostics.push({ file, line, message: `unknown item (keys: ${keys}): expected rule, macro, list, required_engine_version or required_plugin_versions` });
    return undefined;
  }
  const before = diagnostics.length;
  const rawName = data[kind];
  const name = kind === 'rule' || kind === 'macro' || kind === 'list' ? (isScalarValue(rawName) ? String(rawName) : '') : '';
  const item: ParsedItem = { kind, name, file, line, data, lines, valid: true };
  const err = (key: string | undefined, message: string): void => {
    diagnostics.push({ file, line: key ? (lines[key] ?? line) : line, message, ...(kind === 'rule' && name ? { rule: name } : {}) });
  };
  const label = name ? `${kind} '${name}'` : kind;

  switch (kind) {
    case 'required_engine_version': {
      const v = data[kind];
      if (typeof v === 'number') {
        if (!Number.isInteger(v) || v < 0) err(kind, `required_engine_version: ${v} is not a non-negative integer or "x.y.z" version`);
      } else if (typeof v !== 'string' || !SEMVER_RE.test(v)) {
        err(kind, `required_engine_version: ${JSON.stringify(v)} is not a "x.y.z" semver string`);
      }
      checkUnknownKeys(data, new Set([kind]), label, err);
      break;
    }
    case 'required_plugin_versions': {
      const v = data[kind];
      if (!Array.isArray(v)) err(kind, `required_plugin_versions must be a list, got ${typeName(v)}`);
      else {
        v.forEach((p, i) => {
          if (typeof p !== 'object' || p === null || Array.isArray(p)) {
            err(kind, `required_plugin_versions[${i}] must be a mapping with name and version`);
            return;
          }
          const entry = p as Record<string, unknown>;
          for (const k of Object.keys(entry)) if (!PLUGIN_KEYS.has(k)) err(kind, `required_plugin_versions[${i}]: unknown key '${k}'`);
          for (const k of ['name', 'version']) {
            if (typeof entry[k] !== 'string' || entry[k] === '') err(kind, `required_plugin_versions[${i}]: missing required key '${k}' (string)`);
          }
        });
      }
      checkUnknownKeys(data, new Set([kind]), label, err);
      break;
    }
    case 'list':
      checkName(rawName, 'list', err);
      checkUnknownKeys(data, LIST_KEYS, label, err);
      checkOverride(data, new Set(['items']), new Set(['items']), label, err);
      checkBool(data, 'append', label, err);
      if (!('items' in data)) err(undefined, `${label}: missing required key 'items'`);
      else if (!Array.isArray(data['items'])) err('items', `${label}: 'items' must be a list, got ${typeName(data['items'])}`);
      else if (!(data['items'] as unknown[]).every((x) => typeof x === 'string' || typeof x === 'number')) {
        err('items', `${label}: every entry of 'items' must be a string or number`);
      }
      break;
    case 'macro':
      checkName(rawName, 'macro', err);
      if (typeof rawName === 'string' && rawName !== '' && !IDENTIFIER_RE.test(rawName)) {
        err('macro', `macro name '${rawName}' is not an identifier (letters, digits, '_', starting with a letter)`);
      }
      checkUnknownKeys(data, MACRO_KEYS, label, err);
      checkOverride(data, new Set(['condition']), new Set(['condition']), label, err);
      checkBool(data, 'append', label, err);
      checkString(data, 'condition', true, label, err);
      break;
    case 'rule':
      checkName(rawName, 'rule', err);
      checkUnknownKeys(data, RULE_KEYS, label, err);
      checkRule(data, label, err);
      break;
  }
  if (diagnostics.length > before) item.valid = false;
  return item;
}

type Reporter = (key: string | undefined, message: string) => void;

function checkName(v: unknown, kind: string, err: Reporter): void {
  if (typeof v !== 'string' || v.trim() === '') err(kind, `${kind} name must be a non-empty string, got ${typeName(v)}`);
}

function checkUnknownKeys(data: Record<string, unknown>, allowed: ReadonlySet<string>, label: string, err: Reporter): void {
  for (const k of Object.keys(data)) {
    if (!allowed.has(k)) err(k, `${label}: unknown key '${k}' (allowed: ${[...allowed].join(', ')})`);
  }
}

function checkString(data: Record<string, unknown>, key: string, required: boolean, label: string, err: Reporter): void {
  if (!(key in data)) {
    if (required) err(undefined, `${label}: missing required key '${key}'`);
    return;
  }
  const v = data[key];
  if (!isScalarValue(v)) err(key, `${label}: '${key}' must be a string, got ${typeName(v)}`);
  else if (String(v).trim() === '') err(key, `${label}: '${key}' must not be empty`);
}

function checkBool(data: Record<string, unknown>, key: string, label: string, err: Reporter): void {
  if (!(key in data)) return;
  const v = data[key];
  if (typeof v === 'boolean') return;
  if (typeof v === 'string' && BOOL_WORDS.has(v.toLowerCase())) return;
  err(key, `${label}: '${key}' must be true or false, got ${typeName(v)}${isScalarValue(v) ? ` ${JSON.stringify(v)}` : ''}`);
}

function checkInt(data: Record<string, unknown>, key: string, label: string, err: Reporter): void {
  if (!(key in data)) return;
  const v = data[key];
  if (typeof v !== 'number' || !Number.isInteger(v)) err(key, `${label}: '${key}' must be an integer, got ${typeName(v)}`);
}

function checkOverride(
  data: Record<string, unknown>,
  appendable: ReadonlySet<string>,
  replaceable: ReadonlySet<string>,
  label: string,
  err: Reporter,
): void {
  if (!('override' in data)) return;
  const o = data['override'];
  if (typeof o !== 'object' || o === null || Array.isArray(o) || Object.keys(o).length === 0) {
    err('override', `${label}: 'override' must be a non-empty mapping of key: append|replace`);
    return;
  }
  if ('append' in data && data['append'] !== false) {
    err('override', `${label}: 'override' and 'append' cannot be used together`);
  }
  for (const [k, op] of Object.entries(o as Record<string, unknown>)) {
    if (op === 'append') {
      if (!appendable.has(k)) err('override', `${label}: key '${k}' cannot be appended to${replaceable.has(k) ? ", use 'replace'" : ''}`);
    } else if (op === 'replace') {
      if (!replaceable.has(k)) err('override', `${label}: key '${k}' cannot be overridden`);
    } else {
      err('override', `${label}: invalid override operation ${JSON.stringify(op)} for '${k}' (append or replace)`);
    }
    if (!(k in data)) err('override', `${label}: an override for '${k}' was specified but '${k}' is not defined`);
  }
}

function checkExceptions(data: Record<string, unknown>, label: string, err: Reporter): void {
  if (!('exceptions' in data) || data['exceptions'] === null) return;
  const exs = data['exceptions'];
  if (!Array.isArray(exs)) {
    err('exceptions', `${label}: 'exceptions' must be a list, got ${typeName(exs)}`);
    return;
  }
  const seen = new Set<string>();
  exs.forEach((ex, i) => {
    if (typeof ex !== 'object' || ex === null || Array.isArray(ex)) {
      err('exceptions', `${label}: exceptions[${i}] must be a mapping`);
      return;
    }
    const e = ex as Record<string, unknown>;
    for (const k of Object.keys(e)) if (!EXCEPTION_KEYS.has(k)) err('exceptions', `${label}: exceptions[${i}]: unknown key '${k}'`);
    if (typeof e['name'] !== 'string' || e['name'] === '') err('exceptions', `${label}: exceptions[${i}]: missing required key 'name'`);
    else if (seen.has(e['name'])) err('exceptions', `${label}: exception names must be unique ('${e['name']}')`);
    else seen.add(e['name']);
    const fields = e['fields'];
    if (fields !== undefined && typeof fields !== 'string' && !(Array.isArray(fields) && fields.every((f) => typeof f === 'string'))) {
      err('exceptions', `${label}: exceptions[${i}].fields must be a field name or a list of field names`);
    }
    const comps = e['comps'];
    if (comps !== undefined && typeof comps !== 'string' && !Array.isArray(comps)) {
      err('exceptions', `${label}: exceptions[${i}].comps must be an operator or a list of operators`);
    }
    if (Array.isArray(fields) && Array.isArray(comps) && comps.length !== fields.length) {
      err('exceptions', `${label}: exceptions[${i}]: fields and comps must have the same length`);
    }
    if (e['values'] !== undefined && !Array.isArray(e['values'])) err('exceptions', `${label}: exceptions[${i}].values must be a list`);
    if (Array.isArray(fields) && Array.isArray(e['values'])) {
      (e['values'] as unknown[]).forEach((t, j) => {
        if (!Array.isArray(t) || t.length !== fields.length) {
          err('exceptions', `${label}: exceptions[${i}].values[${j}] must be a list of ${fields.length} values (one per field)`);
        }
      });
    }
  });
}

function checkRule(data: Record<string, unknown>, label: string, err: Reporter): void {
  checkOverride(data, RULE_APPENDABLE, RULE_REPLACEABLE, label, err);
  for (const k of ['append', 'enabled', 'warn_evttypes', 'skip-if-unknown-filter', 'capture']) checkBool(data, k, label, err);
  for (const k of ['capture_duration', 'capture_events', 'capture_filesize']) checkInt(data, k, label, err);
  for (const k of ['desc', 'condition', 'output', 'source']) checkString(data, k, false, label, err);
  if ('tags' in data && !(Array.isArray(data['tags']) && data['tags'].every((t) => isScalarValue(t)))) {
    const v = data['tags'];
    err('tags', `${label}: 'tags' must be a list of strings${Array.isArray(v) ? '' : `, got ${typeName(v)}`}`);
  }
  if ('priority' in data) {
    const p = data['priority'];
    if (!isScalarValue(p) || !PRIORITY_NAMES.has(String(p).toLowerCase())) {
      err('priority', `${label}: invalid priority ${JSON.stringify(p)} (one of EMERGENCY, ALERT, CRITICAL, ERROR, WARNING, NOTICE, INFORMATIONAL, DEBUG)`);
    }
  }
  checkExceptions(data, label, err);

  const isOverride = 'override' in data;
  const isAppend = data['append'] === true || (typeof data['append'] === 'string' && /^(true|yes|on|y)$/i.test(data['append']));
  if (isOverride) {
    const o = data['override'];
    if (typeof o === 'object' && o !== null && !Array.isArray(o)) {
      for (const k of Object.keys(data)) {
        if ((RULE_APPENDABLE.has(k) || RULE_REPLACEABLE.has(k)) && !(k in (o as Record<string, unknown>))) {
          err(k, `${label}: unexpected key '${k}': no corresponding entry under 'override'`);
        }
      }
    }
    return;
  }
  if (isAppend) return;
  const definesRule = ['condition', 'output', 'desc', 'priority'].some((k) => k in data);
  if (!definesRule) {
    if (!('enabled' in data)) err(undefined, `${label}: missing required keys 'condition', 'output', 'desc', 'priority' (or 'enabled' to toggle an existing rule)`);
    return;
  }
  for (const k of ['condition', 'output', 'desc', 'priority']) {
    if (!(k in data)) err(undefined, `${label}: missing required key '${k}'`);
  }
}
