// The builder table as the detection path reads it: which process names are build CLIs,
// builder daemons, step runtimes and helpers, which cgroups and runtime arguments name a build
// step, and how image references are spelled. Names and paths are those of real process trees
// (docs/detection.md).
import assert from 'node:assert/strict';
import {
  BUILDER_DAEMONS,
  DOCKER_API_ENGINES,
  FETCHING_BUILDERS,
  HELPER_PARENTS,
  STEP_RUNTIMES,
  builderExeEngine,
  builderImageEngine,
  cgroupMarks,
  engineOfCli,
  engineOfDaemon,
  imageAliases,
  normaliseImageRef,
  repositoryOf,
  sameBuild,
} from '../src/detect/builders.js';

const marks = (text: string | null, max = 8, runtimeArgs = false): string[] => cgroupMarks(text, max, runtimeArgs).map((m) => `${m.engine} ${m.key}`);

describe('builders: process names', () => {
  it('knows each build CLI and the engine it drives', () => {
    const cases: [string, string][] = [
      ['docker', 'docker'],
      ['docker-buildx', 'docker'],
      ['docker-compose', 'docker'],
      ['buildctl', 'buildkitd'],
      ['nerdctl', 'buildkitd'],
      ['img', 'buildkitd'],
      ['buildah', 'buildah'],
      ['podman', 'podman'],
    ];
    for (const [cli, engine] of cases) assert.equal(engineOfCli(cli), engine, cli);
    for (const other of ['dockerd', 'buildkitd', 'containerd', 'runc', 'kaniko', 'executor', 'sh', '', 'Docker']) {
      assert.equal(engineOfCli(other), null, other);
    }
    assert.equal(engineOfCli(null), null);
  });

  it('knows each builder daemon and its engine', () => {
    const cases: [string, string][] = [
      ['dockerd', 'docker'],
      ['buildkitd', 'buildkitd'],
      ['buildah', 'buildah'],
      ['podman', 'podman'],
      ['containerd', 'containerd'],
    ];
    for (const [daemon, engine] of cases) assert.equal(engineOfDaemon(daemon), engine, daemon);
    for (const other of ['docker', 'buildctl', 'nerdctl', 'runc', 'containerd-shim', 'exe', '']) {
      assert.equal(engineOfDaemon(other), null, other);
    }
    assert.equal(engineOfDaemon(null), null);
    assert.deepEqual([...BUILDER_DAEMONS].sort(), ['buildah', 'buildkitd', 'containerd', 'dockerd', 'podman']);
  });

  it('knows the step runtimes: runc, crun and buildkit-runc, not shims or helpers', () => {
    assert.deepEqual([...STEP_RUNTIMES].sort(), ['buildkit-runc', 'crun', 'runc']);
  });

  it('counts the connections of every builder daemon but containerd as build inputs', () => {
    assert.deepEqual([...FETCHING_BUILDERS].sort(), ['buildah', 'buildkitd', 'dockerd', 'podman']);
  });

  it('knows that buildah and podman re-execute themselves as the exe helper, and no other builder does', () => {
    assert.deepEqual(
      [...HELPER_PARENTS].map(([d, h]) => [d, [...h]]).sort(),
      [
        ['buildah', ['exe']],
        ['podman', ['exe']],
      ],
    );
  });

  it('lets the Docker API drive only dockerd builds', () => {
    assert.deepEqual([...DOCKER_API_ENGINES], ['docker']);
  });
});

describe('builders: which steps a build can run', () => {
  it('joins a step to a build of its own engine, or when either side is unknown', () => {
    assert.equal(sameBuild('docker', 'docker'), true);
    assert.equal(sameBuild('buildah', 'buildah'), true);
    assert.equal(sameBuild(null, 'buildah'), true);
    assert.equal(sameBuild('buildah', null), true);
    assert.equal(sameBuild(null, null), true);
  });

  it('lets a docker CLI drive standalone BuildKit (buildx docker-container driver), not the other way round', () => {
    assert.equal(sameBuild('docker', 'buildkitd'), true);
    assert.equal(sameBuild('buildkitd', 'docker'), false);
    assert.equal(sameBuild('docker', 'buildah'), false);
    assert.equal(sameBuild('docker', 'containerd'), false);
    assert.equal(sameBuild('buildah', 'podman'), false);
    assert.equal(sameBuild('buildah', 'buildkitd'), false);
    assert.equal(sameBuild('containerd', 'buildkitd'), false);
    assert.equal(sameBuild('kaniko', 'docker'), false);
    assert.equal(sameBuild('unknown-engine', 'docker'), false);
  });
});

