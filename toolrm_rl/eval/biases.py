"""The bias suite: does a scorer prefer the right answer on minimal pairs that differ in one way?

    toolrm eval biases --model runs/quickstart/model [--scorer rm|rules|hybrid] [--json]

Pairs are built deterministically from the bias hold-out slice (:func:`toolrm_rl.data.sources.is_bias_holdout`,
left out of synthesis by default) of the offline non-BFCL-single-turn sources: bfcl-eval's executable,
SQL, REST and multi-turn sets, NESTFUL, τ²-bench and AgentDojo. Each bias is one kind of minimal pair
(chosen = right, rejected = wrong), the wrong side made by :mod:`toolrm_rl.data.mutate`'s operators:

- ``fewer_calls``: a gold answer of two or more calls vs the same with one call dropped; gold answers
  come from the sources' multi-call examples and from parallel questions composed of two single-call
  questions over the same tools (:func:`toolrm_rl.data.compose.parallel_examples`).
- ``more_calls``: gold vs gold with one call repeated; ``more_calls_extra``: gold vs gold plus one
  more call of the same function with one argument changed (an unrequested extra);
  ``more_calls_function``: gold vs gold plus a call to another related function of the catalog (the
  commonest real "too many calls" failure).
- ``no_call``: gold (calls are needed) vs no call at all.
- ``abstain``: the example's called functions removed from its catalog, so no remaining tool serves
  the request: no call (right) vs a call to the most related remaining tool with arguments taken from
  the request, schema-valid, so schema rules cannot decide it; ``abstain_removed_tool``: no call vs the
  original gold call to the removed function (rules decide this one: the function does not exist).
  Examples whose history already calls a removed function are not used.
- ``near_miss``: gold vs one argument changed to a near miss (a value-grounded slip or another value
  the user mentioned), schema-valid.

Every chosen side must pass and every rejected side fail the matcher
(:class:`toolrm_rl.data.pairs.NegativeJudge`, the judge that verifies training negatives); a pair that
does not is dropped and counted. Accuracy is the share of pairs whose chosen side scores strictly
higher: ties count as losses, as in FC-RewardBench.
"""

from __future__ import annotations

import collections
import math
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from toolrm_rl.config import option as _f
from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.io import atomic_write, write_json
from toolrm_rl.core.schema import check_calls
from toolrm_rl.core.subset import seeded_subset
from toolrm_rl.data.compose import parallel_examples, without_called_tools
from toolrm_rl.data.mutate import mutate
from toolrm_rl.data.pairs import NegativeJudge
from toolrm_rl.data.records import PairRecord
from toolrm_rl.data.sources import ToolExample, is_bias_holdout, load_source
from toolrm_rl.scoring import Scorer, build_scorers, score_pairs

__all__ = ["BIASES", "BIAS_SOURCES", "BiasConfig", "BiasPairs", "holdout_examples", "build_bias_pairs",
           "evaluate_biases", "markdown", "run_biases"]

BIASES = ("fewer_calls", "more_calls", "more_calls_extra", "more_calls_function", "no_call", "abstain", "abstain_removed_tool", "near_miss")
# Offline sources with gold calls that are not BFCL single-turn questions (those are evaluation data).
BIAS_SOURCES = ("bfcl_exec", "bfcl_sql", "bfcl_rest", "bfcl_multi_turn", "nestful", "tau2", "agentdojo")
# Sources whose single-call examples are standalone requests that can be joined into one parallel question
# (τ²-bench's requests each come from another customer, so two do not make one request).
_COMPOSABLE_PREFIXES = ("bfcl_exec", "bfcl_sql", "bfcl_rest", "agentdojo")


@dataclass
class BiasConfig:
    model: str | None = _f(None, "ToolRM checkpoint for the rm / hybrid scorers.")
    scorer: str = _f("rm", "Scorer: rm, rules, hybrid, or any other toolrm_rl.scoring backend.")
    scorer_options: dict = _f({}, "Options by scorer name (toolrm_rl.scoring.factory), e.g. {rm: {device: cuda}}.")
    sources: list = _f(list(BIAS_SOURCES), "Offline sources whose bias hold-out slice makes the pairs (no BFCL single-turn set).")
    compose_parallel: bool = _f(True, "Also build fewer_calls pairs from parallel questions composed of two single-call ones.")
    limit: int | None = _f(None, "At most this many pairs per bias, a seeded sample (None: all).")
    seed: int = _f(0, "Seed of the mutations, the parallel composition and the sample.")
    out: str = _f("runs/eval/biases", "Output directory: report.json, report.md, pairs.jsonl.")


@dataclass
class BiasPairs:
    """Pairs per bias, and why candidate pairs were dropped (``dropped[bias][reason]``)."""

    pairs: dict[str, list[PairRecord]]
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    n_examples: dict[str, int] = field(default_factory=dict)


