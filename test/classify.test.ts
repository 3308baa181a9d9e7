// Classification and the address helpers it relies on.
import assert from 'node:assert/strict';
import {
  classify,
  imagesFromCmdline,
  parseCgroups,
  type BuildSignal,
  type EgressSignal,
} from '../src/detect/classify.js';
import { normaliseImageRef } from '../src/detect/builders.js';
import { CidrSet, DomainSuffixSet, isIgnoredAddress, normaliseIp } from '../src/detect/net.js';
import type { FalcoEvent } from '../src/model/event.js';
import { loadEvents } from './support/scenarios.js';

function event(tags: string[], fields: Record<string, string | null>, hostname = 'node-a'): FalcoEvent {
  return { timeNs: 1_772_446_500_000_000_000n, rule: 'r', priority: 'Notice', source: 'syscall', hostname, tags, output: 'o', fields };
}

describe('classify', () => {
  it('classifies by tag, so users\' own rules work', () => {
    assert.equal(classify(event(['t1612_build'], { 'proc.name': 'docker' }), 'h')?.type, 'build');
    assert.equal(classify(event(['x', 't1612_egress'], { 'fd.sip': '203.0.113.1' }), 'h')?.type, 'egress');
    assert.equal(classify(event(['network'], { 'fd.sip': '203.0.113.1' }), 'h'), null);
    assert.equal(classify(event(['t1612_egress'], { 'fd.sip': null }), 'h'), null);
    assert.equal(classify(event(['t1612_build'], {}, ''), 'fallback')?.host, 'fallback');
  });

  it('reads ancestry, cgroup markers, container and remote peer', () => {
    const all = loadEvents('remote-api-build.jsonl');
    const api = classify(all[0] as FalcoEvent, 'h') as BuildSignal;
    assert.equal(api.activity, 'api');
    assert.equal(api.remotePeer, '198.51.100.7:53422');
    const egress = classify(all[3] as FalcoEvent, 'h') as EgressSignal;
    assert.equal(egress.ip, '203.0.113.66');
    assert.equal(egress.port, 8080);
    assert.equal(egress.proto, 'tcp');
    assert.equal(egress.proc.pid, 31111);
    assert.deepEqual(egress.proc.ancestorPids, [31110, 31100, 812, 1]);
    assert.deepEqual(egress.proc.ancestorNames.slice(0, 4), ['sh', 'runc', 'dockerd', 'systemd']);
    assert.deepEqual(egress.cgroups, ['buildkit:k2v9rq1mz0c8wlx7ye5nb3ta4']);
    assert.equal(egress.containerId, null, 'buildkit/k2v is not a real container id');
    const step = classify(all[1] as FalcoEvent, 'h') as BuildSignal;
    assert.equal(step.activity, 'step');
  });

  it("reads a container's image however the engine spelled it, bare image ids included", () => {
    const img = (f: Record<string, string | null>) =>
      (classify(event(['t1612_egress'], { 'fd.sip': '203.0.113.1', 'container.id': 'abcdefabcdef', ...f }), 'h') as EgressSignal).image;
    assert.equal(img({ 'container.image.repository': 'localhost:5000/app', 'container.image.tag': '1' }), 'localhost:5000/app:1');
    assert.equal(img({ 'container.image.repository': 'nginx', 'container.image.tag': null }), 'nginx');
    // The classic builder's step containers run from an untagged image id.
    const hex = '9d3e5c1f2a7b8c4d6e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d';
    assert.equal(img({ 'container.image.repository': 'sha256', 'container.image.tag': hex }), `sha256:${hex}`);
    assert.equal(img({ 'container.image.repository': '', 'container.image.tag': 'latest', 'container.image': `sha256:${hex}` }), `sha256:${hex}`);
    assert.equal(img({ 'container.image.repository': null, 'container.image': null }), null);
    const host = classify(event(['t1612_egress'], { 'fd.sip': '203.0.113.1', 'container.id': 'host', 'container.image': 'x' }), 'h') as EgressSignal;
    assert.equal(host.image, null);
  });

  it('a loopback Docker API peer is not remote', () => {
    const s = classify(event(['t1612_build'], { 'fd.cip': '::1', 'fd.cport': '5000' }), 'h') as BuildSignal;
    assert.equal(s.activity, 'api');
    assert.equal(s.remotePeer, null);
    const v6 = classify(event(['t1612_build'], { 'fd.cip': '2001:db8::7', 'fd.cport': '5000' }), 'h') as BuildSignal;
    assert.equal(v6.remotePeer, '[2001:db8::7]:5000');
  });

  it('parses BuildKit, systemd BuildKit and buildah cgroups', () => {
    assert.deepEqual(parseCgroups('cpu=/docker/buildkit/x5hq3bq0fxk8sd7wqglx1dz3m memory=/docker/buildkit/x5hq3bq0fxk8sd7wqglx1dz3m'), [
      'buildkit:x5hq3bq0fxk8sd7wqglx1dz3m',
    ]);
    assert.deepEqual(parseCgroups('pids=/buildkit/abcdef'), ['buildkit:abcdef']);
    assert.deepEqual(parseCgroups('cpu=/system.slice/system.slice:docker:q1w2e3r4'), ['buildkit:q1w2e3r4']);
    assert.deepEqual(parseCgroups('0::/user.slice/user@1000.service/buildah-buildah12-3456.scope'), ['buildah:buildah12']);
    assert.deepEqual(parseCgroups('cpu=/system.slice/docker-abc.scope'), []);
    assert.deepEqual(parseCgroups(null), []);
  });

  it('finds the image tags a build command names', () => {
    assert.deepEqual(imagesFromCmdline('docker build -t a:1 -t b --tag c:2 --tag=d -te:3 .'), ['a:1', 'b', 'c:2', 'd', 'e:3']);
    assert.deepEqual(imagesFromCmdline('docker buildx build --target t -t reg.io/x/y:z --push .'), ['reg.io/x/y:z']);
    assert.deepEqual(imagesFromCmdline('executor --context=. --destination=gcr.io/p/i:1 -d gcr.io/p/i:2'), ['gcr.io/p/i:1', 'gcr.io/p/i:2']);
    assert.deepEqual(
      imagesFromCmdline('buildctl build --frontend dockerfile.v0 --output type=image,name=docker.io/library/app:nerd,push=false'),
      ['docker.io/library/app:nerd'],
    );
    assert.deepEqual(imagesFromCmdline('docker commit abc123 snap:1'), ['snap:1']);
    assert.deepEqual(imagesFromCmdline('docker build -t'), []);
    assert.deepEqual(imagesFromCmdline('docker build -t $(rm -rf /) --tag= .'), []);
    assert.deepEqual(imagesFromCmdline(null), []);
  });

  it('normalises image references for matching', () => {
    assert.equal(normaliseImageRef('alpine'), 'docker.io/library/alpine:latest');
    assert.equal(normaliseImageRef('docker.io/library/alpine:latest'), 'docker.io/library/alpine:latest');
    assert.equal(normaliseImageRef('index.docker.io/library/alpine'), 'docker.io/library/alpine:latest');
    assert.equal(normaliseImageRef('localhost:5000/app:1@sha256:abc'), 'localhost:5000/app:1');
    assert.equal(normaliseImageRef('team/app:2'), 'docker.io/team/app:2');
    assert.equal(normaliseImageRef(null), null);
  });
});

