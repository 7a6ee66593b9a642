"""Rule checks of tool calls against the catalog: the rule-based reward's building block.

:func:`check_calls` reports every violation (unknown function, missing required parameter,
unknown parameter, wrong type, value outside an enum, other JSON-schema constraints), each with a
category that maps onto BFCL's error families (:data:`BFCL_FAMILY`).

Types follow JSON schema and BFCL's extensions (``float``, ``tuple``, ``any``, ``dict``, Java and
JavaScript names): an int is accepted where a float/number is expected, a bool is never a number.
The common keywords (``type``, ``properties``, ``required``, ``items``, ``enum``) are checked by a
compiled fast path, because a GRPO step checks thousands of rollouts; parameter schemas that use
any other validation keyword (``minimum``, ``pattern``, ``anyOf``, ...) are additionally validated
with :mod:`jsonschema`, and its findings are reported as ``constraint`` violations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    """One rule violation in call ``call_index`` (``param`` is a dotted path, or None)."""

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
        return "ok" if self.ok else "; ".join(f"[{v.call_index}] {v.message}" for v in self.violations)


# -- compiled fast path -------------------------------------------------------------------------------
_FAST_KEYS = {"type", "properties", "required", "items", "enum", "description", "default", "title",
              "format", "examples", "additionalProperties", "$schema", "optional", "nullable"}
# JSON-schema / BFCL type name -> the Python types that satisfy it (None: anything goes).
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list, tuple), "object": (dict,), "null": (type(None),),
}


def _allowed_types(type_name: Any) -> frozenset | None:
    if type_name is None or type_name in ("any", "Any"):
        return None
    names = type_name if isinstance(type_name, list) else [type_name]
    allowed: set = set()
    for name in names:
        types = _PY_TYPES.get(BFCL_TO_JSON_TYPE.get(name, name)) if isinstance(name, str) else None
        if types is None:
            return None  # a type name we do not know: not ours to reject
        allowed.update(types)
    return frozenset(allowed)


class _ValueCheck:
    """One (nested) parameter schema compiled to set look-ups: no dict walking per check."""

    __slots__ = ("type_name", "types", "enum", "items", "props", "required", "leaf")

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
        self.required = tuple(r for r in req if isinstance(r, str)) if isinstance(req, list) and self.props is not None else ()
        self.leaf = self.enum is None and self.items is None and self.props is None

    def check(self, value: Any, path: str, literal_strings: bool, out: list, depth: int) -> None:
        vtype = type(value)
        if self.leaf and (self.types is None or vtype in self.types):
            return  # the common case: a scalar of the right type
        if self.types is not None and vtype not in self.types and not (literal_strings and vtype is str):
            out.append(("type" if depth == 0 else "nested_type", path,
                        f"{path}: expected {self.type_name}, got {vtype.__name__} ({value!r:.40})"))
            return
        if self.enum is not None and not (literal_strings and vtype is str):
            try:
                if value not in self.enum:
                    out.append(("enum", path, f"{path}: {value!r:.40} is not one of {self.enum!r:.80}"))
            except TypeError:  # unhashable/uncomparable value against the enum
                out.append(("enum", path, f"{path}: {value!r:.40} is not one of {self.enum!r:.80}"))
        if self.items is not None and (vtype is list or vtype is tuple):
            for i, item in enumerate(value):
                self.items.check(item, f"{path}[{i}]", literal_strings, out, depth + 1)
        if self.props is not None and vtype is dict:
            for req in self.required:
                if req not in value:
                    out.append(("missing_required", f"{path}.{req}", f"{path}: missing required key {req!r}"))
            for key, item in value.items():
                sub = self.props.get(key)
                if sub is not None:
                    sub.check(item, f"{path}.{key}", literal_strings, out, depth + 1)


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

    schema = spec.json_schema()
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        return cls(schema)
    except jsonschema.SchemaError:
        return None  # a broken schema cannot judge calls; the fast path still runs


def compile_catalog(catalog: ToolCatalog) -> dict[str, _CompiledSpec]:
    """Compiled checkers for a catalog, cached on the catalog object (reuse it across checks)."""
    cache = getattr(catalog, "_compiled", None)
    if cache is None:
        cache = {spec.name: _CompiledSpec(spec) for spec in catalog}
        catalog._compiled = cache  # type: ignore[attr-defined]
    return cache


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
        spec = compiled.get(call.name)
        if spec is None:
            add(Violation(i, call.name, None, "unknown_function", f"unknown function {call.name!r}"))
            continue
        args = call.arguments if isinstance(call.arguments, dict) else {}
        for name in spec.required:
            if name not in args:
                add(Violation(i, call.name, name, "missing_required", f"{call.name}: missing required parameter {name!r}"))
        n_before = len(report.violations)
        found: list = []
        for name, value in args.items():
            check = spec.params.get(name)
            if check is None:
                found.append(("unexpected_param", name, f"unknown parameter {name!r}"))
            else:
                check.check(value, name, literal_strings, found, 0)
        for category, path, message in found:
            add(Violation(i, call.name, path, category, f"{call.name}: {message}"))
        if spec.validator is not None and not literal_strings and len(report.violations) == n_before:
            for err in spec.validator.iter_errors(args):
                if err.validator in ("type", "required", "additionalProperties", "enum"):
                    continue  # reported by the fast path above
                path = ".".join(str(p) for p in err.absolute_path) or None
                add(Violation(i, call.name, path, "constraint", f"{call.name}: {err.message[:160]}"))
    return report
