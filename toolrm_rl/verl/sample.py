"""One sample of the ToolRM reward, made ready to score: :func:`prepare` -> :class:`Prepared`.

The response (``solution_str``) is cut to its last ``max_chars`` characters, split into assistant turns
(:mod:`toolrm_rl.verl.turns`); each turn's calls are parsed (``core.parse``) and checked against the
row's catalog (``core.schema.check_calls``, with the row's possible answer when it has one); the valid
turns become RM inputs in their context. The row's fields come from ``extra_info`` (written by
``toolrm verl-data``). The ``tools`` field decides what the schema gate can check:

- no ``tools`` key (or ``tools: null``, how parquet stores a key that other rows have): a row without
  tools, format check only (the schema check is skipped, ``schema_ok=1``);
- ``tools`` present and readable (``ToolCatalog.load(..., strict=True)``): every call is checked against it;
- ``tools`` present but unusable (not JSON, invalid UTF-8, not a list of objects, ``[]`` or a blank
  string, an entry without a name, ``parameters`` or a parameter schema that is not an object,
  ``required`` not a list of names, two functions with one name, nested too deep): the calls cannot be
  verified, so the sample scores ``invalid_penalty`` whatever the response says (no RM, no gold or
  abstention terms), with ``tools_error=1``, ``schema_ok=0`` and a (rate-limited) warning naming the reason.

Only the last ``max_turns`` scored turns are kept; when an earlier turn was invalid, one invalid turn is
kept in their place (a long rollout cannot push its invalid calls out of the window).

Rollout input never raises here: lone surrogates (from the text or JSON ``\\ud800`` escapes) are replaced
by U+FFFD before anything reaches a tokenizer; a call the RM cannot be shown (nested deeper than
:data:`MAX_DEPTH`, an integer too long to print) makes ``rm_skipped`` (the rules alone score it); any other
error gives ``Prepared(error=True)`` (scored as invalid, ``fallback=1``), each with a logged reason.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolrm_rl.core.calls import (
    ToolCall,
    ToolCatalog,
    calls_from_any,
    calls_from_openai,
    calls_to_openai,
)
from toolrm_rl.core.extra_info import ExtraInfo
from toolrm_rl.core.extra_info import decode as decode_extra_info
from toolrm_rl.core.match import GroundTruth, calls_equal
from toolrm_rl.core.parse import parse
from toolrm_rl.core.render import RMExample
from toolrm_rl.core.schema import check_calls
from toolrm_rl.verl.config import ToolRewardConfig
from toolrm_rl.verl.turns import split_turns

__all__ = ["MAX_DEPTH", "RM_HISTORY", "Prepared", "clean_text", "load_conversation", "note", "prepare"]

logger = logging.getLogger(__name__)

#: Deepest nesting of conversation content or call arguments shown to the RM (deeper call arguments
#: are scored by the rules alone); a ``tools`` field may nest a few levels more (list, entry, function
#: wrapper, parameters) around ``core.calls.MAX_SCHEMA_DEPTH``, which its loader enforces.
MAX_DEPTH = 64
_TOOLS_DEPTH = MAX_DEPTH + 8
#: Earlier messages of the rollout shown to the RM with a turn, after the row's conversation (the
#: renderer cuts to its token budget anyway; 10,000 fake observations must not make 10,000-message inputs).
RM_HISTORY = 32
_MAX_INT_BITS = 12_000  # ~3,600 digits: str() of an int over 4,300 digits raises (Python's default limit)
_TEXT_CAP = 2000  # characters of an answer text or an observation shown to the RM
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class _Unrenderable(ValueError):
    """A value the RM input cannot hold (nested too deep, an integer too long to print)."""


def clean_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD (tokenizers and UTF-8 encoders reject them).

    >>> clean_text("a\\ud800b") == "a\\ufffdb", clean_text("déjà")
    (True, 'déjà')
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE_RE.sub("\ufffd", text)


def _scrub(value: Any, depth: int = 0, limit: int = MAX_DEPTH) -> Any:
    """A JSON-like copy of ``value`` that the RM input can hold: strings through :func:`clean_text`,
    keys as strings, tuples as lists, numpy values as Python ones, other objects as their ``str``.
    Raises :class:`_Unrenderable` past ``limit`` levels or for an integer too long to print."""
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise _Unrenderable(f"an integer of {value.bit_length()} bits")
        return value
    if depth >= limit:
        raise _Unrenderable(f"nested deeper than {limit} levels")
    if isinstance(value, Mapping):
        return {clean_text(str(k)): _scrub(v, depth + 1, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, depth + 1, limit) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (bytes, bytearray)):  # numpy (parquet columns)
        return _scrub(value.tolist(), depth + 1, limit)
    return clean_text(str(value))


def _rm_calls(calls: Sequence[ToolCall]) -> list[ToolCall]:
    """The calls as the RM is shown them (see :func:`_scrub`); raises :class:`_Unrenderable`."""
    return [ToolCall(clean_text(c.name), _scrub(c.arguments)) for c in calls]


_NOTES: dict[str, list[float]] = {}  # kind -> [time of the last warning, occurrences since]
_NOTES_LOCK = threading.Lock()
NOTE_INTERVAL_S = 60.0


def note(kind: str, message: str) -> None:
    """Log ``message`` as a warning at most once per :data:`NOTE_INTERVAL_S` per ``kind``, with the
    number of occurrences left unlogged since (a bad data set must not flood the training log)."""
    now = time.monotonic()
    with _NOTES_LOCK:
        entry = _NOTES.get(kind)
        if entry is not None and now - entry[0] < NOTE_INTERVAL_S:
            entry[1] += 1
            return
        skipped = int(entry[1]) if entry is not None else 0
        _NOTES[kind] = [now, 0]
    more = f" (and {skipped} more since the last report)" if skipped else ""
    logger.warning("toolrm reward: %.300s%s", message, more)


# -- one sample: parse, split, check; the RM inputs ---------------------------------------------------

@dataclass
class Prepared:
    """A parsed and checked sample, with the RM inputs it needs (one per scored valid turn)."""

    cfg: ToolRewardConfig
    valid: list[bool]  # per scored turn
    examples: list[RMExample]  # RM inputs, for the valid turns in order
    format_ok: bool = True
    schema_ok: bool = True
    n_calls: int = 0
    n_turns: int = 0
    gt_match: float = 0.0
    has_gold: bool = False
    abstained: bool = False
    abstained_correctly: bool = False
    tools_error: bool = False  # extra_info.tools present but unreadable: scored invalid_penalty
    rm_skipped: bool = False  # a valid turn the RM cannot be shown: rules only, fallback=1 if an RM is set
    error: bool = False  # the guard caught an exception: score as invalid, fallback=1
    start: float = field(default_factory=time.perf_counter)


def _load_tools(info: ExtraInfo) -> tuple[ToolCatalog, bool, str]:
    """``(catalog, present, error)`` of ``extra_info["tools"]``: ``present`` is False for a row without
    tools (no key, or None); ``error`` says why a present field is unusable for the gate ("" when it
    is fine): anything :meth:`ToolCatalog.load` rejects with ``strict=True`` (an empty list, duplicate
    names, ...), invalid UTF-8 or JSON, nesting beyond the limit."""
    if not info.has_tools:
        return ToolCatalog(), False, ""
    if "tools" in info.errors:
        return ToolCatalog(), True, info.errors["tools"]
    try:
        return ToolCatalog.load(_scrub(info.tools, limit=_TOOLS_DEPTH), strict=True), True, ""
    except Exception as err:  # CatalogError, too deep, anything: the gate cannot check
        return ToolCatalog(), True, f"{type(err).__name__}: {err}"


def load_conversation(value: Any) -> list[dict[str, Any]]:
    """The row's conversation (decoded ``extra_info["conversation"]``) as RM-safe messages; unreadable
    messages (and unreadable ``tool_calls`` of a readable one) are left out with a logged reason."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list):
        return []
    flat = [m for item in value for m in (item if isinstance(item, list) else [item])]  # BFCL: turns of messages
    out = []
    for i, m in enumerate(flat):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            continue
        try:
            out.append(_message(m, i))
        except Exception as err:
            note("conversation", f"extra_info.conversation[{i}] left out of the RM input ({type(err).__name__}: "
                                  f"{err})")
    return out


