/**
 * A real Docker engine for the container test: finding out whether one can run here, starting
 * `dockerd` when none runs (and stopping only that one), assembling the Node base image and
 * building the project image, and running a compose service as `docker run` with the flags
 * the compose file gives it, so the file and the test cannot drift apart.
 */
import assert from 'node:assert/strict';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { ROOT, environment, map, mounts, strings, type Yaml } from './compose.js';
import { waitFor } from './wait.js';

const run = promisify(execFile);

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** `docker ARGS`; never throws on a non-zero exit (the caller decides), only on a timeout. */
export async function docker(args: string[], timeoutMs = 120_000): Promise<Result> {
  try {
    const { stdout, stderr } = await run('docker', args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: unknown; stdout?: string; stderr?: string; killed?: boolean; message: string };
    if (e.killed) throw new Error(`docker ${args.join(' ')}: no answer within ${timeoutMs} ms`, { cause: err });
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** `docker ARGS` that must succeed; returns stdout. */
export async function dockerOk(args: string[], timeoutMs?: number): Promise<string> {
  const r = await docker(args, timeoutMs);
  assert.equal(r.code, 0, `docker ${args.join(' ')} failed (${r.code}): ${r.stderr.trim().slice(-2000)}`);
  return r.stdout;
}

function onPath(cmd: string): boolean {
  return (process.env['PATH'] ?? '').split(':').some((d) => d !== '' && existsSync(join(d, cmd)));
}

/**
 * Why a Docker engine cannot run on this machine at all (the only reasons to skip), or
 * undefined. Missing packages are not among them: .ci/run installs those.
 */
export function dockerCannotRun(): string | undefined {
  if (process.getuid?.() !== 0) return 'running dockerd needs root';
  const cg = '/sys/fs/cgroup';
  if (!existsSync(cg) || readdirSync(cg).length === 0) return `no cgroup filesystem at ${cg}`;
  return undefined;
}

/** Tools the test needs that are not installed (.ci/run installs them with apt). */
export function missingTools(): string[] {
  return ['docker', 'dockerd', 'debootstrap', 'tar'].filter((t) => !onPath(t) && !existsSync(join('/usr/sbin', t)));
}

async function engineAnswers(): Promise<boolean> {
  try {
    return (await docker(['info', '--format', '{{.ServerVersion}}'], 15_000)).code === 0;
  } catch {
    return false;
  }
}

/**
 * Makes sure an engine answers. When none does, starts `dockerd` (no iptables rules: the
 * test uses host networking only) and returns a function that stops it again; when one
 * already runs, returns a function that leaves it alone.
 */
export async function ensureDockerd(): Promise<() => Promise<void>> {
  if (await engineAnswers()) return async () => undefined;
  const dockerd = onPath('dockerd') ? 'dockerd' : '/usr/sbin/dockerd';
  const logDir = mkdtempSync(join(tmpdir(), 't1612d-dockerd-'));
  const logFile = join(logDir, 'dockerd.log');
  const fd = openSync(logFile, 'a');
  const child: ChildProcess = spawn(dockerd, ['--iptables=false'], { stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  const exited = once(child, 'exit');
  try {
    await waitFor(
      () => `dockerd to answer (log: ${readFileSync(logFile, 'utf8').slice(-1500)})`,
      async () => {
        assert.equal(child.exitCode, null, `dockerd exited: ${readFileSync(logFile, 'utf8').slice(-1500)}`);
        return engineAnswers();
      },
      60_000,
    );
  } catch (err) {
    child.kill('SIGTERM');
    throw err;
  }
  return async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(logDir, { recursive: true, force: true });
  };
}

/** The default of the Dockerfile's `ARG NAME=default`. */
export function dockerfileArg(name: string): string {
  const m = new RegExp(`^ARG ${name}=(\\S+)\\s*$`, 'm').exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
  assert.ok(m?.[1], `Dockerfile declares ARG ${name}=<default>`);
  return m[1];
}

/** Runs a command with its output in a log file; on failure, throws with the log's tail. */
export async function runLogged(cmd: string, args: string[], what: string, timeoutMs: number, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const logDir = mkdtempSync(join(tmpdir(), 't1612d-log-'));
  const logFile = join(logDir, 'out.log');
  const fd = openSync(logFile, 'w');
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', fd, fd], env });
  closeSync(fd);
  const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
  try {
    const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    if (code !== 0) {
      throw new Error(`${what} failed (${code ?? signal}${signal === 'SIGTERM' ? `, over ${timeoutMs} ms?` : ''}):\n${readFileSync(logFile, 'utf8').slice(-4000)}`);
    }
  } finally {
    clearTimeout(timer);
    rmSync(logDir, { recursive: true, force: true });
  }
}

/** The Node base image under TAG, assembled offline unless already there (see the script). */
export async function ensureBaseImage(tag: string): Promise<void> {
  await runLogged('bash', [join(ROOT, 'test', 'support', 'node-base-image.sh'), tag], `assembling base image ${tag}`, 15 * 60_000);
}

/**
 * `docker build` of the project image on the given base. The build's own RUN steps (npm ci,
 * apt-get install tini) reach the registries through the host's network; the base image
 * carries NODE_EXTRA_CA_CERTS for npm.
 */
export async function buildImage(tags: string[], nodeImage: string): Promise<void> {
  await runLogged(
    'docker',
    ['build', '--network', 'host', '--build-arg', `NODE_IMAGE=${nodeImage}`, ...tags.flatMap((t) => ['-t', t]), '.'],
    `docker build -t ${tags.join(' -t ')}`,
    20 * 60_000,
  );
}

/** POSIX shell quoting, for the CMD-form healthcheck that `docker run` only takes as a string. */
function shellQuote(s: string): string {
  return /^[A-Za-z0-9_\-./:=@]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Compose durations as these files write them (`15s`, `1m30s`, `500ms`) -> seconds. */
export function composeSeconds(v: unknown, what: string): number {
  const text = String(v);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let used = 0;
  for (const m of text.matchAll(re)) {
    const n = Number(m[1]);
    total += m[2] === 'ms' ? n / 1000 : m[2] === 's' ? n : m[2] === 'm' ? n * 60 : n * 3600;
    used += m[0].length;
  }
  assert.ok(used > 0 && used === text.length, `${what}: "${text}" is a compose duration`);
  return total;
}

/** Compose's default when a service sets no stop_grace_period. */
const DEFAULT_GRACE_S = 10;

export interface RunOptions {
  /** Container name. */
  name: string;
  /** The image to run instead of the service's `image` (a tag of the same build). */
  image?: string;
  /** Stands for the shell environment plus `.env` when the compose file is interpolated. */
  env: Record<string, string>;
  /** The Docker volume (or a host directory) standing for each named volume the service mounts. */
  volumes: Record<string, string>;
  /**
   * The service's HTTP port on the host. The container runs with host networking (to reach
   * the loopback-only Redis and webhook receiver of the test), so compose's network and
   * `ports` do not apply; T1612D_HTTP_ADDRESS moves to 127.0.0.1:httpPort and the
   * healthcheck's URL with it.
   */
  httpPort: number;
}

export interface RunPlan {
  /** Arguments after `docker run -d`, image last. */
  args: string[];
  /** The environment the container gets (compose's, interpolated, with the HTTP address moved). */
  env: Record<string, string>;
  /** `docker stop` grace period in seconds (stop_grace_period, or compose's default). */
  graceSeconds: number;
  /** The user compose sets, or undefined for the image's. */
  user: string | undefined;
  image: string;
}

/** Keys of a service this translation knows; any other one fails the test (so nothing is silently dropped). */
const HANDLED = new Set([
  'build',
  'image',
  'restart',
  'depends_on',
  'user',
  'cap_drop',
  'cap_add',
  'security_opt',
  'read_only',
  'tmpfs',
  'environment',
  'volumes',
  'ports',
  'healthcheck',
  'stop_grace_period',
  'stop_signal',
  'init',
]);

/**
 * The `docker run` arguments for a compose service: every flag compose would give the
 * container, except networking (see RunOptions.httpPort) and depends_on (the test starts the
 * stand-ins itself).
 */
export function runPlan(service: Yaml, composeFile: string, o: RunOptions): RunPlan {
  const unknown = Object.keys(service).filter((k) => !HANDLED.has(k));
  assert.deepEqual(unknown, [], `${composeFile}: the container test does not translate these service keys yet`);
  const image = o.image ?? String(service['image']);
  const args = ['--name', o.name, '--network', 'host'];
  if (service['restart'] !== undefined) args.push('--restart', String(service['restart']));
  const user = service['user'] === undefined ? undefined : String(service['user']);
  if (user !== undefined) args.push('--user', user);
  for (const c of strings(service['cap_drop'] ?? [], 'cap_drop')) args.push('--cap-drop', c);
  for (const c of strings(service['cap_add'] ?? [], 'cap_add')) args.push('--cap-add', c);
  for (const s of strings(service['security_opt'] ?? [], 'security_opt')) args.push('--security-opt', s);
  if (service['read_only'] === true) args.push('--read-only');
  const tmpfs = service['tmpfs'];
  for (const t of typeof tmpfs === 'string' ? [tmpfs] : strings(tmpfs ?? [], 'tmpfs')) args.push('--tmpfs', t);
  if (service['init'] === true) args.push('--init');
  if (service['stop_signal'] !== undefined) args.push('--stop-signal', String(service['stop_signal']));
  const graceSeconds = service['stop_grace_period'] === undefined ? DEFAULT_GRACE_S : composeSeconds(service['stop_grace_period'], 'stop_grace_period');

  const env = environment(service, o.env);
  const composeHttp = env['T1612D_HTTP_ADDRESS'];
  assert.ok(composeHttp, `${composeFile}: t1612d sets T1612D_HTTP_ADDRESS (health needs the HTTP server)`);
  const composePort = Number(/:(\d+)$/.exec(composeHttp)?.[1]);
  env['T1612D_HTTP_ADDRESS'] = `127.0.0.1:${o.httpPort}`;
  for (const [k, v] of Object.entries(env)) args.push('--env', `${k}=${v}`);

  for (const m of mounts(service)) {
    let source: string;
    if (m.named) {
      const volume = o.volumes[m.source];
      assert.ok(volume, `${composeFile}: named volume ${m.source} needs a volume in the test`);
      source = volume;
    } else {
      source = isAbsolute(m.source) ? m.source : resolve(ROOT, m.source);
    }
    args.push('--volume', `${source}:${m.target}${m.readOnly ? ':ro' : ''}`);
  }

  if (service['healthcheck'] !== undefined) {
    const hc = map(service['healthcheck'], 'healthcheck');
    const test = strings(hc['test'], 'healthcheck.test');
    assert.ok(test[0] === 'CMD' || test[0] === 'CMD-SHELL', `${composeFile}: healthcheck.test is CMD or CMD-SHELL form`);
    const local = `127.0.0.1:${composePort}/`;
    const body = test.slice(1).map((part) => {
      if (!part.includes('127.0.0.1:')) return part;
      assert.ok(part.includes(local), `${composeFile}: the healthcheck probes T1612D_HTTP_ADDRESS's port (${local})`);
      return part.split(local).join(`127.0.0.1:${o.httpPort}/`);
    });
    args.push('--health-cmd', test[0] === 'CMD' ? body.map(shellQuote).join(' ') : body.join(' '));
    for (const [key, flag] of [
      ['interval', '--health-interval'],
      ['timeout', '--health-timeout'],
      ['start_period', '--health-start-period'],
    ] as const) {
      if (hc[key] !== undefined) args.push(flag, `${composeSeconds(hc[key], `healthcheck.${key}`)}s`);
    }
    if (hc['retries'] !== undefined) args.push('--health-retries', String(hc['retries']));
  }
  args.push(image);
  return { args, env, graceSeconds, user, image };
}

/** What `docker inspect` says about a container's state. */
export interface State {
  Status: string;
  Running: boolean;
  Pid: number;
  ExitCode: number;
  OOMKilled: boolean;
  Health?: { Status: string; Log?: { ExitCode: number; Output: string }[] };
}

/** One process's identity and privileges, from /proc/PID/status on the host. */
export interface ProcIdentity {
  pid: number;
  name: string;
  uid: number;
  gid: number;
  capEff: bigint;
  noNewPrivs: boolean;
}

export function procIdentity(pid: number): ProcIdentity {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (k: string): string => {
    const m = new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status);
    assert.ok(m?.[1] !== undefined, `/proc/${pid}/status has ${k}`);
    return m[1];
  };
  return {
    pid,
    name: field('Name'),
    uid: Number(field('Uid').split(/\s+/)[0]),
    gid: Number(field('Gid').split(/\s+/)[0]),
    capEff: BigInt(`0x${field('CapEff')}`),
    noNewPrivs: field('NoNewPrivs') === '1',
  };
}

/** Direct children of a host process (scans /proc: children files need a kernel option). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const m = /^PPid:\s*(\d+)$/m.exec(readFileSync(`/proc/${entry}/status`, 'utf8'));
      if (Number(m?.[1]) === pid) out.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return out;
}

/**
 * A compose service run as a container. Its volumes outlive it, so a case can `kill()` it,
 * `start()` it again and find its data where it left it.
 */
export class ServiceContainer {
  private created = false;

  constructor(readonly plan: RunPlan) {}

  get name(): string {
    return this.plan.args[this.plan.args.indexOf('--name') + 1] as string;
  }

  /** `docker run -d` with the plan. */
  async run(): Promise<void> {
    await docker(['rm', '-f', this.name], 30_000);
    this.created = true;
    await dockerOk(['run', '-d', ...this.plan.args], 60_000);
  }

  /** `docker start` after a stop or kill (same container, same mounts). */
  async start(): Promise<void> {
    await dockerOk(['start', this.name], 60_000);
  }

  /** `docker kill` (SIGKILL: nothing gets to clean up). */
  async kill(): Promise<void> {
    await dockerOk(['kill', this.name], 30_000);
  }

  async state(): Promise<State> {
    return JSON.parse(await dockerOk(['inspect', '--format', '{{json .State}}', this.name], 30_000)) as State;
  }

  /** How often the restart policy started it again after it exited by itself. */
  async restartCount(): Promise<number> {
    return Number((await dockerOk(['inspect', '--format', '{{.RestartCount}}', this.name], 30_000)).trim());
  }

  async logs(): Promise<string> {
    const r = await docker(['logs', '--tail', '60', this.name], 30_000);
    return `${r.stdout}${r.stderr}`;
  }

  /** Waits until `docker inspect` reports healthy; fails at once if the container stops. */
  async waitHealthy(timeoutMs: number): Promise<State> {
    let last: State | undefined;
    try {
      await waitFor(
        () => `${this.name} healthy (state: ${JSON.stringify(last)})`,
        async () => {
          last = await this.state();
          assert.ok(last.Running, `${this.name} stopped (exit ${last.ExitCode}): ${await this.logs()}`);
          await new Promise((r) => setTimeout(r, 250));
          return last.Health?.Status === 'healthy';
        },
        timeoutMs,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- logs ---\n${await this.logs()}`, { cause: err });
    }
    return last as State;
  }

  /** `docker stop` with the plan's grace period; returns the command's exit code and the state after. */
  async stop(): Promise<{ code: number; state: State }> {
    const r = await docker(['stop', '--time', String(this.plan.graceSeconds), this.name], (this.plan.graceSeconds + 30) * 1000);
    return { code: r.code, state: await this.state() };
  }

  /** Remove the container (idempotent). */
  async remove(): Promise<void> {
    if (!this.created) return;
    await docker(['rm', '-f', this.name], 60_000);
    this.created = false;
  }
}
