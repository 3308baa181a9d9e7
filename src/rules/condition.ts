/**
 * Falco condition text handling for the rules checker: a tokenizer that tells macro
 * references (bare identifiers where an expression is expected) from field names and values,
 * Falco's textual list substitution, macro expansion, and exception-to-condition rendering.
 * It is not a full filter parser: syntax and field errors are left to sysdig's compiler.
 */

export interface Token {
  /** `word` (bare string), `str` (quoted), `(`, `)`, `,`, `op` (symbolic comparison). */
  type: 'word' | 'str' | '(' | ')' | ',' | 'op';
  text: string;
  start: number;
  end: number;
}

/** A bare identifier in expression position: a macro reference (Falco's parser does the same). */
export interface MacroRef {
  name: string;
  start: number;
  end: number;
}

/** A bare word inside a parenthesised value list, with the field it is compared to. */
export interface ListValue {
  name: string;
  field: string;
  start: number;
}

const SYMBOL_OPS = ['==', '!=', '<=', '>=', '=', '<', '>'];
const WORD_OPS = new Set([
  'contains', 'bcontains', 'icontains', 'startswith', 'bstartswith', 'endswith', 'glob', 'iglob',
  'pmatch', 'in', 'intersects', 'exists', 'regex',
]);
/** Operators whose right-hand side is a parenthesised list. */
const LIST_OPS = new Set(['in', 'intersects', 'pmatch']);
const UNARY_OPS = new Set(['exists']);
const KEYWORDS = new Set(['and', 'or', 'not']);

/** Falco's identifier syntax for macro names (rule_loader_reader RGX_IDENTIFIER). */
export const IDENTIFIER_RE = /^[a-zA-Z]+[a-zA-Z0-9_]*$/;
/** A field name: dotted, optionally with an [argument] (proc.aname[2], evt.arg.x). */
const FIELD_RE = /^[a-zA-Z][a-zA-Z0-9_]*(\.[a-zA-Z0-9_]+)+(\[[^\]]*\])?$/;

/** Split a condition into tokens; never throws (an unterminated string runs to the end). */
export function tokenize(text: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === '(' || c === ')' || c === ',') {
      out.push({ type: c, text: c, start: i, end: i + 1 });
      i++;
      continue;
    }
    if (c === '"' || c === "'") {
      let j = i + 1;
      while (j < text.length && text[j] !== c) j += text[j] === '\\' ? 2 : 1;
      const end = Math.min(j + 1, text.length);
      out.push({ type: 'str', text: text.slice(i, end), start: i, end });
      i = end;
      continue;
    }
    const op = SYMBOL_OPS.find((o) => text.startsWith(o, i));
    if (op) {
      out.push({ type: 'op', text: op, start: i, end: i + op.length });
      i += op.length;
      continue;
    }
    let j = i;
    // A field argument in brackets may hold characters that end a bare word elsewhere.
    while (j < text.length && !/[\s(),"'=<>!]/.test(text[j] as string)) {
      if (text[j] === '[') {
        const close = text.indexOf(']', j);
        j = close === -1 ? text.length : close + 1;
      } else j++;
    }
    if (j === i) j = i + 1; // a lone '!' or similar: keep moving
    out.push({ type: 'word', text: text.slice(i, j), start: i, end: j });
    i = j;
  }
  return out;
}

/**
 * Walk a condition and report macro references and bare words inside value lists. Works on a
 * fragment too (an appended `and not x` starts in expression position, like a whole condition).
 */
export function scanCondition(text: string): { macros: MacroRef[]; listValues: ListValue[] } {
  const tokens = tokenize(text);
  const macros: MacroRef[] = [];
  const listValues: ListValue[] = [];
  // expect: what the next token is: an expression operand, an operator after a field, or a value.
  let expect: 'expr' | 'operator' | 'value' = 'expr';
  let field = '';
  let listDepth = 0;
  let pendingList = false;
  for (const t of tokens) {
    if (listDepth > 0) {
      if (t.type === '(') listDepth++;
      else if (t.type === ')') {
        listDepth--;
        if (listDepth === 0) expect = 'expr';
      } else if (t.type === 'word') listValues.push({ name: t.text, field, start: t.start });
      continue;
    }
    if (expect === 'value') {
      if (pendingList && t.type === '(') {
        listDepth = 1;
        pendingList = false;
        continue;
      }
      pendingList = false;
      expect = 'expr';
      continue;
    }
    if (expect === 'operator') {
      if (t.type === 'op' || (t.type === 'word' && WORD_OPS.has(t.text))) {
        if (UNARY_OPS.has(t.text)) expect = 'expr';
        else {
          expect = 'value';
          pendingList = LIST_OPS.has(t.text);
        }
        continue;
      }
      // A field without a known operator: a syntax error for the compiler to report. What
      // follows cannot be classified reliably, so stop rather than guess macro names.
      break;
    }
    // Expression position.
    if (t.type === '(' || t.type === ')' || t.type === ',') continue;
    if (t.type === 'word') {
      if (KEYWORDS.has(t.text)) continue;
      if (FIELD_RE.test(t.text) || t.text.includes('.')) {
        field = t.text;
        expect = 'operator';
        continue;
      }
      if (IDENTIFIER_RE.test(t.text)) {
        macros.push({ name: t.text, start: t.start, end: t.end });
        continue;
      }
    }
  }
  return { macros, listValues };
}