def _message(m: Mapping[str, Any], index: int) -> dict[str, Any]:
    """One conversation message for the RM: string content, OpenAI ``tool_calls`` (arguments as JSON)."""
    content = m.get("content")
    if content is None:
        content = ""
    elif isinstance(content, str):
        content = clean_text(content)
    else:  # e.g. a list of content parts: shown as JSON, as the renderer would
        content = json.dumps(_scrub(content), ensure_ascii=False)
    msg: dict[str, Any] = {"role": clean_text(m["role"]), "content": content}
    tool_calls = m.get("tool_calls")
    if hasattr(tool_calls, "tolist") and not isinstance(tool_calls, (str, bytes)):
        tool_calls = tool_calls.tolist()
    if tool_calls:
        try:
            msg["tool_calls"] = calls_to_openai(_rm_calls(calls_from_openai(_scrub(tool_calls))))
        except Exception as err:  # history the renderer cannot read: the message without its calls
            note("conversation", f"extra_info.conversation[{index}].tool_calls left out of the RM input "
                                  f"({type(err).__name__}: {err})")
    for key in ("name", "tool_call_id"):
        if isinstance(m.get(key), str):
            msg[key] = clean_text(m[key])
    return msg


def _gold_calls(info: ExtraInfo, ground_truth: Any) -> list[ToolCall] | None:
    """Gold calls from extra_info["gold"] (or ground_truth when it is a JSON call list); None: no gold."""
    if info.gold is not None:
        return info.gold
    try:
        value = json.loads(ground_truth) if isinstance(ground_truth, (str, bytes)) else ground_truth
        return calls_from_any(value) if isinstance(value, (list, dict)) else None
    except (ValueError, TypeError, RecursionError):  # not a call list (e.g. a math answer): no gold
        return None


