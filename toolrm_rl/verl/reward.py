"""ToolRM + schema checks as a verl 0.9.1 reward: ``compute_score`` and the combination rule.

Point verl at it with ``reward.custom_reward_function.path=pkg://toolrm_rl.verl.reward`` (or the file
``reward_fns/toolrm_reward.py``); options go in ``reward.custom_reward_function.reward_kwargs``
(verl passes them as keyword arguments), in a YAML file named by ``$TOOLRM_REWARD_CONFIG``, or both
(defaults <- file <- kwargs). See :class:`ToolRewardConfig`.

Per sample: the response (``solution_str``, the decoded rollout) is split into assistant turns (a
``tool_agent`` rollout holds several, separated by ``<tool_response>`` observations); each turn's
calls are parsed (``core.parse``, hermes by default) and checked against the catalog
(``core.schema.check_calls``; with a possible answer in ``extra_info["answer"]``, values BFCL's checker
accepts for it pass, so a correct answer is never gated); valid turns are scored by ToolRM in their context (catalog +
conversation + the rollout's last :data:`RM_HISTORY` earlier messages); the turn scores are combined
by ``turn_combine``. Tools, conversation and gold calls come from ``extra_info`` (JSON strings written
by ``toolrm verl-data``). The ``tools`` field decides what the schema gate can check:

- no ``tools`` key (or ``tools: null``, how parquet stores a key that other rows have): a row without
  tools, format check only (the schema check is skipped, ``schema_ok=1``);
- ``tools`` present and readable (``ToolCatalog.load(..., strict=True)``): every call is checked against it;
- ``tools`` present but unusable (not JSON, invalid UTF-8, not a list of objects, ``[]`` or a blank
  string, an entry without a name, ``parameters`` or a parameter schema that is not an object,
  ``required`` not a list of names, two functions with one name, nested too deep): the calls cannot be
  verified, so the sample scores ``invalid_penalty`` whatever the response says (no RM, no gold or
  abstention terms), with ``tools_error=1``, ``schema_ok=0`` and a (rate-limited) warning naming the reason.

The combination rule (:func:`combine`, per turn)::

    invalid format or schema:  invalid_penalty                       (gate: the RM is not asked)
    otherwise:                 valid_reward + w_rm * transform(rm_score)   (sigmoid by default: in (0, 1))
    episode score = turn_combine(turn scores) + w_gt * gt_match + abstain_reward * abstained_correctly

Only the last ``max_turns`` scored turns enter ``turn_combine``; when an earlier turn was invalid, one
invalid turn is kept in their place (a long rollout cannot push its invalid calls out of the window).
With ``invalid_turn_gates`` (the default) any invalid turn scores the whole sample ``invalid_penalty``:
valid turns, or ``<tool_response>`` observations the policy writes itself, cannot lift an invalid call
above a valid one.

Where the RM score comes from (``rm_source``): ``router`` (verl's reward-model router, vLLM
``/classify``, input rendered by OUR renderer with the tools using ``reward_model_tokenizer``),
``server`` (an external ``toolrm serve`` or ``vllm serve`` URL), ``inprocess`` (a ToolRM checkpoint
loaded once per worker process on CPU), ``none`` (rules only); ``auto`` picks the first available in
that order. It never breaks training: RM failures (timeouts, bounded retries, an open circuit breaker,
bad replies) fall back to ``rm_score = 0`` with ``fallback = 1``, and a top-level guard turns any other
error into the invalid score with ``fallback = 1``. Every sample returns the same keys (:data:`KEYS`).

Hostile text is bounded: responses are cut to their last ``max_chars`` characters and every step after
that (turn splitting, parsing, checks) is linear in the length; lone surrogates (from the text or from
JSON ``\\ud800`` escapes) are replaced by U+FFFD before anything reaches a tokenizer; a call the RM
cannot be shown (nested deeper than :data:`MAX_DEPTH`, an integer too long to print) is scored by the
rules alone with ``fallback = 1``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolrm_rl.config import option as _help
from toolrm_rl.core.calls import (
    ToolCall,
    ToolCatalog,
    calls_from_bfcl,
    calls_from_openai,
    calls_to_openai,
)
from toolrm_rl.core.match import GroundTruth, calls_equal
from toolrm_rl.core.parse import parse, strip_thinking
from toolrm_rl.core.render import RenderSpec, RMExample
from toolrm_rl.core.schema import check_calls
from toolrm_rl.core.toolrm_json import read_render_spec
from toolrm_rl.scoring.factory import build_scorer

__all__ = [
    "KEYS",
    "Prepared",
    "ToolRewardConfig",
    "combine",
    "combine_turns",
    "compute_score",
    "finish",
    "get_rm_scorer",
    "load_reward_config",
    "prepare",
    "reward_sync",
    "score_examples",
    "split_turns",
]

logger = logging.getLogger(__name__)

#: Keys of every returned dict, in order (verl needs identical keys with scalar values for every sample).
KEYS = ("score", "rm_score", "format_ok", "schema_ok", "valid", "n_calls", "n_turns", "gt_match", "has_gold",
        "abstained", "fallback", "tools_error", "latency_ms")
RM_SOURCES = ("auto", "router", "server", "inprocess", "none")
TURN_COMBINES = ("last", "mean", "min")
RM_TRANSFORMS = ("sigmoid", "tanh", "clip")
CONFIG_ENV = "TOOLRM_REWARD_CONFIG"


@dataclass
class ToolRewardConfig:
    """Options of the ToolRM reward (``reward_kwargs`` keys); defaults are the GRPO recipe's."""

    format: str = _help("hermes", "Tool-call format of the policy: hermes (<tool_call> JSON), json, pythonic, auto.")
    rm_source: str = _help("auto", "Where the RM score comes from: router, server, inprocess, none, or auto "
                                   "(router if verl gives an address, else server_url, else model_path, else none).")
    server_url: str | None = _help(None, "rm_source=server: base URL of `toolrm serve` or `vllm serve`.")
    server_api: str = _help("toolrm", "rm_source=server: 'toolrm' (native /score) or 'vllm' (/classify).")
    server_model: str | None = _help(None, "Model name sent to /classify (router or vllm server); None: omitted.")
    server_token: str | None = _help(None, "Bearer token for the server; None: $TOOLRM_SERVE_TOKEN if set.")
    model_path: str | None = _help(None, "rm_source=inprocess: ToolRM checkpoint directory, loaded once per process "
                                         "on CPU. For router/vllm: where toolrm.json (the render spec) is read.")
    rm_group: bool = _help(True, "rm_source=inprocess with a decoder RM: the responses to one prompt in an RM call are "
                                 "scored against one forward pass of the shared prompt (KV cache); same scores "
                                 "within float tolerance.")
    rm_quantize: str = _help("none", "rm_source=inprocess: 'int8' or 'int8-mixed' score with dynamic int8 linear layers "
                                     "on CPU (faster; scores differ slightly from float32), 'none' in float32.")
    render_max_tokens: int = _help(4096, "router/vllm without toolrm.json: token budget of the rendered RM input.")
    timeout_s: float = _help(10.0, "Per-request timeout of RM calls (seconds).")
    retries: int = _help(2, "Retries of a failed RM call (bounded; then the sample falls back).")
    breaker_failures: int = _help(5, "Consecutive failed calls that open the circuit breaker.")
    breaker_reset_s: float = _help(30.0, "Seconds an open breaker waits before trying the RM again.")
    w_rm: float = _help(1.0, "Weight of the (clipped) RM score in a valid turn's score.")
    rm_transform: str = _help("sigmoid", "How the RM score enters a valid turn: sigmoid (into (0, 1)) or tanh (into "
                                         "(-1, 1)) keep every valid call above an invalid_penalty <= the range's floor, "
                                         "so the gate holds whatever the RM says; clip uses the raw score in "
                                         "[-rm_clip, rm_clip] (then the gate needs invalid_penalty < -rm_clip).")
    rm_clip: float = _help(10.0, "RM scores are clipped to [-rm_clip, rm_clip] first (a runaway head cannot dominate).")
    valid_reward: float = _help(0.0, "Added to a turn whose calls parse and pass the schema checks.")
    invalid_penalty: float = _help(-1.0, "Score of a turn whose calls do not parse or fail the schema (the gate).")
    w_gt: float = _help(0.0, "Weight of the gold-call match (1/0) when extra_info has gold calls.")
    abstain_reward: float = _help(0.0, "Added when the gold is 'no call' and the response makes no call.")
    turn_combine: str = _help("mean", "Multi-turn rollouts: combine turn scores by last, mean or min.")
    invalid_turn_gates: bool = _help(True, "Any invalid scored turn gives the whole sample invalid_penalty, so valid "
                                           "turns (or observations a policy writes itself) cannot dilute an invalid call; "
                                           "False: invalid turns enter turn_combine like the others.")
    score_text_turns: bool = _help(False, "Multi-turn: also score assistant turns without calls that follow a tool "
                                          "observation (final answers); single-turn abstentions are always scored.")
    max_turns: int = _help(16, "At most this many assistant turns are scored (the last ones).")
    max_chars: int = _help(200_000, "Longer responses are cut to their last max_chars characters before parsing.")
    language: str = _help("python", "Schema-check language: python, java or javascript (BFCL literal rules).")
    # -- the toolrm reward manager only --
    batch_window_ms: float = _help(20.0, "Manager: wait this long to collect concurrent samples into one RM call.")
    max_batch: int = _help(64, "Manager: at most this many RM inputs per call.")
    skip_special_tokens: bool = _help(False, "Manager: decode with skip_special_tokens (False keeps tool markers "
                                             "that some tokenizers mark special; role markers are stripped).")

    def __post_init__(self) -> None:
        if self.rm_source not in RM_SOURCES:
            raise ValueError(f"reward_kwargs.rm_source: expected one of {RM_SOURCES}, got {self.rm_source!r}")
        if self.rm_transform not in RM_TRANSFORMS:
            raise ValueError(f"reward_kwargs.rm_transform: expected one of {RM_TRANSFORMS}, got {self.rm_transform!r}")
        if self.turn_combine not in TURN_COMBINES:
            raise ValueError(f"reward_kwargs.turn_combine: expected one of {TURN_COMBINES}, got {self.turn_combine!r}")
        if self.format not in ("hermes", "json", "pythonic", "auto"):
            raise ValueError(f"reward_kwargs.format: expected hermes, json, pythonic or auto, got {self.format!r}")
        if self.server_api not in ("toolrm", "vllm"):
            raise ValueError(f"reward_kwargs.server_api: expected toolrm or vllm, got {self.server_api!r}")
        if self.rm_source == "server" and not self.server_url:
            raise ValueError("reward_kwargs.server_url: required with rm_source=server")
        if self.rm_quantize not in ("none", "int8", "int8-mixed"):
            raise ValueError(f"reward_kwargs.rm_quantize: expected none, int8 or int8-mixed, got {self.rm_quantize!r}")
        if self.rm_source == "inprocess" and not self.model_path:
            raise ValueError("reward_kwargs.model_path: required with rm_source=inprocess")


