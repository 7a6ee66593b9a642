"""BFCL's type system: Python-side type tables and Java/JavaScript literal decoding.

BFCL hands Java and JavaScript arguments to its checker as *source literals* (``"5L"``,
``"new ArrayList<>(Arrays.asList(1, 2))"``, ``"[1, 'a']"``) and converts them to Python values
before comparing. Matching BFCL exactly means decoding them the same way, including its
fallbacks (an unreadable literal stays a string, which then fails the type check). The encoders
are the inverse used to write ground truth as BFCL-style model output (tests, benchmark building).
"""

from __future__ import annotations

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
_JAVA_ARRAY = re.compile(r"new\s+\w+\[\]\s*\{(.*?)\}")
_JAVA_ASLIST = re.compile(r"new\s+ArrayList<\w*>\(Arrays\.asList\((.+?)\)\)")
_JAVA_ADDS = re.compile(r"new\s+ArrayList<\w*>\(\)\s*\{\{\s*(.+?)\s*\}\}", re.DOTALL)
_JAVA_ADD = re.compile(r"add\((.+?)\)")
_JAVA_EMPTY_LIST = re.compile(r"new\s+ArrayList<\w*>\(\)")
_JAVA_MAP = re.compile(r"new\s+HashMap<.*?>\s*\(\)\s*\{\s*\{?\s*(.*?)\s*\}?\s*\}", re.DOTALL)
_JAVA_PUT = re.compile(r"put\(\"(.*?)\",\s*(.*?)\)")
_JAVA_EMPTY_MAP = re.compile(r"new\s+HashMap<.*?>\s*\(\)")


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
        m = _JAVA_ARRAY.search(text)
        if not m:
            return text
        return [_java_element(x.strip(), nested, False) for x in m.group(1).split(",") if x.strip()]
    if java_type == "ArrayList":
        m = _JAVA_ASLIST.search(text)
        if m:
            return [_java_element(x.strip(), nested, True) for x in m.group(1).split(",")]
        m = _JAVA_ADDS.search(text)
        if m:
            return [_java_element(x.strip(), nested, True) for x in _JAVA_ADD.findall(m.group(1))]
        return [] if _JAVA_EMPTY_LIST.search(text) else text
    if java_type == "HashMap":
        m = _JAVA_MAP.search(text)
        if m:
            return {k: _java_untyped(v.strip()) for k, v in _JAVA_PUT.findall(m.group(1))} if m.group(1).strip() else {}
        return {} if _JAVA_EMPTY_MAP.search(text) else text
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
_JS_2D = re.compile(r"\[\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\]|\bnew\s+Array\(\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\)")
_JS_1D = re.compile(r"\[(.*?)\]|\bnew\s+Array\((.*?)\)")
_JS_BRACKETS = re.compile(r"\[(.*?)\]")
_JS_OBJ = re.compile(r"\{(.*?)\}")
_JS_PAIR = re.compile(r"([^:]+):\s*(.*?)(?:,\s*(?=[^,]+:)|$)")


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
    m = _JS_2D.match(code)
    if m:
        rows = []
        for i, inner in enumerate(_JS_BRACKETS.findall(m.group(0))):
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
    for key, value in _JS_PAIR.findall(m.group(1)):
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
