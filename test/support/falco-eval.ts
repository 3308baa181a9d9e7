/**
 * A small evaluator for the Falco condition language as the shipped rules use it (and, or,
 * not, comparisons, `in` lists, `fd.snet`/`fd.cnet` CIDRs, `proc.aname` over every ancestor),
 * for tests that ask "would this rule fire on this syscall?". The syscall is modelled as the
 * field values Falco would have after parsing it: for an event a rule printed, its output
 * fields plus what follows from them (exec and send results, socket state, address family).
 * Not a full Falco: an unknown field is missing, and a comparison on a missing field is false.
 */
import { BlockList, isIP } from 'node:net';
import { expandMacros, resolveLists, tokenize, type Token } from '../../src/rules/condition.js';
import { parseRulesFile } from '../../src/rules/load.js';
import { collect, macroBodies, resolvedLists, ruleCondition } from '../../src/rules/semantics.js';

/** Field values of one modelled syscall; several values = any of them (proc.aname). */
export type Fields = Map<string, string[]>;

export interface CompiledRule {
  name: string;
  enabled: boolean;
  condition: string;
}

/** Each rule's condition with lists and macros resolved, as Falco compiles it. */
export async function compileRules(files: readonly string[]): Promise<CompiledRule[]> {
  const items = [];
  for (const f of files) items.push(...(await parseRulesFile(f)).items);
  const c = collect(items, []);
  const lists = resolvedLists(c);
  const bodies = macroBodies(c, lists);
  return [...c.rules.values()].map((r) => ({
    name: r.name,
    enabled: r.enabled,
    condition: expandMacros(resolveLists(ruleCondition(r), lists), bodies),
  }));
}

const WORD_OPS = new Set(['contains', 'icontains', 'startswith', 'endswith', 'in', 'exists']);

class Parser {
  private i = 0;
  constructor(
    private readonly tokens: Token[],
    private readonly fields: Fields,
  ) {}

  run(): boolean {
    const v = this.or();
    if (this.i !== this.tokens.length) throw new Error(`trailing tokens at ${this.peek()?.text ?? ''}`);
    return v;
  }

  private peek(): Token | undefined {
    return this.tokens[this.i];
  }

  private next(): Token {
    const t = this.tokens[this.i++];
    if (!t) throw new Error('unexpected end of condition');
    return t;
  }

  private or(): boolean {
    let v = this.and();
    while (this.peek()?.text === 'or') {
      this.i++;
      const r = this.and();
      v = v || r;
    }
    return v;
  }

  private and(): boolean {
    let v = this.not();
    while (this.peek()?.text === 'and') {
      this.i++;
      const r = this.not();
      v = v && r;
    }
    return v;
  }

  private not(): boolean {
    if (this.peek()?.text === 'not') {
      this.i++;
      return !this.not();
    }
    return this.primary();
  }

  private primary(): boolean {
    if (this.peek()?.type === '(') {
      this.i++;
      const v = this.or();
      if (this.next().type !== ')') throw new Error('expected )');
      return v;
    }
    const field = this.next().text;
    const opTok = this.next();
    const op = opTok.text;
    if (opTok.type !== 'op' && !WORD_OPS.has(op)) throw new Error(`unknown operator ${op} after ${field}`);
    if (op === 'exists') return this.fields.has(field);
    let values: string[];
    if (op === 'in') {
      if (this.next().type !== '(') throw new Error('expected ( after in');
      values = [];
      while (this.peek()?.type !== ')') {
        const t = this.next();
        if (t.type !== ',') values.push(unquote(t.text));
      }
      this.i++;
    } else {
      values = [unquote(this.next().text)];
    }
    return compare(field, op, values, this.fields.get(field));
  }
}