describe('net', () => {
  it('normalises IPv4, IPv6 and IPv4-mapped IPv6 to one text each', () => {
    assert.equal(normaliseIp('203.0.113.9'), '203.0.113.9');
    assert.equal(normaliseIp('::ffff:203.0.113.9'), '203.0.113.9');
    assert.equal(normaliseIp('::FFFF:cb00:7109'), '203.0.113.9');
    assert.equal(normaliseIp('2001:DB8:0:0:0:0:0:1'), '2001:db8::1');
    assert.equal(normaliseIp('[2001:db8::1]'), '2001:db8::1');
    assert.equal(normaliseIp('fe80::1%eth0'), 'fe80::1');
    assert.equal(normaliseIp('2001:db8:0:1:0:0:0:1'), '2001:db8:0:1::1');
    for (const bad of ['', 'x', '1.2.3', '1.2.3.4.5', '01.2.3.4', '256.1.1.1', ':::', '1::2::3', null]) {
      assert.equal(normaliseIp(bad), null, String(bad));
    }
  });

  it('ignores loopback, link-local, multicast and unspecified', () => {
    for (const ip of ['127.0.0.1', '0.0.0.0', '169.254.1.1', '224.0.0.251', '255.255.255.255', '::1', '::', 'fe80::1', 'ff02::1']) {
      assert.equal(isIgnoredAddress(ip), true, ip);
    }
    for (const ip of ['203.0.113.9', '10.1.2.3', '2001:db8::1']) assert.equal(isIgnoredAddress(ip), false, ip);
  });

  it('matches CIDRs and domain suffixes', () => {
    const c = new CidrSet(['192.0.2.32/28', '2001:db8:1::/48', '198.51.100.7/32']);
    assert.equal(c.contains('192.0.2.40'), true);
    assert.equal(c.contains('192.0.2.48'), false);
    assert.equal(c.contains('2001:db8:1:ffff::1'), true);
    assert.equal(c.contains('2001:db8:2::1'), false);
    assert.equal(c.contains('198.51.100.7'), true);
    const d = new DomainSuffixSet(['docker.io', '.alpinelinux.org']);
    assert.equal(d.matches('registry-1.docker.io'), true);
    assert.equal(d.matches('DOCKER.IO.'), true);
    assert.equal(d.matches('notdocker.io'), false);
    assert.equal(d.matches('dl-cdn.alpinelinux.org'), true);
    assert.equal(d.matches(null), false);
  });
});
