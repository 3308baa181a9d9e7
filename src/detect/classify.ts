/**
 * Classification: a FalcoEvent becomes a build signal, an egress signal, or nothing — by tag
 * (`t1612_build`, `t1612_egress`), so users' own tagged rules work. This module parses what
 * each signal needs out of `output_fields` and never throws: any field may be missing, null
 * or garbage, and a signal then simply carries less.
 *
 * The egress hot path does not call `classify()` for every event: the correlator first reads
 * the destination with `egressDestination()` and only classifies fully when the IP is not
 * already known.
 */
import type { FalcoEvent } from '../model/event.js';
import { TAG_BUILD, TAG_EGRESS, eventTimeMs } from '../model/event.js';
import { ANCESTRY_DEPTH } from '../model/fields.js';
import { formatEndpoint, isIgnoredAddress, normaliseIp } from './net.js';

/** What a build signal shows. `commit` (layer commit, `docker commit`) only extends a build. */
export type BuildActivity = 'cli' | 'step' | 'daemon' | 'api' | 'commit';

/** Process identity and lineage shared by both signal kinds. */
export interface ProcInfo {
  pid: number | null;
  name: string | null;
  exepath: string | null;
  cmdline: string | null;
  user: string | null;
  /** Parent first: proc.ppid, proc.apid[2..N]. Unknown entries are left out. */
  ancestorPids: number[];
  /** Parent first: proc.pname, proc.aname[2..N]; null where Falco had no value. */
  ancestorNames: (string | null)[];
}

interface SignalBase {
  host: string;
  /** Event time, ms since the epoch. */
  timeMs: number;
  proc: ProcInfo;
  /** Build-step cgroup markers, e.g. `buildkit:x5hq…`, `buildah:buildah3`. */
  cgroups: string[];
  /** Real container id (12 hex), null on the host or when unknown. */
  containerId: string | null;
  /** `repository[:tag]` of the container's image, null on the host or when unknown. */
  image: string | null;
  event: FalcoEvent;
}

export interface BuildSignal extends SignalBase {
  type: 'build';
  activity: BuildActivity;
  /** Image references the build command names (`-t`, `--tag`, `--destination`, `name=`). */
  images: string[];
  /** `ip:port` of a non-loopback Docker API client (activity `api`). */
  remotePeer: string | null;
}

export interface EgressSignal extends SignalBase {
  type: 'egress';
  ip: string;
  port: number | null;
  proto: string | null;
  domain: string | null;
}

export type Signal = BuildSignal | EgressSignal;

/** Step runtimes: the processes that start a build step (a normal container has containerd-shim). */
export const STEP_RUNTIMES: ReadonlySet<string> = new Set(['runc', 'buildkit-runc', 'crun']);
/** Builders that exec step runtimes directly; their own connections are pulls (attribution.ts). */
export const STEP_PARENTS: ReadonlySet<string> = new Set(['dockerd', 'buildkitd', 'buildah', 'podman', 'containerd']);

const MAX_TAGS = 16;
const MAX_CGROUPS = 8;
const MAX_FIELD = 4096;

function str(ev: FalcoEvent, name: string): string | null {
  const v = ev.fields[name];
  if (v === undefined || v === null) return null;
  return v.length > MAX_FIELD ? v.slice(0, MAX_FIELD) : v;
}

/** A positive integer pid/port, or null. */
function int(text: string | null, max: number): number | null {
  if (text === null || !/^\d{1,10}$/.test(text)) return null;
  const n = Number(text);
  return n > 0 && n <= max ? n : null;
}

const PID_MAX = 4_194_304;

export function procInfo(ev: FalcoEvent): ProcInfo {
  const ancestorPids: number[] = [];
  const ancestorNames: (string | null)[] = [];
  const ppid = int(str(ev, 'proc.ppid'), PID_MAX);
  if (ppid !== null) ancestorPids.push(ppid);
  ancestorNames.push(str(ev, 'proc.pname'));
  for (let i = 2; i <= ANCESTRY_DEPTH; i++) {
    const p = int(str(ev, `proc.apid[${i}]`), PID_MAX);
    if (p !== null) ancestorPids.push(p);
    ancestorNames.push(str(ev, `proc.aname[${i}]`));
  }
  return {
    pid: int(str(ev, 'proc.pid'), PID_MAX),
    name: str(ev, 'proc.name'),
    exepath: str(ev, 'proc.exepath'),
    cmdline: str(ev, 'proc.cmdline'),
    user: str(ev, 'user.name'),
    ancestorPids,
    ancestorNames,
  };
}

const CGROUP_PATTERNS: [RegExp, string][] = [
  // BuildKit inside dockerd (/docker/buildkit/<id>) and standalone buildkitd (/buildkit/<id>).
  [/(?:^|\/)buildkit\/([A-Za-z0-9]{3,64})/g, 'buildkit'],
  // BuildKit under the systemd cgroup driver: /system.slice/system.slice:docker:<id>.
  [/system\.slice:docker:([A-Za-z0-9]{3,64})/g, 'buildkit'],
  // buildah / podman build steps, rootful and rootless (buildah-buildah<N>-<pid>.scope).
  [/buildah-(buildah\d{1,10})/g, 'buildah'],
];

