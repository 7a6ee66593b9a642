"""Rule checks of tool calls against the catalog: the rule-based reward's building block.

:func:`check_calls` reports every violation (unknown function, missing required parameter,
unknown parameter, wrong type, value outside an enum, other JSON-schema constraints), each with a
category that maps onto BFCL's error families (:data:`BFCL_FAMILY`).

Types follow JSON schema and BFCL's extensions (``float``, ``tuple``, ``any``, ``dict``, Java and
JavaScript names): an int is accepted where a float/number is expected, a bool is never a number,
and ``null`` for an optional parameter means "not set" (clients and BFCL answers send it so).
The common keywords (``type``, ``properties``, ``required``, ``items``, ``enum``) are checked by a
compiled fast path, because a GRPO step checks thousands of rollouts; parameter schemas that use
any other validation keyword (``minimum``, ``pattern``, ``anyOf``, ...) are additionally validated
with :mod:`jsonschema`, and its findings are reported as ``constraint`` violations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

from toolrm_rl.core.calls import BFCL_TO_JSON_TYPE, ToolCall, ToolCatalog, ToolSpec

__all__ = ["Violation", "SchemaReport", "check_calls", "CATEGORIES", "BFCL_FAMILY", "compile_catalog"]

# Violation category -> the BFCL error_type family a checker would report for it.
BFCL_FAMILY: dict[str, str] = {
    "unknown_function": "simple_function_checker:wrong_func_name",
    "missing_required": "simple_function_checker:missing_required",
    "unexpected_param": "simple_function_checker:unexpected_param",
    "type": "type_error:simple",
    "nested_type": "type_error:nested",
    "enum": "value_error:others",
    "constraint": "value_error:others",
    "no_call": "simple_function_checker:wrong_count",
}
CATEGORIES = tuple(BFCL_FAMILY)


@dataclass(slots=True)
class Violation:
    """One rule violation in call ``call_index`` of ``function`` (``param`` is a dotted path, or None)."""

    call_index: int
    function: str
    param: str | None
    category: str
    message: str

    @property
    def bfcl_error_type(self) -> str:
        """The BFCL ``error_type`` family this violation corresponds to."""
        return BFCL_FAMILY[self.category]


@dataclass(slots=True)
class SchemaReport:
    """All violations of a call list; ``ok`` when there are none."""

    n_calls: int
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every call passes every check."""
        return not self.violations

    @property
    def categories(self) -> list[str]:
        """Distinct violation categories, in order of first occurrence."""
        return list(dict.fromkeys(v.category for v in self.violations))

    def summary(self) -> str:
        """One line for logs: ``ok`` or the violations joined by ``; ``."""
        return "ok" if self.ok else "; ".join(f"[{v.call_index}] {v.function}: {v.message}" for v in self.violations)


# -- compiled fast path -------------------------------------------------------------------------------
_FAST_KEYS = {"type", "properties", "required", "items", "enum", "description", "default", "title",
              "format", "examples", "additionalProperties", "$schema", "optional", "nullable"}
# JSON-schema / BFCL type name -> the Python types that satisfy it (None: anything goes).
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list, tuple), "object": (dict,), "null": (type(None),),
}


def _allowed_types(type_name: Any) -> frozenset | None:
    if isinstance(type_name, list):
        return _allowed_types_cached(tuple(t if isinstance(t, str) else repr(t) for t in type_name))
    return _allowed_types_cached(type_name if isinstance(type_name, str) or type_name is None else repr(type_name))


@lru_cache(maxsize=None)  # a handful of distinct type names across all catalogs
def _allowed_types_cached(type_name: str | tuple | None) -> frozenset | None:
    if type_name is None or type_name in ("any", "Any"):
        return None
    names = type_name if isinstance(type_name, tuple) else [type_name]
    allowed: set = set()
    for name in names:
        types = _PY_TYPES.get(BFCL_TO_JSON_TYPE.get(name, name)) if isinstance(name, str) else None
        if types is None:
            return None  # a type name we do not know: not ours to reject
        allowed.update(types)
    return frozenset(allowed)


