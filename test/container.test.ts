/**
 * The image and its compose wiring on a real Docker engine: the Node base image assembled
 * without a registry (test/support/node-base-image.sh, the steps of docs/deploy.md "Building
 * the image without registry access"), the project image built from the Dockerfile on it,
 * then t1612d run with the flags each compose file gives its t1612d service, read from the
 * file, against the Falco gRPC emulator on the shared socket (docker-compose.yml) or
 * http_output-style POSTs (docker-compose.falco-0.44.yml), a real redis-server and a real
 * webhook receiver.
 *
 * Every container uses host networking so it reaches the loopback-only Redis, receiver and
 * emulator of the test; compose's network and `ports` are the only settings not taken over
 * (see runPlan in test/support/docker.ts).
 *
 * Skips only where no Docker engine can run (not root, no cgroups); under CI=true it never
 * skips (.ci/run installs docker.io and debootstrap and starts dockerd).
 */
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { join, posix } from 'node:path';
import type { Alert } from '../src/model/alert.js';
import { FalcoEmulator, responseFromJson } from '../src/demo/emulator.js';
import { ATTACK_HOST, ATTACKER_IP, REGISTRY_CIDR, demoScript, renderScript } from '../src/demo/script.js';
import { map, mounts, readYaml, splitImage, type Yaml } from './support/compose.js';
import {
  ServiceContainer,
  buildImage,
  childPids,
  dockerCannotRun,
  dockerfileArg,
  ensureBaseImage,
  ensureDockerd,
  missingTools,
  procIdentity,
  runPlan,
  docker,
  dockerOk,
} from './support/docker.js';
import { TestRedis, freePort } from './support/redis.js';
import { waitFor } from './support/wait.js';
import { inRedisSet } from './support/known.js';
import { WebhookReceiver, type ReceivedRequest } from './support/webhook-receiver.js';

const CI = process.env['CI'] === 'true';
const SECRET = `container-test-${randomBytes(6).toString('hex')}`;
/** Offered to the compose file as `.env` would; used only if the file passes it on. */
const TOKEN = `ingest-${randomBytes(12).toString('hex')}`;
/** Healthy after the first passing check: interval + start_period + retries leave ample room. */
const HEALTHY_WITHIN_MS = 120_000;
/** A documentation address (TEST-NET-3) the demo script does not use. */
const AFTER_RESTART_IP = '203.0.113.77';

interface Variant {
  file: string;
  /** Events come over the gRPC socket in the shared volume (else: POST /falco). */
  grpc: boolean;
}

const VARIANTS: Variant[] = [
  { file: 'docker-compose.yml', grpc: true },
  { file: 'docker-compose.falco-0.44.yml', grpc: false },
];

async function scriptLines(): Promise<string[]> {
  const start = BigInt(Date.now() - 5_000) * 1_000_000n;
  return (await renderScript(start)).map((ev) => JSON.stringify(ev));
}

function t1612dService(file: string): Yaml {
  return map(map(readYaml(file)['services'], `${file} services`)['t1612d'], `${file} t1612d`);
}

/** uid of a user as the image's /etc/passwd has it (numeric `uid[:gid]` as is). */
async function uidOf(image: string, user: string): Promise<number> {
  const name = user.split(':')[0] ?? user;
  if (/^\d+$/.test(name)) return Number(name);
  const r = await docker(['run', '--rm', '--network', 'none', '--entrypoint', 'id', image, '-u', name], 60_000);
  assert.equal(r.code, 0, `id -u ${name} in ${image}: ${r.stderr}`);
  return Number(r.stdout.trim());
}