_FIELDS = {f.name for f in dataclasses.fields(ToolRewardConfig)}
_CONFIG_CACHE: dict[str, ToolRewardConfig] = {}
_warned: set[str] = set()


def load_reward_config(overrides: Mapping[str, Any] | None = None) -> ToolRewardConfig:
    """Defaults <- YAML file ``$TOOLRM_REWARD_CONFIG`` (if set) <- ``overrides`` (``reward_kwargs``).

    Unknown keys are logged once and ignored (verl may pass extra keyword arguments); a bad value
    raises ``ValueError`` naming the key. Results are cached by their inputs.
    """
    overrides = dict(overrides or {})
    path = os.environ.get(CONFIG_ENV)
    key = repr((path, sorted((k, repr(v)) for k, v in overrides.items())))
    cfg = _CONFIG_CACHE.get(key)
    if cfg is not None:
        return cfg
    values: dict[str, Any] = {}
    if path:
        from omegaconf import OmegaConf

        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        if not isinstance(loaded, dict):
            raise ValueError(f"{CONFIG_ENV}={path}: expected a mapping of reward options")
        values.update(loaded)
    values.update(overrides)
    unknown = sorted(set(values) - _FIELDS)
    if unknown and repr(unknown) not in _warned:
        _warned.add(repr(unknown))
        logger.warning("toolrm reward: ignoring unknown options %s (known: %s)", unknown, sorted(_FIELDS))
    cfg = ToolRewardConfig(**{k: v for k, v in values.items() if k in _FIELDS})
    if len(_CONFIG_CACHE) >= 256:  # bounded: callers that vary their options must not grow it forever
        _CONFIG_CACHE.clear()
    _CONFIG_CACHE[key] = cfg
    return cfg


