/**
 * Every builder-specific fact the daemon uses, in one table: the build CLIs, the builder
 * processes that start step runtimes, the runtimes, the re-executed helpers between them, the
 * cgroup markers of their steps, whether the Docker API can drive their builds, and whether
 * their own connections are build inputs (pulls, `ADD <url>`). classify.ts reads the table to
 * turn an event into one signal; sessions.ts and attribution.ts read only that signal.
 *
 * Adding a builder = one entry here + rules in falco-rules/t1612_rules.yaml (README "Where to
 * change things"). Facts come from real process trees (docs/detection.md has each builder).
 */

/** A builder: what its build looks like to Falco. */
export interface Builder {
  /** The engine name sessions record (`docker` for everything dockerd runs). */
  engine: string;
  /** `proc.name` of its build CLIs. */
  clis: readonly string[];
  /** Long-lived builder processes that exec step runtimes (and fetch base images). */
  daemons: readonly string[];
  /** Step runtimes it execs. */
  runtimes: readonly string[];
  /**
   * Re-executed helpers between the builder and the step (`/proc/self/exe`, comm `exe`):
   * buildah's and podman's `buildah-oci-runtime` subreaper and `buildah-chroot-runtime`.
   * A process with such a helper below one of `daemons` among its ancestors runs in a step,
   * with or without a runtime (chroot isolation has none, and no cgroup either).
   */
  helpers: readonly string[];
  /** Cgroup markers of its steps: the regexp's group 1 is the step id, `kind` the key prefix. */
  cgroups: readonly { re: RegExp; kind: string }[];
  /** The same step ids in its runtime's arguments (ties a runtime event to its step's cgroup). */
  runtimeArgs?: readonly { re: RegExp; kind: string }[];
  /** The Docker API (TCP 2375/2376) can drive its builds: remote-API escalation applies. */
  dockerApi: boolean;
  /** Its own connections are build inputs (base-image pulls, pushes, `ADD <url>`). */
  fetches: boolean;
  /** Image repositories of containers whose own processes are the build (kaniko). */
  builderImages?: readonly string[];
  /** Executable of the in-container builder (kaniko). */
  exepaths?: readonly string[];
  /** Engines its CLI can drive besides its own (the buildx docker-container driver: buildkitd). */
  drives?: readonly string[];
}

export const BUILDERS: readonly Builder[] = [
  {
    // BuildKit inside dockerd (default since Docker 23; DOCKER_BUILDKIT=1 before) and the
    // classic builder (DOCKER_BUILDKIT=0), whose steps are ordinary containerd-shim containers.
    engine: 'docker',
    clis: ['docker', 'docker-buildx', 'docker-compose'],
    daemons: ['dockerd'],
    runtimes: ['runc'],
    helpers: [],
    cgroups: [
      { re: /\/docker\/buildkit\/([A-Za-z0-9]{3,64})/g, kind: 'buildkit' },
      // The systemd cgroup driver: /system.slice/system.slice:docker:<id>.
      { re: /system\.slice:docker:([A-Za-z0-9]{3,64})/g, kind: 'buildkit' },
    ],
    // runc … run --bundle /var/lib/docker/buildkit/executor/<id> <id>: the cgroup's id.
    runtimeArgs: [{ re: /\/buildkit\/executor\/([A-Za-z0-9]{20,64})(?=\s|$)/g, kind: 'buildkit' }],
    dockerApi: true,
    fetches: true,
    drives: ['buildkitd'],
  },
  {
    // Standalone BuildKit: buildx docker-container driver, CI builders, nerdctl, img.
    engine: 'buildkitd',
    clis: ['buildctl', 'nerdctl', 'img'],
    daemons: ['buildkitd'],
    runtimes: ['buildkit-runc', 'runc', 'crun'],
    helpers: [],
    cgroups: [{ re: /(?<!\/docker)(?:^|\/)buildkit\/([A-Za-z0-9]{3,64})/g, kind: 'buildkit' }],
    dockerApi: false,
    fetches: true,
  },
  {
    engine: 'buildah',
    clis: ['buildah'],
    daemons: ['buildah'],
    runtimes: ['runc', 'crun'],
    helpers: ['exe'],
    // Rootful /buildah-buildah<N>, rootless …/buildah-buildah<N>-<pid>.scope; the same name is
    // runc's container id (`runc start buildah-buildah<N>`), so runtime events carry it too.
    cgroups: [{ re: /buildah-(buildah\d{1,10})/g, kind: 'buildah' }],
    runtimeArgs: [{ re: /(?:^|\s)buildah-(buildah\d{1,10})(?=\s|$)/g, kind: 'buildah' }],
    dockerApi: false,
    fetches: true,
  },
  {
    // podman build is buildah inside podman: same helper, same cgroup names.
    engine: 'podman',
    clis: ['podman'],
    daemons: ['podman'],
    runtimes: ['runc', 'crun'],
    helpers: ['exe'],
    cgroups: [],
    dockerApi: false,
    fetches: true,
  },
  {
    // RUN commands execute inside the executor's own container.
    engine: 'kaniko',
    clis: [],
    daemons: [],
    runtimes: [],
    helpers: [],
    cgroups: [],
    dockerApi: false,
    fetches: true,
    builderImages: ['kaniko-project/executor'],
    exepaths: ['/kaniko/executor'],
  },
  {
    // containerd execs runtimes for Kubernetes (CRI) and ctr; its own pulls are never build
    // inputs (builds fetch through the builders above).
    engine: 'containerd',
    clis: [],
    daemons: ['containerd'],
    runtimes: [],
    helpers: [],
    cgroups: [],
    dockerApi: false,
    fetches: false,
  },
];

