"""Obfuscation: consistent, seeded renaming that keeps ground truth valid and can be mapped back."""

from __future__ import annotations

import importlib.util
import json
import random
import re

import pytest

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.example import ToolExample
from toolrm_rl.core.match import GroundTruth, calls_equal
from toolrm_rl.core.schema import check_calls
from toolrm_rl.data.obfuscate import ObfuscationMap, deobfuscate_calls, obfuscate
from toolrm_rl.data.pairs import NegativeJudge
from toolrm_rl.data.sources import OFFLINE_SOURCES, load_source

IDENTIFIER = re.compile(r"[a-z]+(?:_[a-z]+)*")


def _example() -> ToolExample:
    tools = ToolCatalog.load([
        {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City"}, "days": {"type": "integer", "default": 1},
            "units": {"type": "string", "enum": ["metric", "imperial"]}}, "required": ["city"]}},
        {"name": "send_email", "description": "Mail", "parameters": {"type": "object", "properties": {
            "to": {"type": "string"}, "body": {"type": "string"}}, "required": ["to", "body"]}}])
    conversation = [
        {"role": "user", "content": "Use get_weather for Paris, then send_email me. Sort it out."},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c0", "name": "get_weather", "content": "{\"city\": \"Paris\", \"temp\": 20}"},
        {"role": "user", "content": "Now email bob@x.org the weather for 3 days."},
    ]
    gold = [ToolCall("get_weather", {"city": "Paris", "days": 3}), ToolCall("send_email", {"to": "bob@x.org", "body": "20C"})]
    return ToolExample("ex1", "fixture", conversation, tools, gold,
                       answer=[{"get_weather": {"city": ["Paris"], "days": [3], "units": ["metric", ""]}},
                               {"send_email": {"to": ["bob@x.org"], "body": ["20C"]}}], category="parallel")


def test_renaming_is_consistent_across_catalog_conversation_gold_and_answer():
    ex = _example()
    obf, mapping = obfuscate(ex, seed=3)
    fn = mapping.functions
    assert set(fn) == {"get_weather", "send_email"} and len(set(fn.values())) == 2
    assert all(IDENTIFIER.fullmatch(n) and n not in ex.tools.names() for n in fn.values())
    assert obf.tools.names() == [fn["get_weather"], fn["send_email"]]
    params = mapping.params["get_weather"]
    assert set(obf.tools[fn["get_weather"]].properties) == set(params.values())
    assert obf.tools[fn["get_weather"]].required == [params["city"]]
    assert obf.gold[0] == ToolCall(fn["get_weather"], {params["city"]: "Paris", params["days"]: 3})
    call = obf.conversation[1]["tool_calls"][0]["function"]
    assert call["name"] == fn["get_weather"] and json.loads(call["arguments"]) == {params["city"]: "Paris"}
    assert obf.conversation[2]["name"] == fn["get_weather"]
    assert "get_weather" not in obf.conversation[0]["content"] and fn["send_email"] in obf.conversation[0]["content"]
    assert "Sort it out" in obf.conversation[0]["content"]  # ordinary words are left alone
    assert obf.answer[0] == {fn["get_weather"]: {params["city"]: ["Paris"], params["days"]: [3], params["units"]: ["metric", ""]}}
    assert obf.meta["obfuscation"] == mapping.to_dict() and obf.id == "ex1@obf3"
    assert ex.gold[0].name == "get_weather" and ex.conversation[2]["name"] == "get_weather"  # input untouched


def test_same_seed_same_output_other_seed_other_names_and_orders():
    ex = _example()
    a, map_a = obfuscate(ex, seed=1)
    b, map_b = obfuscate(ex, seed=1)
    assert a == b and map_a == map_b
    others = [obfuscate(ex, seed=s) for s in range(2, 12)]
    assert all(m.functions != map_a.functions for _, m in others)
    # key order of the schema dicts and of the properties is shuffled
    def orders(obf, mapping):
        params = obf.tools.to_dicts()[0]["parameters"]
        back = {v: k for k, v in mapping.params["get_weather"].items()}
        return tuple(params), tuple(back[p] for p in params["properties"]), tuple(params["properties"].values())[0].keys()

    key_orders, prop_orders, inner_orders = zip(*(orders(o, m) for o, m in others))
    assert len(set(key_orders)) > 1 and len(set(prop_orders)) > 1 and len({tuple(k) for k in inner_orders}) > 1


def test_obfuscated_ground_truth_matches_and_maps_back():
    ex = _example()
    obf, mapping = obfuscate(ex, seed=5)
    assert GroundTruth(obf.tools, obf.answer, obf.category).check(obf.gold).valid
    assert check_calls(obf.gold, obf.tools).ok
    # a wrong call stays wrong after renaming, with the same error
    wrong = [ToolCall("get_weather", {"city": "Paris", "days": 4}), ex.gold[1]]
    assert GroundTruth(obf.tools, obf.answer, obf.category).check(mapping.from_original(wrong)).error_type == \
        GroundTruth(ex.tools, ex.answer, ex.category).check(wrong).error_type
    assert mapping.to_original(obf.gold) == ex.gold
    assert deobfuscate_calls(obf.gold, obf.meta["obfuscation"]) == ex.gold
    assert ObfuscationMap.from_dict(json.loads(json.dumps(mapping.to_dict()))) == mapping


def test_names_never_collide_in_large_catalogs():
    tools = ToolCatalog.load([{"name": f"f{i}", "parameters": {"type": "object", "properties": {
        f"p{j}": {"type": "string"} for j in range(30)}}} for i in range(300)])
    ex = ToolExample("big", "t", [{"role": "user", "content": "hi"}], tools, [ToolCall("f7", {"p3": "x"})])
    obf, mapping = obfuscate(ex, seed=0)
    assert len(set(mapping.functions.values())) == 300 and len(obf.tools) == 300
    assert all(len(set(p.values())) == 30 for p in mapping.params.values())


@pytest.fixture(scope="module")
def offline_sample():
    if importlib.util.find_spec("bfcl_eval") is None or importlib.util.find_spec("data_v1") is None:
        pytest.skip("bfcl-eval / nestful-wrapper are not installed (scripts/setup.sh installs them)")
    rng = random.Random(0)
    sample = []
    for name in OFFLINE_SOURCES:
        examples = load_source(name)
        sample += rng.sample(examples, min(150, len(examples)))
    return sample


def test_offline_sources_keep_their_verdicts_under_obfuscation(offline_sample):
    n_answers = 0
    for k, ex in enumerate(offline_sample):
        obf, mapping = obfuscate(ex, seed=k)
        assert mapping.to_original(obf.gold) == ex.gold, ex.id
        assert check_calls(obf.gold, obf.tools).ok == check_calls(ex.gold, ex.tools).ok, ex.id
        if ex.answer:
            n_answers += 1
            before = GroundTruth(ex.tools, ex.answer, ex.category).check(ex.gold)
            after = GroundTruth(obf.tools, obf.answer, obf.category).check(obf.gold)
            assert before.valid == after.valid and before.error_type == after.error_type, ex.id
        judge = NegativeJudge(obf)
        assert judge.usable == NegativeJudge(ex).usable
        if judge.usable:
            assert judge.error_type(obf.gold) == ""
            assert calls_equal(deobfuscate_calls(obf.gold, obf.meta["obfuscation"]), ex.gold, ordered=True)
        for message in obf.conversation:  # earlier calls in the history use the new names
            for call in message.get("tool_calls") or []:
                assert call["function"]["name"] in mapping.functions.values(), ex.id
    assert n_answers >= 50
