"""The combination rule of the ToolRM reward: per-turn scores, the episode score, the returned dict.

Per turn (:func:`combine`)::

    invalid format or schema:  invalid_penalty                       (gate: the RM is not asked)
    otherwise:                 valid_reward + w_rm * transform(rm_score)   (sigmoid by default: in (0, 1))
    episode score = turn_combine(turn scores) + w_gt * gt_match + abstain_reward * abstained_correctly

With ``invalid_turn_gates`` (the default) any invalid turn scores the whole sample ``invalid_penalty``;
unusable tools (``tools_error``) always do. :func:`finish` turns a prepared sample and its RM scores into
the dict verl gets, with the keys of :data:`KEYS`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from toolrm_rl.verl.config import ToolRewardConfig
from toolrm_rl.verl.sample import Prepared

__all__ = ["KEYS", "combine", "combine_turns", "episode_score", "error_result", "finish"]

#: Keys of every returned dict, in order (verl needs identical keys with scalar values for every sample).
KEYS = ("score", "rm_score", "format_ok", "schema_ok", "valid", "n_calls", "n_turns", "gt_match", "has_gold",
        "abstained", "fallback", "tools_error", "latency_ms")


def combine(valid: bool, rm_score: float | None, cfg: ToolRewardConfig) -> float:
    """One turn's score: the gate, then the weighted, transformed RM score (``None``: no RM score, the
    rules alone decide: ``valid_reward``).

    >>> cfg = ToolRewardConfig(w_rm=1.0, invalid_penalty=-1.0, valid_reward=0.0)   # rm_transform=sigmoid
    >>> combine(False, 3.0, cfg)          # invalid format or schema: the penalty, whatever the RM says
    -1.0
    >>> combine(True, 0.0, cfg), round(combine(True, -9.0, cfg), 4)   # a valid call stays above the penalty
    (0.5, 0.0001)
    >>> clip = ToolRewardConfig(w_rm=0.5, valid_reward=0.2, rm_clip=4.0, rm_transform="clip")
    >>> combine(True, 3.0, clip), combine(True, 100.0, clip)   # 0.2 + 0.5 * 3.0; clipped to [-4, 4]
    (1.7, 2.2)
    >>> combine(True, None, clip)          # rm_source=none or a fallback
    0.2
    """
    if not valid:
        return cfg.invalid_penalty
    if rm_score is None or not math.isfinite(rm_score):
        return cfg.valid_reward
    rm = max(-cfg.rm_clip, min(cfg.rm_clip, rm_score))
    if cfg.rm_transform == "sigmoid":  # the stable form: exp never overflows
        rm = 1.0 / (1.0 + math.exp(-rm)) if rm >= 0 else math.exp(rm) / (1.0 + math.exp(rm))
    elif cfg.rm_transform == "tanh":
        rm = math.tanh(rm)
    return cfg.valid_reward + cfg.w_rm * rm


def combine_turns(turn_scores: Sequence[float], how: str) -> float:
    """Combine per-turn scores of a multi-turn rollout: ``last``, ``mean`` or ``min`` (0.0 for none).

    >>> combine_turns([1.0, -1.0, 0.5], "last"), combine_turns([1.0, -1.0, 0.5], "mean"), combine_turns([1.0, -1.0, 0.5], "min")
    (0.5, 0.16666666666666666, -1.0)
    """
    if not turn_scores:
        return 0.0
    if how == "last":
        return float(turn_scores[-1])
    if how == "min":
        return float(min(turn_scores))
    return float(sum(turn_scores) / len(turn_scores))


def episode_score(turn_scores: Sequence[float], gt_match: float, has_gold: bool, abstained_correctly: bool,
                  cfg: ToolRewardConfig) -> float:
    """The sample's score: combined turn scores + ``w_gt * gt_match`` (with gold) + the abstention reward.

    >>> cfg = ToolRewardConfig(w_gt=1.0, abstain_reward=0.5)
    >>> episode_score([0.3], 1.0, True, False, cfg), episode_score([0.3], 0.0, False, False, cfg)
    (1.3, 0.3)
    >>> episode_score([0.0], 1.0, True, True, cfg)  # gold is "no call" and none was made
    1.5
    """
    score = combine_turns(turn_scores, cfg.turn_combine)
    if has_gold:
        score += cfg.w_gt * gt_match
    if abstained_correctly:
        score += cfg.abstain_reward
    return float(score)


def finish(p: Prepared, rm_scores: Sequence[float] | None, fallback: bool) -> dict[str, float]:
    """The returned dict for a prepared sample. ``rm_scores``: one per ``p.examples`` (None: no RM, e.g.
    rm_source=none or a fallback). Never raises; always the keys of :data:`KEYS`, finite floats."""
    try:
        cfg = p.cfg
        if rm_scores is None or len(rm_scores) != len(p.examples):
            rm_scores = [None] * len(p.examples)  # no RM score: the RM term is left out, not guessed
        rm_iter = iter(float(s) if isinstance(s, (int, float)) and math.isfinite(s) else None for s in rm_scores)
        turn_rm = [next(rm_iter, None) if v else None for v in p.valid]
        turn_scores = [combine(v, r, cfg) for v, r in zip(p.valid, turn_rm)]
        valid_rm = [r for v, r in zip(p.valid, turn_rm) if v and r is not None]
        score = episode_score(turn_scores, p.gt_match, p.has_gold, p.abstained_correctly, cfg)
        rm = combine_turns(valid_rm, cfg.turn_combine) if valid_rm else 0.0
        if p.tools_error:  # nothing can be verified: no response earns more than an invalid call
            score, rm = cfg.invalid_penalty, 0.0
        elif cfg.invalid_turn_gates and not all(p.valid):  # one invalid turn: the sample ranks with invalid calls
            score = cfg.invalid_penalty
        if not math.isfinite(score) or not math.isfinite(rm):
            score, rm, fallback = cfg.invalid_penalty, 0.0, True
        valid = p.format_ok and p.schema_ok and not p.error
        return {"score": float(score), "rm_score": float(rm), "format_ok": float(p.format_ok),
                "schema_ok": float(p.schema_ok), "valid": float(valid), "n_calls": float(p.n_calls),
                "n_turns": float(p.n_turns), "gt_match": float(p.gt_match), "has_gold": float(p.has_gold),
                "abstained": float(p.abstained), "fallback": float(bool(fallback or p.error)),
                "tools_error": float(p.tools_error), "latency_ms": float((time.perf_counter() - p.start) * 1000.0)}
    except Exception:  # pragma: no cover - the last line of defence
        return error_result(p.cfg.invalid_penalty if isinstance(p, Prepared) else -1.0)


def error_result(score: float) -> dict[str, float]:
    """The result of a sample that could not be scored at all: ``score``, ``fallback=1``, every other key 0."""
    out = dict.fromkeys(KEYS, 0.0)
    out["score"], out["fallback"] = float(score) if math.isfinite(score) else -1.0, 1.0
    return out
