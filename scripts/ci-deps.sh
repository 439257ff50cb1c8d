#!/usr/bin/env bash
# System packages the test suite needs (Debian). Idempotent; quiet when everything is present.
set -euo pipefail
need=()
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "ci-deps: missing ${need[*]} and cannot install them" >&2
    exit 1
  fi
fi
