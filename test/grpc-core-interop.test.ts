/**
 * Interoperability with gRPC's C core, which Falco's own server is built on: a small Python
 * server (test/support/falco_core_server.py, python3-grpcio) that shares nothing with our
 * code — no .proto, hand-encoded responses, Falco 0.43's queue semantics — serves the running
 * daemon over a unix socket and over TCP with mutual TLS, with `sub` and `get`.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig, type Config } from '../src/config/config.js';
import { Daemon } from '../src/daemon.js';
import { silentLogger } from '../src/ops/logger.js';
import { Metrics } from '../src/ops/metrics.js';
import { testPki } from './support/certs.js';
import { freePort } from './support/redis.js';
import { waitFor } from './support/wait.js';

const SERVER = join(import.meta.dirname, 'support', 'falco_core_server.py');
const PYTHON = '/usr/bin/python3';
const hasGrpcio = spawnSync(PYTHON, ['-c', 'import grpc'], { stdio: 'ignore' }).status === 0;

async function startServer(args: string[]): Promise<ChildProcessWithoutNullStreams> {
  const child = spawn(PYTHON, [SERVER, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => `the C-core server to start: ${out}`, () => out.includes('ready') || child.exitCode !== null, 15_000);
  assert.equal(child.exitCode, null, out);
  return child;
}

async function stopServer(child: ChildProcessWithoutNullStreams): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.stdin.end();
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

describe('gRPC interoperability with a C-core Falco-like server', function () {
  this.timeout(60_000);
  let dir: string;

  before(function () {
    if (!hasGrpcio) {
      // CI installs python3-grpcio, so there a missing one is a broken runner.
      if (process.env['CI']) assert.fail('python3-grpcio is not installed, but CI is set and CI installs it');
      this.skip(); // the independent server needs Debian's python3-grpcio
    }
    dir = mkdtempSync(join(tmpdir(), 't1612d-core-'));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const cases: { name: string; method: 'sub' | 'get'; tls: boolean }[] = [
    { name: 'sub over a unix socket', method: 'sub', tls: false },
    { name: 'get over a unix socket', method: 'get', tls: false },
    { name: 'sub over TCP with mutual TLS', method: 'sub', tls: true },
  ];
  for (const c of cases) {
    it(`${c.name}: every event arrives, also those queued while the stream is idle`, async () => {
      const pki = testPki();
      const before = 3_000;
      const later = 500;
      let address: string;
      let serverArgs: string[];
      let tls: Partial<Config> = {};
      if (c.tls) {
        const port = await freePort();
        address = `localhost:${port}`;
        // The server reads ca.pem, srv.pem and srv.key from one directory.
        const tlsDir = mkdtempSync(join(dir, 'tls-'));
        for (const [from, to] of [[pki.caFile, 'ca.pem'], [pki.server.certFile, 'srv.pem'], [pki.server.keyFile, 'srv.key']] as const) {
          spawnSync('cp', [from, join(tlsDir, to)]);
        }
        serverArgs = [`127.0.0.1:${port}`, String(before), String(later), tlsDir];
        tls = { falcoGrpcCaFile: pki.caFile, falcoGrpcCertFile: pki.client.certFile, falcoGrpcKeyFile: pki.client.keyFile };
      } else {
        address = `unix://${join(dir, `${c.method}.sock`)}`;
        serverArgs = [address, String(before), String(later)];
      }
      const server = await startServer(serverArgs);
      const metrics = new Metrics();
      const daemon = new Daemon(
        resolveConfig({
          env: {},
          overrides: { falcoGrpcAddress: address, falcoGrpcMethod: c.method, falcoGrpcGetIntervalMs: 100, httpAddress: '', logLevel: 'silent', ...tls },
        }),
        { logger: silentLogger(), metrics },
      );
      try {
        await daemon.start();
        const egress = (): Promise<number> => metrics.value('t1612d_falco_events_total', { source: 'grpc', kind: 'egress' });
        let have = 0;
        await waitFor(() => `${before} events (have ${have})`, async () => (have = await egress()) >= before, 30_000);
        // Let the stream go idle, then queue more: only polling brings them.
        await new Promise((r) => setTimeout(r, 300));
        server.stdin.write('more\n');
        await waitFor(() => `${before + later} events (have ${have})`, async () => (have = await egress()) >= before + later, 30_000);
        await daemon.settle();
        assert.equal(await egress(), before + later, 'each counted once');
        assert.equal(await metrics.value('t1612d_falco_events_total', { kind: 'invalid' }), 0);
        assert.equal(await metrics.value('t1612d_falco_connected'), 1);
      } finally {
        await daemon.close();
        await stopServer(server);
      }
    });
  }
});
