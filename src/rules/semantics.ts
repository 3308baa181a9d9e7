/**
 * Falco's rule collector, replayed for the checker: items are applied in load order with
 * Falco's define / append / override semantics, then references are resolved the way Falco's
 * compiler does (macros see only macros defined before them, rules see all; lists apply
 * everywhere). Reports undefined macros and lists, overrides of undefined items, duplicate
 * names within a file, and t1612-tagged rules whose output lacks the fields t1612d reads.
 */
import { REQUIRED_BUILD_FIELDS, REQUIRED_EGRESS_FIELDS } from '../model/fields.js';
import { TAG_BUILD, TAG_EGRESS } from '../model/event.js';
import { applyExceptions, resolveLists, scanCondition } from './condition.js';
import type { ExceptionSpec } from './condition.js';
import { EVENT_TYPE_FIELDS, FALCO_DEFAULT_LISTS, FALCO_DEFAULT_MACROS } from './known-names.js';
import type { Diagnostic, ParsedItem } from './load.js';

/** A piece of a condition and where it was written (appends add pieces). */
interface Fragment {
  text: string;
  file: string;
  line: number;
  /** Macros defined before this piece was loaded (Falco's macro visibility). */
  visible: number;
}

interface ListState {
  name: string;
  items: string[];
  index: number;
}

interface MacroState {
  name: string;
  fragments: Fragment[];
  index: number;
  file: string;
  line: number;
}

export interface RuleState {
  name: string;
  fragments: Fragment[];
  output: string;
  outputFile: string;
  outputLine: number;
  tags: string[];
  enabled: boolean;
  exceptions: ExceptionSpec[];
  /** Event source (`syscall` unless the rule says otherwise). */
  source: string;
  file: string;
  line: number;
}

/** The loaded rule set after every file, plus what the checker found. */
export interface Collected {
  lists: Map<string, ListState>;
  macros: Map<string, MacroState>;
  rules: Map<string, RuleState>;
  /** Rules whose conditions reference something undefined: not worth compiling. */
  brokenRules: Set<string>;
}

