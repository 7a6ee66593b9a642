"""Preference pairs from mutation negatives: (gold calls, a verified-wrong variant) per example.

Every variant from :func:`toolrm_rl.data.mutate.mutate` is judged by the BFCL matcher before it is kept
(:class:`NegativeJudge`): against the example's BFCL possible answer when it has one (acceptable
alternatives stay correct), otherwise against an answer built from the gold calls. A kept negative
carries the matcher's raw ``error_type`` (``value_error:string``, ``simple_function_checker:missing_optional``,
...), whose FC-RewardBench category is :func:`toolrm_rl.core.match.error_category`. The share of negatives
that pass the schema rules is a setting, because schema-invalid negatives are already caught by rules:
what a reward model must learn are the schema-valid ones.
"""

from __future__ import annotations

import collections
import copy
import random
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from tqdm.auto import tqdm

from toolrm_rl.core.bfcl_types import PY_TYPES
from toolrm_rl.core.calls import ToolCall, ToolCatalog, ToolSpec
from toolrm_rl.core.match import GroundTruth, canonical_calls, error_category
from toolrm_rl.core.schema import check_calls
from toolrm_rl.data.mutate import OPERATORS, mutate
from toolrm_rl.data.records import PairRecord
from toolrm_rl.data.sources import ToolExample

__all__ = ["PairStats", "NegativeJudge", "mutation_pairs", "OPERATOR_WEIGHTS", "WRONG_ORDER"]

# The error type of a call list whose calls are each right but in the wrong order, where order matters
# (``multi_turn`` / ``sequential`` examples). BFCL's AST checkers have no such verdict (their parallel
# checker ignores order); :func:`toolrm_rl.core.match.error_category` files it under "other".
WRONG_ORDER = "sequential_checker:wrong_order"


@dataclass
class PairStats:
    """What :func:`mutation_pairs` produced: counts per operator and error category, the schema-valid share."""

    n_examples: int = 0
    n_pairs: int = 0
    n_schema_valid: int = 0
    n_rejected_as_correct: int = 0
    by_operator: dict[str, int] = field(default_factory=dict)
    by_category: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)

    @property
    def schema_valid_share(self) -> float:
        """Fraction of kept negatives that pass every schema rule."""
        return self.n_schema_valid / self.n_pairs if self.n_pairs else 0.0


def _last_user(conversation: list[dict]) -> str:
    return next((str(m.get("content") or "") for m in reversed(conversation) if m.get("role") == "user"), "")


# -- judging negatives ---------------------------------------------------------------------------------

_PY_AND_JSON = {**PY_TYPES, "number": float, "object": dict}
_JSON_TYPE_OF = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def _fits(value: Any, schema: dict) -> bool:
    if type(value) is tuple:  # pythonic gold calls hold tuples; BFCL compares them as lists
        value = list(value)
    type_name = schema.get("type")
    expected = _PY_AND_JSON.get(type_name, str) if isinstance(type_name, str) else str
    if type(value) is expected or (expected is float and type(value) is int):
        if expected is list and isinstance(schema.get("items"), dict):
            return all(_fits(v, schema["items"]) for v in value)
        return True
    return False


def _options(value: Any, schema: dict) -> Any:
    """A concrete value as BFCL answer options: dicts key by key, lists of dicts element-wise."""
    if type(value) is dict:
        return {k: [v] for k, v in value.items()}
    if type(value) is list and value and all(type(v) is dict for v in value) and \
            (schema.get("items") or {}).get("type") in ("dict", "object"):
        return [{k: [v] for k, v in item.items()} for item in value]
    return value


def _answer_from_gold(gold: Sequence[ToolCall], catalog: ToolCatalog) -> tuple[list[dict], ToolCatalog]:
    """A BFCL possible answer that accepts exactly the gold calls, and a catalog for matching whose
    parameter types are the gold values' types where the schema disagrees with them (sources such as
    NESTFUL pass ``"$var1.x$"`` references to numeric parameters): the gold defines what is right."""
    specs = {s.name: copy.deepcopy(s.parameters) for s in catalog}
    answer = []
    for call in gold:
        params = specs.setdefault(call.name, {"type": "object", "properties": {}})
        props = params.setdefault("properties", {})
        params["required"] = [r for r in params.get("required") or [] if r in call.arguments]
        item = {}
        for name, value in call.arguments.items():
            value = list(value) if type(value) is tuple else value
            schema = props.get(name)
            if not isinstance(schema, dict):
                schema = props[name] = {}
            if not _fits(value, schema):
                schema["type"] = _JSON_TYPE_OF.get(type(value), "string")
                schema.pop("items", None)
            item[name] = [_options(value, schema)]
        answer.append({call.name: item})
    match_catalog = ToolCatalog(ToolSpec(s.name, s.description, specs[s.name], s.dialect) for s in catalog)
    for name in specs:
        if name not in match_catalog:
            match_catalog._specs[name] = ToolSpec(name, "", specs[name])  # gold calls an unlisted function
    return answer, match_catalog


