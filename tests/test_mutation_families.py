"""Each mutation operator yields negatives the matcher files under the operator's intended error family,
on real records of the offline sources; no negative carries the surface cues of random perturbations."""

from __future__ import annotations

import collections
import importlib.util
import json
import random

import pytest

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.example import ToolExample
from toolrm_rl.core.match import ERROR_CATEGORIES, error_category
from toolrm_rl.data.mutate import INTENDED_CATEGORY, OPERATORS, mutate
from toolrm_rl.data.pairs import WRONG_ORDER, NegativeJudge, mutation_pairs
from toolrm_rl.data.sources import load_source

SOURCES = ("bfcl_exec", "bfcl_sql", "bfcl_rest", "bfcl_multi_turn", "nestful", "complexfuncbench")
# operators that only apply to some examples: measured on a fixture below when the sample lacks them
NEEDS_FIXTURE = {"call_when_none"}


@pytest.fixture(scope="module")
def sample():
    if importlib.util.find_spec("bfcl_eval") is None or importlib.util.find_spec("data_v1") is None:
        pytest.skip("bfcl-eval / nestful-wrapper are not installed (scripts/setup.sh installs them)")
    rng = random.Random(0)
    out = []
    for name in SOURCES:
        examples = load_source(name)
        out += rng.sample(examples, min(250, len(examples)))
    return out


def _user(ex: ToolExample) -> str:
    return next((m["content"] for m in reversed(ex.conversation) if m["role"] == "user"), "")


def test_every_operator_hits_its_intended_family_in_95_percent(sample):
    assert set(INTENDED_CATEGORY) == set(OPERATORS)
    # the card has no order category: only swap_order aims outside it ("other", its WRONG_ORDER label)
    assert {op for op, cat in INTENDED_CATEGORY.items() if cat not in ERROR_CATEGORIES} == {"swap_order"}
    total, hits = collections.Counter(), collections.Counter()
    misses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for k, ex in enumerate(sample):
        judge = NegativeJudge(ex)
        if not judge.usable:
            continue
        for op, calls in mutate(ex.gold, ex.tools, seed=k, query=_user(ex)):
            error_type = judge.error_type(calls)
            if not error_type:
                continue  # an acceptable alternative: never kept as a negative
            total[op] += 1
            if error_category(error_type) == INTENDED_CATEGORY[op]:
                hits[op] += 1
            else:
                misses[op][error_type] += 1
    rates = {op: hits[op] / total[op] for op in total}
    print("\nintended-family rate per operator:", {op: f"{r:.3f} of {total[op]}" for op, r in sorted(rates.items())})
    assert set(OPERATORS) - NEEDS_FIXTURE <= set(total), "every operator must apply somewhere in the sample"
    for op, rate in rates.items():
        assert total[op] >= 30, (op, total[op])
        assert rate >= 0.95, (op, rate, misses[op].most_common(3))


def test_calling_when_no_call_is_right_is_a_wrong_count():
    tools = ToolCatalog.load([
        {"name": "get_weather", "description": "Current weather in a city",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                        "required": ["city"]}},
        {"name": "convert_currency", "description": "Convert an amount between currencies",
         "parameters": {"type": "object", "properties": {"amount": {"type": "number"}, "to": {"type": "string"}},
                        "required": ["amount", "to"]}}])
    ex = ToolExample("irr", "t", [{"role": "user", "content": "What is the weather like on the Moon these days?"}],
                     tools, [], category="irrelevance")
    variants = mutate([], tools, seed=0, query=_user(ex))
    assert [op for op, _ in variants] == ["call_when_none", "call_when_none"]
    first = variants[0][1]
    assert first[0].name == "get_weather" and first[0].arguments == {"city": "Moon"}  # from the query
    judge = NegativeJudge(ex)
    assert judge.error_type([]) == ""  # abstaining is right
    assert all(error_category(judge.error_type(calls)) == "wrong_count" for _, calls in variants)
    pairs, stats = mutation_pairs([ex], negatives_per_example=3)
    assert pairs and all(p.chosen == [] and p.rejected for p in pairs) and stats.by_operator == {"call_when_none": 2}