const uniq = (f: (b: Builder) => readonly string[]): ReadonlySet<string> => new Set(BUILDERS.flatMap(f));

/** Step runtimes of any builder. */
export const STEP_RUNTIMES = uniq((b) => b.runtimes);
/** Builder processes that start step runtimes. */
export const BUILDER_DAEMONS = uniq((b) => b.daemons);
/** Builder processes whose own connections are build inputs. */
export const FETCHING_BUILDERS = uniq((b) => (b.fetches ? b.daemons : []));
/** Builder processes with a re-executed helper (name -> helper comms). */
export const HELPER_PARENTS: ReadonlyMap<string, ReadonlySet<string>> = new Map(
  BUILDERS.flatMap((b) => b.daemons.filter(() => b.helpers.length > 0).map((d) => [d, new Set(b.helpers)] as const)),
);
/** Engines whose builds the Docker API can drive. */
export const DOCKER_API_ENGINES = new Set(BUILDERS.filter((b) => b.dockerApi).map((b) => b.engine));
/** `proc.name` of the container runtime shim: a normal (or classic-builder step) container. */
export const SHIM_PREFIX = 'containerd-shim';
/** The classic builder's step containers are dockerd's. */
export const CLASSIC_ENGINE = 'docker';

/** Can a build of engine `session` run a step of engine `step`? Unknown on either side: yes. */
export function sameBuild(session: string | null, step: string | null): boolean {
  if (session === null || step === null || session === step) return true;
  return BUILDERS.find((b) => b.engine === session)?.drives?.includes(step) ?? false;
}

/** The engine whose CLI this is, or null. */
export function engineOfCli(name: string | null): string | null {
  if (name === null) return null;
  return BUILDERS.find((b) => b.clis.includes(name))?.engine ?? null;
}

/** The engine of a builder daemon process name, or null. */
export function engineOfDaemon(name: string | null): string | null {
  if (name === null) return null;
  return BUILDERS.find((b) => b.daemons.includes(name))?.engine ?? null;
}

/** A step cgroup marker: key (`buildkit:<id>`) and the engine running that step. */
export interface CgroupMark {
  key: string;
  engine: string;
}

/** Build-step markers in `thread.cgroups`, or with `runtimeArgs` in a step runtime's command line. */
export function cgroupMarks(text: string | null, max: number, runtimeArgs = false): CgroupMark[] {
  if (!text) return [];
  const out: CgroupMark[] = [];
  for (const b of BUILDERS) {
    for (const { re, kind } of (runtimeArgs ? b.runtimeArgs : b.cgroups) ?? []) {
      re.lastIndex = 0;
      let m: RegExpExecArray | null;
      while ((m = re.exec(text)) !== null && out.length < max) {
        const key = `${kind}:${m[1] ?? ''}`;
        if (!out.some((o) => o.key === key)) out.push({ key, engine: b.engine });
      }
    }
  }
  return out;
}

/** Is this image (repository) one whose containers are a builder (kaniko)? */
export function builderImageEngine(image: string | null): string | null {
  if (!image) return null;
  return BUILDERS.find((b) => b.builderImages?.some((r) => image.includes(r)))?.engine ?? null;
}

/** Is this executable an in-container builder (kaniko's executor)? */
export function builderExeEngine(exepath: string | null): string | null {
  if (!exepath) return null;
  return BUILDERS.find((b) => b.exepaths?.includes(exepath))?.engine ?? null;
}

/**
 * Canonical image reference: registry/namespace/repo:tag, digests dropped, Docker Hub spelled
 * out, `:latest` implied. `tagless` leaves the tag off instead (`registry/ns/repo`), for a
 * running container whose tag the container plugin did not report: it drops the tag of
 * `host:port/repo:tag` references.
 */
export function normaliseImageRef(ref: string | null, tagless = false): string | null {
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
  const repo = `${registry}/${parts.join('/')}`;
  return tagless ? repo : `${repo}:${tag}`;
}

/** The repository part of a canonical reference (`registry/ns/repo`). */
export function repositoryOf(canonical: string): string {
  const slash = canonical.lastIndexOf('/');
  const colon = canonical.lastIndexOf(':');
  return colon > slash ? canonical.slice(0, colon) : canonical;
}

/**
 * The spellings an engine may report for an image a build named: podman and buildah store an
 * unqualified `-t app:1` as `localhost/app:1`.
 */
export function imageAliases(canonical: string): string[] {
  const hub = 'docker.io/library/';
  return canonical.startsWith(hub) ? [canonical, `localhost/${canonical.slice(hub.length)}`] : [canonical];
}
