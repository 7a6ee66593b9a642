"""Rendering (tool catalog, conversation, candidate calls) into the reward model's input text.

Two paths, chosen by :attr:`RenderSpec.mode`:

- ``chat_template`` (decoder backbones): ``tokenizer.apply_chat_template(conversation + candidate,
  tools=...)``; the candidate is the final assistant message, with ``tool_calls`` (arguments as
  dicts, which Qwen-style templates render as JSON inside ``<tool_call>`` blocks) or, for an
  abstention, with the candidate text as content.
- ``plain`` (encoder backbones such as BERT with 512 positions): compact segments joined by
  :attr:`RenderSpec.sep`, the CANDIDATE FIRST (so a hard cut at the end can never remove it): its call
  count (``[2 calls]``) and each argument marked by where its value comes from (``name=value`` found
  verbatim in the conversation, ``name~value`` found after BFCL-style normalisation, ``name?value``
  found nowhere), then the conversation and the catalog (functions most related to the user's words
  first).

The context (catalog + conversation) is rendered the same way for every candidate of a prompt: it is
fit into ``max_tokens - candidate_tokens`` whatever the candidate, and the order of the catalog
depends on the conversation only. So two candidates differ only in the candidate's own text, and a
reward model cannot read a candidate's length off the context (and a decoder can score the shared
prefix once). With a token budget, cuts follow one policy and are listed in :class:`TruncationReport`:
shorten descriptions, then remove them, then drop conversation turns (oldest first, never the last
user turn), then drop functions (least related first). The functions most related to the user's
words are kept, with shortened descriptions, until the rest of the catalog is gone. The candidate is
never cut. No torch or transformers import here: the tokenizer is duck-typed (``apply_chat_template``,
``__call__`` or ``encode``).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import functools
import json
import math
import re
import threading
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolrm_rl.core.calls import ToolCall, ToolCatalog, calls_from_openai, load_json_field, short_repr
from toolrm_rl.core.forms import restatements
from toolrm_rl.core.match import canonical_calls, standardize_string

__all__ = ["MODES", "RMExample", "RenderSpec", "RenderedInput", "TruncationReport", "format_calls", "render",
           "render_example"]

MODES = ("chat_template", "plain")
_MAX_PASSES = 4  # exact counts of a chosen text; after an overshoot the next choice aims lower
_NOT_IN_CATALOG = "(not in the catalog)"
_Count = Callable[[list[str], bool], list[int]]  # texts, final -> token counts


def _help(default: Any, text: str) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class RenderSpec:
    """How reward-model inputs are rendered; saved in a checkpoint's ``toolrm.json`` via :meth:`to_dict`
    so that training, evaluation and RL reward workers all render identically."""

    mode: str = _help("plain", "'chat_template' (apply_chat_template, tools=) or 'plain' (compact, candidate first).")
    max_tokens: int | None = _help(512, "Budget for the whole input, special tokens included; None: no truncation.")
    sep: str = _help("\n", "Plain mode: separator between segments, e.g. '\\n' or the sep token ' [SEP] '.")
    max_description_chars: int = _help(160, "First cut: function descriptions are shortened to this length.")
    max_param_description_chars: int = _help(60, "First cut: parameter descriptions are shortened to this length.")
    candidate_tokens: int = _help(64, "Tokens reserved for the candidate: the context is fit into max_tokens - "
                                      "candidate_tokens whatever the candidate, so all candidates of a prompt see the "
                                      "same context; a longer candidate makes the input longer than max_tokens.")
    mark_grounding: bool = _help(True, "Plain mode: write each argument as name=value (value found verbatim in the "
                                       "conversation), name~value (found after normalisation) or name?value (not found).")
    mark_coverage: bool = _help(True, "Plain mode: after the call count, how many of the values the last user turn "
                                      "mentions (numbers, quoted text, names) the candidate's arguments use, e.g. "
                                      "[2 calls, 2/3 asked]: an answer that leaves part of the request out shows it.")
    mark_repeats: bool = _help(False, "Plain mode: after the call count, how many calls repeat an earlier one exactly, "
                                      "e.g. [2 calls, 1 repeated]: a duplicated call is rarely wanted and is the cheapest "
                                      "way for a policy to look thorough. Off in checkpoints saved before it existed.")
    mark_conversions: bool = _help(False, "Plain mode, with mark_grounding: a value not in the conversation whose "
                                          "other form is (an ISO date the user wrote in words, 0.05 for '5%', USD for "
                                          "'US dollars', 1.4e9 for '1.4 billion': toolrm_rl.core.forms.restatements) is "
                                          "written name^value, not name?value (a conversion is not an invented value), "
                                          "and 5000 for '5,000' name~value. Off in older checkpoints.")
    describe_calls: int = _help(0, "Plain mode: after the candidate, each called catalog function's description "
                                   "cut to this many characters, e.g. 'function get_weather: Current weather for a "
                                   "city' (0: off). The context keeps the functions most related to the user's words, "
                                   "whatever the candidate calls, so without it a wrong or unneeded function's "
                                   "purpose may not be in the input at all. Off in older checkpoints.")
    max_near_misses: int = _help(3, "Functions most related to the user's words that keep shortened descriptions "
                                    "until the rest of the catalog is gone (besides the most related one).")
    chars_per_token: float = _help(4.0, "Without a tokenizer, n_tokens = ceil(len(text) / chars_per_token).")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), _spec_hints()[f.name])
        if self.mode not in MODES:
            raise ValueError(f"RenderSpec.mode: expected one of {MODES}, got {self.mode!r}")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ValueError("RenderSpec.max_tokens: must be positive or None")
        if min(self.max_description_chars, self.max_param_description_chars, self.max_near_misses,
               self.candidate_tokens, self.describe_calls) < 0:
            raise ValueError("RenderSpec: description limits, candidate_tokens, describe_calls and max_near_misses "
                             "must be >= 0")
        if self.chars_per_token <= 0:
            raise ValueError("RenderSpec: chars_per_token must be > 0")

    @property
    def context_tokens(self) -> int | None:
        """The context's budget: ``max_tokens - candidate_tokens``, at least half of ``max_tokens`` (so a small
        budget keeps room for the context); None without a budget."""
        return None if self.max_tokens is None else max(self.max_tokens - self.candidate_tokens, (self.max_tokens + 1) // 2)

    @property
    def hard_cap_tokens(self) -> int | None:
        """Where scoring and training cut an input (away from the candidate): ``2 * max_tokens``, room for a
        candidate far longer than ``candidate_tokens`` while bounding the cost of a hostile one."""
        return None if self.max_tokens is None else 2 * self.max_tokens

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-able dict (field name -> value)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RenderSpec:
        """Rebuild a spec from :meth:`to_dict` output; unknown keys are ignored (written by a newer
        version), missing keys take defaults, a wrong type raises ``TypeError`` naming the field."""
        if not isinstance(data, Mapping):
            raise TypeError(f"RenderSpec.from_dict: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@functools.cache
def _spec_hints() -> dict[str, Any]:
    return typing.get_type_hints(RenderSpec)  # resolves the string annotations once


def _check_type(name: str, value: Any, hint: Any) -> None:
    allowed = typing.get_args(hint) or (hint,)
    if float in allowed:
        allowed = allowed + (int,)
    if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
        names = " or ".join("None" if a is type(None) else a.__name__ for a in allowed)
        raise TypeError(f"RenderSpec.{name}: expected {names}, got {type(value).__name__} {value!r:.60}")


@dataclass
class TruncationReport:
    """Exactly what was cut to meet the budget. Description paths are ``"f"`` for function ``f``'s
    description and ``"f.p"`` for its parameter ``p`` (``"f.p.q"`` nested, ``"f.p[]"`` array items)."""

    shortened_descriptions: list[str] = field(default_factory=list)
    removed_descriptions: list[str] = field(default_factory=list)
    dropped_turns: list[int] = field(default_factory=list)  # indices into the (flattened) conversation
    dropped_tools: list[str] = field(default_factory=list)
    fits: bool = True  # False: still over budget after every allowed cut

    @property
    def truncated(self) -> bool:
        """True when anything at all was shortened, removed or dropped."""
        return bool(self.shortened_descriptions or self.removed_descriptions or self.dropped_turns
                    or self.dropped_tools)


@dataclass
class RenderedInput:
    """The rendered text, its length in tokens, what was cut, and the candidate-independent context.

    ``n_tokens`` is exact when a tokenizer was given (plain mode counts the special tokens the
    tokenizer adds, chat mode counts the templated text as is); otherwise it is the estimate
    ``ceil(len(text) / spec.chars_per_token)`` and ``n_tokens_exact`` is False. ``context`` is the
    catalog and conversation as rendered for every candidate of this prompt: the end of a plain text
    (after the candidate segment); in chat mode the templated messages with an empty answer, whose text
    up to the answer is the text's prefix.
    """

    text: str
    n_tokens: int
    n_tokens_exact: bool
    truncation: TruncationReport
    mode: str
    context: str = ""


def format_calls(calls: Sequence[ToolCall], grounding: Any = None) -> str:
    """Compact one-line form of calls, ``f(a=1) ; g(b="x")`` (values as JSON).

    With ``grounding`` (the conversation's text) each argument is written ``a=v`` when its value is
    found verbatim in that text, ``a~v`` when found after BFCL-style normalisation, ``a^v`` when only
    another form of it is (a :class:`_Grounding` with ``conversions``), ``a?v`` when not found (see
    :func:`value_grounding`).

    >>> format_calls([ToolCall("f", {"city": "Paris", "n": 3})], grounding="weather in paris")
    'f(city="Paris", n?3)'
    >>> format_calls([ToolCall("f", {"day": "2024-05-01", "rate": 0.05, "n": 3})],
    ...              grounding=_Grounding("on May 1, 2024 at 5%, n=4", conversions=True))
    'f(day^"2024-05-01", rate^0.05, n?3)'
    """
    ground = _Grounding(grounding) if isinstance(grounding, str) else grounding
    return " ; ".join(f"{c.name}(" + ", ".join(
        f"{k}{ground.mark(v) if ground else '='}{_val(v)}" for k, v in c.arguments.items()) + ")" for c in calls)


def value_grounding(value: Any, text: str, conversions: bool = False) -> str:
    """Where ``value`` (an argument value) comes from in ``text``: ``"="`` verbatim (case-insensitive,
    not inside a longer word or number), ``"~"`` after BFCL's string normalisation (lower case, spaces
    and ``,./-_*^`` removed), ``"^"`` only in another form (with ``conversions``: an ISO date in words,
    a percentage, ...: :func:`toolrm_rl.core.forms.restatements`), ``"?"`` not found. Lists and dicts
    take their worst element; booleans, None and empty values count as found (nothing to ground).

    >>> [value_grounding(v, "Book 2 tickets to New York, on 2024-05-01") for v in ("new york", 2, "NewYork", 3)]
    ['=', '=', '~', '?']
    >>> value_grounding(0.05, "at a 5% fee"), value_grounding(0.05, "at a 5% fee", conversions=True)
    ('?', '^')
    """
    return _grounding(text[:_HAYSTACK_LIMIT], conversions).mark(value)


@functools.lru_cache(maxsize=8)
def _grounding(text: str, conversions: bool) -> _Grounding:
    """One normalised look-up per conversation: callers ask about every argument of a pair in turn."""
    return _Grounding(text, conversions=conversions)


_FLOAT_SIZED = 10**308  # ints below this convert to float; a constant, as CPython does not fold the power
_LEAF_LIMIT = 64  # leaves checked per value: a hostile candidate cannot make grounding quadratic
_HAYSTACK_LIMIT = 20_000


class _Grounding:
    """Value look-ups in one conversation text (lower-cased and normalised once); with ``conversions`` a value
    found only in another form (one of :func:`toolrm_rl.core.forms.restatements`) is marked ``^``."""

    def __init__(self, text: str, conversions: bool = False) -> None:
        self.raw = text[:_HAYSTACK_LIMIT].lower()
        self.std = standardize_string(self.raw)
        self.conversions = conversions

    def mark(self, value: Any) -> str:
        marks = [self._leaf(v) for v in _leaves(value, _LEAF_LIMIT)]
        return next((m for m in "?^~" if m in marks), "=")

    def _leaf(self, value: Any) -> str:
        if isinstance(value, bool) or value is None:
            return "="
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            value = int(value)
        if isinstance(value, int) and value.bit_length() > 1024:
            return "?"  # no user writes it, and str() of one past 4,300 digits raises
        needle = str(value).lower() if not isinstance(value, str) else value.lower().strip()
        if not needle:
            return "="
        needle = needle[:200]
        if _find_bounded(self.raw, needle, _ASCII_WORD.__contains__, _ASCII_WORD.__contains__):
            return "="
        if self.conversions:
            if type(value) is int and abs(value) >= 1000 and _find_bounded(self.raw, f"{value:,}", _digit_or_dot,
                                                                           _digit_or_dot):
                return "~"  # "5,000": BFCL's normalisation drops the separator too
            # Before the loose "~" test: "EUR" is a substring of "euros" once spaces go, but the user wrote the
            # other form of the value, which is what the mark says.
            if any(_find_bounded(self.raw, phrase.lower(), _word_char, _word_char) for phrase in restatements(value)):
                return "^"  # what forms.restated_in finds, without a regex per phrase
        std = standardize_string(needle)
        if std and not isinstance(value, (int, float)) and std in self.std:
            return "~"
        return "?"


_ASCII_WORD = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def _word_char(char: str) -> bool:
    return char.isalnum() or char == "_"  # regex \w


def _digit_or_dot(char: str) -> bool:
    return char == "." or char.isdecimal()


def _find_bounded(text: str, needle: str, bad_before: Callable[[str], bool], bad_after: Callable[[str], bool]) -> bool:
    """Whether ``needle`` occurs in ``text`` with neither neighbour rejected: what the regex
    ``(?<!B)needle(?!A)`` finds, without compiling one pattern per value (re's cache holds 512)."""
    i, n = text.find(needle), len(needle)
    while i >= 0:
        if (i == 0 or not bad_before(text[i - 1])) and (i + n >= len(text) or not bad_after(text[i + n])):
            return True
        i = text.find(needle, i + 1)
    return False


def _leaves(value: Any, limit: int) -> list[Any]:
    out: list[Any] = []
    stack = [value]
    while stack and len(out) < limit:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(reversed(list(v.values())))
        elif isinstance(v, (list, tuple)):
            stack.extend(reversed(v))
        else:
            out.append(v)
    return out


@dataclass
class RMExample:
    """What a reward model scores: the tool catalog, the conversation so far, and one candidate answer
    (its calls; an empty list is an abstention, whose answer text goes in ``text``).

    ``tools`` may be given as anything :meth:`ToolCatalog.load` accepts; it is loaded once, here (a bad
    catalog raises ``CatalogError`` at construction), so every scorer reuses one catalog."""

    tools: ToolCatalog
    conversation: Any
    calls: list[ToolCall]
    text: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tools, ToolCatalog):
            self.tools = ToolCatalog.load(self.tools)