def holdout_examples(sources: Sequence[str] = BIAS_SOURCES) -> list[ToolExample]:
    """The bias hold-out slice of ``sources``, sorted by id (τ²-bench and AgentDojo run only those tasks)."""
    examples: list[ToolExample] = []
    for name in sources:
        kwargs = {"split": "bias_holdout"} if name in ("tau2", "agentdojo") else {}
        examples += [ex for ex in load_source(name, **kwargs) if is_bias_holdout(ex.id)]
    return sorted(examples, key=lambda ex: ex.id)


def _last_user(conversation: list[dict]) -> str:
    return next((str(m.get("content") or "") for m in reversed(conversation) if m.get("role") == "user"), "")


def _rng(seed: int, bias: str, example_id: str) -> random.Random:
    return random.Random(zlib.crc32(f"{seed}:{bias}:{example_id}".encode()))


def _variants(example: ToolExample, operators: list[str], rng: random.Random, catalog: ToolCatalog | None = None,
              gold: list[ToolCall] | None = None) -> list[list[ToolCall]]:
    gold = example.gold if gold is None else gold
    seed = rng.randrange(2**31)
    return [calls for _, calls in mutate(gold, catalog or example.tools, seed=seed, operators=operators,
                                         query=_last_user(example.conversation))]


def build_bias_pairs(examples: Iterable[ToolExample], *, seed: int = 0, compose_parallel: bool = True) -> BiasPairs:
    """Minimal pairs per bias (see the module doc) from ``examples``; the same examples and seed give the
    same pairs. Every kept pair's chosen side passes and its rejected side fails the matcher."""
    examples = sorted(examples, key=lambda ex: ex.id)
    pairs: dict[str, list[PairRecord]] = {b: [] for b in BIASES}
    dropped: dict[str, collections.Counter] = {b: collections.Counter() for b in BIASES}

    def keep(bias: str, ex: ToolExample, judge: NegativeJudge, chosen: list[ToolCall], rejected: list[ToolCall],
             tools: ToolCatalog | None = None, need_schema_valid: bool = False) -> None:
        tools = tools or ex.tools
        if judge.error_type(chosen):
            dropped[bias]["chosen_fails_matcher"] += 1
            return
        error_type = judge.error_type(rejected)
        if not error_type:
            dropped[bias]["rejected_passes_matcher"] += 1
            return
        if need_schema_valid and not check_calls(rejected, tools).ok:
            dropped[bias]["rejected_schema_invalid"] += 1
            return
        pairs[bias].append(PairRecord(id=f"{ex.id}#{bias}", tools=tools, conversation=ex.conversation, chosen=chosen,
                                      rejected=rejected, error_type=error_type, source=ex.source,
                                      generator=f"bias:{bias}"))

    def pick(bias: str, candidates: list[list[ToolCall]], rng: random.Random) -> list[ToolCall] | None:
        if not candidates:
            dropped[bias]["no_variant"] += 1
            return None
        return candidates[rng.randrange(len(candidates))]

    multi = [ex for ex in examples if len(ex.gold) >= 2]
    if compose_parallel:
        multi += parallel_examples([ex for ex in examples if ex.source.startswith(_COMPOSABLE_PREFIXES)], seed=seed)
    for ex in multi:
        judge = NegativeJudge(ex)
        if not judge.usable:
            dropped["fewer_calls"]["gold_fails_matcher"] += 1
            continue
        rng = _rng(seed, "fewer_calls", ex.id)
        rejected = pick("fewer_calls", _variants(ex, ["drop_call"], rng), rng)
        if rejected is not None:
            keep("fewer_calls", ex, judge, ex.gold, rejected)

    for ex in examples:
        if not ex.gold:
            continue
        judge = NegativeJudge(ex)
        if not judge.usable:
            for bias in (b for b in BIASES if b != "fewer_calls"):  # fewer_calls comes from the multi-call loop above
                dropped[bias]["gold_fails_matcher"] += 1
            continue
        for bias, operators in (("more_calls", ["duplicate_call"]), ("more_calls_extra", ["extra_call"]),
                                ("more_calls_function", ["extra_function"]), ("no_call", ["no_call"])):
            rng = _rng(seed, bias, ex.id)
            rejected = pick(bias, _variants(ex, operators, rng), rng)
            if rejected is not None:
                keep(bias, ex, judge, ex.gold, rejected)

        rng = _rng(seed, "near_miss", ex.id)
        near = [v for v in _variants(ex, ["wrong_value", "query_swap"], rng) if check_calls(v, ex.tools).ok]
        rejected = pick("near_miss", near, rng)
        if rejected is not None:
            keep("near_miss", ex, judge, ex.gold, rejected, need_schema_valid=True)

        _abstain_pairs(ex, seed, keep, dropped)

    n_examples = dict(collections.Counter(ex.source for ex in examples))
    return BiasPairs(pairs, {b: dict(c) for b, c in dropped.items() if c}, n_examples)


