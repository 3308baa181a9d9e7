/**
 * The `t1612d` command as users run it: a real child process through bin/t1612d.js.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from './support/wait.js';

const BIN = join(import.meta.dirname, '..', 'bin', 't1612d.js');

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: Record<string, string> = {}, input?: string, timeoutMs = 25_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '/tmp', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`t1612d ${args.join(' ')} timed out; stderr: ${stderr}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

/**
 * The port a daemon started with T1612D_HTTP_ADDRESS=127.0.0.1:0 bound, read from its
 * "http server listening" log line: asking the kernel avoids racing anyone for a free port.
 */
async function listeningPort(child: ChildProcess, logs: () => string, timeoutMs = 10_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // Only whole lines: the last element may still be arriving.
    for (const line of logs().split('\n').slice(0, -1)) {
      if (!line.includes('"msg":"http server listening"')) continue;
      const { port } = JSON.parse(line) as { port?: unknown };
      assert.ok(typeof port === 'number' && port > 0, `no port in ${line}`);
      return port;
    }
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`t1612d exited before listening: ${logs()}`);
    if (Date.now() > deadline) throw new Error(`t1612d did not log "http server listening" within ${timeoutMs} ms: ${logs()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('t1612d CLI', function () {
  this.timeout(60_000);

  it('prints usage and version', async () => {
    const help = await run(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /t1612d replay FILE\|-/);
    const v = await run(['--version']);
    assert.match(v.stdout, /^t1612d \d+\.\d+\.\d+/);
  });

  it('stops start-up with one line naming a bad setting, exit 2', async () => {
    const r = await run(['run'], { T1612D_BUILD_WINDOW: 'soon', T1612D_FALCO_GRPC_ADDRESS: '' });
    assert.equal(r.code, 2);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0] ?? '', /^t1612d: invalid setting build_window \(T1612D_BUILD_WINDOW\)/);
  });

  it('rules check: takes its own options, exit 0 on the shipped rules, 2 on a wrong verb', async () => {
    const ok = await run(['rules', 'check', '--no-sysdig']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^rules check ok: .* 0 errors; conditions not compiled \(disabled\)/);
    const bad = await run(['rules', 'chek']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /did you mean 'rules check'/);
  });

  it('names an unknown command', async () => {
    const r = await run(['bulid']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command bulid/);
  });

  it('runs, serves /healthz, prints alerts alone on stdout (logs on stderr), and stops gracefully on SIGTERM', async () => {
    const { readFileSync } = await import('node:fs');
    const sample = readFileSync(join(import.meta.dirname, '..', 'examples', 'sample-events.jsonl'), 'utf8');
    const child = spawn(process.execPath, [BIN, 'run'], {
      env: {
        PATH: process.env['PATH'] ?? '',
        T1612D_FALCO_GRPC_ADDRESS: '',
        T1612D_HTTP_ADDRESS: '127.0.0.1:0',
        T1612D_LOG_LEVEL: 'info',
        T1612D_ALLOW_CIDRS: '104.16.0.0/13',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let logs = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (logs += d.toString()));
    try {
      const port = await listeningPort(child, () => logs);
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      assert.ok(health.ok, `not healthy: ${logs}`);
      await health.text();
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
      assert.equal(ready.status, 200, 'HTTP-only mode with memory stores is ready');
      await ready.text();
      const posted = await fetch(`http://127.0.0.1:${port}/falco`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson' },
        body: sample,
      });
      assert.equal(posted.status, 200, await posted.text());
      await waitFor('the alert on stdout', () => out.includes('\n'));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
      assert.match(logs, /"msg":"t1612d stopped"/);
      const lines = out.trim().split('\n');
      assert.equal(lines.length, 1, `stdout holds the one alert and nothing else: ${out}`);
      const alert = JSON.parse(lines[0] ?? '{}') as { technique?: { id: string }; destination?: { ip: string } };
      assert.equal(alert.technique?.id, 'T1612');
      assert.equal(alert.destination?.ip, '203.0.113.66');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('replays recorded events from stdin and prints each alert as one JSON line', async () => {
    const { readFileSync } = await import('node:fs');
    const sample = readFileSync(join(import.meta.dirname, '..', 'examples', 'sample-events.jsonl'), 'utf8');
    const r = await run(['replay', '-'], { T1612D_ALLOW_CIDRS: '104.16.0.0/13' }, sample);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, r.stdout);
    const alert = JSON.parse(lines[0] ?? '{}') as { technique: { id: string }; destination: { ip: string }; severity: string };
    assert.equal(alert.technique.id, 'T1612');
    assert.equal(alert.destination.ip, '203.0.113.66');
    assert.equal(alert.severity, 'critical');
    assert.match(r.stderr, /1 alerts/);
  });

  it('replay with settings from a YAML file: an allow-listed destination raises nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 't1612d-cli-'));
    try {
      const cfg = join(dir, 'tune.yaml');
      writeFileSync(cfg, 'allow_cidrs: [104.16.0.0/13, 203.0.113.0/24]\n');
      const file = join(import.meta.dirname, '..', 'examples', 'sample-events.jsonl');
      const r = await run(['replay', file, '--config', cfg]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), '');
      assert.match(r.stderr, /0 alerts/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('demo: catches the attack, stays quiet on the benign build, exits 0', async () => {
    const r = await run(['demo']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /CRITICAL T1612 Build Image on Host on node-7/);
    assert.match(r.stdout, /203\.0\.113\.66/);
    assert.match(r.stdout, /signature valid/);
    assert.match(r.stdout, /t1612d demo: OK — 2 builds, 1 alert/);
  });
});