class _ValueCheck:
    """One (nested) parameter schema compiled to set look-ups: no dict walking per check."""

    __slots__ = ("type_name", "types", "enum", "items", "props", "required", "closed", "leaf", "nullable")

    def __init__(self, schema: dict, depth: int = 0) -> None:
        self.type_name = schema.get("type")
        self.types = _allowed_types(self.type_name)
        enum = schema.get("enum")
        self.enum = enum if isinstance(enum, list) else None
        items, props = schema.get("items"), schema.get("properties")
        deeper = depth < 8
        self.items = _ValueCheck(items, depth + 1) if deeper and isinstance(items, dict) else None
        self.props = ({k: _ValueCheck(v, depth + 1) for k, v in props.items() if isinstance(v, dict)}
                      if deeper and isinstance(props, dict) else None)
        req = schema.get("required")
        self.required = tuple(r for r in req if isinstance(r, str)) if isinstance(req, list) else ()
        # additionalProperties: false on a nested object: keys outside ``properties`` are unexpected
        self.closed = schema.get("additionalProperties") is False
        self.leaf = self.enum is None and self.items is None and self.props is None and not self.required \
            and not self.closed
        # null where the schema's own default is null means "not set" (BFCL answers list None then)
        self.nullable = schema.get("nullable") is True or ("default" in schema and schema["default"] is None)

    def check(self, value: Any, path: str, literal_strings: bool, out: list, depth: int) -> None:
        vtype = type(value)
        if self.leaf and (self.types is None or vtype in self.types):
            return  # the common case: a scalar of the right type
        if value is None and self.nullable:
            return
        if self.types is not None and vtype not in self.types and not (literal_strings and vtype is str):
            out.append(("type" if depth == 0 else "nested_type", path,
                        f"{path}: expected {self.type_name}, got {vtype.__name__} ({value!r:.40})"))
            return
        if self.enum is not None and not (literal_strings and vtype is str):
            try:  # Python's ``in`` first; JSON equality (a bool is not a number) only for non-strings
                known = value in self.enum and (vtype is str or any(_json_equal(value, e) for e in self.enum))
            except TypeError:  # unhashable/uncomparable value against the enum
                known = False
            if not known:
                out.append(("enum", path, f"{path}: {value!r:.40} is not one of {self.enum!r:.80}"))
        if self.items is not None and (vtype is list or vtype is tuple):
            for i, item in enumerate(value):
                self.items.check(item, f"{path}[{i}]", literal_strings, out, depth + 1)
        if vtype is dict:
            for req in self.required:
                if req not in value:
                    out.append(("missing_required", f"{path}.{req}", f"{path}: missing required key {req!r}"))
            if self.props is not None or self.closed:
                props = self.props or {}
                for key, item in value.items():
                    sub = props.get(key)
                    if sub is not None:
                        sub.check(item, f"{path}.{key}", literal_strings, out, depth + 1)
                    elif self.closed:
                        out.append(("unexpected_param", f"{path}.{key}", f"{path}: unexpected key {key!r}"))