def _abstain_pairs(ex: ToolExample, seed: int, keep: Callable, dropped: dict[str, collections.Counter]) -> None:
    """``abstain`` and ``abstain_removed_tool`` pairs of one example: its called functions removed from the catalog."""
    abstain, reason = without_called_tools(ex, ex.id)
    if abstain is None:
        for bias in ("abstain", "abstain_removed_tool"):
            dropped[bias][reason] += 1
        return
    remaining = abstain.tools
    judge = NegativeJudge(abstain)
    rng = _rng(seed, "abstain", ex.id)
    calls = [v for v in _variants(abstain, ["call_when_none"], rng, catalog=remaining, gold=[])
             if check_calls(v, remaining).ok]
    if calls:
        keep("abstain", abstain, judge, [], calls[0], tools=remaining, need_schema_valid=True)
    else:
        dropped["abstain"]["no_schema_valid_call"] += 1
    keep("abstain_removed_tool", abstain, judge, [], list(ex.gold), tools=remaining)


def _accuracy(wins: int, n: int) -> float | None:
    return wins / n if n else None


def evaluate_biases(scorer: Scorer, pairs: dict[str, list[PairRecord]]) -> dict[str, Any]:
    """Accuracy per bias (ties are losses) with n and ties, and the same per source: ``{"biases": {name:
    {"accuracy", "n", "ties"}}, "by_source": {name: {source: {"accuracy", "n"}}}}`` (accuracy None when n is 0).
    All pairs are scored in one batch."""
    flat = [(bias, p) for bias in pairs for p in pairs[bias]]
    scores = score_pairs(scorer, [(p.chosen_example(), p.rejected_example()) for _, p in flat]) if flat else []
    wins: collections.Counter = collections.Counter()
    ties: collections.Counter = collections.Counter()
    src_wins: collections.Counter = collections.Counter()
    src_n: collections.Counter = collections.Counter()
    for (bias, pair), (chosen, rejected) in zip(flat, scores):
        won = chosen > rejected  # NaN compares False: a loss
        wins[bias] += won
        ties[bias] += chosen == rejected
        src_wins[bias, pair.source] += won
        src_n[bias, pair.source] += 1
    biases = {b: {"accuracy": _accuracy(wins[b], len(pairs[b])), "n": len(pairs[b]), "ties": ties[b]} for b in pairs}
    by_source: dict[str, dict[str, Any]] = {b: {} for b in pairs}
    for (bias, source), n in sorted(src_n.items()):
        by_source[bias][source] = {"accuracy": _accuracy(src_wins[bias, source], n), "n": n}
    return {"biases": biases, "by_source": by_source}


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: one row per bias (accuracy, n, ties), then the pairs per source."""
    from toolrm_rl.eval.plots import md_table

    rows = [[b, math.nan if r["accuracy"] is None else r["accuracy"], r["n"], r["ties"]]
            for b, r in report["biases"].items()]
    text = (f"### Bias suite: {report.get('scorer', '?')}"
            + (f" ({report['model']})" if report.get("model") else "")
            + "\n\nPairwise accuracy, ties are losses; pairs from the bias hold-out slice of "
            + ", ".join(report.get("sources", [])) + ".\n\n" + md_table(["bias", "accuracy", "n", "ties"], rows))
    src_rows = [[b, s, math.nan if r["accuracy"] is None else r["accuracy"], r["n"]]
                for b, per in report.get("by_source", {}).items() for s, r in per.items()]
    if src_rows:
        text += "\n#### By source\n\n" + md_table(["bias", "source", "accuracy", "n"], src_rows)
    return text


def run_biases(cfg: BiasConfig, *, scorer: Scorer | None = None,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The recipe: hold-out examples -> pairs -> scores; writes ``report.json``, ``report.md`` and
    ``pairs.jsonl`` (FC-RewardBench schema, ``model_name`` = ``bias:<name>``) to ``cfg.out``, atomically.
    Returns the report (``biases``: name -> {accuracy, n, ties}, ``by_source``, ``dropped``, ``n_examples``)."""
    from toolrm_rl.data.records import save_pairs

    # a bad setting fails first
    scorer = scorer or build_scorers([cfg.scorer], cfg.model, cfg.scorer_options)[cfg.scorer]
    examples = holdout_examples(cfg.sources)
    built = build_bias_pairs(examples, seed=cfg.seed, compose_parallel=cfg.compose_parallel)
    pairs = {b: seeded_subset(built.pairs[b], cfg.limit, f"{cfg.seed}:{b}") for b in BIASES}  # a draw per bias
    if progress:
        progress(f"{len(examples)} hold-out examples; pairs: " + ", ".join(f"{b} {len(p)}" for b, p in pairs.items()))
    report = {"scorer": getattr(scorer, "name", cfg.scorer), "model": cfg.model, "seed": cfg.seed,
              "sources": list(cfg.sources), **evaluate_biases(scorer, pairs),
              "dropped": built.dropped, "n_examples": built.n_examples}
    out = Path(cfg.out)
    save_pairs([p for b in BIASES for p in pairs[b]], out / "pairs.jsonl", schema="fc_rewardbench")
    write_json(out / "report.json", report)
    atomic_write(out / "report.md", markdown(report))
    return report
