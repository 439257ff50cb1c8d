#!/usr/bin/env bash
# EC2 bootstrap for navarch-agent (run by cloud-init from user-data.yaml, or by hand):
#   1. reads the instance identity from IMDSv2 (token PUT, then instance-id, region, zone, type),
#   2. installs the agent: by default the self-contained release (BOOTSTRAP_TARBALL_URL), which
#      brings its own Node.js; with BOOTSTRAP_NPM_SPEC, from an npm registry instead,
#   3. only when the agent brings no Node.js: makes sure Node.js >= 20 exists (present, a Node
#      tarball URL, or the distribution's package),
#   4. writes agent.env (NAVARCH_* with node id = instance id, provider aws) and the token,
#   5. installs, enables and starts navarch-agent.service via systemd/install.sh.
# Idempotent: a marker holding the instance id makes a re-run (reboot) a no-op; an image baked
# from a bootstrapped instance has another instance id and bootstraps again.
#
# Usage: bootstrap.sh [--config FILE] [--root DIR] [--force]
# Settings come from the environment, or from FILE (KEY=VALUE lines, default
# /etc/navarch-agent/bootstrap.env when it exists). See docs/deploy.md for the full list:
#   NAVARCH_SERVER (required), NAVARCH_POOL, any other NAVARCH_* agent setting,
#   NAVARCH_AUTH_TOKEN or BOOTSTRAP_TOKEN_SSM_PARAMETER (token; never written to agent.env),
#   BOOTSTRAP_TARBALL_URL [+ BOOTSTRAP_TARBALL_SHA256] (the release) or BOOTSTRAP_NPM_SPEC,
#   BOOTSTRAP_NODE_TARBALL_URL [+ BOOTSTRAP_NODE_TARBALL_SHA256],
#   IMDS_ENDPOINT (default http://169.254.169.254), IMDS_DEADLINE_S (default 120),
#   SYSTEMCTL, NPM, AWS, CURL (command overrides, for tests).
set -euo pipefail

