"""Ground-truth matching: BFCL possible-answer semantics, and equality of concrete call lists.

A BFCL *possible answer* lists, per function and parameter, the acceptable values
(``[{"f": {"a": [1, 1.0], "unit": ["km", ""]}}]``; ``""`` means the parameter may be omitted).
:func:`match_bfcl` returns BFCL's verdict and its exact ``error_type`` string
(``simple_function_checker:missing_required``, ``value_error:string``, ...), reproducing the
official checker's order of checks, string normalisation, one-level nested type checks,
greedy order-free matching of parallel calls and Java/JavaScript literal decoding.

Answers are compiled once (:class:`GroundTruth`): in GRPO the same question is checked for every
rollout, so normalising the acceptable values per check (as the reference checker does) is waste.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable, Iterable, Sequence

from toolrm_rl.core.bfcl_types import (
    COLLECTION_TYPES, JAVA_TYPES, JS_TYPES, PY_TYPES, decode_java, decode_js,
    language_of_category,
)
from toolrm_rl.core.calls import ToolCall, ToolCatalog, ToolSpec, calls_from_bfcl, load_json_field, short_repr

__all__ = ["MatchResult", "GroundTruth", "match_bfcl", "normalize_answer", "standardize_string",
           "calls_equal", "canonical_calls", "ERROR_CATEGORIES", "error_category"]

# The FC-RewardBench card's 8 error categories (shares in the benchmark: value 43%, function name
# 27%, call count 16%, missing optional 5%, missing required 3%, value type 3%, unexpected param 1%,
# unparsable 1%). Raw BFCL ``error_type`` strings map onto them with :func:`error_category`.
ERROR_CATEGORIES = ("wrong_value", "wrong_function", "wrong_count", "missing_optional", "missing_required",
                    "wrong_type", "unexpected_param", "unparsable")
_CATEGORY_BY_SUFFIX = {
    "wrong_count": "wrong_count", "wrong_func_name": "wrong_function", "missing_required": "missing_required",
    "unexpected_param": "unexpected_param", "missing_optional": "missing_optional",
    "decoder_failed": "unparsable", "cannot_find_match": "wrong_value",
}


def error_category(error_type: str) -> str:
    """Map a raw BFCL ``error_type`` to one of :data:`ERROR_CATEGORIES` (``"other"`` if unknown).

    ``parallel_function_checker_no_order:cannot_find_match`` means no permutation matched, which in
    practice is a wrong value in one of the calls; BFCL logs it that way, so it counts as a value error.

    >>> error_category("value_error:string"), error_category("type_error:java")
    ('wrong_value', 'wrong_type')
    >>> error_category("multiple_function_checker:wrong_count"), error_category("simple_function_checker:wrong_func_name")
    ('wrong_count', 'wrong_function')
    >>> error_category("ast_decoder:decoder_failed"), error_category("something_new")
    ('unparsable', 'other')
    """
    head, _, tail = (error_type or "").partition(":")
    if head == "value_error":
        return "wrong_value"
    if head == "type_error":
        return "wrong_type"
    return _CATEGORY_BY_SUFFIX.get(tail, "other")


class MatchResult:
    """BFCL's verdict: ``valid`` and, when invalid, its ``error_type`` and a readable ``message``.

    The message may be given as a zero-argument callable: it is formatted only when read, since an
    RL step checks thousands of rollouts and nobody reads most messages. Treat it as read-only.
    """

    __slots__ = ("valid", "error_type", "_message")

    def __init__(self, valid: bool, error_type: str = "", message: "str | Callable[[], str]" = "") -> None:
        self.valid = valid
        self.error_type = error_type
        self._message = message

    @property
    def message(self) -> str:
        """Why the output is invalid ("" when valid)."""
        if callable(self._message):
            self._message = self._message()
        return self._message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MatchResult) and (self.valid, self.error_type, self.message) == \
            (other.valid, other.error_type, other.message)

    def __repr__(self) -> str:
        return f"MatchResult(valid={self.valid!r}, error_type={self.error_type!r}, message={self.message!r})"


_OK = MatchResult(True)
# BFCL's Python type table plus the standard JSON-schema names it lacks (BFCL's own checker fails
# on them), so OpenAI-style catalogs match with the same semantics.
_PY_AND_JSON_TYPES = {**PY_TYPES, "number": float, "object": dict}
_STD_RE = re.compile(r"[ ,./\-_*^]")


def _standardize(text: str) -> str:
    return _STD_RE.sub("", text).lower().replace("'", '"')


# Rollouts of one prompt repeat the same short strings many times. Only short ones are cached, in a
# bounded cache: long string arguments (100 KB each) once grew the cache to gigabytes.
_CACHED_MAX_CHARS = 256
_standardize_cached = lru_cache(maxsize=1 << 14)(_standardize)


def standardize_string(text: str) -> str:
    """BFCL's string normalisation: drop spaces and ``,./-_*^``, lower-case, ``'`` -> ``"``.

    Strings up to 256 characters are memoised (at most 16,384 of them, a few MB); longer ones are not.

    >>> standardize_string("April 1, 2024") == standardize_string("april 1 2024")
    True
    """
    return _standardize_cached(text) if len(text) <= _CACHED_MAX_CHARS else _standardize(text)


def _cap(name: Any, limit: int = 80) -> str:
    """A parameter name from a model's output, cut for messages."""
    name = name if isinstance(name, str) else str(name)
    return name if len(name) <= limit else name[:limit] + "..."


