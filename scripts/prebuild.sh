#!/usr/bin/env bash
# Builds the Node-API addon for linux-x64 and linux-arm64 (cross-compiled) into
# prebuilds/linux-<arch>/node.napi.glibc.node, the name node-gyp-build picks for any Node >= 20 on
# a glibc host (one Node-API build serves every Node version; musl hosts fall back to a source
# build). Builds in a scratch copy, so the checkout's build/ is never touched. Prints, per
# binary, its ELF type and the highest GLIBC_ and GLIBCXX_ symbol versions it needs.
#
# Usage: scripts/prebuild.sh [--arch x64|arm64]... [--out DIR] [--source DIR]
# Environment: npm_config_nodedir / NODEDIR (Node headers; default: npm's nodedir, else /usr
# when /usr/include/node exists), CROSS_PREFIX_ARM64 (default aarch64-linux-gnu-).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$repo/scripts/lib/common.sh"
src=$repo
out=$repo/prebuilds
arches=()
while [ $# -gt 0 ]; do
  case "$1" in
    --source) [ $# -ge 2 ] || die "--source needs a directory"; src=$2; shift 2 ;;
    *) common_opt "$@"; shift "$taken" ;;
  esac
done
check_arches
[ -f "$src/binding.gyp" ] || die "no binding.gyp in $src"

gyp=$repo/node_modules/node-gyp/bin/node-gyp.js
[ -f "$gyp" ] || gyp=$(command -v node-gyp) || die "node-gyp not found (npm ci first)"
nodedir=${NODEDIR:-${npm_config_nodedir:-}}
if [ -z "$nodedir" ]; then
  nodedir=$(npm config get nodedir 2>/dev/null || true)
  case "$nodedir" in undefined|null) nodedir= ;; esac
fi
if [ -z "$nodedir" ] && [ -f /usr/include/node/node_api.h ]; then nodedir=/usr; fi
gyp_args=()
if [ -n "$nodedir" ]; then gyp_args+=(--nodedir="$nodedir"); fi

host_arch=$(node -p process.arch)
stage=$(mktemp -d "${TMPDIR:-/tmp}/navarch-prebuild.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/native"
cp "$src/binding.gyp" "$stage/"
cp "$src"/native/*.cc "$src"/native/*.h "$stage/native/"
ln -s "$repo/node_modules" "$stage/node_modules"

# sym_max FILE OBJDUMP PREFIX: the highest PREFIX_x.y.z version the dynamic symbols require.
sym_max() {
  "$2" -T "$1" | grep -o "$3_[0-9][0-9.]*" | sort -uV | tail -n1
}

for arch in "${arches[@]}"; do
  case "$arch" in
    x64) want='x86-64'; prefix= ;;
    arm64) want='aarch64'; prefix=${CROSS_PREFIX_ARM64:-aarch64-linux-gnu-} ;;
  esac
  env_cc=()
  if [ "$arch" != "$host_arch" ]; then
    [ -n "$prefix" ] || die "cannot cross-compile to $arch from $host_arch"
    command -v "${prefix}g++" >/dev/null || die "${prefix}g++ not found (apt-get install g++-aarch64-linux-gnu)"
    env_cc=(CC="${prefix}gcc" CXX="${prefix}g++" LINK="${prefix}g++" AR="${prefix}ar")
  else
    prefix=
  fi
  objdump=${prefix}objdump
  strip=${prefix}strip
  command -v "$objdump" >/dev/null || objdump=objdump
  echo "prebuild.sh: building linux-$arch" >&2
  rm -rf "$stage/build"
  # deploy/prebuild/glibcxx-compat.h pins libstdc++ symbols to versions GCC 11 has (Amazon
  # Linux 2023, RHEL 9). Static libstdc++ was measured worse: it pulls in GLIBC_2.36 symbols.
  if ! (cd "$stage" && env ${env_cc[@]+"${env_cc[@]}"} CXXFLAGS="${CXXFLAGS:-} -include $repo/deploy/prebuild/glibcxx-compat.h" node "$gyp" rebuild --arch="$arch" "${gyp_args[@]}" >"$stage/build-$arch.log" 2>&1); then
    tail -n 30 "$stage/build-$arch.log" >&2
    die "building linux-$arch failed (log above)"
  fi
  built=$stage/build/Release/navarch_nvml.node
  [ -f "$built" ] || die "node-gyp produced no build/Release/navarch_nvml.node for $arch"
  command -v "$strip" >/dev/null && "$strip" --strip-unneeded "$built"
  desc=$(file -b "$built")
  case "$desc" in *ELF\ 64-bit*"$want"*) ;; *) die "linux-$arch: unexpected binary type: $desc" ;; esac
  dest=$out/linux-$arch
  mkdir -p "$dest"
  cp "$built" "$dest/node.napi.glibc.node"
  echo "linux-$arch: $dest/node.napi.glibc.node: $desc; needs $(sym_max "$built" "$objdump" GLIBC) $(sym_max "$built" "$objdump" GLIBCXX)"
done
