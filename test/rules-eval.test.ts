// The shipped rules' conditions evaluated against modelled syscalls (test/support/falco-eval.ts):
// every shipped rule fires on some shipped fixture, every fixture event is one its rule really
// fires on, and the rule fixes the real captures and the scenario corpus called for hold.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseJsonPreservingBigInts } from '../src/model/event.js';
import { parseRulesFile } from '../src/rules/load.js';
import { scanCondition } from '../src/rules/condition.js';
import { compileRules, matching, syscallOf, type CompiledRule } from './support/falco-eval.js';

const here = dirname(fileURLToPath(import.meta.url));
const rulesFile = join(here, '..', 'falco-rules', 't1612_rules.yaml');
const tuningFile = join(here, '..', 'falco-rules', 'examples', 'tuning.yaml');
const FIXTURE_DIRS = [join(here, 'fixtures', 'scenarios'), join(here, 'fixtures', 'falco-captures'), join(here, 'fixtures', 'rules')];

interface Recorded {
  file: string;
  rule: string;
  time: string;
  hostname: string;
  fields: Record<string, unknown>;
}

function recorded(): Recorded[] {
  const out: Recorded[] = [];
  for (const dir of FIXTURE_DIRS) {
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.jsonl') && f !== 'malformed.jsonl')) {
      for (const line of readFileSync(join(dir, file), 'utf8').split('\n').filter((l) => l !== '')) {
        const e = parseJsonPreservingBigInts(line) as { rule: string; time: string; hostname: string; output_fields: Record<string, unknown> };
        out.push({ file, rule: e.rule, time: e.time, hostname: e.hostname, fields: e.output_fields });
      }
    }
  }
  return out;
}

/**
 * Events of the real captures that the rules of the time reported and the current rules no
 * longer do, on purpose: runc's `exe init` and dockerd's `exe -exec-root` hook (not the step's
 * command), and the removed "Image Layer Commit" (cannot fire on Docker >= 24).
 */
const RETIRED = new Set([
  'real-falco-0.43.1-builds.jsonl 2026-12-02T01:28:11.688785162Z',
  'real-falco-0.43.1-builds.jsonl 2026-12-02T01:28:11.714030700Z',
  'real-falco-0.43.1-builds.jsonl 2026-12-02T01:28:14.018855951Z',
  'real-falco-0.43.1-builds.jsonl 2026-12-02T01:28:14.041429296Z',
]);

