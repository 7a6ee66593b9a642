"""Tests for toolrm_rl.core.parse: text -> tool calls for every format, and tool calls -> text.

Unit tests per format, then the contract that matters for RL rewards, checked with hypothesis:
parsers never raise on any input, and ``parse(serialize(calls, f), f).calls == calls``.
"""

from __future__ import annotations

import doctest
import importlib
import json
import keyword
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolrm_rl.core.calls import ToolCall
from toolrm_rl.core.parse import (
    FORMATS,
    ParseError,
    ParseResult,
    parse,
    parse_hermes,
    parse_json,
    parse_openai_message,
    parse_pythonic,
    serialize,
    strip_thinking,
    to_hermes,
    to_json,
    to_openai_message,
    to_pythonic,
)


def C(name, **arguments):
    """Shorthand for a ToolCall."""
    return ToolCall(name, arguments)


def assert_ok(result: ParseResult, calls: list[ToolCall], fmt: str) -> None:
    assert result.error is None, result.error
    assert result.ok
    assert result.format == fmt
    assert result.calls == calls
    assert repr(result.calls) == repr(calls)  # also types (1 vs 1.0 vs True), order, tuples


def assert_error(result: ParseResult, kind: str, fmt: str) -> ParseError:
    assert not result.ok
    assert result.calls == []
    assert result.format == fmt
    assert isinstance(result.error, ParseError)
    assert result.error.kind == kind, result.error
    assert result.error.message
    return result.error


# -- hermes ---------------------------------------------------------------------------------------

class TestHermes:
    def test_single_block(self):
        text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>'
        assert_ok(parse_hermes(text), [C("get_weather", city="Paris", days=3)], "hermes")

    def test_several_blocks_are_parallel_calls_in_order(self):
        text = (
            'Let me check both.\n'
            '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>\n'
            '<tool_call>{"name": "g", "arguments": {}}</tool_call>\n'
            '<tool_call>{"name": "f", "arguments": {"a": 2}}</tool_call>'
        )
        assert_ok(parse_hermes(text), [C("f", a=1), C("g"), C("f", a=2)], "hermes")

    def test_parameters_accepted_for_arguments(self):
        text = '<tool_call>{"name": "f", "parameters": {"x": [1, 2]}}</tool_call>'
        assert_ok(parse_hermes(text), [C("f", x=[1, 2])], "hermes")

    @pytest.mark.parametrize("args, expected", [
        ('"{\\"a\\": 1, \\"b\\": \\"x\\"}"', {"a": 1, "b": "x"}),  # arguments as a JSON string
        ('""', {}),
        ("null", {}),
    ])
    def test_arguments_as_json_string_or_empty(self, args, expected):
        text = f'<tool_call>{{"name": "f", "arguments": {args}}}</tool_call>'
        assert_ok(parse_hermes(text), [ToolCall("f", expected)], "hermes")

    def test_missing_arguments_means_no_arguments(self):
        assert_ok(parse_hermes('<tool_call>{"name": "f"}</tool_call>'), [C("f")], "hermes")

    def test_list_inside_one_block(self):
        text = '<tool_call>[{"name": "f", "arguments": {}}, {"g": {"b": 2}}]</tool_call>'
        assert_ok(parse_hermes(text), [C("f"), C("g", b=2)], "hermes")

    def test_unclosed_block_with_complete_json_is_read(self):
        # vLLM stop sequences often eat the closing tag
        text = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n'
        assert_ok(parse_hermes(text), [C("f", a=1)], "hermes")

    def test_unclosed_block_with_truncated_json_is_unclosed_tag(self):
        text = '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>\n<tool_call>{"name": "g", "argu'
        err = assert_error(parse_hermes(text), "unclosed_tag", "hermes")
        assert "block 1" in err.message

    def test_invalid_json_in_closed_block_is_bad_json(self):
        text = '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call><tool_call>{name: g}</tool_call>'
        err = assert_error(parse_hermes(text), "bad_json", "hermes")
        assert "block 1" in err.message

    def test_empty_block_is_bad_json(self):
        assert_error(parse_hermes("<tool_call></tool_call>"), "bad_json", "hermes")

    @pytest.mark.parametrize("body", [
        '{"name": "f", "arguments": [1, 2]}',  # arguments not an object
        '{"name": "f", "arguments": "not json"}',  # arguments string that is not JSON
        '{"name": "f", "arguments": {}, "extra": 1}',  # unknown key
        '42',
        '["f"]',
    ])
    def test_wrong_structure_is_bad_structure(self, body):
        assert_error(parse_hermes(f"<tool_call>{body}</tool_call>"), "bad_structure", "hermes")

    def test_think_block_and_prose_ignored(self):
        text = (
            '<think>I could call <tool_call>{"name": "wrong", "arguments": {}}</tool_call></think>\n'
            'Sure.\n<tool_call>{"name": "f", "arguments": {}}</tool_call>\nDone.'
        )
        assert_ok(parse_hermes(text), [C("f")], "hermes")

    def test_unclosed_think_prefix(self):
        # templates that open <think> in the prompt: the output starts inside the think block
        text = 'maybe <tool_call>{"name": "wrong"}</tool_call>?</think>\n<tool_call>{"name": "f"}</tool_call>'
        assert_ok(parse_hermes(text), [C("f")], "hermes")

    @pytest.mark.parametrize("text", ["", "The weather is fine.", "<think><tool_call>{}</tool_call></think>ok"])
    def test_no_tool_call_is_empty_without_error(self, text):
        assert_ok(parse_hermes(text), [], "hermes")

    def test_non_text_input_is_bad_input(self):
        assert_error(parse_hermes(None), "bad_input", "hermes")
        assert_error(parse_hermes({"name": "f"}), "bad_input", "hermes")