def _std(value: Any) -> Any:
    return standardize_string(value) if type(value) is str else value


def normalize_answer(answer: Any, catalog: ToolCatalog | None = None) -> list[dict[str, dict[str, list]]]:
    """Bring a possible answer to the list form ``[{func: {param: [options]}}]``.

    Accepts a JSON string, the list form, and the older dict form, whose parallel entries may carry
    ``func_1``/``func_2`` suffixes (stripped when the bare name is in ``catalog``).
    """
    answer = load_json_field(answer, "ground_truth")
    if answer is None:
        return []
    if isinstance(answer, dict):
        answer = [{k: v} for k, v in answer.items()]
    if not isinstance(answer, list):
        raise ValueError(f"ground_truth: expected a list of {{function: {{param: [values]}}}}, got {type(answer).__name__}")
    out = []
    for i, item in enumerate(answer):
        if not isinstance(item, dict) or len(item) != 1:
            raise ValueError(f"ground_truth[{i}]: expected one {{function: {{param: [values]}}}} entry")
        (name, params), = item.items()
        if catalog is not None and name not in catalog:
            bare = re.sub(r"_\d+$", "", name)
            name = bare if bare in catalog else name
        if not isinstance(params, dict):
            raise ValueError(f"ground_truth[{i}].{name}: parameters must be an object")
        out.append({name: params})
    return out


class _Param:
    """One parameter: its acceptable values and its schema types, with everything BFCL recomputes
    per check precomputed."""

    __slots__ = ("options", "optional", "first_type", "std_strings", "std_lists", "in_schema",
                 "type_name", "expected", "nested_name", "nested_type", "fast")

    def __init__(self, options: list, schema: Any, types: dict[str, type], collections: tuple, python: bool) -> None:
        if not isinstance(options, list):
            options = [options]
        self.options = options
        self.optional = "" in options
        self.first_type = next((type(o) for o in options if o != ""), None)
        self.std_strings = {standardize_string(o) for o in options if type(o) is str}
        # BFCL iterates every option as a sequence (``""`` becomes ``[]``, so an empty list matches
        # an omittable parameter).
        self.std_lists = [[_std(x) for x in o] if isinstance(o, (list, str, tuple)) else None for o in options]
        self.in_schema = isinstance(schema, dict)
        self.type_name = schema.get("type") if self.in_schema else None
        # unknown types (and JSON-schema type lists, which BFCL cannot read): compared as text
        self.expected = types.get(self.type_name, str) if isinstance(self.type_name, str) else str
        self.nested_name = self.nested_type = None
        if self.type_name in collections:
            items = schema.get("items")
            self.nested_name = items.get("type") if isinstance(items, dict) else None
            self.nested_type = (types.get(self.nested_name, str) if isinstance(self.nested_name, str) else str
                                ) if self.nested_name else None
        # Shortcuts for the common Python cases, taken only when the full path would decide the same.
        not_variable = self.first_type is None or self.first_type is self.expected
        self.fast = None
        if python and not_variable and self.nested_type is None:
            if self.expected is str:
                self.fast = "str"
            elif self.expected in (int, bool, float):
                self.fast = "scalar"


