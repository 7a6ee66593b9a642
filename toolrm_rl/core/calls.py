"""The one representation of tool catalogs and tool calls, with adapters at the edges.

Everything in toolrm-rl speaks :class:`ToolCall` (a name and an argument dict; a parallel
answer is an ordered ``list[ToolCall]``) and :class:`ToolCatalog` (ordered function specs).
Formats met in the wild (OpenAI tools and ``tool_calls``, plain function docs, BFCL docs with
``"type": "dict"``, BFCL answer dicts ``{"f": {"a": 1}}``) are converted here and nowhere else.

Function specs keep the parameter schema *as given* (BFCL's ``float``/``tuple``/``any`` and its
Java/JavaScript type names included): the BFCL matcher needs the original type names, and
:meth:`ToolSpec.json_schema` gives the standard JSON-schema view for chat templates and jsonschema.
"""

from __future__ import annotations

import copy
import json
import reprlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = [
    "ToolCall",
    "ToolSpec",
    "ToolCatalog",
    "CatalogError",
    "EmptyCatalogError",
    "MAX_SCHEMA_DEPTH",
    "BFCL_TO_JSON_TYPE",
    "calls_from_any",
    "calls_from_bfcl",
    "calls_to_bfcl",
    "calls_from_openai",
    "calls_to_openai",
    "load_json_field",
    "short_repr",
]


class CatalogError(ValueError):
    """A tool catalog or call list that cannot be read; the message names the offending item."""


class EmptyCatalogError(CatalogError):
    """``ToolCatalog.load(..., strict=True)`` got no function at all (``None``, ``""``, ``[]``)."""


# Deepest nesting of dicts/lists a function's ``parameters`` may have (a real schema has < 20; the
# recursive converters and jsonschema would overflow the stack on a few hundred).
MAX_SCHEMA_DEPTH = 64


class _ShortRepr(reprlib.Repr):
    """reprlib with ints bounded too: ``repr`` of an int over 4,300 digits raises ValueError, and
    a huge one is slow to write in decimal."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 3, 60, 60, 40

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<int of {x.bit_length()} bits>"
        return repr(x)


_SHORT_REPR = _ShortRepr()


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to at most ``limit`` characters, in time and memory bounded by ``limit``
    whatever the value (huge ints, deep nesting, long strings): for error messages about values a
    model wrote. Never raises.

    >>> short_repr(10 ** 5000), short_repr([[[[1]]]]), short_repr("x" * 100, 10)
    ('<int of 16610 bits>', '[[[[...]]]]', "'xxxxxx...")
    """
    try:
        text = _SHORT_REPR.repr(value)
    except Exception:  # a repr that raises (or recurses) must not take the error message with it
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:max(limit - 3, 0)] + "..."


# BFCL (Gorilla) type names, Java and JavaScript ones included, mapped to JSON-schema types.
# ``any`` has no JSON-schema equivalent that BFCL honours; BFCL itself maps it to string.
BFCL_TO_JSON_TYPE: dict[str, str] = {
    "integer": "integer", "int": "integer", "number": "number", "float": "number",
    "double": "number", "string": "string", "str": "string", "boolean": "boolean",
    "bool": "boolean", "array": "array", "list": "array", "tuple": "array", "dict": "object",
    "object": "object", "any": "string", "Any": "string", "null": "null",
    # Java
    "byte": "integer", "short": "integer", "long": "integer", "char": "string",
    "String": "string", "ArrayList": "array", "Array": "array", "Set": "array",
    "Queue": "array", "Stack": "array", "HashMap": "object", "Hashtable": "object",
    # JavaScript
    "Boolean": "boolean", "Bigint": "integer",
}


@dataclass(slots=True)  # slots: created for every parsed call of every rollout
class ToolCall:
    """One function call: ``name`` and its keyword ``arguments`` (JSON-like values).

    >>> ToolCall("get_weather", {"city": "Paris"}).to_bfcl()
    {'get_weather': {'city': 'Paris'}}
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        try:
            return f"ToolCall(name={self.name!r}, arguments={self.arguments!r})"
        except (ValueError, RecursionError):  # an int over 4,300 digits, nesting deeper than repr goes
            return f"ToolCall(name={short_repr(self.name)}, arguments={short_repr(self.arguments, 200)})"

    def to_bfcl(self) -> dict[str, dict[str, Any]]:
        """BFCL's decoded-output form ``{name: {param: value}}``."""
        return {self.name: dict(self.arguments)}

    def to_openai(self, call_id: str | None = None) -> dict[str, Any]:
        """An OpenAI ``tool_calls`` item; ``arguments`` is a JSON string as the API sends it."""
        item: dict[str, Any] = {
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }
        if call_id is not None:
            item["id"] = call_id
        return item


