/**
 * Scenario harness: the DETECTION.md scenario table as Falco JSON fixtures
 * (test/fixtures/scenarios/*.jsonl), each with its expected alerts, and a runner that feeds a
 * fixture through fromFalcoJson -> Correlator with a clock that follows event time.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { resolveConfig, type Config } from '../../src/config/config.js';
import type { Alert, AlertSink, Attribution, Severity } from '../../src/model/alert.js';
import { Correlator } from '../../src/detect/correlator.js';
import { eventTimeMs, fromFalcoJson, parseJsonPreservingBigInts, type FalcoEvent } from '../../src/model/event.js';
import { silentLogger } from '../../src/ops/logger.js';
import { Metrics } from '../../src/ops/metrics.js';
import type { Stores } from '../../src/store/stores.js';

export const FIXTURES = fileURLToPath(new URL('../fixtures/scenarios/', import.meta.url));

export interface ExpectedAlert {
  ip: string;
  severity: Severity;
  attribution: Attribution;
  host?: string;
  remotePeer?: string;
}

export interface Scenario {
  /** The DETECTION.md row it covers. */
  title: string;
  file: string;
  config?: Partial<Config>;
  alerts: ExpectedAlert[];
  /** IPs the environment must know afterwards (recorded even without an alert). */
  known?: string[];
  /** Lines the parser must reject as invalid. */
  invalid?: number;
}

const high = (ip: string, extra: Partial<ExpectedAlert> = {}): ExpectedAlert => ({
  ip,
  severity: 'high',
  attribution: 'lineage',
  ...extra,
});

export const SCENARIOS: Scenario[] = [
  {
    title: 'BuildKit docker build whose RUN step curls a never-seen IP: 1 alert, high, lineage',
    file: 'buildkit-run-curl.jsonl',
    // The base-image pull goes to the registry's network, allow-listed as users are told to.
    config: { allowCidrs: ['192.0.2.0/24'] },
    alerts: [high('203.0.113.9')],
  },
  {
    title: 'same via remote API (inbound to dockerd:2375 first): 1 alert, critical',
    file: 'remote-api-build.jsonl',
    alerts: [high('203.0.113.66', { severity: 'critical', remotePeer: '198.51.100.7:53422' })],
  },
  {
    title: 'remote API build whose context upload takes minutes (accept 7.5 min before the first step): critical',
    file: 'remote-api-slow-upload.jsonl',
    alerts: [high('203.0.113.155', { severity: 'critical', remotePeer: '198.51.100.23:50000' })],
  },
  { title: 'classic builder, RUN wget to a never-seen IP: 1 alert', file: 'classic-builder-wget.jsonl', alerts: [high('203.0.113.77')] },
  {
    title: 'RUN step deeper than proc.aname[6]: the BuildKit cgroup ties it to the build, 1 alert',
    file: 'deep-ancestry.jsonl',
    alerts: [high('203.0.113.142')],
  },
  {
    title: 'daemonised step under containerd-shim (nerdctl, containerd worker): the /buildkit/ cgroup ties it, 1 alert',
    file: 'daemonised-step.jsonl',
    alerts: [high('203.0.113.143')],
  },
  {
    title: 'busybox wget in a RUN step: DNS over UDP to new IPv4 and IPv6 resolvers, then the download: 3 alerts',
    file: 'busybox-dns-udp.jsonl',
    alerts: [high('198.51.100.53'), high('2001:db8:53::53'), high('203.0.113.146')],
  },
  { title: 'buildah bud fetching from a never-seen IP: 1 alert', file: 'buildah-bud.jsonl', alerts: [high('203.0.113.88')] },
  { title: 'rootless podman build fetching from a never-seen IPv6: 1 alert', file: 'podman-build.jsonl', alerts: [high('2001:db8:beef::10')] },
  { title: 'kaniko fetching from a never-seen IP: 1 alert', file: 'kaniko.jsonl', alerts: [high('203.0.113.120', { host: 'node-k' })] },
  { title: 'nerdctl build (standalone buildkitd) fetching from an IPv4-mapped IP: 1 alert', file: 'nerdctl-build.jsonl', alerts: [high('203.0.113.130')] },
  {
    title: 'build pulling only from allow-listed registries: no alert',
    file: 'allowlisted-registries.jsonl',
    config: { allowCidrs: ['192.0.2.0/26'] },
    alerts: [],
  },
  {
    title: 'the same build with no allow-list: the builder\'s own pulls are medium, the RUN step\'s fetches high',
    file: 'allowlisted-registries.jsonl',
    alerts: [
      high('192.0.2.10', { severity: 'medium', attribution: 'window' }),
      high('192.0.2.20', { severity: 'medium', attribution: 'window' }),
      high('192.0.2.30'),
      high('192.0.2.40', { severity: 'medium', attribution: 'window' }),
      high('192.0.2.45'),
    ],
  },
  {
    title: 'the builder itself downloads (ADD <url>) from a never-seen IP: 1 alert, medium; containerd\'s pulls only teach',
    file: 'builder-add-url.jsonl',
    config: { allowCidrs: ['192.0.2.0/24'] },
    alerts: [high('203.0.113.140', { severity: 'medium', attribution: 'window' })],
    known: ['203.0.113.141'],
  },
  {
    title: 'alert_builder_egress off: the builder\'s own connections only teach the first-seen set',
    file: 'builder-add-url.jsonl',
    config: { allowCidrs: ['192.0.2.0/24'], alertBuilderEgress: false },
    alerts: [],
    known: ['203.0.113.140', '203.0.113.141'],
  },
  { title: 'build contacting an IP the environment already knows (seen from any host): no alert', file: 'known-ip.jsonl', alerts: [] },
  { title: 'same new IP contacted several times in one build: exactly 1 alert', file: 'same-ip-twice.jsonl', alerts: [high('203.0.113.160')] },
  {
    title: 'same new IP contacted by two building hosts at once: exactly 1 alert between them',
    file: 'two-hosts-same-ip.jsonl',
    alerts: [high('203.0.113.170')],
  },
  {
    title: 'container from the freshly built image contacts a new IP after the build: 1 alert, image',
    file: 'image-after-build.jsonl',
    alerts: [high('203.0.113.200', { attribution: 'image' }), high('203.0.113.202', { attribution: 'image' })],
    known: ['203.0.113.201'],
  },
  {
    title: 'images named as engines report them (registry host:port, docker.io/library, podman localhost/): image alerts',
    file: 'image-names.jsonl',
    alerts: [
      high('203.0.113.190', { attribution: 'image' }),
      high('203.0.113.191', { attribution: 'image' }),
      high('203.0.113.193', { attribution: 'image', host: 'node-p' }),
    ],
    known: ['203.0.113.192'],
  },
  {
    title: 'host process contacts a new IP with no build open: no alert (IP recorded)',
    file: 'no-build-host-process.jsonl',
    alerts: [],
    known: ['203.0.113.210', '203.0.113.211'],
  },
  {
    title: 'learning period active: no alert (IP recorded); after it: alerts again',
    file: 'learning-period.jsonl',
    config: { learningPeriodMs: 3_600_000 },
    alerts: [high('203.0.113.221')],
    known: ['203.0.113.220'],
  },
  {
    title: 'IP last seen longer ago than the retention: new again',
    file: 'retention.jsonl',
    alerts: [high('203.0.113.230')],
  },
  {
    title: 'malformed, partial or <NA>-filled events: counted as invalid, never a crash',
    file: 'malformed.jsonl',
    // .250: a garbage-filled `docker build` still opens a build, and the half-filled step
    // egress after it still shows runc under dockerd; .252: the well-formed attack at the end.
    alerts: [high('203.0.113.250'), high('203.0.113.252')],
    invalid: 8,
  },
  {
    title: 'egress stamped before its build opened, within the skew, arriving first: still 1 alert; a step egress whose build signal comes too late is its own evidence',
    file: 'out-of-order.jsonl',
    alerts: [high('203.0.113.180'), high('203.0.113.181', { host: 'node-c' })],
  },
  {
    title: 'a build started by a tuned CI agent (Expected Build Activity): its step\'s new IP is learnt, never alerted; an untuned build before it alerts',
    file: 'expected-ci-build.jsonl',
    // The build before it is not tuned: its step's first contact with .10 alerts.
    alerts: [high('203.0.113.10')],
    known: ['198.51.100.200'],
  },
  {
    title: 'window-only attribution when enabled: 1 alert, medium',
    file: 'window-only.jsonl',
    config: { attributeWindowOnly: true },
    alerts: [{ ip: '203.0.113.240', severity: 'medium', attribution: 'window' }],
    known: ['203.0.113.241'],
  },
];

