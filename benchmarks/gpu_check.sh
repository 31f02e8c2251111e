#!/usr/bin/env bash
# The GPU check (issues 8 and 13): what hf_time does on one GPU, in under 8 minutes, with no network.
#
#   benchmarks/gpu_check.sh [--out DIR] [--cpu] [--only devices,profile,...]    # run it (all sections by default;
#                                                  # DIR default: $OUT, else benchmarks/gpu_check_out)
#   benchmarks/gpu_check.sh --prepare              # once, where PyPI answers: wheels for a bare GPU box
#
# Stays within GPU_CHECK_BUDGET seconds (default 470): sections are cut or skipped to fit.
# Prints and writes as JSON (DIR/env.json, train.json, merges.json, profile.json, devices.json, timeline.json, and
# all of it in gpu_check.json, plus gpu_check.log):
#   * host<->device copy bandwidth and a bf16 matmul's TFLOP/s, measured in the same run;
#   * training tokens/s and MFU (bf16) of SmolLM2-135M, full and LoRA (hf_time.lm_training);
#   * dense merges (task_arithmetic, ties; the 271M benchmark of benchmarks/merge_bench.py) with
#     --device cuda against the CPU run, in GB/s against the copy bandwidth;
#   * profile: the same merges in one process (imports, device start, cProfile's top functions);
#   * tests/test_devices.py: every registered method on CUDA vs CPU;
#   * one 2-step causal-LM timeline on the embedded Hub.
# Without CUDA (or with --cpu) it runs tiny versions of each in under two minutes (its test runs that).
#
# A bare GPU machine (no network) needs the packages hf_time uses that its image may lack or hold in
# other versions (datasets, evaluate, huggingface_hub 2.x, transformers 5.2x, gguf...): `--prepare`
# downloads them as wheels into .whl/ (git-ignored); carry .whl with the working tree and this script
# installs them into /tmp/hf_time_site first. The python is $PYTHON, else python3.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
[[ "$PY" == */* ]] && PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # sections run from other folders
OUT_DIR="${OUT:-$ROOT/benchmarks/gpu_check_out}"
CPU_FLAG=""
PREPARE=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT_DIR="${2:?--out needs a folder}"; shift 2 ;;
    --cpu) CPU_FLAG="--cpu"; shift ;;
    --prepare) PREPARE=1; shift ;;
    --only) ONLY="${2:?--only needs sections, e.g. devices,profile}"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "error: unknown argument '$1'; use --out DIR, --cpu, --only SECTIONS or --prepare" >&2; exit 2 ;;
  esac
done

# Packages hf_time needs beyond a CUDA image's torch/accelerate/peft/safetensors (versions: this python's).
WHEELS="huggingface_hub httpx2 httpcore2 truststore click transformers tokenizers regex peft accelerate datasets evaluate dill multiprocess fsspec gguf"

if [ "$PREPARE" = 1 ]; then
  target="${WHEEL_PYTHON:-3.12}"  # the GPU machine's python (the device image's is 3.12)
  rm -rf "$ROOT/.whl" && mkdir -p "$ROOT/.whl"  # git-ignored (.gitignore): it travels only when a run carries it
  echo "$target" > "$ROOT/.whl/PYTHON_VERSION"
  for pkg in $WHEELS; do
    version="$("$PY" -c "import importlib.metadata as m; print(m.version('$pkg'))")" || {
      echo "error: $pkg is not installed in $PY; install the project first (pip install -e .[llm])" >&2; exit 2; }
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$target" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$ROOT/.whl" "$pkg==$version" || { echo "error: could not download $pkg==$version" >&2; exit 2; }
  done
  echo "wheels in $ROOT/.whl ($(du -sh "$ROOT/.whl" | cut -f1)); carry .whl and run benchmarks/gpu_check.sh"
  exit 0
fi

# hf_time from this checkout, laid out as pip installs it (model_cards/ ships inside the package); the
# sections run from /tmp, so that the checkout's own hf_time/ (without model_cards) is never imported.
PKG=/tmp/hf_time_pkg
rm -rf "$PKG" && mkdir -p "$PKG" && cp -r "$ROOT/hf_time" "$PKG/" && cp -r "$ROOT/model_cards" "$PKG/hf_time/model_cards" ||
  { echo "error: could not copy hf_time to $PKG" >&2; exit 2; }
export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT_DIR" && OUT_DIR="$(cd "$OUT_DIR" && pwd)" && cd /tmp || exit 2
here="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if compgen -G "$ROOT/.whl/*.whl" > /dev/null && [ "$(cat "$ROOT/.whl/PYTHON_VERSION" 2>/dev/null)" != "$here" ]; then
  echo "the wheels in .whl are for Python $(cat "$ROOT/.whl/PYTHON_VERSION" 2>/dev/null || echo '?'), this is $here: using the installed packages"
elif compgen -G "$ROOT/.whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/hf_time_site \
    "$ROOT"/.whl/*.whl || { echo "error: installing the wheels of .whl failed; rerun --prepare" >&2; exit 2; }
  export PYTHONPATH="/tmp/hf_time_site:$PYTHONPATH"
fi
# The timeline section talks to its own loopback Hub: an ambient HF_HUB_OFFLINE=1 would refuse it.
export HF_HUB_OFFLINE=0 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 TQDM_DISABLE=1
if ! missing="$("$PY" -c 'import hf_time.api' 2>&1)"; then
  echo "error: hf_time does not import with $PY ($(echo "$missing" | tail -1)); run benchmarks/gpu_check.sh --prepare where PyPI answers and carry .whl" >&2
  exit 2
fi
# The merge sections need only the merge path; training and the timeline need the rest (datasets...):
# they fail on their own, and the others still report.
if ! missing="$("$PY" -c 'import hf_time.lm_training, hf_time.hubserver, hf_time.timeline.runner' 2>&1)"; then
  echo "warning: the training and timeline sections will fail: $(echo "$missing" | tail -1)"
fi
if [ -z "$CPU_FLAG" ] && ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "no CUDA device: running the CPU fallback (tiny sizes)"
  CPU_FLAG="--cpu"
fi

mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
failed=""
# The whole check fits a budget (a device lease is short): each section's limit is cut to what is left,
# and a section with under 20 s left is skipped. The summary always runs.
BUDGET="${GPU_CHECK_BUDGET:-470}"
left() { local l=$(( BUDGET - SECONDS )); [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }
wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
section() {  # section NAME LIMIT_S: one python process per section, so one failure does not stop the rest
  local name="$1" limit start=$SECONDS
  wanted "$name" || return 0
  limit="$(left "$2")"
  echo "== $name" | tee -a "$LOG"
  if [ "$limit" -lt 20 ]; then
    echo "   SKIPPED: ${limit} s left of the ${BUDGET} s budget" | tee -a "$LOG"; failed="$failed $name"; return
  fi
  if timeout "$limit" "$PY" "$ROOT/benchmarks/gpu_check.py" "$name" --out "$OUT_DIR" $CPU_FLAG >> "$LOG" 2>&1; then
    echo "   done in $((SECONDS - start)) s" | tee -a "$LOG"
  else
    echo "   FAILED (exit $?, limit ${limit} s): see $LOG" | tee -a "$LOG"
    failed="$failed $name"
  fi
}

if [ -n "$CPU_FLAG" ]; then small=1; else small=0; fi
# Issue 13's figures first (devices, merges), then issue 8's (training, the timeline).
section env 60
section devices 150
section merges $([ $small = 1 ] && echo 90 || echo 180)
section profile $([ $small = 1 ] && echo 60 || echo 120)
section train $([ $small = 1 ] && echo 90 || echo 120)
section timeline $([ $small = 1 ] && echo 90 || echo 150)
"$PY" "$ROOT/benchmarks/gpu_check.py" summary --out "$OUT_DIR" $CPU_FLAG | tee -a "$LOG"
if [ -n "$failed" ]; then
  echo "failed sections:$failed" | tee -a "$LOG"
  exit 1
fi
echo "figures in $OUT_DIR"
