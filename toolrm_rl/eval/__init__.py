"""Evaluation layer: FC-RewardBench pairwise accuracy (more recipes arrive with the evaluation issue)."""