def render_example(example: RMExample, *, spec: RenderSpec | None = None, tokenizer: Any = None) -> RenderedInput:
    """:func:`render` for an :class:`RMExample`."""
    return render(example.tools, example.conversation, example.calls, spec=spec, tokenizer=tokenizer,
                  candidate_text=example.text)


def render(catalog: Any, conversation: Any, candidate: Sequence[ToolCall], *, spec: RenderSpec | None = None,
           tokenizer: Any = None, candidate_text: str | None = None) -> RenderedInput:
    """Render one reward-model input.

    :param catalog: a :class:`ToolCatalog` or anything :meth:`ToolCatalog.load` accepts.
    :param conversation: list of ``{role, content}`` dicts (assistant turns may carry ``tool_calls``,
        ``tool`` turns are observations), its JSON string, or BFCL's list of turns of messages
        (flattened; ``TruncationReport.dropped_turns`` indexes the flattened list).
    :param candidate: the scored answer, ``list[ToolCall]``; empty = no call (abstention).
    :param spec: rendering options (default ``RenderSpec()``).
    :param tokenizer: needed for ``chat_template`` mode; in ``plain`` mode it makes ``n_tokens`` exact.
    :param candidate_text: the candidate's text content: the abstention answer (both modes); in chat
        mode also shown before the calls.
    :returns: :class:`RenderedInput`; its ``context`` and ``truncation`` do not depend on the candidate.
        Raises ``ValueError`` for chat mode without a tokenizer or an unreadable conversation,
        ``TypeError`` for a candidate that is not a list of ToolCall,
        :class:`~toolrm_rl.core.calls.CatalogError` for an unreadable catalog.
    """
    spec = spec if spec is not None else RenderSpec()
    calls = list(candidate)
    if not all(isinstance(c, ToolCall) for c in calls):
        raise TypeError("candidate: expected a list of ToolCall")
    if spec.mode == "chat_template" and not hasattr(tokenizer, "apply_chat_template"):
        raise ValueError("RenderSpec.mode 'chat_template' needs a tokenizer with apply_chat_template")
    ctx = _context(catalog, conversation, spec, tokenizer)
    lay = ctx.lay
    report = dataclasses.replace(ctx.report, **{f: list(getattr(ctx.report, f)) for f in (
        "shortened_descriptions", "removed_descriptions", "dropped_turns", "dropped_tools")})  # callers may edit
    if lay.segment_counts is not None:  # the count adds up from segments; the context's are counted already
        head = lay.candidate_segments(calls, candidate_text)
        text = _without_surrogates(lay.spec.sep.join(head + ([ctx.text] if ctx.text else [])))
        n_tokens = lay.segment_counts.joined(head + (lay.segments(ctx.levels, ctx.dropped) if ctx.text else []), True)
    else:
        text = _without_surrogates(lay.with_candidate(ctx.levels, ctx.dropped, ctx.text, calls, candidate_text))
        n_tokens = ctx.count([text], True)[0]
    return RenderedInput(text, n_tokens, ctx.exact, report, spec.mode, _without_surrogates(ctx.text))


