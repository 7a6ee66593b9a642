"""Tests for toolrm_rl.core.calls: the one representation of tool catalogs and calls, and its adapters."""

from __future__ import annotations

import copy
import doctest
import importlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolrm_rl.core.calls import (
    BFCL_TO_JSON_TYPE,
    CatalogError,
    ToolCall,
    ToolCatalog,
    ToolSpec,
    calls_from_bfcl,
    calls_from_openai,
    calls_to_bfcl,
    calls_to_openai,
    load_json_field,
)

WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 1}},
    "required": ["city"],
}
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": WEATHER_PARAMS}},
    {"type": "function", "function": {"name": "now", "description": "Time."}},  # no parameters
]
PLAIN_DOCS = [
    {"name": "get_weather", "description": "Weather.", "parameters": WEATHER_PARAMS},
    {"name": "now", "description": "Time."},
]
BFCL_DOC = {
    "name": "geometry.area",
    "description": "Area of a shape.",
    "parameters": {
        "type": "dict",
        "properties": {
            "base": {"type": "float", "description": "Base length."},
            "dims": {"type": "tuple", "items": {"type": "integer"}},
            "opts": {"type": "dict", "properties": {"unit": {"type": "String"}, "scale": {"type": "double"}}},
            "tags": {"type": "ArrayList", "items": {"type": "dict", "properties": {"k": {"type": "any"}}}},
            "extra": {"type": "any"},
            "meta": {"type": "HashMap", "additionalProperties": {"type": "long"}},
            "flag": {"type": "Boolean", "enum": [True, False]},
        },
        "required": ["base", "dims"],
    },
}


# -- ToolCall ---------------------------------------------------------------------------------------

class TestToolCall:
    def test_defaults_and_equality(self):
        assert ToolCall("f") == ToolCall("f", {})
        assert ToolCall("f", {"a": 1}) != ToolCall("f", {"a": 2})
        assert ToolCall("f").arguments is not ToolCall("f").arguments  # no shared mutable default

    def test_to_bfcl_copies_arguments(self):
        call = ToolCall("math.gcd", {"a": 12, "b": 4})
        out = call.to_bfcl()
        assert out == {"math.gcd": {"a": 12, "b": 4}}
        out["math.gcd"]["a"] = 0
        assert call.arguments["a"] == 12

    def test_to_openai(self):
        item = ToolCall("f", {"city": "Zürich", "n": [1, 2]}).to_openai("call_7")
        assert item == {"type": "function", "id": "call_7",
                        "function": {"name": "f", "arguments": '{"city": "Zürich", "n": [1, 2]}'}}
        assert "id" not in ToolCall("f").to_openai()


# -- catalogs ---------------------------------------------------------------------------------------

