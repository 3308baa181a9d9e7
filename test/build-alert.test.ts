// The alert body built from a decided attribution: the summary sentence for each kind of
// attribution, and the connection fields taken from the egress event.
import assert from 'node:assert/strict';
import { classifyEgress, type EgressSignal } from '../src/detect/classify.js';
import { buildAlert, summarise, type AlertInput } from '../src/detect/build-alert.js';
import { TAG_EGRESS, type FalcoEvent } from '../src/model/event.js';
import { sessionRecord } from './support/records.js';

const T = 1_772_446_500_000;
const H = 'node-a';

function egress(fields: Record<string, string | null>): EgressSignal {
  const ev: FalcoEvent = {
    timeNs: BigInt(T + 1_000) * 1_000_000n,
    rule: 'egress',
    priority: 'Notice',
    source: 'syscall',
    hostname: H,
    tags: [TAG_EGRESS],
    output: 'connect',
    fields: { 'fd.sip': '203.0.113.5', 'fd.sport': '443', ...fields },
  };
  return classifyEgress(ev, H)!;
}

function input(e: EgressSignal, over: Partial<AlertInput> = {}): AlertInput {
  return {
    environment: 'prod',
    session: sessionRecord({ host: H, startedAt: T, id: 'sess1', images: ['team/app:2'] }),
    egress: e,
    attribution: 'lineage',
    severity: 'high',
    firstSeenAt: T + 1_000,
    nowMs: T + 2_000,
    ...over,
  };
}

describe('build alert: summary', () => {
  it('names the destination, its domain when known, and the process', () => {
    const named = summarise(input(egress({ 'proc.name': 'curl', 'fd.sip.name': 'evil.example' })));
    assert.equal(named, 'Image build on node-a downloaded from never-seen 203.0.113.5:443 (evil.example) via curl');
    const bare = summarise(input(egress({})));
    assert.equal(bare, 'Image build on node-a downloaded from never-seen 203.0.113.5:443');
  });

  it('says when the build came over the remote Docker API', () => {
    const s = sessionRecord({ host: H, startedAt: T, remotePeer: '198.51.100.7:4000' });
    assert.equal(
      summarise(input(egress({ 'proc.name': 'curl' }), { session: s })),
      'Image build on node-a (remote API from 198.51.100.7:4000) downloaded from never-seen 203.0.113.5:443 via curl',
    );
  });

  it("a builder's own connection reads as a pull or ADD, whatever the attribution", () => {
    const e = egress({ 'proc.name': 'dockerd' });
    for (const attribution of ['lineage', 'window'] as const) {
      assert.equal(
        summarise(input(e, { builder: true, attribution })),
        'During an image build on node-a, builder dockerd connected to never-seen 203.0.113.5:443 (a base-image pull from a registry that is not allow-listed, or ADD <url>)',
      );
    }
    assert.match(summarise(input(egress({}), { builder: true })), /, builder process connected to never-seen /);
  });

  it('an image attribution names the image the container runs', () => {
    const e = egress({ 'proc.name': 'curl', 'container.id': 'abcdefabcdef', 'container.image.repository': 'team/app', 'container.image.tag': '2' });
    assert.equal(summarise(input(e, { attribution: 'image' })), 'Container from freshly built image team/app:2 on node-a connected to never-seen 203.0.113.5:443 via curl');
    const unknown = summarise(input({ ...e, image: null }, { attribution: 'image' }));
    assert.equal(unknown, 'Container from freshly built image unknown on node-a connected to never-seen 203.0.113.5:443 via curl');
  });

  it('a window attribution says only host and time tie it', () => {
    assert.equal(
      summarise(input(egress({ 'proc.name': 'curl' }), { attribution: 'window' })),
      'During an image build on node-a, a process connected to never-seen 203.0.113.5:443 via curl (same host and time window only)',
    );
  });
});

describe('build alert: body', () => {
  it("carries the egress process's command line and container", () => {
    const a = buildAlert(input(egress({ 'proc.name': 'curl', 'proc.cmdline': 'curl http://203.0.113.5/x', 'proc.pid': '42', 'container.id': 'abcdefabcdef' })));
    assert.deepEqual(
      [a.connection.cmdline, a.connection.pid, a.connection.container_id, a.connection.attribution],
      ['curl http://203.0.113.5/x', 42, 'abcdefabcdef', 'lineage'],
    );
    assert.equal(a.build.session_id, 'sess1');
    assert.deepEqual(a.build.images, ['team/app:2']);
    assert.equal(a.evidence.at(-1)?.rule, 'egress');
    const bare = buildAlert(input(egress({ 'proc.name': 'curl' })));
    assert.deepEqual([bare.connection.cmdline, bare.connection.container_id], [null, null]);
  });

  it('a very long command line is cut', () => {
    const long = `curl ${'a'.repeat(5_000)}`;
    const a = buildAlert(input(egress({ 'proc.name': 'curl', 'proc.cmdline': long })));
    assert.ok(a.connection.cmdline !== null && a.connection.cmdline.length < long.length && a.connection.cmdline.startsWith('curl aaa'));
  });
});
