#!/usr/bin/env bash
# Installs the navarch-agent systemd service: system user, /etc/navarch-agent (config + token),
# the unit file, then daemon-reload, enable and start. Idempotent: re-running changes nothing
# that is already right, never overwrites an existing agent.env (unless --replace-env), and only
# restarts the service when the unit, the environment or the token changed. Without a token,
# a drop-in (navarch-agent.service.d/50-no-token.conf) removes the credential and the flag.
# --root DIR other than / is an image or a chroot whose systemd is not running: the service is
# enabled there with the WantedBy= symlink `systemctl enable` would make, and nothing is reloaded
# or started; systemctl is not run at all (--live treats DIR as the running system).
#
# Usage: install.sh [--root DIR] [--bin PATH] [--set NAVARCH_KEY=VALUE]... [--replace-env]
#                   [--token-file FILE | --token-stdin] [--no-start] [--no-enable] [--live]
#                   [--quiet]
# Environment: SYSTEMCTL (default "systemctl"; e.g. a recorder in tests), SYSUSERS
# (default "systemd-sysusers"), NAVARCH_AUTH_TOKEN (a token, instead of --token-file).
set -euo pipefail

prog=install.sh
die() { echo "$prog: $*" >&2; exit 1; }
say() { [ "$quiet" = 1 ] || echo "$prog: $*"; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=/
bin=/usr/local/bin/navarch-agent
unit_src=$here/navarch-agent.service
sysusers_src=$here/navarch-agent.sysusers
replace_env=0
start=1
enable=1
quiet=0
live=
token=
token_given=0
sets=()

while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
    --root=*) root=${1#*=}; shift ;;
    --bin) [ $# -ge 2 ] || die "--bin needs a path"; bin=$2; shift 2 ;;
    --bin=*) bin=${1#*=}; shift ;;
    --unit) [ $# -ge 2 ] || die "--unit needs a file"; unit_src=$2; shift 2 ;;
    --set) [ $# -ge 2 ] || die "--set needs NAVARCH_KEY=VALUE"; sets+=("$2"); shift 2 ;;
    --set=*) sets+=("${1#*=}"); shift ;;
    --replace-env) replace_env=1; shift ;;
    --token-file)
      [ $# -ge 2 ] || die "--token-file needs a file"
      [ -r "$2" ] || die "cannot read token file $2"
      token=$(cat -- "$2"); token_given=1; shift 2 ;;
    --token-stdin) token=$(cat); token_given=1; shift ;;
    --no-start) start=0; shift ;;
    --no-enable) enable=0; start=0; shift ;;
    --live) live=1; shift ;;
    --quiet|-q) quiet=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
if [ "$token_given" = 0 ] && [ -n "${NAVARCH_AUTH_TOKEN:-}" ]; then
  token=$NAVARCH_AUTH_TOKEN; token_given=1
fi

