// Classification edges: what marks an image as a bare id, field and number bounds, how a build
// signal's activity and dockerd's builder are read, and what makes a container a classic-builder
// step candidate.
import assert from 'node:assert/strict';
import { cgroupMatches, classify, classifyBuild, classifyEgress, imagesFromCmdline, isBareImageId } from '../src/detect/classify.js';
import type { FalcoEvent } from '../src/model/event.js';
import { falcoEvent } from './support/records.js';

const T = 1_772_446_500_000;
type Fields = Record<string, string | null>;
const ev = (fields: Fields, tags = ['t1612_build']): FalcoEvent => falcoEvent(fields, tags, BigInt(T) * 1_000_000n);
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

  it('cgroup ids match in full, or a BuildKit id by a prefix of at least 3 characters', () => {
    assert.equal(cgroupMatches('buildah:buildah1', 'buildah:buildah1'), true);
    assert.equal(cgroupMatches('buildkit:abc', 'buildkit:abcdef'), true);
    assert.equal(cgroupMatches('buildkit:abcdef', 'buildkit:abc'), true);
    assert.equal(cgroupMatches('buildkit:ab', 'buildkit:abcdef'), false);
    assert.equal(cgroupMatches('buildkit:abd', 'buildkit:abcdef'), false);
    assert.equal(cgroupMatches('buildah:buildah1', 'buildah:buildah12'), false, 'only BuildKit ids are truncated');
    assert.equal(cgroupMatches('buildkit:abc', 'buildah:abcdef'), false);
    assert.equal(cgroupMatches('buildkit', 'buildkit:abc'), false);
  });

  it('container ids: 12..64 lowercase hex cut to 12; a BuildKit step id becomes a cgroup key', () => {
    assert.equal(b({ 'container.id': 'a'.repeat(64) }).containerId, 'a'.repeat(12));
    for (const id of ['ABCDEFABCDEF', 'abcdefabcde', 'host', '', 'xabcdefabcdef']) assert.equal(b({ 'container.id': id }).containerId, null, id);
    assert.deepEqual(b({ 'container.id': 'buildkit/k2v' }).cgroups, ['buildkit:k2v']);
    assert.deepEqual(b({ 'container.id': 'buildkit/k2' }).cgroups, []);
    assert.deepEqual(b({ 'container.id': 'xbuildkit/k2v' }).cgroups, []);
    assert.deepEqual(b({ 'container.id': 'buildkit/k2v', 'thread.cgroups': 'cpu=/docker/buildkit/k2v9rq1mz0c8' }).cgroups, ['buildkit:k2v9rq1mz0c8']);
    const seven = Array.from({ length: 7 }, (_, i) => `cpu=/buildkit/id${i}x`).join(' ');
    assert.equal(b({ 'container.id': 'buildkit/zzz', 'thread.cgroups': seven }).cgroups.at(-1), 'buildkit:zzz');
    const eight = `${seven} cpu=/buildkit/id7x`;
    assert.deepEqual(b({ 'container.id': 'buildkit/zzz', 'thread.cgroups': eight }).cgroups.length, 8);
    assert.equal(b({ 'container.id': 'buildkit/zzz', 'thread.cgroups': eight }).cgroups.includes('buildkit:zzz'), false);
  });

  it("a container's image and the reference it is matched by", () => {
    const c = { 'container.id': 'abcdefabcdef' };
    const img = (f: Fields) => {
      const s = b({ ...c, ...f });
      return [s.image, s.imageRef];
    };
    assert.deepEqual(img({ 'container.image.repository': 'nginx', 'container.image.tag': '1' }), ['nginx:1', 'docker.io/library/nginx:1']);
    assert.deepEqual(img({ 'container.image.repository': 'nginx' }), ['nginx', 'docker.io/library/nginx']);
    assert.deepEqual(img({ 'container.image.repository': 'nginx', 'container.image': 'nginx' }), ['nginx', 'docker.io/library/nginx']);
    assert.deepEqual(img({ 'container.image.repository': 'nginx', 'container.image': 'nginx:1.25' }), ['nginx', 'docker.io/library/nginx:1.25']);
    assert.deepEqual(img({ 'container.image.repository': 'sha256' }), ['sha256', null]);
    assert.deepEqual(img({ 'container.image': 'alpine:3' }), ['alpine:3', 'docker.io/library/alpine:3']);
    assert.deepEqual(img({ 'container.image.repository': '', 'container.image': '' }), [null, null]);
    assert.deepEqual(img({ 'container.image.repository': 'sha256', 'container.image': 'sha256:abcdefabcdef' }), ['sha256:abcdefabcdef', null]);
    // Users' own rules without container.id: the image as printed; garbage container ids: none.
    assert.equal(b({ 'container.image': 'alpine:3' }).image, 'alpine:3');
    assert.equal(b({ 'container.id': 'XYZ', 'container.image': 'alpine:3' }).image, null);
    assert.equal(classifyBuild(ev({}, ['t1612_build', 't1612_expected']), 'h').expected, true);
    assert.equal(b({}).expected, false);
  });

  it('image references of build commands: quotes, duplicates, bounds, -d only for kaniko, commit positionals', () => {
    assert.deepEqual(imagesFromCmdline(`docker build -t "app:1" -t 'app:2' -t app:1 .`), ['app:1', 'app:2']);
    assert.deepEqual(imagesFromCmdline('docker build -t=app:3 .'), ['app:3']);
    const many = Array.from({ length: 20 }, (_, i) => `-t img${i}`).join(' ');
    assert.equal(imagesFromCmdline(`docker build ${many} .`).length, 16);
    assert.deepEqual(imagesFromCmdline(`docker build -t a${'b'.repeat(255)} -t a${'b'.repeat(256)} -t .x .`), [`a${'b'.repeat(255)}`]);
    assert.deepEqual(imagesFromCmdline('buildah bud -d x -t a .'), ['a']);
    assert.deepEqual(imagesFromCmdline('/kaniko/executor -d reg.io/x:1'), ['reg.io/x:1']);
    assert.deepEqual(imagesFromCmdline('-t x'), [], 'the program name is not a flag');
    assert.deepEqual(imagesFromCmdline('buildctl build --output type=image,name=a:1,b:2,push=true'), ['a:1', 'b:2']);
    assert.deepEqual(imagesFromCmdline('docker buildx build -o type=image,name=x .'), ['x']);
    assert.deepEqual(imagesFromCmdline('buildctl build --output=type=image,"name=a:1,b:2",push=true'), ['a:1', 'b:2']);
    assert.deepEqual(imagesFromCmdline('buildctl build --output type=image,noname=a:1'), []);
    assert.deepEqual(imagesFromCmdline('docker buildx build -o -tfoo .'), [], 'the value of -o is not a flag');
    assert.deepEqual(imagesFromCmdline('buildctl build --output'), []);
    assert.deepEqual(imagesFromCmdline('docker commit -p c1 app:2'), ['app:2']);
    assert.deepEqual(imagesFromCmdline('docker container commit --pause c1 snap'), ['snap']);
    assert.deepEqual(imagesFromCmdline('docker commit c1'), []);
    assert.deepEqual(imagesFromCmdline('docker build commit x'), []);
  });

  it('step proof of an egress: runtime under a fetching builder, helper, kaniko; builders own connections', () => {
    const anc = (names: (string | null)[]): Fields => {
      const f: Fields = { 'proc.name': 'curl' };
      names.forEach((n, i) => {
        f[i === 0 ? 'proc.pname' : `proc.aname[${i + 1}]`] = n;
      });
      return f;
    };
    assert.equal(e(anc(['sh', 'runc', 'buildkitd'])).step, 'runtime');
    assert.equal(e(anc([null, 'runc', null, 'dockerd'])).step, 'runtime');
    assert.equal(e(anc(['runc', 'containerd-shim-runc-v2', 'dockerd'])).step, null);
    assert.equal(e(anc(['runc', 'containerd'])).step, null, "containerd's containers are not builds");
    assert.equal(e(anc(['dockerd', 'runc'])).step, null, 'the builder must be above the runtime');
    assert.equal(e({ 'proc.name': 'runc', 'proc.pname': 'dockerd' }).step, 'runtime');
    assert.equal(e(anc(['exe', 'buildah'])).step, 'helper');
    assert.equal(e(anc(['sh', 'exe', 'podman'])).step, 'helper');
    assert.equal(e(anc(['exe', 'dockerd'])).step, null);
    assert.equal(e(anc(['buildah', 'exe'])).step, null);
    assert.equal(e({ 'proc.name': 'exe', 'proc.pname': 'buildah' }).step, null, 'the helper itself is not in a step');
    assert.equal(e({ 'container.image': 'sha256:abcdefabcdef' }).step, null, 'a bare image id outside a container proves nothing');

    const kaniko = { 'container.id': 'abcdefabcdef', 'container.image.repository': 'gcr.io/kaniko-project/executor', 'container.image.tag': 'v1' };
    const run = e({ ...kaniko, 'proc.name': 'wget', 'proc.exepath': '/bin/wget' });
    assert.deepEqual([run.step, run.builderOwn, run.fetching, run.engine], ['kaniko', false, false, 'kaniko']);
    const exec = e({ ...kaniko, 'proc.name': 'executor', 'proc.exepath': '/kaniko/executor' });
    assert.deepEqual([exec.step, exec.builderOwn, exec.fetching], [null, true, true]);
    const onHost = e({ 'proc.name': 'executor', 'proc.exepath': '/kaniko/executor' });
    assert.deepEqual([onHost.step, onHost.builderOwn], [null, false]);

    const dockerd = e({ 'proc.name': 'dockerd' });
    assert.deepEqual([dockerd.builderOwn, dockerd.fetching, dockerd.step, dockerd.classicCandidate], [true, true, null, false]);
    const containerd = e({ 'proc.name': 'containerd' });
    assert.deepEqual([containerd.builderOwn, containerd.fetching], [true, false]);
    const inStep = e({ 'proc.name': 'dockerd', 'thread.cgroups': 'cpu=/docker/buildkit/abcdefabcdef' });
    assert.deepEqual([inStep.builderOwn, inStep.step], [false, 'cgroup']);
    assert.equal(e({ 'proc.name': 'curl' }).builderOwn, false);
  });

  it('engine of an egress: the nearest builder above (containerd skipped), else the step cgroup, else the image', () => {
    const eng = (f: Fields): string | null => e({ 'proc.name': 'curl', ...f }).engine;
    assert.equal(eng({ 'proc.pname': 'buildah', 'proc.aname[2]': 'dockerd' }), 'buildah');
    assert.equal(eng({ 'proc.pname': 'containerd', 'proc.aname[2]': 'buildkitd' }), 'buildkitd');
    assert.equal(eng({ 'proc.pname': null, 'proc.aname[2]': 'podman' }), 'podman');
    assert.equal(eng({ 'proc.pname': 'runc', 'proc.aname[2]': 'containerd' }), null);
    assert.equal(eng({ 'thread.cgroups': '0::/buildah-buildah3' }), 'buildah');
    assert.equal(eng({ 'thread.cgroups': 'cpu=/docker/buildkit/abcdefabcdef' }), 'docker');
    assert.equal(eng({}), null);
  });

  it("a step runtime's arguments name its step; a Docker CLI on a TCP daemon is not a local client", () => {
    const id = 'abcdefghijklmnopqrstuvwxyz0123';
    const runc = b({ 'proc.name': 'runc', 'proc.cmdline': `runc run --bundle /var/lib/docker/buildkit/executor/${id} ${id}` });
    assert.deepEqual([runc.cgroups, runc.engine, runc.activity], [[`buildkit:${id}`], 'docker', 'step']);
    const same = b({ 'proc.name': 'runc', 'thread.cgroups': `cpu=/docker/buildkit/${id}`, 'proc.cmdline': `runc run --bundle /var/lib/docker/buildkit/executor/${id} ${id}` });
    assert.deepEqual(same.cgroups, [`buildkit:${id}`]);
    const crun = b({ 'proc.name': 'crun', 'proc.cmdline': 'crun start buildah-buildah3' });
    assert.deepEqual([crun.cgroups, crun.engine], [['buildah:buildah3'], 'buildah']);
    assert.deepEqual(b({ 'proc.name': 'sh', 'proc.cmdline': 'sh -c crun start buildah-buildah3' }).cgroups, [], 'only a runtime names its step');
    assert.equal(b({ 'proc.name': 'x', 'proc.exepath': '/kaniko/executor' }).engine, 'kaniko');

    const local = (f: Fields): boolean => b({ 'proc.name': 'docker', ...f }).localClient;
    assert.equal(local({ 'proc.cmdline': 'docker build .' }), true);
    assert.equal(local({ 'proc.cmdline': 'docker -H unix:///run/docker.sock build .' }), true);
    assert.equal(local({ 'proc.cmdline': 'docker -H tcp://192.0.2.1:2375 build .' }), false);
    assert.equal(local({ 'proc.cmdline': 'docker --host=ssh://builder build .' }), false);
    assert.equal(local({ 'proc.cmdline': 'docker build .', 'proc.pcmdline': 'env DOCKER_HOST=tcp://192.0.2.1:2375 docker build .' }), false);
    assert.equal(b({ 'proc.name': 'podman', 'proc.cmdline': 'podman build .' }).localClient, false);
    assert.equal(b({ 'proc.name': 'runc', 'proc.pname': 'dockerd' }).localClient, false);
  });

  it('an event tagged both ways is an egress; a given destination wins over fd.sip', () => {
    assert.equal(classify(ev({ 'fd.sip': '203.0.113.1' }, ['t1612_build', 't1612_egress']), 'h')?.type, 'egress');
    assert.equal(classifyEgress(ev({}, ['t1612_egress']), 'h', '203.0.113.5')?.ip, '203.0.113.5');
    assert.equal(classifyEgress(ev({}, ['t1612_egress']), 'h'), null);
    assert.equal(classify(ev({}, ['t1612_build']), 'fallback')?.host, 'h');
  });

  it('more edges: number syntax, deep ancestry, quotes inside references, -o values, commit flags, shells', () => {
    assert.equal(b({ 'proc.pid': '1e3' }).proc.pid, null);
    const deep = b({ 'proc.apid[2]': '20', 'proc.aname[6]': 'init' }).proc;
    assert.deepEqual(deep.ancestorPids, [20], 'an unknown parent pid is left out');
    assert.equal(deep.ancestorNames[5], 'init');
    assert.deepEqual(imagesFromCmdline(`docker build -t app"x -t 'a'b' .`), []);
    assert.deepEqual(imagesFromCmdline(' /kaniko/executor -d reg.io/x:1'), ['reg.io/x:1']);
    assert.deepEqual(imagesFromCmdline('buildctl build --output name=x,type=image'), ['x']);
    assert.deepEqual(imagesFromCmdline('buildctl build --output type=image,name=a,bb'), ['a', 'bb']);
    assert.deepEqual(imagesFromCmdline('docker commit --pause c1'), []);

    const act = (f: Fields): string => b(f).activity;
    assert.equal(act({ 'proc.name': 'runc', 'proc.pname': 'dockerd' }), 'step');
    assert.equal(act({ 'proc.name': 'docker', 'proc.cmdline': 'docker commit' }), 'commit');
    assert.equal(b({ 'proc.name': 'docker', 'proc.cmdline': 'docker commit c1 app:1' }).engine, 'docker');
    assert.equal(b({ 'proc.name': 'docker', 'proc.cmdline': 'DOCKER_BUILDKIT=1 docker commit c1 app:1' }).dockerBuilder, null, 'a commit is no builder hint');
    assert.equal(b({ 'proc.name': 'docker', 'proc.cmdline': 'docker build .', 'proc.pcmdline': 'env DOCKER_BUILDKIT=0' }).dockerBuilder, 'classic');
    assert.equal(b({ 'proc.name': 'docker', 'proc.cmdline': 'DOCKER_BUILDKIT=1 docker build .' }).dockerBuilder, 'buildkit');
    assert.equal(b({ 'proc.name': 'docker', 'proc.cmdline': 'docker buildx' }).dockerBuilder, 'buildkit');
    assert.equal(b({ 'proc.name': 'docker', 'proc.cmdline': 'docker -H http://192.0.2.1:2375 build .' }).localClient, false);

    const bare = { 'container.id': 'abcdefabcdef', 'container.image': 'sha256:abcdefabcdef', 'proc.name': 'sh' };
    assert.equal(b({ ...bare, 'proc.pname': 'containerd-shim-runc-v2' }).engine, 'docker');
    assert.equal(b({ ...bare, 'proc.pname': 'runc' }).engine, null, 'only a shim container from a bare image is a classic step');

    const shim = 'containerd-shim-runc-v2';
    const c = { 'container.id': 'abcdefabcdef' };
    for (const sh of ['ash', 'dash']) {
      assert.equal(e({ ...c, 'proc.name': sh, 'proc.pname': shim, 'proc.cmdline': `${sh} -c wget x` }).classicCandidate, true, sh);
    }
    assert.equal(e({ ...c, 'proc.name': 'wget', 'proc.pname': 'sh', 'proc.aname[2]': shim, 'proc.pcmdline': 'busybox sh -c wget x' }).classicCandidate, false);
    const bareStep = e({ ...c, 'container.image': 'sha256:abcdefabcdef', 'proc.name': 'sh', 'proc.pname': shim, 'proc.cmdline': 'sh -c wget x' });
    assert.deepEqual([bareStep.step, bareStep.classicCandidate], ['image-id', false], 'proven already, not a candidate');
    // Docker-in-Docker: dockerd started by `sh -c` in a shim container pulls as a builder.
    const dind = e({ ...c, 'proc.name': 'dockerd', 'proc.pname': 'sh', 'proc.aname[2]': shim, 'proc.pcmdline': 'sh -c dockerd' });
    assert.deepEqual([dind.builderOwn, dind.classicCandidate], [true, false]);
  });
});
