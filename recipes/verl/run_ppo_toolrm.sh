#!/usr/bin/env bash
# PPO with ToolRM served by verl's own reward-model router (vLLM /classify) + schema checks. verl 0.9.1.
#   MODEL=Qwen/Qwen3-1.7B RM=runs/toolrm-qwen3-1p7b/final DATA=data/verl bash recipes/verl/run_ppo_toolrm.sh [key=value ...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
reward_args=(reward.reward_model.model_path="$RM")
python3 -m verl.trainer.main_ppo --config-path="$HERE" --config-name=ppo_toolrm \
  "${data_args[@]}" "${model_args[@]}" "${reward_args[@]}" "${trainer_args[@]}" "$@"
