"""The core against what a policy (or a broken dataset) can write: issue 11's reproducers, and a seeded
fuzz loop asserting that only documented exceptions escape and that no call takes long.

Documented exceptions: ``parse``/``strip_thinking``/``check_calls`` (on a ToolCatalog)/
``GroundTruth.check`` (on a list of ToolCall)/``calls_equal`` never raise; ``ToolCatalog.load`` raises
only ``CatalogError``; ``GroundTruth(...)`` and ``check_calls(..., answer=raw)`` raise only
``ValueError`` (``CatalogError`` included) for an unreadable catalog or answer.
"""

from __future__ import annotations

import gc
import json
import random
import re
import time

import pytest

from toolrm_rl.core import bfcl_types
from toolrm_rl.core.calls import MAX_SCHEMA_DEPTH, CatalogError, EmptyCatalogError, ToolCall, ToolCatalog, ToolSpec
from toolrm_rl.core.match import (
    GroundTruth, MatchResult, _standardize_cached, calls_equal, canonical_calls, standardize_string,
)
from toolrm_rl.core.parse import FORMATS, ParseResult, parse, strip_thinking
from toolrm_rl.core.schema import SchemaReport, check_calls

# CPU seconds one call may take on inputs up to 200,000 characters (issue 11: the old regexes took
# 60 to 160 s on some of these).
MAX_SECONDS = 0.5
BIG = 200_000
TOOLS = [{"name": "f", "parameters": {"type": "object", "properties": {
    "s": {"type": "string"}, "n": {"type": "integer", "minimum": 0}, "xs": {"type": "array", "items": {"type": "number"}},
    "mode": {"type": "string", "enum": ["a", "b"]}}, "required": ["s"]}}]


def timed(fn, *args, **kwargs):
    """(result, CPU seconds): other processes on a shared machine do not count, nor does a collection
    of the garbage that earlier calls left."""
    gc.disable()
    try:
        start = time.process_time()
        out = fn(*args, **kwargs)
        return out, time.process_time() - start
    finally:
        gc.enable()


# -- 1. linear time ----------------------------------------------------------------------------------

