#!/usr/bin/env bash
# clang-format over native/ (the addon and the fake libnvidia-ml), each with the .clang-format beside it.
#   scripts/clang-format.sh check   report unformatted code, exit 1 (npm run lint)
#   scripts/clang-format.sh write   format in place (npm run format)
# The binary is the clang-format npm package's (clang-format 15, linux-x64 only), so every machine
# formats alike; elsewhere the check is skipped with a printed reason, since another version of
# clang-format would lay some lines out differently.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
bin=node_modules/clang-format/bin/linux_x64/clang-format
if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ] || [ ! -x "$bin" ]; then
  echo "clang-format: skipped: the clang-format npm package ships no binary for $(uname -s)-$(uname -m) (or npm ci has not run)" >&2
  exit 0
fi
files=(native/*.cc native/*.h native/fake-nvml/*.c native/fake-nvml/*.h)
case "$mode" in
  check) "$bin" --dry-run -Werror "${files[@]}" ;;
  write) "$bin" -i "${files[@]}" ;;
  *) echo "usage: scripts/clang-format.sh check|write" >&2; exit 2 ;;
esac
