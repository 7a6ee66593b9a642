#!/usr/bin/env bash
# Shared by the run_*.sh scripts (sourced, not run): settings from the environment, override arrays,
# and an optional local `toolrm serve` for the recipes whose RM is an external server.
# Environment: MODEL (policy), RM (ToolRM checkpoint), DATA (dir with train/val.parquet), GPUS, NODES,
# RM_URL (external server; unset: start one on 127.0.0.1:$RM_PORT), RM_DEVICE (cuda or cpu).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODEL="${MODEL:-Qwen/Qwen3-1.7B}"
RM="${RM:-runs/toolrm-qwen3-1p7b/final}"
DATA="${DATA:-data/verl}"
GPUS="${GPUS:-8}"
NODES="${NODES:-1}"
RM_PORT="${RM_PORT:-8000}"
RM_DEVICE="${RM_DEVICE:-cuda}"

data_args=(data.train_files="$DATA/train.parquet" data.val_files="$DATA/val.parquet")
model_args=(actor_rollout_ref.model.path="$MODEL")
trainer_args=(trainer.n_gpus_per_node="$GPUS" trainer.nnodes="$NODES")

# Start `toolrm serve` unless RM_URL points at a running server; stop it when the script exits.
start_rm_server() {
  if [[ -n "${RM_URL:-}" ]]; then
    return
  fi
  RM_URL="http://127.0.0.1:$RM_PORT"
  toolrm serve --model "$RM" --port "$RM_PORT" --device "$RM_DEVICE" &
  RM_SERVER_PID=$!
  trap 'kill "$RM_SERVER_PID" 2>/dev/null || true' EXIT
  for _ in $(seq 1 120); do
    if curl -fsS "$RM_URL/health" >/dev/null 2>&1; then
      return
    fi
    sleep 2
  done
  echo "toolrm serve did not become healthy at $RM_URL" >&2
  exit 1
}