# -- the combination rule ---------------------------------------------------------------------------

def combine(valid: bool, rm_score: float | None, cfg: ToolRewardConfig) -> float:
    """One turn's score: the gate, then the weighted, transformed RM score (``None``: no RM score, the
    rules alone decide: ``valid_reward``).

    >>> cfg = ToolRewardConfig(w_rm=1.0, invalid_penalty=-1.0, valid_reward=0.0)   # rm_transform=sigmoid
    >>> combine(False, 3.0, cfg)          # invalid format or schema: the penalty, whatever the RM says
    -1.0
    >>> combine(True, 0.0, cfg), round(combine(True, -9.0, cfg), 4)   # a valid call stays above the penalty
    (0.5, 0.0001)
    >>> clip = ToolRewardConfig(w_rm=0.5, valid_reward=0.2, rm_clip=4.0, rm_transform="clip")
    >>> combine(True, 3.0, clip), combine(True, 100.0, clip)   # 0.2 + 0.5 * 3.0; clipped to [-4, 4]
    (1.7, 2.2)
    >>> combine(True, None, clip)          # rm_source=none or a fallback
    0.2
    """
    if not valid:
        return cfg.invalid_penalty
    if rm_score is None or not math.isfinite(rm_score):
        return cfg.valid_reward
    rm = max(-cfg.rm_clip, min(cfg.rm_clip, rm_score))
    if cfg.rm_transform == "sigmoid":  # the stable form: exp never overflows
        rm = 1.0 / (1.0 + math.exp(-rm)) if rm >= 0 else math.exp(rm) / (1.0 + math.exp(rm))
    elif cfg.rm_transform == "tanh":
        rm = math.tanh(rm)
    return cfg.valid_reward + cfg.w_rm * rm