def _ground_truth(info: ExtraInfo, catalog: ToolCatalog, cfg: ToolRewardConfig) -> GroundTruth | None:
    """BFCL's checker for extra_info["answer"] (a possible answer) when the row has one for a single-turn
    category (simple, parallel, multiple; "parallel" when no category is given); None otherwise."""
    answer, category = info.answer, info.category or "parallel"
    if not answer or not len(catalog) or not any(c in category for c in ("simple", "parallel", "multiple")):
        return None
    try:
        return GroundTruth(catalog, answer, category, language=cfg.language)
    except Exception as err:  # an answer the checker cannot read: the plain gate, the concrete gold
        note("answer", f"extra_info.answer is unreadable ({type(err).__name__}: {err}); not used")
        return None


def _schema_ok(calls: list[ToolCall], catalog: ToolCatalog, truth: GroundTruth | None, cfg: ToolRewardConfig) -> bool:
    """The schema gate (values BFCL's checker accepts for the row's possible answer pass it, so a correct
    answer is never gated); a check that fails with an error counts as failed (it cannot be verified)."""
    try:
        return check_calls(calls, catalog, language=cfg.language, answer=truth).ok
    except Exception as err:
        note("schema_check", f"schema check failed with {type(err).__name__}: {err}; the turn counts as invalid")
        return False


def prepare(solution_str: Any, ground_truth: Any, extra_info: Any, cfg: ToolRewardConfig) -> Prepared:
    """Parse, split and check one sample; never raises (errors give ``Prepared(error=True)``)."""
    try:
        return _prepare(solution_str, ground_truth, extra_info, cfg)
    except Exception as err:  # the guard: a reward must not stop training
        logger.warning("toolrm reward: could not prepare a sample (%s: %.200s)", type(err).__name__, err)
        return Prepared(cfg, [False], [], format_ok=False, schema_ok=False, error=True)


