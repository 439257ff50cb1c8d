#!/usr/bin/env bash
# Builds the self-contained release: build/release/navarch-agent-<version>-linux-<arch>.tar.gz
# (+ .sha256) holding the Node.js runtime for that arch (node/bin/node, from the npm registry's
# node-linux-<arch> package via scripts/node-runtime.sh: pinned and checksum-verified, cached),
# the compiled agent (dist/), its production dependencies (copied from node_modules as npm
# resolved them; all pure JavaScript), the prebuilt addon for that arch, systemd/ (unit and
# install scripts), deploy/ec2/, deploy/navarch/ (health policies) and a bin/navarch-agent
# launcher that prefers the bundled node. It runs on a host without Node.js. The network is needed only to fetch a runtime not yet in the
# cache. The host-arch tarball is unpacked and smoke-tested with no node on PATH (the bundled node
# loads the addon from prebuilds/, the CLI answers --version).
#
# Usage: scripts/release.sh [--arch x64|arm64]... [--out DIR] [--prebuilds DIR] [--skip-build]
#                           [--prebuild] [--node VERSION]
#   --prebuilds   where the linux-<arch>/ addon directories are (default: prebuilds/)
#   --skip-build  use the existing dist/ instead of running npm run build:ts
#   --prebuild    run scripts/prebuild.sh first for the requested arches
#   --node        the Node.js version to bundle (pinned in scripts/node-runtimes.txt; default:
#                 its "release" line)
# Environment: SOURCE_DATE_EPOCH (file times in the tarball; default: the last commit's time),
# NAVARCH_NODE_CACHE (see scripts/node-runtime.sh).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$repo/scripts/lib/common.sh"
out=$repo/build/release
arches=()
skip_build=0
prebuild=0
prebuilds=
node_version=release
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilds) [ $# -ge 2 ] || die "--prebuilds needs a directory"; prebuilds=$2; shift 2 ;;
    --skip-build) skip_build=1; shift ;;
    --prebuild) prebuild=1; shift ;;
    --node) [ $# -ge 2 ] || die "--node needs a version"; node_version=$2; shift 2 ;;
    *) common_opt "$@"; shift "$taken" ;;
  esac
done
check_arches
cd "$repo"
prebuilds=${prebuilds:-$repo/prebuilds}
version=$(node -p 'require("./package.json").version')
[[ "$version" =~ ^[0-9A-Za-z.+-]+$ ]] || die "odd version in package.json: $version"
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

if [ "$skip_build" = 0 ]; then
  npm run --silent build:ts || die "npm run build:ts failed"
fi
[ -f dist/cli/main.js ] || die "dist/cli/main.js is missing (npm run build:ts)"
[ -f dist/cli/navarch-agent.mjs ] || die "dist/cli/navarch-agent.mjs is missing (npm run build:ts bundles it)"
if [ "$prebuild" = 1 ]; then
  pb_args=()
  for a in "${arches[@]}"; do pb_args+=(--arch "$a"); done
  bash scripts/prebuild.sh "${pb_args[@]}" --out "$prebuilds" || die "scripts/prebuild.sh failed"
fi

# Production dependencies as installed (npm ls reads node_modules; no registry access).
mapfile -t deps < <(npm ls --omit=dev --all --parseable 2>/dev/null | sed -n "s#^$repo/##p" | grep '^node_modules/' | sort -u)
[ ${#deps[@]} -gt 0 ] || die "npm ls found no production dependencies in node_modules (npm ci first)"
for d in "${deps[@]}"; do [ -d "$d" ] || die "dependency $d is not installed (npm ci first)"; done

mkdir -p "$out"
host_arch=$(node -p process.arch)
for arch in "${arches[@]}"; do
  pb=$prebuilds/linux-$arch
  compgen -G "$pb/*.node" >/dev/null || die "no prebuilt addon in $pb (run scripts/prebuild.sh or pass --prebuild)"
  runtime=$(bash scripts/node-runtime.sh --arch "$arch" "$node_version") || die "no Node.js runtime for linux-$arch (scripts/node-runtime.sh failed)"
  name=navarch-agent-$version
  stage=$(mktemp -d "${TMPDIR:-/tmp}/navarch-release.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  dst=$stage/$name
  mkdir -p "$dst/bin" "$dst/prebuilds" "$dst/deploy" "$dst/docs" "$dst/node/bin"
  cp "$runtime/bin/node" "$dst/node/bin/node"
  cp "$runtime/LICENSE" "$dst/node/LICENSE"
  cp package.json "$dst/"
  for f in README.md LICENSE; do if [ -f "$f" ]; then cp "$f" "$dst/"; fi; done
  cp -R dist "$dst/dist"
  find "$dst/dist" \( -name "*.d.ts" -o -name "*.d.ts.map" -o -name "*.tsbuildinfo" \) -delete
  cp -R "$pb" "$dst/prebuilds/"
  cp -R systemd "$dst/systemd"
  cp -R deploy/ec2 "$dst/deploy/ec2"
  cp -R deploy/navarch "$dst/deploy/navarch" # the health policies (the dev control plane's default)
  if [ -f docs/deploy.md ]; then cp docs/deploy.md "$dst/docs/"; fi
  cp deploy/bin/navarch-agent "$dst/bin/navarch-agent"
  chmod 0755 "$dst/bin/navarch-agent" "$dst/node/bin/node" "$dst"/systemd/*.sh "$dst"/deploy/ec2/*.sh
  tar -cf - "${deps[@]}" | tar -xf - -C "$dst"
  tarball=$out/$name-linux-$arch.tar.gz
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" --mode='u+rwX,go+rX,go-w' \
    -C "$stage" -cf - "$name" | gzip -9n > "$tarball.tmp"
  mv -f "$tarball.tmp" "$tarball"
  (cd "$out" && sha256sum "$(basename "$tarball")" > "$(basename "$tarball").sha256")
  rm -rf "$stage"
  trap - EXIT

  if [ "$arch" = "$host_arch" ]; then
    # No node on PATH: only what the launcher itself needs.
    check=$(mktemp -d "${TMPDIR:-/tmp}/navarch-release-check.XXXXXX")
    mkdir "$check/path"
    for t in sh readlink dirname; do ln -s "$(command -v "$t")" "$check/path/$t"; done
    tar -xzf "$tarball" -C "$check"
    if ! (cd "$check/$name" && env -i PATH="$check/path" ./node/bin/node -e '
        const m = require("node-gyp-build")(process.cwd());
        if (typeof m.sdNotify !== "function") { console.error("addon lacks sdNotify"); process.exit(1); }'); then
      rm -rf "$check"; die "smoke test: the addon in $tarball does not load from prebuilds/ under the bundled node"
    fi
    if ! got=$(env -i PATH="$check/path" HOME="$check" "$check/$name/bin/navarch-agent" --version 2>&1); then
      rm -rf "$check"; die "smoke test: bin/navarch-agent --version failed without node on PATH: $got"
    fi
    rm -rf "$check"
    echo "release.sh: smoke test passed (version $got, bundled Node.js $("$runtime/bin/node" --version))" >&2
  fi
  echo "$tarball ($(du -h "$tarball" | cut -f1))"
done
