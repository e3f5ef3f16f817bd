#!/usr/bin/env bash
# The benchmark: installs what it needs (idempotent), then runs test/bench/run.ts on a 5-node rig (real
# docker-registry, containerd daemons and Ferry agents on loopback). Prints a Markdown table of ratios
# against baselines measured in the same run and writes it to test/bench/results/latest.md.
# Options are passed through: --quick (small sizes, results to a temp file), --figures 1,3, --out FILE.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
# shellcheck source=scripts/env.sh
. "$root/scripts/env.sh"
cd "$root"
exec node test/bench/run.ts "$@"