class _Answer:
    __slots__ = ("name", "params", "spec", "required", "props")

    def __init__(self, name: str, params: dict[str, list], spec: ToolSpec | None, types: dict, collections: tuple,
                 python: bool) -> None:
        self.name = name
        self.spec = spec
        self.required = tuple(spec.required) if spec else ()
        self.props = spec.properties if spec else {}
        self.params = {p: _Param(v, self.props.get(p), types, collections, python) for p, v in params.items()}


class GroundTruth:
    """A compiled possible answer for one question: ``GroundTruth(...).check(calls) -> MatchResult``.

    Args:
        catalog: the question's functions (anything :meth:`ToolCatalog.load` accepts).
        answer: the possible answer (see :func:`normalize_answer`).
        category: BFCL test category; ``parallel*`` matches order-free, ``multiple*`` wants one call
            of the answer's function, anything else is BFCL's ``simple`` checker.
        language: ``python``, ``java`` or ``javascript`` (default: from ``category``). For Java and
            JavaScript, argument values are source literals (strings), as in BFCL.
        dot_to_underscore: accept ``a_b`` for a function named ``a.b`` (models whose API forbids dots).
    """

    def __init__(self, catalog: Any, answer: Any, category: str = "simple", language: str | None = None,
                 dot_to_underscore: bool = False) -> None:
        self.catalog = ToolCatalog.load(catalog)
        self.category = category
        self.language = language or language_of_category(category)
        if self.language not in ("python", "java", "javascript"):
            raise ValueError(f"language must be python, java or javascript, not {short_repr(self.language, 80)}")
        self.dot_to_underscore = dot_to_underscore
        types = {"python": _PY_AND_JSON_TYPES, "java": JAVA_TYPES, "javascript": JS_TYPES}[self.language]
        collections = COLLECTION_TYPES[self.language]
        # BFCL's simple checker judges against the catalog's first function; the others look the
        # answer's function up by name.
        simple = "parallel" not in category and "multiple" not in category
        first = next(iter(self.catalog), None)
        self.answers = [
            _Answer(name, params, first if simple else self.catalog.get(name), types, collections, self.language == "python")
            for name, params in (next(iter(a.items())) for a in normalize_answer(answer, self.catalog))
        ]

    # -- public -----------------------------------------------------------------------------------
    def check(self, calls: Sequence[ToolCall] | Any) -> MatchResult:
        """BFCL's verdict on ``calls`` (a ``list[ToolCall]`` or BFCL decoded-output dicts).

        An empty possible answer expects no call: ``[]`` is then valid and any call ``wrong_count``
        (``simple`` categories expect exactly one call, so nothing satisfies an empty answer there).
        Never raises for a ``list[ToolCall]``, whatever its values; decoded-output dicts that
        :func:`~toolrm_rl.core.calls.calls_from_bfcl` cannot read raise its
        :class:`~toolrm_rl.core.calls.CatalogError`.
        """
        if type(calls) is not list or (calls and type(calls[0]) is not ToolCall):
            calls = calls_from_bfcl(calls)
        try:
            return self._check(calls)
        except RecursionError:  # values nested too deeply for Python's == (BFCL's checker crashes)
            return MatchResult(False, "value_error:others", "a value is nested too deeply to compare")

    def accepts(self, function: str, param: str, value: Any) -> bool:
        """True when BFCL's parameter check accepts ``value`` for ``param`` of a call to ``function``
        under some entry of the answer for that function (its type, or the answer's type for a
        "variable", and one of its values after BFCL's normalisation). Never raises.

        >>> truth = GroundTruth([{"name": "f", "parameters": {"type": "dict", "properties": {"n": {"type": "integer"}}}}],
        ...                     [{"f": {"n": ["dontcare", 3]}}])  # a string first: BFCL then takes strings
        >>> truth.accepts("f", "n", 3), truth.accepts("f", "n", "dontcare"), truth.accepts("f", "n", 4)
        (True, True, False)
        """
        for answer in self.answers:
            if answer.name != function or answer.spec is None or answer.spec.name != function:
                continue
            param_check = answer.params.get(param)
            if param_check is None or not param_check.in_schema:
                continue
            try:
                if self._param(param, value, param_check) is None:
                    return True
            except Exception:  # a value or an answer the checks cannot compare: not accepted
                continue
        return False

    def _check(self, calls: list[ToolCall]) -> MatchResult:
        if "parallel" in self.category:
            return self._parallel(calls)
        if "multiple" in self.category:
            if len(calls) != len(self.answers):
                return MatchResult(False, "multiple_function_checker:wrong_count", "wrong number of calls")
            if not calls:
                return _OK  # no call expected and none made (as the parallel checker says)
            return self._single(calls[0], self.answers[0])
        if len(calls) != 1:
            return MatchResult(False, "simple_function_checker:wrong_count", "wrong number of calls")
        if not self.answers:
            return MatchResult(False, "simple_function_checker:wrong_count", "no call expected")
        return self._single(calls[0], self.answers[0])

    # -- checkers ---------------------------------------------------------------------------------
    def _parallel(self, calls: Sequence[ToolCall]) -> MatchResult:
        if len(calls) != len(self.answers):
            return MatchResult(False, "parallel_function_checker_no_order:wrong_count", "wrong number of calls")
        matched: set[int] = set()
        for i, answer in enumerate(self.answers):
            last = None
            for j, call in enumerate(calls):  # greedy, first unmatched call that fits (as BFCL)
                if j in matched:
                    continue
                last = self._single(call, answer)
                if last.valid:
                    matched.add(j)
                    break
            if last is None or not last.valid:
                return MatchResult(False, "parallel_function_checker_no_order:cannot_find_match",
                                   lambda: f"no call matches expected call {i} ({answer.name})"
                                   + (f" (closest: {last.error_type}: {last.message})" if last else ""))
        return _OK

    def _single(self, call: ToolCall, answer: _Answer) -> MatchResult:
        spec = answer.spec
        if spec is None:
            return MatchResult(False, "simple_function_checker:wrong_func_name",
                               lambda: f"function {short_repr(answer.name, 80)} is not in the catalog")
        expected = spec.name
        if self.dot_to_underscore and "." in expected:
            expected = expected.replace(".", "_")
        if call.name != expected:
            return MatchResult(False, "simple_function_checker:wrong_func_name",
                               lambda: f"expected function {short_repr(expected, 80)}, got {short_repr(call.name, 80)}")
        args = call.arguments
        for name in answer.required:
            if name not in args:
                return MatchResult(False, "simple_function_checker:missing_required",
                                   lambda: f"missing required parameter {short_repr(name, 80)}")
        params = answer.params
        for name, value in args.items():
            param = params.get(name)
            if param is None or not param.in_schema:
                return MatchResult(False, "simple_function_checker:unexpected_param", lambda: f"unexpected parameter {short_repr(name, 80)}")
            fast = param.fast
            if fast is not None:  # inlined common cases of _param()
                vtype = type(value)
                if fast == "str" and vtype is str:
                    if standardize_string(value) in param.std_strings:
                        continue
                    return MatchResult(False, "value_error:string",
                                       lambda: f"{_cap(name)}: {short_repr(value, 80)} is not one of {short_repr(param.options, 120)}")
                if fast == "scalar" and vtype is param.expected:
                    if value in param.options:
                        continue
                    return MatchResult(False, "value_error:others",
                                       lambda: f"{_cap(name)}: {short_repr(value, 80)} is not one of {short_repr(param.options, 120)}")
            bad = self._param(name, value, param)
            if bad is not None:
                return bad
        for name, param in params.items():
            if name not in args and not param.optional:
                return MatchResult(False, "simple_function_checker:missing_optional",
                                   lambda: f"parameter {short_repr(name, 80)} is expected but was not given")
        return _OK

    def _param(self, name: str, value: Any, param: _Param) -> MatchResult | None:
        type_name, expected, nested_type = param.type_name, param.expected, param.nested_type
        if self.language != "python":
            if type(value) is not str:
                kind = "java" if self.language == "java" else "js"
                return MatchResult(False, f"type_error:{kind}",
                                   f"{_cap(name)}: expected a {self.language} source literal (string), got {type(value).__name__}")
            decode = decode_java if self.language == "java" else decode_js
            try:
                value = decode(value, type_name, param.nested_name) if nested_type else decode(value, type_name)
            except ValueError as err:  # UnsupportedLiteral, or a number too long for int() (BFCL crashes)
                return MatchResult(False, "type_error:simple", f"{_cap(name)}: {str(err)[:200]}")  # ``err`` dies here
        if type_name == "tuple" and type(value) is tuple:
            value = list(value)
        if self.language == "python" and expected is float and type(value) is int:
            try:
                value = float(value)
            except OverflowError:  # an int beyond any float: no acceptable value can equal it
                return MatchResult(False, "value_error:others", f"{_cap(name)}: {short_repr(value, 60)} is out of range")

        is_variable = param.first_type is not None and param.first_type is not expected
        if type(value) is expected:
            if nested_type is not None and not _nested_types_ok(value, param.options, nested_type):
                if param.first_type is not None and type(value) is param.first_type:
                    return MatchResult(False, "type_error:nested",
                                       lambda: f"{_cap(name)}: elements of {short_repr(value, 60)} are not {nested_type.__name__}")
                return MatchResult(False, "type_error:simple", lambda: f"{_cap(name)}: wrong type")
        elif param.first_type is not None and type(value) is param.first_type:
            is_variable = True  # a variable name where the answer holds the value's text
        else:
            return MatchResult(False, "type_error:simple",
                               lambda: f"{_cap(name)}: expected {type_name}, got {type(value).__name__} ({short_repr(value, 60)})")

        if not is_variable:
            if expected is dict:
                return _check_dict(name, value, param.options)
            if expected is list and nested_type is dict:
                return _check_list_of_dicts(name, value, param.options)
            if expected is str:
                if standardize_string(value) not in param.std_strings:
                    return MatchResult(False, "value_error:string",
                                       lambda: f"{_cap(name)}: {short_repr(value, 80)} is not one of {short_repr(param.options, 120)}")
                return None
            if expected is list:
                std_value = [_std(x) for x in value]
                if std_value not in param.std_lists:
                    return MatchResult(False, "value_error:list/tuple",
                                       lambda: f"{_cap(name)}: {short_repr(value, 80)} is not one of {short_repr(param.options, 120)}")
                return None
        if value not in param.options:
            return MatchResult(False, "value_error:others", lambda: f"{_cap(name)}: {short_repr(value, 80)} is not one of {short_repr(param.options, 120)}")
        return None


