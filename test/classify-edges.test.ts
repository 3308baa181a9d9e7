// Classification edges: what marks an image as a bare id, field and number bounds, how a build
// signal's activity and dockerd's builder are read, and what makes a container a classic-builder
// step candidate.
import assert from 'node:assert/strict';
import { classifyBuild, classifyEgress, isBareImageId } from '../src/detect/classify.js';
import type { FalcoEvent } from '../src/model/event.js';

const T = 1_772_446_500_000;
type Fields = Record<string, string | null>;
const ev = (fields: Fields, tags = ['t1612_build']): FalcoEvent => ({
  timeNs: BigInt(T) * 1_000_000n,
  rule: 'r',
  priority: 'Notice',
  source: 'syscall',
  hostname: 'h',
  tags,
  output: 'o',
  fields,
});
const b = (fields: Fields) => classifyBuild(ev(fields), 'h');
const e = (fields: Fields) => classifyEgress(ev({ 'fd.sip': '203.0.113.1', ...fields }, ['t1612_egress']), 'h')!;

describe('classify edges', () => {
  it('bare image ids: sha256[:hex] or 12..64 lowercase hex, nothing else', () => {
    for (const id of ['sha256', 'sha256:abcdef', `sha256:${'a'.repeat(64)}`, 'abcdef123456', 'a'.repeat(64), 'sha256:abcdef:012345']) {
      assert.equal(isBareImageId(id), true, id);
    }
    for (const id of [null, '', 'abcdef12345', 'a'.repeat(65), 'ABCDEF123456', 'sha256:abcde', 'sha256:xyzxyzxyz', 'app:1', 'xsha256', 'sha256x', 'abcdef123456x', 'xabcdef123456', `sha256:${'a'.repeat(65)}`]) {
      assert.equal(isBareImageId(id), false, String(id));
    }
  });

  it('fields are cut at 4096 characters; pids and ports must be positive integers in range', () => {
    const long = `docker build ${'x'.repeat(5000)}`;
    assert.equal(b({ 'proc.cmdline': long }).proc.cmdline?.length, 4096);
    assert.equal(b({ 'proc.cmdline': 'x'.repeat(4096) }).proc.cmdline?.length, 4096);
    const pid = (p: string): number | null => b({ 'proc.pid': p }).proc.pid;
    assert.deepEqual(['1', '4194304', '4194305', '0', '-1', '12a', ' 12', '12345678901', ''].map(pid), [1, 4194304, null, null, null, null, null, null, null]);
    const port = (p: string): number | null => e({ 'fd.sport': p }).port;
    assert.deepEqual(['443', '65535', '65536', '0'].map(port), [443, 65535, null, null]);
    const anc = b({ 'proc.ppid': '10', 'proc.apid[2]': 'x', 'proc.apid[3]': '30', 'proc.pname': 'a', 'proc.aname[3]': 'c' }).proc;
    assert.deepEqual(anc.ancestorPids, [10, 30]);
    assert.deepEqual(anc.ancestorNames.slice(0, 3), ['a', null, 'c']);
    assert.equal(e({ 'fd.l4proto': 'TCP' }).proto, 'tcp');
    assert.equal(e({}).proto, null);
    assert.equal(e({ 'fd.sip.name': 'example.org' }).domain, 'example.org');
  });

  it('activity: commit, daemon, step or CLI, from the process and its parents', () => {
    const act = (f: Fields): string => b(f).activity;
    assert.equal(act({ 'proc.name': 'docker', 'proc.cmdline': 'docker commit c1 app:1' }), 'commit');
    assert.equal(act({ 'proc.name': 'docker', 'proc.cmdline': 'docker container commit c1' }), 'commit');
    assert.equal(act({ 'proc.name': 'docker', 'proc.cmdline': 'docker build --label commit .' }), 'cli');
    assert.equal(act({ 'proc.name': 'docker', 'proc.cmdline': 'docker buildx bake commit' }), 'cli');
    assert.equal(act({ 'proc.name': 'buildah', 'proc.cmdline': 'buildah bud --build-arg x=commit .' }), 'cli');
    assert.equal(act({ 'proc.name': 'docker', 'proc.cmdline': 'docker build -t recommit .' }), 'cli');
    assert.equal(act({ 'proc.name': 'exe', 'proc.pname': 'dockerd' }), 'commit');
    assert.equal(act({ 'proc.name': 'sh', 'proc.pname': 'exe', 'proc.aname[2]': 'buildah' }), 'step');
    assert.equal(act({ 'proc.name': 'sh', 'proc.pname': 'exe', 'proc.aname[2]': 'bash' }), 'cli');
    assert.equal(act({ 'proc.name': 'buildkitd' }), 'daemon');
    assert.equal(act({ 'proc.name': 'runc' }), 'step');
    assert.equal(act({ 'proc.name': 'sh', 'proc.pname': 'runc' }), 'step');
    assert.equal(act({ 'proc.name': 'sh', 'proc.pname': 'containerd-shim-runc-v2' }), 'step');
    assert.equal(act({ 'proc.name': 'sh', 'thread.cgroups': 'cpu=/docker/buildkit/abcdefabcdef' }), 'step');
    assert.equal(act({ 'proc.name': 'docker', 'proc.cmdline': 'docker build .' }), 'cli');
    assert.equal(act({ 'proc.name': 'dockerd', 'fd.cip': '198.51.100.1' }), 'api');
  });

  it("dockerd's builder: DOCKER_BUILDKIT=0|1 as a word, buildx, or a BuildKit step; never for other engines", () => {
    const builder = (f: Fields): string | null => b({ 'proc.name': 'docker', ...f }).dockerBuilder;
    assert.equal(builder({ 'proc.cmdline': 'docker build .', 'proc.pcmdline': 'sh -c DOCKER_BUILDKIT=0 docker build .' }), 'classic');
    assert.equal(builder({ 'proc.cmdline': 'DOCKER_BUILDKIT=0 docker build .' }), 'classic');
    assert.equal(builder({ 'proc.cmdline': 'docker build .', 'proc.pcmdline': 'sh -c DOCKER_BUILDKIT=1 docker build .' }), 'buildkit');
    assert.equal(builder({ 'proc.cmdline': 'docker buildx build .' }), 'buildkit');
    assert.equal(builder({ 'proc.cmdline': 'docker build .', 'proc.pcmdline': 'sh -c buildx' }), null, 'buildx counts on the CLI itself');
    assert.equal(builder({ 'proc.cmdline': 'docker build .', 'proc.pcmdline': 'sh -c DOCKER_BUILDKIT=01 docker build .' }), null);
    assert.equal(builder({ 'proc.cmdline': 'docker build .', 'proc.pcmdline': 'sh -c XDOCKER_BUILDKIT=0 docker build .' }), null);
    assert.equal(builder({ 'proc.cmdline': 'docker build .' }), null);
    assert.equal(b({ 'proc.name': 'podman', 'proc.cmdline': 'podman build .', 'proc.pcmdline': 'DOCKER_BUILDKIT=0' }).dockerBuilder, null);
    assert.equal(b({ 'proc.name': 'runc', 'proc.pname': 'dockerd', 'thread.cgroups': 'cpu=/docker/buildkit/abcdefabcdef' }).dockerBuilder, 'buildkit');
    assert.equal(b({ 'proc.name': 'runc', 'proc.pname': 'dockerd' }).dockerBuilder, null);
  });

  it('engine of a build signal: the CLI, dockerd for accepts, commits and bare-image steps under the shim', () => {
    assert.equal(b({ 'proc.name': 'buildah', 'proc.cmdline': 'buildah bud .' }).engine, 'buildah');
    assert.equal(b({ 'proc.name': 'exe', 'proc.pname': 'dockerd' }).engine, 'docker');
    assert.equal(b({ 'proc.name': 'dockerd', 'fd.cip': '198.51.100.1' }).engine, 'docker');
    const shimStep = { 'proc.name': 'sh', 'proc.pname': 'containerd-shim', 'container.id': 'abcdefabcdef' };
    assert.equal(b({ ...shimStep, 'container.image': 'sha256:abcdefabcdef' }).engine, 'docker');
    assert.equal(b({ ...shimStep, 'container.image.repository': 'nginx', 'container.image.tag': '1' }).engine, null);
    assert.equal(b({ 'proc.name': 'sh', 'proc.pname': 'runc', 'proc.aname[2]': 'buildkitd' }).engine, 'buildkitd');
  });

  it('a classic-builder step candidate: `sh -c` first process of a shim container with no named image', () => {
    const shim = 'containerd-shim-runc-v2';
    const base = { 'container.id': 'abcdefabcdef' };
    assert.equal(e({ ...base, 'proc.name': 'sh', 'proc.pname': shim, 'proc.cmdline': 'sh -c wget x' }).classicCandidate, true);
    assert.equal(e({ ...base, 'proc.name': 'bash', 'proc.pname': shim, 'proc.cmdline': '/bin/bash -c wget x' }).classicCandidate, true);
    assert.equal(e({ ...base, 'proc.name': 'wget', 'proc.pname': 'sh', 'proc.aname[2]': shim, 'proc.pcmdline': '/usr/bin/sh -c wget x' }).classicCandidate, true);
    assert.equal(e({ ...base, 'proc.name': 'wget', 'proc.pname': 'sh', 'proc.aname[2]': shim, 'proc.pcmdline': 'sh -x script' }).classicCandidate, false);
    assert.equal(e({ ...base, 'proc.name': 'wget', 'proc.pname': 'sh', 'proc.aname[2]': 'bash', 'proc.pcmdline': 'sh -c wget x' }).classicCandidate, false);
    assert.equal(e({ ...base, 'proc.name': 'sh', 'proc.pname': 'runc-x', 'proc.cmdline': 'sh -c wget x' }).classicCandidate, false);
    assert.equal(e({ ...base, 'proc.name': 'sh', 'proc.pname': shim, 'proc.cmdline': 'sh script.sh' }).classicCandidate, false);
    assert.equal(e({ ...base, 'proc.name': 'curl', 'proc.pname': shim, 'proc.cmdline': 'sh -c wget x' }).classicCandidate, false);
    assert.equal(e({ ...base, 'proc.name': 'sh', 'proc.pname': shim, 'proc.cmdline': 'sh -c wget x', 'container.image.repository': 'alpine', 'container.image.tag': '3' }).classicCandidate, false);
    assert.equal(e({ 'container.id': 'host', 'proc.name': 'sh', 'proc.pname': shim, 'proc.cmdline': 'sh -c wget x' }).classicCandidate, false);
    assert.equal(e({ ...base, 'container.image': 'sha256:abcdefabcdef', 'proc.name': 'sh', 'proc.pname': shim, 'proc.cmdline': 'sh -c wget x' }).step, 'image-id');
  });
});