@dataclass
class _Context:
    lay: _Layout
    text: str
    levels: dict[str, int]
    dropped: set[int]
    report: TruncationReport
    count: _Count
    exact: bool


_CONTEXTS: collections.OrderedDict[tuple, _Context] = collections.OrderedDict()
_CONTEXT_CACHE_SIZE = 128  # a GRPO group, a Best-of-N set or a query's training pairs share one context
_CONTEXTS_LOCK = threading.Lock()


def _key(value: Any) -> str:
    if isinstance(value, ToolCatalog):  # the specs as given: what to_openai() is made of, without converting
        return "catalog:" + _val([[t.name, t.description, t.parameters, t.dialect] for t in value])
    return value if isinstance(value, str) else _val(value)


def _context(catalog: Any, conversation: Any, spec: RenderSpec, tokenizer: Any) -> _Context:
    """The candidate-independent part of :func:`render`, fit to ``spec.context_tokens``; the last few
    are kept (keyed by content), so all candidates of one prompt fit the context once."""
    key = (id(tokenizer), repr(spec), _key(catalog), _key(conversation))
    with _CONTEXTS_LOCK:  # reward workers may render from several threads
        hit = _CONTEXTS.get(key)
        if hit is not None and hit.lay.tokenizer is tokenizer:
            _CONTEXTS.move_to_end(key)
            return hit
    lay = _Layout(ToolCatalog.load(catalog), _messages(conversation), spec, tokenizer)
    count, exact = _counter(tokenizer, spec, lay.chat)
    lay.segment_counts = None if lay.chat else _segment_counts(tokenizer, spec.sep, count)
    budget = spec.context_tokens
    levels, dropped = {n: 0 for n in lay.names}, set()
    text = lay.text(levels, dropped)
    report = TruncationReport()
    n_ctx = None
    if budget is not None and len(text) > budget * spec.chars_per_token:
        n_ctx = budget + 1  # certainly over: go straight to the cuts
    elif budget is not None:
        n_ctx = lay.n_tokens(levels, dropped, count, text)  # likely fits: one exact count is all most need
    if budget is not None and n_ctx > budget:
        text, n_ctx, levels, dropped = _fit(lay, count, budget)
        report = TruncationReport(
            shortened_descriptions=[p for n in lay.names if levels[n] == 1 for p in lay.tool(n, 1)[1]],
            removed_descriptions=[p for n in lay.names if levels[n] == 2 for p in lay.tool(n, 2)[1]],
            dropped_turns=sorted(dropped), dropped_tools=[n for n in lay.names if levels[n] == 3],
            fits=n_ctx <= budget)
    ctx = _Context(lay, text, levels, dropped, report, count, exact)
    with _CONTEXTS_LOCK:
        _CONTEXTS[key] = ctx
        if len(_CONTEXTS) > _CONTEXT_CACHE_SIZE:
            _CONTEXTS.popitem(last=False)
    return ctx