prog=navarch-bootstrap
log() { echo "$prog: $*" >&2; }
die() { echo "$prog: error: $*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
config=
root=${BOOTSTRAP_ROOT:-/}
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --config) [ $# -ge 2 ] || die "--config needs a file"; config=$2; shift 2 ;;
    --config=*) config=${1#*=}; shift ;;
    --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
    --root=*) root=${1#*=}; shift ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
case "$root" in /*) ;; *) die "--root must be an absolute path, got '$root'" ;; esac
r=${root%/}
[ -n "$config" ] || { [ ! -f "$r/etc/navarch-agent/bootstrap.env" ] || config=$r/etc/navarch-agent/bootstrap.env; }

# Settings file: plain KEY=VALUE (optionally "quoted") lines; nothing is executed.
if [ -n "$config" ]; then
  [ -r "$config" ] || die "cannot read config file $config"
  lineno=0
  while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    case "$line" in ''|'#'*) continue ;; esac
    [[ "$line" =~ ^([A-Z][A-Z0-9_]*)=(.*)$ ]] || die "$config:$lineno: expected KEY=VALUE, got: $line"
    key=${BASH_REMATCH[1]} val=${BASH_REMATCH[2]}
    case "$key" in NAVARCH_*|BOOTSTRAP_*|IMDS_*) ;; *) die "$config:$lineno: only NAVARCH_*, BOOTSTRAP_* and IMDS_* settings are allowed, got $key" ;; esac
    if [[ "$val" =~ ^\"(.*)\"$ ]] || [[ "$val" =~ ^\'(.*)\'$ ]]; then val=${BASH_REMATCH[1]}; fi
    # The environment wins over the file (so a one-off run can override a setting).
    if [ -z "${!key+x}" ]; then export "$key=$val"; fi
  done < "$config"
fi

imds=${IMDS_ENDPOINT:-http://169.254.169.254}
imds=${imds%/}
deadline_s=${IMDS_DEADLINE_S:-120}
if ! [[ "$deadline_s" =~ ^[1-9][0-9]{0,4}$ ]]; then die "IMDS_DEADLINE_S must be a positive integer, got '$deadline_s'"; fi
server=${NAVARCH_SERVER:-}
[ -n "$server" ] || die "NAVARCH_SERVER is not set (the control plane URL, e.g. http://navarch-cp.internal:50051)"
[[ "$server" =~ ^https?://[^[:space:]\"\\]+$ ]] || die "NAVARCH_SERVER must be an http:// or https:// URL, got '$server'"
if [ -z "${BOOTSTRAP_TARBALL_URL:-}" ] && [ -z "${BOOTSTRAP_NPM_SPEC:-}" ]; then
  die "BOOTSTRAP_TARBALL_URL is not set (the URL of the self-contained release, navarch-agent-<version>-linux-<arch>.tar.gz; or BOOTSTRAP_NPM_SPEC to install from an npm registry)"
fi
curl_cmd=${CURL:-curl}
command -v "$curl_cmd" >/dev/null || die "curl is required (install it, or set CURL)"

# ---- IMDSv2 --------------------------------------------------------------------------------
# Every request is bounded (connect 2 s, total 5 s) and retried with exponential backoff plus
# jitter until the overall deadline; a 401 means the token expired and gets a fresh one.
start_ts=$(date +%s)
imds_token=
remaining() { echo $(( start_ts + deadline_s - $(date +%s) )); }
backoff() { # backoff ATTEMPT: sleep min(8, 0.25*2^n) s plus up to 50% jitter, within the deadline
  local n=$1 ms left
  ms=$(( 250 * (1 << (n < 5 ? n : 5)) ))
  ms=$(( ms + RANDOM % (ms / 2 + 1) ))
  left=$(( $(remaining) * 1000 ))
  [ "$left" -gt 0 ] || return 1
  [ "$ms" -le "$left" ] || ms=$left
  sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
}
imds_request() { # imds_request METHOD PATH -> body on stdout; returns 0 ok, 2 on HTTP 401, 1 otherwise
  local method=$1 path=$2 out code
  local args=(-sS --noproxy '*' --connect-timeout 2 --max-time 5 -X "$method" -o - -w '\n%{http_code}')
  if [ "$path" = /latest/api/token ]; then
    args+=(-H 'X-aws-ec2-metadata-token-ttl-seconds: 21600')
  else
    args+=(-H "X-aws-ec2-metadata-token: $imds_token")
  fi
  out=$("$curl_cmd" "${args[@]}" "$imds$path" 2>/dev/null) || return 1
  code=${out##*$'\n'}
  out=${out%$'\n'*}
  case "$code" in
    200) printf '%s' "$out" ;;
    401) return 2 ;;
    *) return 1 ;;
  esac
}
imds_get() { # imds_get VAR PATH: sets VAR, retrying until the deadline (no subshell: the
  # token must survive between calls)
  local var=$1 path=$2 attempt=0 rc value
  while :; do
    if [ -z "$imds_token" ]; then
      if ! imds_token=$(imds_request PUT /latest/api/token) || [ -z "$imds_token" ]; then imds_token=; fi
    fi
    if [ -n "$imds_token" ]; then
      rc=0; value=$(imds_request GET "$path") || rc=$?
      if [ "$rc" = 0 ] && [ -n "$value" ]; then printf -v "$var" '%s' "$value"; return 0; fi
      if [ "$rc" = 2 ]; then imds_token=; fi
    fi
    backoff "$attempt" || die "instance metadata (IMDSv2 at $imds) unreachable: no answer for $path within ${deadline_s}s"
    attempt=$((attempt + 1))
  done
}

instance_id='' region='' zone='' instance_type=''
imds_get instance_id /latest/meta-data/instance-id
imds_get region /latest/meta-data/placement/region
imds_get zone /latest/meta-data/placement/availability-zone
imds_get instance_type /latest/meta-data/instance-type
[[ "$instance_id" =~ ^i-[0-9a-f]{8,32}$ ]] || die "IMDS returned an unexpected instance id: '$instance_id'"
[[ "$region" =~ ^[a-z0-9-]{1,64}$ ]] || die "IMDS returned an unexpected region: '$region'"
[[ "$zone" =~ ^[a-z0-9-]{1,64}$ ]] || die "IMDS returned an unexpected availability zone: '$zone'"
[[ "$instance_type" =~ ^[a-z0-9.-]{1,64}$ ]] || die "IMDS returned an unexpected instance type: '$instance_type'"
log "instance $instance_id ($instance_type) in $zone"

marker=$r/var/lib/navarch-bootstrap/done
if [ "$force" = 0 ] && [ -f "$marker" ] && [ "$(sed -n 's/^instance-id=//p' "$marker")" = "$instance_id" ]; then
  log "already bootstrapped on this instance ($marker); nothing to do (--force re-runs)"
  exit 0
fi

# ---- downloads -----------------------------------------------------------------------------
fetch() { # fetch URL DEST [SHA256]: bounded, retried, checksum-verified when a sum is given
  local url=$1 dest=$2 sum=${3:-}
  "$curl_cmd" -fsSL --retry 5 --retry-delay 2 --retry-connrefused --connect-timeout 10 \
    --max-time 600 --max-filesize 1073741824 -o "$dest" "$url" || die "download of $url failed"
  if [ -n "$sum" ]; then
    local got
    got=$(sha256sum "$dest" | cut -d' ' -f1)
    [ "$got" = "$sum" ] || die "checksum mismatch for $url: expected $sum, got $got"
  fi
}
work=$(mktemp -d "${TMPDIR:-/tmp}/navarch-bootstrap.XXXXXX")
new= # a release being unpacked: removed again if the bootstrap stops before moving it into place
trap 'rm -rf "$work" ${new:+"$new"}' EXIT

# ---- Node.js >= 20 (only when the agent does not bring its own) ------------------------------
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
node_ok() { local n; n=$(command -v "$1" 2>/dev/null) || return 1; [ "$(node_major "$n")" -ge 20 ]; }
host_arch=$(uname -m | sed 's/x86_64/x64/;s/aarch64/arm64/')
node_dir=$r/opt/navarch-agent/node
ensure_node() {
  if [ -x "$node_dir/bin/node" ]; then export PATH="$node_dir/bin:$PATH"; fi
  if node_ok node; then
    log "using $(command -v node) ($(node --version))"
  elif [ -n "${BOOTSTRAP_NODE_TARBALL_URL:-}" ]; then
    log "installing Node.js from $BOOTSTRAP_NODE_TARBALL_URL"
    fetch "$BOOTSTRAP_NODE_TARBALL_URL" "$work/node.tar" "${BOOTSTRAP_NODE_TARBALL_SHA256:-}"
    rm -rf "$node_dir.new" && mkdir -p "$node_dir.new"
    tar -xf "$work/node.tar" -C "$node_dir.new" --strip-components=1 --no-same-owner || die "cannot unpack the Node.js tarball"
    [ "$(node_major "$node_dir.new/bin/node")" -ge 20 ] || die "the Node.js tarball does not hold Node.js >= 20"
    rm -rf "$node_dir" && mv "$node_dir.new" "$node_dir"
    export PATH="$node_dir/bin:$PATH"
  else
    # Distribution packages, bounded (cloud-init's own package step may hold the lock a while).
    # Amazon Linux 2023 namespaces them: nodejs24 brings node-24, npm is nodejs24-npm (npm-24).
    # Debian/Ubuntu's nodejs is older than 20 on most releases; the check below says so.
    local v
    if command -v dnf >/dev/null; then
      for v in 24 22; do timeout 600 dnf install -y -q "nodejs$v" "nodejs$v-npm" >/dev/null 2>&1 && break; done
    elif command -v apt-get >/dev/null; then
      { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq nodejs npm; } >/dev/null 2>&1 || true
    fi
    for v in 24 22; do
      if ! node_ok node && [ -x "/usr/bin/node-$v" ]; then ln -sf "/usr/bin/node-$v" /usr/local/bin/node; fi
      if ! command -v npm >/dev/null && [ -x "/usr/bin/npm-$v" ]; then ln -sf "/usr/bin/npm-$v" /usr/local/bin/npm; fi
    done
    node_ok node || die "Node.js >= 20 is not installed and the distribution has none: use the self-contained release (BOOTSTRAP_TARBALL_URL), or set BOOTSTRAP_NODE_TARBALL_URL (e.g. a mirror of node-v24.x-linux-$host_arch.tar.xz)"
  fi
}

# ---- the agent -----------------------------------------------------------------------------
inst=$r/opt/navarch-agent
mkdir -p "$inst"
if [ -n "${BOOTSTRAP_TARBALL_URL:-}" ]; then
  log "installing the agent from $BOOTSTRAP_TARBALL_URL"
  fetch "$BOOTSTRAP_TARBALL_URL" "$work/agent.tar.gz" "${BOOTSTRAP_TARBALL_SHA256:-}"
  tar -tzf "$work/agent.tar.gz" > "$work/agent.list" 2>/dev/null || die "$BOOTSTRAP_TARBALL_URL is not a gzip tarball"
  top=$(sed -n '1s#/.*##p' "$work/agent.list")
  [[ "$top" =~ ^navarch-agent-[0-9A-Za-z.+-]+$ ]] || die "$BOOTSTRAP_TARBALL_URL does not look like a navarch-agent release (top directory '$top')"
  new=$inst/$top.new
  rm -rf "$new" && mkdir -p "$new"
  tar -xzf "$work/agent.tar.gz" -C "$new" --strip-components=1 --no-same-owner || die "cannot unpack $BOOTSTRAP_TARBALL_URL"
  [ -x "$new/bin/navarch-agent" ] || die "the release tarball has no bin/navarch-agent"
  if [ -e "$new/node/bin/node" ]; then
    # The self-contained release: its own runtime, so the host needs no Node.js.
    if [ "$(node_major "$new/node/bin/node")" -lt 20 ]; then
      rm -rf "$new"
      die "the release's bundled Node.js (node/bin/node) does not run on this $(uname -m) host: use the linux-$host_arch release"
    fi
    log "the release brings its own Node.js ($("$new/node/bin/node" --version))"
  else
    ensure_node
  fi
  rm -rf "${inst:?}/$top" && mv "$new" "$inst/$top"
  ln -sfn "$top" "$inst/current"
  bin=/opt/navarch-agent/current/bin/navarch-agent
  install_sh=$inst/current/systemd/install.sh
elif [ -n "${BOOTSTRAP_NPM_SPEC:-}" ]; then
  ensure_node
  npm_cmd=${NPM:-npm}
  command -v "${npm_cmd%% *}" >/dev/null || die "npm is not installed: use BOOTSTRAP_TARBALL_URL (the self-contained release) instead"
  log "installing $BOOTSTRAP_NPM_SPEC from the npm registry"
  # shellcheck disable=SC2086 # NPM may carry arguments
  timeout 900 $npm_cmd install --global --prefix "$inst/npm" --no-audit --no-fund --omit=dev "$BOOTSTRAP_NPM_SPEC" >&2 \
    || die "npm install of $BOOTSTRAP_NPM_SPEC failed"
  # The package's launcher (not npm's bin link, whose "env node" needs node on systemd's PATH).
  bin=/opt/navarch-agent/npm/lib/node_modules/navarch-agent/deploy/bin/navarch-agent
  install_sh=$inst/npm/lib/node_modules/navarch-agent/systemd/install.sh
fi
[ -f "$install_sh" ] || install_sh=$here/../../systemd/install.sh
[ -f "$install_sh" ] || die "systemd/install.sh not found in the installed agent"

# ---- token ---------------------------------------------------------------------------------
token=${NAVARCH_AUTH_TOKEN:-}
if [ -z "$token" ] && [ -n "${BOOTSTRAP_TOKEN_SSM_PARAMETER:-}" ]; then
  aws_cmd=${AWS:-aws}
  command -v "${aws_cmd%% *}" >/dev/null || die "BOOTSTRAP_TOKEN_SSM_PARAMETER is set but the aws CLI is not installed"
  # shellcheck disable=SC2086 # AWS may carry arguments
  token=$(timeout 60 $aws_cmd ssm get-parameter --region "$region" --name "$BOOTSTRAP_TOKEN_SSM_PARAMETER" \
    --with-decryption --query Parameter.Value --output text) || die "cannot read SSM parameter $BOOTSTRAP_TOKEN_SSM_PARAMETER"
fi

# ---- settings and service ------------------------------------------------------------------
sets=(
  --set "NAVARCH_SERVER=$server"
  --set "NAVARCH_NODE_ID=$instance_id"
  --set "NAVARCH_PROVIDER=aws"
  --set "NAVARCH_REGION=$region"
  --set "NAVARCH_ZONE=$zone"
  --set "NAVARCH_INSTANCE_TYPE=$instance_type"
)
# Every other NAVARCH_* setting given to the bootstrap passes through to agent.env.
while IFS='=' read -r key _; do
  case "$key" in
    NAVARCH_SERVER|NAVARCH_NODE_ID|NAVARCH_PROVIDER|NAVARCH_REGION|NAVARCH_ZONE|NAVARCH_INSTANCE_TYPE) ;;
    NAVARCH_AUTH_TOKEN|NAVARCH_AUTH_TOKEN_FILE) ;;
    NAVARCH_*) sets+=(--set "$key=${!key}") ;;
  esac
done < <(env | grep -E '^NAVARCH_[A-Z0-9_]*=' | sort)
tok_args=()
if [ -n "$token" ]; then tok_args=(--token-stdin); fi
printf '%s' "$token" | bash "$install_sh" --root "$root" --bin "$bin" --replace-env "${sets[@]}" ${tok_args[@]+"${tok_args[@]}"} >&2 \
  || die "installing the service failed (see the install.sh message above)"

mkdir -p "$(dirname "$marker")"
printf 'instance-id=%s\nat=%s\n' "$instance_id" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$marker.tmp"
mv -f "$marker.tmp" "$marker"
log "done: navarch-agent installed and started as node $instance_id"