describe('builders: step markers in cgroups', () => {
  const id = 'x5hq3bq0fxk8sd7wqglx1dz3m';

  it('reads a dockerd BuildKit step from its cgroup, with the cgroupfs or the systemd driver', () => {
    assert.deepEqual(marks(`cpu=/docker/buildkit/${id} memory=/docker/buildkit/${id}`), [`docker buildkit:${id}`]);
    assert.deepEqual(marks(`0::/system.slice/system.slice:docker:${id}`), [`docker buildkit:${id}`]);
  });

  it('reads a standalone BuildKit step at the root or below a prefix, but not dockerd\'s', () => {
    assert.deepEqual(marks(`buildkit/${id}`), [`buildkitd buildkit:${id}`]);
    assert.deepEqual(marks(`0::/buildkit/${id}`), [`buildkitd buildkit:${id}`]);
    assert.deepEqual(marks(`0::/kubepods/pod1/buildkit/${id}`), [`buildkitd buildkit:${id}`]);
    assert.deepEqual(marks(`0::/mybuildkit/${id}`), []);
    assert.deepEqual(marks(`0::/docker/buildkit/${id}`), [`docker buildkit:${id}`]);
  });

  it('reads buildah and podman steps, rootful and rootless', () => {
    assert.deepEqual(marks('0::/buildah-buildah3'), ['buildah buildah:buildah3']);
    assert.deepEqual(marks('0::/user.slice/user-1000.slice/user@1000.service/buildah-buildah12-4711.scope'), ['buildah buildah:buildah12']);
    assert.deepEqual(marks('0::/buildah-buildah'), []);
    assert.deepEqual(marks('0::/buildah-buildahx1'), []);
  });

  it('takes step ids of 3 to 64 letters and digits', () => {
    assert.deepEqual(marks('cpu=/docker/buildkit/k2v'), ['docker buildkit:k2v']);
    assert.deepEqual(marks('cpu=/docker/buildkit/k2'), []);
    assert.deepEqual(marks('cpu=/docker/buildkit/k2-x'), []);
    const long = 'a'.repeat(64);
    assert.deepEqual(marks(`cpu=/docker/buildkit/${long}`), [`docker buildkit:${long}`]);
    assert.deepEqual(marks(`cpu=/docker/buildkit/${long}b`), [`docker buildkit:${long}`]);
    assert.deepEqual(marks(`0::/system.slice/system.slice:docker:${long}b`), [`docker buildkit:${long}`]);
    assert.deepEqual(marks(`0::/system.slice/system.slice:docker:k2`), []);
    assert.deepEqual(marks(`0::/buildkit/${long}b`), [`buildkitd buildkit:${long}`]);
    assert.deepEqual(marks('0::/buildkit/k2'), []);
    assert.deepEqual(marks('0::/buildah-buildah12345678901'), ['buildah buildah:buildah1234567890']);
  });

  it('lists each step once, in order, up to the limit', () => {
    assert.deepEqual(marks('cpu=/buildkit/aaa memory=/buildkit/bbb pids=/buildkit/aaa 0::/buildah-buildah1'), [
      'buildkitd buildkit:aaa',
      'buildkitd buildkit:bbb',
      'buildah buildah:buildah1',
    ]);
    assert.deepEqual(marks('cpu=/buildkit/aaa memory=/buildkit/bbb pids=/buildkit/ccc', 2), ['buildkitd buildkit:aaa', 'buildkitd buildkit:bbb']);
    assert.deepEqual(marks('cpu=/docker/buildkit/aaa 0::/buildah-buildah1', 1), ['docker buildkit:aaa']);
    assert.deepEqual(marks('cpu=/buildkit/aaa', 0), []);
  });

  it('gives the same answer for the same text every time', () => {
    const text = `cpu=/docker/buildkit/${id} 0::/buildah-buildah7`;
    const first = marks(text, 1);
    assert.deepEqual(marks(text, 1), first);
    assert.deepEqual(marks(text), [`docker buildkit:${id}`, 'buildah buildah:buildah7']);
    assert.deepEqual(marks(text), [`docker buildkit:${id}`, 'buildah buildah:buildah7']);
  });

  it('finds nothing in no text or an ordinary container\'s cgroup', () => {
    assert.deepEqual(marks(null), []);
    assert.deepEqual(marks(''), []);
    assert.deepEqual(marks(`0::/docker/${'f'.repeat(64)}`), []);
  });
});