class _Layout:
    """The context text for a cut state (description level per function: 0 full, 1 shortened,
    2 removed, 3 dropped; set of dropped turn indices), the texts of the cuttable pieces for the cost
    model, and the full text with a candidate. Nothing here depends on the candidate but
    :meth:`with_candidate`."""

    def __init__(self, cat: ToolCatalog, msgs: list[dict[str, Any]], spec: RenderSpec, tokenizer: Any) -> None:
        self.cat, self.msgs, self.spec, self.tokenizer = cat, msgs, spec, tokenizer
        self.chat, self.names = spec.mode == "chat_template", cat.names()
        self.order = _by_relevance(cat, msgs)  # most worth keeping first
        self.top = self.order[:1 + spec.max_near_misses]
        self.last_user = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=None)
        if self.chat:  # a turn's cost: its content and calls (role markers stay in the fixed part)
            self.turns = [m["content"] + "".join(_val(tc["function"]) for tc in m.get("tool_calls", ())) for m in msgs]
        else:
            self.turns = [_plain_turn(m) for m in msgs]
        self._variants: dict[tuple[str, int], tuple[str, list[str], dict[str, Any]]] = {}
        self._grounding: _Grounding | None = None
        self._asked: list[str] | None = None
        self.segment_counts: _SegmentCounts | None = None  # plain mode with an additive tokenizer

    def tool(self, name: str, level: int) -> tuple[str, list[str], dict[str, Any]]:
        """(rendered schema, description paths changed, OpenAI dict) of a function at a level."""
        if (name, level) not in self._variants:  # built lazily: most inputs fit and need level 0 only
            full = self.tool(name, 0)[2] if level else self.cat[name].to_openai()
            t, changed = _tool_variant(full, name, level, self.spec) if level else (full, [])
            self._variants[name, level] = (_val(t) if self.chat else _plain_tool(t), changed, t)
        return self._variants[name, level]

    def piece(self, text: str) -> str:
        """A piece as it appears in the text: with its separator (the template writes one tool a line)."""
        return "\n" + text if self.chat else text + self.spec.sep

    def _chat(self, levels: dict[str, int], dropped: set[int], extra: list[dict[str, Any]]) -> str:
        tools = [self.tool(n, levels[n])[2] for n in self.names if levels[n] < 3]
        messages = [m for i, m in enumerate(self.msgs) if i not in dropped] + extra
        return self.tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False)

    def text(self, levels: dict[str, int], dropped: set[int]) -> str:
        """The context text for a cut state."""
        if self.chat:  # with an empty answer: a template may need a message, and the candidate goes there
            return self._chat(levels, dropped, [_candidate_message([], None)])
        return self.spec.sep.join(self.segments(levels, dropped))

    def segments(self, levels: dict[str, int], dropped: set[int]) -> list[str]:
        """Plain mode: the context's segments for a cut state (the text joins them with the separator)."""
        segs = [t for i, t in enumerate(self.turns) if i not in dropped]
        segs += [self.tool(n, levels[n])[0] for n in self.order if levels[n] < 3]
        return segs

    def n_tokens(self, levels: dict[str, int], dropped: set[int], count: _Count, text: str | None = None) -> int:
        """Exact tokens of the context text of a cut state (special tokens included): summed from
        segment counts when the tokenizer allows it, else counted (``text``: that text, if built)."""
        if self.segment_counts is not None:
            return self.segment_counts.joined(self.segments(levels, dropped), True)
        return count([self.text(levels, dropped) if text is None else text], True)[0]

    def piece_counts(self, texts: list[str], count: _Count) -> list[int]:
        """Tokens of each text as a piece of the whole (:meth:`piece`: with its separator)."""
        if self.segment_counts is not None:
            return [n + self.segment_counts.sep_tokens for n in self.segment_counts.of(texts)]
        return count([self.piece(t) for t in texts], False)

    def with_candidate(self, levels: dict[str, int], dropped: set[int], context: str, calls: list[ToolCall],
                       candidate_text: str | None) -> str:
        """The whole input: the context of this cut state with the candidate."""
        if self.chat:
            return self._chat(levels, dropped, [_candidate_message(calls, candidate_text)])
        return self.spec.sep.join(self.candidate_segments(calls, candidate_text) + ([context] if context else []))

    def candidate_segments(self, calls: list[ToolCall], candidate_text: str | None) -> list[str]:
        """Plain mode: the segments before the context (the candidate, then functions outside the catalog)."""
        if self.spec.mark_grounding and self._grounding is None:
            self._grounding = _Grounding(" ".join(m["content"] for m in self.msgs if m["role"] in ("user", "tool")),
                                         conversions=self.spec.mark_conversions)
        if self.spec.mark_coverage and self._asked is None:
            self._asked = asked_values(self.msgs[self.last_user]["content"]) if self.last_user is not None else []
        head = [_plain_candidate(calls, candidate_text, self._grounding, self._asked, self.spec.mark_repeats)]
        for name in dict.fromkeys(c.name for c in calls):
            if name not in self.cat:
                head.append(f"function {name}: {_NOT_IN_CATALOG}")
            elif self.spec.describe_calls and (description := self.cat[name].description.strip()):
                head.append(f"function {name}: {_shorten(description, self.spec.describe_calls)}")
        return head


