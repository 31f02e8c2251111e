#!/usr/bin/env bash
# Create .venv-mergekit: mergekit 0.1.5 for benchmarks/merge_bench.py, in its own virtual
# environment so that it can never change the project's pins in .venv.
#
#   benchmarks/setup_mergekit.sh            # python3, ./.venv-mergekit
#   PY=python3.11 VENV=/opt/mk benchmarks/setup_mergekit.sh
#
# torch is pinned to the project's CPU wheel (an unpinned torch pulls a multi-GB CUDA build), and
# constraints.txt keeps every shared dependency (transformers, safetensors, accelerate, peft, ...)
# at the version the project itself is tested with. mergekit 0.1.5 accepts all of them as they are.
# .venv-mergekit/ is git-ignored (.venv-*/).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
VENV=${VENV:-.venv-mergekit}
MERGEKIT_VERSION=${MERGEKIT_VERSION:-0.1.5}

"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -c constraints.txt torch==2.13.0 "mergekit==$MERGEKIT_VERSION"
"$VENV/bin/mergekit-yaml" --help >/dev/null
echo "mergekit $MERGEKIT_VERSION ready: $VENV/bin/mergekit-yaml"
"$VENV/bin/pip" list 2>/dev/null | grep -iE '^(mergekit|torch|transformers|safetensors|accelerate) '