def test_swap_order_only_where_a_call_uses_the_previous_result_and_is_labelled_wrong_order():
    tools = ToolCatalog.load([
        {"name": "find_bus", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "buy_ticket", "parameters": {"type": "object", "properties": {"bus_id": {"type": "string"}}}},
        {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}])
    user = [{"role": "user", "content": "Book me the bus to Oslo, and what's the weather there?"}]
    dependent = [ToolCall("find_bus", {"city": "Oslo"}), ToolCall("buy_ticket", {"bus_id": "$var1.id$"})]
    independent = [ToolCall("find_bus", {"city": "Oslo"}), ToolCall("get_weather", {"city": "Oslo"})]
    # a dependent pair in a sequential example: swapped, and the matcher names the order, not a function
    ex = ToolExample("seq", "t", user, tools, dependent, category="sequential")
    swapped = [calls for op, calls in mutate(dependent, tools, seed=0) if op == "swap_order"]
    assert swapped == [[dependent[1], dependent[0]]]
    assert NegativeJudge(ex).error_type(swapped[0]) == WRONG_ORDER
    pairs, stats = mutation_pairs([ex], negatives_per_example=20, operators=["swap_order"])
    assert stats.by_operator == {"swap_order": 1} and [p.error_type for p in pairs] == [WRONG_ORDER]
    # independent calls: order does not provably matter (a state checker may accept either), no swap
    assert not [op for op, _ in mutate(independent, tools, seed=0) if op == "swap_order"]
    # a wrong function at a position stays a wrong function; order-free categories ignore order
    wrong = [dependent[0], ToolCall("get_weather", {"city": "Oslo"})]
    assert error_category(NegativeJudge(ex).error_type(wrong)) == "wrong_function"
    parallel = ToolExample("par", "t", user, tools, independent, category="parallel")
    assert NegativeJudge(parallel).error_type(independent[::-1]) == ""


SURFACE_CUES = (" extra", "zz", "unknown", "_v2", "verbose", "extra_flag", "_x\"")


def test_no_negative_carries_surface_cues(sample):
    pairs, stats = mutation_pairs(sample, negatives_per_example=5, seed=1)
    assert stats.n_pairs > 3 * len(sample)
    golds = {p.id.rsplit("#", 1)[0]: json.dumps([c.arguments for c in p.chosen]).lower() for p in pairs}
    for pair in pairs:
        text = json.dumps([[c.name, c.arguments] for c in pair.rejected]).lower()
        for cue in SURFACE_CUES:
            # a cue may appear only when the right answer or the catalog already contains it
            assert cue not in text or cue in golds[pair.id.rsplit("#", 1)[0]] or \
                cue in json.dumps(pair.tools.to_dicts()).lower(), (cue, pair.id, pair.rejected)


def test_negatives_carry_the_raw_error_type_and_the_schema_valid_share_is_reported(sample):
    pairs, stats = mutation_pairs(sample, negatives_per_example=3, schema_valid_share=0.7, seed=2)
    assert all(p.error_type and (error_category(p.error_type) in ERROR_CATEGORIES or p.error_type == WRONG_ORDER)
               for p in pairs)
    assert all(p.error_type == WRONG_ORDER for p in pairs if p.generator == "mutation:swap_order")
    assert all(p.generator.startswith("mutation:") for p in pairs)
    assert sum(stats.by_category.values()) == stats.n_pairs == len(pairs)
    assert set(stats.by_category) >= {"wrong_value", "wrong_function", "wrong_count", "missing_required"}
    assert 0.6 <= stats.schema_valid_share <= 0.8
    print(f"\nschema-valid share {stats.schema_valid_share:.3f}; by category {stats.by_category}")


def test_operator_weights_shape_the_mix(sample):
    only_values = {op: 0.0 for op in OPERATORS if INTENDED_CATEGORY[op] != "wrong_value"}
    pairs, stats = mutation_pairs(sample[:300], negatives_per_example=2, operator_weights=only_values, seed=0)
    value_ops = {op for op in OPERATORS if INTENDED_CATEGORY[op] == "wrong_value"}
    assert pairs and set(stats.by_operator) <= value_ops  # weight 0 switches an operator off
    assert stats.by_category["wrong_value"] >= 0.95 * stats.n_pairs


