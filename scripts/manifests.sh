#!/usr/bin/env bash
# Regenerates deploy/manifests/ferry.yaml and cleanup.yaml from the chart's default values with real
# helm (`helm template ferry deploy/charts/ferry -n ferry`, Helm's own labels and hook annotations
# dropped). Run it after changing the chart; test/deploy/manifests.test.ts fails while they differ.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/env.sh
. "$root/scripts/env.sh"
[ -x "$root/tools/bin/helm" ] || bash "$root/scripts/bootstrap.sh"
cd "$root"
node --input-type=module -e '
import { writeFileSync } from "node:fs";
import { manifestsDir, manifestTexts } from "./test/deploy/helm.ts";
for (const [file, text] of Object.entries(manifestTexts())) {
  writeFileSync(`${manifestsDir}/${file}`, text);
  console.log(`wrote deploy/manifests/${file}`);
}
'