# -- bare JSON ------------------------------------------------------------------------------------

class TestJson:
    @pytest.mark.parametrize("text, calls", [
        ('{"name": "f", "arguments": {"a": 1}}', [C("f", a=1)]),
        ('[{"name": "f", "arguments": {"a": 1}}, {"name": "g", "parameters": {"b": "x"}}]',
         [C("f", a=1), C("g", b="x")]),
        ('{"f": {"a": 1}}', [C("f", a=1)]),  # BFCL {"func": {args}}
        ('{"f": {"a": 1}, "g": {}}', [C("f", a=1), C("g")]),  # several keys = several calls
        ('[{"f": {"a": 1}}, {"g": {}}]', [C("f", a=1), C("g")]),
        ('{"type": "function", "function": {"name": "f", "arguments": "{\\"a\\": 1}"}}', [C("f", a=1)]),  # OpenAI
        ('[{"id": "call_0", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]', [C("f", a=1)]),
        ('{"tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}', [C("f")]),
        ('[]', []),
    ])
    def test_forms(self, text, calls):
        assert_ok(parse_json(text), calls, "json")

    @pytest.mark.parametrize("text", [
        '```json\n[{"name": "f", "arguments": {"a": 1}}]\n```',
        '```\n{"f": {"a": 1}}\n```',
        'Here you go:\n```json\n{"name": "f", "arguments": {"a": 1}}\n```\nAnything else?',
    ])
    def test_code_fences(self, text):
        assert_ok(parse_json(text), [C("f", a=1)], "json")

    @pytest.mark.parametrize("text", [
        'Sure, calling it now: [{"name": "f", "arguments": {"a": 1}}]. Done!',
        'Calling {"f": {"a": 1}} as asked',
        '<think>Maybe [{"name": "g", "arguments": {}}]?</think>\n{"name": "f", "arguments": {"a": 1}}',
        'thinking about [{"g": {}}] </think> [{"name": "f", "arguments": {"a": 1}}]',  # unclosed think prefix
    ])
    def test_prose_and_thinking_around_json(self, text):
        assert_ok(parse_json(text), [C("f", a=1)], "json")

    def test_fence_and_tags_inside_a_string_value(self):
        content = "```python\nprint(1)\n```\n</think> <tool_call>"
        text = json.dumps([{"name": "write_file", "arguments": {"content": content}}])
        assert_ok(parse_json(text), [C("write_file", content=content)], "json")

    @pytest.mark.parametrize("text", ["", "   ", "No tool is needed: the answer is 4.", "42", '"just text"', "null"])
    def test_no_call_is_empty_without_error(self, text):
        assert_ok(parse_json(text), [], "json")

    @pytest.mark.parametrize("text", [
        '[{"name": "f", "arguments": {]', '{"name": "f", "arguments": {"a": 1}', "{'f': {}}",
    ])
    def test_invalid_json_is_bad_json(self, text):
        assert_error(parse_json(text), "bad_json", "json")

    @pytest.mark.parametrize("text", [
        '{"a": 1}', '[1, 2]', '{"name": "f", "arguments": 3}', '[{"name": "f"}, "g"]', '{"tool_calls": [5]}',
    ])
    def test_wrong_structure_is_bad_structure(self, text):
        assert_error(parse_json(text), "bad_structure", "json")

    def test_non_text_input_is_bad_input(self):
        assert_error(parse_json([{"name": "f"}]), "bad_input", "json")


