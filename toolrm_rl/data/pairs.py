"""Preference pairs from mutation negatives: (gold calls, a verified-wrong variant) per example.

Every variant from :func:`toolrm_rl.data.mutate.mutate` is verified before it is kept: against the
BFCL possible answer when the example has one (acceptable alternatives stay correct), otherwise
it must differ from the gold calls after normalisation (order matters for sequential multi-turn
calls). The share of negatives that pass the schema rules is a setting, because schema-invalid
negatives are already caught by rules: what a reward model must learn are the schema-valid ones.
"""

from __future__ import annotations

import collections
import random
import zlib
from dataclasses import dataclass, field
from typing import Iterable

from tqdm.auto import tqdm

from toolrm_rl.core.match import GroundTruth, canonical_calls
from toolrm_rl.core.schema import check_calls
from toolrm_rl.data.mutate import mutate
from toolrm_rl.data.records import PairRecord
from toolrm_rl.data.sources import ToolExample

__all__ = ["PairStats", "mutation_pairs", "OPERATOR_WEIGHTS"]


@dataclass
class PairStats:
    """What :func:`mutation_pairs` produced: counts per operator and the schema-valid share."""

    n_examples: int = 0
    n_pairs: int = 0
    n_schema_valid: int = 0
    n_rejected_as_correct: int = 0
    by_operator: dict[str, int] = field(default_factory=dict)

    @property
    def schema_valid_share(self) -> float:
        """Fraction of kept negatives that pass every schema rule."""
        return self.n_schema_valid / self.n_pairs if self.n_pairs else 0.0


def _last_user(conversation: list[dict]) -> str:
    return next((str(m.get("content") or "") for m in reversed(conversation) if m.get("role") == "user"), "")


# Relative chance that an operator's variant is among an example's first picks.
OPERATOR_WEIGHTS = {"no_call": 0.25, "duplicate_call": 0.4, "swap_order": 0.5, "drop_call": 1.5, "near_miss": 1.5,
                    "query_swap": 1.5, "drop_optional": 1.5}


def _spread(pool: list, rng: random.Random) -> list:
    """Shuffle, then interleave operators round-robin: an example's few negatives come from different
    operators instead of whichever operator yields the most variants (one per parameter)."""
    by_op: dict[str, list] = collections.defaultdict(list)
    for item in rng.sample(pool, len(pool)):
        by_op[item[0]].append(item)
    # weighted random order of operators (Efraimidis-Spirakis keys): every example can answer "no
    # call" or repeat a call, so those would crowd out the value-level near misses
    order = sorted(sorted(by_op), key=lambda op: -rng.random() ** (1.0 / OPERATOR_WEIGHTS.get(op, 1.0)))
    queues = [by_op[op] for op in order]
    out = []
    while any(queues):
        out.extend(q.pop() for q in queues if q)
    return out


def mutation_pairs(examples: Iterable[ToolExample], *, negatives_per_example: int = 3, schema_valid_share: float = 0.7,
                   seed: int = 0, operators: list[str] | None = None, show_progress: bool = False
                   ) -> tuple[list[PairRecord], PairStats]:
    """Build up to ``negatives_per_example`` verified negatives per example.

    Args:
        examples: canonical examples with gold calls (``[]`` gold: every call is wrong).
        negatives_per_example: at most this many pairs per example (the paper keeps at most 3).
        schema_valid_share: target share of negatives that pass the schema rules (taken when available).
        seed: makes the choice of variants reproducible (per example, independent of order).
        operators: mutation operators to use (default: all).
    """
    examples = list(examples)
    stats = PairStats(n_examples=len(examples))
    by_op: collections.Counter = collections.Counter()
    pairs: list[PairRecord] = []
    for ex in tqdm(examples, desc="mutation pairs", disable=not show_progress):
        ex_seed = zlib.crc32(f"{seed}:{ex.id}".encode())
        rng = random.Random(ex_seed)
        ordered = ex.category in ("multi_turn", "sequential")  # later calls use earlier results
        truth = GroundTruth(ex.tools, ex.answer, ex.category) if ex.answer else None
        gold_key = canonical_calls(ex.gold, ordered)
        seen = {gold_key}
        valid_pool, invalid_pool = [], []
        for op, calls in mutate(ex.gold, ex.tools, seed=ex_seed, operators=operators, query=_last_user(ex.conversation)):
            key = canonical_calls(calls, ordered)
            if key in seen:
                continue
            seen.add(key)
            if (truth.check(calls).valid if truth else False):
                stats.n_rejected_as_correct += 1  # an acceptable alternative, not a negative
                continue
            schema_ok = check_calls(calls, ex.tools).ok
            (valid_pool if schema_ok else invalid_pool).append((op, calls, schema_ok))
        valid_pool, invalid_pool = _spread(valid_pool, rng), _spread(invalid_pool, rng)
        n_valid = min(len(valid_pool), round(negatives_per_example * schema_valid_share))
        chosen = valid_pool[:n_valid] + invalid_pool[:negatives_per_example - n_valid]
        chosen += valid_pool[n_valid:negatives_per_example - len(chosen) + n_valid]  # top up if invalid ran out
        for j, (op, calls, schema_ok) in enumerate(chosen[:negatives_per_example]):
            stats.n_schema_valid += schema_ok
            by_op[op] += 1
            pairs.append(PairRecord(id=f"{ex.id}#{j}", tools=ex.tools, conversation=ex.conversation, chosen=ex.gold,
                                    rejected=calls, error_type=f"mutation:{op}", source=ex.source, generator="mutation"))
    stats.n_pairs = len(pairs)
    stats.by_operator = dict(by_op.most_common())
    return pairs, stats
