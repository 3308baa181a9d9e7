// The shipped Falco rules and the offline rules checker: the rules pass (sysdig compile
// included when sysdig is installed), each class of mistake is reported at the right file and
// line, tuning overrides load after the shipped file, and the sample events match the rules.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CGROUP_FIELD, CONTAINER_FIELDS, EGRESS_FIELDS, PEER_FIELDS, PROCESS_FIELDS } from '../src/model/fields.js';
import { TAG_BUILD, TAG_EGRESS, fromFalcoJson, parseJsonPreservingBigInts } from '../src/model/event.js';
import { checkRules, defaultRulesDir, runRulesCheck } from '../src/rules/check.js';
import type { RulesReport } from '../src/rules/check.js';
import { applyExceptions, expandMacros, resolveList, scanCondition } from '../src/rules/condition.js';
import { parseRulesFile } from '../src/rules/load.js';
import { collect, outputFields } from '../src/rules/semantics.js';
import { findExecutable } from '../src/rules/sysdig.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const rulesDir = join(root, 'falco-rules');
const shipped = join(rulesDir, 't1612_rules.yaml');
const tuning = join(rulesDir, 'examples', 'tuning.yaml');
const fixture = (name: string): string => join(here, 'fixtures', 'rules', name);
const base = fixture('base-valid.yaml');

function collector(): { text: string; write(s: string): void } {
  return {
    text: '',
    write(s: string) {
      this.text += s;
    },
  };
}

function messages(r: RulesReport): string {
  return r.diagnostics.map((d) => `${d.file}:${d.line}: ${d.message}`).join('\n');
}