def _fit(lay: _Layout, count: _Count, max_tokens: int) -> tuple[str, int, dict[str, int], set[int]]:
    """Choose the cuts for the context budget: (text, n_tokens, level per function, dropped turns).

    Cost model: every cuttable piece counted in one batch (functions with and without descriptions;
    the shortened level interpolated by length), the protected rest once. It is additive, so choosing
    never re-tokenizes; the chosen text is counted exactly and re-chosen at most _MAX_PASSES times."""
    names, nn = lay.names, len(lay.names)
    droppable = [i for i in range(len(lay.msgs)) if i != lay.last_user]
    c = lay.piece_counts([lay.tool(n, lv)[0] for lv in (0, 2) for n in names] + [lay.turns[i] for i in droppable],
                         count)
    # Fixed part measured with one function kept, so that a template's tools header is included.
    anchor = {n: 3 for n in names} | ({lay.order[0]: 2} if names else {})
    fixed = lay.n_tokens(anchor, set(droppable), count) - (c[nn + names.index(lay.order[0])] if names else 0)
    costs: dict[tuple[str, Any], list[int]] = {("turn", i): [c[2 * nn + k], 0] for k, i in enumerate(droppable)}
    for j, n in enumerate(names):
        (c0, c2), (l0, l1, l2) = (c[j], c[nn + j]), (len(lay.tool(n, lv)[0]) for lv in (0, 1, 2))
        costs["tool", n] = [c0, math.ceil(c2 + (c0 - c2) * (l1 - l2) / max(l0 - l2, 1)), c2, 0]
    # Policy order; within a stage the least related function goes first. The most related functions
    # keep their shortened descriptions until the rest of the catalog is gone.
    rest, top = ([("tool", n) for n in reversed(group)] for group in (lay.order[len(lay.top):], lay.top))
    steps = ([(k, 0, 1) for k in rest + top] + [(k, 1, 2) for k in rest] + [(("turn", i), 0, 1) for i in droppable]
             + [(k, 2, 3) for k in rest] + [(k, 1, 2) for k in top] + [(k, 2, 3) for k in top])
    budget = max_tokens
    for _ in range(_MAX_PASSES):
        state, est, exhausted = _select(costs, steps, fixed, budget)
        levels = {n: state["tool", n] for n in names}
        dropped = {i for i in droppable if state["turn", i]}
        text = lay.text(levels, dropped)
        n_tok = lay.n_tokens(levels, dropped, count, text)
        if n_tok <= max_tokens or exhausted:
            break
        budget = min(budget - 1, max_tokens - (n_tok - est))  # the estimate was short: aim lower
    return text, n_tok, levels, dropped


