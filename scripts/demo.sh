#!/usr/bin/env bash
# The demo: installs what it needs (idempotent), then starts a three-node rig (real containerd daemons,
# a real upstream registry, three Ferry agents), pulls an image on node 1, stops the upstream, pulls it on
# nodes 2 and 3 from their peers, and prints where the bytes came from and how long each pull took.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
# shellcheck source=scripts/env.sh
. "$root/scripts/env.sh"
cd "$root"
exec node test/demo.ts "$@"
