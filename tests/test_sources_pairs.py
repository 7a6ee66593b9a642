"""Offline training sources and verified mutation pairs."""

from __future__ import annotations

import pytest

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.example import ToolExample
from toolrm_rl.core.match import GroundTruth, calls_equal
from toolrm_rl.core.schema import check_calls
from toolrm_rl.data.mutate import mutate, near_miss_string, query_values
from toolrm_rl.data.pairs import mutation_pairs
from toolrm_rl.data.sources import SourceError, bind_positional, load_source


@pytest.fixture(scope="module")
def examples(bfcl_records):  # bfcl_records: skips when bfcl-eval is absent
    return [ex for name in ("bfcl_exec", "bfcl_sql", "bfcl_multi_turn", "nestful") for ex in load_source(name)]


@pytest.mark.parametrize("name", ["simple_python", "live_multiple", "bfcl_parallel", "multiple", "simple_java"])
def test_benchmark_categories_are_refused_as_training_sources(name):
    with pytest.raises(SourceError, match="evaluation data"):
        load_source(name)


def test_unknown_source_is_named():
    with pytest.raises(SourceError, match="unknown source 'nope'"):
        load_source("nope")


def test_sources_load_with_gold_calls(examples):
    by_source = {}
    for ex in examples:
        by_source.setdefault(ex.source, []).append(ex)
        assert ex.gold and all(c.name in ex.tools for c in ex.gold), ex.id
        assert ex.conversation[-1]["role"] == "user"
    assert {"bfcl_exec_simple", "bfcl_sql", "bfcl_multi_turn_base", "nestful_glaive", "nestful_sgd"} <= set(by_source)
    assert len(examples) > 1800


def test_multi_turn_history_carries_earlier_gold_calls(examples):
    turn1 = next(ex for ex in examples if ex.id == "multi_turn_base_0/turn1")
    assistant = [m for m in turn1.conversation if m["role"] == "assistant"]
    assert len(assistant) == 1 and assistant[0]["tool_calls"][0]["function"]["name"] == "cd"
    assert [c.name for c in turn1.gold] == ["cd", "grep"]


def test_nestful_examples_keep_the_call_sequence_and_add_distractors(examples):
    nestful = [ex for ex in examples if ex.source.startswith("nestful")]
    assert len(nestful) >= 250
    first = next(ex for ex in nestful if ex.id == "nestful_glaive_0")
    assert [c.name for c in first.gold] == ["calculate_route", "find_song_lyrics", "calculate_pace"]
    assert first.gold[2].arguments["distance"] == "$var1.distance$"  # references to earlier results stay
    assert len(first.tools) == 3 + 4 and first.category == "sequential"


def test_bind_positional_names_arguments_by_schema_order():
    catalog = ToolCatalog.load([{"name": "sort", "parameters": {"type": "dict", "properties": {
        "file_name": {"type": "string"}, "reverse": {"type": "boolean"}}}}])
    assert bind_positional("sort('a.pdf', reverse=True)", catalog) == ToolCall("sort", {"file_name": "a.pdf", "reverse": True})
    assert bind_positional("sort('a', 'b', 'c')", catalog) is None
    assert bind_positional("unknown('a')", catalog) is None


def test_no_training_pair_contains_a_bfcl_single_turn_question(examples, bfcl_records):
    benchmark_questions = {m["content"].strip().lower() for r in bfcl_records for m in r.conversation if m["role"] == "user"}
    pairs, _ = mutation_pairs(examples, seed=0)
    leaked = [p.id for p in pairs for m in p.conversation
              if m["role"] == "user" and str(m["content"]).strip().lower() in benchmark_questions]
    assert not leaked, leaked[:5]


def test_every_negative_is_verified_wrong_and_the_mix_is_reported(examples):
    pairs, stats = mutation_pairs(examples[:400], negatives_per_example=3, schema_valid_share=0.7, seed=3)
    by_id = {ex.id: ex for ex in examples}
    assert stats.n_pairs == len(pairs) > 800
    for pair in pairs:
        ex = by_id[pair.id.rsplit("#", 1)[0]]
        assert pair.chosen == ex.gold
        assert not calls_equal(pair.rejected, ex.gold, ordered=ex.category == "multi_turn"), pair.id
        if ex.answer:
            assert not GroundTruth(ex.tools, ex.answer, ex.category).check(pair.rejected).valid
    share = sum(check_calls(p.rejected, p.tools).ok for p in pairs) / len(pairs)
    assert share == pytest.approx(stats.schema_valid_share)
    assert 0.5 <= share <= 0.8
    assert sum(stats.by_operator.values()) == stats.n_pairs
    ids = [p.id for p in pairs]
    assert len(ids) == len(set(ids))


