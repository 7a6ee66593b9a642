"""The extra_info codec: what verl-data writes, the reward reads back, whatever a row holds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.example import ToolExample
from toolrm_rl.core.extra_info import FORMAT_VERSION, decode, encode

TOOLS = ToolCatalog.load([{"name": "get_weather", "description": "Weather of a city",
                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"]}}])


@pytest.mark.parametrize("gold,answer,category", [
    ([ToolCall("get_weather", {"city": "Paris"})], [{"get_weather": {"city": ["Paris", "paris"]}}], "simple"),
    ([], None, ""),  # no call is right, no possible answer
])
def test_round_trip(gold, answer, category):
    ex = ToolExample("q7", "demo", [{"role": "user", "content": "Météo à Paris ?"}], TOOLS, gold, answer, category)
    encoded = encode(ex, split="val", index=np.int64(4))
    assert json.loads(json.dumps(encoded)) == encoded  # plain JSON types: one parquet schema for every row
    info = decode(encoded)
    assert (info.id, info.split, info.index, info.format_version) == ("q7", "val", 4, FORMAT_VERSION)
    assert ToolCatalog.load(info.tools) == TOOLS and info.has_tools
    assert info.conversation == ex.conversation and info.gold == gold
    assert info.answer == answer and info.category == category and info.errors == {}


def test_rows_without_the_version_key_and_numpy_values_read_as_version_1():
    row = encode(ToolExample("q", "s", [], TOOLS, []), split="train", index=0)
    del row["format_version"]
    assert decode(row).format_version == 1 and decode({**row, "format_version": np.int64(1)}).errors == {}


def test_undecodable_fields_are_reported_not_raised():
    info = decode({"tools": b"\xff[", "conversation": "[{", "gold": '[{"f": 3}]', "answer": "{"})
    assert info.has_tools and info.tools is info.conversation is info.gold is info.answer is None
    assert set(info.errors) == {"tools", "conversation", "gold", "answer"} and "UTF-8" in info.errors["tools"]
    assert "arguments must be an object" in info.errors["gold"]
    blank = decode({"tools": "  "})
    assert blank.has_tools and "blank" in blank.errors["tools"]  # present but empty: cannot be checked
    assert not decode({"tools": None}).has_tools and decode("not a dict") == decode({})


def test_a_newer_format_version_names_the_field():
    with pytest.raises(ValueError, match="extra_info.format_version"):
        decode({"format_version": FORMAT_VERSION + 1})
