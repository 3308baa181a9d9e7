/**
 * Classification, once per event at the detect boundary: a FalcoEvent becomes one typed signal
 * (build activity, or egress with its destination) carrying everything sessions and
 * attribution need: process lineage, build-step cgroup keys, container, image, the builder
 * engine, and what proves (or suggests) the process runs in a build step. Sessions and
 * attribution read only the signal; builder facts come from builders.ts.
 *
 * Signals are told apart by tag (`t1612_build`, `t1612_egress`), so users' own tagged rules
 * work; `t1612_expected` marks activity the user declared expected (rules README, "Tuning").
 * Parsing never throws: any field may be missing, null or garbage, and a signal then simply
 * carries less. The egress hot path reads only the destination (`egressDestination()`) and
 * classifies fully when the IP is not already known.
 */
import type { FalcoEvent } from '../model/event.js';
import { TAG_BUILD, TAG_EGRESS, TAG_EXPECTED, eventTimeMs, fieldOf } from '../model/event.js';
import { ANCESTRY_DEPTH } from '../model/fields.js';
import { formatEndpoint, isIgnoredAddress, normaliseIp } from './net.js';
import {
  BUILDER_DAEMONS,
  FETCHING_BUILDERS,
  HELPER_PARENTS,
  SHIM_PREFIX,
  STEP_RUNTIMES,
  builderExeEngine,
  builderImageEngine,
  cgroupMarks,
  engineOfCli,
  engineOfDaemon,
  normaliseImageRef,
} from './builders.js';

/** What a build signal shows. `commit` (layer commit, `docker commit`) only extends a build. */
export type BuildActivity = 'cli' | 'step' | 'daemon' | 'api' | 'commit';

/**
 * What proves an egress comes from a build step, strongest first: a build cgroup, a step
 * runtime under a builder, a builder's re-executed helper above it (buildah/podman, also
 * chroot isolation), the in-container builder (kaniko), or a container started from an
 * untagged image id (the classic builder's steps, when metadata is there). Null: nothing.
 */
export type StepProof = 'cgroup' | 'runtime' | 'helper' | 'kaniko' | 'image-id' | null;

/** Process identity and lineage shared by both signal kinds. */
export interface ProcInfo {
  pid: number | null;
  name: string | null;
  exepath: string | null;
  cmdline: string | null;
  /** The parent's command line (`proc.pcmdline`). */
  pcmdline: string | null;
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
  /** Build-step cgroup keys, e.g. `buildkit:x5hq…`, `buildah:buildah3`. */
  cgroups: string[];
  /** Real container id (12 hex), null on the host or when unknown. */
  containerId: string | null;
  /** `repository[:tag]` of the container's image as reported, null when not reported. */
  image: string | null;
  /**
   * The image canonicalised for matching (builders.ts normaliseImageRef), tagless when the
   * container plugin gave a repository but no tag. Null without image metadata.
   */
  imageRef: string | null;
  /** The builder engine the evidence names (`docker`, `buildah`, …), or null. */
  engine: string | null;
  /** Marked expected by the rules (a tuned CI agent, build host or builder image). */
  expected: boolean;
  event: FalcoEvent;
}

export interface BuildSignal extends SignalBase {
  type: 'build';
  activity: BuildActivity;
  /** Image references the build command names (`-t`, `--tag`, `--destination`, `name=`). */
  images: string[];
  /**
   * A build CLI talking to the local daemon's socket (no `-H`/`--host`/DOCKER_HOST naming a
   * TCP address): whatever the Docker API accepts meanwhile is not this build.
   */
  localClient: boolean;
  /** dockerd's builder the evidence names (DOCKER_BUILDKIT=0|1, buildx, a BuildKit step). */
  dockerBuilder: 'classic' | 'buildkit' | null;
  /** `ip:port` of a non-loopback Docker API client (activity `api`). */
  remotePeer: string | null;
}