def _nested_types_ok(value: list, options: list, nested_type: type) -> bool:
    """BFCL's one-level element type check: some option (or an omittable ``""``) accepts all elements."""
    for option in options:
        if type(option) is not list:
            return True  # BFCL skips non-list options, which therefore accept anything
        inner_first = next((type(o) for o in option if o != ""), None)
        if all(type(v) is nested_type or (inner_first is not None and type(v) is inner_first) for v in value):
            return True
    return False


def _as_options(acceptable: Any) -> list:
    """A dict answer's options for one key: a list (or string, read as BFCL reads it) as written; a number,
    bool or None (2024 logs write literal maps, e.g. Java HashMaps), where BFCL crashes, as the one option."""
    return acceptable if isinstance(acceptable, (list, tuple, str, dict)) else [acceptable]


def _check_dict(name: str, value: dict, options: list) -> MatchResult | None:
    result = MatchResult(False, "dict_checker:unclear", f"{_cap(name)}: no acceptable dictionary")
    for option in options:
        if option == "" or not isinstance(option, dict):
            continue
        result = None
        for key, item in value.items():
            if key not in option:
                result = MatchResult(False, "value_error:dict_key", f"{_cap(name)}: unexpected key {short_repr(key, 80)}")
                break
            if _std(item) not in [_std(o) for o in _as_options(option[key])]:
                result = MatchResult(False, "value_error:dict_value", f"{_cap(name)}[{short_repr(key, 80)}]: {short_repr(item, 60)} not acceptable")
                break
        for key, acceptable in option.items():  # BFCL runs this even after a failure above
            if key not in value and "" not in _as_options(acceptable):
                result = MatchResult(False, "value_error:dict_key", f"{_cap(name)}: missing key {short_repr(key, 80)}")
                break
        if result is None:
            return None
    return result