def _select(costs: dict[Any, list[int]], steps: list[tuple[Any, int, int]], fixed: int,
            budget: int) -> tuple[dict[Any, int], int, bool]:
    """Apply cut steps in policy order until the estimate fits, then undo the ones that later (bigger)
    cuts made unnecessary, most valuable first. Returns the level per piece, the estimated total and
    whether the steps ran out before the estimate fit."""
    state, applied = {k: 0 for k in costs}, []
    total = fixed + sum(c[0] for c in costs.values())
    for key, old, new in steps:
        if total <= budget:
            break
        if state[key] == old:
            state[key], total = new, total + costs[key][new] - costs[key][old]
            applied.append((key, old, new))
    exhausted = total > budget
    for key, old, new in reversed(applied):
        delta = costs[key][old] - costs[key][new]
        if state[key] == new and total + delta <= budget:
            state[key], total = old, total + delta
    return state, total, exhausted


def _counter(tokenizer: Any, spec: RenderSpec, chat: bool) -> tuple[_Count, bool]:
    """``count(texts, final) -> token counts`` and whether counts are exact. ``final`` counts the
    special tokens a plain-mode encoder adds ([CLS]/[SEP]); a chat template writes its own."""
    if tokenizer is None:
        return (lambda texts, final: [math.ceil(len(t) / spec.chars_per_token) for t in texts]), False

    def count(texts: list[str], final: bool) -> list[int]:
        if not texts:
            return []
        special = final and not chat
        texts = [_without_surrogates(t) for t in texts]
        try:  # verbose=False: silence the "longer than model_max_length" warning for unsliced pieces
            ids = tokenizer(texts, add_special_tokens=special, verbose=False)["input_ids"]
        except TypeError:
            ids = [tokenizer.encode(t, add_special_tokens=special) for t in texts]
        return [len(x) for x in ids]
    return count, True


class _SegmentCounts:
    """Exact token counts of plain texts (segments joined by the separator) as sums of segment counts,
    each segment counted once and cached: for a tokenizer whose count of ``a + sep + b`` is
    ``count(a) + count(sep) + count(b)`` (see :func:`_segment_counts`). Cuts, the context and every
    candidate of a prompt reuse the counts instead of tokenizing whole texts again."""

    MAX_CACHED = 100_000

    def __init__(self, count_plain: Callable[[list[str]], list[int]], sep_tokens: int, specials: int) -> None:
        self.count_plain, self.sep_tokens, self.specials = count_plain, sep_tokens, specials
        self._cache: dict[str, int] = {}

    def of(self, segments: list[str]) -> list[int]:
        """Tokens of each segment (no special tokens)."""
        found = {seg: self._cache.get(seg) for seg in segments}
        missing = [seg for seg, n in found.items() if n is None]
        if missing:
            counts = self.count_plain(missing)
            found.update(zip(missing, counts))
            if len(self._cache) > self.MAX_CACHED:
                self._cache = {}  # replaced, not cleared: another thread may be reading the old one
            self._cache.update(zip(missing, counts))
        return [found[seg] for seg in segments]

    def joined(self, segments: list[str], final: bool) -> int:
        """Tokens of ``sep.join(segments)``, with the special tokens the tokenizer adds when ``final``."""
        return sum(self.of(segments)) + self.sep_tokens * max(len(segments) - 1, 0) + (self.specials if final else 0)


_SEGMENT_COUNTS: dict[tuple[int, str], tuple[Any, _SegmentCounts | None]] = {}
_ADDITIVE_PARTS = ({"BertNormalizer", "NoneType"}, {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}, {"WordPiece"})
_ISOLATING = frozenset(" \n\t")


