#!/usr/bin/env bash
# Assembles the Node base image without a container registry and tags it as TAG (the
# Dockerfile's NODE_IMAGE), so `docker build --build-arg NODE_IMAGE=TAG` works where Docker
# Hub cannot be reached:
#   1. debootstrap a minimal Debian 12 (bookworm) root filesystem from a Debian mirror;
#   2. copy in this machine's Node 20 (node + npm) and CA bundle, and add the `node` user
#      (uid/gid 1000) the official image has;
#   3. `docker import` it with the environment the official image sets, plus
#      NODE_EXTRA_CA_CERTS so npm and the daemon trust the site's CA bundle.
# Does nothing when TAG already exists (the cache between runs on one machine); FORCE=1
# rebuilds it. Steps are explained in docs/deploy.md ("Building the image without registry
# access"). Needs root, debootstrap and a running Docker engine.
#
#   test/support/node-base-image.sh node:20.20.2-bookworm-slim
#   DEBIAN_MIRROR=http://mirror.example/debian test/support/node-base-image.sh TAG
set -euo pipefail
# debootstrap and chroot live in sbin, which a non-login root shell may not have on PATH.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

tag=${1:?usage: node-base-image.sh TAG}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${DEBIAN_SUITE:-bookworm}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "node-base-image: $tag already present"
  exit 0
fi

node_bin=$(readlink -f "$(command -v node)")
node_version=$("$node_bin" --version)
case "$node_version" in
  v20.*) ;;
  *) echo "node-base-image: need Node 20 on this machine, found $node_version" >&2; exit 1 ;;
esac
# npm ships next to node: <prefix>/bin/node and <prefix>/lib/node_modules/npm.
npm_dir=$(dirname "$(dirname "$node_bin")")/lib/node_modules/npm
[ -f "$npm_dir/bin/npm-cli.js" ] || { echo "node-base-image: npm not found at $npm_dir" >&2; exit 1; }
[ -f "$ca_bundle" ] || { echo "node-base-image: CA bundle $ca_bundle missing" >&2; exit 1; }

work=$(mktemp -d /var/tmp/node-base-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

echo "node-base-image: debootstrap $suite from $mirror"
# minbase: essential packages + apt, no init system (the slim image's footprint); the runtime
# stage installs tini with apt, so apt's sources point at the same mirror.
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  exit 1
}

# Node where the official image has it: /usr/local/bin, npm under /usr/local/lib/node_modules.
install -D -m 0755 "$node_bin" "$rootfs/usr/local/bin/node"
mkdir -p "$rootfs/usr/local/lib/node_modules"
cp -a "$npm_dir" "$rootfs/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
# The site's CA bundle (it may include a TLS-inspecting proxy's CA that npm must trust).
install -D -m 0644 "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
# The official image's unprivileged user; the Dockerfile switches to it.
chroot "$rootfs" groupadd --gid 1000 node
chroot "$rootfs" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
chroot "$rootfs" node --version >/dev/null
# What the slim image leaves out: package lists and caches, docs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*

echo "node-base-image: importing as $tag (node $node_version)"
tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV NODE_VERSION=${node_version#v}" \
  --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
  --change 'LABEL org.opencontainers.image.description="Debian bookworm + Node, assembled locally"' \
  --change 'CMD ["node"]' \
  - "$tag" >/dev/null
docker image inspect "$tag" --format 'node-base-image: {{.Id}} {{.Size}} bytes' 