class NegativeJudge:
    """The matcher's verdict on candidate outputs for one example: ``error_type(calls)`` is ``""`` when the
    calls are right, else BFCL's raw error type.

    Calls are judged one by one against the answer's calls (in order for ``multi_turn`` / ``sequential``
    examples, greedily order-free otherwise, as BFCL's parallel checker) so the error type names the
    actual mistake: BFCL's parallel checker reports every mismatch as ``cannot_find_match``. In order,
    right calls in the wrong order are :data:`WRONG_ORDER`, not the first position's function mismatch.
    """

    def __init__(self, example: ToolExample) -> None:
        self.ordered = example.category in ("multi_turn", "sequential")
        self.full = GroundTruth(example.tools, example.answer, example.category) if example.answer else None
        if example.answer:
            items, catalog = example.answer, example.tools
        else:
            items, catalog = _answer_from_gold(example.gold, example.tools)
        self.items = [GroundTruth(catalog, [item], "multiple") for item in items]
        self.names = [next(iter(item)) for item in items]
        prefix = "simple_function_checker" if len(items) <= 1 else "parallel_function_checker_no_order"
        self.wrong_count = f"{prefix}:wrong_count"
        # a gold that fails its own answer (a few BFCL SQL records) cannot judge anything
        self.usable = (self.full.check(example.gold).valid if self.full else True) and self._per_call(example.gold) == ""

    def _per_call(self, calls: Sequence[ToolCall]) -> str:
        if len(calls) != len(self.items):
            return self.wrong_count
        if self.ordered:
            for truth, call in zip(self.items, calls):
                verdict = truth.check([call])
                if not verdict.valid:
                    # every call right, only the order wrong: a position-wise "wrong function" would misname it
                    return WRONG_ORDER if self._unordered(calls) == "" else verdict.error_type
            return ""
        return self._unordered(calls)

    def _unordered(self, calls: Sequence[ToolCall]) -> str:
        remaining = list(range(len(calls)))
        for k, truth in enumerate(self.items):
            hit = next((j for j in remaining if truth.check([calls[j]]).valid), None)
            if hit is not None:
                remaining.remove(hit)
                continue
            # the closest call: one of the same function, else the one in the same place
            closest = next((j for j in remaining if calls[j].name == self.names[k]),
                           k if k in remaining else remaining[0])
            return truth.check([calls[closest]]).error_type
        return ""

    def error_type(self, calls: Sequence[ToolCall]) -> str:
        """``""`` when ``calls`` are right, else the raw BFCL error type of the (first) mistake."""
        if self.full is not None:
            verdict = self.full.check(list(calls))
            if verdict.valid:
                return ""
            return self._per_call(calls) or verdict.error_type
        return self._per_call(calls)


# -- pairing ---------------------------------------------------------------------------------------------

# Relative chance that an operator's variant is among an example's first picks, shaped like
# FC-RewardBench's published error mix (value 43%, wrong function name 27%, call count 16%, missing
# optional 5%, missing required 3%, type 3%, unexpected parameter 1%): every example can answer "no call"
# or repeat a call, so those would otherwise crowd out the value- and function-level near misses. Among
# count errors a dropped call (too few calls) leads: it is the common real failure on parallel questions.
OPERATOR_WEIGHTS = {"wrong_value": 3.0, "query_swap": 2.5, "swap_values": 1.0,
                    # real value errors copy the user's words (unconverted, or with the words around them)
                    # about as often as they invent a value: without these, "verbatim = right" is a shortcut
                    "raw_copy": 2.0, "over_specify": 1.0,
                    # a wrong name is an existing function or an invented one (small models' usual error)
                    "wrong_function": 2.5, "invented_function": 2.0,
                    # real failures mostly make too few calls; duplicate/extra calls apply to every gold and
                    # would otherwise outnumber drop_call (multi-call golds only), teaching "fewer calls win"
                    "drop_call": 4.0, "no_call": 0.2, "duplicate_call": 0.15, "extra_call": 0.2, "call_when_none": 1.0,
                    # most real "too many calls" answers add a call to another function, not a repeat
                    "extra_function": 1.0,
                    "drop_optional": 1.0, "drop_required": 0.5, "wrong_type": 0.5, "extra_param": 0.3,
                    "unknown_param": 0.3, "swap_order": 0.5}