def _json_equal(a: Any, b: Any) -> bool:
    """JSON-schema equality (as jsonschema's ``enum``): Python's, except that a bool never equals a number."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(_json_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(v, b[k]) for k, v in a.items())
    return a == b


class _CompiledSpec:
    __slots__ = ("spec", "required", "params", "validator")

    def __init__(self, spec: ToolSpec) -> None:
        self.spec = spec
        self.required = tuple(spec.required)
        self.params = {name: _ValueCheck(schema) for name, schema in spec.properties.items() if isinstance(schema, dict)}
        self.validator = _jsonschema_validator(spec) if _needs_jsonschema(spec.parameters) else None


def _needs_jsonschema(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    for key, value in schema.items():
        if key == "properties" and isinstance(value, dict):
            if any(_needs_jsonschema(v) for v in value.values()):
                return True
        elif key == "items":
            if _needs_jsonschema(value):
                return True
        elif key not in _FAST_KEYS:
            return True
    return False


def _jsonschema_validator(spec: ToolSpec):
    import jsonschema  # only catalogs with extra constraint keywords pay for it
    from referencing import Registry

    schema = spec.json_schema()
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        # An empty registry: ``$ref`` resolves within the schema only, never by fetching a URL.
        return cls(schema, registry=Registry())
    except Exception:  # SchemaError, or a ``$schema`` that is not even a string
        return None  # a broken schema cannot judge calls; the fast path still runs


def compile_catalog(catalog: ToolCatalog) -> dict[str, _CompiledSpec | None]:
    """The catalog's compiled checkers, cached on the catalog object and filled lazily per function
    (a question's catalog often lists many functions and the calls use one): reuse the object."""
    cache = getattr(catalog, "_compiled", None)
    if cache is None:
        cache = catalog._compiled = {}  # type: ignore[attr-defined]
    return cache


def _compiled_spec(catalog: ToolCatalog, cache: dict, name: str) -> _CompiledSpec | None:
    compiled = cache.get(name, False)
    if compiled is False:
        spec = catalog.get(name)
        compiled = cache[name] = _CompiledSpec(spec) if spec is not None else None
    return compiled


def check_calls(calls: Sequence[ToolCall], catalog: Any, *, language: str = "python",
                allow_no_call: bool = True) -> SchemaReport:
    """Check ``calls`` against ``catalog``; report every violation.

    Args:
        calls: the parsed calls (possibly empty).
        catalog: a :class:`ToolCatalog` (reuse it: compiled checks are cached on it) or raw tools.
        language: ``java``/``javascript`` accept source-literal strings for any type, as BFCL does.
        allow_no_call: when False, an empty call list is a ``no_call`` violation.

    >>> cat = ToolCatalog.load([{"name": "f", "parameters": {"type": "object",
    ...     "properties": {"n": {"type": "integer"}}, "required": ["n"]}}])
    >>> check_calls([ToolCall("f", {"n": "3", "m": 1})], cat).categories
    ['type', 'unexpected_param']
    """
    if type(catalog) is not ToolCatalog:
        catalog = ToolCatalog.load(catalog)
    compiled = compile_catalog(catalog)
    literal_strings = language != "python"
    report = SchemaReport(len(calls))
    add = report.violations.append
    if not calls and not allow_no_call:
        add(Violation(0, "", None, "no_call", "no tool call where one was required"))
    for i, call in enumerate(calls):
        spec = compiled.get(call.name) or _compiled_spec(catalog, compiled, call.name)
        if spec is None:
            add(Violation(i, call.name, None, "unknown_function", f"unknown function {call.name!r}"))
            continue
        args = call.arguments if isinstance(call.arguments, dict) else {}
        for name in spec.required:
            if name not in args:
                add(Violation(i, call.name, name, "missing_required", f"missing required parameter {name!r}"))
        n_before = len(report.violations)
        found: list = []
        for name, value in args.items():
            check = spec.params.get(name)
            if check is None:
                found.append(("unexpected_param", name, f"unknown parameter {name!r}"))
            elif check.leaf and (check.types is None or type(value) in check.types):
                continue  # inlined common case of check.check()
            elif value is not None or name in spec.required:  # null for an optional one: "not set"
                check.check(value, name, literal_strings, found, 0)
        for category, path, message in found:
            add(Violation(i, call.name, path, category, message))
        if spec.validator is not None and not literal_strings and len(report.violations) == n_before:
            try:
                for err in spec.validator.iter_errors(args):
                    if err.validator in ("type", "required", "additionalProperties", "enum"):
                        continue  # reported by the fast path above
                    path = ".".join(str(p) for p in err.absolute_path) or None
                    add(Violation(i, call.name, path, "constraint", err.message[:160]))
            except Exception:  # a ``$ref`` that resolves nowhere (or loops): the schema cannot judge the call
                pass
    return report
