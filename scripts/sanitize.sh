#!/usr/bin/env bash
# Rebuilds the NVML addon with AddressSanitizer + UndefinedBehaviorSanitizer into a separate build
# directory (build/asan/, the normal build/Release is untouched) and runs the native test tier
# (test/native/*.test.ts) against it over the fake libnvidia-ml.
#
#   bash scripts/sanitize.sh                      # all native tests
#   bash scripts/sanitize.sh test/native/storm.test.ts
#
# UBSan is strict (any report aborts the test process). LeakSanitizer is off: node and V8 keep
# allocations alive until exit by design, which would drown real reports. ASan's quarantine
# inflates RSS, so the memory-growth bound of the lifecycle test is reported but not asserted
# (NAVARCH_SANITIZE=1).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/build/asan"
src="$out/src"
mkdir -p "$src"

# A binding.gyp for the sanitized build: the project's own, sources made absolute, sanitizer flags added.
node - "$root" "$src/binding.gyp" <<'JS'
const fs = require('node:fs');
const path = require('node:path');
const [root, dest] = process.argv.slice(2);
const gyp = JSON.parse(fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8'));
const san = ['-fsanitize=address,undefined', '-fno-sanitize-recover=undefined', '-fno-omit-frame-pointer', '-g', '-O1'];
for (const t of gyp.targets) {
  t.sources = t.sources.map((s) => path.relative(path.dirname(dest), path.join(root, s)));
  t.cflags_cc = [...t.cflags_cc, ...san];
  t.cflags = [...(t.cflags || []), ...san];
  t.ldflags = [...(t.ldflags || []), '-fsanitize=address,undefined'];
}
fs.writeFileSync(dest, JSON.stringify(gyp, null, 2) + '\n');
JS

echo "sanitize: building the addon with -fsanitize=address,undefined in $src/build" >&2
# node-gyp reads --nodedir from npm's config only when started by npm; pass it on explicitly.
nodedir="${npm_config_nodedir:-}"
if [ -z "$nodedir" ]; then nodedir="$(cd "$root" && { npm config get nodedir 2>/dev/null || true; })"; fi
gypargs=(rebuild --debug)
if [ -n "$nodedir" ] && [ "$nodedir" != "undefined" ] && [ "$nodedir" != "null" ]; then gypargs+=("--nodedir=$nodedir"); fi
(cd "$src" && "$root/node_modules/.bin/node-gyp" "${gypargs[@]}" >"$out/build.log" 2>&1) || {
  tail -40 "$out/build.log" >&2
  echo "sanitize: build failed (full log: $out/build.log)" >&2
  exit 1
}
addon="$src/build/Debug/navarch_nvml.node"
[ -f "$addon" ] || { echo "sanitize: $addon was not produced" >&2; exit 1; }

# The fake library is built before the sanitizer runtime is preloaded (make/gcc need not run under it).
make -s -C "$root/native/fake-nvml"

libasan="$(gcc -print-file-name=libasan.so)"
[ -f "$libasan" ] || { echo "sanitize: libasan.so not found (install gcc's libasan)" >&2; exit 1; }

tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(test/native/)

echo "sanitize: running ${tests[*]} with LD_PRELOAD=$libasan" >&2
cd "$root"
NAVARCH_NVML_ADDON="$addon" \
NAVARCH_SANITIZE=1 \
LD_PRELOAD="$libasan" \
ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1:detect_odr_violation=0" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  node_modules/.bin/vitest run "${tests[@]}"