describe('container image on a real Docker engine', function () {
  // docker runs, health checks every 15 s (compose's interval) and stops take longer than
  // mocha's default 30 s; every case sets its own bound below.
  this.timeout(180_000);
  let stopDockerd: (() => Promise<void>) | undefined;
  let redis: TestRedis | undefined;
  let image = '';
  let imageUser = '';

  before(async function () {
    const reason =
      dockerCannotRun() ??
      (missingTools().length > 0 ? `not installed: ${missingTools().join(', ')} (.ci/run installs docker.io and debootstrap)` : undefined);
    if (reason !== undefined) {
      // .ci/run installs and starts everything on this machine: there a reason is a failure.
      if (CI) assert.fail(`the container test must run under CI, but: ${reason}`);
      console.log(`    container test skipped: ${reason}`);
      this.skip();
    }
    // A fresh machine debootstraps the base and runs npm ci inside the build: minutes. With
    // the base image and Docker's layer cache from an earlier run it is seconds.
    this.timeout(30 * 60_000);
    stopDockerd = await ensureDockerd();
    const base = dockerfileArg('NODE_IMAGE');
    await ensureBaseImage(base);
    const images = VARIANTS.map((v) => String(t1612dService(v.file)['image']));
    assert.ok(images.every((i) => i === images[0]), `both compose files run the same image: ${images.join(', ')}`);
    // Not compose's own tag (a user's t1612d:local stays as it is): a fixed one that keeps the
    // build cache referenced between runs, and one for this run, so parallel runs on one
    // engine never run each other's build.
    const name = splitImage(images[0] as string).name;
    image = `${name}:container-test-${randomBytes(4).toString('hex')}`;
    await buildImage([`${name}:container-test`, image], base);
    imageUser = (await docker(['image', 'inspect', '--format', '{{.Config.User}}', image])).stdout.trim();
    redis = await TestRedis.start();
  });

  after(async function () {
    this.timeout(120_000);
    await redis?.close();
    if (image !== '') await docker(['rmi', image], 60_000);
    await stopDockerd?.();
  });

  for (const variant of VARIANTS) {
    describe(`${variant.file}: t1612d as compose runs it`, () => {
      const service = t1612dService(variant.file);
      let receiver: WebhookReceiver;
      let falco: FalcoEmulator | undefined;
      let container: ServiceContainer;
      let port = 0;
      let token: string | undefined;
      let prefix = '';
      const createdVolumes: string[] = [];

      before(async function () {
        this.timeout(HEALTHY_WITHIN_MS + 60_000);
        receiver = await WebhookReceiver.start();
        port = await freePort();
        prefix = TestRedis.prefix();
        // Each named volume is a Docker volume of its own, as compose would create it (a fresh
        // volume takes the ownership of the image's directory it is mounted on); it outlives
        // kill and start of the container, and the host reaches it at its mount point.
        const volumes: Record<string, string> = {};
        const volumePaths: Record<string, string> = {};
        for (const m of mounts(service).filter((m) => m.named)) {
          const volume = `t1612d-test-${m.source}-${randomBytes(3).toString('hex')}`;
          await dockerOk(['volume', 'create', volume], 30_000);
          createdVolumes.push(volume);
          volumes[m.source] = volume;
          volumePaths[m.source] = (await dockerOk(['volume', 'inspect', '--format', '{{.Mountpoint}}', volume], 30_000)).trim();
        }
        const plan = runPlan(service, variant.file, {
          name: `t1612d-test-${variant.grpc ? 'grpc' : 'http'}-${randomBytes(3).toString('hex')}`,
          image,
          httpPort: port,
          volumes,
          // What a user's .env holds; the compose file decides which of these reach t1612d.
          env: {
            T1612D_REDIS_URL: `${(redis as TestRedis).url}/0`,
            T1612D_REDIS_PREFIX: prefix,
            T1612D_WEBHOOK_URL: receiver.url,
            T1612D_WEBHOOK_SECRET: SECRET,
            T1612D_ALLOW_CIDRS: REGISTRY_CIDR,
            T1612D_HTTP_TOKEN: TOKEN,
          },
        });
        for (const [k, v] of Object.entries({ T1612D_REDIS_URL: `${(redis as TestRedis).url}/0`, T1612D_WEBHOOK_URL: receiver.url, T1612D_WEBHOOK_SECRET: SECRET })) {
          assert.equal(plan.env[k], v, `${variant.file} takes ${k} from .env`);
        }
        token = plan.env['T1612D_HTTP_TOKEN'] || undefined;

        const grpcAddress = plan.env['T1612D_FALCO_GRPC_ADDRESS'] ?? '';
        if (variant.grpc) {
          // Falco's side of the shared volume, played by the emulator on the host: the socket
          // t1612d is told to use, in the host directory mounted at that path's folder.
          assert.match(grpcAddress, /^unix:\/\//, `${variant.file}: gRPC over a unix socket`);
          const sock = grpcAddress.slice('unix://'.length);
          const shared = mounts(service).find((m) => m.named && m.target === posix.dirname(sock));
          assert.ok(shared, `${variant.file}: ${sock} lies in a volume shared with Falco`);
          falco = await FalcoEmulator.start({ address: `unix://${join(volumePaths[shared.source] as string, posix.basename(sock))}` });
        } else {
          assert.equal(grpcAddress, '', `${variant.file}: gRPC off, events arrive on POST /falco`);
        }
        container = new ServiceContainer(plan);
        await container.run();
      });

      after(async function () {
        this.timeout(120_000);
        await container?.remove();
        await falco?.close();
        for (const v of createdVolumes.splice(0)) await dockerOk(['volume', 'rm', v], 60_000);
        await receiver?.close();
      });

      it('turns healthy in docker inspect (compose healthcheck)', async function () {
        this.timeout(HEALTHY_WITHIN_MS + 10_000);
        const state = await container.waitHealthy(HEALTHY_WITHIN_MS);
        assert.equal(state.Health?.Status, 'healthy');
      });

      it('runs as the user compose says, with the capabilities and privileges it leaves', async function () {
        this.timeout(60_000);
        const state = await container.state();
        assert.ok(state.Running && state.Pid > 0);
        const expected = container.plan.user ?? imageUser;
        assert.ok(expected !== '', 'compose or the image names a user');
        const uid = await uidOf(image, expected);
        // PID 1 is tini; the daemon is its node child.
        const tini = procIdentity(state.Pid);
        const node = childPids(state.Pid).map(procIdentity).find((p) => p.name === 'node');
        assert.ok(node, `tini (${tini.name}) has a node child`);
        for (const p of [tini, node]) {
          assert.equal(p.uid, uid, `${p.name} runs as uid ${uid} (${expected})`);
          const gid = expected.split(':')[1];
          if (gid !== undefined) assert.equal(p.gid, Number(gid), `${p.name} runs as gid ${gid}`);
          const drops = (service['cap_drop'] as string[] | undefined) ?? [];
          if (drops.includes('ALL') && service['cap_add'] === undefined) assert.equal(p.capEff, 0n, `${p.name} holds no capability`);
          const opts = (service['security_opt'] as string[] | undefined) ?? [];
          if (opts.some((o) => /^no-new-privileges(:true)?$/.test(o))) assert.ok(p.noNewPrivs, `${p.name} cannot gain privileges`);
        }
        // read_only: true -> the root filesystem refuses writes, even as uid 0.
        if (service['read_only'] === true) {
          const r = await docker(['exec', container.name, 'node', '-e', "require('fs').writeFileSync('/app/probe', 'x')"], 30_000);
          assert.notEqual(r.code, 0, 'writing under /app fails');
          assert.match(r.stderr, /EROFS|read-only/i);
        }
      });

      it('refuses an unauthenticated event on /falco exactly when compose sets a token', async function () {
        this.timeout(30_000);
        // A build start on a host no other case uses: harmless if accepted.
        const [first] = await scriptLines();
        const probe = JSON.stringify({ ...(JSON.parse(first as string) as Record<string, unknown>), hostname: 'unauthenticated-probe' });
        const res = await fetch(`http://127.0.0.1:${port}/falco`, { method: 'POST', body: probe, headers: { 'content-type': 'application/json' } });
        await res.arrayBuffer();
        if (token !== undefined) {
          assert.equal(res.status, 401, `${variant.file} sets T1612D_HTTP_TOKEN: an event without it is refused`);
          const ok = await fetch(`http://127.0.0.1:${port}/falco`, {
            method: 'POST',
            body: probe,
            headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
          });
          await ok.arrayBuffer();
          assert.equal(ok.status, 200, 'the same event with the token is accepted');
        } else {
          // The compose file passes no token on: the ingest is open, as the file says (its
          // port stays on loopback). When a token is wired in, the branch above applies.
          assert.equal(res.status, 200, `${variant.file} sets no T1612D_HTTP_TOKEN: the ingest accepts the event`);
        }
      });

      /** Events into the container the way this variant's Falco sends them. */
      async function feed(lines: string[]): Promise<void> {
        if (falco) {
          for (const line of lines) falco.enqueue(responseFromJson(line));
          return;
        }
        // Falco's http_output: one event per POST, application/json.
        for (const line of lines) {
          const res = await fetch(`http://127.0.0.1:${port}/falco`, {
            method: 'POST',
            body: line,
            headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
          });
          assert.equal(res.status, 200, await res.text());
        }
      }

      /** The first delivery of an alert for `ip`, with the container's logs if none comes. */
      async function delivery(ip: string): Promise<{ req: ReceivedRequest; alert: Alert }> {
        const find = (): ReceivedRequest | undefined => receiver.requests.find((r) => (JSON.parse(r.text) as Alert).destination.ip === ip);
        await receiver.waitFor(() => find() !== undefined, 45_000, `the alert for ${ip} from the container`).catch(async (err: unknown) => {
          throw new Error(`${(err as Error).message}\n--- container logs ---\n${await container.logs()}`, { cause: err });
        });
        const req = find() as ReceivedRequest;
        return { req, alert: JSON.parse(req.text) as Alert };
      }

      it(`delivers the alert, signed, to the webhook (events over ${variant.grpc ? 'the gRPC socket' : 'POST /falco'})`, async function () {
        this.timeout(60_000);
        await feed(await scriptLines());
        const { req, alert } = await delivery(ATTACKER_IP);
        assert.equal(req.headers['x-t1612d-signature'], `sha256=${createHmac('sha256', SECRET).update(req.body).digest('hex')}`, 'HMAC-SHA256 of the exact body with the configured secret');
        assert.equal(req.headers['x-t1612d-delivery'], alert.id);
        assert.equal(alert.hostname, ATTACK_HOST);
        assert.equal(alert.severity, 'critical');
        // Every event was taken in: the metrics say so, over the daemon's HTTP port.
        await waitFor('all script events counted', async () => {
          const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
          const counted = [...text.matchAll(/^t1612d_falco_events_total\{[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
          return counted >= demoScript().length;
        });
        // The known-IP set landed in the real Redis, under the prefix compose passed on.
        const client = (redis as TestRedis).client();
        try {
          assert.equal(await inRedisSet(client, prefix, 'default', ATTACKER_IP), true);
        } finally {
          await client.quit();
        }
      });

      it('after docker kill and docker start: healthy again, and it alerts again', async function () {
        this.timeout(HEALTHY_WITHIN_MS + 90_000);
        await container.kill();
        assert.equal((await container.state()).Running, false, 'docker kill stopped it (restart: unless-stopped leaves it stopped)');
        await container.start();
        await container.waitHealthy(HEALTHY_WITHIN_MS);
        // The same attack towards an address the environment has not seen yet.
        await feed((await scriptLines()).map((l) => l.split(ATTACKER_IP).join(AFTER_RESTART_IP)));
        const { req, alert } = await delivery(AFTER_RESTART_IP);
        assert.equal(alert.severity, 'critical');
        assert.equal(req.headers['x-t1612d-signature'], `sha256=${createHmac('sha256', SECRET).update(req.body).digest('hex')}`);
      });

      // The write-ahead log's case goes beside the one above, before the stop: accept events
      // while Redis is down (redis.stop()), kill and start the container as above, bring
      // Redis back (redis.restart()) and expect their alert. The data directory's named
      // volume is a Docker volume created in before(), so it survives the kill as compose's
      // would.

      it('stops on docker stop with exit 0 within the grace period', async function () {
        this.timeout((container.plan.graceSeconds + 60) * 1000);
        const { code, state } = await container.stop();
        assert.equal(code, 0, 'docker stop succeeded');
        assert.equal(state.Running, false);
        // After the grace period docker sends SIGKILL (exit 137): 0 means the daemon finished
        // its graceful shutdown on SIGTERM before that.
        assert.equal(state.ExitCode, 0, `exit code after SIGTERM (grace ${container.plan.graceSeconds}s): ${await container.logs()}`);
        assert.equal(state.OOMKilled, false);
      });
    });
  }
});
