#!/usr/bin/env bash
# Prepares .carry/ for scripts/gpu-check.sh on a GPU host that may lack a compiler and network:
#   .carry/node.xz       this machine's node binary (x86-64), xz-compressed
#   .carry/navarch.tar.xz  dist/ src/ node_modules/ (without build-only tools) build/Release/
#                        build/fake-nvml/ test/ scripts/ bench/ package.json vitest.config.ts tsconfig.json
# (src/ because the GPU-tier tests import the TypeScript sources through vitest.)
# Build first: npm run build && npm run build:addon. Prints the command to run on the GPU host.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

for need in dist/nvml/index.js node_modules/vitest/vitest.mjs; do
  [ -e "$need" ] || { echo "gpu-carry: $need is missing: run npm run build (and npm run build:addon)" >&2; exit 2; }
done
compgen -G "build/Release/*.node" >/dev/null || { echo "gpu-carry: build/Release/*.node is missing: run npm run build:addon" >&2; exit 2; }
command -v xz >/dev/null || { echo "gpu-carry: xz is required here (apt-get install xz-utils)" >&2; exit 2; }

mkdir -p .carry
NODE_BIN="$(command -v node)"
NODE_ID="$(node --version) $(sha256sum "$NODE_BIN" | cut -d' ' -f1)"
if [ -f .carry/node.xz ] && [ "$(cat .carry/node.id 2>/dev/null)" = "$NODE_ID" ]; then
  echo "gpu-carry: .carry/node.xz is up to date ($(node --version))"
else
  echo "gpu-carry: compressing $NODE_BIN ($(node --version))"
  xz -T2 -6 -c "$NODE_BIN" > .carry/node.xz.tmp && mv .carry/node.xz.tmp .carry/node.xz
  printf '%s\n' "$NODE_ID" > .carry/node.id
fi

# Build-only packages the GPU host never needs (the protobuf generator ships a large Go binary).
EXCLUDES=(
  --exclude='node_modules/@bufbuild/buf*'
  --exclude='node_modules/@bufbuild/protoc-gen-es'
  --exclude='node_modules/@bufbuild/protoplugin'
  --exclude='node_modules/typescript'
  --exclude='node_modules/node-gyp'
  --exclude='node_modules/.cache'
  --exclude='build/Release/obj.target'
  --exclude='build/Release/.deps'
  --exclude='build/fake-nvml/obj'
)
paths=(dist src node_modules build/Release test scripts bench package.json vitest.config.ts tsconfig.json)
[ -d build/fake-nvml ] && paths+=(build/fake-nvml)
echo "gpu-carry: packing ${paths[*]}"
tar "${EXCLUDES[@]}" -cf - "${paths[@]}" | xz -T2 -3 -c > .carry/navarch.tar.xz.tmp
mv .carry/navarch.tar.xz.tmp .carry/navarch.tar.xz
du -h .carry/node.xz .carry/navarch.tar.xz
total=$(du -cb .carry/node.xz .carry/navarch.tar.xz | tail -n1 | cut -f1)
if [ "$total" -gt $((64 * 1024 * 1024)) ]; then
  echo "gpu-carry: warning: .carry is $((total / 1024 / 1024)) MiB, over a 64 MiB transfer limit" >&2
fi
echo
echo "On the GPU host, from the repository root (with .carry/ copied along):"
echo "  tar -xJf .carry/navarch.tar.xz && bash scripts/gpu-check.sh"