function unquote(text: string): string {
  return /^(["']).*\1$/.test(text) ? text.slice(1, -1) : text;
}

function inCidr(ip: string, cidr: string): boolean {
  const [net, bits] = cidr.split('/');
  const family = isIP(net ?? '');
  if (family === 0 || isIP(ip) !== family) return false;
  const list = new BlockList();
  const type = family === 4 ? 'ipv4' : 'ipv6';
  list.addSubnet(net ?? '', Number(bits ?? (family === 4 ? 32 : 128)), type);
  return list.check(ip, type);
}

function compare(field: string, op: string, values: string[], actual: string[] | undefined): boolean {
  if (actual === undefined || actual.length === 0) return false;
  const value = values[0] ?? '';
  const num = (s: string): number => Number(s);
  const one = (a: string): boolean => {
    switch (op) {
      case '=':
      case '==':
        return a === value;
      case '!=':
        return a !== value;
      case '<':
        return num(a) < num(value);
      case '<=':
        return num(a) <= num(value);
      case '>':
        return num(a) > num(value);
      case '>=':
        return num(a) >= num(value);
      case 'contains':
        return a.includes(value);
      case 'icontains':
        return a.toLowerCase().includes(value.toLowerCase());
      case 'startswith':
        return a.startsWith(value);
      case 'endswith':
        return a.endsWith(value);
      case 'in':
        return field.endsWith('net') ? values.some((c) => inCidr(a, c)) : values.includes(a);
      default:
        throw new Error(`operator ${op}`);
    }
  };
  return op === '!=' ? actual.every(one) : actual.some(one);
}

/** Does `condition` hold for the modelled syscall? Throws on syntax it does not know. */
export function evaluate(condition: string, fields: Fields): boolean {
  return new Parser(tokenize(condition), fields).run();
}

/**
 * The syscall behind an event a rule printed: its output fields, plus what Falco knew and did
 * not print. A successful call (exec exit, connect in progress or done, send of some bytes),
 * a socket libsinsp has marked connected and whose peer just changed, the address family of
 * the peer, `proc.args` from the command line, every ancestor for `proc.aname`.
 */
export function syscallOf(outputFields: Record<string, unknown>, hostname: string, extra: Record<string, string> = {}): Fields {
  const f: Fields = new Map();
  const set = (k: string, v: unknown): void => {
    if (v === null || v === undefined || v === '<NA>') return;
    f.set(k, [String(v)]);
  };
  for (const [k, v] of Object.entries(outputFields)) set(k, v);
  set('evt.hostname', hostname);
  set('evt.num', '1');
  set('evt.rawres', '0');
  set('evt.res', 'SUCCESS');
  set('fd.connected', 'true');
  set('fd.name_changed', 'true');
  const peer = f.get('fd.sip')?.[0] ?? f.get('fd.cip')?.[0];
  if (peer !== undefined) {
    set('fd.typechar', isIP(peer) === 6 ? '6' : '4');
    set('fd.ip', peer);
  }
  if (f.has('fd.sip')) set('fd.snet', f.get('fd.sip')?.[0]);
  if (f.has('fd.cip')) set('fd.cnet', f.get('fd.cip')?.[0]);
  const cmd = f.get('proc.cmdline')?.[0];
  if (cmd !== undefined) set('proc.args', cmd.includes(' ') ? cmd.slice(cmd.indexOf(' ') + 1) : '');
  const repo = f.get('container.image.repository')?.[0];
  if (!f.has('container.image') && repo) set('container.image', `${repo}:${f.get('container.image.tag')?.[0] ?? 'latest'}`);
  const ancestors = ['proc.pname', 'proc.aname[2]', 'proc.aname[3]', 'proc.aname[4]', 'proc.aname[5]', 'proc.aname[6]']
    .map((k) => f.get(k)?.[0])
    .filter((x): x is string => x !== undefined);
  if (ancestors.length > 0) f.set('proc.aname', ancestors);
  if (f.get('proc.pname')) f.set('proc.aname[1]', f.get('proc.pname') ?? []);
  for (const [k, v] of Object.entries(extra)) {
    if (v === '<missing>') f.delete(k);
    else f.set(k, [v]);
  }
  return f;
}

/** The rules (enabled or not) whose condition holds for the syscall. */
export function matching(rules: readonly CompiledRule[], fields: Fields): string[] {
  return rules.filter((r) => evaluate(r.condition, fields)).map((r) => r.name);
}
