#!/usr/bin/env bash
# GRPO with schema checks only (the rule baseline; no reward model). verl 0.9.1.
#   MODEL=Qwen/Qwen3-1.7B DATA=data/verl bash recipes/verl/run_grpo_rules.sh [key=value ...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
python3 -m verl.trainer.main_ppo --config-path="$HERE" --config-name=grpo_rules \
  "${data_args[@]}" "${model_args[@]}" "${trainer_args[@]}" "$@"
