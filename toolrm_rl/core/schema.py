"""Rule checks of tool calls against the catalog: the rule-based reward's building block.

:func:`check_calls` reports every violation (unknown function, missing required parameter,
unknown parameter, wrong type, value outside an enum, other JSON-schema constraints), each with a
category that maps onto BFCL's error families (:data:`BFCL_FAMILY`).

Types follow JSON schema and BFCL's extensions (``float``, ``tuple``, ``any``, ``dict``, Java and
JavaScript names): an int is accepted where a float/number is expected, a bool is never a number,
and ``null`` for an optional parameter means "not set" (clients and BFCL answers send it so). Two
readings of schemas as written in the wild: without a possible answer, a parameter's own declared
``default`` is an acceptable value whatever its type and enum say (BFCL's live functions declare
``"default": "dontcare"`` on integers and ``"N/A"`` outside their enums); and an ``enum`` of
scalars on an array lists the allowed *items* (no array could equal a scalar, so the schema cannot
mean anything else).

With a possible answer (``check_calls(..., answer=...)``), a value that BFCL's own checker accepts
for that parameter (the answer lists it, a "variable" of the answer's type, BFCL's string
normalisation) is not a violation either: BFCL never checks enums or nested schemas and accepts any
type its answer holds, so without this a correct answer could fail the gate. The answer then also
decides about declared defaults (BFCL calls a default of the wrong type a type error unless its
answer lists it). Unknown functions, unknown parameters and missing required ones stay violations,
as they are for BFCL.
The common keywords (``type``, ``properties``, ``required``, ``items``, ``enum``) are checked by a
compiled fast path, because a GRPO step checks thousands of rollouts; parameter schemas that use
any other validation keyword (``minimum``, ``pattern``, ``anyOf``, ...) are additionally validated
with :mod:`jsonschema`, and its findings are reported as ``constraint`` violations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

from toolrm_rl.core.calls import BFCL_TO_JSON_TYPE, CatalogError, ToolCall, ToolCatalog, ToolSpec, short_repr
from toolrm_rl.core.match import GroundTruth

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

    def summary(self, limit: int = 20) -> str:
        """One line for logs: ``ok`` or the first ``limit`` violations joined by ``; ``."""
        if self.ok:
            return "ok"
        line = "; ".join(f"[{v.call_index}] {_cap(v.function, 80)}: {v.message}" for v in self.violations[:limit])
        more = len(self.violations) - limit
        return line + (f"; ... ({more} more)" if more > 0 else "")


def _cap(text: Any, limit: int = 200) -> str:
    """A name or path from a model's output, cut for messages (the model may write megabytes)."""
    text = text if isinstance(text, str) else str(text)
    return text if len(text) <= limit else text[:limit] + "..."


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
        key: Any = tuple(t if isinstance(t, str) else repr(t) for t in type_name[:16])
    else:
        key = type_name if isinstance(type_name, str) or type_name is None else repr(type_name)
    if len(str(key)) > 200:  # not a type name anybody knows: not ours to reject, and not worth caching
        return None
    return _allowed_types_cached(key)


@lru_cache(maxsize=1024)  # a handful of distinct type names across all catalogs; bounded all the same
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


_NO_DEFAULT = object()


