"""Rule-based mutations of a correct call list: the error kinds real models make.

Each operator takes the correct calls and returns variants (``(operator, calls)``), never modifying its
input. Variants are *candidates*: whether one is really wrong, and which error it is, is decided by the
matcher (:mod:`toolrm_rl.core.match`), never assumed. Wrong values are grounded in the query or in the
right value itself (another entity the user named, an abbreviation, a unit or date format variant, a
small numeric slip, a list with one element dropped), never random strings: a reward model learns
nothing from negatives that give themselves away. Java/JavaScript values are source literals
(strings), so value and type operators act on the literal text for those languages.
"""

from __future__ import annotations

import copy
import difflib
import random
import re
from typing import Any, Callable, Iterator

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.forms import DATE, MONTHS, SYNONYM_OF, TIME, restated_in
from toolrm_rl.core.match import standardize_string

__all__ = ["OPERATORS", "INTENDED_CATEGORY", "mutate", "perturb_value", "retype_value", "near_miss_string",
           "query_values", "invented_name", "over_specified", "raw_copy_string",
           "raw_copy_number"]

Variant = tuple[str, list[ToolCall]]


def _copy(calls: list[ToolCall]) -> list[ToolCall]:
    return [ToolCall(c.name, copy.deepcopy(c.arguments)) for c in calls]


def _with(calls: list[ToolCall], i: int, param: str, value: Any) -> list[ToolCall]:
    out = _copy(calls)
    out[i].arguments[param] = value
    return out


# -- value-grounded near misses -------------------------------------------------------------------------

# A different unit of the same dimension: a real, plausible value error.
_UNIT_SWAPS = [("km", "miles"), ("kilometers", "miles"), ("meters", "feet"), ("kg", "lbs"), ("kilograms", "pounds"),
               ("celsius", "fahrenheit"), ("liters", "gallons"), ("USD", "EUR"), ("EUR", "GBP"), ("cm", "inches"),
               ("grams", "ounces"), ("hours", "minutes"), ("days", "weeks"), ("metric", "imperial")]
_FILE_EXTENSIONS = [".pdf", ".docx", ".txt", ".csv", ".xlsx", ".json", ".md", ".png", ".jpg"]
_UNIT_OF = {}
for _a, _b in _UNIT_SWAPS:
    _UNIT_OF.setdefault(_a.lower(), _b)
    _UNIT_OF.setdefault(_b.lower(), _a)
_DIGIT = re.compile(r"\d")


def _date_variants(value: str) -> list[str]:
    m = DATE.fullmatch(value)
    if not m:
        return []
    y, mo, d = m.groups()
    out = [f"{d}-{mo}-{y}", f"{mo}/{d}/{y}", f"{d}/{mo}/{y}"]
    if 1 <= int(mo) <= 12:
        out.append(f"{MONTHS[int(mo) - 1]} {int(d)}, {y}")
    if mo != d and int(d) <= 12:
        out.append(f"{y}-{d}-{mo}")  # day and month swapped
    return out