export interface EgressSignal extends SignalBase {
  type: 'egress';
  ip: string;
  port: number | null;
  proto: string | null;
  domain: string | null;
  /** What proves the process runs in a build step (see StepProof). */
  step: StepProof;
  /** The connection is a builder's own (dockerd, buildkitd, buildah, podman, containerd, kaniko). */
  builderOwn: boolean;
  /** …and such a builder's connections are build inputs (every one but containerd). */
  fetching: boolean;
  /**
   * A containerd-shim container whose first process is `sh -c …` (how every shell-form RUN
   * step of the classic builder starts), without image metadata or with a bare image id: a
   * classic-builder step candidate (attribution.ts decides with the session's evidence).
   */
  classicCandidate: boolean;
}

export type Signal = BuildSignal | EgressSignal;

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

function procInfo(ev: FalcoEvent): ProcInfo {
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
    pcmdline: str(ev, 'proc.pcmdline'),
    user: str(ev, 'user.name'),
    ancestorPids,
    ancestorNames,
  };
}

/** Build-step cgroup keys found in `thread.cgroups` (or a runtime's arguments). */
export function parseCgroups(text: string | null): string[] {
  return cgroupMarks(text, MAX_CGROUPS).map((m) => m.key);
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
  // The container plugin reports a BuildKit step as `buildkit/<first 3 chars of its id>`.
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
 * then holds the id as given, `sha256:<hex>`. Empty metadata (the plugin fetches it
 * asynchronously) gives null.
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

/** The reference to match built images against: tagless when no tag was reported. */
function imageRefOf(ev: FalcoEvent, image: string | null): string | null {
  if (image === null || isBareImageId(image)) return null;
  const repo = str(ev, 'container.image.repository');
  const tag = str(ev, 'container.image.tag');
  const given = str(ev, 'container.image');
  // A full reference wins; a repository without a tag matches any tag of that repository.
  if (given && !given.startsWith('sha256:') && given !== repo) return normaliseImageRef(given);
  return normaliseImageRef(image, repo !== null && !tag);
}

/** Is this process kaniko's executor itself (not a RUN command it started)? */
function isKanikoExecutor(proc: ProcInfo, containerId: string | null): boolean {
  return containerId !== null && builderExeEngine(proc.exepath) !== null;
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

const SHELLS: ReadonlySet<string> = new Set(['sh', 'bash', 'ash', 'dash']);
const SHELL_C = /^(?:\/bin\/|\/usr\/bin\/)?(?:sh|bash|ash|dash) -c /;

/** [proc.name, parent, grandparent, …] */
function chain(proc: ProcInfo): (string | null)[] {
  return [proc.name, ...proc.ancestorNames];
}

/**
 * A step runtime with a builder above it and no containerd-shim between (a normal container
 * has containerd-shim, its runc long gone): the process runs in a build step. Builders whose
 * own pulls are not build inputs (containerd) do not count: containerd starts Kubernetes' and
 * `ctr`'s containers.
 */
function runtimeProof(names: (string | null)[]): boolean {
  let runtime = false;
  for (const a of names) {
    if (a === null) continue;
    if (a.startsWith(SHIM_PREFIX)) return false;
    if (runtime && FETCHING_BUILDERS.has(a)) return true;
    if (STEP_RUNTIMES.has(a)) runtime = true;
  }
  return false;
}

/** A builder's re-executed helper (`exe`) right below the builder, among the ancestors. */
function helperProof(ancestors: (string | null)[]): boolean {
  for (let i = 0; i + 1 < ancestors.length; i++) {
    const helpers = HELPER_PARENTS.get(ancestors[i + 1] ?? '');
    if (helpers?.has(ancestors[i] ?? '')) return true;
  }
  return false;
}

/**
 * The engine the lineage names: the nearest builder process above (a builder inside a step,
 * Docker-in-Docker, is the step's program, not its builder), or the step cgroup's.
 */
function engineOf(proc: ProcInfo, marks: { engine: string }[]): string | null {
  for (const a of proc.ancestorNames) {
    const e = a === null ? null : engineOfDaemon(a);
    if (e !== null && e !== 'containerd') return e;
  }
  return marks[0]?.engine ?? null;
}

function activityOf(ev: FalcoEvent, proc: ProcInfo, cgroups: string[], remote: boolean): BuildActivity {
  if (remote || str(ev, 'fd.cip') !== null) return 'api';
  const name = proc.name ?? '';
  const parent = proc.ancestorNames[0] ?? '';
  if (name === 'buildkitd') return 'daemon';
  if (name === 'exe' && parent === 'dockerd') return 'commit';
  const cmd = proc.cmdline ?? '';
  if (/(?:^|\s)commit(?:\s|$)/.test(cmd) && !/(?:^|\s)(?:build|bud|buildx)(?:\s|$)/.test(cmd)) return 'commit';
  if (STEP_RUNTIMES.has(name) || STEP_RUNTIMES.has(parent) || parent.startsWith(SHIM_PREFIX)) return 'step';
  if (cgroups.length > 0) return 'step';
  if (helperProof(proc.ancestorNames)) return 'step';
  return 'cli';
}

/**
 * Which of dockerd's builders a build signal shows. The CLI's environment is not an event
 * field, but a wrapper's command line often carries it (`sh -c DOCKER_BUILDKIT=0 docker build`).
 */
function dockerBuilderOf(proc: ProcInfo, cgroups: readonly string[], activity: BuildActivity): 'classic' | 'buildkit' | null {
  if (cgroups.length > 0) return 'buildkit';
  if (activity !== 'cli') return null;
  const text = `${proc.cmdline ?? ''} ${proc.pcmdline ?? ''}`;
  if (/(?:^|\s)DOCKER_BUILDKIT=0(?:\s|$)/.test(text)) return 'classic';
  if (/(?:^|\s)DOCKER_BUILDKIT=1(?:\s|$)/.test(text) || /(?:^|\s)buildx(?:\s|$)/.test(proc.cmdline ?? '')) return 'buildkit';
  return null;
}

/** A Docker CLI pointed at a TCP daemon: `-H tcp://…`, `--host=tcp://…`, `DOCKER_HOST=tcp://…`. */
const TCP_HOST = /(?:^|\s)(?:-H|--host)(?:\s+|=)(?:tcp|https?|ssh):\/\/|DOCKER_HOST=(?:tcp|https?|ssh):\/\//;

function base(ev: FalcoEvent, host: string): Omit<SignalBase, 'event' | 'engine'> & { marks: { engine: string }[] } {
  const marks = cgroupMarks(str(ev, 'thread.cgroups'), MAX_CGROUPS);
  const cgroups = marks.map((m) => m.key);
  const containerId = containerOf(ev, cgroups);
  const timeMs = eventTimeMs(ev);
  // container.id=host: no image. Absent container.id (users' own rules): what is printed.
  const image = containerId === null && str(ev, 'container.id') !== null ? null : imageOf(ev);
  return {
    host,
    timeMs: Number.isFinite(timeMs) ? timeMs : 0,
    proc: procInfo(ev),
    cgroups,
    marks,
    containerId,
    image,
    imageRef: imageRefOf(ev, image),
    expected: ev.tags.includes(TAG_EXPECTED),
  };
}

export function classifyBuild(ev: FalcoEvent, host: string): BuildSignal {
  const { marks, ...b } = base(ev, host);
  const cip = normaliseIp(str(ev, 'fd.cip'));
  const remotePeer =
    cip && !isIgnoredAddress(cip) ? formatEndpoint(cip, int(str(ev, 'fd.cport'), 65535)) : null;
  const activity = activityOf(ev, b.proc, b.cgroups, remotePeer !== null);
  if (STEP_RUNTIMES.has(b.proc.name ?? '')) {
    // The runtime names its step: BuildKit's executor id, buildah's container name.
    for (const m of cgroupMarks(b.proc.cmdline, MAX_CGROUPS, true)) {
      if (!b.cgroups.includes(m.key)) b.cgroups.push(m.key);
      marks.push(m);
    }
  }
  let engine: string | null;
  if (activity === 'api' || activity === 'commit') engine = 'docker';
  else if (activity === 'cli') engine = engineOfCli(b.proc.name) ?? builderExeEngine(b.proc.exepath);
  else if (activity === 'step' && (b.proc.ancestorNames[0] ?? '').startsWith(SHIM_PREFIX) && isBareImageId(b.image)) engine = 'docker';
  else engine = engineOf(b.proc, marks) ?? builderImageEngine(b.image);
  return {
    type: 'build',
    ...b,
    engine,
    activity,
    images: imagesFromCmdline(b.proc.cmdline),
    dockerBuilder: engine === 'docker' ? dockerBuilderOf(b.proc, b.cgroups, activity) : null,
    localClient: activity === 'cli' && engine === 'docker' && !TCP_HOST.test(`${b.proc.cmdline ?? ''} ${b.proc.pcmdline ?? ''}`),
    remotePeer,
    event: ev,
  };
}

/** The destination IP of an egress event, canonical, or null — the hot-path read. */
export function egressDestination(ev: FalcoEvent): string | null {
  return normaliseIp(fieldOf(ev, 'fd.sip'));
}

function stepProof(b: Omit<SignalBase, 'event' | 'engine'>): StepProof {
  if (b.cgroups.length > 0) return 'cgroup';
  if (runtimeProof(chain(b.proc))) return 'runtime';
  if (helperProof(b.proc.ancestorNames)) return 'helper';
  if (b.containerId === null) return null;
  if (builderImageEngine(b.image) !== null && !isKanikoExecutor(b.proc, b.containerId)) return 'kaniko';
  // An untagged image id: the classic builder's step containers when metadata is there.
  return isBareImageId(b.image) ? 'image-id' : null;
}

/** A containerd-shim container whose first process is `sh -c …`, with no named image. */
function classicCandidate(b: Omit<SignalBase, 'event' | 'engine'>): boolean {
  if (b.containerId === null || b.imageRef !== null) return false;
  const p = b.proc;
  const parent = p.ancestorNames[0] ?? '';
  if (SHELLS.has(parent) && (p.ancestorNames[1] ?? '').startsWith(SHIM_PREFIX)) return SHELL_C.test(p.pcmdline ?? '');
  return SHELLS.has(p.name ?? '') && parent.startsWith(SHIM_PREFIX) && SHELL_C.test(p.cmdline ?? '');
}

export function classifyEgress(ev: FalcoEvent, host: string, ip?: string): EgressSignal | null {
  const dest = ip ?? egressDestination(ev);
  if (!dest) return null;
  const proto = str(ev, 'fd.l4proto');
  const { marks, ...b } = base(ev, host);
  const step = stepProof(b);
  const name = b.proc.name;
  const kaniko = isKanikoExecutor(b.proc, b.containerId);
  const builderOwn = b.cgroups.length === 0 && ((name !== null && BUILDER_DAEMONS.has(name)) || kaniko);
  return {
    type: 'egress',
    ...b,
    engine: engineOf(b.proc, marks) ?? builderImageEngine(b.image),
    ip: dest,
    port: int(str(ev, 'fd.sport'), 65535),
    proto: proto ? proto.toLowerCase() : null,
    domain: str(ev, 'fd.sip.name'),
    step: builderOwn ? null : step,
    builderOwn,
    fetching: builderOwn && (kaniko || (name !== null && FETCHING_BUILDERS.has(name))),
    classicCandidate: !builderOwn && step === null && classicCandidate(b),
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

/** True when the image id looks like an untagged image (the classic builder's step containers). */
export function isBareImageId(image: string | null): boolean {
  if (!image) return false;
  return /^sha256(?::[0-9a-f]{6,64})?(?::[0-9a-f]{6,64})?$/.test(image) || /^[0-9a-f]{12,64}$/.test(image);
}