def _segment_counts(tokenizer: Any, sep: str, count: _Count) -> _SegmentCounts | None:
    """The segment counter of a tokenizer and separator, or None when counts may not add up.

    Counts add up when the tokenizer is a WordPiece one (the BERT family: normalisation character by
    character, words split at whitespace and punctuation), no added token contains whitespace (none can
    span a join), and the separator starts and ends with whitespace (so no word spans a join). Other
    tokenizers (BPE, SentencePiece: a word's tokens depend on its neighbours) count whole texts."""
    if tokenizer is None:
        return None
    key = (id(tokenizer), sep)
    hit = _SEGMENT_COUNTS.get(key)
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    counter = None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    try:
        parts = (type(backend.normalizer).__name__, type(backend.pre_tokenizer).__name__, type(backend.model).__name__)
        added = tokenizer.get_added_vocab()
    except Exception:  # not a fast (Rust) tokenizer: count whole texts
        parts, added = None, {}
    if (parts is not None and all(p in ok for p, ok in zip(parts, _ADDITIVE_PARTS))
            and not any(ch.isspace() for token in added for ch in token)
            and sep and sep[0] in _ISOLATING and sep[-1] in _ISOLATING):
        def count_plain(texts: list[str]) -> list[int]:
            if backend.truncation is None and backend.padding is None:  # the Rust tokenizer alone: less overhead
                encodings = backend.encode_batch([_without_surrogates(t) for t in texts], add_special_tokens=False)
                return [len(e.ids) for e in encodings]
            return count(texts, False)
        specials = count(["x"], True)[0] - count(["x"], False)[0]
        counter = _SegmentCounts(count_plain, count([sep], False)[0], specials)
    if len(_SEGMENT_COUNTS) > 16:
        _SEGMENT_COUNTS.clear()
    _SEGMENT_COUNTS[key] = (tokenizer, counter)
    return counter


