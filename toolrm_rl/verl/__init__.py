"""The verl plugin: ToolRM + schema checks as a reward for GRPO/PPO/GDPO in verl 0.9.1.

- :mod:`toolrm_rl.verl.reward`: ``compute_score`` for ``reward.custom_reward_function.path=
  pkg://toolrm_rl.verl.reward`` (or the file ``reward_fns/toolrm_reward.py``), the entry point over
  :mod:`~toolrm_rl.verl.config` (the options, :class:`~toolrm_rl.verl.config.ToolRewardConfig`),
  :mod:`~toolrm_rl.verl.sample` (parse and check one sample; :mod:`~toolrm_rl.verl.turns` splits turns),
  :mod:`~toolrm_rl.verl.scorers` (the RM scorer, one per process) and :mod:`~toolrm_rl.verl.combine`
  (the combination rule).
- :mod:`toolrm_rl.verl.manager`: the ``toolrm`` reward manager (batches RM requests of many samples),
  registered in every verl process through the ``verl.plugins`` entry point. It imports verl.
- :mod:`toolrm_rl.verl.data`: verl parquet rows from tool-calling datasets (``toolrm verl-data``).

Nothing is imported here, so ``import toolrm_rl.verl`` stays cheap and does not import verl.
"""
