"""The bias suite (toolrm_rl.eval.biases), its hold-out slice and the parallel-question composition."""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from toolrm_rl import scoring
from toolrm_rl.cli import app
from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.example import ToolExample
from toolrm_rl.data.compose import join_questions, parallel_examples
from toolrm_rl.data.pairs import NegativeJudge
from toolrm_rl.data.sources import is_bias_holdout
from toolrm_rl.eval.biases import (
    BIASES,
    BiasConfig,
    build_bias_pairs,
    evaluate_biases,
    holdout_examples,
    run_biases,
)

WEATHER = {"name": "get_weather", "description": "Current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                          "required": ["city"]}}
TIME = {"name": "get_time", "description": "Local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
STOCK = {"name": "get_stock_price", "description": "Latest price of a stock ticker.",
         "parameters": {"type": "object", "properties": {"ticker": {"type": "string"}}, "required": ["ticker"]}}


def _user(text):
    return [{"role": "user", "content": text}]


def _examples() -> list[ToolExample]:
    tools = ToolCatalog.load([WEATHER, TIME, STOCK])
    return [
        ToolExample("w_paris", "toy", _user("What is the weather in 'Paris' in celsius?"), tools,
                    [ToolCall("get_weather", {"city": "Paris", "unit": "celsius"})], category="simple"),
        ToolExample("w_tokyo", "toy", _user("How warm is it in 'Tokyo' right now?"), tools,
                    [ToolCall("get_weather", {"city": "Tokyo"})], category="simple"),
        ToolExample("two_cities", "toy", _user("Weather in 'Oslo' and in 'Rome', please."), tools,
                    [ToolCall("get_weather", {"city": "Oslo"}), ToolCall("get_weather", {"city": "Rome"})],
                    category="parallel"),
        ToolExample("aapl", "toy", _user("Price of 'AAPL' and the time in 'Berlin'?"), tools,
                    [ToolCall("get_stock_price", {"ticker": "AAPL"}), ToolCall("get_time", {"city": "Berlin"})],
                    category="parallel"),
    ]


class MoreCalls:
    """A toy scorer that prefers answers with more calls (and cannot tell values apart)."""

    name = "more_calls"

    def score(self, examples):
        return [float(len(ex.calls)) for ex in examples]


def _rows(built):
    return {b: [json.dumps(p.to_fc_rewardbench(), sort_keys=True) for p in built.pairs[b]] for b in BIASES}


def _judge_for(pair, originals):
    """A matcher for a pair rebuilt from the pair alone (abstain pairs: gold is no call on the pair's tools)."""
    base = originals[pair.id.rsplit("#", 1)[0]]
    if not pair.chosen:
        return NegativeJudge(ToolExample(pair.id, pair.source, pair.conversation, pair.tools, [], category="irrelevance"))
    return NegativeJudge(base)


def _check_pairs(built, originals):
    for bias, pairs in built.pairs.items():
        for pair in pairs:
            judge = _judge_for(pair, originals)
            assert judge.error_type(pair.chosen) == "", (bias, pair.id)
            assert judge.error_type(pair.rejected) != "", (bias, pair.id)
            assert pair.generator == f"bias:{bias}"


def test_toy_pairs_are_deterministic_and_verified_by_the_matcher():
    examples = _examples()
    first, second = build_bias_pairs(examples, seed=3), build_bias_pairs(list(reversed(examples)), seed=3)
    assert _rows(first) == _rows(second)
    assert all(first.pairs[b] for b in BIASES), {b: len(p) for b, p in first.pairs.items()}
    originals = {ex.id: ex for ex in examples + parallel_examples(examples, seed=3)}
    _check_pairs(first, originals)
    # the abstention case: the called function is gone, the rejected call is schema-valid on the rest
    abstain = first.pairs["abstain"][0]
    assert not abstain.chosen and abstain.rejected[0].name in abstain.tools
    assert not any(c.name in abstain.tools for c in first.pairs["abstain_removed_tool"][0].rejected)


def test_a_scorer_that_prefers_more_calls_wins_fewer_calls_and_loses_more_calls():
    built = build_bias_pairs(_examples(), seed=0)
    report = evaluate_biases(MoreCalls(), built.pairs)["biases"]
    assert report["fewer_calls"]["accuracy"] == 1.0 and report["no_call"]["accuracy"] == 1.0
    assert report["more_calls"]["accuracy"] == 0.0 and report["more_calls_extra"]["accuracy"] == 0.0
    assert report["more_calls_function"]["accuracy"] == 0.0
    assert report["abstain"]["accuracy"] == 0.0
    # same call count on both sides: every pair a tie, and ties are losses
    assert report["near_miss"]["accuracy"] == 0.0 and report["near_miss"]["ties"] == report["near_miss"]["n"] > 0


def test_parallel_composition_joins_same_catalog_single_call_questions():
    examples = _examples()
    other = ToolExample("stock_only", "toy", _user("Price of 'MSFT'?"), ToolCatalog.load([STOCK]),
                        [ToolCall("get_stock_price", {"ticker": "MSFT"})])
    composed = parallel_examples(examples + [other], seed=0)
    assert [ex.id for ex in composed] == [ex.id for ex in parallel_examples(examples + [other], seed=0)]
    assert len(composed) == 1  # the two weather questions; the multi-call ones and the lone catalog are left
    ex = composed[0]
    assert set(ex.id.split("+")) == {"w_paris", "w_tokyo"} and ex.category == "parallel" and len(ex.gold) == 2
    assert " Also, " in ex.conversation[0]["content"] and NegativeJudge(ex).error_type(list(reversed(ex.gold))) == ""
    assert join_questions("Find the time in Oslo", "What about Rome") == "Find the time in Oslo. Also, what about Rome."


def test_holdout_is_a_stable_tenth_of_tasks_with_all_steps_on_one_side():
    ids = [f"task_{i}" for i in range(5000)]
    share = sum(map(is_bias_holdout, ids)) / len(ids)
    assert 0.08 < share < 0.12
    assert all(is_bias_holdout(f"{i}/step{k}") == is_bias_holdout(i) for i in ids[:200] for k in range(3))


needs_data = pytest.mark.skipif(importlib.util.find_spec("bfcl_eval") is None or importlib.util.find_spec("data_v1") is None,
                                reason="bfcl-eval / nestful-wrapper are not installed (scripts/setup.sh installs them)")


@needs_data
def test_real_holdout_pairs_verified_and_synthesis_leaves_them_out():
    from toolrm_rl.data.synth import SynthConfig, load_examples

    examples = holdout_examples(["bfcl_exec", "bfcl_sql", "nestful"])
    assert examples and all(is_bias_holdout(ex.id) for ex in examples)
    built = build_bias_pairs(examples, seed=0)
    assert _rows(built) == _rows(build_bias_pairs(examples, seed=0))
    assert all(len(built.pairs[b]) >= 5 for b in BIASES), {b: len(p) for b, p in built.pairs.items()}
    originals = {ex.id: ex for ex in examples}
    originals.update({ex.id: ex for ex in parallel_examples(
        [ex for ex in examples if ex.source.startswith(("bfcl_exec", "bfcl_sql"))], seed=0)})
    _check_pairs(built, originals)
    trained = load_examples(SynthConfig(sources=["bfcl_sql", "nestful"]))
    assert trained and not any(is_bias_holdout(ex.id) for ex in trained)
    everything = load_examples(SynthConfig(sources=["bfcl_sql", "nestful"], exclude_bias_holdout=False))
    assert len(everything) > len(trained) and {ex.id for ex in everything} - {ex.id for ex in trained} == \
        {ex.id for ex in everything if is_bias_holdout(ex.id)}


@needs_data
def test_cli_json_last_line_and_files(tmp_path, monkeypatch):
    monkeypatch.setitem(scoring.SCORERS, "more_calls", lambda **kw: MoreCalls())
    out = tmp_path / "biases"
    args = ["eval", "biases", "--scorer", "more_calls", "--sources", "bfcl_sql,nestful", "--limit", "4", "--seed", "1",
            "--out", str(out), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    last = json.loads(result.output.strip().splitlines()[-1])
    assert set(last["biases"]) == set(BIASES)
    assert all(0 < r["n"] <= 4 and 0.0 <= r["accuracy"] <= 1.0 for r in last["biases"].values())
    assert last["biases"]["more_calls"]["accuracy"] == 0.0 and last["biases"]["fewer_calls"]["accuracy"] == 1.0
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "pairs.jsonl"}
    assert json.loads((out / "report.json").read_text())["biases"] == last["biases"]
    pairs_text = (out / "pairs.jsonl").read_text()
    report = run_biases(BiasConfig(scorer="rules", sources=["bfcl_sql", "nestful"], limit=4, seed=1, out=str(tmp_path / "again")),
                        scorer=MoreCalls())
    assert report["biases"] == last["biases"] and (tmp_path / "again" / "pairs.jsonl").read_text() == pairs_text


def test_merged_parallel_examples_join_questions_over_two_catalogs():
    """Two single-call questions from different catalogs become one question over the merged catalog,
    whose gold (both calls, any order) passes the matcher and whose dropped-call variant fails it."""
    from toolrm_rl.data.compose import merged_parallel_examples
    from toolrm_rl.data.pairs import NegativeJudge

    weather, stock = ToolCatalog.load([WEATHER]), ToolCatalog.load([STOCK])
    examples = [ToolExample(f"w{i}", "toy", _user(f"Weather in '{c}'?"), weather, [ToolCall("get_weather", {"city": c})])
                for i, c in enumerate(["Paris", "Oslo", "Rome"])]
    other = ToolExample("stock_only", "toy", _user("Price of 'MSFT'?"), stock,
                        [ToolCall("get_stock_price", {"ticker": "MSFT"})])
    merged = merged_parallel_examples(examples + [other], seed=0)
    assert merged == merged_parallel_examples(examples + [other], seed=0)  # deterministic
    assert len(merged) == 1  # one stock question: one pair with disjoint catalogs
    assert merged and all("&" in ex.id and ex.category == "parallel" and len(ex.gold) == 2 for ex in merged)
    for ex in merged:
        a, b = ex.meta["composed_from"]
        assert set(ex.tools.names()) >= {c.name for c in ex.gold}
        judge = NegativeJudge(ex)
        assert judge.error_type(list(reversed(ex.gold))) == ""
        assert judge.error_type(ex.gold[:1]) != ""  # one call too few is wrong
    used = [i for ex in merged for i in ex.meta["composed_from"]]
    assert len(used) == len(set(used))  # each question used once
    assert len(merged_parallel_examples(examples + [other], seed=0, limit=1)) == 1


def test_abstention_examples_make_no_call_the_right_answer():
    from toolrm_rl.data.compose import abstention_examples
    from toolrm_rl.data.pairs import NegativeJudge, mutation_pairs

    examples = _examples()
    made = abstention_examples(examples, seed=0, share=1.0)
    assert [ex.id for ex in made] == [f"{ex.id}~abstain" for ex in examples]  # every example here keeps a tool
    assert made == abstention_examples(examples, seed=0, share=1.0)
    for ab, ex in zip(made, examples):
        assert ab.gold == [] and not {c.name for c in ex.gold} & set(ab.tools.names())
        judge = NegativeJudge(ab)
        assert judge.error_type([]) == "" and judge.error_type(ex.gold) != ""
    pairs, _ = mutation_pairs(made, negatives_per_example=2, seed=0)
    assert pairs and all(p.chosen == [] and p.rejected for p in pairs)
    assert 0 < len(abstention_examples(examples * 10, seed=1, share=0.3)) < 40
