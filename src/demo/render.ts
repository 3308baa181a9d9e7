/**
 * Renders Falco alerts from the shipped rules themselves: the rule's output template with
 * each %field substituted (or `<NA>`), output_fields holding exactly the fields the template
 * names, the rule's tags and priority — what Falco's json_output prints for that rule. The
 * demo, the sample recording and the benchmarks use it, so they follow the rules as they change.
 */
import { join } from 'node:path';
import { defaultRulesDir } from '../rules/check.js';
import { parseRulesFile } from '../rules/load.js';
import { collect, outputFields } from '../rules/semantics.js';
import { formatTimeNs } from '../model/event.js';

export interface RuleTemplate {
  rule: string;
  output: string;
  /** Title-case, as Falco writes it in JSON. */
  priority: string;
  tags: string[];
  fields: string[];
}

export type FieldValues = Record<string, string | number | null | undefined>;

/** The shipped rules file's rules, by name. */
export async function loadRuleTemplates(file = join(defaultRulesDir(), 't1612_rules.yaml')): Promise<Map<string, RuleTemplate>> {
  const diagnostics: Parameters<typeof collect>[1] = [];
  const { items } = await parseRulesFile(file);
  const rules = collect(items, diagnostics).rules;
  const out = new Map<string, RuleTemplate>();
  for (const [name, r] of rules) {
    const def = items.filter((i) => i.kind === 'rule' && i.name === name && typeof i.data['priority'] === 'string').pop();
    const p = String(def?.data['priority'] ?? 'Notice').toLowerCase();
    const output = r.output.replace(/\s+/g, ' ').trim();
    out.set(name, { rule: name, output, priority: p.charAt(0).toUpperCase() + p.slice(1), tags: r.tags, fields: [...outputFields(output)] });
  }
  return out;
}

/** One Falco JSON alert for `tpl` at `timeNs` on `hostname`, with the given field values. */
export function renderEvent(tpl: RuleTemplate, hostname: string, timeNs: bigint, values: FieldValues): Record<string, unknown> {
  const text = (v: string | number | null | undefined): string => (v === null || v === undefined || v === '' ? '<NA>' : String(v));
  const body = tpl.output.replace(/%([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)+(?:\[[^\]]*\])?)/g, (_, f: string) => text(values[f]));
  const fields: Record<string, string | number | null> = {};
  for (const f of tpl.fields) fields[f] = values[f] ?? null;
  return {
    hostname,
    output: `${formatTimeNs(timeNs).slice(11, 29)}: ${tpl.priority} ${body}`,
    output_fields: { 'evt.time': timeNs.toString(), ...fields },
    priority: tpl.priority,
    rule: tpl.rule,
    source: 'syscall',
    tags: tpl.tags,
    time: formatTimeNs(timeNs),
  };
}

/** JSON text as Falco writes it: evt.time as a bare 19-digit number. */
export function falcoJsonLine(event: Record<string, unknown>): string {
  return JSON.stringify(event).replace(/"evt\.time":"(\d+)"/, '"evt.time":$1');
}