class TestCatalogLoad:
    @pytest.mark.parametrize("tools", [
        OPENAI_TOOLS, PLAIN_DOCS, json.dumps(OPENAI_TOOLS), json.dumps(PLAIN_DOCS).encode(),
    ])
    def test_openai_tools_and_plain_docs(self, tools):
        cat = ToolCatalog.load(tools)
        assert cat.names() == ["get_weather", "now"]
        weather = cat["get_weather"]
        assert weather.description == "Weather."
        assert weather.parameters == WEATHER_PARAMS
        assert weather.dialect == "json_schema"
        assert weather.required == ["city"]
        assert list(weather.properties) == ["city", "days"]
        assert cat["now"].parameters == {"type": "object", "properties": {}}
        assert cat["now"].properties == {} and cat["now"].required == []

    def test_openai_and_plain_docs_give_the_same_catalog(self):
        assert ToolCatalog.load(OPENAI_TOOLS) == ToolCatalog.load(PLAIN_DOCS)
        assert ToolCatalog.load(OPENAI_TOOLS) != ToolCatalog.load(PLAIN_DOCS[:1])

    def test_bfcl_docs(self):
        cat = ToolCatalog.load([BFCL_DOC])
        spec = cat["geometry.area"]
        assert spec.dialect == "bfcl"
        assert spec.parameters == BFCL_DOC["parameters"]  # kept as given: the BFCL matcher needs the type names
        assert spec.required == ["base", "dims"]

    @pytest.mark.parametrize("prop_type", ["float", "tuple", "any", "String", "HashMap", "long", "Bigint"])
    def test_bfcl_dialect_detected_from_property_types(self, prop_type):
        doc = {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": prop_type}}}}
        assert ToolCatalog.load([doc])["f"].dialect == "bfcl"

    def test_json_schema_list_type_is_accepted(self):
        doc = {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": ["string", "null"]}}}}
        spec = ToolCatalog.load([doc])["f"]
        assert spec.dialect == "json_schema"
        assert spec.json_schema()["properties"]["x"] == {"type": ["string", "null"]}

    def test_single_dict(self):
        assert ToolCatalog.load(OPENAI_TOOLS[0]).names() == ["get_weather"]
        assert ToolCatalog.load(BFCL_DOC).names() == ["geometry.area"]

    def test_input_schema_and_missing_description(self):
        cat = ToolCatalog.load([{"name": "f", "input_schema": WEATHER_PARAMS, "description": None}])
        assert cat["f"].parameters == WEATHER_PARAMS and cat["f"].description == ""

    @pytest.mark.parametrize("empty", [None, "", "  ", [], "[]"])
    def test_empty(self, empty):
        cat = ToolCatalog.load(empty)
        assert len(cat) == 0 and cat.names() == [] and cat.to_openai() == []

    def test_catalog_passes_through(self):
        cat = ToolCatalog.load(PLAIN_DOCS)
        assert ToolCatalog.load(cat) is cat

    def test_access(self):
        cat = ToolCatalog.load(PLAIN_DOCS)
        assert "now" in cat and "later" not in cat
        assert cat.get("later") is None and cat.get("now") is cat["now"]
        with pytest.raises(KeyError):
            cat["later"]
        assert [s.name for s in cat] == ["get_weather", "now"] and len(cat) == 2
        assert repr(cat) == "ToolCatalog(['get_weather', 'now'])"

    @pytest.mark.parametrize("tools, where", [
        (5, "tools: expected a list"),
        ("[{\"name\": \"f\"", "tools: not valid JSON"),
        ([{"name": "f"}, "g"], "tools[1]: expected an object, got str"),
        ([{"description": "no name"}], "tools[0].name"),
        ([{"name": "f"}, {"name": ""}], "tools[1].name"),
        ([{"type": "function", "function": {"name": 3}}], "tools[0].function.name"),
        ([{"name": "f", "parameters": [1]}], "tools[0].parameters: expected an object, got list"),
        ([{"name": "f"}, {"name": "g", "parameters": {"properties": ["x"]}}], "tools[1].parameters.properties"),
        ([{"type": "function", "function": {"name": "f", "parameters": "x"}}], "tools[0].function.parameters"),
    ])
    def test_bad_input_names_index_and_field(self, tools, where):
        with pytest.raises(CatalogError) as info:
            ToolCatalog.load(tools)
        assert str(info.value).startswith(where), str(info.value)
        assert isinstance(info.value, ValueError)


class TestJsonSchema:
    def test_bfcl_types_converted(self):
        schema = ToolCatalog.load([BFCL_DOC])["geometry.area"].json_schema()
        assert schema == {
            "type": "object",
            "properties": {
                "base": {"type": "number", "description": "Base length."},
                "dims": {"type": "array", "items": {"type": "integer"}},
                "opts": {"type": "object", "properties": {"unit": {"type": "string"}, "scale": {"type": "number"}}},
                "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
                "extra": {"type": "string"},
                "meta": {"type": "object", "additionalProperties": {"type": "integer"}},
                "flag": {"type": "boolean", "enum": [True, False]},
            },
            "required": ["base", "dims"],
        }

    def test_source_parameters_untouched(self):
        doc = copy.deepcopy(BFCL_DOC)
        spec = ToolCatalog.load([doc])["geometry.area"]
        schema = spec.json_schema()
        schema["properties"]["opts"]["properties"]["unit"]["type"] = "changed"
        schema["required"].append("x")
        assert spec.parameters == BFCL_DOC["parameters"]
        assert spec.to_dict() == BFCL_DOC

    def test_json_schema_passes_through(self):
        assert ToolCatalog.load(PLAIN_DOCS)["get_weather"].json_schema() == WEATHER_PARAMS

    def test_top_level_is_always_an_object(self):
        assert ToolSpec("f", parameters={"properties": {"a": {"type": "int"}}}).json_schema() == {
            "properties": {"a": {"type": "integer"}}, "type": "object",
        }
        assert ToolSpec("f").json_schema() == {"type": "object", "properties": {}}

    def test_property_named_like_a_keyword(self):
        params = {"type": "dict", "properties": {"type": {"type": "float"}, "items": {"type": "tuple"}}}
        assert ToolSpec("f", parameters=params).json_schema()["properties"] == {
            "type": {"type": "number"}, "items": {"type": "array"},
        }

    @pytest.mark.parametrize("bfcl, json_type", [
        ("dict", "object"), ("float", "number"), ("tuple", "array"), ("any", "string"), ("double", "number"),
        ("long", "integer"), ("String", "string"), ("ArrayList", "array"), ("HashMap", "object"),
        ("Boolean", "boolean"), ("Bigint", "integer"), ("char", "string"),
    ])
    def test_type_table(self, bfcl, json_type):
        assert BFCL_TO_JSON_TYPE[bfcl] == json_type

    def test_to_openai_shape(self):
        cat = ToolCatalog.load([BFCL_DOC, PLAIN_DOCS[0]])
        tools = cat.to_openai()
        assert [t["type"] for t in tools] == ["function", "function"]
        fn = tools[0]["function"]
        assert set(fn) == {"name", "description", "parameters"}
        assert fn["name"] == "geometry.area" and fn["description"] == "Area of a shape."
        assert fn["parameters"]["type"] == "object" and fn["parameters"]["properties"]["base"]["type"] == "number"
        assert tools[1]["function"]["parameters"] == WEATHER_PARAMS
        reloaded = ToolCatalog.load(tools)  # the OpenAI view reads back as standard JSON schema
        assert reloaded.names() == cat.names()
        assert reloaded["geometry.area"].dialect == "json_schema"
        assert reloaded["geometry.area"].parameters == cat["geometry.area"].json_schema()

    def test_to_dicts_keeps_parameters_as_given(self):
        assert ToolCatalog.load([BFCL_DOC] + PLAIN_DOCS[:1]).to_dicts() == [BFCL_DOC, PLAIN_DOCS[0]]
        # plain docs round trip through to_dicts
        cat = ToolCatalog.load([BFCL_DOC] + PLAIN_DOCS)
        assert ToolCatalog.load(cat.to_dicts()) == cat

    def test_json_schema_is_valid_for_jsonschema(self):
        jsonschema = pytest.importorskip("jsonschema")
        schema = ToolCatalog.load([BFCL_DOC])["geometry.area"].json_schema()
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate({"base": 1.5, "dims": [1, 2], "opts": {"unit": "m"}}, schema)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"base": "wide", "dims": [1]}, schema)


