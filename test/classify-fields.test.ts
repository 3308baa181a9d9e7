// How classification reads single fields: container ids, image metadata, the image references a
// build command names, what an `exe` process is, and a CLI pointed at a remote daemon.
import assert from 'node:assert/strict';
import { classifyBuild, classifyEgress, imagesFromCmdline } from '../src/detect/classify.js';
import type { FalcoEvent } from '../src/model/event.js';
import { falcoEvent } from './support/records.js';

type Fields = Record<string, string | null>;
const ev = (fields: Fields, tags: string[]): FalcoEvent => falcoEvent(fields, tags);
const build = (fields: Fields) => classifyBuild(ev(fields, ['t1612_build']), 'h');
const egress = (fields: Fields) => classifyEgress(ev({ 'fd.sip': '203.0.113.1', ...fields }, ['t1612_egress']), 'h')!;

describe('classify: container ids', () => {
  it('takes a container id only when the whole field is hex, and a BuildKit step only when the whole field names one', () => {
    assert.equal(egress({ 'container.id': '0123456789abcdef' }).containerId, '0123456789ab');
    assert.equal(egress({ 'container.id': '0123456789abcdef-x' }).containerId, null);
    assert.deepEqual(egress({ 'container.id': 'buildkit/k2v' }).cgroups, ['buildkit:k2v']);
    assert.deepEqual(egress({ 'container.id': 'buildkit/k2v-x' }).cgroups, []);
  });
});

describe('classify: image metadata', () => {
  it('gives a host process no image reference, whatever image field the rule printed', () => {
    const s = egress({ 'container.id': 'host', 'container.image': 'alpine:3.20', 'container.image.repository': null });
    assert.equal(s.image, null);
    assert.equal(s.imageRef, null);
  });

  it('reads an image id reported as repository sha256 from its tag, not from another printed image', () => {
    const id = 'abcdef0123456789';
    const s = egress({ 'container.id': '0123456789ab', 'container.image.repository': 'sha256', 'container.image.tag': id, 'container.image': 'alpine' });
    assert.equal(s.image, `sha256:${id}`);
    assert.equal(s.imageRef, null);
  });

  it('matches on repository and tag when the printed image is an id', () => {
    const s = egress({
      'container.id': '0123456789ab',
      'container.image.repository': 'registry.example.com/app',
      'container.image.tag': '1.2',
      'container.image': `sha256:${'a'.repeat(64)}`,
    });
    assert.equal(s.image, 'registry.example.com/app:1.2');
    assert.equal(s.imageRef, 'registry.example.com/app:1.2');
  });
});

describe('classify: images a build command names', () => {
  it('reads kaniko\'s --destination given as a separate argument', () => {
    assert.deepEqual(imagesFromCmdline('/kaniko/executor --context dir:///ws --destination registry.example.com/app:1'), ['registry.example.com/app:1']);
  });

  it('reads name= from --output=… wherever it stands, and the arguments after it', () => {
    assert.deepEqual(imagesFromCmdline('buildctl build --output=name=registry.example.com/app:1,push=true'), ['registry.example.com/app:1']);
    assert.deepEqual(imagesFromCmdline('docker buildx build --output=type=image,name=registry.example.com/app:1 --tag registry.example.com/app:2 .'), [
      'registry.example.com/app:1',
      'registry.example.com/app:2',
    ]);
  });
});

describe('classify: build activity and daemon', () => {
  it('counts only dockerd\'s re-executed exe as a commit; runc\'s own exe init is a step', () => {
    assert.equal(build({ 'proc.name': 'exe', 'proc.pname': 'dockerd', 'proc.cmdline': 'exe /var/lib/docker/overlay2/x' }).activity, 'commit');
    assert.equal(build({ 'proc.name': 'exe', 'proc.pname': 'runc', 'proc.cmdline': 'exe init' }).activity, 'step');
  });

  it('takes a DOCKER_HOST with an http:// daemon as a remote client', () => {
    const viaHttp = build({ 'proc.name': 'docker', 'proc.cmdline': 'docker build -t app:1 .', 'proc.pcmdline': 'sh -c DOCKER_HOST=http://192.0.2.5:2375 docker build -t app:1 .' });
    assert.equal(viaHttp.engine, 'docker');
    assert.equal(viaHttp.localClient, false);
    const local = build({ 'proc.name': 'docker', 'proc.cmdline': 'docker build -t app:1 .', 'proc.pcmdline': 'sh -c docker build -t app:1 .' });
    assert.equal(local.localClient, true);
  });
});
