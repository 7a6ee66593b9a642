"""The scorer interface: :class:`Scorer`, the one failure :class:`ScorerUnavailable`, and :func:`score_pairs`."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from toolrm_rl.core.render import RMExample

__all__ = ["Scorer", "ScorerUnavailable", "score_pairs"]


class ScorerUnavailable(RuntimeError):
    """A scorer backend cannot answer now (server down, timeout, open circuit breaker, bad reply).

    Remote backends raise only this, so callers that must never fail (the verl reward) catch one
    exception type and fall back to the rule score.
    """


@runtime_checkable
class Scorer(Protocol):
    """Anything with a ``name`` and ``score(examples) -> list[float]`` (input order, higher is better)."""

    name: str

    def score(self, examples: Sequence[RMExample]) -> list[float]:
        """One score per example, in input order."""
        ...


def score_pairs(scorer: Scorer, pairs: Sequence[tuple[RMExample, RMExample]]) -> list[tuple[float, float]]:
    """Score (chosen, rejected) example pairs in one batch: ``[(s_chosen, s_rejected), ...]``.

    A scorer with its own pair-aware ``score_pairs(pairs)`` (the pairwise LLM judge) is asked about
    the pairs; any other scorer scores the flattened list."""
    if callable(getattr(scorer, "score_pairs", None)):
        return [(float(a), float(b)) for a, b in scorer.score_pairs(pairs)]
    flat = [ex for pair in pairs for ex in pair]
    scores = scorer.score(flat)
    return list(zip(scores[0::2], scores[1::2]))
