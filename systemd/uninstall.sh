#!/usr/bin/env bash
# Reverses install.sh: stops and disables navarch-agent.service, removes the unit and
# /etc/navarch-agent (settings and token). The state directory (/var/lib/navarch-agent: the
# durable event store) and the system user are kept unless --purge. As in install.sh, a --root
# other than / is not the running system: the enablement links are removed there and systemctl
# is not run (--live treats DIR as the running system).
#
# Usage: uninstall.sh [--root DIR] [--purge] [--live] [--quiet]
# Environment: SYSTEMCTL (default "systemctl"), USERDEL (default "userdel"),
# GROUPDEL (default "groupdel").
set -euo pipefail

prog=uninstall.sh
die() { echo "$prog: $*" >&2; exit 1; }
say() { [ "$quiet" = 1 ] || echo "$prog: $*"; }

root=/
purge=0
quiet=0
live=
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
    --root=*) root=${1#*=}; shift ;;
    --purge) purge=1; shift ;;
    --live) live=1; shift ;;
    --quiet|-q) quiet=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
case "$root" in /*) ;; *) die "--root must be an absolute path, got '$root'" ;; esac
[ -d "$root" ] || die "--root $root is not a directory"
if [ -z "$live" ]; then if [ "$root" -ef / ]; then live=1; else live=0; fi; fi

r=${root%/}
systemctl=${SYSTEMCTL:-systemctl}
unit=$r/etc/systemd/system/navarch-agent.service
dropin_dir=$r/etc/systemd/system/navarch-agent.service.d

run() { say "+ $*"; "$@" || die "'$*' failed"; }
if [ -e "$unit" ]; then
  if [ "$live" = 1 ]; then
    # disable --now also stops it; a unit that is not loaded is not an error here.
    # shellcheck disable=SC2086 # SYSTEMCTL may carry arguments
    $systemctl disable --now navarch-agent.service || say "warning: '$systemctl disable --now' failed; continuing"
  else
    for link in "$r"/etc/systemd/system/*.wants/navarch-agent.service; do
      if [ -L "$link" ]; then rm -f "$link"; rmdir "${link%/*}" 2>/dev/null || true; say "disabled: removed $link"; fi
    done
  fi
  rm -f "$unit"
  say "removed $unit"
  if [ -d "$dropin_dir" ]; then
    rm -f "$dropin_dir/50-no-token.conf"
    rmdir "$dropin_dir" 2>/dev/null || say "kept $dropin_dir (it holds other drop-ins)"
  fi
  if [ "$live" = 1 ]; then
    # shellcheck disable=SC2086
    run $systemctl daemon-reload
  fi
fi
if [ -d "$r/etc/navarch-agent" ]; then
  rm -rf "$r/etc/navarch-agent"
  say "removed $r/etc/navarch-agent"
fi
if [ "$purge" = 1 ]; then
  rm -rf "$r/var/lib/navarch-agent"
  say "removed $r/var/lib/navarch-agent"
  if grep -q '^navarch-agent:' "$r/etc/passwd" 2>/dev/null; then
    "${USERDEL:-userdel}" --root "$root" navarch-agent || die "userdel navarch-agent failed"
    say "removed user navarch-agent"
  fi
  if grep -q '^navarch-agent:' "$r/etc/group" 2>/dev/null; then
    "${GROUPDEL:-groupdel}" --root "$root" navarch-agent || die "groupdel navarch-agent failed"
  fi
else
  [ ! -d "$r/var/lib/navarch-agent" ] || say "kept $r/var/lib/navarch-agent and user navarch-agent (--purge removes them)"
fi
say "done"