# -- pythonic (BFCL) ------------------------------------------------------------------------------

class TestPythonic:
    def test_list_of_calls_with_dotted_names(self):
        text = '[math.gcd(a=1, b="x"), f(), a.b.c_d(k=True, n=None)]'
        assert_ok(parse_pythonic(text), [C("math.gcd", a=1, b="x"), C("f"), C("a.b.c_d", k=True, n=None)], "pythonic")

    def test_single_call_without_brackets(self):
        assert_ok(parse_pythonic("get_weather(city='Paris')"), [C("get_weather", city="Paris")], "pythonic")
        assert_ok(parse_pythonic("f (a=1)"), [C("f", a=1)], "pythonic")

    def test_tuple_of_calls(self):
        assert_ok(parse_pythonic("(f(a=1), g())"), [C("f", a=1), C("g")], "pythonic")

    def test_negative_and_signed_numbers(self):
        result = parse_pythonic("f(a=-3, b=-2.5, c=+4, d=-1e-05, e=-0.0)")
        assert_ok(result, [C("f", a=-3, b=-2.5, c=4, d=-1e-05, e=-0.0)], "pythonic")
        assert math.copysign(1.0, result.calls[0].arguments["e"]) == -1.0

    def test_nested_lists_dicts_tuples(self):
        text = "f(a=[1, [2, 3], []], b={'k': [1, {'z': None}], 'e': {}}, c=(1, 'x'), d=())"
        expected = C("f", a=[1, [2, 3], []], b={"k": [1, {"z": None}], "e": {}}, c=(1, "x"), d=())
        assert_ok(parse_pythonic(text), [expected], "pythonic")

    def test_variables_become_their_name(self):
        assert_ok(parse_pythonic("f(unit=celsius, flag=x_1)"), [C("f", unit="celsius", flag="x_1")], "pythonic")

    def test_expressions_stay_source_text(self):
        result = parse_pythonic("f(a=math.pi, b=1+2, c=g(x), d=[i for i in y], e=..., s={1, 2})")
        args = {"a": "math.pi", "b": "1 + 2", "c": "g(x)", "d": "[i for i in y]", "e": "...", "s": "{1, 2}"}
        assert_ok(result, [ToolCall("f", args)], "pythonic")

    @pytest.mark.parametrize("parser", [parse_pythonic, parse])
    def test_expressions_are_never_evaluated(self, tmp_path, parser):
        marker = tmp_path / "pwned"
        source = f"__import__('os').system('touch {marker}')"
        result = parser(f"[f(a={source}, b=open('{marker}', 'w'))]")
        assert not marker.exists()
        assert_ok(result, [C("f", a=source, b=f"open('{marker}', 'w')")], "pythonic")
        assert isinstance(result.calls[0].arguments["a"], str)

    def test_quotes_newlines_unicode_in_strings(self):
        text = r"""f(a="it's \"quoted\"", b='line1\nline2', c='café ☕ 日本', d='back\\slash')"""
        expected = C("f", a='it\'s "quoted"', b="line1\nline2", c="café ☕ 日本", d="back\\slash")
        assert_ok(parse_pythonic(text), [expected], "pythonic")

    @pytest.mark.parametrize("text", ["f(1, b=2)", "[f(a=1), g('x')]", "math.gcd(12, 4)"])
    def test_positional_args_are_an_error(self, text):
        assert_error(parse_pythonic(text), "positional_args", "pythonic")

    @pytest.mark.parametrize("text", ["f(**kw)", "f(a={**d})", "f(a={[1]: 2})", "f(a=1)(b=2)", "f(a=1).g(b=2)"])
    def test_unsupported_structure_is_bad_structure(self, text):
        assert_error(parse_pythonic(text), "bad_structure", "pythonic")

    @pytest.mark.parametrize("text", ["[f(a=1", "f(a=", "[f(a=1), g(b=)]", "f(a=1))"])
    def test_broken_or_truncated_syntax_is_bad_syntax(self, text):
        assert_error(parse_pythonic(text), "bad_syntax", "pythonic")

    @pytest.mark.parametrize("text", [
        "I will call get_weather(city='Paris') for you.",
        "Answer: [get_weather(city='Paris')] hope it helps",
        "<think>maybe [g(x=1)] or h(y=2)</think>\n[get_weather(city='Paris')]",
        "maybe [g(x=1)]...</think>\n[get_weather(city='Paris')]",  # unclosed think prefix
        "```python\n[get_weather(city='Paris')]\n```",
        "'[get_weather(city='Paris')]'",  # quoted, as some models answer
    ])
    def test_prose_thinking_fences_around_calls(self, text):
        assert_ok(parse_pythonic(text), [C("get_weather", city="Paris")], "pythonic")

    @pytest.mark.parametrize("text", [
        "", "  \n", "The answer is 42.", "Paris is the capital (and largest city) of France.", "x = 3", "[1, 2]", "[]",
    ])
    def test_no_call_is_empty_without_error(self, text):
        assert_ok(parse_pythonic(text), [], "pythonic")

    def test_non_text_input_is_bad_input(self):
        assert_error(parse_pythonic(b"[f()]"), "bad_input", "pythonic")