@dataclass
class ToolSpec:
    """One function a model may call.

    ``parameters`` is the object schema as given by the source (``properties``, ``required``,
    possibly BFCL type names); ``dialect`` records where it came from (``"bfcl"`` or ``"json_schema"``).
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    dialect: str = "json_schema"

    @property
    def properties(self) -> dict[str, Any]:
        """Parameter name -> parameter schema (empty dict when the function takes none)."""
        params = self.parameters if isinstance(self.parameters, dict) else {}
        props = params.get("properties") or {}
        return props if isinstance(props, dict) else {}

    @property
    def required(self) -> list[str]:
        """Names of required parameters, in schema order."""
        params = self.parameters if isinstance(self.parameters, dict) else {}
        req = params.get("required") or []
        return [r for r in req if isinstance(r, str)] if isinstance(req, list) else []

    def json_schema(self) -> dict[str, Any]:
        """The parameters as standard JSON schema (BFCL and Java/JS type names converted).

        Raises :class:`CatalogError` when ``parameters`` is nested deeper than :data:`MAX_SCHEMA_DEPTH`
        (only possible for a spec built by hand: :meth:`ToolCatalog.load` refuses those).
        """
        if _depth_exceeds(self.parameters, MAX_SCHEMA_DEPTH):
            raise CatalogError(f"{short_repr(self.name)}.parameters: nested deeper than {MAX_SCHEMA_DEPTH} levels")
        return _to_json_schema(self.parameters if isinstance(self.parameters, dict) else {}, top=True)

    def to_openai(self) -> dict[str, Any]:
        """An OpenAI ``tools`` item with a standard JSON-schema ``parameters``."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.json_schema()},
        }

    def to_dict(self) -> dict[str, Any]:
        """The plain function doc ``{name, description, parameters}`` with parameters as given."""
        return {"name": self.name, "description": self.description, "parameters": copy.deepcopy(self.parameters)}


def _to_json_schema(schema: Any, top: bool = False) -> Any:
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = BFCL_TO_JSON_TYPE.get(value, value)
        elif key == "properties" and isinstance(value, dict):
            out[key] = {k: _to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _to_json_schema(value)
        else:
            out[key] = copy.deepcopy(value)
    if top:
        out["type"] = "object"
        out.setdefault("properties", {})
    return out


class ToolCatalog:
    """An ordered set of :class:`ToolSpec`, looked up by name.

    ``ToolCatalog.load`` accepts every catalog format the project meets::

        >>> cat = ToolCatalog.load('[{"name": "f", "parameters": {"type": "dict", "properties": {}}}]')
        >>> cat.names(), cat["f"].dialect
        (['f'], 'bfcl')
    """

    def __init__(self, specs: Iterable[ToolSpec] = ()) -> None:
        self._specs: dict[str, ToolSpec] = {}
        for spec in specs:
            self._specs[spec.name] = spec

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def load(cls, tools: Any, *, strict: bool = False) -> "ToolCatalog":
        """Build a catalog from OpenAI tools, plain/BFCL function docs, a single doc, or their JSON string
        (``str`` or UTF-8 ``bytes``).

        Raises :class:`CatalogError` (and nothing else) naming the item index and field when the
        input is unreadable: invalid JSON or UTF-8, nesting too deep for JSON, a value that is not a
        list of objects, an entry without a string ``name``, ``parameters`` (or its ``properties``)
        that is not an object, a schema nested deeper than :data:`MAX_SCHEMA_DEPTH`.

        ``None``, a blank string and ``[]`` give an empty catalog, unless ``strict``: then they raise
        :class:`EmptyCatalogError` (a :class:`CatalogError`), and so do these, which the lenient
        mode lets through: two functions with the same name (the later one would replace the
        earlier), a parameter schema that is not an object, ``required`` that is not a list of
        strings. Callers that must not run without a valid catalog (a reward's schema gate) use
        ``strict=True`` and catch :class:`CatalogError`.
        """
        if isinstance(tools, ToolCatalog):
            if strict and not len(tools):
                raise EmptyCatalogError("tools: the catalog is empty")
            return tools
        tools = load_json_field(tools, "tools")
        if tools is None:
            if strict:
                raise EmptyCatalogError("tools: missing or blank")
            return cls()
        if isinstance(tools, dict):
            tools = [tools]
        if not isinstance(tools, list):
            raise CatalogError(f"tools: expected a list of function specs, got {type(tools).__name__}")
        if strict and not tools:
            raise EmptyCatalogError("tools: an empty list (no function to check calls against)")
        specs = [_spec_from_item(item, i, strict) for i, item in enumerate(tools)]
        if strict:
            seen: dict[str, int] = {}
            for i, spec in enumerate(specs):
                if spec.name in seen:
                    raise CatalogError(f"tools[{i}].name: {short_repr(spec.name)} repeats tools[{seen[spec.name]}]")
                seen[spec.name] = i
        return cls(specs)

    # -- access -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> ToolSpec:
        return self._specs[name]

    def get(self, name: str) -> ToolSpec | None:
        """The spec called ``name`` or None."""
        return self._specs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self):
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ToolCatalog) and list(self._specs.values()) == list(other._specs.values())

    def __repr__(self) -> str:
        return f"ToolCatalog({self.names()})"

    def names(self) -> list[str]:
        """Function names in catalog order."""
        return list(self._specs)

    def to_openai(self) -> list[dict[str, Any]]:
        """The catalog as an OpenAI ``tools`` list (what chat templates take as ``tools=``)."""
        return [spec.to_openai() for spec in self]

    def to_dicts(self) -> list[dict[str, Any]]:
        """The catalog as plain function docs with parameters as given (BFCL format for BFCL specs)."""
        return [spec.to_dict() for spec in self]