def near_miss_string(value: str, rng: random.Random) -> str | None:
    """A plausible wrong variant of ``value`` built from the value itself: a synonym or abbreviation
    ("USD" -> "US dollar"), another unit, a date or time in another format or off by a day, a digit slip
    inside an identifier, another file extension, a dropped word, a singular/plural slip. None when the
    value offers none. Case and punctuation variants are not offered: matchers normalise them away."""
    options: list[str] = []
    low = value.lower()
    group = SYNONYM_OF.get(low)
    if group:
        options += [w for w in group if w.lower() != low]
    for word, other in _UNIT_OF.items():
        if re.search(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", low):
            options.append(re.sub(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", other, value, count=1, flags=re.I))
            break
    options += _date_variants(value)
    date = DATE.fullmatch(value)
    if date and int(date.group(3)) < 28:
        options.append(f"{date.group(1)}-{date.group(2)}-{int(date.group(3)) + 1:02d}")
    time = TIME.fullmatch(value)
    if time:
        h, mi = int(time.group(1)), time.group(2)
        if h < 24:
            options += [f"{h % 12 or 12}:{mi} {'AM' if h < 12 else 'PM'}", f"{(h + 1) % 24:02d}:{mi}"]
    if not options and _DIGIT.search(value) and not date:
        digits = [m.start() for m in _DIGIT.finditer(value)]
        pos = rng.choice(digits)
        new_digit = str((int(value[pos]) + rng.choice([1, 9])) % 10)
        options.append(value[:pos] + new_digit + value[pos + 1:])
    ext = re.search(r"\.[A-Za-z]{2,4}$", value)
    if ext and ext.group(0).lower() in _FILE_EXTENSIONS:
        options.append(value[:ext.start()] + rng.choice([e for e in _FILE_EXTENSIONS if e != ext.group(0).lower()]))
    words = value.split()
    if not options and 1 < len(words) <= 6:
        options += [" ".join(words[:-1]), " ".join(words[1:])]
        if all(w[:1].isalpha() for w in words):
            options.append("".join(w[0].upper() for w in words))
    if not options and value[-1:].isalpha() and len(value) > 3 and value.islower() and " " not in value:
        options.append(value[:-1] if value.endswith("s") else value + "s")
    options = [o for o in options if o and o != value]
    return rng.choice(options) if options else None


def _numeric_slip(value: int | float, rng: random.Random) -> int | float | None:
    """A small numeric slip: off by one, a factor of ten, a rounding or a transposed digit pair."""
    if type(value) is int:
        options = [value + 1, value - 1, value * 10]
        if value and value % 10 == 0:
            options.append(value // 10)
        text = str(abs(value))
        if len(text) >= 2 and text[-1] != text[-2]:
            options.append(int(("-" if value < 0 else "") + text[:-2] + text[-1] + text[-2]))
        return rng.choice([o for o in options if o != value])
    if type(value) is float:
        if value == 0:
            return 1.0
        options = [round(value * 10, 6), round(value / 10, 6), round(value * 1.1, 6)]
        if value != round(value, 2):
            options.append(round(value, 2))  # precision lost
        if not value.is_integer():
            options.append(float(int(value)))  # fraction dropped
        return rng.choice([o for o in options if o != value])
    return None


def _list_error(value: list, rng: random.Random) -> list | None:
    """One element dropped, added (a duplicate) or changed to a near miss."""
    if not value:
        return None
    options: list[list] = [value + [value[-1]]]
    if len(value) > 1:
        i = rng.randrange(len(value))
        options.append(value[:i] + value[i + 1:])
    i = rng.randrange(len(value))
    item = value[i]
    new = near_miss_string(item, rng) if type(item) is str else _numeric_slip(item, rng) if type(item) in (int, float) else None
    if new is not None:
        options.append(value[:i] + [new] + value[i + 1:])
    return rng.choice(options)


def perturb_value(value: Any, rng: random.Random, literal: bool = False) -> Any:
    """A same-type near miss of ``value`` (see :func:`near_miss_string`, numeric slips, list errors);
    None when none is plausible. ``literal``: Java/JavaScript source text."""
    if literal and isinstance(value, str):
        if value in ("true", "false"):
            return "false" if value == "true" else "true"
        try:
            return str(int(value) + rng.choice([-1, 1]))
        except ValueError:
            pass
        m = re.fullmatch(r"\"(.*)\"", value)
        inner = near_miss_string(m.group(1), rng) if m else None
        return f"\"{inner}\"" if inner is not None else None
    if type(value) is bool:
        return not value
    if type(value) in (int, float):
        return _numeric_slip(value, rng)
    if type(value) is str:
        return near_miss_string(value, rng)
    if type(value) in (list, tuple):
        return _list_error(list(value), rng)
    if type(value) is dict and value:
        key = rng.choice(sorted(value))
        new = perturb_value(value[key], rng)
        return {**value, key: new} if new is not None else None
    return None


def retype_value(value: Any, literal: bool = False) -> Any:
    """The same content in a wrong type (``5`` -> ``"5"``, ``"5"`` -> ``5``, ``"a"`` -> ``["a"]``)."""
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
            try:
                return float(value)
            except ValueError:
                return [value]
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return str(value)
    return 0


_QUOTED = re.compile(r"(?<!\w)'([^']{1,60})'(?!\w)|\"([^\"]{1,60})\"")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_PROPER = re.compile(r"(?<=[a-z0-9,;:] )[A-Z][a-z]+(?: [A-Z][a-z]+)*\b")  # not sentence-initial


def query_values(query: str) -> tuple[list[str], list[float | int]]:
    """Strings (quoted phrases, capitalised names) and numbers mentioned in a user query: the
    values a model confuses, so swapping them in makes hard negatives."""
    strings = [a or b for a, b in _QUOTED.findall(query)] + _PROPER.findall(query)
    numbers = [float(x) if "." in x else int(x) for x in _NUMBER.findall(query)]
    return list(dict.fromkeys(strings)), list(dict.fromkeys(numbers))


_DATE_LIKE = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}|\d{1,2}:\d{2}")


def value_shape(value: str) -> str:
    """The kind of string a value is, so a swapped-in value is one a model could confuse with it:
    ``url``, ``email``, ``path``, ``date``, ``number``, ``code`` (an upper-case keyword such as a SQL
    verb or a currency code), ``identifier`` (one token with ``_``, digits or inner capitals) or ``text``.

    >>> [value_shape(v) for v in ("https://x.org/a", "a@b.com", "/tmp/f.txt", "2024-05-01", "42", "SELECT", "user_id", "New York")]
    ['url', 'email', 'path', 'date', 'number', 'code', 'identifier', 'text']
    """
    v = value.strip()
    if "://" in v or v.lower().startswith("www."):
        return "url"
    if re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", v, re.I):
        return "email"
    if " " not in v and ("/" in v or "\\" in v):
        return "path"
    if _DATE_LIKE.search(v):
        return "date"
    if re.fullmatch(r"-?\d+(?:\.\d+)?", v):
        return "number"
    if re.fullmatch(r"[A-Z][A-Z0-9]{1,}", v):
        return "code"
    if " " not in v and re.search(r"_|\d|[a-z][A-Z]", v):
        return "identifier"
    return "text"


# -- operators ----------------------------------------------------------------------------------------

def _wrong_function(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """Another function of the catalog, the one sharing most parameter names (a plausible confusion)."""
    for i, call in enumerate(calls):
        others = [s for s in catalog if s.name != call.name]
        if not others:
            continue
        best = max(len(set(s.properties) & set(call.arguments)) for s in others)
        pick = rng.choice([s for s in others if len(set(s.properties) & set(call.arguments)) == best])
        out = _copy(calls)
        out[i].name = pick.name
        yield "wrong_function", out


_VERB_SWAPS = {"get": "fetch", "fetch": "get", "find": "search", "search": "find", "calculate": "compute",
               "compute": "calculate", "create": "add", "add": "create", "list": "get", "update": "set",
               "set": "update", "delete": "remove", "remove": "delete", "send": "post", "check": "get"}


def invented_name(name: str, rng: random.Random) -> str | None:
    """A plausible function name a model invents for ``name`` (small models' most common wrong-name
    error): the namespace dropped (``math.gcd`` -> ``gcd``) or flattened (``math_gcd``), the verb swapped
    (``get_weather`` -> ``fetch_weather``), a word dropped (``get_user_orders`` -> ``get_orders``), or
    camelCase written in snake_case. ``None`` when no variant differs.

    >>> sorted({invented_name("math.gcd", random.Random(i)) for i in range(20)})
    ['gcd', 'math_gcd']
    """
    head, _, tail = name.rpartition(".")
    base = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", tail).lower()
    words = [w for w in base.split("_") if w]
    prefix = head + "." if head else ""
    variants = set()
    if head:
        variants.update({tail, f"{head.replace('.', '_')}_{tail}"})
    if words and words[0] in _VERB_SWAPS:
        variants.add(prefix + "_".join([_VERB_SWAPS[words[0]], *words[1:]]))
    if len(words) >= 3:
        i = rng.randrange(1, len(words) - 1)
        variants.add(prefix + "_".join(words[:i] + words[i + 1:]))
    if base != tail:
        variants.add(prefix + base)
    variants.discard(name)
    return rng.choice(sorted(variants)) if variants else None


def _invented_function(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """The right call under a name that is not in the catalog (:func:`invented_name`), arguments kept."""
    names = set(catalog.names())
    for i, call in enumerate(calls):
        if sum(c.name == call.name for c in calls) > 1:  # the matcher would pair it with a sibling: a value error
            continue
        new = invented_name(call.name, rng)
        if new is not None and new not in names:
            out = _copy(calls)
            out[i].name = new
            yield "invented_function", out


def _drop_required(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    for i, call in enumerate(calls):
        spec = catalog.get(call.name)
        for param in (spec.required if spec else []):
            if param in call.arguments:
                out = _copy(calls)
                del out[i].arguments[param]
                yield "drop_required", out


def _drop_optional(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """An optional parameter the right call sets (so the request asked for it) left out."""
    for i, call in enumerate(calls):
        spec = catalog.get(call.name)
        required = set(spec.required) if spec else set()
        for param in call.arguments:
            if param not in required:
                out = _copy(calls)
                del out[i].arguments[param]
                yield "drop_optional", out


def _plausible_value(schema: Any, query: str, rng: random.Random, literal: bool) -> Any:
    """A value for a parameter the call should not set: its default, else something from the query."""
    schema = schema if isinstance(schema, dict) else {}
    if schema.get("default") not in (None, ""):
        return schema["default"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    type_name = schema.get("type")
    strings, numbers = query_values(query)
    if type_name in ("integer", "int", "long", "short"):
        value: Any = next((n for n in numbers if type(n) is int), 1)
    elif type_name in ("number", "float", "double"):
        value = float(numbers[0]) if numbers else 1.0
    elif type_name in ("boolean", "bool", "Boolean"):
        value = True
    elif type_name in ("array", "list", "tuple"):
        value = [strings[0]] if strings else []
    elif type_name in ("object", "dict"):
        return None
    else:
        value = strings[0] if strings else None
    if value is None:
        return None
    return (str(value).lower() if type(value) is bool else str(value)) if literal else value


def _extra_param(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """A parameter of the schema that the right call leaves unset, set to its default or a query value."""
    for i, call in enumerate(calls):
        spec = catalog.get(call.name)
        unused = [p for p in (spec.properties if spec else {}) if p not in call.arguments]
        rng.shuffle(unused)
        for param in unused[:2]:
            value = _plausible_value(spec.properties[param], query, rng, literal)
            if value is not None:
                yield "extra_param", _with(calls, i, param, value)


def _unknown_param(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """A parameter the function does not have, borrowed from a sibling function of the catalog (models
    mix up parameters of related functions), with that function's plausible value."""
    for i, call in enumerate(calls):
        spec = catalog.get(call.name)
        own = set(spec.properties) if spec else set()
        borrowed = [(p, s) for other in catalog if other.name != call.name
                    for p, s in other.properties.items() if p not in own and p not in call.arguments]
        if borrowed:
            param, schema = rng.choice(borrowed)
            value = _plausible_value(schema, query, rng, literal)
            if value is not None:
                yield "unknown_param", _with(calls, i, param, value)


def _wrong_type(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    for i, call in enumerate(calls):
        for param, value in call.arguments.items():
            if value is not None:
                yield "wrong_type", _with(calls, i, param, retype_value(value, literal))


def _wrong_value(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """Value-grounded near misses of each argument (:func:`perturb_value`): synonyms, abbreviations, unit
    and date/time format variants and digit slips of strings; off-by-one, factor-of-ten and rounding slips
    of numbers; flipped booleans; list elements dropped, duplicated or changed; one dict value changed."""
    for i, call in enumerate(calls):
        for param, value in call.arguments.items():
            new = perturb_value(value, rng, literal)
            if new is not None and new != value:
                yield "wrong_value", _with(calls, i, param, new)


def _query_swap(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """Replace an argument with another value the user mentioned (the classic near miss)."""
    if literal or not query:
        return
    strings, numbers = query_values(query)
    for i, call in enumerate(calls):
        for param, value in call.arguments.items():
            if type(value) is str:
                # same shape: an id made of digits is confused with another number, a name with another name
                # and a URL with a URL, a SQL verb with a keyword: never "French" for a URL (no model writes that)
                pool = ([str(n) for n in numbers if type(n) is int and str(n) != value] if value.isdigit()
                        else [s for s in strings if s.lower() != value.lower() and value_shape(s) == value_shape(value)])
            elif type(value) in (int, float):
                pool = [type(value)(n) for n in numbers if n != value and (type(value) is float or type(n) is int)]
            else:
                continue
            if pool:
                yield "query_swap", _with(calls, i, param, rng.choice(pool))


# Words a copied span does not end on: "Paris in" is no value a model writes.
_SPAN_STOP = frozenset("a an the and or in into on at to for of from with by is are was be as my our your me please "
                       "also then that this it its i you we they he she his her their some any all about after before "
                       "get find show check send use set make call what which who how can could would will do does am being within".split())
_SPAN_GAP = re.compile(r" ?,? ?")  # words of one span are joined by a space or a comma, never a sentence break
_SPAN_WORD = re.compile(r"[^\s]+")


def _query_words(query: str) -> list[tuple[int, int]]:
    """Start and end offsets of the query's words, punctuation at a word's edges left out."""
    out = []
    for m in _SPAN_WORD.finditer(query[:4000]):
        start, end = m.start(), m.end()
        while start < end and not query[start].isalnum():
            start += 1
        while end > start and not query[end - 1].isalnum():
            end -= 1
        if start < end:
            out.append((start, end))
    return out


def _span(query: str, words: list[tuple[int, int]], lo: int, hi: int) -> str | None:
    """The query text of words ``lo..hi`` when they form one phrase (no sentence break, quote or bracket
    between them, no possessive), else None."""
    if any(not _SPAN_GAP.fullmatch(query[words[j][1]:words[j + 1][0]]) for j in range(lo, hi)):
        return None
    span = query[words[lo][0]:words[hi][1]]
    return None if "'s" in span.lower() else span


def _plain_span(text: str) -> bool:
    words = text.lower().split()
    return bool(words) and words[0].strip(",;:") not in _SPAN_STOP and words[-1].strip(",;:") not in _SPAN_STOP


def over_specified(value: str, query: str, rng: random.Random) -> str | None:
    """``value`` (found verbatim in ``query``) widened by the query's neighbouring words: the model copies
    more than the parameter takes ("Paris" -> "Paris, France", "report" -> "quarterly report"). None when
    the value is not in the query or its neighbours are only filler words.

    >>> over_specified("Paris", "Is it raining in Paris, France today?", random.Random(0))
    'Paris, France'
    """
    words = _query_words(query)
    low, target = query.lower(), value.lower().strip()
    if not target or len(target) > 80:
        return None
    options = []
    for k, (start, _) in enumerate(words):
        if not low.startswith(target, start):
            continue
        end_k = next((j for j in range(k, len(words)) if words[j][1] >= start + len(target)), None)
        if end_k is None or words[end_k][1] != start + len(target):
            continue  # not a whole-word occurrence
        for before, after in ((0, 1), (1, 0)):
            lo, hi = k - before, end_k + after
            if lo < 0 or hi >= len(words):
                continue
            added = [query[a:b].lower() for a, b in words[lo:k] + words[end_k + 1:hi + 1]]
            span = _span(query, words, lo, hi)
            if span and span.lower() != target and not _SPAN_STOP.intersection(added) and len(span) <= 2 * len(value) + 24:
                options.append(span)
    return rng.choice(options) if options else None


_MONTH_NUMBER = {m.lower()[:3]: str(k + 1) for k, m in enumerate(MONTHS)}


def _value_tokens(text: str) -> list[str]:
    """Lower-case words and numbers of ``text``, numbers without leading zeros and month names as numbers,
    so "2022-03-11" and "March 11, 2022" share all three."""
    out = []
    for tok in re.findall(r"[a-z]+|\d+", text.lower()):
        out.append(str(int(tok)) if tok.isdigit() else _MONTH_NUMBER.get(tok[:3], tok) if len(tok) >= 3 else tok)
    return out


def raw_copy_string(value: str, query: str) -> str | None:
    """The query's own words for a value the right answer writes in another form (not verbatim in the
    query): the span of one to four words sharing most of the value's words and numbers (months count as
    numbers), or whose initials spell it, e.g. "March 11, 2022" for "2022-03-11", "New York City" for
    "NYC" (a model copies where it should convert). None when no span shares at least half of them, or
    the best one normalises to the value itself.

    >>> raw_copy_string("2022-03-11", "Book it for March 11, 2022 please")
    'March 11, 2022'
    >>> raw_copy_string("NYC", "What's the weather in New York City tomorrow")
    'New York City'
    """
    known = restated_in(value, query)
    if known is not None:
        return known
    target = standardize_string(value)
    value_tokens = set(_value_tokens(value))
    words = _query_words(query)
    if not target or len(target) > 80 or not words or not value_tokens:
        return None
    acronym = value.lower() if value.isalpha() and 2 <= len(value) <= 5 else None
    best, best_key = None, (0.5, -5, 0.0)
    for k in range(len(words)):
        for n in range(1, 5):
            if k + n > len(words):
                break
            span = _span(query, words, k, k + n - 1)
            std = standardize_string(span) if span else ""
            if not std or std == target or not _plain_span(span):
                continue
            span_tokens = _value_tokens(span)
            cover = len(value_tokens & set(span_tokens)) / len(value_tokens)
            if acronym and n > 1 and "".join(t[0] for t in span_tokens) == acronym:
                cover = 1.0
            key = (cover, -n, difflib.SequenceMatcher(None, target, std, autojunk=False).ratio())
            if cover >= 0.5 and key > best_key:
                best, best_key = span, key
    return best


_CONVERSIONS = (10, 100, 1000, 60, 3600, 24, 7, 12, 365, 10**6, 10**9)  # the last two: "1.2 million"


def raw_copy_number(value: int | float, numbers: list[int | float]) -> int | float | None:
    """A number the user wrote that the right value converts (the same digits, or a common factor
    away: percent, thousands, millions, minutes, hours, days, months), e.g. 5 for 0.05 ("5%"), 2 for 120 ("2
    hours"). None when no query number relates to ``value``.

    >>> raw_copy_number(0.05, [5, 2024])
    5
    """
    if isinstance(value, bool) or not value:
        return None
    for n in numbers:
        if isinstance(n, bool) or not n or n == value:
            continue
        ratio = max(abs(value), abs(n)) / min(abs(value), abs(n))
        if any(abs(ratio - f) < 1e-9 * f for f in _CONVERSIONS):
            return n
    return None


def _raw_copy(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """A value the right call converts from the request (a date or unit rewritten, a percentage as a
    fraction, a name normalised: not verbatim in the query) replaced by the user's own words for it.
    Real failures copy like this as often as they invent (the grounding a renderer marks must not decide)."""
    if literal or not query:
        return
    _, numbers = query_values(query)
    low = query.lower()
    for i, call in enumerate(calls):
        for param, value in call.arguments.items():
            if type(value) is str and 0 < len(value.split()) <= 4 and value.lower() not in low:  # not free text
                new = raw_copy_string(value, query)
            elif type(value) in (int, float) and str(value) not in query:
                new = raw_copy_number(value, numbers)
                new = type(value)(new) if new is not None and type(value) is float else new
            else:
                continue
            if new is not None and new != value:
                yield "raw_copy", _with(calls, i, param, new)


def _over_specify(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """A string value the user wrote, widened by the words around it in the request (``over_specified``)."""
    if literal or not query:
        return
    for i, call in enumerate(calls):
        for param, value in call.arguments.items():
            if type(value) is str:
                new = over_specified(value, query, rng)
                if new is not None:
                    yield "over_specify", _with(calls, i, param, new)


def _swap_values(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """Two arguments of the same type exchanged (origin and destination, start and end)."""
    for i, call in enumerate(calls):
        params = [p for p in call.arguments if call.arguments[p] is not None]
        pairs = [(a, b) for k, a in enumerate(params) for b in params[k + 1:]
                 if type(call.arguments[a]) is type(call.arguments[b]) and call.arguments[a] != call.arguments[b]]
        if pairs:
            a, b = rng.choice(pairs)
            out = _copy(calls)
            out[i].arguments[a], out[i].arguments[b] = call.arguments[b], call.arguments[a]
            yield "swap_values", out


def _drop_call(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """One call of several left out (models often stop early)."""
    if len(calls) > 1:
        for i in range(len(calls)):
            yield "drop_call", _copy(calls[:i]) + _copy(calls[i + 1:])


def _duplicate_call(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    if calls:
        i = rng.randrange(len(calls))
        yield "duplicate_call", _copy(calls[:i + 1]) + _copy(calls[i:])


def _extra_call(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """One call too many: a repeat of a right call with one argument changed (an unrequested extra)."""
    if not calls or literal:
        return
    i = rng.randrange(len(calls))
    params = list(calls[i].arguments)
    rng.shuffle(params)
    for param in params:
        new = perturb_value(calls[i].arguments[param], rng)
        if new is not None and new != calls[i].arguments[param]:
            yield "extra_call", _copy(calls) + _with([calls[i]], 0, param, new)
            return


def _no_call(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    if calls:
        yield "no_call", []


_RESULT_REF = re.compile(r"\$var(\d+)[.$]")  # NESTFUL-style reference to the k-th call's result


def _references(value: Any) -> set[int]:
    """1-based indices of the earlier results a value refers to (``$var2.id$`` -> {2})."""
    if isinstance(value, str):
        return {int(k) for k in _RESULT_REF.findall(value)}
    if isinstance(value, dict):
        return set().union(*map(_references, value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*map(_references, value)) if value else set()
    return set()


def _swap_order(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """Two adjacent calls in the wrong order, only where order provably matters: the later call uses
    the earlier one's result (``$varK...$``). Elsewhere a swap is either the same answer (order-free
    checking) or, in a multi-turn state checker, possibly still right: never a safe negative."""
    spots = [i for i in range(len(calls) - 1) if i + 1 in _references(calls[i + 1].arguments)]
    if spots:
        i = rng.choice(spots)
        out = _copy(calls)
        out[i], out[i + 1] = out[i + 1], out[i]
        yield "swap_order", out


def _related_calls(catalog: ToolCatalog, query: str, rng: random.Random, literal: bool,
                   exclude: set[str] = frozenset()) -> Iterator[ToolCall]:
    """Calls to the two functions of ``catalog`` (outside ``exclude``) whose names and descriptions share
    most words with ``query``, required parameters filled from the query."""
    words = set(re.findall(r"[a-z]{3,}", query.lower()))

    def overlap(spec) -> int:
        return len(words & set(re.findall(r"[a-z]{3,}", (spec.name.replace("_", " ") + " " + spec.description).lower())))

    ranked = sorted((s for s in catalog if s.name not in exclude), key=lambda s: (-overlap(s), s.name))
    for spec in ranked[:2]:
        args = {}
        for param in spec.required:
            value = _plausible_value(spec.properties.get(param), query, rng, literal)
            if value is None:
                break
            args[param] = value
        else:
            yield ToolCall(spec.name, args)


def _call_when_none(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """For a request no tool serves (gold ``[]``): a call to the most related function, required
    parameters filled from the query (the ToolRM paper's known weakness: calling instead of abstaining)."""
    if calls or not len(catalog):
        return
    for call in _related_calls(catalog, query, rng, literal):
        yield "call_when_none", [call]


def _extra_function(calls, catalog, rng, literal, query) -> Iterator[Variant]:
    """The right calls plus one to another related function of the catalog: the model does what was asked
    and something it was not asked (most real "too many calls" failures call a function the answer
    does not, rather than repeating one)."""
    if not calls:
        return
    for call in _related_calls(catalog, query, rng, literal, exclude={c.name for c in calls}):
        out = _copy(calls)
        out.insert(rng.randrange(len(out) + 1), call)
        yield "extra_function", out
        return


OPERATORS: dict[str, Callable[..., Iterator[Variant]]] = {
    "wrong_function": _wrong_function, "invented_function": _invented_function, "drop_required": _drop_required, "drop_optional": _drop_optional,
    "extra_param": _extra_param, "unknown_param": _unknown_param, "wrong_type": _wrong_type,
    "wrong_value": _wrong_value, "query_swap": _query_swap, "raw_copy": _raw_copy,
    "over_specify": _over_specify, "swap_values": _swap_values, "drop_call": _drop_call,
    "duplicate_call": _duplicate_call, "extra_call": _extra_call, "no_call": _no_call, "swap_order": _swap_order,
    "call_when_none": _call_when_none, "extra_function": _extra_function,
}

# The FC-RewardBench error category (:data:`toolrm_rl.core.match.ERROR_CATEGORIES`) each operator aims
# at. The card has no order category: ``swap_order`` negatives carry the matcher's
# ``sequential_checker:wrong_order`` (:data:`toolrm_rl.data.pairs.WRONG_ORDER`), filed under "other".
INTENDED_CATEGORY: dict[str, str] = {
    "wrong_function": "wrong_function", "invented_function": "wrong_function", "drop_required": "missing_required", "drop_optional": "missing_optional",
    "extra_param": "unexpected_param", "unknown_param": "unexpected_param", "wrong_type": "wrong_type",
    "wrong_value": "wrong_value", "query_swap": "wrong_value", "raw_copy": "wrong_value",
    "over_specify": "wrong_value", "swap_values": "wrong_value", "drop_call": "wrong_count",
    "duplicate_call": "wrong_count", "extra_call": "wrong_count", "no_call": "wrong_count",
    "swap_order": "other", "call_when_none": "wrong_count", "extra_function": "wrong_count",
}


def mutate(calls: list[ToolCall], catalog: Any, *, seed: int = 0, operators: list[str] | None = None,
           literal_values: bool = False, query: str = "") -> list[Variant]:
    """All variants of ``calls`` produced by ``operators`` (default: all of :data:`OPERATORS`).

    Args:
        calls: a correct call list (not modified); ``[]`` when no call is right.
        catalog: the functions the calls were made against.
        seed: seeds the choices operators make (which other function, which near miss).
        literal_values: values are Java/JavaScript source literals (strings).
        query: the user's request; ``query_swap``, ``extra_param`` and ``call_when_none`` draw values from it.

    Returns:
        ``[(operator, calls), ...]``; an operator yields nothing where it does not apply.
    """
    catalog = ToolCatalog.load(catalog)
    rng = random.Random(seed)
    out: list[Variant] = []
    for name in operators or list(OPERATORS):
        if name not in OPERATORS:
            raise ValueError(f"unknown mutation operator {name!r}; choose from {sorted(OPERATORS)}")
        out.extend(OPERATORS[name](calls, catalog, rng, literal_values, query))
    return out
