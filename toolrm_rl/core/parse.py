"""Model output text -> tool calls, and tool calls -> text, for every format the project meets.

Parsers never raise: each returns a :class:`ParseResult` holding the calls or a structured
:class:`ParseError` (an RL reward must be able to score *any* sampled text), and each runs in time
linear in the text (no backtracking regex over model output: a policy learns whatever stalls its
reward). Formats:

- ``hermes``: Hermes/Qwen ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks
  (several blocks = parallel calls; ``parameters`` accepted for ``arguments``; arguments may be a
  JSON string).
- ``json``: bare JSON, an object or a list of ``{"name", "arguments"}``, ``{"func": {args}}`` or
  OpenAI ``{"type": "function", "function": {...}}`` items, optionally inside a code fence.
- ``pythonic``: BFCL call syntax ``[math.gcd(a=1, b="x"), f()]``, parsed with :mod:`ast`, never eval.
- ``openai``: an assistant message dict with ``tool_calls`` (falls back to its ``content``).

``<think>...</think>`` blocks and prose around the calls are ignored. Text with no call at all
parses to an empty call list without error: abstaining is a legitimate answer.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

from toolrm_rl.core.calls import ToolCall, calls_to_openai, short_repr

__all__ = [
    "FORMATS",
    "ParseError",
    "ParseResult",
    "parse",
    "parse_hermes",
    "parse_json",
    "parse_pythonic",
    "parse_openai_message",
    "serialize",
    "to_hermes",
    "to_json",
    "to_pythonic",
    "to_openai_message",
    "strip_thinking",
]

FORMATS = ("hermes", "json", "pythonic", "openai")


@dataclass(slots=True)
class ParseError:
    """Why a text could not be read as tool calls.

    ``kind`` is one of ``bad_json``, ``bad_syntax``, ``bad_structure``, ``unclosed_tag``,
    ``positional_args``, ``bad_input``.
    """

    kind: str
    message: str


@dataclass(slots=True)
class ParseResult:
    """Calls found in a model output (empty when the model answered without calling), or an error."""

    calls: list[ToolCall] = field(default_factory=list)
    error: ParseError | None = None
    format: str = ""

    @property
    def ok(self) -> bool:
        """True when the text was read without error (possibly with zero calls)."""
        return self.error is None


def _fail(fmt: str, kind: str, message: str) -> ParseResult:
    return ParseResult([], ParseError(kind, message[:300]), fmt)


def strip_thinking(text: str) -> str:
    """Remove ``<think>...</think>`` blocks, and everything before a lone ``</think>``.

    (``str.find``, not a lazy regex: ``<think>`` repeated without a close made that quadratic.)

    >>> strip_thinking("<think>hmm</think>[f()]")
    '[f()]'
    """
    if "think>" not in text:
        return text
    kept, pos = [], 0
    while True:  # as re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL)
        start = text.find("<think>", pos)
        if start < 0:
            break
        end = text.find("</think>", start + 7)
        if end < 0:  # no close after this open, hence none after any later open either
            break
        kept.append(text[pos:start])
        pos = end + 8
    if pos:
        kept.append(text[pos:])
        text = "".join(kept)
    if "</think>" in text:  # templates that open the think block in the prompt
        text = text.rsplit("</think>", 1)[1]
    return text


_FENCE_LANG_RE = re.compile(r"[a-zA-Z0-9_-]*\s*")


def _fence_body(text: str) -> str | None:
    """The body of the first closed code fence (after its language tag and blank space), or None.

    The span the former lazy regex (three backticks, a tag, blank space, the shortest body, three
    backticks) found, in linear time: that regex rescanned the rest of the text from every unclosed fence."""
    start = text.find("```")
    if start < 0:
        return None
    body = _FENCE_LANG_RE.match(text, start + 3).end()
    end = text.find("```", body)
    return text[body:end] if end >= 0 else None  # no close after the first fence: none after any


# -- item normalisation shared by the JSON-based formats --------------------------------------------

# The C scanner behind json.loads, called directly: json.loads' Python layers cost as much as the
# decoding itself for the short blocks a tool call is. Raises StopIteration on an empty/invalid start.
_scan_json = json.JSONDecoder().scan_once
_CALL_KEYS = frozenset({"name", "arguments", "parameters", "id", "type"})


_MAX_TOOL_CALLS_NESTING = 8


def _call_from_obj(obj: Any, depth: int = 0) -> list[ToolCall] | str:
    """One decoded JSON item -> calls, or an error message."""
    if not isinstance(obj, dict):
        return f"expected an object for a call, got {type(obj).__name__}"
    fn = obj.get("function")
    if isinstance(fn, dict) and (obj.get("type") == "function"
                                 or (isinstance(fn.get("name"), str) and not set(obj) - {"function", "id", "index"})):
        obj = fn  # an OpenAI tool_calls item; datasets often leave out its "type"
    if type(obj.get("name")) is str and all(k in _CALL_KEYS for k in obj):
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except (ValueError, RecursionError):
                return "arguments is a string that is not JSON"
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return f"arguments must be an object, got {type(args).__name__}"
        return [ToolCall(obj["name"], args)]
    if "tool_calls" in obj and isinstance(obj["tool_calls"], list):
        if depth >= _MAX_TOOL_CALLS_NESTING:
            return "tool_calls nested too deeply"
        return _calls_from_items(obj["tool_calls"], depth + 1)
    if obj and all(isinstance(k, str) and isinstance(v, dict) for k, v in obj.items()):  # BFCL {"func": {args}}
        return [ToolCall(k, v) for k, v in obj.items()]
    return "object is neither {name, arguments} nor {function_name: {arguments}}"


def _calls_from_items(items: Any, depth: int = 0) -> list[ToolCall] | str:
    if not isinstance(items, list):
        items = [items]
    calls: list[ToolCall] = []
    for i, item in enumerate(items):
        got = _call_from_obj(item, depth)
        if isinstance(got, str):
            return f"item {i}: {got}"
        calls.extend(got)
    return calls


# -- parsers ----------------------------------------------------------------------------------------

def parse_hermes(text: str) -> ParseResult:
    """Parse Hermes/Qwen ``<tool_call>`` blocks.

    >>> parse_hermes('<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>').calls
    [ToolCall(name='f', arguments={'a': 1})]
    """
    if not isinstance(text, str):
        return _fail("hermes", "bad_input", f"expected text, got {type(text).__name__}")
    if "think>" in text:
        text = strip_thinking(text)
    calls: list[ToolCall] = []
    pos, i = 0, 0
    while True:  # str.find, not a regex: this runs for every rollout of every RL step
        start = text.find("<tool_call>", pos)
        if start < 0:
            break
        end = text.find("</tool_call>", start + 11)
        closed = end >= 0
        body = text[start + 11:end if closed else len(text)].strip()
        pos = end + 12 if closed else len(text)
        try:
            obj, stop = _scan_json(body, 0)
            if stop != len(body):
                raise ValueError(f"extra data after the JSON value at char {stop}")
        except (ValueError, StopIteration) as err:
            kind = "bad_json" if closed else "unclosed_tag"
            reason = "expected a JSON value" if isinstance(err, StopIteration) else str(err)
            return _fail("hermes", kind, f"tool_call block {i}: {reason}")
        except RecursionError:
            return _fail("hermes", "bad_json", f"tool_call block {i}: nested too deeply")
        if type(obj) is dict and len(obj) == 2 and type(obj.get("name")) is str \
                and type(obj.get("arguments")) is dict:
            calls.append(ToolCall(obj["name"], obj["arguments"]))  # the canonical shape, fast
        else:
            got = _calls_from_items(obj)
            if isinstance(got, str):
                return _fail("hermes", "bad_structure", f"tool_call block {i}: {got}")
            calls.extend(got)
        i += 1
    return ParseResult(calls, None, "hermes")


def _strip_fences(text: str) -> str:
    body = _fence_body(text)
    return text if body is None else body


def parse_json(text: str) -> ParseResult:
    """Parse bare JSON tool calls (object or list), possibly inside a code fence or prose.

    >>> parse_json('[{"f": {"a": 1}}, {"name": "g", "arguments": "{}"}]').calls
    [ToolCall(name='f', arguments={'a': 1}), ToolCall(name='g', arguments={})]
    """
    if not isinstance(text, str):
        return _fail("json", "bad_input", f"expected text, got {type(text).__name__}")
    try:  # a text that is JSON as a whole is read as is: its strings may hold fences or think tags
        obj = json.loads(text)
    except (ValueError, RecursionError):
        body = _strip_fences(strip_thinking(text)).strip()
        if not body:
            return ParseResult([], None, "json")
        try:
            obj = json.loads(body)
        except RecursionError:
            return _fail("json", "bad_json", "nested too deeply")
        except ValueError:
            starts = [i for i in (body.find("["), body.find("{")) if i >= 0]
            if not starts:
                return ParseResult([], None, "json")  # prose only: no call
            try:
                obj, _ = json.JSONDecoder().raw_decode(body, min(starts))
            except (ValueError, RecursionError) as err:
                return _fail("json", "bad_json", str(err))
    if not isinstance(obj, (dict, list)):
        return ParseResult([], None, "json")  # a bare number/string/bool answer: no call
    got = _calls_from_items(obj)
    if isinstance(got, str):
        return _fail("json", "bad_structure", got)
    return ParseResult(got, None, "json")


class _Unsupported(Exception):
    pass


def _dotted_name(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


# Python refuses to write an int of more than 4,300 digits in decimal (repr, json.dumps, messages
# all raise): such a literal (e.g. a 4,000-digit hex one) is refused here rather than downstream.
_MAX_INT_BITS = 14_000


def _py_value(node: ast.AST) -> Any:
    """A literal's value; variables and expressions become their source text (BFCL's convention)."""
    if isinstance(node, ast.Constant):
        value = node.value
        if type(value) is int and value.bit_length() > _MAX_INT_BITS:
            raise _Unsupported(f"an integer literal of {value.bit_length()} bits (over 4,300 digits)")
        if value is Ellipsis:
            return "..."
        if isinstance(value, (complex, bytes)):  # not JSON values: kept as source text, like expressions
            return ast.unparse(node)
        return value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float):
        value = _py_value(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.List):
        return [_py_value(v) for v in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_py_value(v) for v in node.elts)
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                raise _Unsupported("dict unpacking (**) in an argument")
            key = _py_value(k)
            try:
                hash(key)
            except TypeError:
                raise _Unsupported("unhashable dict key") from None
            out[key] = _py_value(v)
        return out
    if isinstance(node, ast.Name):
        return node.id
    return ast.unparse(node)  # attribute, call, arithmetic ...: kept as source text, never evaluated


def _resolve_call(node: ast.AST) -> ToolCall:
    if not isinstance(node, ast.Call):
        raise _Unsupported(f"expected a call, got {type(node).__name__}")
    name = _dotted_name(node.func)
    if name is None:
        raise _Unsupported("call target is not a (dotted) name")
    if node.args:
        raise _Unsupported(f"{name}: positional arguments cannot be mapped to parameter names")
    args = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise _Unsupported(f"{name}: **kwargs unpacking")
        args[kw.arg] = _py_value(kw.value)
    return ToolCall(name, args)


# Calls inside prose. No space between name and "(": "Paris (the capital)" is not a call. These
# used to be regexes like ``[A-Za-z_][\w.]*\(.*\)``, quadratic in a long word or in repeated "f(":
# only the bounded heads are regexes now, and the ends are found once.
_WORD_CALL_HEAD_RE = re.compile(r"(?<![\w.])[\w.]+\(")  # a whole run of name characters, then "("
_IDENT_START_RE = re.compile(r"[A-Za-z_]")
_LIST_HEAD_RE = re.compile(r"\[\s*[A-Za-z_][\w.]*\(")
_LIST_TAIL_RE = re.compile(r"\)\s*\]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _call_head(text: str) -> tuple[int, int] | None:
    """(start of the name, index of its "(") of the first call head (a dotted name and "(") in ``text``."""
    for m in _WORD_CALL_HEAD_RE.finditer(text):
        paren = m.end() - 1
        first = _IDENT_START_RE.search(text, m.start(), paren)  # a name may not start with a digit
        if first:
            return first.start(), paren
    return None


def _embedded_calls(body: str) -> list[str]:
    """Calls inside prose, as the greedy DOTALL regexes ``[ NAME( ... ) ]`` and ``NAME( ... )`` would
    find them: from the first head to the last ``) ]`` (resp. ``)``) after it."""
    spans = []
    head = _LIST_HEAD_RE.search(body)
    if head:
        tail = None
        for tail in _LIST_TAIL_RE.finditer(body):  # the last ") ]": the greedy ".*"
            pass
        if tail is not None and tail.start() >= head.end():
            spans.append(body[head.start():tail.end()])
    call = _call_head(body)
    if call:
        close = body.rfind(")")
        if close > call[1]:
            spans.append(body[call[0]:close + 1])
    return spans


def parse_pythonic(text: str) -> ParseResult:
    """Parse BFCL/pythonic call syntax with :mod:`ast` (values are literals, never evaluated).

    >>> parse_pythonic('[math.gcd(a=12, b=-4), f(x=[1, 2], y=unit)]').calls
    [ToolCall(name='math.gcd', arguments={'a': 12, 'b': -4}), ToolCall(name='f', arguments={'x': [1, 2], 'y': 'unit'})]
    """
    if not isinstance(text, str):
        return _fail("pythonic", "bad_input", f"expected text, got {type(text).__name__}")
    if _SURROGATE_RE.search(text):  # Python source must encode as UTF-8: a lone surrogate becomes U+FFFD
        text = _SURROGATE_RE.sub("\ufffd", text)
    body = _strip_fences(strip_thinking(text)).strip().strip("'").strip()
    if not body:
        return ParseResult([], None, "pythonic")
    # the whole text first: its string literals may hold fences or think tags
    candidates = [text.strip()] if text.strip() != body else []
    candidates.append(body)
    candidates.extend(span for span in _embedded_calls(body) if span != body)
    last_error = None
    for candidate in candidates:
        try:
            tree = ast.parse(candidate, mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
            last_error = ParseError("bad_syntax", f"{type(err).__name__}: {err}"[:300])
            continue
        try:
            if isinstance(tree, (ast.List, ast.Tuple)):
                calls = [_resolve_call(e) for e in tree.elts]
            else:
                calls = [_resolve_call(tree)]
        except _Unsupported as err:
            kind = "positional_args" if "positional" in str(err) else "bad_structure"
            last_error = ParseError(kind, str(err)[:300])
            continue
        except (RecursionError, ValueError) as err:
            last_error = ParseError("bad_structure", str(err)[:300])
            continue
        return ParseResult(calls, None, "pythonic")
    if _call_head(body) is None:
        return ParseResult([], None, "pythonic")  # prose without any call
    return ParseResult([], last_error, "pythonic")


def parse_openai_message(message: Any) -> ParseResult:
    """Parse an OpenAI assistant message (``tool_calls``, legacy ``function_call``, else its content)."""
    if isinstance(message, str):
        try:
            message = json.loads(message)
        except (ValueError, RecursionError):
            return _fail("openai", "bad_json", "message is not a JSON object")
    if not isinstance(message, dict):
        return _fail("openai", "bad_input", f"expected a message object, got {type(message).__name__}")
    items = message.get("tool_calls")
    if items is None and isinstance(message.get("function_call"), dict):
        items = [message["function_call"]]
    if items:
        got = _calls_from_items(items)
        if isinstance(got, str):
            return _fail("openai", "bad_structure", got)
        return ParseResult(got, None, "openai")
    content = message.get("content")
    if isinstance(content, str) and content.strip():
        result = parse(content, "auto")
        result.format = "openai"
        return result
    return ParseResult([], None, "openai")


def parse(text: Any, fmt: str = "auto") -> ParseResult:
    """Parse ``text`` in format ``fmt`` (one of :data:`FORMATS` or ``auto``, which sniffs the format)."""
    if fmt == "hermes":
        return parse_hermes(text)
    if fmt == "json":
        return parse_json(text)
    if fmt == "pythonic":
        return parse_pythonic(text)
    if fmt == "openai":
        return parse_openai_message(text)
    if fmt != "auto":
        return _fail(fmt[:40] if isinstance(fmt, str) else type(fmt).__name__, "bad_input", f"unknown format {short_repr(fmt, 40)}; expected one of {FORMATS + ('auto',)}")
    if isinstance(text, dict):
        return parse_openai_message(text)
    if not isinstance(text, str):
        return _fail("auto", "bad_input", f"expected text, got {type(text).__name__}")
    visible = strip_thinking(text)  # a <tool_call> mentioned while thinking is not a call
    if "<tool_call>" in visible:
        return parse_hermes(text)
    body = _strip_fences(visible).strip()
    if body.startswith("{") or (body.startswith("[") and body[1:].lstrip()[:1] in ("{", "]")):
        return parse_json(text)
    result = parse_pythonic(text)
    if result.ok and not result.calls and "{" in body:  # JSON after some prose
        as_json = parse_json(text)
        if as_json.ok and as_json.calls:
            return as_json
    return result


# -- serializers ------------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def to_hermes(calls: list[ToolCall]) -> str:
    """Calls -> Hermes/Qwen ``<tool_call>`` blocks, one per call.

    ``<`` is written ``\\u003c`` (as Jinja's ``tojson`` in chat templates does), so a string holding
    ``</tool_call>`` or ``</think>`` cannot end the block early.
    """
    blocks = (json.dumps({"name": c.name, "arguments": _jsonable(c.arguments)}, ensure_ascii=False) for c in calls)
    return "\n".join("<tool_call>\n" + b.replace("<", "\\u003c") + "\n</tool_call>" for b in blocks)


def to_json(calls: list[ToolCall]) -> str:
    """Calls -> a JSON list of ``{"name", "arguments"}`` objects."""
    return json.dumps([{"name": c.name, "arguments": _jsonable(c.arguments)} for c in calls], ensure_ascii=False)


def to_pythonic(calls: list[ToolCall]) -> str:
    """Calls -> BFCL call syntax ``[f(a=1), g(b='x')]`` (names must be Python identifiers)."""
    return "[" + ", ".join(
        f"{c.name}(" + ", ".join(f"{k}={v!r}" for k, v in c.arguments.items()) + ")" for c in calls
    ) + "]"


def to_openai_message(calls: list[ToolCall], content: str | None = None) -> dict[str, Any]:
    """Calls -> an OpenAI assistant message with ``tool_calls``."""
    return {"role": "assistant", "content": content, "tool_calls": calls_to_openai(calls)}


def serialize(calls: list[ToolCall], fmt: str) -> Any:
    """Calls -> ``fmt`` (one of :data:`FORMATS`); ``parse(serialize(x, f), f).calls == x``.

    Raises ``ValueError`` for an unknown format, and (Python's own writers do) for an int of more
    than 4,300 digits, which no parser here returns.
    """
    writers = {"hermes": to_hermes, "json": to_json, "pythonic": to_pythonic, "openai": to_openai_message}
    if fmt not in writers:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    return writers[fmt](calls)