def _check_list_of_dicts(name: str, value: list, options: list) -> MatchResult | None:
    result = MatchResult(False, "list_dict_checker:unclear", f"{_cap(name)}: no acceptable list")
    for option in options:
        if len(value) != len(option):
            result = MatchResult(False, "value_error:list_dict_count", f"{_cap(name)}: wrong number of dictionaries")
            continue
        for item, item_option in zip(value, option):
            if not isinstance(item, dict):
                result = MatchResult(False, "value_error:dict_value", f"{_cap(name)}: element {short_repr(item, 40)} is not a dict")
                break
            result = _check_dict(name, item, [item_option])
            if result is not None:
                break
        else:
            return None
    return result


def match_bfcl(calls: Any, catalog: Any, answer: Any, category: str = "simple", language: str | None = None,
               dot_to_underscore: bool = False) -> MatchResult:
    """One-shot BFCL check; build a :class:`GroundTruth` instead to check many outputs of one question.

    >>> tools = [{"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": "float"}}, "required": ["x"]}}]
    >>> match_bfcl([{"f": {"x": 2}}], tools, [{"f": {"x": [2.0]}}])
    MatchResult(valid=True, error_type='', message='')
    >>> match_bfcl([{"f": {"x": "2"}}], tools, [{"f": {"x": [2.0]}}]).error_type
    'type_error:simple'
    """
    return GroundTruth(catalog, answer, category, language, dot_to_underscore).check(calls)


