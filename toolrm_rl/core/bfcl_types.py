"""BFCL's type system: Python-side type tables and Java/JavaScript literal decoding.

BFCL hands Java and JavaScript arguments to its checker as *source literals* (``"5L"``,
``"new ArrayList<>(Arrays.asList(1, 2))"``, ``"[1, 'a']"``) and converts them to Python values
before comparing. Matching BFCL exactly means decoding them the same way, including its
fallbacks (an unreadable literal stays a string, which then fails the type check). The encoders
are the inverse used to write ground truth as BFCL-style model output (tests, benchmark building).

BFCL reads collections with lazy regexes (``add\\((.+?)\\)`` and the like), some
of which backtrack exponentially (its JavaScript 2-D array pattern hangs on a few thousand
characters). Here each of them is a small scanner that finds the span the regex finds, in time
linear in the text (up to a log factor): only bounded heads are matched with :mod:`re`.
"""

from __future__ import annotations

import bisect
import math
import re
from decimal import Decimal
from typing import Any

__all__ = [
    "PY_TYPES", "JAVA_TYPES", "JS_TYPES", "COLLECTION_TYPES", "UnsupportedLiteral",
    "decode_java", "decode_js", "encode_java", "encode_js", "language_of_category",
]

PY_TYPES: dict[str, type] = {
    "string": str, "integer": int, "float": float, "boolean": bool,
    "array": list, "tuple": list, "dict": dict, "any": str,
}
JAVA_TYPES: dict[str, type] = {
    "byte": int, "short": int, "integer": int, "long": int, "float": float, "double": float,
    "boolean": bool, "char": str, "String": str, "any": str, "Array": list, "ArrayList": list,
    "Queue": list, "Stack": list, "Set": set, "HashMap": dict, "Hashtable": dict,
}
JS_TYPES: dict[str, type] = {
    "String": str, "integer": int, "float": float, "Bigint": int, "Boolean": bool,
    "dict": dict, "array": list, "any": str,
}
# Types whose element type (``items.type``) BFCL reads and checks one level deep.
COLLECTION_TYPES = {"python": ("array", "tuple"), "java": ("Array", "ArrayList", "array"),
                    "javascript": ("Array", "ArrayList", "array")}


class UnsupportedLiteral(ValueError):
    """BFCL has no conversion for this Java type (Set, Hashtable, Queue, Stack)."""


def language_of_category(category: str) -> str:
    """BFCL test category -> checker language (``javascript`` is tested before ``java``)."""
    if "javascript" in category:
        return "javascript"
    if "java" in category:
        return "java"
    return "python"