# -- call adapters -----------------------------------------------------------------------------

CALLS = [ToolCall("math.gcd", {"a": 12, "b": 4}), ToolCall("now", {}), ToolCall("math.gcd", {"a": 1, "b": 2})]


class TestCallAdapters:

    @pytest.mark.parametrize("items", [
        [{"math.gcd": {"a": 12, "b": 4}}, {"now": {}}, {"math.gcd": {"a": 1, "b": 2}}],
        '[{"math.gcd": {"a": 12, "b": 4}}, {"now": {}}, {"math.gcd": {"a": 1, "b": 2}}]',
        [{"math.gcd": {"a": 12, "b": 4}, "now": {}}, {"math.gcd": {"a": 1, "b": 2}}],
        [{"name": "math.gcd", "arguments": {"a": 12, "b": 4}}, {"name": "now", "arguments": None},
         {"name": "math.gcd", "parameters": '{"a": 1, "b": 2}'}],
    ])
    def test_calls_from_bfcl(self, items):
        assert calls_from_bfcl(items) == CALLS

    def test_calls_from_bfcl_single_dict_and_empty(self):
        assert calls_from_bfcl({"f": {"a": 1}, "g": {}}) == [ToolCall("f", {"a": 1}), ToolCall("g", {})]
        assert calls_from_bfcl(None) == [] and calls_from_bfcl("") == [] and calls_from_bfcl([]) == []

    def test_function_named_name_is_a_bfcl_call(self):
        assert calls_from_bfcl([{"name": {"x": 1}}]) == [ToolCall("name", {"x": 1})]

    @pytest.mark.parametrize("items, where", [
        (5, "calls: expected a list"),
        ("[{", "calls: not valid JSON"),
        (["f"], "calls[0]"),
        ([{"f": {}}, {}], "calls[1]"),
        ([{"f": [1, 2]}], "calls[0].f: arguments must be an object"),
        ([{"name": "f", "arguments": [1]}], "calls[0].arguments"),
        ([{"name": "f", "arguments": "{bad"}], "calls[0].arguments: not valid JSON"),
    ])
    def test_calls_from_bfcl_errors(self, items, where):
        with pytest.raises(CatalogError) as info:
            calls_from_bfcl(items)
        assert str(info.value).startswith(where), str(info.value)

    def test_calls_to_bfcl(self):
        assert calls_to_bfcl(CALLS) == [
            {"math.gcd": {"a": 12, "b": 4}}, {"now": {}}, {"math.gcd": {"a": 1, "b": 2}},
        ]
        assert calls_from_bfcl(calls_to_bfcl(CALLS)) == CALLS
        assert calls_from_bfcl(json.dumps(calls_to_bfcl(CALLS))) == CALLS

    def test_calls_from_openai(self):
        tool_calls = [
            {"id": "a", "type": "function", "function": {"name": "math.gcd", "arguments": '{"a": 12, "b": 4}'}},
            {"function": {"name": "now", "arguments": ""}},
            {"name": "math.gcd", "arguments": {"a": 1, "b": 2}},  # flat item
        ]
        assert calls_from_openai(tool_calls) == CALLS
        assert calls_from_openai(json.dumps(tool_calls)) == CALLS
        assert calls_from_openai(None) == [] and calls_from_openai("") == []

    @pytest.mark.parametrize("tool_calls, where", [
        ({"function": {}}, "tool_calls: expected a list"),
        (["x"], "tool_calls[0].function.name"),
        ([{"function": {"name": "f"}}, {"function": {"arguments": "{}"}}], "tool_calls[1].function.name"),
        ([{"function": {"name": "f", "arguments": "[1]"}}], "tool_calls[0].function.arguments: expected an object"),
        ([{"function": {"name": "f", "arguments": "{x"}}], "tool_calls[0].function.arguments: not valid JSON"),
    ])
    def test_calls_from_openai_errors(self, tool_calls, where):
        with pytest.raises(CatalogError) as info:
            calls_from_openai(tool_calls)
        assert str(info.value).startswith(where), str(info.value)

    def test_calls_to_openai(self):
        items = calls_to_openai(CALLS)
        assert [i["id"] for i in items] == ["call_0", "call_1", "call_2"]
        assert items[1] == {"type": "function", "id": "call_1", "function": {"name": "now", "arguments": "{}"}}
        assert calls_from_openai(items) == CALLS
        assert calls_from_openai(json.dumps(items)) == CALLS

    def test_load_json_field(self):
        assert load_json_field('{"a": 1}', "x") == {"a": 1}
        assert load_json_field(b"[1]", "x") == [1]
        assert load_json_field({"a": 1}, "x") == {"a": 1}
        assert load_json_field(" ", "x") is None
        with pytest.raises(CatalogError, match=r"^my_field: not valid JSON"):
            load_json_field("{", "my_field")