def _spec_from_item(item: Any, index: int, strict: bool = False) -> ToolSpec:
    where = f"tools[{index}]"
    if not isinstance(item, dict):
        raise CatalogError(f"{where}: expected an object, got {type(item).__name__}")
    if item.get("type") == "function" and isinstance(item.get("function"), dict):
        item, where = item["function"], where + ".function"
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise CatalogError(f"{where}.name: missing or not a string")
    of = f" (function {short_repr(name, 60)})"
    params = item.get("parameters", item.get("input_schema", item.get("arguments")))
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, dict):
        raise CatalogError(f"{where}.parameters: expected an object, got {type(params).__name__}{of}")
    props = params.get("properties", {})
    if props is not None and not isinstance(props, dict):
        raise CatalogError(f"{where}.parameters.properties: expected an object, got {type(props).__name__}{of}")
    if _depth_exceeds(params, MAX_SCHEMA_DEPTH):
        raise CatalogError(f"{where}.parameters: nested deeper than {MAX_SCHEMA_DEPTH} levels{of}")
    if strict:
        for key, schema in (props or {}).items():
            if not isinstance(schema, dict):
                raise CatalogError(f"{where}.parameters.properties.{str(key)[:60]}: expected an object, "
                                   f"got {type(schema).__name__}{of}")
        required = params.get("required")
        if required is not None and not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
            raise CatalogError(f"{where}.parameters.required: expected a list of parameter names{of}")
    dialect = "bfcl" if params.get("type") == "dict" or _has_bfcl_types(props or {}) else "json_schema"
    description = item.get("description") or ""
    return ToolSpec(name=name, description=str(description), parameters=params, dialect=dialect)


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests dicts/lists more than ``limit`` levels deep (iterative: any depth)."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, tuple)))
    return False


_BFCL_ONLY_TYPES = {"float", "tuple", "any", "dict", "String", "Boolean", "Bigint", "HashMap", "ArrayList",
                    "Array", "long", "byte", "short", "char", "double", "Hashtable", "Set", "Queue", "Stack"}


def _has_bfcl_types(props: dict[str, Any]) -> bool:
    # JSON schema allows a list of types (``["string", "null"]``), which is not hashable.
    return any(isinstance(p, dict) and isinstance(p.get("type"), str) and p["type"] in _BFCL_ONLY_TYPES
               for p in props.values())


# -- call adapters ---------------------------------------------------------------------------------

def load_json_field(value: Any, field_name: str) -> Any:
    """Decode ``value`` if it is a JSON string or UTF-8 bytes (datasets store tools and calls as JSON text).

    Raises :class:`CatalogError` naming ``field_name`` when it is not valid JSON (invalid UTF-8 and
    nesting too deep for the decoder included); other values are returned as they are.
    """
    if isinstance(value, (str, bytes, bytearray)):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise CatalogError(f"{field_name}: not valid JSON ({err.msg} at char {err.pos})") from None
        except UnicodeDecodeError as err:
            raise CatalogError(f"{field_name}: not valid UTF-8 (byte {err.start})") from None
        except RecursionError:
            raise CatalogError(f"{field_name}: JSON nested too deeply to decode") from None
        except ValueError as err:  # e.g. an integer over Python's 4,300-digit conversion limit
            raise CatalogError(f"{field_name}: not valid JSON ({str(err)[:120]})") from None
    return value