describe('rules check', function () {
  // Each sysdig compile is a process start; 2 at a time on a 2-core CI machine.
  this.timeout(60_000);
  let sysdig: string | undefined;

  before(async () => {
    sysdig = await findExecutable('sysdig');
  });

  describe('shipped rules', () => {
    it('pass the checker, with every condition compiled by sysdig when it is installed', async () => {
      const report = await checkRules([defaultRulesDir()]);
      assert.equal(report.diagnostics.length, 0, messages(report));
      assert.deepEqual(report.files, [shipped], 'examples/ is not loaded unless named');
      assert.ok(report.rules >= 11, `rules: ${report.rules}`);
      if (sysdig) {
        assert.equal(report.sysdig.used, true);
        assert.equal(report.sysdig.used && report.sysdig.compiled, report.rules);
      } else {
        assert.deepEqual(report.sysdig, { used: false, reason: 'sysdig not found' });
      }
    });

    it('pass with the tuning example loaded after them', async () => {
      const report = await checkRules([rulesDir, tuning]);
      assert.equal(report.diagnostics.length, 0, messages(report));
      assert.deepEqual(report.files, [shipped, tuning]);
      assert.equal(report.sysdig.used, sysdig !== undefined);

      // The overrides took effect the way Falco applies them.
      const items = [...(await parseRulesFile(shipped)).items, ...(await parseRulesFile(tuning)).items];
      const c = collect(items, []);
      assert.equal(c.rules.get('T1612 Builder Daemon Outbound Connection')?.enabled, false);
      assert.ok(c.lists.get('t1612_dns_resolver_networks')?.items.includes('"192.0.2.53/32"'));
      assert.ok(c.lists.get('t1612_ci_build_agents')?.items.includes('gitlab-runner'));
      assert.deepEqual(c.lists.get('t1612_registry_networks')?.items, ['"0.0.0.0/32"', '"192.0.2.0/24"']);
      assert.equal(c.rules.get('T1612 Image Build Command Executed')?.exceptions[0]?.name, 'release_pipeline');
      assert.equal(c.macros.get('t1612_container_egress_scope')?.fragments.length, 2);
    });

    it('tag every rule per the contract and print the fields the daemon reads', async () => {
      const { items, diagnostics } = await parseRulesFile(shipped);
      assert.deepEqual(diagnostics, []);
      const rules = [...collect(items, []).rules.values()];
      let build = 0;
      let egress = 0;
      for (const r of rules) {
        assert.match(r.tags[0] ?? '', /^maturity_/, `${r.name}: maturity tag first`);
        assert.ok(r.tags.includes('T1612') && r.tags.includes('mitre_defense_evasion'), r.name);
        const isBuild = r.tags.includes(TAG_BUILD);
        const isEgress = r.tags.includes(TAG_EGRESS);
        assert.ok(isBuild !== isEgress, `${r.name}: exactly one of t1612_build / t1612_egress`);
        const fields = outputFields(r.output);
        const want: string[] = [...PROCESS_FIELDS, ...CONTAINER_FIELDS];
        if (isEgress) want.push(...EGRESS_FIELDS, CGROUP_FIELD);
        else if (r.name === 'T1612 Remote Docker API Connection') want.push(...PEER_FIELDS);
        else want.push(CGROUP_FIELD);
        for (const f of want) assert.ok(fields.has(f), `${r.name}: output lacks %${f}`);
        for (const f of fields) assert.match(r.output, new RegExp(`(^|[\\s(])${f.replace(/[.[\]]/g, '\\$&')}=%`), `${r.name}: ${f} as key=%key`);
        if (isBuild) build++;
        if (isEgress) egress++;
      }
      assert.ok(build >= 7 && egress >= 4, `build ${build}, egress ${egress}`);
    });
  });

  describe('broken files', () => {
    // `several`: the parser may report more than one error for one mistake.
    const cases: Array<{ file: string; line: number; message: RegExp; several?: boolean }> = [
      { file: 'yaml-syntax.yaml', line: 6, message: /^YAML error: /, several: true },
      { file: 'unknown-key.yaml', line: 6, message: /unknown key 'enabeld'/ },
      { file: 'missing-key.yaml', line: 4, message: /rule 'No Output': missing required key 'output'/ },
      { file: 'wrong-type.yaml', line: 6, message: /'enabled' must be true or false/ },
      { file: 'bad-priority.yaml', line: 5, message: /invalid priority "SEVERE"/ },
      { file: 'undefined-macro.yaml', line: 3, message: /undefined macro 'demo_user_known_things'/ },
      { file: 'undefined-list.yaml', line: 3, message: /undefined list 'demo_missing_binaries'/ },
      { file: 'override-undefined.yaml', line: 2, message: /list 'demo_shell' uses 'override' but no list 'demo_shell' is defined earlier/ },
      { file: 'append-undefined.yaml', line: 2, message: /macro 'demo_never_defined' uses 'append' but no macro/ },
      { file: 't1612-missing-fields.yaml', line: 4, message: /tagged t1612_egress but its output lacks .*%fd\.sip, %fd\.sport, %fd\.l4proto, %fd\.sip\.name$/ },
      { file: 'duplicate.yaml', line: 7, message: /duplicate macro 'demo_twice': already defined at line 1/ },
    ];
    for (const c of cases) {
      it(`reports ${c.file} at line ${c.line}`, async () => {
        const report = await checkRules([base, fixture(c.file)], { sysdig: false });
        if (c.several) assert.ok(report.diagnostics.length >= 1, messages(report));
        else assert.equal(report.diagnostics.length, 1, messages(report));
        assert.ok(report.diagnostics.every((x) => x.file === fixture(c.file)), messages(report));
        const d = report.diagnostics[0];
        assert.equal(d?.file, fixture(c.file));
        assert.equal(d?.line, c.line);
        assert.match(d?.message ?? '', c.message);
      });
    }

    it('reports the rule name on rule problems', async () => {
      const report = await checkRules([fixture('undefined-macro.yaml')], { sysdig: false });
      assert.equal(report.diagnostics[0]?.rule, 'Uses Missing Macro');
    });

    it("reports sysdig's filter errors (bad field through a macro, bad operator) with the rule name", async function () {
      if (!sysdig) {
        // CI installs sysdig, so there a missing one is a broken runner, not a reason to skip.
        if (process.env['CI']) assert.fail('sysdig is not installed, but CI is set and CI installs it: this test must run there');
        // Only sysdig's compiler finds these mistakes; without it there is nothing to check.
        this.skip();
      }
      const report = await checkRules([base, fixture('sysdig-bad-field.yaml'), fixture('sysdig-bad-operator.yaml')]);
      assert.equal(report.sysdig.used, true);
      assert.equal(report.diagnostics.length, 2, messages(report));
      const [field, op] = report.diagnostics;
      assert.equal(field?.file, fixture('sysdig-bad-field.yaml'));
      assert.equal(field?.line, 6);
      assert.equal(field?.rule, 'Bad Field');
      assert.match(field?.message ?? '', /rule 'Bad Field': condition does not compile: sysdig: .*proc\.nmae/);
      assert.equal(op?.file, fixture('sysdig-bad-operator.yaml'));
      assert.equal(op?.line, 3);
      assert.equal(op?.rule, 'Bad Operator');
      assert.match(op?.message ?? '', /rule 'Bad Operator': condition does not compile: sysdig: .*operator/);
    });

    it('accepts Falco default-ruleset names from the documented allow-list only', async () => {
      const report = await checkRules([base, fixture('uses-falco-defaults.yaml')]);
      assert.equal(report.diagnostics.length, 1, messages(report));
      assert.match(report.diagnostics[0]?.message ?? '', /undefined macro 'not_a_falco_macro'/);
    });

    it('reports malformed input of any shape without throwing', async () => {
      const dir = await mkdtemp(join(tmpdir(), 't1612d-rules-'));
      try {
        await writeFile(join(dir, 'a-map.yaml'), 'a: b\n');
        await writeFile(join(dir, 'b-binary.yaml'), Buffer.from([0, 1, 0xff, 0x0a]));
        await writeFile(join(dir, 'c-empty.yaml'), '');
        await writeFile(
          join(dir, 'd-mixed.yaml'),
          [
            '- 1',
            '- rule: [x]',
            '- macro: m',
            '  condition: {a: 1}',
            '- list: l',
            '  items: {a: 1}',
            '- rule: r',
            '  override: {condition: merge}',
            '  condition: x',
            '- rule: e',
            '  exceptions: [{name: 1, fields: {}, values: 3}]',
            '- required_plugin_versions: [1, {name: c}]',
            '- macro: loop',
            '  condition: loop',
            '- rule: uses loop',
            '  desc: d',
            '  condition: loop',
            '  output: o',
            '  priority: info',
            '',
          ].join('\n'),
        );
        const report = await checkRules([dir]);
        assert.equal(report.files.length, 4);
        assert.ok(report.diagnostics.length >= 9, messages(report));
        assert.ok(report.diagnostics.every((d) => d.line >= 1 && d.file.startsWith(dir)), messages(report));
        assert.ok(report.diagnostics.some((d) => /macro 'loop': undefined macro 'loop'/.test(d.message)), messages(report));
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('reports a missing file', async () => {
      const report = await checkRules([fixture('does-not-exist.yaml')], { sysdig: false });
      assert.equal(report.diagnostics.length, 1);
      assert.match(report.diagnostics[0]?.message ?? '', /no such file/);
    });
  });

  describe('runRulesCheck (CLI)', () => {
    it('checks falco-rules/ by default: exit 0 and one summary line', async () => {
      const out = collector();
      const code = await runRulesCheck([], out);
      assert.equal(code, 0, out.text);
      const lines = out.text.trimEnd().split('\n');
      assert.equal(lines.length, 1, out.text);
      const compiled = sysdig ? /conditions compiled with sysdig \(\d+ rules\)$/ : /conditions not compiled \(sysdig not found\)$/;
      assert.match(lines[0] ?? '', /^rules check ok: 1 file, \d+ rules, \d+ lists, \d+ macros, 0 errors; /);
      assert.match(lines[0] ?? '', compiled);
    });

    it('prints file:line: message per error, then the summary, and exits 1', async () => {
      const out = collector();
      const code = await runRulesCheck([base, fixture('bad-priority.yaml'), fixture('duplicate.yaml')], out, { sysdig: false });
      assert.equal(code, 1);
      const lines = out.text.trimEnd().split('\n');
      assert.equal(lines.length, 3, out.text);
      assert.match(lines[0] ?? '', /bad-priority\.yaml:5: rule 'Bad Priority': invalid priority/);
      assert.match(lines[1] ?? '', /duplicate\.yaml:7: duplicate macro 'demo_twice'/);
      assert.equal(lines[2], 'rules check FAILED: 3 files, 2 rules, 1 list, 3 macros, 2 errors; conditions not compiled (disabled)');
    });

    it('says when sysdig is missing, honours --no-sysdig, and rejects unknown options', async () => {
      const missing = collector();
      assert.equal(await runRulesCheck([base], missing, { sysdig: '/nonexistent/bin/sysdig' }), 0);
      assert.match(missing.text, /conditions not compiled \(\/nonexistent\/bin\/sysdig not found\)\n$/);

      const off = collector();
      assert.equal(await runRulesCheck(['--no-sysdig', base], off), 0);
      assert.match(off.text, /^rules check ok: 1 file, 1 rule, 1 list, 1 macro, 0 errors; conditions not compiled \(disabled\)\n$/);

      const bad = collector();
      assert.equal(await runRulesCheck(['--frobnicate'], bad), 2);
      assert.match(bad.text, /unknown option --frobnicate/);
    });
  });

  describe('recorded events', () => {
    /**
     * Each line must be an event the shipped rules really print: a known rule, exactly the
     * output fields its output names (plus Falco's evt.time), its tags, its priority in
     * Falco's Title-case, and an output line made of the same key=value pairs.
     */
    async function assertShippedRulesEvents(file: string): Promise<Set<string>> {
      const { items } = await parseRulesFile(shipped);
      const rules = collect(items, []).rules;
      const lines = (await readFile(file, 'utf8')).split('\n').filter((l) => l !== '');
      const seen = new Set<string>();
      for (const line of lines) {
        const raw = parseJsonPreservingBigInts(line) as { output_fields: Record<string, unknown> };
        const ev = fromFalcoJson(raw);
        const where = `${file}: ${ev.rule} at ${ev.output.slice(0, 18)}`;
        const rule = rules.get(ev.rule);
        assert.ok(rule, `unknown rule ${where}`);
        seen.add(ev.rule);
        const keys = new Set(Object.keys(raw.output_fields).filter((k) => k !== 'evt.time'));
        assert.deepEqual([...keys].sort(), [...outputFields(rule.output)].sort(), where);
        assert.deepEqual([...ev.tags].sort(), [...rule.tags].sort(), where);
        const item = items.find((i) => i.kind === 'rule' && i.name === ev.rule);
        const priority = String(item?.data['priority']).toLowerCase();
        assert.equal(ev.priority, priority.charAt(0).toUpperCase() + priority.slice(1), where);
        for (const k of keys) {
          const v = raw.output_fields[k];
          // Falco 0.43 prints an empty value as nothing (`k= `), older fixtures as <NA>.
          const texts = v === null ? ['<NA>'] : v === '' ? ['<NA>', ''] : [String(v)];
          const has = (text: string): boolean => ev.output.includes(` ${k}=${text}`) || ev.output.includes(`(${k}=${text}`);
          assert.ok(texts.some(has), `${where}: output line lacks ${k}=${texts[0] ?? ''}`);
        }
      }
      return seen;
    }

    it('the sample events carry exactly the output fields, tags and priority of the rules that produce them', async () => {
      const seen = await assertShippedRulesEvents(fixture('sample-events.jsonl'));
      for (const r of ['T1612 Image Build Command Executed', 'T1612 Builder Runtime Started', 'T1612 Build Step Outbound Connection', 'T1612 Remote Docker API Connection']) {
        assert.ok(seen.has(r), `no sample for ${r}`);
      }
    });

    it('so does the recorded sample in examples/ (the demo script rendered through the rules)', async () => {
      const seen = await assertShippedRulesEvents(join(root, 'examples', 'sample-events.jsonl'));
      assert.ok(seen.has('T1612 Remote Docker API Connection'));
    });

    it('so do the correlator scenario fixtures, and together they use every shipped rule', async () => {
      const dir = join(here, 'fixtures', 'scenarios');
      const files = (await readdir(dir)).filter((f) => f.endsWith('.jsonl') && f !== 'malformed.jsonl');
      assert.ok(files.length >= 20, `${files.length} fixtures`);
      const seen = new Set<string>();
      for (const f of files) for (const r of await assertShippedRulesEvents(join(dir, f))) seen.add(r);
      const { items } = await parseRulesFile(shipped);
      const unused = [...collect(items, []).rules.keys()].filter((r) => !seen.has(r));
      assert.deepEqual(unused, [], 'rules no scenario exercises');
    });
  });

  describe('condition helpers', () => {
    it("substitutes lists textually like Falco, dropping a comma for an empty list", () => {
      assert.equal(resolveList('proc.name in (a_list)', 'a_list', ['sh', 'bash']).replace(/\s+/g, ' '), 'proc.name in ( sh, bash )');
      assert.equal(resolveList('proc.name in (x, a_list)', 'a_list', []).replace(/\s+/g, ' '), 'proc.name in (x )');
      assert.equal(resolveList('proc.name in (my_a_list)', 'a_list', ['sh']), 'proc.name in (my_a_list)');
      assert.equal(resolveList('x in (a_list)', 'a_list', ['two words']).replace(/\s+/g, ' '), 'x in ( "two words" )');
    });

    it('tells macro references from fields and values', () => {
      const { macros, listValues } = scanCondition('spawned and not (proc.name in (a_b, "c_d") or my_macro) and fd.sport = some_value');
      assert.deepEqual(macros.map((m) => m.name), ['spawned', 'my_macro']);
      assert.deepEqual(listValues.map((v) => [v.name, v.field]), [['a_b', 'proc.name']]);
    });

    it('expands macros recursively and renders exceptions as Falco does', () => {
      const bodies = new Map([
        ['outer', 'inner and proc.name = x'],
        ['inner', 'evt.type = execve'],
      ]);
      assert.equal(expandMacros('outer or never', bodies), '((evt.type = execve) and proc.name = x) or never');
      const cycles: string[] = [];
      expandMacros('loop', new Map([['loop', 'loop']]), (m) => cycles.push(m));
      assert.ok(cycles.includes('loop'));
      assert.equal(
        applyExceptions('evt.type = execve', [
          { name: 'one', fields: 'proc.name', values: ['sh', 'my shell'] },
          { name: 'pairs', fields: ['user.name', 'proc.pname'], comps: ['=', 'in'], values: [['root', ['a', 'b']]] },
        ]),
        '(evt.type = execve) and not (proc.name in (sh, "my shell")) and not ((user.name = root and proc.pname in (a, b)))',
      );
    });
  });
});