# -- property-based --------------------------------------------------------------------------

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
call_lists = st.lists(
    st.builds(
        ToolCall, st.text(min_size=1, max_size=10), st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    ),
    max_size=3,
)


@PROPS
@given(call_lists)
def test_call_adapters_round_trip(calls):
    assert calls_from_bfcl(calls_to_bfcl(calls)) == calls
    assert calls_from_bfcl(json.dumps(calls_to_bfcl(calls))) == calls
    assert calls_from_openai(calls_to_openai(calls)) == calls
    assert calls_from_openai(json.dumps(calls_to_openai(calls))) == calls


@PROPS
@given(json_values | st.lists(st.dictionaries(st.sampled_from(["name", "type", "function", "parameters",
                                                                "description", "properties"]), json_values),
                                max_size=3))
def test_catalog_and_call_loading_only_raise_catalog_error(value):
    """Any JSON (decoded or as text) either loads or raises CatalogError, never anything else."""
    for candidate in (value, json.dumps(value)):
        for load in (ToolCatalog.load, calls_from_bfcl, calls_from_openai):
            try:
                out = load(candidate)
            except CatalogError as err:
                assert str(err)
                continue
            if isinstance(out, ToolCatalog):
                out.to_openai(), out.to_dicts()
                assert all(isinstance(s, ToolSpec) and s.name for s in out)
            else:
                assert all(isinstance(c, ToolCall) and isinstance(c.arguments, dict) for c in out)


# -- doctests -------------------------------------------------------------------------------------

def test_doctests():
    result = doctest.testmod(importlib.import_module("toolrm_rl.core.calls"))
    assert result.attempted > 0
    assert result.failed == 0


def test_calls_from_any_one_rule_for_openai_bfcl_and_flat_lists():
    from toolrm_rl.core.calls import calls_from_any

    want = [ToolCall("f", {"a": 1}), ToolCall("g", {})]
    openai = [{"id": "c0", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
              {"function": {"name": "g", "arguments": {}}}]
    assert calls_from_any(openai) == calls_from_any(json.dumps(openai)) == want
    assert calls_from_any([{"f": {"a": 1}}, {"g": {}}]) == calls_from_any({"f": {"a": 1}, "g": {}}) == want
    # the flat form goes with either style; the first item does not decide
    assert calls_from_any([{"name": "f", "arguments": {"a": 1}}, openai[1]]) == want
    assert calls_from_any([]) == calls_from_any(None) == []
    for mixed, bad in (([openai[0], {"g": {}}], 1), ([{"g": {}}, openai[0]], 0)):
        with pytest.raises(CatalogError, match=rf"calls\[{bad}\]: a BFCL-style call"):
            calls_from_any(mixed)
