# shellcheck shell=bash
# Sourced by scripts/prebuild.sh and scripts/release.sh: die, --help and the options both take
# (--arch x64|arm64, repeatable; --out DIR). The caller declares `arches=()` and `out`.

# die MSG...: prints "<script name>: MSG" on stderr and exits 1.
die() { echo "${0##*/}: $*" >&2; exit 1; }

# common_opt ARGS...: handles $1 when it is a shared option (--arch X, --arch=X, --out DIR,
# -h/--help) and sets `taken` to how many arguments it used; any other argument is an error.
# --help prints the caller's header comment (line 2 up to `set -euo`) and exits 0.
taken=0
# shellcheck disable=SC2034 # out is the caller's
common_opt() {
  case "$1" in
    --arch) [ $# -ge 2 ] || die "--arch needs x64 or arm64"; arches+=("$2"); taken=2 ;;
    --arch=*) arches+=("${1#*=}"); taken=1 ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; taken=2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
}

# check_arches: no --arch means both; anything but x64 or arm64 is an error.
check_arches() {
  [ ${#arches[@]} -gt 0 ] || arches=(x64 arm64)
  local a
  for a in "${arches[@]}"; do
    case "$a" in x64|arm64) ;; *) die "unsupported --arch '$a' (x64 or arm64)" ;; esac
  done
}