const OUTPUT_FIELD_RE = /%([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)+(?:\[[^\]]*\])?)/g;
const SNAKE_NAME_RE = /^[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+$/;

/** The %fields an output format prints. */
export function outputFields(output: string): Set<string> {
  return new Set([...output.matchAll(OUTPUT_FIELD_RE)].map((m) => m[1] as string));
}

function truthy(v: unknown): boolean {
  return v === true || (typeof v === 'string' && /^(true|yes|on|y)$/i.test(v));
}

function str(v: unknown): string {
  return v === null || v === undefined ? '' : String(v);
}

export function collect(items: readonly ParsedItem[], diagnostics: Diagnostic[]): Collected {
  const lists = new Map<string, ListState>();
  const macros = new Map<string, MacroState>();
  const rules = new Map<string, RuleState>();
  const invalidNames = new Set<string>();
  const definedInFile = new Map<string, number>(); // `${file}\0${kind}\0${name}` -> line

  for (const item of items) {
    const { kind, name, data, file } = item;
    if (kind !== 'rule' && kind !== 'macro' && kind !== 'list') continue;
    const key = `${kind}\0${name}`;
    if (!item.valid) {
      invalidNames.add(key);
      continue;
    }
    const label = `${kind} '${name}'`;
    const lineOf = (k: string): number => item.lines[k] ?? item.line;
    const report = (line: number, message: string): void => {
      diagnostics.push({ file, line, message, ...(kind === 'rule' ? { rule: name } : {}) });
    };
    const override = (data['override'] ?? {}) as Record<string, string>;
    const hasOverride = 'override' in data;
    const isAppend = truthy(data['append']);
    const enabledOnly =
      kind === 'rule' && !hasOverride && !isAppend && !['condition', 'output', 'desc', 'priority'].some((k) => k in data);
    const modifies = hasOverride || isAppend || enabledOnly;
    const exists = kind === 'list' ? lists.has(name) : kind === 'macro' ? macros.has(name) : rules.has(name);

    if (modifies && !exists) {
      if (!invalidNames.has(key)) {
        const how = enabledOnly ? "'enabled' on its own" : hasOverride ? "'override'" : "'append'";
        report(item.line, `${label} uses ${how} but no ${kind} '${name}' is defined earlier in the load order`);
      }
      continue;
    }
    if (!modifies) {
      const dupKey = `${file}\0${key}`;
      const first = definedInFile.get(dupKey);
      if (first !== undefined) report(item.line, `duplicate ${label}: already defined at line ${first} of this file`);
      else definedInFile.set(dupKey, item.line);
    }

    if (kind === 'list') {
      const newItems = (data['items'] as unknown[]).map(str);
      const prev = lists.get(name);
      if (prev && (isAppend || override['items'] === 'append')) prev.items.push(...newItems);
      else lists.set(name, { name, items: newItems, index: prev?.index ?? lists.size });
      continue;
    }
    if (kind === 'macro') {
      const frag: Fragment = { text: str(data['condition']), file, line: lineOf('condition'), visible: macros.size };
      const prev = macros.get(name);
      if (prev && (isAppend || override['condition'] === 'append')) {
        frag.visible = Math.max(macros.size, prev.index);
        prev.fragments.push(frag);
      } else {
        const index = prev?.index ?? macros.size;
        macros.set(name, { name, fragments: [{ ...frag, visible: index }], index, file, line: item.line });
      }
      continue;
    }

    // rule
    const prev = rules.get(name);
    if (enabledOnly && prev) {
      prev.enabled = truthy(data['enabled']);
      continue;
    }
    if (prev && (hasOverride || isAppend)) {
      const ops: Record<string, string> = hasOverride ? override : { condition: 'append', exceptions: 'append' };
      for (const [k, op] of Object.entries(ops)) {
        if (!(k in data)) continue;
        const v = data[k];
        switch (k) {
          case 'condition': {
            const frag: Fragment = { text: str(v), file, line: lineOf(k), visible: Number.MAX_SAFE_INTEGER };
            if (op === 'append') prev.fragments.push(frag);
            else prev.fragments = [frag];
            break;
          }
          case 'output':
            prev.output = op === 'append' ? `${prev.output} ${str(v)}` : str(v);
            prev.outputFile = file;
            prev.outputLine = lineOf(k);
            break;
          case 'tags': {
            const tags = (v as unknown[]).map(str);
            prev.tags = op === 'append' ? [...new Set([...prev.tags, ...tags])] : tags;
            break;
          }
          case 'enabled':
            prev.enabled = truthy(v);
            break;
          case 'exceptions': {
            const exs = (Array.isArray(v) ? v : []) as ExceptionSpec[];
            if (op === 'append') {
              for (const ex of exs) {
                const same = prev.exceptions.find((e) => e.name === ex.name);
                if (same) same.values = [...(same.values ?? []), ...(ex.values ?? [])];
                else prev.exceptions.push({ ...ex });
              }
            } else prev.exceptions = exs.map((e) => ({ ...e }));
            break;
          }
          default:
            break; // desc, priority, warn_evttypes...: nothing the checker evaluates later
        }
      }
      continue;
    }
    rules.set(name, {
      name,
      fragments: [{ text: str(data['condition']), file, line: lineOf('condition'), visible: Number.MAX_SAFE_INTEGER }],
      output: str(data['output']),
      outputFile: file,
      outputLine: lineOf('output'),
      tags: Array.isArray(data['tags']) ? (data['tags'] as unknown[]).map(str) : [],
      enabled: 'enabled' in data ? truthy(data['enabled']) : true,
      exceptions: Array.isArray(data['exceptions']) ? (data['exceptions'] as ExceptionSpec[]).map((e) => ({ ...e })) : [],
      source: str(data['source']) || 'syscall',
      file,
      line: item.line,
    });
  }

  const collected: Collected = { lists, macros, rules, brokenRules: new Set() };
  checkReferences(collected, invalidNames, diagnostics);
  checkT1612Outputs(rules, diagnostics);
  return collected;
}

function checkReferences(c: Collected, invalidNames: ReadonlySet<string>, diagnostics: Diagnostic[]): void {
  const listNames = new Set([...c.lists.keys()]);
  const scan = (frag: Fragment, owner: string, rule: string | undefined): boolean => {
    let ok = true;
    const { macros, listValues } = scanCondition(frag.text);
    for (const ref of macros) {
      const m = c.macros.get(ref.name);
      if (m && m.index < frag.visible) continue;
      if (invalidNames.has(`macro\0${ref.name}`) || FALCO_DEFAULT_MACROS.has(ref.name) || listNames.has(ref.name)) continue;
      const why = m ? ` (macro '${ref.name}' is defined later, after ${owner})` : '';
      diagnostics.push({ file: frag.file, line: frag.line, message: `${owner}: undefined macro '${ref.name}'${why}`, ...(rule ? { rule } : {}) });
      ok = false;
    }
    for (const v of listValues) {
      if (listNames.has(v.name) || FALCO_DEFAULT_LISTS.has(v.name) || invalidNames.has(`list\0${v.name}`)) continue;
      if (!SNAKE_NAME_RE.test(v.name) || EVENT_TYPE_FIELDS.has(v.field)) continue;
      diagnostics.push({
        file: frag.file,
        line: frag.line,
        message: `${owner}: undefined list '${v.name}' (quote the value if it is meant literally)`,
        ...(rule ? { rule } : {}),
      });
      ok = false;
    }
    return ok;
  };
  for (const m of c.macros.values()) for (const f of m.fragments) scan(f, `macro '${m.name}'`, undefined);
  for (const r of c.rules.values()) {
    let ok = true;
    for (const f of r.fragments) ok = scan(f, `rule '${r.name}'`, r.name) && ok;
    if (!ok) c.brokenRules.add(r.name);
  }
}

function checkT1612Outputs(rules: ReadonlyMap<string, RuleState>, diagnostics: Diagnostic[]): void {
  for (const r of rules.values()) {
    const required = new Set<string>();
    if (r.tags.includes(TAG_BUILD)) REQUIRED_BUILD_FIELDS.forEach((f) => required.add(f));
    if (r.tags.includes(TAG_EGRESS)) REQUIRED_EGRESS_FIELDS.forEach((f) => required.add(f));
    if (required.size === 0) continue;
    const have = outputFields(r.output);
    const missing = [...required].filter((f) => !have.has(f));
    if (missing.length === 0) continue;
    const tag = r.tags.includes(TAG_EGRESS) ? TAG_EGRESS : TAG_BUILD;
    diagnostics.push({
      file: r.outputFile,
      line: r.outputLine,
      rule: r.name,
      message: `rule '${r.name}' is tagged ${tag} but its output lacks ${missing.map((f) => `%${f}`).join(', ')}`,
    });
  }
}

/** List items with references to earlier lists expanded (Falco compile_list_infos). */
export function resolvedLists(c: Collected): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const ordered = [...c.lists.values()].sort((a, b) => a.index - b.index);
  for (const l of ordered) {
    const items: string[] = [];
    for (const it of l.items) {
      const ref = c.lists.get(it);
      if (ref && ref.index < l.index) items.push(...(out.get(it) ?? ref.items));
      else items.push(it);
    }
    out.set(l.name, items);
  }
  for (const [name, items] of FALCO_DEFAULT_LISTS) if (!out.has(name)) out.set(name, [...items]);
  return out;
}

/** Each macro's full condition with lists resolved, plus the known Falco default macros. */
export function macroBodies(c: Collected, lists: ReadonlyMap<string, readonly string[]>): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of c.macros.values()) out.set(m.name, resolveLists(m.fragments.map((f) => f.text).join(' '), lists));
  for (const [name, body] of FALCO_DEFAULT_MACROS) if (!out.has(name)) out.set(name, resolveLists(body, lists));
  return out;
}

/** A rule's condition as Falco compiles it before macro expansion: fragments plus exceptions. */
export function ruleCondition(r: RuleState): string {
  const cond = r.fragments.map((f) => f.text).join(' ');
  return r.exceptions.length > 0 ? applyExceptions(cond, r.exceptions) : cond;
}
