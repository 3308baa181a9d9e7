// The real Falco 0.43.1 captures (test/fixtures/falco-captures/README.md) through the daemon,
// exactly as `t1612d replay` runs it: each must raise exactly the alerts the README lists.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { runReplay } from '../src/replay.js';
import { silentLogger } from '../src/ops/logger.js';
import type { Config } from '../src/config/config.js';
import { TestRedis } from './support/redis.js';
import { testConfig } from './support/scenarios.js';

const DIR = fileURLToPath(new URL('./fixtures/falco-captures/', import.meta.url));

interface Capture {
  title: string;
  files: string[];
  alerts: string[];
}

const SECOND_RUN = [
  'high 198.51.100.53',
  'high 2001:db8::77',
  'high 198.51.100.77',
  'high 198.51.100.88',
  'high 198.51.100.99',
  'high 198.51.100.111',
];

const CAPTURES: Capture[] = [
  {
    title: 'first run: remote BuildKit build critical; buildah, classic builder and podman high; no docker run alerts',
    files: ['real-falco-0.43.1-builds.jsonl'],
    alerts: ['critical 198.51.100.77', 'high 198.51.100.88', 'high 198.51.100.99', 'high 198.51.100.111'],
  },
  {
    title: 'second run (no dockerd thread info): UDP, IPv6, remote build without its accept, classic builder all high',
    files: ['real-falco-0.43.1-builds-2.jsonl'],
    alerts: SECOND_RUN,
  },
  {
    title: 'third run, tuned CI agent: nothing for the agent\'s build, the rest as the second run',
    files: ['real-falco-0.43.1-builds-3-tuned.jsonl', 'tuned-agent-cli.jsonl'],
    alerts: SECOND_RUN,
  },
];

/** The lines of `files`, merged by event time (each file is in time order already). */
function mergedLines(files: readonly string[]): string[] {
  const lines = files.flatMap((f) => readFileSync(`${DIR}${f}`, 'utf8').split('\n').filter((l) => l !== ''));
  const time = (l: string): string => (JSON.parse(l) as { time: string }).time;
  return lines.sort((a, b) => (time(a) < time(b) ? -1 : time(a) > time(b) ? 1 : 0));
}

async function replay(files: readonly string[], cfg: Config): Promise<string[]> {
  const sinkhole = new Writable({ write: (_c, _e, cb) => cb() });
  const input = Readable.from(mergedLines(files).map((l) => `${l}\n`));
  const result = await runReplay(input, cfg, sinkhole, silentLogger());
  assert.equal(result.invalid, 0);
  return result.alerts.map((a) => `${a.severity} ${a.destination.ip}`).sort();
}

for (const backend of ['memory', 'redis'] as const) {
  describe(`real Falco 0.43.1 captures through the daemon (${backend} store)`, function () {
    this.timeout(30_000);
    let redis: TestRedis | undefined;
    before(async () => {
      if (backend === 'redis') redis = await TestRedis.start();
    });
    after(async () => {
      await redis?.close();
    });
    const config = (): Config =>
      testConfig(redis ? { redisUrl: redis.url, redisPrefix: TestRedis.prefix() } : {});

    for (const c of CAPTURES) {
      it(c.title, async () => {
        assert.deepEqual(await replay(c.files, config()), [...c.alerts].sort());
      });
    }

    if (backend === 'memory') {
      it('without the expected marker the agent\'s step is build activity by itself and alerts (why the rules report it)', async () => {
        const alerts = await replay(['real-falco-0.43.1-builds-3-tuned.jsonl'], config());
        assert.ok(alerts.includes('high 198.51.100.200'), alerts.join(', '));
      });
    }
  });
}
