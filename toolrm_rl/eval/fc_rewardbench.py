"""FC-RewardBench-style pairwise evaluation of any scorer.

A pair is right when ``score(chosen) > score(rejected)``; ties are *not* wins (their rate is
reported). Breakdowns: by raw ``error_type``, by ``test_category``, by ``model_name``, and on the
subset where both calls pass the schema rules: the part a reward model must decide beyond rules.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

from toolrm_rl.core.schema import check_calls
from toolrm_rl.data.records import PairRecord
from toolrm_rl.scoring import Scorer, score_pairs

__all__ = ["PairwiseReport", "evaluate_pairs", "summarize", "markdown_table"]


@dataclass
class PairwiseReport:
    """Accuracy of a scorer on preference pairs, with breakdowns (each ``{name: {accuracy, n, ties}}``)."""

    scorer: str
    accuracy: float
    n: int
    ties: int
    ci95: tuple[float, float]
    by_error_type: dict[str, dict[str, float]] = field(default_factory=dict)
    by_test_category: dict[str, dict[str, float]] = field(default_factory=dict)
    by_model: dict[str, dict[str, float]] = field(default_factory=dict)
    schema_valid_subset: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"scorer": self.scorer, "accuracy": self.accuracy, "n": self.n, "ties": self.ties,
                "tie_rate": self.ties / self.n if self.n else 0.0, "ci95": list(self.ci95),
                "by_error_type": self.by_error_type, "by_test_category": self.by_test_category,
                "by_model": self.by_model, "schema_valid_subset": self.schema_valid_subset}


def summarize(wins: Sequence[bool], ties: Sequence[bool]) -> dict[str, float]:
    """``{accuracy, n, ties}`` for outcomes (a tie is never a win).

    >>> summarize([True, False, False], [False, True, False])
    {'accuracy': 0.3333333333333333, 'n': 3, 'ties': 1}
    """
    n = len(wins)
    return {"accuracy": sum(wins) / n if n else float("nan"), "n": n, "ties": sum(ties)}


def bootstrap_ci(wins: Sequence[bool], *, samples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy (resampling pairs)."""
    n = len(wins)
    if n == 0:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    values = [int(w) for w in wins]
    stats = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    lo = stats[int((1 - level) / 2 * samples)]
    hi = stats[min(samples - 1, int((1 + level) / 2 * samples))]
    return (lo, hi)


def _group(keys: Sequence[str], wins: Sequence[bool], ties: Sequence[bool]) -> dict[str, dict[str, float]]:
    buckets: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        buckets[key].append(i)
    return {k: summarize([wins[i] for i in idx], [ties[i] for i in idx]) for k, idx in sorted(buckets.items())}


def evaluate_pairs(scorer: Scorer, pairs: Sequence[PairRecord], *, bootstrap_samples: int = 1000,
                   seed: int = 0) -> PairwiseReport:
    """Score every pair's chosen and rejected answer and report pairwise accuracy with breakdowns."""
    scores = score_pairs(scorer, [(p.chosen_example(), p.rejected_example()) for p in pairs])
    wins = [c > r for c, r in scores]
    ties = [c == r for c, r in scores]
    valid = [check_calls(p.chosen, p.tools).ok and check_calls(p.rejected, p.tools).ok for p in pairs]
    subset = [i for i, v in enumerate(valid) if v]
    overall = summarize(wins, ties)
    return PairwiseReport(
        scorer=getattr(scorer, "name", type(scorer).__name__), accuracy=overall["accuracy"], n=overall["n"],
        ties=overall["ties"], ci95=bootstrap_ci(wins, samples=bootstrap_samples, seed=seed),
        by_error_type=_group([p.error_type or "?" for p in pairs], wins, ties),
        by_test_category=_group([p.source or "?" for p in pairs], wins, ties),
        by_model=_group([p.generator or "?" for p in pairs], wins, ties),
        schema_valid_subset=summarize([wins[i] for i in subset], [ties[i] for i in subset]),
    )


def markdown_table(reports: Sequence[PairwiseReport], breakdown: str = "by_test_category") -> str:
    """A markdown table: one column per scorer; rows overall, schema-valid subset, then the breakdown."""
    head = "| | " + " | ".join(r.scorer for r in reports) + " |\n|---|" + "---:|" * len(reports) + "\n"
    rows = ["| overall (n=%d) | " % reports[0].n + " | ".join(f"{r.accuracy:.3f}" for r in reports) + " |",
            "| both calls schema-valid (n=%d) | " % reports[0].schema_valid_subset.get("n", 0)
            + " | ".join(f"{r.schema_valid_subset.get('accuracy', float('nan')):.3f}" for r in reports) + " |",
            "| ties | " + " | ".join(str(r.ties) for r in reports) + " |"]
    keys = sorted({k for r in reports for k in getattr(r, breakdown)})
    for key in keys:
        n = getattr(reports[0], breakdown).get(key, {}).get("n", 0)
        cells = [getattr(r, breakdown).get(key, {}).get("accuracy", float("nan")) for r in reports]
        rows.append(f"| {key} (n={n}) | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return head + "\n".join(rows) + "\n"
