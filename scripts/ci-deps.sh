#!/usr/bin/env bash
# System packages the test suite needs (Debian). Idempotent; quiet when everything is present.
#   g++, make, python3     the addon, the fake libnvidia-ml, the sd_notify receiver in tests
#   ShellCheck (package shellcheck): test/deploy/shellcheck.test.ts
#   systemd                systemd-analyze security/verify (offline; systemd need not be PID 1),
#                          systemd-notify (the sd_notify fallback without the addon),
#                          systemd-sysusers (install.sh in a scratch root)
#   cloud-init             cloud-init schema for deploy/ec2/user-data.yaml
#   curl, file, binutils   deploy/ec2/bootstrap.sh, scripts/prebuild.sh checks
#   g++-aarch64-linux-gnu, binutils-aarch64-linux-gnu   the cross-compiled linux-arm64 prebuild
#   passwd                 useradd/userdel (install.sh fallback, uninstall.sh --purge)
#   prometheus             promtool: check and unit-test deploy/prometheus/ rules, parse the
#                          dashboard's queries (installed without starting the server it carries)
set -euo pipefail
need=()
want() { # want COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 || need+=("$2")
}
apt_install() { # apt_install PACKAGE...: two tries (a mirror hiccup), quiet
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  local i
  for i in 1 2; do
    if apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
      return 0
    fi
    sleep $((i * 5))
  done
  return 1
}

# Required: without these nothing builds.
want g++ g++
want make make
want python3 python3
if [ ${#need[@]} -gt 0 ] && ! apt_install "${need[@]}"; then
  echo "ci-deps: missing ${need[*]} and cannot install them (need root, apt-get and the Debian mirror)" >&2
  exit 1
fi

# Optional: the tests that use them skip with a printed reason when they are missing.
need=()
want shellcheck shellcheck
want systemd-analyze systemd
want cloud-init cloud-init
want curl curl
want file file
want objdump binutils
want useradd passwd
want aarch64-linux-gnu-g++ g++-aarch64-linux-gnu
want aarch64-linux-gnu-objdump binutils-aarch64-linux-gnu
if [ ${#need[@]} -gt 0 ] && ! apt_install "${need[@]}"; then
  echo "ci-deps: warning: could not install ${need[*]}; the tests that need them will be skipped (reasons printed)" >&2
fi

# Optional: promtool (package prometheus) for test/deploy/prometheus-rules.test.ts. The package also
# ships the Prometheus server and enables its unit; a policy-rc.d answering 101 keeps apt from
# starting it (only when no policy-rc.d exists already; removed afterwards).
if ! command -v promtool >/dev/null 2>&1; then
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ "$(id -u)" = 0 ] && [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  promtool_ok=1
  apt_install prometheus || promtool_ok=0
  if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
  if [ "$promtool_ok" = 0 ]; then
    echo "ci-deps: warning: could not install prometheus (promtool); test/deploy/prometheus-rules.test.ts will be skipped (reason printed)" >&2
  fi
fi