class _ValueCheck:
    """One (nested) parameter schema compiled to set look-ups: no dict walking per check."""

    __slots__ = ("type_name", "types", "enum", "items", "props", "required", "closed", "leaf", "nullable", "default")

    def __init__(self, schema: dict, depth: int = 0) -> None:
        self.type_name = schema.get("type")
        self.types = _allowed_types(self.type_name)
        enum = schema.get("enum")
        self.enum = enum if isinstance(enum, list) else None
        items, props = schema.get("items"), schema.get("properties")
        if self.enum and isinstance(self.type_name, str) and BFCL_TO_JSON_TYPE.get(self.type_name) == "array" \
                and not any(isinstance(e, (list, tuple)) for e in self.enum):
            # an enum of scalars on an array: no array equals a scalar, so it lists the allowed items
            items = dict(items) if isinstance(items, dict) else {}
            own = items.get("enum")
            items["enum"] = [e for e in own if any(_json_equal(e, x) for x in self.enum)] \
                if isinstance(own, list) else self.enum
            self.enum = None
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
        # the schema's own default is acceptable whatever its type and enum say (BFCL's live
        # functions declare "dontcare" on integers, "N/A" outside an enum)
        self.default = schema.get("default", _NO_DEFAULT)

    def check(self, value: Any, path: str, literal_strings: bool, out: list, depth: int, defaults: bool = True) -> None:
        vtype = type(value)
        if self.leaf and (self.types is None or vtype in self.types):
            return  # the common case: a scalar of the right type
        if value is None and self.nullable:
            return
        if defaults and self.default is not _NO_DEFAULT and _json_equal(value, self.default):
            return
        if self.types is not None and vtype not in self.types and not (literal_strings and vtype is str):
            out.append(("type" if depth == 0 else "nested_type", path,
                        f"{path}: expected {_cap(self.type_name, 40)}, got {vtype.__name__} ({short_repr(value, 40)})"))
            return
        if self.enum is not None and not (literal_strings and vtype is str):
            try:  # Python's ``in`` first; JSON equality (a bool is not a number) only for non-strings
                known = value in self.enum and (vtype is str or any(_json_equal(value, e) for e in self.enum))
            except (TypeError, RecursionError):  # unhashable/uncomparable/too deep against the enum
                known = False
            if not known:
                out.append(("enum", path, f"{path}: {short_repr(value, 40)} is not one of {short_repr(self.enum, 80)}"))
        if self.items is not None and (vtype is list or vtype is tuple):
            for i, item in enumerate(value):
                self.items.check(item, f"{path}[{i}]", literal_strings, out, depth + 1, defaults)
        if vtype is dict:
            for req in self.required:
                if req not in value:
                    out.append(("missing_required", f"{path}.{req}", f"{path}: missing required key {short_repr(req, 60)}"))
            if self.props is not None or self.closed:
                props = self.props or {}
                for key, item in value.items():
                    sub = props.get(key) if isinstance(key, str) else None
                    if sub is not None:
                        sub.check(item, f"{path}.{key}", literal_strings, out, depth + 1, defaults)
                    elif self.closed:
                        out.append(("unexpected_param", f"{path}.{_cap(key, 60)}",
                                    f"{path}: unexpected key {short_repr(key, 60)}"))


def _json_equal(a: Any, b: Any) -> bool:
    """JSON-schema equality (as jsonschema's ``enum``): Python's, except that a bool never equals a number.
    False for values nested too deeply to compare."""
    try:
        return _json_equal_at(a, b)
    except RecursionError:
        return False