describe('builders: step markers in runtime arguments', () => {
  it('reads the step id of dockerd\'s runc from its bundle path', () => {
    const id = 'x5hq3bq0fxk8sd7wqglx1dz3m';
    const cmd = `runc --log /var/lib/docker/buildkit/executor/runc-log.json --log-format json run --bundle /var/lib/docker/buildkit/executor/${id} ${id}`;
    assert.deepEqual(marks(cmd, 8, true), [`docker buildkit:${id}`]);
    assert.deepEqual(marks(`runc run --bundle /var/lib/docker/buildkit/executor/${id}`, 8, true), [`docker buildkit:${id}`]);
    // Bundle ids are 20 to 64 characters, and the whole path element.
    assert.deepEqual(marks(`runc run --bundle /var/lib/docker/buildkit/executor/${'b'.repeat(20)} x`, 8, true), [`docker buildkit:${'b'.repeat(20)}`]);
    assert.deepEqual(marks(`runc run --bundle /var/lib/docker/buildkit/executor/${'b'.repeat(19)} x`, 8, true), []);
    assert.deepEqual(marks(`runc run --bundle /var/lib/docker/buildkit/executor/${'b'.repeat(64)} x`, 8, true), [`docker buildkit:${'b'.repeat(64)}`]);
    assert.deepEqual(marks(`runc run --bundle /var/lib/docker/buildkit/executor/${'b'.repeat(65)} x`, 8, true), []);
    assert.deepEqual(marks(`runc run --bundle /var/lib/docker/buildkit/executor/${id}/rootfs x`, 8, true), []);
    assert.deepEqual(marks(`runc run --bundle /var/lib/docker/buildkit/executor/${id}-x x`, 8, true), []);
  });

  it('reads buildah\'s step name from runc and crun arguments', () => {
    assert.deepEqual(marks('runc start buildah-buildah3', 8, true), ['buildah buildah:buildah3']);
    assert.deepEqual(marks('runc state buildah-buildah1234567890', 8, true), ['buildah buildah:buildah1234567890']);
    assert.deepEqual(marks('runc state buildah-buildah12345678901', 8, true), []);
    assert.deepEqual(marks('buildah-buildah3', 8, true), ['buildah buildah:buildah3']);
    assert.deepEqual(marks('crun delete buildah-buildah3 --force', 8, true), ['buildah buildah:buildah3']);
    assert.deepEqual(marks('runc start xbuildah-buildah3', 8, true), []);
    assert.deepEqual(marks('runc start buildah-buildah3x', 8, true), []);
    assert.deepEqual(marks('runc start /buildah-buildah3', 8, true), []);
    assert.deepEqual(marks('runc start buildah-buildah', 8, true), []);
  });

  it('does not read cgroup markers as runtime arguments, nor the reverse', () => {
    assert.deepEqual(marks('runc run /docker/buildkit/abcdefabcdef', 8, true), []);
    assert.deepEqual(marks('0::/buildkit/abcdefabcdef', 8, true), []);
  });
});