def combine_turns(turn_scores: Sequence[float], how: str) -> float:
    """Combine per-turn scores of a multi-turn rollout: ``last``, ``mean`` or ``min`` (0.0 for none).

    >>> combine_turns([1.0, -1.0, 0.5], "last"), combine_turns([1.0, -1.0, 0.5], "mean"), combine_turns([1.0, -1.0, 0.5], "min")
    (0.5, 0.16666666666666666, -1.0)
    """
    if not turn_scores:
        return 0.0
    if how == "last":
        return float(turn_scores[-1])
    if how == "min":
        return float(min(turn_scores))
    return float(sum(turn_scores) / len(turn_scores))


def episode_score(turn_scores: Sequence[float], gt_match: float, has_gold: bool, abstained_correctly: bool,
                  cfg: ToolRewardConfig) -> float:
    """The sample's score: combined turn scores + ``w_gt * gt_match`` (with gold) + the abstention reward.

    >>> cfg = ToolRewardConfig(w_gt=1.0, abstain_reward=0.5)
    >>> episode_score([0.3], 1.0, True, False, cfg), episode_score([0.3], 0.0, False, False, cfg)
    (1.3, 0.3)
    >>> episode_score([0.0], 1.0, True, True, cfg)  # gold is "no call" and none was made
    1.5
    """
    score = combine_turns(turn_scores, cfg.turn_combine)
    if has_gold:
        score += cfg.w_gt * gt_match
    if abstained_correctly:
        score += cfg.abstain_reward
    return float(score)


# -- multi-turn responses -----------------------------------------------------------------------------

# One observation section of a decoded tool_agent rollout: optional end/start markers and role label,
# one or more <tool_response> blocks, then the next assistant header. With skip_special_tokens=True the
# Qwen3 template leaves "...</tool_call>\nuser\n<tool_response>\n...\n</tool_response>\nassistant\n".
# Found with str.find and fixed-length checks, not a regex: a pattern with optional parts between
# whitespace runs backtracks cubically on a long run of blanks (9 s for 1,000 newlines).
_RESPONSE_OPEN, _RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"
_ROLES_BEFORE = ("user", "tool")
_ASSISTANT_HEADER = "assistant\n"
_MARKERS_RE = re.compile(r"<\|im_(?:start|end)\|>|<\|endoftext\|>")


def _skip_space(text: str, i: int) -> int:
    """The first index >= i that is not whitespace."""
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    return i


def _skip_space_back(text: str, i: int, lo: int) -> int:
    """The smallest j in [lo, i] with text[j:i] all whitespace."""
    while i > lo and text[i - 1].isspace():
        i -= 1
    return i


def _ends_with(text: str, token: str, i: int, lo: int) -> bool:
    return i - len(token) >= lo and text.startswith(token, i - len(token))


def _observation_start(text: str, i: int, lo: int) -> int:
    """Where the observation header ``[<|im_end|>] ws [<|im_start|>] [user|tool] ws`` before the
    ``<tool_response>`` at ``i`` begins (not before ``lo``, the end of the previous section)."""
    j = _skip_space_back(text, i, lo)
    for role in _ROLES_BEFORE:
        if _ends_with(text, role, j, lo):
            j -= len(role)
            break
    if _ends_with(text, _IM_START, j, lo):
        j -= len(_IM_START)
    j = _skip_space_back(text, j, lo)
    if _ends_with(text, _IM_END, j, lo):
        j -= len(_IM_END)
    return j


