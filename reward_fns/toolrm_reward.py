"""File-path entry for verl: ``reward.custom_reward_function.path=reward_fns/toolrm_reward.py``.

The same function as ``pkg://toolrm_rl.verl.reward`` (``name=compute_score``, the default); the logic
lives in :mod:`toolrm_rl.verl.reward`, so both paths score identically. Needs ``toolrm_rl`` installed
in the environment of verl's reward workers.
"""

from toolrm_rl.verl.reward import KEYS, ToolRewardConfig, compute_score

__all__ = ["KEYS", "ToolRewardConfig", "compute_score"]