# -- OpenAI assistant messages -------------------------------------------------------------------

class TestOpenAI:
    def test_tool_calls_with_string_and_dict_arguments(self):
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
            {"id": "call_1", "type": "function", "function": {"name": "g", "arguments": {"b": [1]}}},
            {"id": "call_2", "type": "function", "function": {"name": "h", "arguments": ""}},
        ]}
        assert_ok(parse_openai_message(message), [C("f", a=1), C("g", b=[1]), C("h")], "openai")

    def test_message_as_json_string(self):
        message = json.dumps({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]})
        assert_ok(parse_openai_message(message), [C("f")], "openai")

    def test_legacy_function_call(self):
        message = {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": '{"a": "x"}'}}
        assert_ok(parse_openai_message(message), [C("f", a="x")], "openai")

    @pytest.mark.parametrize("content, calls", [
        ('<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>', [C("f", a=1)]),
        ("[f(a=1)]", [C("f", a=1)]),
        ('[{"name": "f", "arguments": {"a": 1}}]', [C("f", a=1)]),
        ("No call needed.", []),
    ])
    def test_content_fallback(self, content, calls):
        for message in ({"role": "assistant", "content": content}, {"content": content, "tool_calls": []}):
            assert_ok(parse_openai_message(message), calls, "openai")

    def test_content_fallback_keeps_errors(self):
        result = parse_openai_message({"role": "assistant", "content": "<tool_call>{bad}</tool_call>"})
        assert_error(result, "bad_json", "openai")

    @pytest.mark.parametrize("message", [{}, {"role": "assistant", "content": None}, {"content": ["part"]}])
    def test_no_call(self, message):
        assert_ok(parse_openai_message(message), [], "openai")

    @pytest.mark.parametrize("message, kind", [
        ("not json", "bad_json"),
        ("[" * 100_000, "bad_json"),  # deeper than the JSON decoder's recursion limit
        ('["a list"]', "bad_input"),
        (None, "bad_input"),
        (42, "bad_input"),
        ({"tool_calls": [{"type": "function", "function": {"arguments": "{}"}}]}, "bad_structure"),  # no name
        ({"tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}, "bad_structure"),
        ({"tool_calls": "f"}, "bad_structure"),
    ])
    def test_errors(self, message, kind):
        assert_error(parse_openai_message(message), kind, "openai")


# -- auto and dispatch ----------------------------------------------------------------------------

class TestAuto:
    @pytest.mark.parametrize("text, fmt, calls", [
        ('<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>', "hermes", [C("f", a=1)]),
        ('[{"name": "f", "arguments": {"a": 1}}]', "json", [C("f", a=1)]),
        ('{"f": {"a": 1}}', "json", [C("f", a=1)]),
        ('```json\n[{"f": {"a": 1}}]\n```', "json", [C("f", a=1)]),
        ('Sure, here it is: {"name": "f", "arguments": {"a": 1}}', "json", [C("f", a=1)]),
        ("[]", "json", []),
        ("[f(a=1)]", "pythonic", [C("f", a=1)]),
        ("f(a=1)", "pythonic", [C("f", a=1)]),
        ("<think>I must not emit <tool_call> here</think>[f(a=1)]", "pythonic", [C("f", a=1)]),
        ("The answer is 4.", "pythonic", []),
        ({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}]}, "openai",
         [C("f", a=1)]),
    ])
    def test_picks_the_right_parser(self, text, fmt, calls):
        assert_ok(parse(text), calls, fmt)
        assert_ok(parse(text, "auto"), calls, fmt)

    @pytest.mark.parametrize("fmt, parser", [
        ("hermes", parse_hermes), ("json", parse_json), ("pythonic", parse_pythonic), ("openai", parse_openai_message),
    ])
    def test_explicit_format_dispatch(self, fmt, parser):
        text = serialize([C("f", a=1)], fmt)
        assert parse(text, fmt) == parser(text)
        assert_ok(parse(text, fmt), [C("f", a=1)], fmt)

    @pytest.mark.parametrize("fmt", ["xml", "", "HERMES", None])
    def test_unknown_format_is_an_error_not_an_exception(self, fmt):
        result = parse("[f()]", fmt)
        assert result.calls == [] and result.error.kind == "bad_input"
        assert "unknown format" in result.error.message

    @pytest.mark.parametrize("value", [None, 3, [{"name": "f"}], b"[f()]"])
    def test_auto_non_text_is_bad_input(self, value):
        assert_error(parse(value), "bad_input", "auto")


def test_strip_thinking():
    assert strip_thinking("<think>a</think>x<think>b\nc</think>y") == "xy"
    assert strip_thinking("prompt-opened think</think>answer") == "answer"
    assert strip_thinking("no thinking") == "no thinking"


# -- serializers ----------------------------------------------------------------------------------

class TestSerializers:
    calls = (C("f", a=1, b="x"), C("g"))

    def test_to_hermes(self):
        assert to_hermes(self.calls) == (
            '<tool_call>\n{"name": "f", "arguments": {"a": 1, "b": "x"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>'
        )

    def test_to_hermes_escapes_tags_inside_strings(self):
        text = to_hermes([C("f", a="</tool_call> </think> <b>")])
        assert text.count("<") == 2 and text.count("</tool_call>") == 1
        assert_ok(parse_hermes(text), [C("f", a="</tool_call> </think> <b>")], "hermes")

    def test_to_json(self):
        assert json.loads(to_json(self.calls)) == [
            {"name": "f", "arguments": {"a": 1, "b": "x"}}, {"name": "g", "arguments": {}},
        ]

    def test_to_pythonic(self):
        assert to_pythonic(self.calls) == "[f(a=1, b='x'), g()]"

    def test_to_openai_message(self):
        message = to_openai_message(self.calls)
        assert message["role"] == "assistant" and message["content"] is None
        assert [tc["id"] for tc in message["tool_calls"]] == ["call_0", "call_1"]
        assert message["tool_calls"][0]["type"] == "function"
        assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a": 1, "b": "x"}'}
        assert to_openai_message([], content="hi") == {"role": "assistant", "content": "hi", "tool_calls": []}

    def test_tuples_become_json_lists(self):
        calls = [C("f", a=(1, (2, 3)))]
        assert json.loads(to_json(calls))[0]["arguments"] == {"a": [1, [2, 3]]}
        assert parse_hermes(to_hermes(calls)).calls == [C("f", a=[1, [2, 3]])]

    def test_unknown_format_raises(self):
        with pytest.raises(ValueError, match="unknown format"):
            serialize(self.calls, "xml")

    @pytest.mark.parametrize("fmt", FORMATS)
    @pytest.mark.parametrize("value", [
        -0.0, 0.0, 10**30, -(2**63), 1e-300, -1.7976931348623157e308, 0.1, 1.0, True, False, None, "",
        'quote \' and " both', "new\nline\ttab\r", "unicode é ☕ 日本 \u2028 \x00", "back\\slash \\n",
        "</tool_call><tool_call>", "<think>x</think>", "a</think>b", "```json\n[1]\n```", "f(a=1)",
        [], {}, [[], {}], {"nested": {"k": [1, 2.5, None, "s"]}, "": "empty key"},
    ])
    def test_round_trip_special_values(self, fmt, value):
        calls = [C("f", v=value), C("a.b_c", w=[value], x={"k": value})]
        result = parse(serialize(calls, fmt), fmt)
        assert_ok(result, calls, fmt)
        if value == 0.0 and isinstance(value, float):  # the sign of zero survives
            assert math.copysign(1.0, result.calls[0].arguments["v"]) == math.copysign(1.0, value)

    @pytest.mark.parametrize("fmt", FORMATS)
    def test_round_trip_empty_and_parallel(self, fmt):
        assert_ok(parse(serialize([], fmt), fmt), [], fmt)
        calls = [C("f", a=1), C("f", a=2), C("g")]
        assert_ok(parse(serialize(calls, fmt), fmt), calls, fmt)


# -- never raise on hostile input -------------------------------------------------------------

PARSERS = [parse_hermes, parse_json, parse_pythonic, parse_openai_message, parse]

DEEP = "[" * 50_000


@pytest.mark.parametrize("text", [
    DEEP,
    DEEP + "]" * 50_000,
    "f(a=" + DEEP + ")",
    "[f(a=" + "1+" * 20_000 + "1)]",
    "<tool_call>" + DEEP + "</tool_call>",
    '<tool_call>{"name": "f", "arguments": ' + json.dumps(DEEP + "]" * 50_000) + "}</tool_call>",
    '[{"name": "f", "arguments": ' + json.dumps(DEEP + "]" * 50_000) + "}]",
    '{"tool_calls": [{"function": {"name": "f", "arguments": ' + json.dumps(DEEP) + "}}]}",
    "f(a=" + "9" * 5000 + ")",  # longer than Python's int string limit
    '[{"f": {"a": ' + "9" * 5000 + "}}]",
    "\x00\ud800\uffff",
])
def test_hostile_inputs_never_raise(text):
    for parser in PARSERS:
        check_result(parser(text))


def check_result(result) -> None:
    assert isinstance(result, ParseResult)
    assert isinstance(result.calls, list)
    assert all(isinstance(c, ToolCall) and isinstance(c.name, str) and isinstance(c.arguments, dict)
               for c in result.calls)
    if result.error is not None:
        assert isinstance(result.error, ParseError) and result.error.kind and isinstance(result.error.kind, str)
        assert result.calls == []


# -- property-based: never raise, round trip --------------------------------------------------

PROPS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)