HOSTILE_TEXTS = {
    "repeated <think>": "<think>" * (BIG // 7),
    "one long word": "a" * BIG,
    "repeated call heads": "a(" * (BIG // 2),
    "repeated list heads": "[a(" * (BIG // 3),
    "unclosed fences": "```x\n" * (BIG // 5),
    "whitespace run": "<tool_call>" + " \n\t" * (BIG // 3),
    "nested brackets": "[" * (BIG // 2) + "]" * (BIG // 2),
    "nested calls": "f(x=" * (BIG // 4),
    "huge number": '<tool_call>{"name": "f", "arguments": {"n": ' + "9" * BIG + "}}</tool_call>",
    "huge hex literal": "[f(n=0x" + "f" * BIG + ")]",
    "repeated tags": "<tool_call></tool_call>" * (BIG // 23),
    "prose then brace": "x" + " " * BIG + "{",
    "unary chain": "[f(n=" + "-" * BIG + "1)]",
    "repeated ) ]": "[f(" + ") ]" * (BIG // 3),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_TEXTS))
def test_parsers_are_linear(name):
    text = HOSTILE_TEXTS[name]
    for fmt in FORMATS + ("auto",):
        result, seconds = timed(parse, text, fmt)
        assert isinstance(result, ParseResult)
        assert seconds < MAX_SECONDS, (name, fmt, seconds)
    _, seconds = timed(strip_thinking, text)
    assert seconds < MAX_SECONDS, (name, seconds)


def test_issue_reproducers_are_fast():
    """strip_thinking took 98 s and parse 63 s (pythonic, auto) on these."""
    assert timed(strip_thinking, "<think>" * 28571)[1] < MAX_SECONDS
    assert strip_thinking("<think>" * 28571) == "<think>" * 28571  # no close: nothing removed
    for fmt in ("pythonic", "auto"):
        result, seconds = timed(parse, "a" * 100_000, fmt)
        assert seconds < MAX_SECONDS and result.ok and result.calls == []


HOSTILE_LITERALS = [
    ("new int[]{" * (BIG // 10), "Array"), ("new ArrayList<>(Arrays.asList(" * (BIG // 31), "ArrayList"),
    ("new ArrayList<>() {{ " + "add(" * (BIG // 4) + "}}", "ArrayList"), ("new HashMap<>() {" + " " * BIG, "HashMap"),
    ("new HashMap<>() {{ " + 'put("' * (BIG // 5) + "}}", "HashMap"), ("new HashMap<" * (BIG // 12), "HashMap"),
    ("new HashMap<>() {{ " + 'put("a",' * (BIG // 8) + "}}", "HashMap"), ("9" * BIG, "integer"), ("9" * BIG + "L", "long"),
]
HOSTILE_JS = [("[[1]" + ",[1]" * (BIG // 4), "array"), ("[[" + "],[" * (BIG // 3), "array"), ("[[" + "[" * BIG, "array"),
              ("{" + "a:" * (BIG // 2) + "}", "dict"), ("{" + "a:b," * (BIG // 4) + "}", "dict"),
              ("{a:" + "," * BIG + "}", "dict"), ("[" + "1, " * (BIG // 3) + "]", "array"), ("9" * BIG + "n", "Bigint")]


@pytest.mark.parametrize("case", range(len(HOSTILE_LITERALS) + len(HOSTILE_JS)))
def test_literal_decoders_are_linear(case):
    """BFCL's regexes for Java/JavaScript collections backtracked: its 2-D array pattern hung for minutes
    on 5,000 characters."""
    if case < len(HOSTILE_LITERALS):
        text, type_name = HOSTILE_LITERALS[case]
        decode = bfcl_types.decode_java
    else:
        text, type_name = HOSTILE_JS[case - len(HOSTILE_LITERALS)]
        decode = bfcl_types.decode_js
    try:
        _, seconds = timed(decode, text, type_name)
    except ValueError:  # int() of more than 4,300 digits: GroundTruth reports it as a type error
        return
    assert seconds < MAX_SECONDS, (case, seconds)


# The regexes BFCL's converters use (copied from bfcl-eval's type_convertor), as the reference for
# the scanners that replace them: on short random strings backtracking is cheap.
BFCL_REGEXES = {
    "java_array": (re.compile(r"new\s+\w+\[\]\s*\{(.*?)\}"), bfcl_types._java_array_body, "search",
                   ["new", " ", "\n", "int", "[]", "{", "}", "1", ",", "x"]),
    "java_aslist": (re.compile(r"new\s+ArrayList<\w*>\(Arrays\.asList\((.+?)\)\)"), bfcl_types._java_aslist_body, "search",
                    ["new ArrayList<>(Arrays.asList(", "new", " ", "\n", ")", "))", "(", "1", ",", "a"]),
    "java_adds": (re.compile(r"new\s+ArrayList<\w*>\(\)\s*\{\{\s*(.+?)\s*\}\}", re.DOTALL), bfcl_types._java_adds_body,
                  "search", ["new ArrayList<>() {{", "new ArrayList<T>(){{", " ", "\n", "}", "}}", "{", "add(1);", "x"]),
    "java_add": (re.compile(r"add\((.+?)\)"), bfcl_types._java_adds, "findall",
                 ["add(", ")", "\n", " ", "1", "x", "a", "d", "("]),
    "java_map": (re.compile(r"new\s+HashMap<.*?>\s*\(\)\s*\{\s*\{?\s*(.*?)\s*\}?\s*\}", re.DOTALL),
                 bfcl_types._java_map_body, "search",
                 ["new HashMap<", ">", "()", " ", "\n", "{", "}", 'put("a", 1);', "x", "<"]),
    "java_empty_map": (re.compile(r"new\s+HashMap<.*?>\s*\(\)"), bfcl_types._java_empty_map, "bool",
                       ["new HashMap<", ">", "()", " ", "\n", "(", ")", "x", "new "]),
    "java_put": (re.compile(r"put\(\"(.*?)\",\s*(.*?)\)"), bfcl_types._java_puts, "findall",
                 ['put("', '",', '"', ",", ")", " ", "\n", "a", "1"]),
    "js_2d": (re.compile(r"\[\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\]|\bnew\s+Array\(\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\)"),
              bfcl_types._js_2d_end, "match_end", ["[", "]", ",", " ", "\n", "1", "new Array(", ")", "a"]),
    "js_brackets": (re.compile(r"\[(.*?)\]"), bfcl_types._js_brackets, "findall", ["[", "]", "\n", "a", " "]),
    "js_pairs": (re.compile(r"([^:]+):\s*(.*?)(?:,\s*(?=[^,]+:)|$)"), bfcl_types._js_pairs, "findall",
                 [":", ",", " ", "a", "b", "'"]),
}


@pytest.mark.parametrize("name", sorted(BFCL_REGEXES))
def test_scanners_find_what_bfcl_regexes_find(name):
    pattern, scanner, kind, tokens = BFCL_REGEXES[name]
    rng = random.Random(name)
    for _ in range(3000):
        text = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 16)))
        if kind == "search":
            m = pattern.search(text)
            expected = m.group(1) if m else None
        elif kind == "findall":
            expected = pattern.findall(text)
        elif kind == "bool":
            expected = bool(pattern.search(text))
        else:
            m = pattern.match(text)
            expected = m.end() if m else None
        assert scanner(text) == expected, text


# -- 2. catalogs: only CatalogError, naming the entry ---------------------------------------------------

@pytest.mark.parametrize("tools, message", [
    (b"\xff", "not valid UTF-8"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ('[{"name": "f", "parameters": {"type": "object"', "not valid JSON"),
    ([{"description": "no name"}], r"tools\[0\]\.name"),
    ([{"name": "f"}, {"name": "g", "parameters": [1]}], r"tools\[1\]\.parameters: expected an object, got list \(function 'g'\)"),
    ([{"name": "f", "parameters": 3}], r"tools\[0\]\.parameters: expected an object, got int"),
    ([{"name": "f", "parameters": {"properties": 3}}], r"tools\[0\]\.parameters\.properties"),
    ("7", "expected a list of function specs, got int"),
    ([{"name": "f", "parameters": json.loads("[" * 70 + "]" * 70)}], "expected an object"),
])
def test_malformed_catalogs_raise_catalog_error(tools, message):
    for strict in (False, True):
        with pytest.raises(CatalogError, match=message):
            ToolCatalog.load(tools, strict=strict)


def test_schema_nested_too_deep_is_refused():
    deep: dict = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH):
        deep = {"type": "object", "properties": {"a": deep}}
    with pytest.raises(CatalogError, match=r"tools\[0\]\.parameters: nested deeper than"):
        ToolCatalog.load([{"name": "f", "parameters": deep}])


@pytest.mark.parametrize("tools", [None, "", "  ", b"", "[]", [], ToolCatalog()])
def test_empty_catalogs_are_empty_or_refused_when_strict(tools):
    assert len(ToolCatalog.load(tools)) == 0
    with pytest.raises(EmptyCatalogError):
        ToolCatalog.load(tools, strict=True)


@pytest.mark.parametrize("tools, message", [
    ([{"name": "f"}, {"name": "f"}], r"tools\[1\]\.name: 'f' repeats tools\[0\]"),
    ([{"name": "f", "parameters": {"properties": {"x": "string"}}}], r"tools\[0\]\.parameters\.properties\.x"),
    ([{"name": "f", "parameters": {"properties": {}, "required": "x"}}], r"tools\[0\]\.parameters\.required"),
])
def test_strict_catalogs_refuse_what_lenient_ones_let_through(tools, message):
    ToolCatalog.load(tools)
    with pytest.raises(CatalogError, match=message) as err:
        ToolCatalog.load(tools, strict=True)
    assert not isinstance(err.value, EmptyCatalogError)


# -- 3. checks never raise on values ----------------------------------------------------------------

def test_huge_int_in_a_call():
    """A 4,000-digit hex literal: Python cannot write it in decimal (repr raised ValueError)."""
    assert parse("[f(s=0x" + "f" * 4000 + ")]", "pythonic").error.kind == "bad_structure"
    huge = int("f" * 4000, 16)
    report = check_calls([ToolCall("f", {"s": huge})], TOOLS)
    assert report.categories == ["type"] and "<int of 16000 bits>" in report.violations[0].message
    assert not calls_equal([ToolCall("f", {"s": huge})], [ToolCall("f", {"s": 1})])
    assert calls_equal([ToolCall("f", {"s": huge})], [ToolCall("f", {"s": huge})])
    truth = GroundTruth(TOOLS, [{"f": {"s": ["x"]}}])
    assert truth.check([ToolCall("f", {"s": huge})]).error_type == "type_error:simple"
    assert "bits" in truth.check([ToolCall("f", {"s": huge})]).message
    # the renderer writes it (every mark on, coverage too) instead of raising in str()/float()/json.dumps
    from toolrm_rl.core.render import RenderSpec, render

    conv = [{"role": "user", "content": "pay 5,000 now"}]
    for value in (huge, 10 ** 400, [huge, 5000]):
        text = render(TOOLS, conv, [ToolCall("f", {"s": value})], spec=RenderSpec(mark_conversions=True)).text
        assert text.startswith("call: [1 call, ") and "s?" in text


def test_schema_nested_450_levels_built_by_hand():
    deep: dict = {"type": "string", "minLength": 1}
    for _ in range(450):
        deep = {"type": "object", "properties": {"a": deep}}
    catalog = ToolCatalog([ToolSpec("g", parameters={"type": "object", "properties": {"a": deep}})])
    report = check_calls([ToolCall("g", {"a": {"a": {"a": 3}}})], catalog)
    assert report.categories == ["nested_type"]
    with pytest.raises(CatalogError, match="nested deeper"):
        catalog["g"].json_schema()


def test_deep_values():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    calls = [ToolCall("f", {"s": deep, "mode": deep, "xs": deep})]
    report = check_calls(calls, TOOLS)
    assert [(v.category, v.param) for v in report.violations] == [("type", "s"), ("type", "mode"), ("nested_type", "xs[0]")]
    untyped_enum = [{"name": "f", "parameters": {"type": "object", "properties": {"e": {"enum": [[[[1]]], "a"]}}}}]
    assert check_calls([ToolCall("f", {"e": deep})], untyped_enum).categories == ["enum"]  # too deep to compare
    assert calls_equal(calls, [ToolCall("f", {"s": deep, "mode": deep, "xs": deep})])
    assert not calls_equal(calls, [ToolCall("f", {"s": [deep], "mode": deep, "xs": deep})])
    assert isinstance(canonical_calls(calls), tuple)
    twin: list = []  # equal to deep, but another object: Python's == recurses through both
    for _ in range(5000):
        twin = [twin]
    verdict = GroundTruth(TOOLS, [{"f": {"s": ["x"], "xs": [[deep]]}}], "parallel").check(
        [ToolCall("f", {"s": "x", "xs": [twin]})])
    assert not verdict.valid and isinstance(verdict.message, str)


@pytest.mark.parametrize("category", ["multiple", "parallel", "parallel_multiple"])
def test_empty_answer_expects_no_call(category):
    truth = GroundTruth(TOOLS, None, category)
    assert truth.check([]) == MatchResult(True)
    assert truth.check([ToolCall("f", {"s": "x"})]).error_type.endswith("wrong_count")


def test_messages_are_bounded():
    value, name = "v" * 100_000, "p" * 100_000
    report = check_calls([ToolCall("f", {"mode": value, name: 1}), ToolCall(name, {})], TOOLS)
    assert report.categories == ["missing_required", "enum", "unexpected_param", "unknown_function"]
    assert all(len(v.message) < 300 and len(v.param or "") < 300 and len(v.function) < 300 for v in report.violations)
    many = check_calls([ToolCall("f", {f"k{i}": i for i in range(1000)})], TOOLS)
    assert len(many.violations) == 1001 and len(many.summary()) < 3000 and many.summary().endswith("(981 more)")
    truth = GroundTruth(TOOLS, [{"f": {"s": ["x"]}}])
    assert len(truth.check([ToolCall("f", {"s": value})]).message) < 300
    assert len(truth.check([ToolCall("f", {"s": "x", name: 1})]).message) < 300


def test_standardize_string_caches_only_short_strings():
    _standardize_cached.cache_clear()
    standardize_string("Short, text")
    assert _standardize_cached.cache_info().currsize == 1
    long = "Some Value, " * 10_000
    assert standardize_string(long) == "somevalue" * 10_000
    assert _standardize_cached.cache_info().currsize == 1  # the long string is not kept
    assert _standardize_cached.cache_info().maxsize <= 1 << 14


# -- 4. lone surrogates --------------------------------------------------------------------------------

def test_lone_surrogates():
    for text, fmt in [('<tool_call>{"name": "f", "arguments": {"s": "a\\ud800"}}</tool_call>', "hermes"),
                      ('<tool_call>{"name": "f", "arguments": {"s": "a\ud800"}}</tool_call>', "auto"),
                      ('[{"name": "f", "arguments": {"s": "\udfff"}}]', "json"),
                      ("[f(s='a\ud800')]", "pythonic"), ("[f(s='a\\ud800')]", "auto")]:
        result = parse(text, fmt)
        assert result.ok and result.calls[0].name == "f", (text, fmt, result.error)
    calls = parse("[f(s='a\\ud800')]", "pythonic").calls
    assert calls[0].arguments["s"] == "a\ud800"  # an escape in a literal is kept as written
    assert parse("[f(s='a\ud800')]", "pythonic").calls[0].arguments["s"] == "a\ufffd"  # raw: not valid source
    assert check_calls(calls, TOOLS).ok
    assert GroundTruth(TOOLS, [{"f": {"s": ["a\ud800"]}}]).check(calls).valid
    assert calls_equal(calls, [ToolCall("f", {"s": "A\ud800"})])
    assert strip_thinking("<think>\ud800</think>x") == "x"


def test_render_with_lone_surrogates():
    transformers = pytest.importorskip("transformers")
    from toolrm_rl.core.render import RenderSpec, render
    from toolrm_rl.data.backbones import minilm_dir, qwen3_tokenizer_dir

    conversation = [{"role": "user", "content": "hi \ud800 there"}]
    calls = [ToolCall("f", {"s": "a\udc80b"})]
    for path, mode in ((minilm_dir(), "plain"), (qwen3_tokenizer_dir(), "chat_template")):
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
        with pytest.raises(TypeError):  # what the reward met before: the tokenizer refuses them
            tokenizer(["a\ud800"])
        out = render(TOOLS, conversation, calls, spec=RenderSpec(mode=mode), tokenizer=tokenizer)
        assert "\ufffd" in out.text and not re.search("[\ud800-\udfff]", out.text + out.context)
        assert out.n_tokens == len(tokenizer(out.text, add_special_tokens=mode == "plain")["input_ids"])


# -- 5. the fuzz loop ------------------------------------------------------------------------------------

PIECES = ["<tool_call>", "</tool_call>", "<think>", "</think>", "```", "```json\n", "{", "}", "[", "]", "(", ")",
          '"', "'", ":", ",", " ", "\n", "\t", "  \n ", '"name"', '"arguments"', '"parameters"', '"f"', '"g"', "f(",
          "f.g(", "s=", "n=", "xs=", "mode=", "null", "true", "1e999", "NaN", "-", "0x" + "f" * 40, "9" * 30,
          "\ud800", "\udfff", "\\ud800", "new int[]{", "add(", 'put("', '",', "tool_calls", '"type": "function"',
          '"function"', "a", "Paris", "**", "*", "lambda", "...", "\\", "\x00"]
VALUES = [None, True, False, 0, 1, -1, 2.5, float("inf"), float("nan"), 10 ** 5000, "", "a", "A b", "\ud800", "x" * 3000,
          [], [1, "a"], {}, {"a": 1}, (1, 2), "new int[]{1, 2}", "[1, 'a']", "{a: 1}", "5L", "5n", "true", "dontcare"]
TYPES = ["string", "integer", "number", "float", "boolean", "array", "tuple", "object", "dict", "any", "null", "long",
         "String", "ArrayList", "HashMap", "Array", "Bigint", "Boolean", ["string", "null"], 3, None, "weird"]


def hostile_text(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:  # random pieces
        return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 60)))
    if kind == 1:  # deep nesting
        opener = rng.choice(["[", "{", "(", "f(x=", '{"a":', "<think>", "```"])
        return rng.choice(["", "<tool_call>", "[f(x="]) + opener * rng.randint(1, 3000)
    if kind == 2:  # whitespace runs around almost-calls
        ws = rng.choice([" ", "\n", "\t", " \n"]) * rng.randint(1, 3000)
        return rng.choice(["<tool_call>", "[f(", "```", "x", '{"name": "f"']) + ws + rng.choice(["", "{", ")", "]", "```"])
    if kind == 3:  # well-formed calls with hostile values
        args = {rng.choice(["s", "n", "xs", "mode", "q"]): rng.choice(VALUES[:9] + VALUES[10:14])
                for _ in range(rng.randint(0, 3))}
        body = json.dumps({"name": rng.choice(["f", "g"]), "arguments": args})
        return rng.choice(["<tool_call>{}</tool_call>", "[{}]", "{}", "```json\n{}\n```"]).replace("{}", body, 1)
    if kind == 4:  # pythonic with hostile literals
        lit = rng.choice(["0x" + "f" * rng.randint(1, 4000), "9" * rng.randint(1, 5000), "'\\ud800'", "1j", "b'x'",
                          "-" * rng.randint(1, 500) + "1", "[" * 150 + "]" * 150, "a.b.c", "{1: 2, '1': 3}", "..."])
        return f"[f(s={lit}, n={rng.choice(['1', 'x', lit])})]"
    text = "".join(rng.choice(PIECES) for _ in range(20))
    return text * rng.randint(1, 200)


def hostile_schema(rng: random.Random, depth: int = 0):
    if rng.random() < 0.05:
        return rng.choice([[1], 3, "string", None])
    schema: dict = {}
    if rng.random() < 0.9:
        schema["type"] = rng.choice(TYPES)
    if rng.random() < 0.2:
        schema["enum"] = rng.sample(VALUES[:8] + ["a", "b", [1], {"a": 1}], rng.randint(0, 3))
    if rng.random() < 0.15:
        schema["default"] = rng.choice(VALUES[:8] + ["dontcare"])
    if rng.random() < 0.1:
        schema[rng.choice(["minimum", "maxLength", "pattern", "anyOf", "$ref", "format", "minItems"])] = rng.choice(
            [0, 3, "^a", [{"type": "string"}], "#/nope", "#", "date", -1, "("])
    if depth < 4 and rng.random() < 0.3:
        schema["items"] = hostile_schema(rng, depth + 1)
    if depth < 4 and rng.random() < 0.3:
        schema["properties"] = {k: hostile_schema(rng, depth + 1) for k in rng.sample("abc", rng.randint(0, 3))}
        schema["required"] = rng.sample("abcd", rng.randint(0, 2))
    return schema


def hostile_tools(rng: random.Random):
    kind = rng.randrange(8)
    if kind == 0:
        return rng.choice([b"\xff\xfe", b'[{"name": "f"}]', "[" * 3000, '[{"name": "f"', "[]", None, "", "7", "{}",
                           '{"name": "f"}', [1, 2], [{"name": 3}], [{"name": "f", "parameters": []}], "\ud800"])
    params = {"type": rng.choice(["object", "dict"]),
              "properties": {k: hostile_schema(rng) for k in rng.sample(["s", "n", "xs", "mode", "q"], rng.randint(0, 5))},
              "required": rng.sample(["s", "n", "xs", "mode", "q", 3], rng.randint(0, 2))}
    tools = [{"name": "f", "parameters": params}, {"name": "g", "description": "\ud800", "parameters": {}}]
    if kind == 1:
        tools = json.dumps(tools)
    if kind == 2:
        tools = json.dumps(tools)[:rng.randint(0, 200)]
    return tools


def hostile_answer(rng: random.Random):
    if rng.random() < 0.1:
        return rng.choice([None, [], "[", 7, [{"f": 3}], [{"f": {}, "g": {}}], {"f": {"s": ["a"]}}])
    return [{rng.choice(["f", "g", "h"]): {k: rng.sample(VALUES[:14] + ["", ""], rng.randint(0, 3))
                                           for k in rng.sample(["s", "n", "xs", "mode"], rng.randint(0, 4))}}
            for _ in range(rng.randint(0, 2))]


def _has_nan(value) -> bool:
    """NaN equals nothing, itself included: call lists holding one are never equal."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float) and v != v:
            return True
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
    return False


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::SyntaxWarning")  # ast on "\," in a literal
def test_fuzz_only_documented_exceptions_escape():
    rng = random.Random(11)
    slowest = (0.0, "")
    counts = dict.fromkeys(["texts", "catalogs", "catalog_errors", "checks", "answers", "answer_errors"], 0)
    for i in range(3000):
        text = hostile_text(rng)
        counts["texts"] += 1
        parsed = []
        for fmt in FORMATS + ("auto",):
            result, seconds = timed(parse, text, fmt)
            assert isinstance(result, ParseResult) and (result.ok or isinstance(result.error.message, str))
            assert result.error is None or len(result.error.message) <= 300
            slowest = max(slowest, (seconds, f"parse {fmt} {text[:40]!r} ({len(text)} chars)"))
            parsed.extend(result.calls)
        _, seconds = timed(strip_thinking, text)
        slowest = max(slowest, (seconds, f"strip_thinking {text[:40]!r}"))

        tools = hostile_tools(rng)
        counts["catalogs"] += 1
        try:
            catalog = ToolCatalog.load(tools, strict=bool(i % 2))
        except CatalogError:
            counts["catalog_errors"] += 1
            catalog = ToolCatalog.load(TOOLS)
        calls = parsed[:4] + [ToolCall(rng.choice(["f", "g", "h", "x" * 500]),
                                       {rng.choice(["s", "n", "xs", "mode", "q", "z" * 500]): rng.choice(VALUES)
                                        for _ in range(rng.randint(0, 4))}) for _ in range(rng.randint(0, 2))]
        language = rng.choice(["python", "java", "javascript"])
        for answer in (None, hostile_answer(rng)):
            try:
                truth = None if answer is None else GroundTruth(
                    catalog, answer, rng.choice(["simple", "multiple", "parallel", "parallel_multiple"]), language)
            except ValueError:  # CatalogError included: an unreadable answer
                counts["answer_errors"] += 1
                continue
            counts["answers"] += answer is not None
            report, seconds = timed(check_calls, calls, catalog, language=language, answer=truth)
            counts["checks"] += 1
            assert isinstance(report, SchemaReport) and isinstance(report.summary(), str)
            assert all(len(v.message) < 400 for v in report.violations)
            slowest = max(slowest, (seconds, f"check_calls {calls!r:.60}"))
            if truth is not None:
                verdict, seconds = timed(truth.check, calls)
                assert isinstance(verdict, MatchResult) and (verdict.error_type == "") == verdict.valid
                assert isinstance(verdict.message, str) and len(verdict.message) < 1000
                slowest = max(slowest, (seconds, f"GroundTruth.check {calls!r:.60}"))
        assert calls_equal(calls, list(reversed(calls))) or _has_nan([c.arguments for c in calls])
        assert isinstance(hash(canonical_calls(calls)), int)
    print(f"\n{counts}; slowest call {slowest[0]:.3f} s: {slowest[1]}")
    assert slowest[0] < MAX_SECONDS, slowest
    assert counts["catalog_errors"] > 100 and counts["answer_errors"] > 10 and counts["answers"] > 1000


def test_ground_truth_never_raises_on_fuzz_found_inputs():
    """Two inputs the reward fuzzer found: an int beyond any float for a float parameter, and a dict
    answer whose option for a key is a literal value, not a list (the 2024 logs' Java HashMaps)."""
    from toolrm_rl.core.calls import ToolCall
    from toolrm_rl.core.match import GroundTruth

    tools = [{"name": "gcd", "parameters": {"type": "dict", "properties": {
        "a": {"type": "integer"}, "scale": {"type": "float"}}}},
        {"name": "book", "parameters": {"type": "dict", "properties": {"who": {"type": "dict"}}}}]
    huge = GroundTruth(tools, [{"gcd": {"a": [7], "scale": [1.5]}}], "multiple").check(
        [ToolCall("gcd", {"a": 7, "scale": 10**400})])
    assert not huge.valid and huge.error_type == "value_error:others" and len(huge.message) < 200
    literal = [{"book": {"who": [{"name": ["Ada"], "age": 36}, ""]}}]
    assert GroundTruth(tools, literal, "multiple").check([ToolCall("book", {"who": {"name": "Ada", "age": 36}})]).valid
    wrong = GroundTruth(tools, literal, "multiple").check([ToolCall("book", {"who": {"name": "Bob", "age": 36}})])
    assert not wrong.valid and wrong.error_type.startswith("value_error:dict")