# The weights before the FC-RewardBench shaping (kept for ablations: mutations.operator_weights=...).
OPERATOR_WEIGHTS_V1 = {"no_call": 0.3, "duplicate_call": 0.4, "swap_order": 0.5, "wrong_type": 0.6, "unknown_param": 0.6,
                       "drop_required": 0.7, "extra_call": 0.5, "drop_call": 1.2, "wrong_function": 1.5,
                       "wrong_value": 2.5, "query_swap": 2.0,
                       "swap_values": 1.0, "drop_optional": 1.2, "extra_param": 1.0, "call_when_none": 1.0}


def _spread(pool: list, rng: random.Random, weights: dict[str, float]) -> list:
    """Shuffle, then interleave operators round-robin in a weighted random order: an example's few
    negatives come from different operators instead of whichever yields the most variants."""
    by_op: dict[str, list] = collections.defaultdict(list)
    for item in rng.sample(pool, len(pool)):
        by_op[item[0]].append(item)
    ops = [op for op in sorted(by_op) if weights.get(op, 1.0) > 0]
    order = sorted(ops, key=lambda op: -rng.random() ** (1.0 / weights.get(op, 1.0)))  # Efraimidis-Spirakis
    queues = [by_op[op] for op in order]
    out = []
    while any(queues):
        out.extend(q.pop() for q in queues if q)
    return out


def _with_count_contrast(chosen: list, pool: list, n_gold: int) -> list:
    """``chosen`` negatives with both call-count directions where the pool has both.

    A group whose only count error is "too few calls" teaches "more calls win" (and the reverse); a
    reward model then learns the count as a prior instead of what the request needs, and a policy games
    it by calling more (or less). With a fewer- and a more-calls negative against the same gold, only
    the request can tell them apart. The replaced negative is the last one that keeps the count, else
    the last of the over-represented direction (so the first, highest-preference negative stays).
    """
    def direction(item) -> int:
        return (len(item[1]) > n_gold) - (len(item[1]) < n_gold)

    dirs = [direction(item) for item in chosen]
    present = {d for d in dirs if d}
    if len(present) != 1 or len(chosen) < 2:
        return chosen
    wanted = -present.pop()
    same = [i for i, d in enumerate(dirs) if d == 0]
    options = [item for item in pool if direction(item) == wanted and item not in chosen]
    if not options:
        return chosen
    slots = same[::-1] or [len(chosen) - 1]
    # a swap between negatives of the same schema validity where one exists: the share stays as configured
    slot, extra = next(((i, item) for item in options for i in slots if chosen[i][2] == item[2]),
                       (slots[0], options[0]))
    out = list(chosen)
    out[slot] = extra
    return out


def _with_variant(chosen: list, pool: list, wanted: Callable[[tuple], bool]) -> list:
    """``chosen`` with a negative that ``wanted`` accepts in it (replacing the last negative) when the pool
    has one; ``chosen`` as it is when it already holds one or the pool has none.

    Used where one negative is the point of an example:

    - "no call" for a question that also appears with its called functions removed (no call right there):
      with both, the same question and answer "no call" is wrong with the tool and right without it, so
      only the catalog can decide, not a prior for or against calling;
    - the user's own words for a value the gold converts (``raw_copy``) in a restated question: without
      that negative the restatement only teaches that converted values are right.
    """
    if any(wanted(item) for item in chosen) or not chosen:
        return chosen
    extra = next((item for item in pool if wanted(item)), None)
    return chosen if extra is None else list(chosen[:-1]) + [extra]


