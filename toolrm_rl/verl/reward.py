"""ToolRM + schema checks as a verl 0.9.1 reward: ``compute_score`` and the combination rule.

Point verl at it with ``reward.custom_reward_function.path=pkg://toolrm_rl.verl.reward`` (or the file
``reward_fns/toolrm_reward.py``); options go in ``reward.custom_reward_function.reward_kwargs``
(verl passes them as keyword arguments), in a YAML file named by ``$TOOLRM_REWARD_CONFIG``, or both
(defaults <- file <- kwargs). See :class:`ToolRewardConfig`.

Per sample: the response (``solution_str``, the decoded rollout) is split into assistant turns (a
``tool_agent`` rollout holds several, separated by ``<tool_response>`` observations); each turn's
calls are parsed (``core.parse``, hermes by default) and checked against the catalog
(``core.schema.check_calls``); valid turns are scored by ToolRM in their context (catalog +
conversation + earlier turns and observations); the turn scores are combined by ``turn_combine``.
Tools, conversation and gold calls come from ``extra_info`` (JSON strings written by ``toolrm verl-data``);
a row without tools gets the format check only (its schema check is skipped, ``schema_ok=1``).

The combination rule (:func:`combine`, per turn)::

    invalid format or schema:  invalid_penalty                       (gate: the RM is not asked)
    otherwise:                 valid_reward + w_rm * transform(rm_score)   (sigmoid by default: in (0, 1))
    episode score = turn_combine(turn scores) + w_gt * gt_match + abstain_reward * abstained_correctly

Where the RM score comes from (``rm_source``): ``router`` (verl's reward-model router, vLLM
``/classify``, input rendered by OUR renderer with the tools using ``reward_model_tokenizer``),
``server`` (an external ``toolrm serve`` or ``vllm serve`` URL), ``inprocess`` (a ToolRM checkpoint
loaded once per worker process on CPU), ``none`` (rules only); ``auto`` picks the first available in
that order. It never breaks training: RM failures (timeouts, bounded retries, an open circuit breaker,
bad replies) fall back to ``rm_score = 0`` with ``fallback = 1``, and a top-level guard turns any other
error into the invalid score with ``fallback = 1``. Every sample returns the same keys (:data:`KEYS`).
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
from toolrm_rl.core.parse import parse, strip_thinking
from toolrm_rl.core.render import RenderSpec, RMExample
from toolrm_rl.core.schema import check_calls

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
        "abstained", "fallback", "latency_ms")
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
_OBS_RE = re.compile(
    r"(?:<\|im_end\|>)?\s*(?:<\|im_start\|>)?(?:user|tool)?\s*"
    r"((?:<tool_response>.*?(?:</tool_response>|$)\s*)+)"
    r"(?:<\|im_end\|>)?\s*(?:<\|im_start\|>)?(?:assistant\n)?", re.DOTALL)
_RESPONSE_RE = re.compile(r"<tool_response>(.*?)(?:</tool_response>|$)", re.DOTALL)
_MARKERS_RE = re.compile(r"<\|im_(?:start|end)\|>|<\|endoftext\|>")


def split_turns(text: str) -> list[tuple[str, list[str]]]:
    """Split a decoded rollout into ``(assistant_text, observations_after_it)`` turns.

    >>> split_turns('<tool_call>{"name": "f", "arguments": {}}</tool_call>\\nuser\\n<tool_response>\\n42\\n'
    ...             '</tool_response>\\nassistant\\nIt is 42.')
    [('<tool_call>{"name": "f", "arguments": {}}</tool_call>', ['42']), ('It is 42.', [])]
    """
    turns: list[tuple[str, list[str]]] = []
    pos = 0
    for m in _OBS_RE.finditer(text):
        turns.append((_clean(text[pos:m.start()]), [r.strip() for r in _RESPONSE_RE.findall(m.group(1))]))
        pos = m.end()
    last = _clean(text[pos:])
    if last or not turns:
        turns.append((last, []))
    return turns


def _clean(text: str) -> str:
    text = _MARKERS_RE.sub("", text)
    return (strip_thinking(text) if "think>" in text else text).strip()


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
    error: bool = False  # the guard caught an exception: score as invalid, fallback=1
    start: float = field(default_factory=time.perf_counter)


def _json_field(info: Mapping[str, Any], name: str) -> Any:
    value = info.get(name)
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value) if value.strip() else None
        except (ValueError, RecursionError):
            return None
    return value


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


def prepare(solution_str: Any, ground_truth: Any, extra_info: Any, cfg: ToolRewardConfig) -> Prepared:
    """Parse, split and check one sample; never raises (errors give ``Prepared(error=True)``)."""
    try:
        return _prepare(solution_str, ground_truth, extra_info, cfg)
    except Exception as err:  # the guard: a reward must not stop training
        logger.warning("toolrm reward: could not prepare a sample (%s: %.200s)", type(err).__name__, err)
        return Prepared(cfg, [False], [], format_ok=False, schema_ok=False, error=True)


def _prepare(solution_str: Any, ground_truth: Any, extra_info: Any, cfg: ToolRewardConfig) -> Prepared:
    text = solution_str if isinstance(solution_str, str) else ("" if solution_str is None else str(solution_str))
    if len(text) > cfg.max_chars:
        text = text[-cfg.max_chars:]
    extra = dict(extra_info) if isinstance(extra_info, Mapping) else {}  # a copy: verl mutates its dict
    try:
        catalog = ToolCatalog.load(_json_field(extra, "tools"))
    except Exception:
        catalog = ToolCatalog()
    conversation = _json_field(extra, "conversation")
    if not isinstance(conversation, list):
        conversation = []
    conversation = [m for m in conversation if isinstance(m, Mapping) and isinstance(m.get("role"), str)]
    gold = _gold_calls(extra, ground_truth)

    turns = split_turns(text)
    context = list(conversation)
    p = Prepared(cfg, [], [], n_turns=len(turns))
    all_calls: list[ToolCall] = []
    scored: list[tuple[bool, RMExample | None]] = []
    for k, (turn_text, observations) in enumerate(turns):
        result = parse(turn_text, cfg.format)
        calls = result.calls if result.ok else []
        all_calls.extend(calls)
        ok_format = result.ok
        ok_schema = ok_format  # calls that cannot be read cannot pass the schema either
        if ok_format and calls:
            ok_schema = check_calls(calls, catalog, language=cfg.language).ok if len(catalog) else True
        p.format_ok &= ok_format
        p.schema_ok &= ok_schema
        is_answer = not calls and k > 0  # a text turn after an observation: the final answer
        if ok_format and (calls or not is_answer or cfg.score_text_turns):
            example = RMExample(catalog, list(context), list(calls), None if calls else turn_text[:2000])
            scored.append((ok_schema, example))
        elif not ok_format:
            scored.append((False, None))
        if calls:
            context.append({"role": "assistant", "content": "", "tool_calls": calls_to_openai(calls)})
        else:
            context.append({"role": "assistant", "content": turn_text[:2000]})
        context.extend({"role": "tool", "content": o[:2000]} for o in observations)
    scored = scored[-cfg.max_turns:]
    p.valid = [v for v, _ in scored]
    p.examples = [ex for v, ex in scored if v and ex is not None]
    p.n_calls = len(all_calls)
    p.abstained = not all_calls and p.format_ok
    if gold is not None:
        p.has_gold = True
        p.gt_match = float(p.format_ok and _matches(all_calls, gold, extra, catalog, cfg))
        p.abstained_correctly = not gold and p.abstained
    return p


def _matches(calls: list[ToolCall], gold: list[ToolCall], extra: Mapping[str, Any], catalog: ToolCatalog,
             cfg: ToolRewardConfig) -> bool:
    """BFCL's checker against extra_info["answer"] (a possible answer: accepts alternatives) when there is
    one and the gold makes calls; otherwise the calls must equal the gold after normalisation (any order)."""
    from toolrm_rl.core.match import GroundTruth, calls_equal

    answer = _json_field(extra, "answer")
    if gold and answer and len(catalog):
        try:
            category = str(extra.get("category") or "parallel")
            if not any(c in category for c in ("simple", "parallel", "multiple")):
                return calls_equal(calls, gold)  # e.g. "sequential": BFCL's checkers do not apply
            return GroundTruth(catalog, answer, category, language=cfg.language).check(calls).valid
        except Exception:  # an answer the checker cannot read: compare with the concrete gold
            pass
    return calls_equal(calls, gold)


def finish(p: Prepared, rm_scores: Sequence[float] | None, fallback: bool) -> dict[str, float]:
    """The returned dict for a prepared sample. ``rm_scores``: one per ``p.examples`` (None: no RM, e.g.
    rm_source=none or a fallback). Never raises; always the keys of :data:`KEYS`."""
    try:
        cfg = p.cfg
        if rm_scores is None or len(rm_scores) != len(p.examples):
            rm_scores = [None] * len(p.examples)  # no RM score: the RM term is left out, not guessed
        rm_iter = iter(float(s) if isinstance(s, (int, float)) and math.isfinite(s) else None for s in rm_scores)
        turn_rm = [next(rm_iter) if v else None for v in p.valid]
        turn_scores = [combine(v, r, cfg) for v, r in zip(p.valid, turn_rm)]
        valid_rm = [r for v, r in zip(p.valid, turn_rm) if v and r is not None]
        score = episode_score(turn_scores, p.gt_match, p.has_gold, p.abstained_correctly, cfg)
        rm = combine_turns(valid_rm, cfg.turn_combine) if valid_rm else 0.0
        if not math.isfinite(score):
            score, fallback = cfg.invalid_penalty, True
        valid = p.format_ok and p.schema_ok and not p.error
        return {"score": float(score), "rm_score": float(rm), "format_ok": float(p.format_ok),
                "schema_ok": float(p.schema_ok), "valid": float(valid), "n_calls": float(p.n_calls),
                "n_turns": float(p.n_turns), "gt_match": float(p.gt_match), "has_gold": float(p.has_gold),
                "abstained": float(p.abstained), "fallback": float(bool(fallback or p.error)),
                "latency_ms": float((time.perf_counter() - p.start) * 1000.0)}
    except Exception:  # pragma: no cover - the last line of defence
        return _error_result(p.cfg.invalid_penalty if isinstance(p, Prepared) else -1.0)


def _error_result(score: float) -> dict[str, float]:
    out = dict.fromkeys(KEYS, 0.0)
    out["score"], out["fallback"] = float(score), 1.0
    return out


# -- RM scorers (cached per worker process) -----------------------------------------------------------

_SCORERS: dict[Any, Any] = {}
_SCORERS_LOCK = threading.Lock()


class _InProcess:
    """A ToolRM checkpoint on CPU, shared by every call in this process; scored in a worker thread."""

    name = "inprocess"

    def __init__(self, path: str) -> None:
        import torch

        from toolrm_rl.scoring import RMScorer

        torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
        self.scorer = RMScorer(path=path, device="cpu", show_progress=False)
        self.lock = threading.Lock()  # one forward pass at a time: torch already uses all threads

    def score(self, examples: Sequence[RMExample]) -> list[float]:
        with self.lock:
            return self.scorer.score(examples)

    async def ascore(self, examples: Sequence[RMExample]) -> list[float]:
        return await asyncio.get_running_loop().run_in_executor(None, self.score, list(examples))


def _render_spec_for(cfg: ToolRewardConfig) -> RenderSpec:
    """The render spec of a remote decoder RM: the checkpoint's toolrm.json if model_path has one."""
    if cfg.model_path and os.path.isfile(os.path.join(cfg.model_path, "toolrm.json")):
        try:
            with open(os.path.join(cfg.model_path, "toolrm.json"), encoding="utf-8") as fh:
                return RenderSpec.from_dict(json.load(fh)["render"])
        except Exception as err:
            logger.warning("toolrm reward: unreadable %s/toolrm.json (%s); using chat_template", cfg.model_path, err)
    return RenderSpec(mode="chat_template", max_tokens=cfg.render_max_tokens)


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

    Remote scorers are :class:`toolrm_rl.serve.client.RemoteScorer` (timeouts, retries, breaker; raise
    only ``ScorerUnavailable``). Raises ``ValueError`` when rm_source=router has no router address.
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
        key = ("inprocess", cfg.model_path)
    with _SCORERS_LOCK:
        scorer = _SCORERS.get(key)
        if scorer is None:
            if source == "inprocess":
                scorer = _InProcess(cfg.model_path)
            else:
                from toolrm_rl.serve.client import RemoteScorer

                url, api = cfg.server_url, cfg.server_api
                if source == "router":  # verl's router speaks vLLM's /classify; WE render, with the tools
                    url = reward_router_address if "://" in reward_router_address else f"http://{reward_router_address}"
                    api = "vllm"
                if api == "vllm":
                    spec = _render_spec_for(cfg)
                    tok = reward_model_tokenizer
                    if tok is None and (spec.mode == "chat_template" or cfg.model_path):
                        tok = _load_tokenizer(cfg.model_path)
                    scorer = RemoteScorer(url, api="vllm", model=cfg.server_model, render_spec=spec, tokenizer=tok,
                                          **common)
                else:
                    scorer = RemoteScorer(url, api="toolrm", **common)
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
        if not p.examples:
            return finish(p, None, False)
        try:
            scorer = get_rm_scorer(cfg, router, rm_tokenizer)
            if scorer is None:
                return finish(p, None, False)
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
