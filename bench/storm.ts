/**
 * Storms against a real daemon process at default settings (memory stores, write-ahead log in
 * a temp dir, a token): what the ingest does to the daemon's event loop and memory, and how
 * long `/healthz` takes meanwhile. Prints one line per storm; asserts nothing.
 *
 * - 4 MiB priority: bad events with a 4 MiB priority, all different, 8 at a time
 * - 9 MB array: 40k events in one body (refused before parsing: more than the intake holds)
 * - big batches: arrays of 9,000 events, back to back
 * - 32 x 9 MiB uploads at once
 * - 1,100 idle sockets, then probes
 * - NDJSON flood: 1M events in batches of 5,000 (503s retried)
 *
 * Figures: daemon RSS peak (/proc), its event-loop delay max and p99 over the storm
 * (t1612d_nodejs_eventloop_lag_*), and /healthz round trips probed every 50 ms.
 *
 * Run alone with `tsx bench/storm.ts`; `npm run bench` calls `runStorms()` too.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import { NODE_FLAGS } from '../src/ops/heap.js';

const BIN = join(import.meta.dirname, '..', 'bin', 't1612d.js');
const TOKEN = 'storm-bench-token';
const SCALE = Number(process.env['BENCH_SCALE'] ?? '1');

interface Daemon {
  child: ChildProcess;
  port: number;
  dir: string;
}

async function startDaemon(): Promise<Daemon> {
  const dir = mkdtempSync(join(tmpdir(), 't1612d-storm-'));
  // Started as the image starts it (its node flags).
  const child = spawn(process.execPath, [...NODE_FLAGS, BIN, 'run'], {
    env: {
      PATH: process.env['PATH'] ?? '',
      T1612D_FALCO_GRPC_ADDRESS: '',
      T1612D_HTTP_ADDRESS: '127.0.0.1:0',
      T1612D_HTTP_TOKEN: TOKEN,
      T1612D_DATA_DIR: join(dir, 'data'),
      T1612D_LOG_LEVEL: 'info',
    },
    // Logs go to stderr while alerts go to stdout (no webhook here: the stdout sink).
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let out = '';
  child.stderr?.on('data', (d: Buffer) => {
    // Keep only a bounded tail: a storm logs (throttled) warnings.
    out = (out + d.toString()).slice(-65_536);
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setInterval(() => {
      const line = out.split('\n').find((l) => l.includes('"msg":"http server listening"'));
      if (line) {
        clearInterval(timer);
        resolve((JSON.parse(line) as { port: number }).port);
      }
      if (child.exitCode !== null) {
        clearInterval(timer);
        reject(new Error(`daemon exited: ${out}`));
      }
    }, 50);
  });
  return { child, port, dir };
}

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

async function scrape(port: number): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(t1612d_nodejs_eventloop_lag_(?:max|p99)_seconds|t1612d_ingest_refused_total\{reason="(\w+)"\}) ([\d.e+-]+)$/.exec(line);
    if (m) out[m[2] ?? m[1] ?? ''] = Number(m[3]);
  }
  return out;
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** Run `storm` while sampling RSS and probing /healthz; print one line. */
async function measure(d: Daemon, name: string, storm: () => Promise<string>): Promise<void> {
  await scrape(d.port); // resets the lag histogram
  const pid = d.child.pid ?? 0;
  let peak = rssMb(pid);
  const probes: number[] = [];
  let running = true;
  const sampler = (async () => {
    while (running) {
      peak = Math.max(peak, rssMb(pid));
      const t0 = performance.now();
      try {
        const r = await fetch(`http://127.0.0.1:${d.port}/healthz`, { signal: AbortSignal.timeout(10_000) });
        await r.text();
        probes.push(performance.now() - t0);
      } catch {
        probes.push(10_000);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const t0 = performance.now();
  const note = await storm();
  const secs = (performance.now() - t0) / 1000;
  running = false;
  await sampler;
  const m = await scrape(d.port);
  probes.sort((a, b) => a - b);
  console.log(
    `storm ${name.padEnd(22)} ${secs.toFixed(1).padStart(6)} s  rss peak ${peak.toFixed(0).padStart(4)} MB  ` +
      `loop delay max ${((m['t1612d_nodejs_eventloop_lag_max_seconds'] ?? NaN) * 1000).toFixed(0).padStart(4)} ms ` +
      `p99 ${((m['t1612d_nodejs_eventloop_lag_p99_seconds'] ?? NaN) * 1000).toFixed(0).padStart(4)} ms  ` +
      `/healthz p50 ${pct(probes, 50).toFixed(1)} ms p99 ${pct(probes, 99).toFixed(1)} ms (${probes.length})  ${note}`,
  );
}

function event(i: number, priority = 'Notice'): Record<string, unknown> {
  return {
    time: '2026-01-01T00:00:00.000000001Z',
    rule: `storm ${i % 100}`,
    priority,
    hostname: 'node-a',
    tags: ['t1612_egress'],
    output: 'egress',
    output_fields: { 'fd.sip': `198.51.100.${i % 250}`, 'proc.name': 'curl', 'proc.cmdline': `curl -s http://198.51.100.${i % 250}/payload-${i}` },
  };
}

/** POST a body; the status, or 0 when the connection failed (refused, reset, cut by a cap). */
async function post(agent: Agent, port: number, body: Buffer | string | Buffer[], type = 'application/json'): Promise<number> {
  try {
    const res = await request(`http://127.0.0.1:${port}/falco`, {
      method: 'POST',
      body: Array.isArray(body) ? Readable.from(body) : body,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': type },
      dispatcher: agent,
    });
    await res.body.text();
    return res.statusCode;
  } catch {
    return 0;
  }
}

function tally(statuses: number[]): string {
  const counts = new Map<number, number>();
  for (const s of statuses) counts.set(s, (counts.get(s) ?? 0) + 1);
  return [...counts].map(([s, n]) => `${n}x${s}`).join(' ');
}

async function pool<T>(n: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await fn(i);
      }
    }),
  );
  return out;
}

