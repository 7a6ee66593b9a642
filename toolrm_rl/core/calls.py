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
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = [
    "ToolCall",
    "ToolSpec",
    "ToolCatalog",
    "CatalogError",
    "BFCL_TO_JSON_TYPE",
    "calls_from_bfcl",
    "calls_to_bfcl",
    "calls_from_openai",
    "calls_to_openai",
    "load_json_field",
]


class CatalogError(ValueError):
    """A tool catalog or call list that cannot be read; the message names the offending item."""


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
        props = self.parameters.get("properties") or {}
        return props if isinstance(props, dict) else {}

    @property
    def required(self) -> list[str]:
        """Names of required parameters, in schema order."""
        req = self.parameters.get("required") or []
        return [r for r in req if isinstance(r, str)] if isinstance(req, list) else []

    def json_schema(self) -> dict[str, Any]:
        """The parameters as standard JSON schema (BFCL and Java/JS type names converted)."""
        return _to_json_schema(self.parameters, top=True)

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
    def load(cls, tools: Any) -> "ToolCatalog":
        """Build a catalog from OpenAI tools, plain/BFCL function docs, a single doc, or their JSON string.

        Raises :class:`CatalogError` naming the item index and field when an entry is unreadable.
        """
        if isinstance(tools, ToolCatalog):
            return tools
        tools = load_json_field(tools, "tools")
        if tools is None:
            return cls()
        if isinstance(tools, dict):
            tools = [tools]
        if not isinstance(tools, list):
            raise CatalogError(f"tools: expected a list of function specs, got {type(tools).__name__}")
        return cls(_spec_from_item(item, i) for i, item in enumerate(tools))

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


def _spec_from_item(item: Any, index: int) -> ToolSpec:
    where = f"tools[{index}]"
    if not isinstance(item, dict):
        raise CatalogError(f"{where}: expected an object, got {type(item).__name__}")
    if item.get("type") == "function" and isinstance(item.get("function"), dict):
        item, where = item["function"], where + ".function"
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise CatalogError(f"{where}.name: missing or not a string")
    params = item.get("parameters", item.get("input_schema", item.get("arguments")))
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, dict):
        raise CatalogError(f"{where}.parameters: expected an object, got {type(params).__name__}")
    props = params.get("properties", {})
    if props is not None and not isinstance(props, dict):
        raise CatalogError(f"{where}.parameters.properties: expected an object")
    dialect = "bfcl" if params.get("type") == "dict" or _has_bfcl_types(props or {}) else "json_schema"
    description = item.get("description") or ""
    return ToolSpec(name=name, description=str(description), parameters=params, dialect=dialect)


_BFCL_ONLY_TYPES = {"float", "tuple", "any", "dict", "String", "Boolean", "Bigint", "HashMap", "ArrayList",
                    "Array", "long", "byte", "short", "char", "double", "Hashtable", "Set", "Queue", "Stack"}


def _has_bfcl_types(props: dict[str, Any]) -> bool:
    # JSON schema allows a list of types (``["string", "null"]``), which is not hashable.
    return any(isinstance(p, dict) and isinstance(p.get("type"), str) and p["type"] in _BFCL_ONLY_TYPES
               for p in props.values())


# -- call adapters ---------------------------------------------------------------------------------

def load_json_field(value: Any, field_name: str) -> Any:
    """Decode ``value`` if it is a JSON string (datasets store tools and calls as JSON text).

    Raises :class:`CatalogError` naming ``field_name`` when the string is not valid JSON.
    """
    if isinstance(value, (str, bytes)):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise CatalogError(f"{field_name}: not valid JSON ({err.msg} at char {err.pos})") from None
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
            raise CatalogError(f"calls[{i}]: expected {{name: {{arguments}}}}, got {item!r:.80}")
        if set(item) >= {"name"} and ("arguments" in item or "parameters" in item) and isinstance(item["name"], str):
            args = item.get("arguments", item.get("parameters"))
            args = load_json_field(args, f"calls[{i}].arguments") or {}
            if not isinstance(args, dict):
                raise CatalogError(f"calls[{i}].arguments: expected an object")
            calls.append(ToolCall(item["name"], args))
            continue
        for name, args in item.items():
            if not isinstance(args, dict):
                raise CatalogError(f"calls[{i}].{name}: arguments must be an object, got {type(args).__name__}")
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


def calls_to_openai(calls: Iterable[ToolCall]) -> list[dict[str, Any]]:
    """Calls -> OpenAI ``tool_calls`` list with ids ``call_0``, ``call_1``, ..."""
    return [c.to_openai(f"call_{i}") for i, c in enumerate(calls)]
