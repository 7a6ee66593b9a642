"""How one value is written in other forms: synonym groups (currencies, units, places, months, ...), an
ISO date or 24-hour time in words, a fraction as a percentage, a large round number with a scale word. The
mutation operators write these forms as near misses and raw copies (:mod:`toolrm_rl.data.mutate`); the
renderer marks a value whose other form the user wrote (:class:`toolrm_rl.core.render.RenderSpec`
``mark_conversions``).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["DATE", "MONTHS", "SYNONYMS", "SYNONYM_OF", "TIME", "ordinal", "restated_in", "restatements"]

# Groups of names for the same thing: a model writing another member than the expected one is the
# "US dollar" vs "USD" / "g/mole" vs "grams/mole" near miss (matchers compare normalised text).
SYNONYMS = [
    ["USD", "US dollar", "US dollars", "dollars"], ["EUR", "euro", "euros"], ["GBP", "British pound", "pounds sterling"],
    ["JPY", "Japanese yen", "yen"], ["INR", "Indian rupee", "rupees"], ["CNY", "Chinese yuan", "yuan"],
    ["km", "kilometers", "kilometres"], ["mi", "miles"], ["m", "meters", "metres"], ["ft", "feet"],
    ["kg", "kilograms"], ["lb", "lbs", "pounds"], ["g", "grams"], ["l", "liters", "litres"], ["gal", "gallons"],
    ["celsius", "C", "°C", "degrees Celsius"], ["fahrenheit", "F", "°F"], ["kelvin", "K"],
    ["g/mol", "g/mole", "grams/mole", "grams per mole"], ["mph", "miles per hour"], ["km/h", "kph", "kilometers per hour"],
    ["sec", "seconds", "s"], ["min", "minutes"], ["hr", "hours", "h"],
    ["United States", "USA", "US", "United States of America"], ["United Kingdom", "UK", "Great Britain"],
    ["New York City", "NYC", "New York"], ["Los Angeles", "LA"], ["San Francisco", "SF"],
    ["California", "CA"], ["Texas", "TX"], ["Florida", "FL"], ["Washington", "WA"], ["Illinois", "IL"],
    ["January", "Jan"], ["February", "Feb"], ["March", "Mar"], ["April", "Apr"], ["August", "Aug"],
    ["September", "Sep", "Sept"], ["October", "Oct"], ["November", "Nov"], ["December", "Dec"],
    ["Monday", "Mon"], ["Friday", "Fri"], ["Saturday", "Sat"], ["Sunday", "Sun"],
    ["ascending", "asc"], ["descending", "desc"], ["average", "avg", "mean"], ["maximum", "max"], ["minimum", "min"],
]
SYNONYM_OF = {w.lower(): group for group in SYNONYMS for w in group}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
TIME = re.compile(r"(\d{1,2}):(\d{2})")
SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"))


def ordinal(day: int) -> str:
    """A day of the month as users write it in dates, ``1st``, ``11th``, ``22nd`` (``day``: 1-31)."""
    return f"{day}{'th' if 10 <= day % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th')}"


def restatements(value: Any) -> list[str]:
    """How a user writes a value that a call writes in a canonical form: an ISO date in words, a 24-hour
    time on the 12-hour clock, a fraction as a percentage, a large round number with its scale word, a code
    or abbreviation spelled out (the synonym table's other forms). Empty when the value has no such form.

    >>> restatements("2022-03-11")
    ['March 11, 2022', '11 March 2022', 'March 11th, 2022', '11th March 2022']
    >>> restatements(0.05)
    ['5%', '5 percent']
    >>> restatements(1267000000)
    ['1.267 billion']
    >>> restatements("USD")
    ['US dollar', 'US dollars', 'dollars']
    """
    if type(value) is float and 0 < value < 1:
        pct = round(value * 100, 6)
        if pct > 0 and abs(pct * 100 - round(pct * 100)) < 1e-6:  # at most two decimals as a percentage
            return [f"{pct:g}%", f"{pct:g} percent"]
        return []
    if type(value) in (int, float):
        return _scaled(value)
    if type(value) is not str:
        return []
    date = DATE.fullmatch(value)
    if date:
        y, mo, d = (int(x) for x in date.groups())
        if not (1 <= mo <= 12 and 1 <= d <= 31):
            return []
        month = MONTHS[mo - 1]
        return [f"{month} {d}, {y}", f"{d} {month} {y}", f"{month} {ordinal(d)}, {y}", f"{ordinal(d)} {month} {y}"]
    time = TIME.fullmatch(value)
    if time:
        h, mi = int(time.group(1)), time.group(2)
        if h >= 24 or int(mi) >= 60:
            return []
        half = "AM" if h < 12 else "PM"
        return [f"{h % 12 or 12}:{mi} {half}"] + ([f"{h % 12 or 12} {half.lower()}"] if mi == "00" else [])
    group = SYNONYM_OF.get(value.lower())
    if group and group[0] == value:  # only the canonical form is restated
        return [w for w in group[1:] if len(w) >= 2]
    return []


def _scaled(number: int | float) -> list[str]:
    """A number of a million or more as "1.267 billion": the largest scale word that leaves at most three
    decimals (an amount or a population, not an identifier: 1234567 has no such form)."""
    if not abs(number) < 1e16:  # also NaN
        return []
    for scale, word in SCALES:
        if abs(number) >= scale:
            x = number / scale
            return [f"{x:g} {word}"] if abs(x * 1000 - round(x * 1000)) < 1e-6 else []
    return []


def restated_in(value: Any, query: str) -> str | None:
    """The query's span (as written) that is one of :func:`restatements` of ``value``, if any."""
    for phrase in restatements(value):
        m = re.search(rf"(?<![\w]){re.escape(phrase)}(?![\w])", query, flags=re.I)
        if m:
            return m.group(0)
    return None