def test_near_misses_are_schema_valid_and_grounded():
    tools = ToolCatalog.load([{"name": "convert", "parameters": {"type": "object", "properties": {
        "amount": {"type": "number"}, "from_currency": {"type": "string"}, "to_currency": {"type": "string"},
        "date": {"type": "string"}, "items": {"type": "array", "items": {"type": "string"}}},
        "required": ["amount", "from_currency", "to_currency"]}}])
    gold = [ToolCall("convert", {"amount": 250.5, "from_currency": "USD", "to_currency": "EUR", "date": "2024-03-05",
                                 "items": ["a", "b"]})]
    ex = ToolExample("q", "t", [{"role": "user", "content": "Convert 250.5 USD to EUR as of 2024-03-05"}], tools, gold)
    pairs, stats = mutation_pairs([ex], negatives_per_example=40, schema_valid_share=1.0,
                                  operators=["wrong_value", "swap_values"])
    assert stats.schema_valid_share == 1.0 and len(pairs) >= 5
    values = [v for p in pairs for v in p.rejected[0].arguments.values()]
    assert {"US dollar", "US dollars", "dollars", "euro", "euros"} & set(map(str, values))
    assert any(isinstance(v, str) and v.startswith(("05-03", "03/05", "05/03", "March")) for v in values)


def test_query_swap_keeps_the_value_shape():
    """A URL is only swapped for another URL, a SQL verb for another keyword: implausible swaps
    ("French" for a URL) are not generated."""
    from toolrm_rl.core.calls import ToolCall
    from toolrm_rl.data.mutate import mutate

    catalog = [{"name": "fetch", "parameters": {"type": "object", "properties": {
        "url": {"type": "string"}, "lang": {"type": "string"}, "verb": {"type": "string"}}}}]
    gold = [ToolCall("fetch", {"url": "https://a.org/x", "lang": "German", "verb": "SELECT"})]
    query = "Fetch 'https://a.org/x' in German, not French, and compare with 'https://b.org/y' using SELECT or DELETE"
    swaps = [calls[0].arguments for s in range(20)
             for op, calls in mutate(gold, catalog, seed=s, operators=["query_swap"], query=query)]
    assert swaps
    for args in swaps:
        assert args["url"] in ("https://a.org/x", "https://b.org/y")
        assert args["lang"] in ("German", "French")
        assert args["verb"] in ("SELECT", "DELETE")


def test_invented_function_keeps_the_arguments_under_a_name_outside_the_catalog():
    tools = ToolCatalog.load([
        {"name": "weather.get_forecast", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "weather.get_alerts", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}])
    gold = [ToolCall("weather.get_forecast", {"city": "Oslo"})]
    names = set()
    for seed in range(30):
        for op, calls in mutate(gold, tools, seed=seed, operators=["invented_function"]):
            assert calls[0].arguments == gold[0].arguments and calls[0].name not in tools.names()
            names.add(calls[0].name)
    # namespace dropped / flattened, verb swapped: the ways small models misname a function
    assert {"get_forecast", "weather_get_forecast", "weather.fetch_forecast"} <= names
    ex = ToolExample("q", "t", [{"role": "user", "content": "Forecast for Oslo?"}], tools, gold)
    assert error_category(NegativeJudge(ex).error_type([ToolCall("get_forecast", {"city": "Oslo"})])) == "wrong_function"
    # a name with no plausible variant yields nothing rather than a random string
    assert mutate([ToolCall("fn", {})], [{"name": "fn"}], operators=["invented_function"]) == []


def test_raw_copy_uses_the_users_words_where_the_gold_converts_them():
    tools = ToolCatalog.load([{"name": "book", "parameters": {"type": "object", "properties": {
        "date": {"type": "string"}, "city": {"type": "string"}, "discount": {"type": "number"},
        "note": {"type": "string"}}}}])
    gold = [ToolCall("book", {"date": "2022-03-11", "city": "NYC", "discount": 0.05,
                              "note": "Please book the quiet room for us"})]
    query = "Book New York City for March 11, 2022 with a 5% discount, a quiet room please"
    variants = [calls[0].arguments for op, calls in mutate(gold, tools, operators=["raw_copy"], query=query)]
    changed = {k: args[k] for args in variants for k in args if args[k] != gold[0].arguments[k]}
    # a date and an abbreviation copied as written, a percentage not converted; free text is left alone
    assert changed == {"date": "March 11, 2022", "city": "New York City", "discount": 5.0}
    ex = ToolExample("q", "t", [{"role": "user", "content": query}], tools, gold)
    judge = NegativeJudge(ex)
    assert all(error_category(judge.error_type([ToolCall("book", args)])) == "wrong_value" for args in variants)
    # a value written verbatim in the request has nothing to convert
    assert mutate([ToolCall("book", {"city": "New York City"})], tools, operators=["raw_copy"], query=query) == []