# -- Java ---------------------------------------------------------------------------------------------
_INT = re.compile(r"^-?\d+$")
_JAVA_FLOAT = re.compile(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?[fF]$")
_JAVA_DOUBLE = re.compile(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?$")
_JAVA_LONG = re.compile(r"^-?\d+[lL]$")
_JAVA_ARRAY_HEAD = re.compile(r"new\s+\w+\[\]\s*\{")
_JAVA_ASLIST_HEAD = re.compile(r"new\s+ArrayList<\w*>\(Arrays\.asList\(")
_JAVA_ADDS_HEAD = re.compile(r"new\s+ArrayList<\w*>\(\)\s*\{\{")
_JAVA_EMPTY_LIST = re.compile(r"new\s+ArrayList<\w*>\(\)")
_JAVA_MAP_HEAD = re.compile(r"new\s+HashMap<")
_JAVA_MAP_GT = re.compile(r">\s*\(\)\s*\{")  # where BFCL's lazy "HashMap<.*?>" may stop
_JAVA_EMPTY_MAP_GT = re.compile(r">\s*\(\)")
_WS = re.compile(r"\s*")


class _Next:
    """``text.find(sub, pos)`` (``len(text)`` when absent), amortised over increasing ``pos``: the
    scanners ask for the next close after every open, and a fresh ``find`` each time was quadratic."""

    __slots__ = ("text", "sub", "at", "found")

    def __init__(self, text: str, sub: str) -> None:
        self.text, self.sub, self.at, self.found = text, sub, len(text) + 1, len(text)

    def __call__(self, pos: int) -> int:
        if pos < self.at or self.found < pos:
            found = self.text.find(self.sub, pos)
            self.at, self.found = pos, found if found >= 0 else len(self.text)
        return self.found


def _skip_ws(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()


def _ws_start(text: str, end: int, floor: int) -> int:
    """The start of the run of blank space that ends at ``end`` (not before ``floor``)."""
    while end > floor and text[end - 1].isspace():
        end -= 1
    return end


def _java_array_body(text: str) -> str | None:
    r"""group(1) of ``re.search(r"new\s+\w+\[\]\s*\{(.*?)\}", text)``."""
    close, newline = _Next(text, "}"), _Next(text, "\n")
    for head in _JAVA_ARRAY_HEAD.finditer(text):
        end = close(head.end())
        if end < len(text) and end < newline(head.end()):  # "." stops at a newline
            return text[head.end():end]
    return None


def _java_aslist_body(text: str) -> str | None:
    r"""group(1) of ``re.search(r"new\s+ArrayList<\w*>\(Arrays\.asList\((.+?)\)\)", text)``."""
    close, newline = _Next(text, "))"), _Next(text, "\n")
    for head in _JAVA_ASLIST_HEAD.finditer(text):
        start = head.end()
        end = close(start + 1)  # ".+?": at least one character
        if end < len(text) and end < newline(start):
            return text[start:end]
    return None


def _java_adds_body(text: str) -> str | None:
    r"""group(1) of ``re.search(r"new\s+ArrayList<\w*>\(\)\s*\{\{\s*(.+?)\s*\}\}", text, re.DOTALL)``."""
    close = _Next(text, "}}")
    for head in _JAVA_ADDS_HEAD.finditer(text):
        start = _skip_ws(text, head.end())
        end = close(start + 1)
        if end < len(text):  # the shortest group: up to the blank space before the first "}}"
            return text[start:max(start + 1, _ws_start(text, end, start))]
        if start > head.end() and text.startswith("}}", start):  # "{{ }}": the group is the last blank
            return text[start - 1:start]
    return None


def _find_all(text: str, opener: str, closer: str, nonempty: bool) -> list[str]:
    r"""``re.findall(re.escape(opener) + "(.+?)" + re.escape(closer), text)`` (``.*?`` unless ``nonempty``) for
    a one-character ``closer``, in linear time: ``.`` stops at a newline, a failed start moves on by one."""
    out, pos = [], 0
    close, newline = _Next(text, closer), _Next(text, "\n")
    while True:
        at = text.find(opener, pos)
        if at < 0:
            return out
        start = at + len(opener)
        end = close(start + nonempty)
        if end < len(text) and end < newline(start):
            out.append(text[start:end])
            pos = end + 1
        else:
            pos = at + 1


def _java_adds(body: str) -> list[str]:
    r"""``re.findall(r"add\((.+?)\)", body)``."""
    return _find_all(body, "add(", ")", nonempty=True)


def _java_map_body(text: str) -> str | None:
    r"""group(1) of BFCL's ``re.search(r"new\s+HashMap<.*?>\s*\(\)\s*\{\s*\{?\s*(.*?)\s*\}?\s*\}", text, re.DOTALL)``."""
    head = _JAVA_MAP_HEAD.search(text)
    gt = _JAVA_MAP_GT.search(text, head.end()) if head else None
    if gt is None or text.find("}", gt.end()) < 0:  # no later head can do better
        return None
    start = _skip_ws(text, gt.end())
    if text.startswith("{", start):
        start = _skip_ws(text, start + 1)
    end = text.find("}", start)  # the shortest group: up to the blank space before the first "}"
    return text[start:_ws_start(text, end, start)]


def _java_empty_map(text: str) -> bool:
    r"""``re.search(r"new\s+HashMap<.*?>\s*\(\)", text)`` (no DOTALL: the ">" on the head's line)."""
    gts = [m.start() for m in _JAVA_EMPTY_MAP_GT.finditer(text)]
    newline = _Next(text, "\n")
    for head in _JAVA_MAP_HEAD.finditer(text):
        i = bisect.bisect_left(gts, head.end())
        if i < len(gts) and gts[i] < newline(head.end()):
            return True
    return False


def _java_puts(body: str) -> list[tuple[str, str]]:
    r"""``re.findall(r"put\(\"(.*?)\",\s*(.*?)\)", body)``: every ``",`` is tried as the key's end once."""
    n = len(body)
    newlines = [i for i, ch in enumerate(body) if ch == "\n"] if "\n" in body else []
    close, value_of = _Next(body, ")"), {}
    ends = []  # positions of '",' after which a value closes on its line
    pos = body.find('",')
    while pos >= 0:
        start = _skip_ws(body, pos + 2)  # blank space may cross lines; the value may not
        end = close(start)
        nl = newlines[bisect.bisect_left(newlines, start)] if newlines and newlines[-1] >= start else n
        if end < n and end < nl:
            ends.append(pos)
            value_of[pos] = body[start:end], end
        pos = body.find('",', pos + 2)
    out, pos = [], 0
    while True:
        at = body.find('put("', pos)
        if at < 0:
            return out
        start = at + 5
        i = bisect.bisect_left(ends, start)
        nl = newlines[bisect.bisect_left(newlines, start)] if newlines and newlines[-1] >= start else n
        if i < len(ends) and ends[i] < nl:  # the key may not cross a line
            value, end = value_of[ends[i]]
            out.append((body[start:ends[i]], value))
            pos = end + 1
        else:
            pos = at + 1


def _java_untyped(text: str) -> Any:
    """A Java literal of unknown type (collection elements, map values)."""
    if text in ("true", "false"):
        return text == "true"
    if text[:1] == '"' and text.endswith('"'):
        return text[1:-1]
    if _JAVA_LONG.match(text):
        return int(text[:-1])
    if _JAVA_FLOAT.match(text):
        return float(text[:-1])
    return _number_or_text(text)


def _number_or_text(text: str) -> Any:
    if text[:1].isalpha() and text.lower() not in ("inf", "nan", "infinity"):
        return text  # what int() and float() would both refuse, without paying for two exceptions
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _java_element(text: str, nested: str | None, strip_quotes: bool) -> Any:
    if strip_quotes and nested in ("char", "String"):
        return text[1:-1]
    return decode_java(text, nested) if nested else _java_untyped(text)


def decode_java(text: str, java_type: str, nested: str | None = None) -> Any:
    """Decode a Java source literal as BFCL does; unreadable literals come back unchanged (a str).

    >>> decode_java("5L", "long"), decode_java("new int[]{1, 2}", "Array", "integer")
    (5, [1, 2])
    """
    if java_type in ("byte", "short", "integer"):
        return int(text) if _INT.match(text) else text
    if java_type == "float":
        return float(text.rstrip("fF")) if _JAVA_FLOAT.match(text) else text
    if java_type == "double":
        return float(text) if _JAVA_DOUBLE.match(text) else text
    if java_type == "long":
        return int(text[:-1]) if _JAVA_LONG.match(text) else text
    if java_type == "boolean":
        return text == "true" if text in ("true", "false") else text
    if java_type in ("char", "String", "any"):
        return text  # BFCL's char pattern can never match, so chars stay as written
    if java_type == "Array":
        body = _java_array_body(text)
        if body is None:
            return text
        return [_java_element(x.strip(), nested, False) for x in body.split(",") if x.strip()]
    if java_type == "ArrayList":
        body = _java_aslist_body(text)
        if body is not None:
            return [_java_element(x.strip(), nested, True) for x in body.split(",")]
        body = _java_adds_body(text)
        if body is not None:
            return [_java_element(x.strip(), nested, True) for x in _java_adds(body)]
        return [] if _JAVA_EMPTY_LIST.search(text) else text
    if java_type == "HashMap":
        body = _java_map_body(text)
        if body is not None:
            return {k: _java_untyped(v.strip()) for k, v in _java_puts(body)} if body.strip() else {}
        return {} if _java_empty_map(text) else text
    if java_type in ("Set", "Hashtable", "Queue", "Stack"):
        raise UnsupportedLiteral(f"BFCL has no conversion for Java type {java_type}")
    raise UnsupportedLiteral(f"unknown Java type {java_type!r}")


def encode_java(value: Any, java_type: str, nested: str | None = None) -> str:
    """Write a Python value as the Java literal that :func:`decode_java` reads back."""
    if java_type == "long":
        return f"{value}L"
    if java_type == "float":
        return f"{value}f"
    if java_type == "boolean" or isinstance(value, bool):
        return "true" if value else "false"
    if java_type == "Array" and isinstance(value, (list, tuple)):
        elem = (nested or "Object")
        return f"new {elem}[]{{" + ", ".join(_java_literal(v, nested) for v in value) + "}"
    if java_type == "ArrayList" and isinstance(value, (list, tuple)):
        if not value:
            return "new ArrayList<>()"
        quote = '"' if nested in ("char", "String") else ""
        items = [f"{quote}{v}{quote}" if quote else _java_literal(v, nested) for v in value]
        return "new ArrayList<>(Arrays.asList(" + ", ".join(items) + "))"
    if java_type == "HashMap" and isinstance(value, dict):
        puts = " ".join(f'put("{k}", {_java_literal(v, None)});' for k, v in value.items())
        return "new HashMap<String, Object>() {{ " + puts + " }}" if puts else "new HashMap<>()"
    return str(value)


def _java_literal(value: Any, java_type: str | None) -> str:
    if java_type:
        return encode_java(value, java_type)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


# -- JavaScript -----------------------------------------------------------------------------------------
_JS_FLOAT = re.compile(r"^-?\d+(\.\d+)?$")
_JS_BIGINT = re.compile(r"^-?\d+n$")
_JS_2D_HEADS = ((re.compile(r"\[\s*\["), "]"), (re.compile(r"\bnew\s+Array\(\s*\["), ")"))
_JS_1D = re.compile(r"\[(.*?)\]|\bnew\s+Array\((.*?)\)")  # anchored (match) and without nesting: linear
_JS_OBJ = re.compile(r"\{(.*?)\}")  # anchored too


def _js_2d_end(code: str) -> int | None:
    r"""The end of ``re.match(BFCL's 2-D array pattern, code)``, or None. The pattern is
    ``\[\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\]`` (or the same inside ``new Array(...)``): its lazy rows may
    swallow "]" and "," too, so backtracking tries exponentially many splits. The first split the
    backtracking would accept is computed instead, right to left: for every "]" (a row's possible
    end) the end of the first successful rest of the match, for every "," the first acceptable row
    after it. Both only look further right, and each position is visited once."""
    for head_re, closer in _JS_2D_HEADS:
        head = head_re.match(code)
        if head:
            break
    else:
        return None
    n = len(code)
    newlines = [i for i, ch in enumerate(code) if ch == "\n"]

    def line_end(pos: int) -> int:  # a row's ".*?" may not cross a newline
        i = bisect.bisect_left(newlines, pos)
        return newlines[i] if i < len(newlines) else n

    after_row: dict[int, int] = {}  # "]" position -> end of the match when a row ends there
    row_ends: list[int] = []  # the "]" positions in after_row, descending (negated, for bisect)
    after_comma: dict[int, int] = {}

    def first_row_end(start: int) -> int | None:  # the first "]" >= start on its line that succeeds
        i = bisect.bisect_right(row_ends, -start) - 1
        if i >= 0 and -row_ends[i] < line_end(start):
            return after_row[-row_ends[i]]
        return None

    for pos in range(n - 1, head.end() - 1, -1):
        ch = code[pos]
        if ch == "]":
            nxt = _skip_ws(code, pos + 1)
            if nxt < n and code[nxt] == closer:
                end: int | None = nxt + 1
            elif nxt < n and code[nxt] == ",":
                end = after_comma.get(nxt)
            else:
                end = None
            if end is not None:
                after_row[pos] = end
                row_ends.append(-pos)
        elif ch == ",":
            nxt = _skip_ws(code, pos + 1)
            if nxt < n and code[nxt] == "[":
                end = first_row_end(nxt + 1)
                if end is not None:
                    after_comma[pos] = end
    return first_row_end(head.end())


def _js_brackets(text: str) -> list[str]:
    r"""``re.findall(r"\[(.*?)\]", text)``."""
    return _find_all(text, "[", "]", nonempty=False)


def _js_pairs(content: str) -> list[tuple[str, str]]:
    r"""``re.findall(r"([^:]+):\s*(.*?)(?:,\s*(?=[^,]+:)|$)", content)`` for a ``content`` without newlines
    (the inside of BFCL's ``\{(.*?)\}``): a value ends at the first "," after which a key follows."""
    n = len(content)
    colons = [m.start() for m in re.finditer(":", content)]
    commas = [m.start() for m in re.finditer(",", content)] + [n]  # n: "[^,]+" may also end at the end
    out, pos, i, j = [], 0, 0, 0  # i, j: pointers into commas and colons, both only move right
    while pos < n:
        if content[pos] == ":":  # "[^:]+" needs one character
            pos += 1
            continue
        colon = content.find(":", pos)
        if colon < 0:
            break
        start = _skip_ws(content, colon + 1)
        end = next_pos = n
        while commas[i] < start:
            i += 1
        while commas[i] < n:
            comma, bound = commas[i], commas[i + 1]
            while j < len(colons) and colons[j] < bound:
                j += 1
            # the last ":" before the next comma; "(?=[^,]+:)" holds after some of the blank space
            if j and colons[j - 1] >= comma + 2:
                end = comma
                next_pos = min(_skip_ws(content, comma + 1), colons[j - 1] - 1)
                break
            i += 1
        out.append((content[pos:colon], content[start:end]))
        pos = next_pos
    return out


def _js_untyped(text: str) -> Any:
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if text[:1] in ("'", '"') and text.endswith(text[0]):
        return text[1:-1]
    return _number_or_text(text)


def decode_js(text: str, js_type: str, nested: str | None = None) -> Any:
    """Decode a JavaScript source literal as BFCL does; unreadable literals stay strings.

    >>> decode_js("[1, 'a']", "array"), decode_js("{a: 2}", "dict")
    ([1, 'a'], {'a': 2})
    """
    if js_type == "String":
        if text[:1] in ("'", '"') and text.endswith(text[0]):
            return text[1:-1]
        return text
    if js_type == "integer":
        return int(text) if _INT.match(text) else text
    if js_type == "float":
        return float(text) if _JS_FLOAT.match(text) else text
    if js_type == "Bigint":
        return int(text[:-1]) if _JS_BIGINT.match(text) else text
    if js_type == "Boolean":
        return text == "true" if text in ("true", "false") else text
    if js_type == "any":
        return text
    if js_type == "array":
        try:
            return _js_array(text.strip(), nested)
        except Exception:  # BFCL falls back to the raw text on any failure
            return text.strip()
    if js_type == "dict":
        return _js_object(text.strip())
    raise UnsupportedLiteral(f"unknown JavaScript type {js_type!r}")


def _js_array(code: str, nested: str | None) -> Any:
    end = _js_2d_end(code)
    if end is not None:
        rows = []
        for i, inner in enumerate(_js_brackets(code[:end])):
            inner = inner.strip()
            if i == 0 and inner.startswith("["):
                inner = inner[1:]
            rows.append([_js_untyped(e) for e in inner.split(",")])
        return rows
    m = _JS_1D.match(code)
    if not m:
        return code
    body = (m.group(1) if m.group(1) is not None else m.group(2) or "").strip()
    parts = body.split(",") if body else []
    if nested:
        return [decode_js(p.strip(), nested) for p in parts]
    return [_js_untyped(p) for p in parts]


def _js_object(code: str) -> Any:
    if code == "{}":
        return {}
    m = _JS_OBJ.match(code)
    if not m:
        return code
    out: dict[str, Any] = {}
    for key, value in _js_pairs(m.group(1)):
        key, value = key.strip().strip("'\""), value.strip()
        if value.startswith("[") and value.endswith("]"):
            out[key] = decode_js(value, "array")
        elif value.startswith("{") and value.endswith("}"):
            out[key] = _js_object(value)
        else:
            out[key] = _js_untyped(value.strip("'\""))
    return out


def encode_js(value: Any, js_type: str, nested: str | None = None) -> str:
    """Write a Python value as the JavaScript literal that :func:`decode_js` reads back."""
    if js_type == "Bigint":
        return f"{value}n"
    if isinstance(value, bool):
        return "true" if value else "false"
    if js_type == "array" and isinstance(value, (list, tuple)):
        return "[" + ", ".join(encode_js(v, nested) if nested else _js_literal(v) for v in value) + "]"
    if js_type == "dict" and isinstance(value, dict):
        return "{" + ", ".join(f'"{k}": {_js_literal(v)}' for k, v in value.items()) + "}"
    if js_type == "String" and isinstance(value, str) and nested is None and value[:1] in "'\"":
        return f'"{value}"'  # a value that itself starts with a quote must be wrapped to survive
    if js_type == "float" and type(value) is float and math.isfinite(value):
        return format(Decimal(repr(value)), "f")  # BFCL reads no exponent: 1e-05 -> "0.00001"
    return str(value)


def _js_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_js_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}": {_js_literal(v)}' for k, v in value.items()) + "}"
    return str(value)
