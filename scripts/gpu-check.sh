#!/usr/bin/env bash
# GPU check for a real NVIDIA host, from a build made elsewhere (x86-64: dist/, node_modules/,
# build/Release/*.node carried; see scripts/gpu-carry.sh). Needs the NVIDIA driver; needs no
# compiler and no network. Node.js from PATH (>= 20) or from .carry/node.xz.
#
#   bash scripts/gpu-check.sh [--out DIR] [--skip-tests] [--skip-bench] [--skip-pynvml] [--with-fake-bench]
#
# Steps: host facts; GPU tier of the native tests (test/native/gpu.test.ts); benchmarks against
# the real NVML incl. nvidia-smi side by side; pynvml vs addon field-by-field comparison (when
# pynvml is importable). Exits non-zero when any step fails. Bounded: every step has a timeout and
# the whole run stays under five minutes.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

OUT="${TMPDIR:-/tmp}/navarch-gpu-check-$(date +%Y%m%d-%H%M%S)"
RUN_TESTS=1
RUN_BENCH=1
RUN_PYNVML=1
RUN_FAKE_BENCH=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "gpu-check: --out needs a directory" >&2; exit 2; }; OUT="$2"; shift 2 ;;
    --skip-tests) RUN_TESTS=0; shift ;;
    --skip-bench) RUN_BENCH=0; shift ;;
    --skip-pynvml) RUN_PYNVML=0; shift ;;
    --with-fake-bench) RUN_FAKE_BENCH=1; shift ;;
    -h|--help) sed -n "2,13p" "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument: $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT" || { echo "gpu-check: cannot create $OUT" >&2; exit 2; }
LOG="$OUT/gpu-check.log"
: > "$LOG"

START=$(date +%s)
BUDGET_S=290
RESULTS=()
FAILED=0

say() { printf '%s\n' "$*" | tee -a "$LOG"; }
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }

# step NAME SECONDS CMD...: runs CMD with a timeout bounded by what is left of the budget.
step() {
  local name="$1" secs="$2"; shift 2
  local remain; remain=$(left)
  if [ "$remain" -lt 10 ]; then
    RESULTS+=("FAIL $name (no time left in the 5-minute budget)"); FAILED=1; return 1
  fi
  [ "$secs" -gt "$remain" ] && secs=$remain
  say ""
  say "== $name (timeout ${secs}s)"
  local t0 rc; t0=$(date +%s)
  timeout --kill-after=5 "$secs" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  local dt=$(( $(date +%s) - t0 ))
  if [ "$rc" -eq 0 ]; then RESULTS+=("PASS $name (${dt}s)")
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then RESULTS+=("FAIL $name (timed out after ${dt}s)"); FAILED=1
  else RESULTS+=("FAIL $name (exit $rc, ${dt}s)"); FAILED=1
  fi
  return "$rc"
}
skip() { RESULTS+=("SKIP $1"); say ""; say "== SKIP $1"; }

# ---------------------------------------------------------------- node
node_ok() { command -v node >/dev/null 2>&1 && node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null; }
if ! node_ok; then
  if [ -f "$ROOT/.carry/node.xz" ]; then
    mkdir -p "$ROOT/.carry/bin"
    if command -v xz >/dev/null 2>&1; then
      xz -dc "$ROOT/.carry/node.xz" > "$ROOT/.carry/bin/node"
    elif command -v python3 >/dev/null 2>&1; then
      python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$ROOT/.carry/node.xz" "$ROOT/.carry/bin/node"
    else
      echo "gpu-check: neither xz nor python3 available to unpack .carry/node.xz" >&2; exit 2
    fi
    chmod +x "$ROOT/.carry/bin/node"
    PATH="$ROOT/.carry/bin:$PATH"
    export PATH
  fi
fi
if ! node_ok; then
  echo "gpu-check: Node.js >= 20 not found (install it or carry .carry/node.xz via scripts/gpu-carry.sh)" >&2
  exit 2
fi

# ---------------------------------------------------------------- host facts
say "== host"
say "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "kernel: $(uname -srm)"
say "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n1), $(nproc) cores"
say "node: $(node --version) ($(command -v node))"
if ! command -v nvidia-smi >/dev/null 2>&1; then
  say "gpu-check: nvidia-smi not found: this is not an NVIDIA host with a loaded driver"
  exit 2
fi
step "nvidia-smi -L" 30 nvidia-smi -L
step "driver" 30 nvidia-smi --query-gpu=index,name,driver_version,pci.bus_id,memory.total --format=csv
[ -r /proc/driver/nvidia/version ] && head -n1 /proc/driver/nvidia/version | tee -a "$LOG"
(ldconfig -p 2>/dev/null | grep 'libnvidia-ml.so.1' || true) | tee -a "$LOG"