def _prepare(solution_str: Any, ground_truth: Any, extra_info: Any, cfg: ToolRewardConfig) -> Prepared:
    if isinstance(solution_str, str):
        text = solution_str
    elif isinstance(solution_str, (bytes, bytearray)):
        text = bytes(solution_str[-4 * cfg.max_chars:]).decode("utf-8", "replace")
    else:
        text = "" if solution_str is None else str(solution_str)
    if len(text) > cfg.max_chars:
        text = text[-cfg.max_chars:]
    text = clean_text(text)
    info = decode_extra_info(extra_info)  # reads, never changes it (verl mutates its dict)
    catalog, has_tools, tools_error = _load_tools(info)
    if tools_error:
        note("tools_error", f"extra_info.tools is unreadable ({tools_error:.200}): the calls cannot be checked, "
                             f"the sample scores invalid_penalty with tools_error=1")
    gold = _gold_calls(info, ground_truth)
    truth = None if tools_error or not has_tools else _ground_truth(info, catalog, cfg)

    turns = split_turns(text)
    p = Prepared(cfg, [], [], n_turns=len(turns), tools_error=bool(tools_error))
    all_calls: list[ToolCall] = []
    checked: list[tuple[list[ToolCall], bool]] = []  # per turn: calls, passes format and schema
    scored: list[int] = []  # turns that are scored: invalid ones, calls, abstentions (see score_text_turns)
    for k, (turn_text, _) in enumerate(turns):
        result = parse(turn_text, cfg.format)
        calls = result.calls if result.ok else []
        ok = result.ok and not tools_error  # calls that cannot be read cannot pass the schema either
        if ok and calls and has_tools:
            ok = _schema_ok(calls, catalog, truth, cfg)
        p.format_ok &= result.ok
        p.schema_ok &= ok
        all_calls.extend(calls)
        checked.append((calls, ok))
        is_answer = not calls and k > 0  # a text turn after an observation: the final answer
        if not result.ok or calls or not is_answer or cfg.score_text_turns:
            scored.append(k)
    window = scored[-cfg.max_turns:] if cfg.max_turns > 0 else scored
    p.valid = [checked[k][1] for k in window]
    if not all(checked[k][1] for k in scored[:len(scored) - len(window)]):
        p.valid.insert(0, False)  # an invalid turn before the window still counts once
    if not tools_error and any(p.valid):
        p.examples, p.rm_skipped = _rm_examples(turns, checked, [k for k in window if checked[k][1]], catalog,
                                                load_conversation(info.conversation))
    p.n_calls = len(all_calls)
    p.abstained = not all_calls and p.format_ok
    if gold is not None:
        p.has_gold = True
        p.gt_match = float(p.format_ok and _matches(all_calls, gold, truth))
        p.abstained_correctly = not gold and p.abstained
    return p


def _rm_examples(turns: list[tuple[str, list[str]]], checked: list[tuple[list[ToolCall], bool]], wanted: list[int],
                 catalog: ToolCatalog, conversation: list[dict[str, Any]]) -> tuple[list[RMExample], bool]:
    """RM inputs for the ``wanted`` turns, each with the conversation and the rollout's last
    :data:`RM_HISTORY` messages before it; ``([], True)`` when a call cannot be shown to the RM."""
    wanted_set, examples = set(wanted), []
    history: deque[dict[str, Any]] = deque(maxlen=RM_HISTORY)
    try:
        for k in range(max(wanted) + 1):
            turn_text, observations = turns[k]
            # a turn this far before the first wanted one leaves the history (>= 1 message per turn)
            # before it is shown: its calls need not be made RM-safe
            calls = _rm_calls(checked[k][0]) if k >= wanted[0] - RM_HISTORY else []
            if k in wanted_set:
                examples.append(RMExample(catalog, conversation + list(history), calls,
                                          None if calls else turn_text[:_TEXT_CAP]))
            if calls:
                history.append({"role": "assistant", "content": "", "tool_calls": calls_to_openai(calls)})
            else:
                history.append({"role": "assistant", "content": turn_text[:_TEXT_CAP]})
            history.extend({"role": "tool", "content": o[:_TEXT_CAP]} for o in observations[-RM_HISTORY:])
    except (_Unrenderable, ValueError, RecursionError) as err:
        note("rm_input", f"a valid call cannot be shown to the RM ({type(err).__name__}: {err}); "
                          f"the sample is scored by the rules alone")
        return [], True
    return examples, False


def _matches(calls: list[ToolCall], gold: list[ToolCall], truth: GroundTruth | None) -> bool:
    """BFCL's checker (``truth``, from extra_info["answer"]: accepts alternatives) when there is one and
    the gold makes calls; otherwise the calls must equal the gold after normalisation (any order).
    A check that fails with an error is no match."""
    if gold and truth is not None:
        try:
            return truth.check(calls).valid
        except Exception as err:  # the concrete gold decides
            note("gold_check", f"BFCL's checker failed with {type(err).__name__}: {err}; comparing with the gold")
    try:
        return calls_equal(calls, gold)
    except Exception as err:
        note("gold_check", f"gold comparison failed with {type(err).__name__}: {err}; counted as no match")
        return False
