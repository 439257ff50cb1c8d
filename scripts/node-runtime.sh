#!/usr/bin/env bash
# Fetches an official Node.js build from the npm registry's node-linux-<arch> package into a
# cache, checks it against the integrity pinned in scripts/node-runtimes.txt, unpacks it and
# prints the directory (it holds bin/node, include/node and LICENSE). A cached copy is reused
# once it has been verified (the tarball is removed after unpacking); nothing outside the cache
# is touched. Used by scripts/release.sh (the runtime bundled into the release) and .ci/run (the
# Node 22 and 24 test runs).
#
# Usage: scripts/node-runtime.sh [--arch x64|arm64] [VERSION | release]
#   VERSION   a version pinned in scripts/node-runtimes.txt, or a major (22, 24: its pinned
#             version); "release" (the default) is the one the release tarball bundles
#   --arch    default: the host's
# Environment: NAVARCH_NODE_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/navarch-agent/node).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "node-runtime.sh: $*" >&2; exit 1; }
pins=$repo/scripts/node-runtimes.txt
arch=
want=release
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ $# -ge 2 ] || die "--arch needs x64 or arm64"; arch=$2; shift 2 ;;
    --arch=*) arch=${1#*=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown argument: $1 (see --help)" ;;
    *) want=$1; shift ;;
  esac
done
if [ -z "$arch" ]; then
  case "$(uname -m)" in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; *) die "no Node.js package for host arch $(uname -m)" ;; esac
fi
case "$arch" in x64|arm64) ;; *) die "unsupported --arch '$arch' (x64 or arm64)" ;; esac
pkg=node-linux-$arch

# The pins file: "release VERSION" once, then "node-linux-<arch>@VERSION INTEGRITY" lines.
if [ "$want" = release ]; then
  want=$(awk '$1 == "release" { print $2 }' "$pins")
  [ -n "$want" ] || die "$pins has no 'release VERSION' line"
fi
line=$(awk -v p="$pkg@" -v w="$want" 'index($1, p) == 1 { v = substr($1, length(p) + 1); if (v == w || index(v, w ".") == 1) l = $0 } END { print l }' "$pins")
[ -n "$line" ] || die "no pinned $pkg version matching '$want' in $pins (add: $pkg@X.Y.Z \$(npm view $pkg@X.Y.Z dist.integrity))"
version=${line%% *}; version=${version#"$pkg@"}
integrity=${line#* }
[[ "$integrity" =~ ^sha512-[A-Za-z0-9+/]+=*$ ]] || die "$pins: bad integrity for $pkg@$version: $integrity"

cache=${NAVARCH_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/navarch-agent/node}
dir=$cache/node-v$version-linux-$arch
if [ -f "$dir/.verified" ] && [ "$(cat "$dir/.verified")" = "$integrity" ] && [ -x "$dir/bin/node" ]; then
  echo "$dir"
  exit 0
fi

mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tgz=$cache/$pkg-$version.tgz
if [ ! -f "$tgz" ]; then
  echo "node-runtime.sh: fetching $pkg@$version from the npm registry" >&2
  (cd "$tmp" && timeout 600 npm pack --silent "$pkg@$version" >/dev/null) || die "npm pack $pkg@$version failed"
  mv -f "$tmp/$pkg-$version.tgz" "$tgz"
fi
got=$(node -e 'const c = require("crypto"), fs = require("fs");
  process.stdout.write("sha512-" + c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' "$tgz")
if [ "$got" != "$integrity" ]; then
  rm -f "$tgz"
  die "checksum mismatch for $pkg@$version: pinned $integrity, got $got (cached file removed)"
fi
mkdir -p "$tmp/x"
tar -xzf "$tgz" -C "$tmp/x" --strip-components=1 --no-same-owner || die "cannot unpack $tgz"
[ -x "$tmp/x/bin/node" ] || die "$pkg@$version has no bin/node"
printf '%s' "$integrity" > "$tmp/x/.verified"
rm -rf "$dir"
mv "$tmp/x" "$dir"
rm -f "$tgz"
echo "$dir"
