#!/usr/bin/env bash
# GRPO with ToolRM (external `toolrm serve`) + schema checks. verl 0.9.1.
#   MODEL=Qwen/Qwen3-1.7B RM=runs/toolrm-qwen3-1p7b/final DATA=data/verl bash recipes/verl/run_grpo_toolrm.sh [key=value ...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
start_rm_server
reward_args=(reward.custom_reward_function.reward_kwargs.server_url="$RM_URL")
python3 -m verl.trainer.main_ppo --config-path="$HERE" --config-name=grpo_toolrm \
  "${data_args[@]}" "${model_args[@]}" "${reward_args[@]}" "${trainer_args[@]}" "$@"