def split_turns(text: str) -> list[tuple[str, list[str]]]:
    """Split a decoded rollout into ``(assistant_text, observations_after_it)`` turns; linear in ``len(text)``.

    An observation section is ``[<|im_end|>] [<|im_start|>] [user|tool]``, one or more
    ``<tool_response>...</tool_response>`` blocks (the last may be unclosed: it runs to the end), then
    ``[<|im_end|>] [<|im_start|>] [assistant\\n]``, with any whitespace between the parts.

    >>> split_turns('<tool_call>{"name": "f", "arguments": {}}</tool_call>\\nuser\\n<tool_response>\\n42\\n'
    ...             '</tool_response>\\nassistant\\nIt is 42.')
    [('<tool_call>{"name": "f", "arguments": {}}</tool_call>', ['42']), ('It is 42.', [])]
    """
    turns: list[tuple[str, list[str]]] = []
    n, pos = len(text), 0
    while (i := text.find(_RESPONSE_OPEN, pos)) >= 0:
        start = _observation_start(text, i, pos)
        observations: list[str] = []
        j = i
        while text.startswith(_RESPONSE_OPEN, j):
            body = j + len(_RESPONSE_OPEN)
            close = text.find(_RESPONSE_CLOSE, body)
            if close < 0:  # an unclosed block runs to the end of the text
                observations.append(text[body:].strip())
                j = n
                break
            observations.append(text[body:close].strip())
            j = _skip_space(text, close + len(_RESPONSE_CLOSE))
        if text.startswith(_IM_END, j):
            j = _skip_space(text, j + len(_IM_END))
        if text.startswith(_IM_START, j):
            j += len(_IM_START)
        if text.startswith(_ASSISTANT_HEADER, j):
            j += len(_ASSISTANT_HEADER)
        turns.append((_clean(text[pos:start]), observations))
        pos = j
    last = _clean(text[pos:])
    if last or not turns:
        turns.append((last, []))
    return turns


def _clean(text: str) -> str:
    text = _MARKERS_RE.sub("", text)
    return (strip_thinking(text) if "think>" in text else text).strip()


# -- what may reach the RM: no lone surrogates, bounded nesting, printable numbers --------------------

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


def _clean_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD (tokenizers and UTF-8 encoders reject them).

    >>> _clean_text("a\\ud800b") == "a\\ufffdb", _clean_text("déjà")
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
    """A JSON-like copy of ``value`` that the RM input can hold: strings through :func:`_clean_text`,
    keys as strings, tuples as lists, numpy values as Python ones, other objects as their ``str``.
    Raises :class:`_Unrenderable` past ``limit`` levels or for an integer too long to print."""
    if isinstance(value, str):
        return _clean_text(value)
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise _Unrenderable(f"an integer of {value.bit_length()} bits")
        return value
    if depth >= limit:
        raise _Unrenderable(f"nested deeper than {limit} levels")
    if isinstance(value, Mapping):
        return {_clean_text(str(k)): _scrub(v, depth + 1, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, depth + 1, limit) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (bytes, bytearray)):  # numpy (parquet columns)
        return _scrub(value.tolist(), depth + 1, limit)
    return _clean_text(str(value))


def _rm_calls(calls: Sequence[ToolCall]) -> list[ToolCall]:
    """The calls as the RM is shown them (see :func:`_scrub`); raises :class:`_Unrenderable`."""
    return [ToolCall(_clean_text(c.name), _scrub(c.arguments)) for c in calls]


_NOTES: dict[str, list[float]] = {}  # kind -> [time of the last warning, occurrences since]
_NOTES_LOCK = threading.Lock()
NOTE_INTERVAL_S = 60.0


def _note(kind: str, message: str) -> None:
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


# -- per-sample preparation and finishing (shared by compute_score and the reward manager) -----------

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


def _json_field(info: Mapping[str, Any], name: str) -> Any:
    value = info.get(name)
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value) if value.strip() else None
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return None
    return value


def _load_tools(extra: Mapping[str, Any]) -> tuple[ToolCatalog, bool, str]:
    """``(catalog, present, error)`` of ``extra_info["tools"]``: ``present`` is False for a row without
    tools (no key, or None); ``error`` says why a present field is unusable for the gate ("" when it
    is fine): anything :meth:`ToolCatalog.load` rejects with ``strict=True`` (an empty list, duplicate
    names, ...), invalid UTF-8 or JSON, nesting beyond the limit."""
    raw = extra.get("tools")
    if raw is None:
        return ToolCatalog(), False, ""
    try:
        if isinstance(raw, (bytes, bytearray)):
            raw = bytes(raw).decode("utf-8")
        if isinstance(raw, str):
            raw = json.loads(raw)
        return ToolCatalog.load(_scrub(raw, limit=_TOOLS_DEPTH), strict=True), True, ""
    except Exception as err:  # CatalogError, bad JSON or UTF-8, too deep, anything: the gate cannot check
        return ToolCatalog(), True, f"{type(err).__name__}: {err}"


