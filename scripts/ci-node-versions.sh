#!/usr/bin/env bash
# The native and end-to-end parts of the suite under Node.js 22 and 24 (CI runs the whole suite
# under the host's node first). Each runtime is the npm registry's node-linux-<arch> package,
# fetched by scripts/node-runtime.sh (pinned, checksum-verified, cached outside the checkout;
# never installed globally). Vitest runs under that node, so the agent processes the tests spawn
# (process.execPath) run under it too.
#   1. The addon npm ci built (build/Release, against the host's Node headers) loads unchanged:
#      Node-API is ABI-stable, which is what lets one prebuild serve every Node version.
#   2. The addon also compiles (-Werror) against each runtime's own headers, and test/native
#      passes with that build (loaded through NAVARCH_NVML_ADDON, the agent's addon override).
# Every step runs even after one fails; each prints its time, and the failures are listed last.
#
# Usage: scripts/ci-node-versions.sh [MAJOR]...   (default: 22 24)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
die() { echo "ci-node-versions.sh: $*" >&2; exit 1; }
[ -f build/Release/navarch_nvml.node ] || die "build/Release/navarch_nvml.node is missing (npm ci first)"
[ -f dist/cli/main.js ] || die "dist/cli/main.js is missing (npm run build first)"
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(22 24)
e2e=(test/e2e/agent-nvml.test.ts test/e2e/agent-fake.test.ts test/e2e/agent-systemd.test.ts
  test/e2e/controlplane-agent.test.ts test/e2e/bundle.test.ts test/e2e/demo.test.ts)
work=$(mktemp -d "${TMPDIR:-/tmp}/navarch-node-versions.XXXXXX")
trap 'rm -rf "$work"' EXIT
export NAVARCH_REQUIRE_ADDON=1

failed=()
step() { # step LABEL COMMAND...: runs it, prints its wall time; a failure is reported at the end
  local label=$1 t0 rc=0
  shift
  t0=$(date +%s)
  echo "ci-node-versions.sh: $label" >&2
  "$@" || rc=$?
  echo "ci-node-versions.sh: $label: $(( $(date +%s) - t0 )) s$([ "$rc" = 0 ] || echo ", exit $rc")" >&2
  [ "$rc" = 0 ] || failed+=("$label")
}

for major in "${majors[@]}"; do
  dir=$(bash scripts/node-runtime.sh "$major") || die "no Node.js $major runtime"
  node=$dir/bin/node
  v=$("$node" --version)
  arch=$("$node" -p process.arch)
  step "Node $v: test/native and ${#e2e[@]} e2e files, addon from npm ci" \
    "$node" node_modules/vitest/vitest.mjs run test/native "${e2e[@]}"
  step "Node $v: the addon compiled against its own headers" \
    env NODEDIR="$dir" bash scripts/prebuild.sh --arch "$arch" --out "$work/$major"
  step "Node $v: test/native with that build" \
    env NAVARCH_NVML_ADDON="$work/$major/linux-$arch/node.napi.glibc.node" "$node" node_modules/vitest/vitest.mjs run test/native
done
if [ ${#failed[@]} -gt 0 ]; then
  printf 'ci-node-versions.sh: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
