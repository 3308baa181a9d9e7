/**
 * `t1612d rules check [FILES…]`: validate Falco rules files offline. Loads the files in
 * Falco's order, reports `file:line: message` for YAML, shape, reference and t1612 output
 * problems, and, when sysdig is available, compiles every rule condition with macros and lists
 * expanded. Ends with one summary line; exit code 1 on any error.
 */
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeError } from '../model/errors.js';
import { expandMacros, resolveLists, substituteFields } from './condition.js';
import { NEWER_FIELD_STANDINS } from './known-names.js';
import { expandRuleFiles, parseRulesFile } from './load.js';
import type { Diagnostic, ParsedItem } from './load.js';
import { collect, macroBodies, resolvedLists, ruleCondition } from './semantics.js';
import { compileFilter, findExecutable, mapLimit } from './sysdig.js';

export type { Diagnostic } from './load.js';

/** Options of a check. */
export interface CheckOptions {
  /**
   * sysdig binary used to compile conditions: a path or command name, or `false` to skip.
   * @default 'sysdig' looked up on PATH; skipped when absent
   */
  sysdig?: string | false;
  /**
   * sysdig processes run at once.
   * @default 2
   */
  concurrency?: number;
}

/** What a check found. */
export interface RulesReport {
  files: string[];
  diagnostics: Diagnostic[];
  rules: number;
  lists: number;
  macros: number;
  sysdig:
    | { used: true; path: string; compiled: number }
    | { used: false; reason: string };
}

/** The project's falco-rules/ directory, found upward from this module (src/ or dist/). */
export function defaultRulesDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'falco-rules');
    if (existsSync(candidate) && existsSync(join(dir, 'package.json'))) return candidate;
    dir = dirname(dir);
  }
  return resolve('falco-rules');
}

/** Check rules files (directories expand to their *.yaml/*.yml files, sorted). */
export async function checkRules(paths: readonly string[], options: CheckOptions = {}): Promise<RulesReport> {
  const diagnostics: Diagnostic[] = [];
  const expanded = await expandRuleFiles(paths);
  diagnostics.push(...expanded.diagnostics);
  const items: ParsedItem[] = [];
  for (const file of expanded.files) {
    const parsed = await parseRulesFile(file);
    diagnostics.push(...parsed.diagnostics);
    items.push(...parsed.items);
  }
  const collected = collect(items, diagnostics);
  // Count names, including items that failed validation: they were still written.
  const count = (kind: ParsedItem['kind']): number => new Set(items.filter((i) => i.kind === kind).map((i) => i.name)).size;
  const report: RulesReport = {
    files: expanded.files,
    diagnostics,
    rules: count('rule'),
    lists: count('list'),
    macros: count('macro'),
    sysdig: { used: false, reason: 'disabled' },
  };

  if (options.sysdig === false) return finish(report, expanded.files);
  const sysdig = await findExecutable(options.sysdig ?? 'sysdig');
  if (!sysdig) {
    report.sysdig = { used: false, reason: `${options.sysdig ?? 'sysdig'} not found` };
    return finish(report, expanded.files);
  }

  const lists = resolvedLists(collected);
  const bodies = macroBodies(collected, lists);
  const targets = [...collected.rules.values()].filter(
    (r) => !collected.brokenRules.has(r.name) && r.source === 'syscall',
  );
  const results = await mapLimit(targets, options.concurrency ?? 2, async (r) => {
    const cycles = new Set<string>();
    const cond = expandMacros(resolveLists(ruleCondition(r), lists), bodies, (m) => cycles.add(m));
    if (cycles.size > 0) return { r, ok: false as const, message: `macro recursion through '${[...cycles].join("', '")}'` };
    try {
      const res = await compileFilter(sysdig, substituteFields(cond, NEWER_FIELD_STANDINS));
      return res.ok ? { r, ok: true as const } : { r, ok: false as const, message: `sysdig: ${res.message}` };
    } catch (err) {
      return { r, ok: false as const, message: `sysdig failed: ${describeError(err)}` };
    }
  });
  for (const res of results) {
    if (res.ok) continue;
    const frag = res.r.fragments[0];
    diagnostics.push({
      file: frag?.file ?? res.r.file,
      line: frag?.line ?? res.r.line,
      rule: res.r.name,
      message: `rule '${res.r.name}': condition does not compile: ${res.message}`,
    });
  }
  report.sysdig = { used: true, path: sysdig, compiled: targets.length };
  return finish(report, expanded.files);
}

/** Order diagnostics by load order, then line. */
function finish(report: RulesReport, files: readonly string[]): RulesReport {
  const order = new Map(files.map((f, i) => [f, i]));
  report.diagnostics.sort((a, b) => (order.get(a.file) ?? -1) - (order.get(b.file) ?? -1) || a.line - b.line);
  return report;
}

function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : file;
}

const USAGE = 'usage: t1612d rules check [--no-sysdig] [FILE|DIR ...]   (default: the falco-rules/ directory)\n';

/** Format a diagnostic as `file:line: message`. */
export function formatDiagnostic(d: Diagnostic): string {
  return `${displayPath(d.file)}:${d.line}: ${d.message}`;
}

/** One-line summary of a report. */
export function summaryLine(r: RulesReport): string {
  const n = (count: number, word: string): string => `${count} ${word}${count === 1 ? '' : 's'}`;
  const conditions = r.sysdig.used
    ? `conditions compiled with sysdig (${n(r.sysdig.compiled, 'rule')})`
    : `conditions not compiled (${r.sysdig.reason})`;
  const verdict = r.diagnostics.length === 0 ? 'ok' : 'FAILED';
  return `rules check ${verdict}: ${n(r.files.length, 'file')}, ${n(r.rules, 'rule')}, ${n(r.lists, 'list')}, ${n(r.macros, 'macro')}, ${n(r.diagnostics.length, 'error')}; ${conditions}`;
}

/**
 * CLI entry for `t1612d rules check`. Writes diagnostics and the summary to `out`; returns the
 * exit code: 0 clean, 1 errors found, 2 usage error.
 */
export async function runRulesCheck(
  args: string[],
  out: { write(s: string): void },
  options: { sysdig?: string | false } = {},
): Promise<number> {
  const files: string[] = [];
  let sysdig = options.sysdig;
  for (const a of args) {
    if (a === '-h' || a === '--help') {
      out.write(USAGE);
      return 0;
    }
    if (a === '--no-sysdig') sysdig = false;
    else if (a.startsWith('-') && a !== '-') {
      out.write(`t1612d rules check: unknown option ${a}\n${USAGE}`);
      return 2;
    } else files.push(a);
  }
  let report: RulesReport;
  try {
    report = await checkRules(files.length > 0 ? files : [defaultRulesDir()], sysdig === undefined ? {} : { sysdig });
  } catch (err) {
    out.write(`t1612d rules check: ${describeError(err)}\n`);
    return 1;
  }
  for (const d of report.diagnostics) out.write(`${formatDiagnostic(d)}\n`);
  out.write(`${summaryLine(report)}\n`);
  return report.diagnostics.length > 0 ? 1 : 0;
}
