"""Tests for toolrm_rl.core.schema: rule checks of tool calls against the catalog."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolrm_rl.core import schema as schema_mod
from toolrm_rl.core.calls import CatalogError, ToolCall, ToolCatalog
from toolrm_rl.core.schema import (
    BFCL_FAMILY,
    CATEGORIES,
    SchemaReport,
    Violation,
    check_calls,
    compile_catalog,
)

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def catalog(properties: dict, required: list | None = None, name: str = "f", type_: str = "object") -> ToolCatalog:
    params = {"type": type_, "properties": properties}
    if required is not None:
        params["required"] = required
    return ToolCatalog.load([{"name": name, "parameters": params}])


def check_one(properties: dict, args: dict, required: list | None = None, **kwargs) -> SchemaReport:
    return check_calls([ToolCall("f", args)], catalog(properties, required), **kwargs)


def compiled(cat: ToolCatalog, name: str = "f"):
    """The compiled checker of ``name`` (compiled on first use, eagerly or lazily)."""
    check_calls([ToolCall(name, {})], cat)
    return compile_catalog(cat)[name]


WEATHER = ToolCatalog.load([
    {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "coords": {"type": "array", "items": {"type": "number"}},
        "opts": {"type": "object", "properties": {"lang": {"type": "string"}, "hourly": {"type": "boolean"}},
                 "required": ["lang"]},
    }, "required": ["city"]}},
    {"name": "now", "parameters": {"type": "object", "properties": {}}},
])


# -- violation categories ------------------------------------------------------------------------------

class TestCategories:
    def test_valid_calls(self):
        calls = [ToolCall("get_weather", {"city": "Paris", "days": 3, "unit": "celsius", "coords": [48.8, 2],
                                          "opts": {"lang": "fr", "hourly": True}}),
                 ToolCall("now", {})]
        report = check_calls(calls, WEATHER)
        assert report.ok and report.violations == [] and report.categories == []
        assert report.n_calls == 2
        assert report.summary() == "ok"

    def test_unknown_function(self):
        report = check_calls([ToolCall("now", {}), ToolCall("get_forecast", {"city": "Paris"})], WEATHER)
        assert not report.ok
        assert report.violations == [Violation(1, "get_forecast", None, "unknown_function",
                                               "unknown function 'get_forecast'")]

    def test_missing_required(self):
        report = check_calls([ToolCall("get_weather", {"days": 2})], WEATHER)
        assert [(v.category, v.param) for v in report.violations] == [("missing_required", "city")]

    def test_unexpected_param(self):
        report = check_calls([ToolCall("get_weather", {"city": "Paris", "country": "FR"})], WEATHER)
        assert [(v.category, v.param) for v in report.violations] == [("unexpected_param", "country")]
        assert "country" in report.violations[0].message

    def test_type(self):
        report = check_calls([ToolCall("get_weather", {"city": "Paris", "days": "3"})], WEATHER)
        (v,) = report.violations
        assert (v.category, v.param, v.function, v.call_index) == ("type", "days", "get_weather", 0)
        assert "expected integer, got str" in v.message

    def test_nested_type_in_array_items(self):
        report = check_calls([ToolCall("get_weather", {"city": "Paris", "coords": [48.8, "2.3", 1, True]})], WEATHER)
        assert [(v.category, v.param) for v in report.violations] == [
            ("nested_type", "coords[1]"), ("nested_type", "coords[3]")]

    def test_nested_type_in_object_properties(self):
        report = check_calls([ToolCall("get_weather", {"city": "Paris", "opts": {"lang": "fr", "hourly": "yes"}})],
                             WEATHER)
        assert [(v.category, v.param) for v in report.violations] == [("nested_type", "opts.hourly")]

    def test_missing_required_key_of_nested_object(self):
        report = check_calls([ToolCall("get_weather", {"city": "Paris", "opts": {"hourly": False}})], WEATHER)
        assert [(v.category, v.param) for v in report.violations] == [("missing_required", "opts.lang")]

    def test_nested_required_without_properties(self):
        # ``required`` applies to an object whether or not the schema also lists ``properties``.
        props = {"o": {"type": "object", "required": ["k"]}}
        assert [(v.category, v.param) for v in check_one(props, {"o": {}}).violations] == [("missing_required", "o.k")]
        assert check_one(props, {"o": {"k": None, "extra": 1}}).ok

    def test_enum(self):
        report = check_calls([ToolCall("get_weather", {"city": "Paris", "unit": "kelvin"})], WEATHER)
        (v,) = report.violations
        assert (v.category, v.param) == ("enum", "unit")
        assert "'kelvin' is not one of" in v.message

    def test_enum_with_unhashable_value(self):
        report = check_one({"u": {"enum": ["a", "b"]}}, {"u": ["a"]})
        assert report.categories == ["enum"]

    def test_enum_keeps_bool_and_number_apart(self):
        # JSON schema: true is not 1 and 0 is not false (Python's ``True == 1`` must not leak in).
        props = {"x": {"enum": [1, "a"]}, "y": {"enum": [False]}, "z": {"type": "array", "items": {"enum": [[0, 1]]}}}
        assert check_one(props, {"x": 1, "y": False, "z": [[0, 1]]}).ok
        assert check_one(props, {"x": 1.0}).ok  # 1 == 1.0 in JSON schema too
        report = check_one(props, {"x": True, "y": 0, "z": [[False, True]]})
        assert [(v.category, v.param) for v in report.violations] == [("enum", "x"), ("enum", "y"), ("enum", "z[0]")]

    @pytest.mark.parametrize("prop, good, bad, keyword", [
        ({"type": "integer", "minimum": 1}, 1, 0, "minimum"),
        ({"type": "string", "pattern": "^[A-Z]{3}$"}, "EUR", "eur", "pattern"),
        ({"type": "array", "items": {"type": "string"}, "maxItems": 2}, ["a", "b"], ["a", "b", "c"], "maxItems"),
        ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, 3, 2.5, "anyOf"),
    ])
    def test_constraint_through_jsonschema(self, prop, good, bad, keyword):
        cat = catalog({"x": prop})
        assert compiled(cat).validator is not None  # the schema needs jsonschema
        assert check_calls([ToolCall("f", {"x": good})], cat).ok
        report = check_calls([ToolCall("f", {"x": bad})], cat)
        (v,) = report.violations
        assert (v.category, v.param) == ("constraint", "x")
        assert v.bfcl_error_type == "value_error:others"

    def test_constraint_is_not_duplicated_when_the_fast_path_already_failed(self):
        cat = catalog({"x": {"type": "integer", "minimum": 1}})
        report = check_calls([ToolCall("f", {"x": "zero"})], cat)
        assert report.categories == ["type"]  # jsonschema's own type error is not reported twice

    def test_fast_path_schemas_do_not_build_a_jsonschema_validator(self):
        assert compiled(WEATHER, "get_weather").validator is None

    def test_no_call(self):
        assert check_calls([], WEATHER).ok
        report = check_calls([], WEATHER, allow_no_call=False)
        assert report.n_calls == 0
        assert report.violations == [Violation(0, "", None, "no_call", "no tool call where one was required")]
        assert report.violations[0].bfcl_error_type == "simple_function_checker:wrong_count"

    def test_report_follows_argument_order(self):
        props = {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}}
        report = check_one(props, {"c": 1, "zz": 0, "a": "x", "b": 2})
        assert [(v.category, v.param) for v in report.violations] == [
            ("type", "c"), ("unexpected_param", "zz"), ("type", "a"), ("type", "b")]

    def test_missing_required_comes_first_in_schema_order(self):
        props = {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}}
        report = check_one(props, {"c": "x"}, required=["b", "a"])
        assert [(v.category, v.param) for v in report.violations] == [
            ("missing_required", "b"), ("missing_required", "a"), ("type", "c")]

    def test_several_violations_across_calls(self):
        calls = [ToolCall("get_weather", {"days": 1.5, "unit": "K", "coords": ["x"], "extra": 1}),
                 ToolCall("nope", {}),
                 ToolCall("now", {"x": 1})]
        report = check_calls(calls, WEATHER)
        assert [(v.call_index, v.category, v.param) for v in report.violations] == [
            (0, "missing_required", "city"), (0, "type", "days"), (0, "enum", "unit"),
            (0, "nested_type", "coords[0]"), (0, "unexpected_param", "extra"),
            (1, "unknown_function", None), (2, "unexpected_param", "x")]
        assert report.categories == ["missing_required", "type", "enum", "nested_type", "unexpected_param",
                                     "unknown_function"]
        summary = report.summary()
        assert "\n" not in summary and summary.count("; ") == len(report.violations) - 1
        parts = summary.split("; ")
        for part, v in zip(parts, report.violations):  # one part per violation, in report order
            assert part.startswith(f"[{v.call_index}] ") and part.endswith(v.message)
        assert "get_weather" in parts[0] and "missing required parameter 'city'" in parts[0]
        assert "unknown function 'nope'" in parts[5]

    def test_bfcl_error_type_mapping(self):
        assert set(CATEGORIES) == set(BFCL_FAMILY)
        expected = {
            "unknown_function": "simple_function_checker:wrong_func_name",
            "missing_required": "simple_function_checker:missing_required",
            "unexpected_param": "simple_function_checker:unexpected_param",
            "type": "type_error:simple",
            "nested_type": "type_error:nested",
            "enum": "value_error:others",
            "constraint": "value_error:others",
            "no_call": "simple_function_checker:wrong_count",
        }
        assert BFCL_FAMILY == expected
        for category, family in expected.items():
            assert Violation(0, "f", None, category, "m").bfcl_error_type == family

    def test_non_dict_arguments_are_treated_as_empty(self):
        report = check_calls([ToolCall("get_weather", None)], WEATHER)  # type: ignore[arg-type]
        assert report.categories == ["missing_required"]

    def test_doctest_example(self):
        cat = ToolCatalog.load([{"name": "f", "parameters": {"type": "object",
                                 "properties": {"n": {"type": "integer"}}, "required": ["n"]}}])
        assert check_calls([ToolCall("f", {"n": "3", "m": 1})], cat).categories == ["type", "unexpected_param"]


# -- types ---------------------------------------------------------------------------------------------

def _type_ok(type_: object, value: object) -> bool:
    return check_one({"x": {"type": type_}}, {"x": value}, required=["x"]).ok


class TestTypes:
    @pytest.mark.parametrize("type_, accepted, rejected", [
        ("string", ["", "a"], [1, None, True, ["a"]]),
        ("integer", [0, -5, 10**30], [True, False, 1.0, 1.5, "1", None]),
        ("number", [1, 1.5, -0.0], [True, "1.5", None, [1]]),
        ("boolean", [True, False], [0, 1, "true", None]),
        ("array", [[], [1, "a"], (1, 2)], [{}, "[]", None]),
        ("object", [{}, {"a": 1}], [[], "{}", None]),
        ("null", [None], [0, "", False]),
        # BFCL dialect
        ("float", [1.5, 2, -3], [True, False, "1.5", None]),
        ("double", [1.5, 2], [True, "1.5"]),
        ("int", [3], [3.0, True]),
        ("long", [3], [3.5, False]),
        ("tuple", [(1, 2), [1, 2], ()], ["(1, 2)", {}]),
        ("dict", [{}, {"k": [1]}], [[], "x"]),
        ("HashMap", [{}], [[]]),
        ("ArrayList", [[1]], [{}]),
        ("String", ["s"], [1]),
        ("Boolean", [True], [1]),
        ("bool", [False], [0]),
        ("str", ["s"], [1]),
        ("any", ["s", 1, None, [1], {"a": 1}, True], []),
        ("Any", [1.5], []),
        # JSON-schema type lists
        (["string", "null"], ["s", None], [1, False, []]),
        (["integer", "boolean"], [1, True], [1.5, "1"]),
        (["number", "string"], [1, 1.5, "x"], [True, None]),
        # type names we do not know are not ours to reject
        ("Widget", [1, "s", None, {}], []),
        (["string", "Widget"], [1, None], []),
        (None, [1, "s", None], []),
    ])
    def test_type_table(self, type_, accepted, rejected):
        for value in accepted:
            assert _type_ok(type_, value), (type_, value)
        for value in rejected:
            report = check_one({"x": {"type": type_}}, {"x": value}, required=["x"])
            assert report.categories == ["type"], (type_, value, report.summary())

    def test_null_means_not_set_for_optional_parameters_only(self):
        props = {"x": {"type": "integer"}, "y": {"type": "string", "enum": ["a"]},
                 "z": {"type": "object", "properties": {"k": {"type": "integer", "default": None},
                                                        "n": {"type": "integer", "nullable": True},
                                                        "m": {"type": "integer"}}}}
        assert check_one(props, {"x": 1, "y": None, "z": None}, required=["x"]).ok
        report = check_one(props, {"x": None}, required=["x"])
        assert [(v.category, v.param) for v in report.violations] == [("type", "x")]
        # nested: null only where the schema's default is null or it is declared nullable
        assert check_one(props, {"z": {"k": None, "n": None}}).ok
        report = check_one(props, {"z": {"m": None}})
        assert [(v.category, v.param) for v in report.violations] == [("nested_type", "z.m")]

    def test_float_message_names_type(self):
        (v,) = check_one({"x": {"type": "float"}}, {"x": True}).violations
        assert v.message.endswith("x: expected float, got bool (True)")

    def test_nested_bfcl_types(self):
        props = {"pairs": {"type": "tuple", "items": {"type": "float"}},
                 "m": {"type": "dict", "properties": {"n": {"type": "integer"}}}}
        assert check_one(props, {"pairs": (1, 2.5), "m": {"n": 3}}).ok
        report = check_one(props, {"pairs": (1, True), "m": {"n": 3.0}})
        assert [(v.category, v.param) for v in report.violations] == [("nested_type", "pairs[1]"),
                                                                    ("nested_type", "m.n")]

    def test_deeply_nested(self):
        props = {"grid": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}}
        assert check_one(props, {"grid": [[1, 2], [], [3]]}).ok
        report = check_one(props, {"grid": [[1, 2], "row", [3, "4"]]})
        assert [(v.category, v.param) for v in report.violations] == [("nested_type", "grid[1]"),
                                                                    ("nested_type", "grid[2][1]")]

    @pytest.mark.parametrize("language", ["java", "javascript"])
    def test_source_literal_strings_in_java_and_javascript(self, language):
        cat = ToolCatalog.load([{"name": "Util.run", "parameters": {"type": "dict", "properties": {
            "n": {"type": "long" if language == "java" else "Bigint"},
            "xs": {"type": "ArrayList" if language == "java" else "array", "items": {"type": "integer"}},
            "flag": {"type": "boolean" if language == "java" else "Boolean"},
            "mode": {"type": "String", "enum": ["fast", "slow"]},
        }, "required": ["n"]}}])
        literals = {"n": "5L" if language == "java" else "5n",
                    "xs": "new ArrayList<>(Arrays.asList(1, 2))" if language == "java" else "[1, 2]",
                    "flag": "true", "mode": '"fast"'}
        assert check_calls([ToolCall("Util.run", literals)], cat, language=language).ok
        # the same strings are type errors for a Python caller (the enum literal is not checked as text)
        report = check_calls([ToolCall("Util.run", literals)], cat)
        assert [(v.category, v.param) for v in report.violations] == [("type", "n"), ("type", "xs"), ("type", "flag"),
                                                                    ("enum", "mode")]
        # a value that is not a source literal is a type error whatever its type (BFCL: type_error:java/js,
        # the decoded value included); names are still checked; null still means "not set" for an optional one
        report = check_calls([ToolCall("Util.run", {"n": 5, "xs": [1], "flag": True, "mode": None})], cat,
                             language=language)
        assert [(v.category, v.param) for v in report.violations] == [("type", "n"), ("type", "xs"), ("type", "flag")]
        assert "source literal" in report.violations[0].message
        report = check_calls([ToolCall("Util.run", {"n": [5], "xs": "[1, 2.5]", "bad": "1"})], cat, language=language)
        assert [(v.category, v.param) for v in report.violations] == [("type", "n"), ("unexpected_param", "bad")]
        report = check_calls([ToolCall("Util.run", {})], cat, language=language)
        assert report.categories == ["missing_required"]

    def test_literal_strings_skip_jsonschema_constraints(self):
        cat = catalog({"n": {"type": "integer", "minimum": 10}})
        assert check_calls([ToolCall("f", {"n": "3"})], cat, language="java").ok
        assert check_calls([ToolCall("f", {"n": 3})], cat).categories == ["constraint"]


# -- caching -------------------------------------------------------------------------------------------

class TestCaching:
    def test_compiled_checkers_are_cached_on_the_catalog(self, monkeypatch):
        cat = catalog({"x": {"type": "integer"}})
        assert getattr(cat, "_compiled", None) is None
        built = []
        real = schema_mod._CompiledSpec

        def counting(spec):
            built.append(spec.name)
            return real(spec)

        monkeypatch.setattr(schema_mod, "_CompiledSpec", counting)
        assert check_calls([ToolCall("f", {"x": 1})], cat).ok
        first, checker = cat._compiled, cat._compiled["f"]
        assert built == ["f"]
        assert not check_calls([ToolCall("f", {"x": "1"})], cat).ok
        assert cat._compiled is first and compile_catalog(cat) is first and first["f"] is checker
        assert built == ["f"]  # the second check did not rebuild

    def test_raw_tools_are_loaded(self):
        tools = [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}]
        assert check_calls([ToolCall("f", {"x": 1})], tools).ok
        assert check_calls([ToolCall("f", {"x": 1})], json.dumps(tools)).ok
        assert check_calls([ToolCall("f", {"x": "1"})], tools).categories == ["type"]


# -- robustness ----------------------------------------------------------------------------------------

class TestBrokenSchemas:
    @pytest.mark.parametrize("params", [
        {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}},
        {"type": "object", "properties": {"a": {"$ref": "http://example.invalid/schema.json"}}},
        {"type": "object", "$schema": 5, "minimum": 1, "properties": {"a": {}}},
        {"type": "object", "properties": {"a": {"minimum": "one"}}},
        {"type": "object", "properties": {"a": {"pattern": "("}}},
        {"type": "object", "properties": {"a": {"type": {"nested": "nonsense"}, "items": 3, "enum": "x"}}},
    ])
    def test_unusable_schema_keywords_do_not_raise(self, params):
        cat = ToolCatalog.load([{"name": "f", "parameters": params}])
        for value in (1, "s", None, [1], {"k": 1}):
            report = check_calls([ToolCall("f", {"a": value})], cat)
            assert all(v.category == "constraint" for v in report.violations)  # judged by the fast path only

    def test_resolvable_ref_is_validated(self):
        params = {"type": "object", "$defs": {"pos": {"type": "integer", "minimum": 1}},
                  "properties": {"a": {"$ref": "#/$defs/pos"}}}
        cat = ToolCatalog.load([{"name": "f", "parameters": params}])
        assert check_calls([ToolCall("f", {"a": 2})], cat).ok
        assert check_calls([ToolCall("f", {"a": 0})], cat).categories == ["constraint"]


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)
# Anything goes in a malformed catalog: keyword names drawn from the ones the checker reads (and a few
# jsonschema keywords) so the interesting code paths are actually reached.
SCHEMA_KEYS = st.sampled_from(["type", "properties", "required", "items", "enum", "minimum", "pattern", "anyOf",
                               "maxItems", "$ref", "$schema", "description", "additionalProperties", "x"])
TYPE_NAMES = st.sampled_from(["string", "integer", "number", "boolean", "array", "object", "null", "float", "tuple",
                              "dict", "any", "long", "HashMap", "Widget"])
MALFORMED_SCHEMA = st.recursive(
    JSON_SCALARS | TYPE_NAMES | st.lists(TYPE_NAMES, max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SCHEMA_KEYS | st.text(max_size=4), inner, max_size=5),
    max_leaves=16)
MALFORMED_ITEM = st.fixed_dictionaries({"name": st.sampled_from(["f", "g", ""]) | JSON_SCALARS},
                                       optional={"parameters": MALFORMED_SCHEMA | st.fixed_dictionaries(
                                           {"type": st.just("object"),
                                            "properties": st.dictionaries(st.sampled_from("abc"), MALFORMED_SCHEMA,
                                                                          max_size=3)},
                                           optional={"required": st.lists(st.sampled_from("abcd") | JSON_SCALARS,
                                                                          max_size=3)}),
                                                 "type": st.just("function") | JSON_SCALARS,
                                                 "description": JSON_VALUES})
MALFORMED_TOOLS = st.lists(MALFORMED_ITEM, max_size=3) | JSON_VALUES | st.text(max_size=10) | MALFORMED_ITEM


class TestNeverRaises:
    @PROPERTY_SETTINGS
    @given(tools=MALFORMED_TOOLS, args=st.lists(st.dictionaries(st.sampled_from("abcd") | st.text(max_size=3),
                                                                JSON_VALUES, max_size=4), max_size=3),
           language=st.sampled_from(["python", "java", "javascript"]), names=st.lists(st.sampled_from(["f", "g", "h"])))
    def test_arbitrary_catalogs_and_arguments(self, tools, args, language, names):
        try:
            cat = ToolCatalog.load(copy.deepcopy(tools))
        except CatalogError:
            return  # the only error a malformed catalog may cause
        calls = [ToolCall(name, a) for name, a in zip(names or ["f"], args)]
        for _ in range(2):  # the second round runs on the cached compiled catalog
            report = check_calls(calls, cat, language=language, allow_no_call=False)
            assert isinstance(report, SchemaReport) and report.n_calls == len(calls)
            assert report.ok == (report.violations == [])
            for v in report.violations:
                assert v.category in CATEGORIES and isinstance(v.message, str) and v.bfcl_error_type
            assert isinstance(report.summary(), str)

    @PROPERTY_SETTINGS
    @given(args=st.dictionaries(st.sampled_from(["city", "days", "unit", "coords", "opts", "zz"]), JSON_VALUES,
                                max_size=6))
    def test_arbitrary_arguments_against_a_fixed_catalog(self, args):
        report = check_calls([ToolCall("get_weather", args)], WEATHER)
        missing = "city" not in args
        assert ("missing_required" in report.categories) == (missing or (
            isinstance(args.get("opts"), dict) and "lang" not in args["opts"]))
        assert ("unexpected_param" in report.categories) == ("zz" in args)


# -- differential test of the compiled fast path against jsonschema ------------------------------------

# Domain of the differential test, and why it is restricted:
# * floats are never integral: jsonschema counts 1.0 as an "integer", our checker (like BFCL and Python
#   callers) requires a real int there, a deliberate difference.
# * values are JSON (lists, never tuples): we accept a tuple for "array", jsonschema does not.
# * nesting stays below the checker's compile depth (8), beyond which the fast path stops checking.
# * a top-level null for an optional parameter means "not set" (clients and BFCL answers send it so):
#   the reference sees such parameters as omitted.
# * two documented readings of schemas as written in the wild, given to the reference as plain JSON
#   schema (``_documented_readings``): a schema's own ``default`` is always acceptable, and an enum of
#   scalars on an array lists the allowed items.
# Everything else (bools are not numbers, ``required``, ``enum`` equality, ``items``, ``properties``) must agree.
DIFF_SCALARS = (st.none() | st.booleans() | st.integers(-3, 3)
                | st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer())
                | st.sampled_from(["", "a", "b"]))
DIFF_VALUES = st.recursive(DIFF_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from("abc"), inner, max_size=3), max_leaves=8)
JSON_TYPES = st.sampled_from(["string", "integer", "number", "boolean", "array", "object"])


@st.composite
def diff_schema(draw, depth: int = 0):
    schema: dict = {}
    type_ = draw(st.none() | JSON_TYPES)
    if type_ is not None:
        schema["type"] = type_
    confusable = st.sampled_from([0, 1, True, False, 1.5, "a", None])
    if draw(st.integers(0, 2)) == 0:
        schema["enum"] = draw(st.lists(confusable | DIFF_VALUES, min_size=1, max_size=3))
    if draw(st.integers(0, 5)) == 0:
        schema["default"] = draw(confusable | DIFF_VALUES)
    if depth < 3:
        if type_ in ("array", None) and draw(st.booleans()):
            schema["items"] = draw(diff_schema(depth + 1))
        if type_ in ("object", None) and draw(st.booleans()):
            props = draw(st.dictionaries(st.sampled_from("abc"), diff_schema(depth + 1), max_size=3))
            schema["properties"] = props
        if type_ in ("object", None) and draw(st.booleans()):
            schema["required"] = draw(st.lists(st.sampled_from("abc"), max_size=2, unique=True))
    return schema


_SCALAR_OF_TYPE = {"string": st.sampled_from(["", "a", "b"]), "integer": st.integers(-2, 2),
                   "number": st.integers(-2, 2) | st.sampled_from([0.5, -1.5]), "boolean": st.booleans()}


def _confuse(value):
    """The value a careless caller might send instead: bools and 0/1 swapped (Python says True == 1)."""
    if type(value) is bool:
        return int(value)
    if type(value) is int and value in (0, 1):
        return bool(value)
    if isinstance(value, list):
        return [_confuse(v) for v in value]
    if isinstance(value, dict):
        return {k: _confuse(v) for k, v in value.items()}
    return value


@st.composite
def schema_value(draw, schema: dict):
    """A value shaped by ``schema`` (often valid, so the deep checks run), sometimes confused or random."""
    pick = draw(st.integers(0, 9))
    if pick == 0:
        return draw(DIFF_VALUES)
    enum, type_ = schema.get("enum"), schema.get("type")
    if enum and pick < 6:
        value = draw(st.sampled_from(enum))
    elif type_ == "array" or (type_ is None and "items" in schema):
        value = draw(st.lists(schema_value(schema.get("items", {})), max_size=3))
    elif type_ == "object" or (type_ is None and ("properties" in schema or "required" in schema)):
        props = schema.get("properties", {})
        keys = draw(st.lists(st.sampled_from(sorted(set(props) | set(schema.get("required", [])) | {"c"})),
                             unique=True, max_size=3))
        value = {k: draw(schema_value(props.get(k, {}))) for k in keys}
    elif type_ in _SCALAR_OF_TYPE:
        value = draw(_SCALAR_OF_TYPE[type_])
    else:
        value = draw(DIFF_SCALARS)
    return _confuse(value) if draw(st.integers(0, 3)) == 0 else value


@st.composite
def diff_case(draw):
    props = draw(st.dictionaries(st.sampled_from(["p", "q", "r"]), diff_schema(), min_size=1, max_size=3))
    required = draw(st.lists(st.sampled_from(sorted(props)), unique=True, max_size=len(props)))
    arg_lists = []
    for _ in range(4):  # several calls per schema: building the reference validator is the costly part
        names = set(draw(st.lists(st.sampled_from(["p", "q", "r", "s"]), max_size=3)))
        if draw(st.integers(0, 3)):  # mostly well-formed calls, so a single wrong value decides the verdict
            names |= set(required)
        names = sorted(names)
        arg_lists.append({name: draw(schema_value(props.get(name, {}))) for name in names})
    return props, required, arg_lists


def _documented_readings(schema):
    """``schema`` in plain JSON schema with the checker's two readings spelled out (see above)."""
    if not isinstance(schema, dict):
        return schema
    out = {k: v for k, v in schema.items() if k != "default"}
    if "properties" in out:
        out["properties"] = {k: _documented_readings(v) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _documented_readings(out["items"])
    enum = out.get("enum")
    if out.get("type") == "array" and enum and not any(isinstance(e, list) for e in enum):
        del out["enum"]
        out["items"] = {"allOf": [out.get("items", {}), {"enum": enum}]}
    if "default" in schema:
        return {"anyOf": [out, {"const": schema["default"]}]}
    return out


class TestAgainstJsonschema:
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=diff_case())
    def test_fast_path_agrees_with_jsonschema(self, case):
        props, required, arg_lists = case
        cat = catalog(props, required)
        assert compiled(cat).validator is None  # the fast path alone judges these schemas
        reference = jsonschema.Draft202012Validator(
            dict(_documented_readings(cat["f"].json_schema()), additionalProperties=False))
        for args in arg_lists:
            unset = {k for k, v in args.items() if v is None and k in props and k not in required}
            expected = reference.is_valid({k: v for k, v in args.items() if k not in unset})
            report = check_calls([ToolCall("f", args)], cat)
            assert report.ok == expected, (props, required, args, report.summary())

    @pytest.mark.parametrize("props, args, expected", [
        ({"x": {"type": "integer"}}, {"x": 1.0}, False),  # jsonschema says True: deliberate difference
        ({"x": {"type": "array"}}, {"x": (1, 2)}, True),  # jsonschema says False: tuples are arrays here
        ({"x": {"type": "number"}}, {"x": 2}, True),
        ({"x": {"type": "number"}}, {"x": False}, False),
        # a schema's own default is acceptable (BFCL's live functions declare "dontcare" on integers)
        ({"x": {"type": "integer", "default": "dontcare"}}, {"x": "dontcare"}, True),
        ({"x": {"type": "integer", "default": "dontcare"}}, {"x": "any"}, False),
        ({"x": {"type": "string", "enum": ["s", "ms"], "default": "N/A"}}, {"x": "N/A"}, True),
        ({"x": {"type": "integer", "default": 1}}, {"x": True}, False),  # a bool is not the number 1
        # an enum of scalars on an array lists the allowed items
        ({"x": {"type": "array", "items": {"type": "string"}, "enum": ["a", "b"]}}, {"x": ["b", "a"]}, True),
        ({"x": {"type": "array", "items": {"type": "string"}, "enum": ["a", "b"]}}, {"x": []}, True),
        ({"x": {"type": "array", "items": {"type": "string"}, "enum": ["a", "b"]}}, {"x": ["c"]}, False),
        ({"x": {"type": "array", "enum": [["a"], ["b"]]}}, {"x": ["a", "b"]}, False),  # an enum of arrays: as is
    ])
    def test_documented_differences(self, props, args, expected):
        assert check_one(props, args).ok is expected


def test_nested_additional_properties_false_reports_unknown_keys():
    tools = [{"name": "f", "parameters": {"type": "object", "properties": {
        "opts": {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
        "free": {"type": "object", "properties": {"a": {"type": "integer"}}}}}}]
    report = check_calls([ToolCall("f", {"opts": {"a": 1, "b": 2}, "free": {"a": 1, "b": 2}})], ToolCatalog.load(tools))
    assert [(v.category, v.param) for v in report.violations] == [("unexpected_param", "opts.b")]