# -- equality of concrete call lists ----------------------------------------------------------------

class _Token:
    """A token of the flat canonical form pushed on the work stack (a dict key), never a value."""

    __slots__ = ("token",)

    def __init__(self, token: Any) -> None:
        self.token = token


def _canon(value: Any) -> tuple:
    """A flat (pre-order, length-prefixed) normal form of a value: hashable and comparable without
    recursion, so neither deep nesting nor huge ints (no repr) can make it raise."""
    out: list = []
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is _Token:
            out.append(v.token)
        elif t is str:
            out += ("s", standardize_string(v))
        elif isinstance(v, bool):
            out += ("b", v)
        elif isinstance(v, (int, float)):
            try:
                out += ("n", float(v) + 0.0)  # + 0.0 turns -0.0 into 0.0, which it equals
            except OverflowError:  # an int beyond float range: compared exactly
                out += ("n", v)
        elif isinstance(v, (list, tuple)):
            out += ("l", len(v))
            stack.extend(reversed(v))
        elif isinstance(v, dict):
            out += ("d", len(v))
            # JSON keys are strings, unique; a pythonic dict may hold 1 and "1": the type breaks the tie
            items = sorted(v.items(), key=lambda kv: (str(kv[0]), type(kv[0]).__name__))
            for key, item in reversed(items):
                stack.append(item)
                stack.append(_Token(str(key)))
        elif isinstance(v, str):  # a str subclass
            out += ("s", standardize_string(str(v)))
        else:
            out += ("o", short_repr(v, 200))
    return tuple(out)


def canonical_calls(calls: Iterable[ToolCall], ordered: bool = False) -> tuple:
    """A hashable normal form of a call list: BFCL string normalisation, 1 == 1.0, key order ignored,
    call order ignored unless ``ordered``. Never raises for JSON-like argument values of any depth or size."""
    keys = [(str(c.name), _canon(c.arguments)) for c in calls]
    if ordered:
        return tuple(keys)
    try:
        return tuple(sorted(keys))
    except TypeError:  # NaN-free flat tuples always compare; this is for exotic values only
        return tuple(sorted(keys, key=lambda k: (k[0], short_repr(k[1], 10_000))))


def calls_equal(a: Iterable[ToolCall], b: Iterable[ToolCall], ordered: bool = False) -> bool:
    """True when two concrete call lists are the same after normalisation (see :func:`canonical_calls`).

    >>> calls_equal([ToolCall("f", {"u": "US Dollar"}), ToolCall("g")], [ToolCall("g"), ToolCall("f", {"u": "us-dollar"})])
    True
    """
    return canonical_calls(a, ordered) == canonical_calls(b, ordered)