def calls_from_bfcl(items: Any) -> list[ToolCall]:
    """``[{"f": {"a": 1}}, ...]`` (or its JSON string, or one dict with several keys) -> calls.

    >>> calls_from_bfcl('[{"f": {"a": 1}}]')
    [ToolCall(name='f', arguments={'a': 1})]
    """
    items = load_json_field(items, "calls")
    if items is None:
        return []
    if isinstance(items, dict):
        items = [{k: v} for k, v in items.items()]
    if not isinstance(items, list):
        raise CatalogError(f"calls: expected a list, got {type(items).__name__}")
    calls = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not item:
            raise CatalogError(f"calls[{i}]: expected {{name: {{arguments}}}}, got {short_repr(item)}")
        if set(item) >= {"name"} and ("arguments" in item or "parameters" in item) and isinstance(item["name"], str):
            args = item.get("arguments", item.get("parameters"))
            args = load_json_field(args, f"calls[{i}].arguments") or {}
            if not isinstance(args, dict):
                raise CatalogError(f"calls[{i}].arguments: expected an object")
            calls.append(ToolCall(item["name"], args))
            continue
        for name, args in item.items():
            if not isinstance(args, dict):
                raise CatalogError(f"calls[{i}].{str(name)[:60]}: arguments must be an object, "
                                   f"got {type(args).__name__}")
            calls.append(ToolCall(str(name), dict(args)))
    return calls


def calls_to_bfcl(calls: Iterable[ToolCall]) -> list[dict[str, dict[str, Any]]]:
    """Calls -> BFCL decoded-output form ``[{name: args}, ...]``."""
    return [c.to_bfcl() for c in calls]


def calls_from_openai(tool_calls: Any) -> list[ToolCall]:
    """An OpenAI ``tool_calls`` list (``arguments`` as a JSON string or an object) -> calls."""
    tool_calls = load_json_field(tool_calls, "tool_calls") or []
    if not isinstance(tool_calls, list):
        raise CatalogError("tool_calls: expected a list")
    calls = []
    for i, item in enumerate(tool_calls):
        fn = item.get("function", item) if isinstance(item, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise CatalogError(f"tool_calls[{i}].function.name: missing")
        args = load_json_field(fn.get("arguments"), f"tool_calls[{i}].function.arguments") or {}
        if not isinstance(args, dict):
            raise CatalogError(f"tool_calls[{i}].function.arguments: expected an object")
        calls.append(ToolCall(fn["name"], args))
    return calls


def _is_openai_call(item: Any) -> bool:
    """An OpenAI ``tool_calls`` item: an object whose ``function`` is an object with a string ``name``."""
    fn = item.get("function") if isinstance(item, Mapping) else None
    return isinstance(fn, Mapping) and isinstance(fn.get("name"), str)


def _is_flat_call(item: Any) -> bool:
    """``{"name": str, "arguments": ...}``: the form both readers take."""
    return isinstance(item, Mapping) and isinstance(item.get("name"), str) and "arguments" in item


def calls_from_any(value: Any) -> list[ToolCall]:
    """Any call list a dataset or client writes -> calls; the one rule that tells the styles apart.

    ``value`` (or its JSON text) is OpenAI ``tool_calls`` when any item is an OpenAI call (an object whose
    ``function`` is an object with a string ``name``); then every item must be one, or the flat
    ``{"name", "arguments"}`` form. Otherwise it is read as BFCL calls (``[{"f": {"a": 1}}]``, one dict
    of several calls, or flat items). A list that mixes OpenAI and BFCL items, or a bad item, raises
    :class:`CatalogError` naming the item. (A BFCL call of a function named ``function`` whose arguments
    hold a string ``name`` reads as an OpenAI call: no rule can tell them apart.)

    >>> calls_from_any('[{"f": {"a": 1}}]') == calls_from_any([{"type": "function", "function": {"name": "f",
    ...     "arguments": '{"a": 1}'}}]) == calls_from_any([{"name": "f", "arguments": {"a": 1}}])
    True
    >>> calls_from_any([{"function": {"name": "f", "arguments": {}}}, {"g": {}}])
    Traceback (most recent call last):
    ...
    toolrm_rl.core.calls.CatalogError: calls[1]: a BFCL-style call in a list of OpenAI tool calls, got {'g': {}}
    """
    value = load_json_field(value, "calls")
    if isinstance(value, (list, tuple)) and any(_is_openai_call(item) for item in value):
        for i, item in enumerate(value):
            if not (_is_openai_call(item) or _is_flat_call(item)):
                raise CatalogError(f"calls[{i}]: a BFCL-style call in a list of OpenAI tool calls, got "
                                   f"{short_repr(item)}")
        return calls_from_openai(list(value))
    return calls_from_bfcl(value)


def calls_to_openai(calls: Iterable[ToolCall]) -> list[dict[str, Any]]:
    """Calls -> OpenAI ``tool_calls`` list with ids ``call_0``, ``call_1``, ..."""
    return [c.to_openai(f"call_{i}") for i, c in enumerate(calls)]