def test_over_specify_widens_a_value_by_a_neighbouring_word_never_across_a_sentence():
    tools = ToolCatalog.load([{"name": "post", "parameters": {"type": "object", "properties": {
        "channel": {"type": "string"}, "code": {"type": "string"}}}}])
    gold = [ToolCall("post", {"channel": "general", "code": "X7"})]
    query = "Post it in the general channel. X7\n\nThanks"
    widened = {calls[0].arguments["channel"] for s in range(10)
               for op, calls in mutate(gold, tools, seed=s, operators=["over_specify"], query=query)}
    assert widened == {"general channel"}  # "the general" ends on a filler word; "X7 Thanks" crosses a break


def test_extra_function_adds_a_call_to_another_related_function():
    tools = ToolCatalog.load([
        {"name": "get_weather", "description": "current weather in a city",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"name": "get_forecast", "description": "weather forecast for a city",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"name": "convert_currency", "description": "money", "parameters": {"type": "object", "properties": {}}}])
    gold = [ToolCall("get_weather", {"city": "Oslo"})]
    query = "What is the weather in Oslo right now?"
    variants = [calls for op, calls in mutate(gold, tools, operators=["extra_function"], query=query)]
    assert len(variants) == 1 and len(variants[0]) == 2 and gold[0] in variants[0]
    extra = next(c for c in variants[0] if c != gold[0])
    assert extra.name == "get_forecast" and extra.arguments == {"city": "Oslo"}  # the most related other tool
    ex = ToolExample("q", "t", [{"role": "user", "content": query}], tools, gold)
    assert error_category(NegativeJudge(ex).error_type(variants[0])) == "wrong_count"
    assert mutate([], tools, operators=["extra_function"], query=query) == []  # nothing to add to


def test_restatements_are_the_users_forms_of_canonical_values_and_raw_copy_finds_them():
    from toolrm_rl.core.forms import restatements

    assert "July 4, 2025" in restatements("2025-07-04") and "2 PM" not in restatements("14:30")
    assert restatements("14:30") == ["2:30 PM"] and restatements(0.125) == ["12.5%", "12.5 percent"]
    assert restatements(0.12345) == [] and restatements(5) == [] and restatements("2025-13-01") == []
    assert restatements("US dollars") == []  # only a canonical form is restated, not the words for it
    assert "10th December 2022" in restatements("2022-12-10") and restatements(5e-12) == []  # no "0%"
    assert restatements(9597000.0) == ["9.597 million"] and restatements(2 * 10**12) == ["2 trillion"]
    assert restatements(1234567) == [] and restatements(999999) == [] and restatements(float("nan")) == []
    tools = ToolCatalog.load([{"name": "convert", "parameters": {"type": "object", "properties": {
        "to": {"type": "string"}, "rate": {"type": "number"}}}}])
    gold = [ToolCall("convert", {"to": "USD", "rate": 0.05})]
    query = "Convert it to US dollars and add a 5 percent fee"
    variants = [calls[0].arguments for _, calls in mutate(gold, tools, operators=["raw_copy"], query=query)]
    assert {"to": "US dollars", "rate": 0.05} in variants and {"to": "USD", "rate": 5.0} in variants