export async function runStorms(): Promise<void> {
  const d = await startDaemon();
  const agent = new Agent({ connections: 64, keepAliveTimeout: 2_000 });
  try {
    const big = Buffer.alloc(4 * 1024 * 1024, 'A');
    await measure(d, '4 MiB priority', async () => {
      const s = await pool(200 * SCALE, 8, (i) =>
        post(agent, d.port, [Buffer.from(`{"time":"2026-01-01T00:00:00Z","rule":"r","priority":"P${i}-`), big, Buffer.from('","output_fields":{}}')]),
      );
      return tally(s);
    });

    const nine = Buffer.from(JSON.stringify(Array.from({ length: 40_000 }, (_, i) => event(i))));
    await measure(d, `${(nine.length / 1e6).toFixed(1)} MB array (40k)`, async () => tally(await pool(10 * SCALE, 2, () => post(agent, d.port, nine))));

    const batch = Buffer.from(JSON.stringify(Array.from({ length: 9_000 }, (_, i) => event(i))));
    await measure(d, 'arrays of 9,000', async () => tally(await pool(20 * SCALE, 2, () => post(agent, d.port, batch))));

    const upload = Buffer.alloc(9 * 1024 * 1024, ' ');
    upload.write('[', 0);
    upload.write(']', upload.length - 1);
    await measure(d, '32 x 9 MiB at once', async () => tally(await pool(32, 32, () => post(agent, d.port, upload))));

    await measure(d, '1,100 idle sockets', async () => {
      const sockets: Socket[] = [];
      await Promise.all(
        Array.from({ length: 1_100 }, () => new Promise<void>((resolve) => {
          const s = connect(d.port, '127.0.0.1', () => resolve());
          s.on('error', () => resolve());
          sockets.push(s);
        })),
      );
      // Probes run meanwhile; hold the flood a few seconds.
      await new Promise((r) => setTimeout(r, 3_000));
      const open = sockets.filter((s) => !s.destroyed && !s.closed).length;
      for (const s of sockets) s.destroy();
      return `${open} of 1100 still open after 3 s`;
    });

    const lines = Array.from({ length: 5_000 }, (_, i) => JSON.stringify(event(i))).join('\n');
    await measure(d, 'NDJSON flood (1M)', async () => {
      let retried = 0;
      const s = await pool(200 * SCALE, 2, async () => {
        for (;;) {
          const status = await post(agent, d.port, lines, 'application/x-ndjson');
          if (status !== 503) return status;
          retried++;
          await new Promise((r) => setTimeout(r, 20));
        }
      });
      return `${tally(s)}, ${retried} retries after 503`;
    });
  } finally {
    await agent.close();
    d.child.kill('SIGTERM');
    await new Promise((r) => d.child.once('exit', r));
    rmSync(d.dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await runStorms();
}