TOKENS = [
    "<tool_call>", "</tool_call>", "<think>", "</think>", "[", "]", "{", "}", "(", ")", '"', "'", "\\", ",", ":",
    "=", "```", "```json\n", "\n", " ", "f(", "a.b(", "x=", "-1", "1e5", "None", '"name": ', '"arguments": ',
    '"f"', '{"name": "f", "arguments": ', "**", "...", "lambda: 0",
]
spliced_text = st.lists(st.text(max_size=6) | st.sampled_from(TOKENS), max_size=25).map("".join)

# call-shaped JSON, to reach the structure checks rather than stop at invalid JSON
call_like = st.one_of(
    st.fixed_dictionaries({"name": json_values, "arguments": json_values}),
    st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    st.fixed_dictionaries({"type": st.just("function"), "function": json_values}),
    st.fixed_dictionaries({"tool_calls": json_values}),
)
call_like_json = st.one_of(call_like, st.lists(call_like, max_size=3))


def check_all_parsers(text) -> None:
    for parser in PARSERS:
        check_result(parser(text))
    for fmt in FORMATS:
        check_result(parse(text, fmt))


@PROPS
@given(st.text())
def test_never_raises_on_arbitrary_text(text):
    check_all_parsers(text)


@PROPS
@given(json_values | call_like_json)
def test_never_raises_on_arbitrary_json(value):
    text = json.dumps(value)
    check_all_parsers(text)
    check_all_parsers(f"<tool_call>{text}</tool_call>")
    check_all_parsers(f"```json\n{text}\n```")
    check_result(parse_openai_message(value))  # the decoded value itself, dict or not
    check_result(parse(value))
    if isinstance(value, (dict, list)):
        check_result(parse_openai_message({"role": "assistant", "tool_calls": value, "content": text}))


@PROPS
@given(spliced_text)
def test_never_raises_on_spliced_tags_and_brackets(text):
    check_all_parsers(text)


_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
identifiers = st.builds(  # ASCII: the Python parser NFKC-normalises other identifiers; keywords cannot be names
    str.__add__, st.sampled_from(_FIRST), st.text(alphabet=_FIRST + "0123456789", max_size=6),
).filter(lambda s: not keyword.iskeyword(s))
call_names = st.lists(identifiers, min_size=1, max_size=3).map(".".join)  # e.g. "a.b_c"
calls_lists = st.lists(
    st.builds(ToolCall, call_names, st.dictionaries(identifiers, json_values, max_size=4)), max_size=3,
)


@PROPS
@given(calls_lists, st.sampled_from(FORMATS))
def test_round_trip(calls, fmt):
    result = parse(serialize(calls, fmt), fmt)
    assert result.error is None, result.error
    assert result.format == fmt
    assert result.calls == calls
    assert repr(result.calls) == repr(calls)  # types (1 / 1.0 / True), -0.0, key order


# -- doctests ---------------------------------------------------------------------------------

def test_doctests():
    module = importlib.import_module("toolrm_rl.core.parse")  # `toolrm_rl.core.parse` the attribute is the function
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