def _json_equal_at(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(_json_equal_at, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal_at(v, b[k]) for k, v in a.items())
    return a == b


class _CompiledSpec:
    __slots__ = ("spec", "required", "params", "validator")

    def __init__(self, spec: ToolSpec) -> None:
        self.spec = spec
        self.required = tuple(spec.required)
        self.params = {name: _ValueCheck(schema) for name, schema in spec.properties.items() if isinstance(schema, dict)}
        try:
            self.validator = _jsonschema_validator(spec) if _needs_jsonschema(spec.parameters) else None
        except (RecursionError, CatalogError):  # a hand-built spec nested too deeply: the fast path still runs
            self.validator = None


def _needs_jsonschema(schema: Any) -> bool:
    stack = [schema]
    while stack:  # iterative: a schema may be nested deeply
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                stack.extend(value.values())
            elif key == "items":
                stack.append(value)
            elif key not in _FAST_KEYS:
                return True
    return False


def _jsonschema_validator(spec: ToolSpec):
    import jsonschema  # only catalogs with extra constraint keywords pay for it
    from referencing import Registry

    try:
        schema = spec.json_schema()
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        # An empty registry: ``$ref`` resolves within the schema only, never by fetching a URL.
        return cls(schema, registry=Registry())
    except Exception:  # SchemaError, a ``$schema`` that is not even a string, a schema nested too deeply
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
                allow_no_call: bool = True, answer: Any = None) -> SchemaReport:
    """Check ``calls`` against ``catalog``; report every violation.

    Args:
        calls: the parsed calls (possibly empty).
        catalog: a :class:`ToolCatalog` (reuse it: compiled checks are cached on it) or raw tools.
        language: ``java``/``javascript``: every value is a source literal (a string, as BFCL requires),
            of any type (BFCL decodes literals only to compare them with its answer).
        allow_no_call: when False, an empty call list is a ``no_call`` violation.
        answer: the question's possible answer, when there is one: a :class:`~toolrm_rl.core.match.GroundTruth`
            (reuse it across rollouts) or anything :func:`~toolrm_rl.core.match.normalize_answer` reads.
            A value BFCL's checker accepts for its parameter (:meth:`GroundTruth.accepts`) is then no
            type, enum or constraint violation.

    Runs in time linear in the size of the calls; messages quote values cut to a few dozen characters.
    Raises :class:`~toolrm_rl.core.calls.CatalogError` (a ``ValueError``) only when ``catalog`` is raw
    tools that :meth:`ToolCatalog.load` cannot read, and ``ValueError`` when ``answer`` is not a
    possible answer; never for anything in ``calls``.

    >>> cat = ToolCatalog.load([{"name": "f", "parameters": {"type": "object",
    ...     "properties": {"n": {"type": "integer"}}, "required": ["n"]}}])
    >>> check_calls([ToolCall("f", {"n": "3", "m": 1})], cat).categories
    ['type', 'unexpected_param']
    >>> check_calls([ToolCall("f", {"n": "3"})], cat, answer=[{"f": {"n": ["3"]}}]).ok  # BFCL: a variable
    True
    """
    if type(catalog) is not ToolCatalog:
        catalog = ToolCatalog.load(catalog)
    compiled = compile_catalog(catalog)
    literal_strings = language != "python"
    truth = _ground_truth(answer, catalog, language)
    report = SchemaReport(len(calls))
    add = report.violations.append
    if not calls and not allow_no_call:
        add(Violation(0, "", None, "no_call", "no tool call where one was required"))
    for i, call in enumerate(calls):
        name = call.name
        spec = (compiled.get(name) or _compiled_spec(catalog, compiled, name)) if isinstance(name, str) else None
        if spec is None:
            add(Violation(i, _cap(name), None, "unknown_function", f"unknown function {short_repr(name, 80)}"))
            continue
        args = call.arguments if isinstance(call.arguments, dict) else {}
        for req in spec.required:
            if req not in args:
                add(Violation(i, name, req, "missing_required", f"missing required parameter {short_repr(req, 80)}"))
        n_before = len(report.violations)
        found: list = []
        waived: set = set()
        for param, value in args.items():
            check = spec.params.get(param) if isinstance(param, str) else None
            if check is None:
                found.append(("unexpected_param", _cap(param), f"unknown parameter {short_repr(param, 80)}"))
            elif literal_strings and type(value) is not str:
                if value is not None or param in spec.required:  # BFCL: type_error:java / type_error:js
                    found.append(("type", param, f"{param}: expected a {_cap(language, 20)} source literal "
                                                 f"(a string), got {type(value).__name__} ({short_repr(value, 40)})"))
            elif check.leaf and (check.types is None or type(value) in check.types):
                continue  # inlined common case of check.check()
            elif value is not None or param in spec.required:  # null for an optional one: "not set"
                n_found = len(found)
                check.check(value, param, literal_strings, found, 0, truth is None)
                if len(found) > n_found and truth is not None and truth.accepts(name, param, value):
                    del found[n_found:]  # BFCL accepts this value for this parameter
                    waived.add(param)
        for category, path, message in found:
            add(Violation(i, name, path, category, message))
        if spec.validator is not None and not literal_strings and len(report.violations) == n_before:
            try:
                for err in spec.validator.iter_errors(args):
                    if err.validator in ("type", "required", "additionalProperties", "enum"):
                        continue  # reported by the fast path above
                    where = list(err.absolute_path)
                    if where and (where[0] in waived or (truth is not None and where[0] in args
                                                         and truth.accepts(name, where[0], args[where[0]]))):
                        continue
                    path = _cap(".".join(str(p) for p in where)) or None
                    add(Violation(i, name, path, "constraint", err.message[:160]))
            except Exception:  # a ``$ref`` that resolves nowhere (or loops), a value nested too deeply
                pass
    return report


def _ground_truth(answer: Any, catalog: ToolCatalog, language: str) -> GroundTruth | None:
    if answer is None or isinstance(answer, GroundTruth):
        return answer
    # "parallel_multiple": each answer entry is judged against its own function (not the first one)
    return GroundTruth(catalog, answer, "parallel_multiple",
                       language=language if language in ("java", "javascript") else "python")