_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(text: str) -> str:
    """Lone surrogates (from JSON escapes such as "\\ud800") as U+FFFD: a tokenizer cannot encode them."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


_WORD = re.compile(r"[a-z0-9]{3,}")
_STOP = frozenset("the and for with from that this what are you your can get set has have into about which "
                  "will would should could please also all any how who when where".split())
_SPLIT_NAME = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|[^A-Za-z0-9]+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower())) - _STOP


def _by_relevance(cat: ToolCatalog, msgs: list[dict[str, Any]]) -> list[str]:
    """Catalog names, those sharing most words with the user's turns first (catalog order on ties).
    It reads the conversation only, never a candidate: the context is the same for every candidate."""
    asked = _words(" ".join(m["content"] for m in msgs if m["role"] == "user")[:_HAYSTACK_LIMIT])
    names = cat.names()

    def overlap(name: str) -> int:
        spec = cat[name]
        words = _words(" ".join(_SPLIT_NAME.split(name)) + " " + str(spec.description)[:2000] + " "
                       + " ".join(spec.properties)[:2000])
        return len(asked & words)

    score = {n: overlap(n) for n in names}
    return sorted(names, key=lambda n: -score[n])  # stable: ties keep catalog order


def _shorten(text: str, cap: int) -> str:
    if len(text) <= cap:
        return text
    cut = text[:max(cap - 3, 0)].rsplit(" ", 1)[0]  # end on a word boundary
    return cut + "..." if cut else ""


def _tool_variant(base: dict[str, Any], name: str, level: int, rs: RenderSpec) -> tuple[dict[str, Any], list[str]]:
    """A copy of the OpenAI tool dict ``base`` with descriptions shortened (level 1) or removed
    (level 2), and the description paths that changed."""
    changed: list[str] = []

    def desc(text: Any, cap: int, path: str) -> Any:
        new = (_shorten(text, cap) if level == 1 else "") if isinstance(text, str) else text
        if new != text:
            changed.append(path)
        return new

    def walk(schema: Any, path: str) -> Any:
        if not isinstance(schema, dict):
            return schema
        out = dict(schema)  # shallow copies along the walked path: base stays untouched
        if "description" in out:
            out["description"] = desc(out["description"], rs.max_param_description_chars, path)
            if out["description"] == "" and level == 2:
                del out["description"]
        if isinstance(out.get("properties"), dict):
            out["properties"] = {k: walk(v, f"{path}.{k}") for k, v in out["properties"].items()}
        if isinstance(out.get("items"), dict):
            out["items"] = walk(out["items"], path + "[]")
        return out

    fn = base["function"]
    description = desc(fn["description"], rs.max_description_chars, name)
    params = dict(fn["parameters"])
    params["properties"] = {k: walk(v, f"{name}.{k}") for k, v in params.get("properties", {}).items()}
    return {**base, "function": {**fn, "description": description, "parameters": params}}, changed


def _val(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:  # an int past Python's 4,300-digit str limit (a ToolCall built in code; parsers refuse it)
        return short_repr(value)


def _plain_param(name: str, schema: Any, required: bool) -> str:
    schema = schema if isinstance(schema, dict) else {}
    kind = schema.get("type", "any")
    items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
    bits = [f"{kind} of {items['type']}" if kind == "array" and "type" in items else str(kind)]
    bits += ["required"] if required else []
    bits += ["one of " + "|".join(_val(v) for v in schema["enum"])] if isinstance(schema.get("enum"), list) else []
    bits += ["default " + _val(schema["default"])] if "default" in schema else []
    out = f"{name} ({', '.join(bits)})" + (f": {schema['description']}" if schema.get("description") else "")
    sub = schema if isinstance(schema.get("properties"), dict) else items
    if isinstance(sub.get("properties"), dict) and sub["properties"]:
        req = set(sub.get("required") or [])
        out += " {" + "; ".join(_plain_param(k, v, k in req) for k, v in sub["properties"].items()) + "}"
    return out


def _plain_tool(tool: dict[str, Any]) -> str:
    """``function f: description | a (integer, required): ... | b (string, default "x")``."""
    fn = tool["function"]
    params = fn["parameters"]
    req = set(params.get("required") or [])
    parts = [f"function {fn['name']}:" + (f" {fn['description']}" if fn["description"] else "")]
    parts += [_plain_param(k, v, k in req) for k, v in params.get("properties", {}).items()]
    return " | ".join(parts)


def _plain_turn(m: dict[str, Any]) -> str:
    calls = calls_from_openai(m["tool_calls"]) if m.get("tool_calls") else []
    body = " ".join(x for x in (m["content"], "call " + format_calls(calls) if calls else "") if x)
    return f"{m['role']}: {body}"


def repeated_calls(calls: Sequence[ToolCall]) -> int:
    """How many of ``calls`` repeat an earlier call: the same call as the matcher sees it
    (:func:`toolrm_rl.core.match.canonical_calls`: same name, same arguments after BFCL's normalisation).

    >>> repeated_calls([ToolCall("f", {"a": 1}), ToolCall("f", {"a": 1}), ToolCall("f", {"a": 2})])
    1
    """
    keys = canonical_calls(calls, ordered=True)
    return len(keys) - len(set(keys))


def _plain_candidate(calls: list[ToolCall], text: str | None, grounding: _Grounding | None = None,
                     asked: list[str] | None = None, mark_repeats: bool = False) -> str:
    if not calls:
        return ("call: [no call] " + (text or "").strip()).rstrip()
    count = f"{len(calls)} call{'s' if len(calls) != 1 else ''}"
    repeats = repeated_calls(calls) if mark_repeats else 0
    if repeats:
        count += f", {repeats} repeated"
    if asked:
        count += f", {asked_coverage(calls, asked)}/{len(asked)} asked"
    return f"call: [{count}] {format_calls(calls, grounding)}"


_ASKED_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_ASKED_QUOTED = re.compile(r"(?<!\w)'([^']{1,60})'(?!\w)|\"([^\"]{1,60})\"")
_ASKED_NAME = re.compile(r"(?<=[a-z0-9,;:] )[A-Z][A-Za-z]+(?: [A-Z][A-Za-z]+)*\b")  # not sentence-initial
_ASKED_LIMIT = 12


def asked_values(text: str) -> list[str]:
    """The values a user turn mentions that a call would pass on: numbers, quoted text and names (capitalised
    words not starting a sentence), at most 12, first mention first, without repeats (case-insensitive).

    >>> asked_values("Weather in Paris, London and 'New York' for 3 days, then Paris again")
    ['Paris', 'London', 'New York', '3']
    """
    text = text[:_HAYSTACK_LIMIT]
    quoted = list(_ASKED_QUOTED.finditer(text))
    starts = [q.start() for q in quoted]  # quotes do not overlap: one bisect per match keeps this linear

    def inside_quotes(m: re.Match) -> bool:
        k = bisect.bisect_right(starts, m.start()) - 1
        return k >= 0 and m.start() < quoted[k].end()

    found = [(m.start(), m.group(1) or m.group(2)) for m in quoted]
    found += [(m.start(), m.group(0)) for rx in (_ASKED_NAME, _ASKED_NUMBER) for m in rx.finditer(text)
              if not inside_quotes(m)]
    out: dict[str, str] = {}
    for _, value in sorted(found, key=lambda f: f[0]):
        if value.strip() and value.lower() not in out:
            out[value.lower()] = value
    ordered = list(out.values())
    return ordered[:_ASKED_LIMIT]


def asked_coverage(calls: Sequence[ToolCall], asked: Sequence[str]) -> int:
    """How many of the ``asked`` values (:func:`asked_values`) some argument of ``calls`` uses: a number equal
    to a numeric argument or written inside a string one, a text found in a string argument after BFCL's
    normalisation.

    >>> calls = [ToolCall("weather", {"city": "paris", "days": 3})]
    >>> asked_coverage(calls, ["Paris", "London", "3"])
    2
    """
    leaves = [v for c in calls for v in _leaves(c.arguments, _LEAF_LIMIT)]
    # an int past float's range (a policy can write 10**400 in JSON) cannot equal a number a user wrote
    numbers = {float(v) for v in leaves if isinstance(v, (int, float)) and not isinstance(v, bool)
               and (isinstance(v, float) or abs(v) < _FLOAT_SIZED)}
    strings = " | ".join(v for v in leaves if isinstance(v, str))[:_HAYSTACK_LIMIT]
    std = standardize_string(strings.lower())
    used = 0
    for value in asked:
        if _ASKED_NUMBER.fullmatch(value):
            used += float(value) in numbers or _find_bounded(strings, value, _digit_or_dot, str.isdecimal)
        else:
            key = standardize_string(value.lower())
            used += bool(key) and key in std
    return used


def _candidate_message(calls: list[ToolCall], text: str | None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": text or ""}
    if calls:  # arguments as dicts: templates apply tojson (a JSON string would be pasted verbatim)
        msg["tool_calls"] = [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                             for c in calls]
    return msg


def _messages(conversation: Any) -> list[dict[str, Any]]:
    """Normalize a conversation to template-safe dicts: string content, OpenAI tool_calls with dict
    arguments; BFCL's nested list of turns is flattened."""
    conv = load_json_field(conversation, "conversation") or []
    if isinstance(conv, Mapping):
        conv = [conv]
    if not isinstance(conv, list):
        raise ValueError(f"conversation: expected a list of messages, got {type(conv).__name__}")
    flat = [m for item in conv for m in (item if isinstance(item, list) else [item])]
    out = []
    for i, m in enumerate(flat):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise ValueError(f"conversation[{i}]: expected a {{role, content}} dict, got {m!r:.80}")
        content = m.get("content")
        content = "" if content is None else content if isinstance(content, str) else _val(content)
        msg: dict[str, Any] = {"role": m["role"], "content": content}
        if m.get("tool_calls"):
            msg["tool_calls"] = _candidate_message(calls_from_openai(m["tool_calls"]), None)["tool_calls"]
        msg.update({k: m[k] for k in ("name", "tool_call_id") if k in m})
        out.append(msg)
    return out