/** Build-step markers found in `thread.cgroups` (also accepts the odd `buildkit/x5h` container id). */
export function parseCgroups(text: string | null): string[] {
  if (!text) return [];
  const out: string[] = [];
  for (const [re, kind] of CGROUP_PATTERNS) {
    re.lastIndex = 0;
    let m: RegExpExecArray | null;
    while ((m = re.exec(text)) !== null && out.length < MAX_CGROUPS) {
      const key = `${kind}:${m[1] ?? ''}`;
      if (!out.includes(key)) out.push(key);
    }
  }
  return out;
}

/** True when a marker only holds a prefix of the id (the container plugin's truncated id). */
export function cgroupMatches(a: string, b: string): boolean {
  if (a === b) return true;
  const [ka, ia = ''] = a.split(':', 2);
  const [kb, ib = ''] = b.split(':', 2);
  if (ka !== kb || ka !== 'buildkit') return false;
  const [short, long] = ia.length <= ib.length ? [ia, ib] : [ib, ia];
  return short.length >= 3 && long.startsWith(short);
}

function containerOf(ev: FalcoEvent, cgroups: string[]): string | null {
  const id = str(ev, 'container.id');
  if (!id || id === 'host') return null;
  if (/^[0-9a-f]{12,64}$/.test(id)) return id.slice(0, 12);
  // Falco >= 0.41's containerd matcher can report a BuildKit step as `buildkit/<prefix>`.
  const bk = /^buildkit\/([A-Za-z0-9]{3,64})$/.exec(id);
  if (bk && cgroups.length < MAX_CGROUPS) {
    const key = `buildkit:${bk[1] ?? ''}`;
    if (!cgroups.some((c) => cgroupMatches(c, key))) cgroups.push(key);
  }
  return null;
}

/**
 * `repository[:tag]` of the container's image. A container started from a bare image id (the
 * classic builder's step containers) has no repository, or `sha256` with the id as its tag,
 * depending on how the container engine answered; `container.image` (when the rule prints it)
 * then holds the id as given, `sha256:<hex>`.
 */
function imageOf(ev: FalcoEvent): string | null {
  const repo = str(ev, 'container.image.repository');
  const tag = str(ev, 'container.image.tag');
  const given = str(ev, 'container.image');
  if (!repo || repo === 'sha256') {
    if (given && given.startsWith('sha256:')) return given;
    if (repo === 'sha256') return tag ? `sha256:${tag}` : repo;
    return given || null;
  }
  return tag ? `${repo}:${tag}` : repo;
}

/** Is this process kaniko's executor itself (not a RUN command it started)? */
export function isKanikoExecutor(proc: ProcInfo, containerId: string | null): boolean {
  return containerId !== null && proc.exepath === '/kaniko/executor';
}

const IMAGE_REF = /^[A-Za-z0-9][A-Za-z0-9._\-/:@]{0,255}$/;

function addImage(out: string[], ref: string | undefined): void {
  if (ref === undefined) return;
  const r = ref.replace(/^["']|["']$/g, '');
  if (!IMAGE_REF.test(r) || out.length >= MAX_TAGS || out.includes(r)) return;
  out.push(r);
}

/**
 * Image references named by a build command line. Falco joins argv with spaces, so splitting
 * on whitespace recovers the arguments (an argument with a space in it cannot be an image).
 */
export function imagesFromCmdline(cmdline: string | null): string[] {
  if (!cmdline) return [];
  const args = cmdline.split(/\s+/).filter((a) => a !== '');
  const out: string[] = [];
  const isCommit = args.includes('commit') && !args.includes('build');
  for (let i = 1; i < args.length; i++) {
    const a = args[i] ?? '';
    const next = args[i + 1];
    if (a === '-t' || a === '--tag' || a === '--destination' || a === '-d') {
      // kaniko's -d is --destination; docker build has no -d, buildah's -d is not a build flag.
      if (a !== '-d' || /kaniko|executor/.test(args[0] ?? '')) addImage(out, next);
      i++;
    } else if (a.startsWith('--tag=') || a.startsWith('--destination=')) {
      addImage(out, a.slice(a.indexOf('=') + 1));
    } else if (a.startsWith('-t') && a.length > 2 && !a.startsWith('--')) {
      addImage(out, a.slice(a[2] === '=' ? 3 : 2));
    } else if (a === '--output' || a === '-o' || a.startsWith('--output=')) {
      // buildctl / buildx: --output type=image,name=repo:tag[,name2],push=true
      const spec = a.startsWith('--output=') ? a.slice('--output='.length) : (next ?? '');
      if (!a.startsWith('--output=')) i++;
      const m = /(?:^|,)"?name=([^,"]+(?:,[^=,"]+(?=,|"|$))*)/.exec(spec);
      if (m?.[1]) for (const n of m[1].split(',')) addImage(out, n);
    }
  }
  if (isCommit) {
    // docker|podman|nerdctl [container] commit [flags] CONTAINER [REPOSITORY[:TAG]]
    const positional = args.slice(args.indexOf('commit') + 1).filter((a) => !a.startsWith('-'));
    if (positional.length >= 2) addImage(out, positional[positional.length - 1]);
  }
  return out;
}