case "$root" in /*) ;; *) die "--root must be an absolute path, got '$root'" ;; esac
case "$bin" in /*) ;; *) die "--bin must be an absolute path, got '$bin'" ;; esac
[[ "$bin" =~ ^/[A-Za-z0-9._/+-]+$ ]] || die "--bin must be a plain absolute path ([A-Za-z0-9._/+-]), got '$bin'"
[ -d "$root" ] || die "--root $root is not a directory"
if [ -z "$live" ]; then if [ "$root" -ef / ]; then live=1; else live=0; fi; fi
[ -r "$unit_src" ] || die "unit file $unit_src not found"
token=${token%$'\n'}
case "$token" in *$'\n'*) die "the token must be a single line" ;; esac

# Validate --set before touching anything.
for kv in ${sets[@]+"${sets[@]}"}; do
  key=${kv%%=*}
  [ "$key" != "$kv" ] || die "--set $kv: expected NAVARCH_KEY=VALUE"
  [[ "$key" =~ ^NAVARCH_[A-Z0-9_]+$ ]] || die "--set $kv: the key must match NAVARCH_[A-Z0-9_]+"
  val=${kv#*=}
  case "$val" in *$'\n'*|*\"*|*\\*) die "--set $key: the value must not contain newlines, quotes or backslashes" ;; esac
  [ "$key" != NAVARCH_AUTH_TOKEN ] || die "--set NAVARCH_AUTH_TOKEN: pass the token with --token-file (it must not live in agent.env)"
done

r=${root%/}
systemctl=${SYSTEMCTL:-systemctl}
sysusers=${SYSUSERS:-systemd-sysusers}
user=navarch-agent
etc=$r/etc/navarch-agent
unit_dst=$r/etc/systemd/system/navarch-agent.service
changed=0
is_root=0
[ "$(id -u)" = 0 ] && is_root=1

# 1. The system user (systemd-sysusers understands --root; useradd is the fallback).
mkdir -p "$r/etc"
if ! grep -q "^$user:" "$r/etc/passwd" 2>/dev/null; then
  if command -v "${sysusers%% *}" >/dev/null 2>&1; then
    # shellcheck disable=SC2086 # SYSUSERS may carry arguments
    $sysusers --root="$root" "$sysusers_src" >/dev/null 2>&1 || die "creating user $user with $sysusers failed"
  elif command -v useradd >/dev/null 2>&1; then
    useradd --root "$root" --system --user-group --no-create-home --home-dir /var/lib/navarch-agent \
      --shell /usr/sbin/nologin --comment "Navarch GPU health agent" "$user" || die "useradd $user failed"
  else
    die "neither systemd-sysusers nor useradd is available to create user $user"
  fi
  say "created system user $user"
fi
uid=$(awk -F: -v u="$user" '$1 == u { print $3 }' "$r/etc/passwd")
gid=$(awk -F: -v u="$user" '$1 == u { print $4 }' "$r/etc/passwd")
if [ -z "$uid" ] || [ -z "$gid" ]; then die "user $user is missing from $r/etc/passwd after creating it"; fi

own() { # own OWNER:GROUP MODE PATH (ownership only when running as root)
  chmod "$2" "$3"
  if [ "$is_root" = 1 ]; then chown "$1" "$3"; fi
}

# 2. Directories.
mkdir -p "$etc" "$r/var/lib/navarch-agent" "$r/etc/systemd/system"
own "0:$gid" 0750 "$etc"
own "$uid:$gid" 0700 "$r/var/lib/navarch-agent"

# Writes stdin to $1 atomically when the content differs; returns 0 if it changed the file.
write_if_changed() {
  local dst=$1 mode=$2 owner=$3 tmp
  tmp=$(mktemp "$dst.XXXXXX")
  cat > "$tmp"
  own "$owner" "$mode" "$tmp"
  if [ -f "$dst" ] && cmp -s "$tmp" "$dst"; then
    rm -f "$tmp"
    own "$owner" "$mode" "$dst"
    return 1
  fi
  mv -f "$tmp" "$dst"
  return 0
}

# 3. Environment file: created once; --replace-env rewrites it from the --set values.
env_file=$etc/agent.env
if [ ! -e "$env_file" ] || [ "$replace_env" = 1 ]; then
  if {
    echo "# navarch-agent settings (NAVARCH_* flags, see docs/deploy.md). Written by install.sh."
    for kv in ${sets[@]+"${sets[@]}"}; do echo "${kv%%=*}=\"${kv#*=}\""; done
  } | write_if_changed "$env_file" 0640 "0:$gid"; then
    changed=1; say "wrote $env_file"
  fi
elif [ ${#sets[@]} -gt 0 ]; then
  say "kept existing $env_file (use --replace-env to rewrite it)"
fi

# 4. Token. LoadCredential= fails the start when its file is missing, and the agent rejects an
# empty token file, so without a token a drop-in drops the credential and the flag instead.
token_file=$etc/auth-token
dropin_dir=$r/etc/systemd/system/navarch-agent.service.d
dropin=$dropin_dir/50-no-token.conf
if [ "$token_given" = 1 ] && [ -n "$token" ]; then
  if printf '%s' "$token" | write_if_changed "$token_file" 0600 0:0; then changed=1; say "wrote $token_file"; fi
elif [ "$token_given" = 1 ]; then
  die "the token is empty"
fi
have_token=0
if [ -s "$token_file" ]; then have_token=1; fi

# 5. Unit file, with ExecStart pointing at --bin.
if sed "s#^ExecStart=/usr/local/bin/navarch-agent #ExecStart=$bin #" "$unit_src" \
  | write_if_changed "$unit_dst" 0644 0:0; then
  changed=1; say "installed $unit_dst"
fi
if [ "$have_token" = 1 ]; then
  if [ -e "$dropin" ]; then
    rm -f "$dropin"; rmdir "$dropin_dir" 2>/dev/null || true
    changed=1; say "removed $dropin (a token is configured)"
  fi
else
  mkdir -p "$dropin_dir"
  exec_line=$(grep '^ExecStart=' "$unit_dst" | sed 's# --auth-token-file [^ ]*##')
  if printf '%s\n' "# Written by install.sh: no token in $token_file, so no credential to load." \
    "[Service]" "LoadCredential=" "ExecStart=" "$exec_line" \
    | write_if_changed "$dropin" 0644 0:0; then
    changed=1; say "no token configured: installed $dropin"
  fi
fi

# 6. systemd.
if [ "$live" = 0 ]; then
  # Offline: the links `systemctl enable` would create, from the unit's WantedBy= lines.
  if [ "$enable" = 1 ]; then
    # shellcheck disable=SC2013 # WantedBy= holds space-separated targets
    for target in $(sed -n 's/^WantedBy=//p' "$unit_dst"); do
      [[ "$target" =~ ^[A-Za-z0-9@._-]+$ ]] || die "odd WantedBy=$target in $unit_dst"
      link=$r/etc/systemd/system/$target.wants/navarch-agent.service
      if [ "$(readlink "$link" 2>/dev/null)" != /etc/systemd/system/navarch-agent.service ]; then
        mkdir -p "${link%/*}"
        ln -sfn /etc/systemd/system/navarch-agent.service "$link"
        say "enabled: $link"
      fi
    done
  fi
  say "$root is not the running system: systemd there starts the service at boot (nothing reloaded or started now)"
  say "done (changed=$changed)"
  exit 0
fi
run() { say "+ $*"; "$@" || die "'$*' failed (SYSTEMCTL=$systemctl)"; }
# shellcheck disable=SC2086 # SYSTEMCTL may carry arguments (e.g. --root)
run $systemctl daemon-reload
if [ "$enable" = 1 ]; then
  # shellcheck disable=SC2086
  run $systemctl enable navarch-agent.service
fi
if [ "$start" = 1 ]; then
  # shellcheck disable=SC2086
  if [ "$changed" = 1 ]; then run $systemctl restart navarch-agent.service
  else run $systemctl start navarch-agent.service; fi
fi
say "done (changed=$changed)"
