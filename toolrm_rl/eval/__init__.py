"""Evaluation recipes over any scorer (:mod:`toolrm_rl.scoring`): FC-RewardBench pairwise accuracy
(:mod:`~toolrm_rl.eval.fc_rewardbench`), the bias suite (:mod:`~toolrm_rl.eval.biases`), Best-of-N with ground
truth (:mod:`~toolrm_rl.eval.best_of_n`), robustness to input noise (:mod:`~toolrm_rl.eval.noise`),
reward-guided data filtering (:mod:`~toolrm_rl.eval.filtering`), FC-RewardBench-format pairs from BFCL logs
(:mod:`~toolrm_rl.eval.bench_builder`) and the shared charts and tables (:mod:`~toolrm_rl.eval.plots`).
Every recipe builds its scorers with :func:`toolrm_rl.scoring.build_scorers`."""
