"""Rule-based mutations of a correct call list: the error kinds real models make.

Each operator takes the correct calls and returns variants (``(operator, calls)``), never
modifying its input. Variants are *candidates*: whether one is really wrong is decided by the
matcher (:mod:`toolrm_rl.core.match`), never assumed. Java/JavaScript values are source literals
(strings), so value and type operators act on the literal text for those languages.
"""

from __future__ import annotations

import copy
import random
import re
from typing import Any, Callable, Iterator

from toolrm_rl.core.calls import ToolCall, ToolCatalog

__all__ = ["OPERATORS", "mutate", "perturb_value", "retype_value"]

Variant = tuple[str, list[ToolCall]]


def _copy(calls: list[ToolCall]) -> list[ToolCall]:
    return [ToolCall(c.name, copy.deepcopy(c.arguments)) for c in calls]


def perturb_value(value: Any, rng: random.Random, literal: bool = False) -> Any:
    """A same-type value that differs from ``value`` (a near miss, not a random string)."""
    if literal and isinstance(value, str):
        try:
            return str(int(value) + rng.choice([-1, 1]))
        except ValueError:
            return value + "_x" if value not in ("true", "false") else ("false" if value == "true" else "true")
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + rng.choice([-1, 1, 10])
    if isinstance(value, float):
        return round(value * 1.5 + 1.0, 3)
    if isinstance(value, str):
        return rng.choice([value + " extra", value[: max(1, len(value) // 2)] + "zz", "unknown"]) if value else "x"
    if isinstance(value, (list, tuple)):
        return list(value[:-1]) if len(value) > 1 else list(value) + [perturb_value(value[0], rng) if value else 1]
    if isinstance(value, dict) and value:
        key = rng.choice(sorted(value))
        return {**value, key: perturb_value(value[key], rng)}
    return "x"


def retype_value(value: Any, literal: bool = False) -> Any:
    """The same content in a wrong type (``5`` -> ``"5"``, ``"a"`` -> ``["a"]``)."""
    if literal:
        return 1 if isinstance(value, str) else str(value)  # Java/JS expect literal text
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return [value]
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return str(value)
    return 0


def _wrong_name(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    for i, call in enumerate(calls):
        others = [n for n in catalog.names() if n != call.name]
        for name in ([rng.choice(others)] if others else []) + [call.name.replace(".", "_") + "_v2"]:
            out = _copy(calls)
            out[i].name = name
            yield "wrong_name", out


def _drop_param(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    for i, call in enumerate(calls):
        spec = catalog.get(call.name)
        required = set(spec.required) if spec else set()
        for param in call.arguments:
            out = _copy(calls)
            del out[i].arguments[param]
            yield ("drop_required" if param in required else "drop_optional"), out


def _extra_param(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    for i, call in enumerate(calls):
        spec = catalog.get(call.name)
        unused = [p for p in (spec.properties if spec else {}) if p not in call.arguments]
        out = _copy(calls)
        out[i].arguments["verbose" if "verbose" not in call.arguments else "extra_flag"] = "true" if literal else True
        yield "unknown_param", out
        if unused:
            out = _copy(calls)
            param = rng.choice(unused)
            default = (spec.properties[param] or {}).get("default", "1" if literal else 1)
            out[i].arguments[param] = default
            yield "extra_schema_param", out


def _wrong_type(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    for i, call in enumerate(calls):
        for param, value in call.arguments.items():
            out = _copy(calls)
            out[i].arguments[param] = retype_value(value, literal)
            yield "wrong_type", out


def _wrong_value(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    for i, call in enumerate(calls):
        for param, value in call.arguments.items():
            out = _copy(calls)
            out[i].arguments[param] = perturb_value(value, rng, literal)
            yield "wrong_value", out


def _format_variant(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """Case and punctuation variants of strings (BFCL's normalisation accepts them) and int-for-float."""
    for i, call in enumerate(calls):
        for param, value in call.arguments.items():
            if isinstance(value, str) and value and not literal:
                out = _copy(calls)
                out[i].arguments[param] = value.upper().replace(" ", "-")
                yield "format_variant", out
            elif isinstance(value, float) and value.is_integer():
                out = _copy(calls)
                out[i].arguments[param] = int(value)
                yield "format_variant", out


def _swap_values(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    for i, call in enumerate(calls):
        params = list(call.arguments)
        if len(params) >= 2:
            a, b = rng.sample(params, 2)
            out = _copy(calls)
            out[i].arguments[a], out[i].arguments[b] = call.arguments[b], call.arguments[a]
            yield "swap_values", out


def _wrong_count(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """Too few calls (each one dropped in turn: real models often stop early), one too many, none."""
    if calls:
        i = rng.randrange(len(calls))
        yield "duplicate_call", _copy(calls[:i + 1]) + _copy(calls[i:])
        yield "no_call", []
    if len(calls) > 1:
        for i in range(len(calls)):
            yield "drop_call", _copy(calls[:i]) + _copy(calls[i + 1:])
        yield "swap_order", _copy(calls[::-1])


_QUOTED = re.compile(r"(?<!\w)'([^']{1,60})'(?!\w)|\"([^\"]{1,60})\"")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_PROPER = re.compile(r"(?<=[a-z0-9,;:] )[A-Z][a-z]+(?: [A-Z][a-z]+)*\b")  # not sentence-initial


def query_values(query: str) -> tuple[list[str], list[float | int]]:
    """Strings (quoted phrases, capitalised names) and numbers mentioned in a user query: the
    values a model confuses, so swapping them in makes hard negatives."""
    strings = [a or b for a, b in _QUOTED.findall(query)] + _PROPER.findall(query)
    numbers = [float(x) if "." in x else int(x) for x in _NUMBER.findall(query)]
    return list(dict.fromkeys(strings)), list(dict.fromkeys(numbers))


def near_miss_string(value: str, rng: random.Random) -> str | None:
    """A plausible wrong variant: a dropped or added word, an abbreviation, a different date format."""
    words = value.split()
    options = []
    if len(words) > 1:
        options += [" ".join(words[:-1]), " ".join(words[1:]), "".join(w[0].upper() for w in words)]
    date = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", value)
    if date:
        y, m, d = date.groups()
        options += [f"{m}/{d}/{y}", f"{d}-{m}-{y}"]
    if value and value[-1:].isalpha() and len(value) > 3:
        options.append(value[:-1] if value.endswith("s") else value + "s")
    return rng.choice(options) if options else None


def _query_swap(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """Replace an argument with another value the user mentioned (the classic near miss)."""
    if literal or not query:
        return
    strings, numbers = query_values(query)
    for i, call in enumerate(calls):
        for param, value in call.arguments.items():
            if type(value) is str:
                pool = [s for s in strings if s.lower() != value.lower()]
            elif type(value) in (int, float):
                pool = [type(value)(n) for n in numbers if n != value and (type(value) is float or type(n) is int)]
            else:
                continue
            if pool:
                out = _copy(calls)
                out[i].arguments[param] = rng.choice(pool)
                yield "query_swap", out


def _near_miss(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """Schema-valid near misses: string variants and small numeric slips."""
    if literal:
        return
    for i, call in enumerate(calls):
        for param, value in call.arguments.items():
            if type(value) is str:
                new = near_miss_string(value, rng)
            elif type(value) is int:
                new = value + rng.choice([-1, 1]) if abs(value) < 1000 else value * 10
            elif type(value) is float:
                new = round(value * rng.choice([0.1, 10.0]), 6) if value else 1.0
            elif type(value) is list and value:
                new = value[:-1] if len(value) > 1 else value + value
            else:
                new = None
            if new is not None and new != value:
                out = _copy(calls)
                out[i].arguments[param] = new
                yield "near_miss", out


OPERATORS: dict[str, Callable[..., Iterator[Variant]]] = {
    "wrong_name": _wrong_name, "drop_param": _drop_param, "extra_param": _extra_param,
    "wrong_type": _wrong_type, "wrong_value": _wrong_value, "format_variant": _format_variant,
    "swap_values": _swap_values, "wrong_count": _wrong_count, "query_swap": _query_swap, "near_miss": _near_miss,
}


def mutate(calls: list[ToolCall], catalog: Any, *, seed: int = 0, operators: list[str] | None = None,
           literal_values: bool = False, query: str = "") -> list[Variant]:
    """All variants of ``calls`` produced by ``operators`` (default: all of :data:`OPERATORS`).

    Args:
        calls: a correct call list (not modified).
        catalog: the functions the calls were made against.
        seed: seeds the choices operators make (which other function, which perturbation).
        literal_values: values are Java/JavaScript source literals (strings).
        query: the user's request; ``query_swap`` draws wrong values from it.
    """
    catalog = ToolCatalog.load(catalog)
    rng = random.Random(seed)
    out: list[Variant] = []
    for name in operators or list(OPERATORS):
        if name not in OPERATORS:
            raise ValueError(f"unknown mutation operator {name!r}; choose from {sorted(OPERATORS)}")
        out.extend(OPERATORS[name](calls, catalog, rng, literal_values, query))
    return out