describe('builders: in-container builders (kaniko)', () => {
  it('recognises the kaniko executor image under any registry and tag', () => {
    for (const image of ['gcr.io/kaniko-project/executor', 'gcr.io/kaniko-project/executor:v1.23.2-debug', 'mirror.example.com/kaniko-project/executor']) {
      assert.equal(builderImageEngine(image), 'kaniko', image);
    }
    for (const image of ['docker.io/library/alpine:3.20', 'gcr.io/kaniko-project/warmer', '', null]) {
      assert.equal(builderImageEngine(image), null, String(image));
    }
  });

  it('recognises the kaniko executor binary by its exact path', () => {
    assert.equal(builderExeEngine('/kaniko/executor'), 'kaniko');
    for (const exe of ['/kaniko/executor2', '/usr/bin/executor', '/kaniko/warmer', '', null]) {
      assert.equal(builderExeEngine(exe), null, String(exe));
    }
  });
});

describe('builders: image references', () => {
  it('spells out Docker Hub, the library namespace and the implied latest tag', () => {
    const cases: [string, string][] = [
      ['alpine', 'docker.io/library/alpine:latest'],
      ['alpine:3.20', 'docker.io/library/alpine:3.20'],
      ['alpine:', 'docker.io/library/alpine:latest'],
      ['team/app:2', 'docker.io/team/app:2'],
      ['docker.io/alpine', 'docker.io/library/alpine:latest'],
      ['index.docker.io/library/alpine', 'docker.io/library/alpine:latest'],
      ['registry-1.docker.io/team/app:1', 'docker.io/team/app:1'],
      ['  Docker.IO/Team/App:V1  ', 'docker.io/team/app:v1'],
    ];
    for (const [ref, canonical] of cases) assert.equal(normaliseImageRef(ref), canonical, ref);
  });

  it('keeps other registries, including a host:port or localhost', () => {
    const cases: [string, string][] = [
      ['quay.io/team/app:1', 'quay.io/team/app:1'],
      ['quay.io/app', 'quay.io/app:latest'],
      ['localhost/app:1', 'localhost/app:1'],
      ['localhost:5000/app', 'localhost:5000/app:latest'],
      ['registry:5000/a/b/c:9', 'registry:5000/a/b/c:9'],
      ['localhost', 'docker.io/library/localhost:latest'],
      ['my.registry', 'docker.io/library/my.registry:latest'],
    ];
    for (const [ref, canonical] of cases) assert.equal(normaliseImageRef(ref), canonical, ref);
  });

  it('drops a digest', () => {
    assert.equal(normaliseImageRef('alpine@sha256:0123abcd'), 'docker.io/library/alpine:latest');
    assert.equal(normaliseImageRef('localhost:5000/app:1@sha256:abc'), 'localhost:5000/app:1');
    assert.equal(normaliseImageRef('@sha256:abc'), null);
    assert.equal(normaliseImageRef(''), null);
    assert.equal(normaliseImageRef('   '), null);
    assert.equal(normaliseImageRef(null), null);
  });

  it('leaves the tag off a tagless reference, also behind a registry port', () => {
    assert.equal(normaliseImageRef('alpine:3.20', true), 'docker.io/library/alpine');
    assert.equal(normaliseImageRef('localhost:5000/app:1', true), 'localhost:5000/app');
    assert.equal(normaliseImageRef('localhost:5000/app', true), 'localhost:5000/app');
    assert.equal(normaliseImageRef('quay.io/team/app@sha256:abc', true), 'quay.io/team/app');
  });

  it('takes the repository of a canonical reference', () => {
    assert.equal(repositoryOf('docker.io/library/alpine:3.20'), 'docker.io/library/alpine');
    assert.equal(repositoryOf('localhost:5000/app:1'), 'localhost:5000/app');
    assert.equal(repositoryOf('localhost:5000/app'), 'localhost:5000/app');
    assert.equal(repositoryOf('quay.io/team/app'), 'quay.io/team/app');
    assert.equal(repositoryOf('app'), 'app');
  });

  it('adds podman\'s localhost spelling for an unqualified Docker Hub library image only', () => {
    assert.deepEqual(imageAliases('docker.io/library/app:1'), ['docker.io/library/app:1', 'localhost/app:1']);
    assert.deepEqual(imageAliases('docker.io/team/app:1'), ['docker.io/team/app:1']);
    assert.deepEqual(imageAliases('quay.io/library/app:1'), ['quay.io/library/app:1']);
  });
});
