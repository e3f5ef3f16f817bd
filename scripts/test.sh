#!/usr/bin/env bash
# The whole test suite: installs what it needs (idempotent), builds the image (scripts/image.sh; its base
# is cached), then type-checks, lints, and runs every unit and end-to-end test with Node's test runner,
# the image's own test (test/image/) included. Exits non-zero when anything fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
# shellcheck source=scripts/env.sh
. "$root/scripts/env.sh"
cd "$root"
echo "== image"; bash scripts/image.sh
echo "== typecheck"; tsc -p tsconfig.json --noEmit
echo "== lint"; biome check --reporter=summary .
echo "== contracts"; node scripts/contracts.ts --check
echo "== tests"
# Unit tests and end-to-end scenarios in one run; each file runs in its own process. The rig gives each
# file its own loopback block, so files never collide.
exec node --test --test-concurrency="${FERRY_TEST_CONCURRENCY:-2}" --test-timeout=600000 \
  'packages/*/test/**/*.test.ts' 'test/rig/**/*.test.ts' 'test/e2e/**/*.test.ts' 'test/deploy/**/*.test.ts' 'test/image/**/*.test.ts'