missing=()
[ -f dist/nvml/index.js ] || missing+=("dist/nvml/index.js (npm run build:ts)")
[ -f node_modules/vitest/vitest.mjs ] || missing+=("node_modules/vitest")
compgen -G "build/Release/*.node" >/dev/null || compgen -G "prebuilds/linux-x64/*.node" >/dev/null || missing+=("build/Release/*.node (npm run build:addon)")
if [ ${#missing[@]} -gt 0 ]; then
  for m in "${missing[@]}"; do say "gpu-check: missing $m"; done
  exit 2
fi
# the library the loader finds (the real one on a GPU host), never an explicit override
unset NAVARCH_NVML_LIBRARY

# ---------------------------------------------------------------- native GPU tier
if [ "$RUN_TESTS" -eq 1 ]; then
  if [ -f test/native/gpu.test.ts ]; then
    NAVARCH_GPU_TESTS=1 NAVARCH_REQUIRE_GPU=1 step "native GPU tests" 150 \
      node node_modules/vitest/vitest.mjs run test/native/gpu.test.ts \
      --reporter=default --reporter=json --outputFile.json="$OUT/gpu-tests.json"
    if [ -f "$OUT/gpu-tests.json" ]; then
      passed=$(node -e 'const r=require(process.argv[1]); console.log(r.numPassedTests||0)' "$OUT/gpu-tests.json" 2>/dev/null || echo 0)
      if [ "${passed:-0}" -eq 0 ]; then
        RESULTS+=("FAIL native GPU tests ran no test (all skipped?)"); FAILED=1
      else
        say "native GPU tests: $passed passed"
      fi
    fi
  else
    RESULTS+=("FAIL test/native/gpu.test.ts is missing"); FAILED=1
  fi
else
  skip "native GPU tests (--skip-tests)"
fi

# ---------------------------------------------------------------- benchmarks
if [ "$RUN_BENCH" -eq 1 ]; then
  step "benchmark: snapshot via addon vs nvidia-smi" 90 \
    node bench/nvml-bench.mjs --real --samples 1000 --smi-samples 20 --json "$OUT/bench-real.json"
  if [ "$RUN_FAKE_BENCH" -eq 1 ]; then
    # the latency and storm benchmarks need injection, i.e. the fake library (carried, built here)
    if [ -f build/fake-nvml/libnvidia-ml.so.1 ]; then
      step "benchmark: fake library latency and storm on this host" 120 \
        node bench/nvml-bench.mjs --only latency,storm --events 10000 --json "$OUT/bench-fake.json"
    else
      RESULTS+=("FAIL --with-fake-bench: build/fake-nvml/libnvidia-ml.so.1 was not carried"); FAILED=1
    fi
  fi
else
  skip "benchmarks (--skip-bench)"
fi

# ---------------------------------------------------------------- pynvml comparison
if [ "$RUN_PYNVML" -eq 1 ]; then
  # a pure-Python nvidia-ml-py wheel carried in .carry/ or .whl/ can be imported straight from the zip
  for whl in .carry/nvidia_ml_py-*.whl .whl/nvidia_ml_py-*.whl; do
    [ -f "$whl" ] && PYTHONPATH="$ROOT/$whl${PYTHONPATH:+:$PYTHONPATH}" && export PYTHONPATH
  done
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import pynvml' >/dev/null 2>&1; then
    step "pynvml dump" 60 python3 scripts/gpu-check/pynvml_dump.py --out "$OUT/pynvml.json"
    step "addon dump" 60 node scripts/gpu-check/addon_dump.mjs --out "$OUT/addon.json"
    step "compare pynvml vs addon" 30 node scripts/gpu-check/compare.mjs "$OUT/pynvml.json" "$OUT/addon.json"
  else
    skip "pynvml comparison (python3 with pynvml from nvidia-ml-py is not importable)"
    step "addon dump" 60 node scripts/gpu-check/addon_dump.mjs --out "$OUT/addon.json"
  fi
else
  skip "pynvml comparison (--skip-pynvml)"
fi

# ---------------------------------------------------------------- fabric (NVSwitch, fabric manager, NVML fabric info)
step "fabric info" 30 node scripts/gpu-check/fabric_dump.mjs --out "$OUT/fabric.json"

# ---------------------------------------------------------------- summary
say ""
say "== summary ($(( $(date +%s) - START ))s; log and results in $OUT)"
for r in "${RESULTS[@]}"; do say "$r"; done
if [ "$FAILED" -ne 0 ]; then
  say "gpu-check: FAILED"
  exit 1
fi
say "gpu-check: OK"
exit 0