/** The Falco events of a fixture (valid lines only). */
export function loadEvents(file: string): FalcoEvent[] {
  const out: FalcoEvent[] = [];
  for (const line of readFileSync(`${FIXTURES}${file}`, 'utf8').split('\n')) {
    if (line === '') continue;
    try {
      out.push(fromFalcoJson(parseJsonPreservingBigInts(line)));
    } catch {
      // malformed lines are the point of some fixtures
    }
  }
  return out;
}

/** A copy of an egress event with another destination (and optionally time offset, ms). */
export function withDestination(ev: FalcoEvent, ip: string, plusMs = 0): FalcoEvent {
  return { ...ev, timeNs: ev.timeNs + BigInt(plusMs) * 1_000_000n, fields: { ...ev.fields, 'fd.sip': ip } };
}

/** A sink that keeps what it is given. */
export class CollectingSink implements AlertSink {
  readonly alerts: Alert[] = [];
  async enqueue(alert: Alert): Promise<void> {
    this.alerts.push(alert);
  }
}

/** A test configuration: no Falco, no HTTP, given store settings. */
export function testConfig(overrides: Partial<Config> = {}): Config {
  return resolveConfig({
    env: {},
    overrides: { falcoGrpcAddress: '', httpAddress: '', hostname: 'test-host', ...overrides },
  });
}

/** A clock tests can set; starts at the given ms. */
export class TestClock {
  constructor(public ms: number) {}
  readonly now = (): number => this.ms;
}

export interface ScenarioRun {
  alerts: Alert[];
  invalid: number;
  metrics: Metrics;
}

/**
 * Feed a fixture through a new Correlator on `stores`. The clock follows the newest event
 * time (so retention and learning behave as they did when the events happened), and each
 * event is decided before the next is handed in (the fixture order is the arrival order).
 */
export async function runScenario(file: string, cfg: Config, stores: Stores): Promise<ScenarioRun> {
  const sink = new CollectingSink();
  const metrics = new Metrics();
  const clock = new TestClock(0);
  const correlator = new Correlator(cfg, { stores, sink, metrics, logger: silentLogger(), now: clock.now });
  let invalid = 0;
  try {
    for (const line of readFileSync(`${FIXTURES}${file}`, 'utf8').split('\n')) {
      if (line === '') continue;
      let ev;
      try {
        ev = fromFalcoJson(parseJsonPreservingBigInts(line));
      } catch {
        invalid++;
        continue;
      }
      clock.ms = Math.max(clock.ms, eventTimeMs(ev));
      await correlator.handle(ev);
      await correlator.flush();
    }
  } finally {
    await correlator.close();
  }
  return { alerts: sink.alerts, invalid, metrics };
}