def _load_conversation(extra: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The row's conversation as RM-safe messages; unreadable messages (and unreadable ``tool_calls``
    of a readable one) are left out with a logged reason."""
    value = _json_field(extra, "conversation")
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
            _note("conversation", f"extra_info.conversation[{i}] left out of the RM input ({type(err).__name__}: "
                                  f"{err})")
    return out


def _message(m: Mapping[str, Any], index: int) -> dict[str, Any]:
    """One conversation message for the RM: string content, OpenAI ``tool_calls`` (arguments as JSON)."""
    content = m.get("content")
    if content is None:
        content = ""
    elif isinstance(content, str):
        content = _clean_text(content)
    else:  # e.g. a list of content parts: shown as JSON, as the renderer would
        content = json.dumps(_scrub(content), ensure_ascii=False)
    msg: dict[str, Any] = {"role": _clean_text(m["role"]), "content": content}
    tool_calls = m.get("tool_calls")
    if hasattr(tool_calls, "tolist") and not isinstance(tool_calls, (str, bytes)):
        tool_calls = tool_calls.tolist()
    if tool_calls:
        try:
            msg["tool_calls"] = calls_to_openai(_rm_calls(calls_from_openai(_scrub(tool_calls))))
        except Exception as err:  # history the renderer cannot read: the message without its calls
            _note("conversation", f"extra_info.conversation[{index}].tool_calls left out of the RM input "
                                  f"({type(err).__name__}: {err})")
    for key in ("name", "tool_call_id"):
        if isinstance(m.get(key), str):
            msg[key] = _clean_text(m[key])
    return msg


def _gold_calls(extra: Mapping[str, Any], ground_truth: Any) -> list[ToolCall] | None:
    """Gold calls from extra_info["gold"] (or ground_truth when it is a JSON call list); None: no gold."""
    for raw in (extra.get("gold"), ground_truth):
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        try:
            value = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
            if isinstance(value, list) and value and isinstance(value[0], Mapping) and "function" in value[0]:
                return calls_from_openai(value)
            if isinstance(value, (list, dict)):
                return calls_from_bfcl(value)
        except Exception:  # a ground truth that is not a call list (e.g. a math answer): no gold
            continue
    return None


def _ground_truth(extra: Mapping[str, Any], catalog: ToolCatalog, cfg: ToolRewardConfig) -> GroundTruth | None:
    """BFCL's checker for extra_info["answer"] (a possible answer) when the row has one for a single-turn
    category (simple, parallel, multiple; "parallel" when no category is given); None otherwise."""
    answer = _json_field(extra, "answer")
    category = str(extra.get("category") or "parallel")
    if not answer or not len(catalog) or not any(c in category for c in ("simple", "parallel", "multiple")):
        return None
    try:
        return GroundTruth(catalog, answer, category, language=cfg.language)
    except Exception as err:  # an answer the checker cannot read: the plain gate, the concrete gold
        _note("answer", f"extra_info.answer is unreadable ({type(err).__name__}: {err}); not used")
        return None


def _schema_ok(calls: list[ToolCall], catalog: ToolCatalog, truth: GroundTruth | None, cfg: ToolRewardConfig) -> bool:
    """The schema gate (values BFCL's checker accepts for the row's possible answer pass it, so a correct
    answer is never gated); a check that fails with an error counts as failed (it cannot be verified)."""
    try:
        return check_calls(calls, catalog, language=cfg.language, answer=truth).ok
    except Exception as err:
        _note("schema_check", f"schema check failed with {type(err).__name__}: {err}; the turn counts as invalid")
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
    text = _clean_text(text)
    extra = dict(extra_info) if isinstance(extra_info, Mapping) else {}  # a copy: verl mutates its dict
    catalog, has_tools, tools_error = _load_tools(extra)
    if tools_error:
        _note("tools_error", f"extra_info.tools is unreadable ({tools_error:.200}): the calls cannot be checked, "
                             f"the sample scores invalid_penalty with tools_error=1")
    gold = _gold_calls(extra, ground_truth)
    truth = None if tools_error or not has_tools else _ground_truth(extra, catalog, cfg)

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
                                                _load_conversation(extra))
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
        _note("rm_input", f"a valid call cannot be shown to the RM ({type(err).__name__}: {err}); "
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
            _note("gold_check", f"BFCL's checker failed with {type(err).__name__}: {err}; comparing with the gold")
    try:
        return calls_equal(calls, gold)
    except Exception as err:
        _note("gold_check", f"gold comparison failed with {type(err).__name__}: {err}; counted as no match")
        return False


def finish(p: Prepared, rm_scores: Sequence[float] | None, fallback: bool) -> dict[str, float]:
    """The returned dict for a prepared sample. ``rm_scores``: one per ``p.examples`` (None: no RM, e.g.
    rm_source=none or a fallback). Never raises; always the keys of :data:`KEYS`, finite floats."""
    try:
        cfg = p.cfg
        if rm_scores is None or len(rm_scores) != len(p.examples):
            rm_scores = [None] * len(p.examples)  # no RM score: the RM term is left out, not guessed
        rm_iter = iter(float(s) if isinstance(s, (int, float)) and math.isfinite(s) else None for s in rm_scores)
        turn_rm = [next(rm_iter, None) if v else None for v in p.valid]
        turn_scores = [combine(v, r, cfg) for v, r in zip(p.valid, turn_rm)]
        valid_rm = [r for v, r in zip(p.valid, turn_rm) if v and r is not None]
        score = episode_score(turn_scores, p.gt_match, p.has_gold, p.abstained_correctly, cfg)
        rm = combine_turns(valid_rm, cfg.turn_combine) if valid_rm else 0.0
        if p.tools_error:  # nothing can be verified: no response earns more than an invalid call
            score, rm = cfg.invalid_penalty, 0.0
        elif cfg.invalid_turn_gates and not all(p.valid):  # one invalid turn: the sample ranks with invalid calls
            score = cfg.invalid_penalty
        if not math.isfinite(score) or not math.isfinite(rm):
            score, rm, fallback = cfg.invalid_penalty, 0.0, True
        valid = p.format_ok and p.schema_ok and not p.error
        return {"score": float(score), "rm_score": float(rm), "format_ok": float(p.format_ok),
                "schema_ok": float(p.schema_ok), "valid": float(valid), "n_calls": float(p.n_calls),
                "n_turns": float(p.n_turns), "gt_match": float(p.gt_match), "has_gold": float(p.has_gold),
                "abstained": float(p.abstained), "fallback": float(bool(fallback or p.error)),
                "tools_error": float(p.tools_error), "latency_ms": float((time.perf_counter() - p.start) * 1000.0)}
    except Exception:  # pragma: no cover - the last line of defence
        return _error_result(p.cfg.invalid_penalty if isinstance(p, Prepared) else -1.0)


def _error_result(score: float) -> dict[str, float]:
    out = dict.fromkeys(KEYS, 0.0)
    out["score"], out["fallback"] = float(score) if math.isfinite(score) else -1.0, 1.0
    return out


# -- RM scorers (cached per worker process) -----------------------------------------------------------

INPROCESS_CACHE_SIZE = 4096
_SCORERS: dict[Any, Any] = {}
_SCORERS_LOCK = threading.Lock()


class _InProcess:
    """A ToolRM checkpoint on CPU, shared by every call in this process; scored in a worker thread."""

    name = "inprocess"

    def __init__(self, path: str, group: bool = True, quantize: str = "none") -> None:
        import torch

        torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
        # a small score cache: GRPO groups repeat responses, but 100,000 long rendered inputs would hold GBs
        self.scorer = build_scorer("rm", path, {"device": "cpu", "show_progress": False,
                                                "cache_size": INPROCESS_CACHE_SIZE, "group": group, "quantize": quantize})
        self.lock = threading.Lock()  # one forward pass at a time: torch already uses all threads

    def score(self, examples: Sequence[RMExample]) -> list[float]:
        with self.lock:
            return self.scorer.score(examples)

    async def ascore(self, examples: Sequence[RMExample]) -> list[float]:
        return await asyncio.get_running_loop().run_in_executor(None, self.score, list(examples))


def _render_spec_for(cfg: ToolRewardConfig) -> RenderSpec:
    """The render spec of a remote decoder RM: the checkpoint's toolrm.json if model_path has one. A toolrm.json
    that cannot be read (bad JSON, a newer format_version, a bad field) raises ``ValueError`` naming file and field."""
    spec = read_render_spec(cfg.model_path) if cfg.model_path else None
    return spec if spec is not None else RenderSpec(mode="chat_template", max_tokens=cfg.render_max_tokens)


def resolve_rm_source(cfg: ToolRewardConfig, reward_router_address: str | None) -> str:
    """``cfg.rm_source`` with ``auto`` resolved (router > server > inprocess > none)."""
    if cfg.rm_source != "auto":
        return cfg.rm_source
    if reward_router_address:
        return "router"
    if cfg.server_url:
        return "server"
    return "inprocess" if cfg.model_path else "none"


def get_rm_scorer(cfg: ToolRewardConfig, reward_router_address: str | None = None,
                  reward_model_tokenizer: Any = None) -> Any:
    """The RM scorer for this config (cached per process), or None for rules only.

    Scorers come from the factory (:func:`toolrm_rl.scoring.build_scorer`): ``rm`` in process, or ``remote``
    (:class:`toolrm_rl.scoring.remote.RemoteScorer`: timeouts, retries, breaker; raises only
    ``ScorerUnavailable``). Raises ``ValueError`` when rm_source=router has no router address.
    """
    source = resolve_rm_source(cfg, reward_router_address)
    if source == "none":
        return None
    common = dict(timeout_s=cfg.timeout_s, retries=cfg.retries, breaker_failures=cfg.breaker_failures,
                  breaker_reset_s=cfg.breaker_reset_s, max_batch=cfg.max_batch, token=cfg.server_token)
    if source == "router":
        if not reward_router_address:
            raise ValueError("rm_source=router needs reward.reward_model.enable=True (verl passes the router address)")
        key: Any = ("router", reward_router_address, id(reward_model_tokenizer), cfg.server_model, repr(common))
    elif source == "server":
        key = ("server", cfg.server_url, cfg.server_api, cfg.server_model, id(reward_model_tokenizer), repr(common))
    else:
        key = ("inprocess", cfg.model_path, cfg.rm_group, cfg.rm_quantize)
    with _SCORERS_LOCK:
        scorer = _SCORERS.get(key)
        if scorer is None:
            if source == "inprocess":
                scorer = _InProcess(cfg.model_path, cfg.rm_group, cfg.rm_quantize)
            else:
                url, api = cfg.server_url, cfg.server_api
                if source == "router":  # verl's router speaks vLLM's /classify; WE render, with the tools
                    url = reward_router_address if "://" in reward_router_address else f"http://{reward_router_address}"
                    api = "vllm"
                if api == "vllm":
                    spec = _render_spec_for(cfg)
                    tok = reward_model_tokenizer
                    if tok is None and (spec.mode == "chat_template" or cfg.model_path):
                        tok = _load_tokenizer(cfg.model_path)
                    scorer = build_scorer("remote", options={"url": url, "api": "vllm", "model": cfg.server_model,
                                                             "render_spec": spec, "tokenizer": tok, **common})
                else:
                    scorer = build_scorer("remote", options={"url": url, "api": "toolrm", **common})
            _SCORERS[key] = scorer
    return scorer


def _load_tokenizer(path: str | None) -> Any:
    if not path:
        raise ValueError("RM inputs rendered here with a chat template need a tokenizer: set model_path "
                         "(the RM checkpoint directory) or enable verl's reward model (reward_model_tokenizer)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


async def score_examples(scorer: Any, examples: Sequence[RMExample]) -> list[float]:
    """Scores from any scorer: ``ascore`` when it has one, else ``score`` in a worker thread."""
    if not examples:
        return []
    if hasattr(scorer, "ascore"):
        return list(await scorer.ascore(list(examples)))
    return list(await asyncio.get_running_loop().run_in_executor(None, scorer.score, list(examples)))


def _rm_failure(err: BaseException) -> None:
    kind = type(err).__name__
    if kind not in _warned:
        _warned.add(kind)
        logger.warning("toolrm reward: RM unavailable (%s: %.200s); falling back to the rule score", kind, err)


# -- the verl entry point -----------------------------------------------------------------------------

async def compute_score(data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
                        extra_info: Any = None, **reward_kwargs: Any) -> dict[str, float]:
    """verl 0.9.1 reward function: ToolRM + schema checks for one sample.

    :param data_source: the row's ``data_source`` (unused; any value).
    :param solution_str: the decoded response (several turns and observations for tool_agent rollouts).
    :param ground_truth: ``reward_model.ground_truth`` (gold calls as JSON, or anything: then no gold).
    :param extra_info: the row's ``extra_info``: ``tools``, ``conversation``, ``gold`` (JSON strings).
    :param reward_kwargs: :class:`ToolRewardConfig` options, plus ``reward_router_address`` and
        ``reward_model_tokenizer`` which verl adds when its reward model is enabled.
    :returns: a dict with the keys of :data:`KEYS` (floats), whatever the input; never raises for
        sample inputs or RM failures (a bad option value raises ``ValueError``).
    """
    router = reward_kwargs.pop("reward_router_address", None)
    rm_tokenizer = reward_kwargs.pop("reward_model_tokenizer", None)
    cfg = load_reward_config(reward_kwargs)
    try:
        p = prepare(solution_str, ground_truth, extra_info, cfg)
        if not p.examples and not p.rm_skipped:
            return finish(p, None, False)
        try:
            scorer = get_rm_scorer(cfg, router, rm_tokenizer)
            if scorer is None:
                return finish(p, None, False)
            if not p.examples:  # a valid call the RM cannot be shown: the rules alone
                return finish(p, None, True)
            scores = await score_examples(scorer, p.examples)
            return finish(p, scores, False)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # ScorerUnavailable, a model that cannot load, anything: fall back
            _rm_failure(err)
            return finish(p, None, True)
    except asyncio.CancelledError:
        raise
    except Exception:  # pragma: no cover - prepare/finish already guard themselves
        return _error_result(cfg.invalid_penalty)


def reward_sync(data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
                extra_info: Any = None, **reward_kwargs: Any) -> dict[str, float]:
    """:func:`compute_score` for synchronous callers (scripts, notebooks); not for use inside an event loop."""
    return asyncio.run(compute_score(data_source, solution_str, ground_truth, extra_info, **reward_kwargs))