def test_restated_examples_rewrite_one_value_in_the_last_user_turn_and_keep_the_gold():
    from toolrm_rl.data.compose import restated_examples

    tools = ToolCatalog.load([{"name": "book", "parameters": {"type": "object", "properties": {
        "date": {"type": "string"}, "to": {"type": "string"}}}}])
    gold = [ToolCall("book", {"date": "2025-07-04", "to": "USD"})]
    conv = [{"role": "user", "content": "Pay in USD."}, {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "Book it on 2025-07-04, paid in USD."}]
    made = restated_examples([ToolExample("q", "src", conv, tools, gold)], seed=0)
    assert len(made) == 1 and made[0].id == "q~restated" and made[0].source == "src_restated"
    # USD also appears in an earlier turn, so only the date can be restated; the gold is the same
    assert made[0].conversation[-1]["content"] in {f"Book it on {p}, paid in USD." for p in
                                                    ("July 4, 2025", "4 July 2025", "July 4th, 2025")}
    assert made[0].gold == gold and made[0].conversation[0] == conv[0] and conv[-1]["content"].count("2025-07-04") == 1
    # deterministic for a seed; nothing restatable (or share 0) gives nothing
    assert restated_examples([ToolExample("q", "src", conv, tools, gold)], seed=0) == made
    assert restated_examples([ToolExample("q", "src", conv, tools, gold)], share=0.0) == []
    plain = ToolExample("p", "src", [{"role": "user", "content": "Book it for next week"}], tools,
                        [ToolCall("book", {"date": "next week"})])
    assert restated_examples([plain]) == []


def test_a_restated_question_always_gets_the_raw_copy_of_its_restated_value():
    from toolrm_rl.data.compose import restated_examples
    from toolrm_rl.data.pairs import mutation_pairs

    tools = ToolCatalog.load([{"name": "invest", "parameters": {"type": "object", "properties": {
        "rate": {"type": "number"}, "amount": {"type": "integer"}, "years": {"type": "integer"}},
        "required": ["rate", "amount", "years"]}}])
    examples = [ToolExample(f"q{i}", "t", [{"role": "user", "content": f"Invest 2000000 at 0.0{i + 2} for {i + 3} years"}],
                            tools, [ToolCall("invest", {"rate": float(f"0.0{i + 2}"), "amount": 2000000, "years": i + 3})])
                for i in range(6)]
    restated = restated_examples(examples, seed=0)
    assert len(restated) == 6
    # an integer with a scale form is restated too ("2 million"), not only dates, codes and percentages
    assert any("2 million" in ex.conversation[-1]["content"] for ex in restated)
    rare = {"raw_copy": 1e-9}
    pairs, _ = mutation_pairs(examples + restated, seed=0, operator_weights=rare)
    copies = {p.id.split("#")[0] for p in pairs if p.generator == "mutation:raw_copy"}
    assert copies == {ex.id for ex in restated}  # every restated question, and only those (the rest have no copy)
    for p in pairs:
        if p.generator == "mutation:raw_copy":  # the user's words for the value, not the converted one
            said = p.conversation[-1]["content"]
            assert any(str(v).removesuffix(".0") in said for c in p.rejected for v in c.arguments.values()
                       if v not in p.chosen[0].arguments.values())


def test_relevance_contrast_gives_an_abstention_twin_the_no_call_negative():
    import dataclasses

    from toolrm_rl.data.compose import abstention_examples, mark_abstention_twins
    from toolrm_rl.data.pairs import mutation_pairs

    tools = ToolCatalog.load([
        {"name": "get_weather", "description": "weather in a city", "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}},
        {"name": "get_time", "description": "time in a city", "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}}, "required": ["city"]}}])
    examples = [ToolExample(f"q{i}", "t", [{"role": "user", "content": f"Weather in Oslo for {i + 2} days?"}], tools,
                            [ToolCall("get_weather", {"city": "Oslo", "days": i + 2})]) for i in range(6)]
    abstentions = abstention_examples(examples, share=0.5)
    marked = mark_abstention_twins(examples, abstentions)
    twins = {a.id.removesuffix("~abstain") for a in abstentions}
    assert twins and {ex.id for ex in marked if ex.meta.get("abstention_twin")} == twins
    assert not any(ex.meta.get("abstention_twin") for ex in examples)  # the inputs are not changed
    rare = {"no_call": 1e-9}

    def no_call_ids(contrast: bool) -> set[str]:
        pairs, _ = mutation_pairs(marked, seed=0, operator_weights=rare, relevance_contrast=contrast)
        return {p.id.split("#")[0] for p in pairs if not p.rejected}

    assert no_call_ids(False) == set() and no_call_ids(True) == twins
    unmarked = [dataclasses.replace(ex, meta={}) for ex in marked]
    assert not any(not p.rejected for p in mutation_pairs(unmarked, operator_weights=rare, relevance_contrast=True)[0])