function activityOf(ev: FalcoEvent, proc: ProcInfo, cgroups: string[], remote: boolean): BuildActivity {
  if (remote || str(ev, 'fd.cip') !== null) return 'api';
  const name = proc.name ?? '';
  const parent = proc.ancestorNames[0] ?? '';
  if (name === 'buildkitd') return 'daemon';
  if (name === 'exe' && parent === 'dockerd') return 'commit';
  const cmd = proc.cmdline ?? '';
  if (/(?:^|\s)commit(?:\s|$)/.test(cmd) && !/(?:^|\s)(?:build|bud|buildx)(?:\s|$)/.test(cmd)) return 'commit';
  if (STEP_RUNTIMES.has(name) || STEP_RUNTIMES.has(parent) || parent.startsWith('containerd-shim')) return 'step';
  if (cgroups.length > 0) return 'step';
  return 'cli';
}

function base(ev: FalcoEvent, host: string): Omit<SignalBase, 'event'> {
  const cgroups = parseCgroups(str(ev, 'thread.cgroups'));
  const containerId = containerOf(ev, cgroups);
  const timeMs = eventTimeMs(ev);
  return {
    host,
    timeMs: Number.isFinite(timeMs) ? timeMs : 0,
    proc: procInfo(ev),
    cgroups,
    containerId,
    image: containerId === null && str(ev, 'container.id') !== null ? null : imageOf(ev),
  };
}

export function classifyBuild(ev: FalcoEvent, host: string): BuildSignal {
  const b = base(ev, host);
  const cip = normaliseIp(str(ev, 'fd.cip'));
  const remotePeer =
    cip && !isIgnoredAddress(cip) ? formatEndpoint(cip, int(str(ev, 'fd.cport'), 65535)) : null;
  return {
    type: 'build',
    ...b,
    activity: activityOf(ev, b.proc, b.cgroups, remotePeer !== null),
    images: imagesFromCmdline(b.proc.cmdline),
    remotePeer,
    event: ev,
  };
}

/** The destination IP of an egress event, canonical, or null — the hot-path read. */
export function egressDestination(ev: FalcoEvent): string | null {
  return normaliseIp(ev.fields['fd.sip']);
}

export function classifyEgress(ev: FalcoEvent, host: string, ip?: string): EgressSignal | null {
  const dest = ip ?? egressDestination(ev);
  if (!dest) return null;
  const proto = str(ev, 'fd.l4proto');
  return {
    type: 'egress',
    ...base(ev, host),
    ip: dest,
    port: int(str(ev, 'fd.sport'), 65535),
    proto: proto ? proto.toLowerCase() : null,
    domain: str(ev, 'fd.sip.name'),
    event: ev,
  };
}

/** Build signal, egress signal, or null for events that are neither (or unusable). */
export function classify(ev: FalcoEvent, defaultHost: string): Signal | null {
  const host = ev.hostname || defaultHost;
  if (ev.tags.includes(TAG_EGRESS)) return classifyEgress(ev, host);
  if (ev.tags.includes(TAG_BUILD)) return classifyBuild(ev, host);
  return null;
}

/** Canonical image reference: registry/namespace/repo:tag, digests dropped, Docker Hub spelled out. */
export function normaliseImageRef(ref: string | null): string | null {
  if (!ref) return null;
  let r = ref.trim().toLowerCase();
  const at = r.indexOf('@');
  if (at >= 0) r = r.slice(0, at);
  if (r === '') return null;
  const slash = r.lastIndexOf('/');
  const colon = r.lastIndexOf(':');
  let tag = 'latest';
  if (colon > slash) {
    tag = r.slice(colon + 1) || 'latest';
    r = r.slice(0, colon);
  }
  const parts = r.split('/');
  const first = parts[0] ?? '';
  let registry = 'docker.io';
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    registry = first === 'index.docker.io' || first === 'registry-1.docker.io' ? 'docker.io' : first;
    parts.shift();
  }
  if (registry === 'docker.io' && parts.length === 1) parts.unshift('library');
  return `${registry}/${parts.join('/')}:${tag}`;
}

/** True when the image id looks like an untagged image (the classic builder's step containers). */
export function isBareImageId(image: string | null): boolean {
  if (!image) return false;
  return /^sha256(?::[0-9a-f]{6,64})?(?::[0-9a-f]{6,64})?$/.test(image) || /^[0-9a-f]{12,64}$/.test(image);
}