def mutation_pairs(examples: Iterable[ToolExample], *, negatives_per_example: int = 3, schema_valid_share: float = 0.7,
                   seed: int = 0, operators: list[str] | None = None, operator_weights: dict[str, float] | None = None,
                   count_contrast: bool = False, relevance_contrast: bool = False,
                   show_progress: bool = False) -> tuple[list[PairRecord], PairStats]:
    """Build up to ``negatives_per_example`` verified negatives per example.

    Args:
        examples: canonical examples with gold calls (``[]`` gold: every call is wrong, abstaining is right).
        negatives_per_example: at most this many pairs per example (the paper keeps at most 3).
        schema_valid_share: target share of negatives that pass the schema rules (taken when available).
        seed: makes the choice of variants reproducible (per example, independent of order).
        operators: mutation operators to use (default: all of :data:`toolrm_rl.data.mutate.OPERATORS`).
        operator_weights: relative preference per operator (default :data:`OPERATOR_WEIGHTS`; 0 disables one).
        count_contrast: when an example's negatives change the call count in one direction only (fewer, or
            more, calls than the gold), one of them is replaced by a variant of the other direction where one
            exists (:func:`_with_count_contrast`).
        relevance_contrast: an example marked ``meta["abstention_twin"]`` (its question is also trained with its
            called functions removed: :func:`toolrm_rl.data.compose.mark_abstention_twins`) always gets the
            "no call" negative (:func:`_with_variant`). A restated question (``meta["restated"]``:
            :func:`toolrm_rl.data.compose.restated_examples`) always gets its ``raw_copy`` negative.

    Returns:
        ``(pairs, stats)``; each pair's ``error_type`` is the matcher's raw error type and its id
        ``<example id>#<k>``.
    """
    weights = {**OPERATOR_WEIGHTS, **(operator_weights or {})}
    examples = list(examples)
    stats = PairStats(n_examples=len(examples))
    by_op: collections.Counter = collections.Counter()
    by_cat: collections.Counter = collections.Counter()
    by_src: collections.Counter = collections.Counter()
    pairs: list[PairRecord] = []
    for ex in tqdm(examples, desc="mutation pairs", disable=not show_progress):
        judge = NegativeJudge(ex)
        if not judge.usable:
            continue
        ex_seed = zlib.crc32(f"{seed}:{ex.id}".encode())
        rng = random.Random(ex_seed)
        seen = {canonical_calls(ex.gold, judge.ordered)}
        valid_pool, invalid_pool = [], []
        ops = list(operators or OPERATORS)
        if ex.meta.get("restated") and "raw_copy" in ops:  # first, so a copy another operator also makes is named so
            ops.insert(0, ops.pop(ops.index("raw_copy")))
        for op, calls in mutate(ex.gold, ex.tools, seed=ex_seed, operators=ops, query=_last_user(ex.conversation)):
            key = canonical_calls(calls, judge.ordered)
            if key in seen:
                continue
            seen.add(key)
            error_type = judge.error_type(calls)
            if not error_type:
                stats.n_rejected_as_correct += 1  # an acceptable alternative, not a negative
                continue
            schema_ok = check_calls(calls, ex.tools).ok
            (valid_pool if schema_ok else invalid_pool).append((op, calls, schema_ok, error_type))
        valid_pool, invalid_pool = _spread(valid_pool, rng, weights), _spread(invalid_pool, rng, weights)
        # stochastic rounding: the achieved share meets the target on average for any negatives_per_example
        target = negatives_per_example * schema_valid_share
        n_valid = min(len(valid_pool), int(target) + (rng.random() < target - int(target)))
        chosen = valid_pool[:n_valid] + invalid_pool[:negatives_per_example - n_valid]
        chosen += valid_pool[n_valid:n_valid + negatives_per_example - len(chosen)]  # top up if invalid ran out
        chosen = chosen[:negatives_per_example]
        if count_contrast:
            chosen = _with_count_contrast(chosen, valid_pool + invalid_pool, len(ex.gold))
        if relevance_contrast and ex.gold and ex.meta.get("abstention_twin"):
            chosen = _with_variant(chosen, valid_pool + invalid_pool, lambda item: not item[1])
        if ex.meta.get("restated"):
            chosen = _with_variant(chosen, valid_pool + invalid_pool, lambda item: item[0] == "raw_copy")
        for j, (op, calls, schema_ok, error_type) in enumerate(chosen):
            stats.n_schema_valid += schema_ok
            by_op[op] += 1
            by_cat[error_category(error_type)] += 1
            by_src[ex.source] += 1
            pairs.append(PairRecord(id=f"{ex.id}#{j}", tools=ex.tools, conversation=ex.conversation, chosen=ex.gold,
                                    rejected=calls, error_type=error_type, source=ex.source,
                                    generator=f"mutation:{op}"))
    stats.n_pairs = len(pairs)
    stats.by_operator = dict(by_op.most_common())
    stats.by_category = dict(by_cat.most_common())
    stats.by_source = dict(by_src.most_common())
    return pairs, stats