describe('shipped rules on modelled syscalls', function () {
  this.timeout(20_000);
  let shipped: CompiledRule[];
  let tuned: CompiledRule[];
  let events: Recorded[];
  before(async () => {
    shipped = await compileRules([rulesFile]);
    tuned = await compileRules([rulesFile, tuningFile]);
    events = recorded();
  });

  it('every shipped rule fires on at least one shipped fixture (names those that do not)', () => {
    const fired = new Set<string>();
    for (const e of events) {
      for (const r of matching(shipped, syscallOf(e.fields, e.hostname))) fired.add(r);
      for (const r of matching(tuned, syscallOf(e.fields, e.hostname))) fired.add(r);
    }
    assert.deepEqual(shipped.map((r) => r.name).filter((r) => !fired.has(r)), [], 'rules no fixture matches');
  });

  it('every macro and list of the shipped file is used (real Falco -V warns about unused ones)', async () => {
    const { items } = await parseRulesFile(rulesFile);
    const conditions = items
      .filter((i) => i.kind === 'rule' || i.kind === 'macro')
      .map((i) => String(i.data['condition'] ?? ''));
    const listItems = items.filter((i) => i.kind === 'list').flatMap((i) => (i.data['items'] as unknown[]).map(String));
    const macroRefs = new Set(conditions.flatMap((c) => scanCondition(c).macros.map((m) => m.name)));
    const words = new Set([...conditions.flatMap((c) => c.split(/[\s(),]+/)), ...listItems]);
    const unused = items
      .filter((i) => (i.kind === 'macro' && !macroRefs.has(i.name)) || (i.kind === 'list' && !words.has(i.name)))
      .map((i) => `${i.kind} ${i.name}`);
    assert.deepEqual(unused, []);
  });

  it('every fixture event is one its rule fires on (shipped rules, or with the tuning example)', () => {
    const wrong: string[] = [];
    for (const e of events) {
      const known = shipped.some((r) => r.name === e.rule);
      const syscall = syscallOf(e.fields, e.hostname);
      const fires = matching(shipped, syscall).includes(e.rule) || matching(tuned, syscall).includes(e.rule);
      const retired = RETIRED.has(`${e.file} ${e.time}`) || !known;
      if (fires === retired) wrong.push(`${e.file} ${e.time} ${e.rule}: ${fires ? 'fires but is listed as retired' : 'does not fire'}`);
    }
    assert.deepEqual(wrong, []);
  });

  const step = {
    'proc.pid': '1201', 'proc.ppid': '1200', 'proc.pname': 'sh', 'proc.aname[2]': 'runc', 'proc.aname[3]': 'dockerd',
    'container.id': 'buildkit/k7d', 'thread.cgroups': 'cpuset=/docker/buildkit/k7d7nuqgydsrk97hexample cpu=/docker/buildkit/k7d7nuqgydsrk97hexample',
  };

  it('UDP: the first sendto of a fresh socket in a build step is reported although libsinsp already marked it connected', () => {
    const send = syscallOf(
      { ...step, 'evt.type': 'sendto', 'proc.name': 'exe', 'proc.cmdline': 'exe t1612.invalid 198.51.100.53', 'fd.sip': '198.51.100.53', 'fd.sport': 53, 'fd.l4proto': 'udp' },
      'vm',
      { 'fd.connected': 'true', 'fd.name_changed': 'true' },
    );
    assert.deepEqual(matching(shipped, send), ['T1612 Build Step Outbound Connection']);
    // Later sends to the same peer: no new event.
    assert.deepEqual(matching(shipped, new Map([...send, ['fd.name_changed', ['false']]])), []);
    // A configured resolver, once listed in the tuning knob, is not reported.
    assert.deepEqual(matching(tuned, syscallOf({ ...Object.fromEntries([...send].map(([k, v]) => [k, v[0]])), 'fd.sip': '192.0.2.53' }, 'vm')), []);
    // UDP outside build steps is not reported (volume).
    const ctr = syscallOf(
      { 'evt.type': 'sendto', 'proc.name': 'dig', 'proc.pname': 'containerd-shim', 'container.id': 'aaaaaaaaaaaa', 'thread.cgroups': 'cpu=/docker/aaaa', 'fd.sip': '198.51.100.53', 'fd.sport': 53, 'fd.l4proto': 'udp' },
      'vm',
    );
    assert.deepEqual(matching(shipped, ctr), []);
  });

  it('buildah --isolation chroot: a step under buildah\'s exe helper, with no runtime and no cgroup, is a build step', () => {
    const chroot = syscallOf(
      {
        'evt.type': 'connect', 'proc.name': 'curl', 'proc.cmdline': 'curl -fsSL http://198.51.100.43/x', 'proc.pname': 'sh',
        'proc.aname[2]': 'exe', 'proc.aname[3]': 'buildah', 'proc.aname[4]': 'bash', 'container.id': 'host',
        'thread.cgroups': 'cpuset=/ cpu=/user.slice', 'fd.sip': '198.51.100.43', 'fd.sport': 80, 'fd.l4proto': 'tcp',
      },
      'vm',
    );
    assert.deepEqual(matching(shipped, chroot), ['T1612 Build Step Outbound Connection']);
    const cmd = syscallOf(
      { 'evt.type': 'execve', 'proc.name': 'sh', 'proc.cmdline': 'sh -c curl -fsSL http://198.51.100.43/x', 'proc.pname': 'exe', 'proc.aname[2]': 'buildah', 'container.id': 'host', 'thread.cgroups': 'cpu=/' },
      'vm',
    );
    assert.deepEqual(matching(shipped, cmd), ['T1612 Build Step Command']);
  });

  it('a build command under a tuned CI agent is reported as expected, not dropped and not as a plain build', () => {
    const cli = syscallOf(
      { 'evt.type': 'execve', 'proc.name': 'docker', 'proc.cmdline': 'docker build -t app:1 .', 'proc.pname': 'bash', 'proc.aname[2]': 'gitlab-runner', 'container.id': 'host' },
      'vm',
    );
    assert.deepEqual(matching(shipped, cli), ['T1612 Image Build Command Executed']);
    assert.deepEqual(matching(tuned, cli), ['T1612 Expected Build Activity']);
  });

  it("runc's own re-exec and dockerd's network hook are not a step's command", () => {
    const internal = (cmdline: string) =>
      syscallOf({ 'evt.type': 'execve', 'proc.name': 'exe', 'proc.cmdline': cmdline, 'proc.pname': 'runc', 'proc.aname[2]': 'dockerd', 'container.id': 'host', 'thread.cgroups': 'cpu=/' }, 'vm');
    assert.deepEqual(matching(shipped, internal('exe init')), []);
    assert.deepEqual(matching(shipped, internal('exe -exec-root=/var/run/docker ndo5fdbed3jracmq8gbmdifp0 c6a7829bb328')), []);
  });
});