/** Falco's quote_item: an item with a space and no leading quote is double-quoted. */
function quoteItem(item: string): string {
  if (item.includes(' ') && item[0] !== '"' && item[0] !== "'") return `"${item}"`;
  return item;
}

const BLANKS = ' \t\n\r';
const DELIMS = `${BLANKS}(),=`;

/**
 * Falco's resolve_list, done the same textual way: every occurrence of a list name delimited by
 * blanks, parentheses, commas or `=` becomes the comma-joined items (an empty list also eats a
 * neighbouring comma). Quoted items keep their quotes, as in Falco.
 */
export function resolveList(cond: string, name: string, items: readonly string[]): string {
  let out = cond;
  let start = out.indexOf(name);
  while (start !== -1) {
    let s = start;
    let e = start + name.length;
    const before = s === 0 || DELIMS.includes(out[s - 1] as string);
    const after = e >= out.length || DELIMS.includes(out[e] as string);
    if (before && after) {
      while (s > 0 && BLANKS.includes(out[s - 1] as string)) s--;
      while (e < out.length && BLANKS.includes(out[e] as string)) e++;
      const sub = items.map(quoteItem).join(', ');
      if (sub === '') {
        if (s > 0 && out[s - 1] === ',') s--;
        else if (e < out.length && out[e] === ',') e++;
      }
      const prefix = s > 0 ? `${out.slice(0, s)} ` : '';
      out = `${prefix}${sub} ${out.slice(e)}`;
      start = prefix.length + sub.length + 1;
      start = out.indexOf(name, start);
      continue;
    }
    start = out.indexOf(name, start + 1);
  }
  return out;
}

/** Resolve every list (Falco applies all lists to every condition, regardless of order). */
export function resolveLists(cond: string, lists: ReadonlyMap<string, readonly string[]>): string {
  let out = cond;
  for (const [name, items] of lists) out = resolveList(out, name, items);
  return out;
}

/**
 * Replace macro references by their parenthesised bodies, recursively. `bodies` maps a macro
 * name to its list-resolved condition; unknown names are left as they are (reported elsewhere).
 * Cycles stop at a depth limit and are reported through `onCycle`.
 */
export function expandMacros(
  cond: string,
  bodies: ReadonlyMap<string, string>,
  onCycle?: (name: string) => void,
  depth = 0,
): string {
  const { macros } = scanCondition(cond);
  if (macros.length === 0) return cond;
  let out = '';
  let last = 0;
  for (const ref of macros) {
    const body = bodies.get(ref.name);
    if (body === undefined) continue;
    let expanded: string;
    if (depth >= 50) {
      onCycle?.(ref.name);
      expanded = 'evt.num = 0';
    } else {
      expanded = expandMacros(body, bodies, onCycle, depth + 1);
    }
    out += `${cond.slice(last, ref.start)}(${expanded})`;
    last = ref.end;
  }
  return out + cond.slice(last);
}

/** One rule exception, as read from YAML (shape already validated). */
export interface ExceptionSpec {
  name: string;
  fields?: string | string[];
  comps?: string | string[];
  values?: unknown[];
}

function exceptionScalar(v: unknown): string {
  return typeof v === 'string' ? v : String(v);
}

/**
 * Falco's build_rule_exception_infos: `(cond) and not (...)` per exception with values.
 * Returns the condition unchanged when no exception has values.
 */
export function applyExceptions(cond: string, exceptions: readonly ExceptionSpec[]): string {
  let out = `(${cond})`;
  for (const ex of exceptions) {
    const values = ex.values ?? [];
    if (values.length === 0 || ex.fields === undefined) continue;
    let icond: string;
    if (!Array.isArray(ex.fields)) {
      const comp = typeof ex.comps === 'string' ? ex.comps : 'in';
      icond = `(${ex.fields} ${comp} (${values.map((v) => quoteItem(exceptionScalar(v))).join(', ')}))`;
    } else {
      const fields = ex.fields;
      const comps = Array.isArray(ex.comps) ? ex.comps : fields.map(() => '=');
      const alternatives = values.map((tuple) => {
        const vals = Array.isArray(tuple) ? tuple : [tuple];
        const parts = fields.map((f, k) => {
          const comp = comps[k] ?? '=';
          const v = vals[k];
          let rhs: string;
          if (Array.isArray(v)) rhs = `(${v.map((x) => quoteItem(exceptionScalar(x))).join(', ')})`;
          else if (LIST_OPS.has(comp)) {
            const s = exceptionScalar(v);
            rhs = s.startsWith('(') ? s : `(${s})`;
          } else rhs = quoteItem(exceptionScalar(v));
          return `${f} ${comp} ${rhs}`;
        });
        return `(${parts.join(' and ')})`;
      });
      icond = `(${alternatives.join(' or ')})`;
    }
    out += ` and not ${icond}`;
  }
  return out;
}

/** Replace field names (whole tokens) with stand-ins, for compilers that predate them. */
export function substituteFields(cond: string, map: ReadonlyMap<string, string>): string {
  if (map.size === 0) return cond;
  let out = '';
  let last = 0;
  for (const t of tokenize(cond)) {
    if (t.type !== 'word') continue;
    const bracket = t.text.indexOf('[');
    const base = bracket === -1 ? t.text : t.text.slice(0, bracket);
    const repl = map.get(base);
    if (repl === undefined) continue;
    out += cond.slice(last, t.start) + repl + (bracket === -1 ? '' : t.text.slice(bracket));
    last = t.end;
  }
  return out + cond.slice(last);
}