def test_pairs_are_reproducible_and_respect_the_share_setting(examples):
    a, _ = mutation_pairs(examples[:100], seed=7)
    b, _ = mutation_pairs(examples[:100], seed=7)
    assert [(p.id, p.rejected) for p in a] == [(p.id, p.rejected) for p in b]
    _, low = mutation_pairs(examples[:200], seed=7, schema_valid_share=0.0)
    _, high = mutation_pairs(examples[:200], seed=7, schema_valid_share=1.0)
    assert low.schema_valid_share < 0.2 < 0.8 < high.schema_valid_share


def test_acceptable_alternatives_are_not_negatives():
    tools = [{"name": "f", "parameters": {"type": "dict", "properties": {"unit": {"type": "string"}}, "required": ["unit"]}}]
    def example(query):
        return ToolExample(query, "t", [{"role": "user", "content": query}], ToolCatalog.load(tools),
                           [ToolCall("f", {"unit": "km"})], answer=[{"f": {"unit": ["km", "kilometers"]}}], category="simple")

    pairs, stats = mutation_pairs([example("distance in 'kilometers'?")], negatives_per_example=10, seed=0)
    assert all(p.rejected != [ToolCall("f", {"unit": "kilometers"})] for p in pairs)
    assert stats.n_rejected_as_correct >= 1  # query_swap proposed "kilometers": an acceptable alternative
    pairs, _ = mutation_pairs([example("distance in 'miles'?")], negatives_per_example=10, seed=0)
    assert any(p.rejected == [ToolCall("f", {"unit": "miles"})] for p in pairs)  # a real near miss is kept


def test_query_values_and_near_miss_strings():
    strings, numbers = query_values("Book a table at 'Chez Panisse' in Berkeley for 4 people at 7.30, then call Alice Smith.")
    assert "Chez Panisse" in strings and "Berkeley" in strings and "Alice Smith" in strings
    assert numbers == [4, 7.3]
    import random
    rng = random.Random(0)
    variants = {near_miss_string("grams per mole", rng) for _ in range(40)}
    assert {"g/mol", "g/mole", "grams/mole"} <= variants  # same unit, another spelling: the FC-RewardBench near miss
    assert variants <= {"g/mol", "g/mole", "grams/mole", "ounces per mole"}
    assert {near_miss_string("2024-03-01", random.Random(s)) for s in range(40)} == {
        "01-03-2024", "03/01/2024", "01/03/2024", "March 1, 2024", "2024-01-03", "2024-03-02"}
    assert near_miss_string("USD", random.Random(0)) in {"US dollar", "US dollars", "dollars", "EUR"}
    assert near_miss_string("report_2.pdf", random.Random(0)) in {"report_3.pdf", "report_1.pdf"} | {
        "report_2" + e for e in (".docx", ".txt", ".csv", ".xlsx", ".json", ".md", ".png", ".jpg")}
    assert near_miss_string("x", random.Random(0)) is None  # nothing plausible: no random string instead


def test_mutate_does_not_modify_its_input():
    calls = [ToolCall("f", {"a": [1, 2], "b": "2024-01-05"})]
    before = repr(calls)
    variants = mutate(calls, [{"name": "f", "parameters": {"type": "object", "properties": {"a": {}, "b": {}}}},
                              {"name": "g", "parameters": {}}], seed=0, query="use 'y', '2024-02-07' and 3")
    assert repr(calls) == before
    ops = {op for op, _ in variants}
    assert {"wrong_function", "drop_optional", "wrong_type", "wrong_value", "query_swap",
            "duplicate_call", "extra_call", "no_call"} <= ops


def test_count_contrast_puts_both_call_count_directions_against_one_gold():
    tools = ToolCatalog.load([{"name": "weather", "parameters": {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"}}}}])
    user = [{"role": "user", "content": "Weather in Oslo and in Bergen for 3 days?"}]
    gold = [ToolCall("weather", {"city": "Oslo", "days": 3}), ToolCall("weather", {"city": "Bergen", "days": 3})]
    examples = [ToolExample(f"q{i}", "t", user, tools, gold) for i in range(40)]
    ops = ["drop_call", "duplicate_call", "extra_call", "wrong_value", "query_swap"]
    weights = {"drop_call": 50.0, "duplicate_call": 0.01, "extra_call": 0.01}  # fewer-calls negatives come first

    def directions(pairs):
        by_query: dict[str, set] = {}
        for p in pairs:
            by_query.setdefault(p.id.split("#")[0], set()).add((len(p.rejected) > 2) - (len(p.rejected) < 2))
        return by_query

    plain, _ = mutation_pairs(examples, operators=ops, operator_weights=weights)
    contrast, _ = mutation_pairs(examples, operators=ops, operator_weights=weights, count_contrast=True)
    one_sided = [q for q, d in directions(plain).items() if -1 in d and 1 not in d]
    assert one_sided  # without the contrast most groups only ever see too few calls
    for q, d in directions(contrast).items():
        assert not ({-1, 1} & d) or {-1, 1} <= d, (q, d)
    assert len(contrast) == len(plain)  # a negative is swapped, never added
    assert all(p.error_type for p in contrast)  # still verified negatives
