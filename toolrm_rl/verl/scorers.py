"""The RM side of the ToolRM reward: one scorer per configuration and worker process.

Where the RM score comes from (``rm_source``): ``router`` (verl's reward-model router, vLLM ``/classify``,
input rendered by OUR renderer with the tools using ``reward_model_tokenizer``), ``server`` (an external
``toolrm serve`` or ``vllm serve`` URL), ``inprocess`` (a ToolRM checkpoint loaded once per worker process
on CPU), ``none`` (rules only); ``auto`` picks the first available in that order. Scorers are built by
:func:`toolrm_rl.scoring.build_scorer` and cached per process; a configuration error raises when the
scorer is first built.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolrm_rl.core.render import RenderSpec, RMExample
from toolrm_rl.core.toolrm_json import read_render_spec
from toolrm_rl.scoring import ScorerUnavailable
from toolrm_rl.scoring.factory import build_scorer
from toolrm_rl.verl.config import ToolRewardConfig
from toolrm_rl.verl.sample import note

__all__ = ["get_rm_scorer", "note_fallback", "render_spec_for", "resolve_rm_source", "score_examples"]

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


def render_spec_for(cfg: ToolRewardConfig) -> RenderSpec:
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
    ``ScorerUnavailable``). Configuration errors raise here, at the first call (start-up), naming the
    ``reward_kwargs`` key: rm_source=router without a router address, rm_source=inprocess with a
    ``model_path`` that is not a directory, an unreadable ``toolrm.json``, a chat-template render spec
    without a tokenizer, a checkpoint that cannot load.
    """
    source = resolve_rm_source(cfg, reward_router_address)
    if source == "none":
        return None
    common = dict(timeout_s=cfg.timeout_s, retries=cfg.retries, breaker_failures=cfg.breaker_failures,
                  breaker_reset_s=cfg.breaker_reset_s, max_batch=cfg.max_batch, token=cfg.server_token)
    if source == "router":
        if not reward_router_address:
            raise ValueError("reward_kwargs.rm_source=router needs reward.reward_model.enable=True (verl passes the "
                             "router address)")
        key: Any = ("router", reward_router_address, id(reward_model_tokenizer), cfg.server_model, repr(common))
    elif source == "server":
        key = ("server", cfg.server_url, cfg.server_api, cfg.server_model, id(reward_model_tokenizer), repr(common))
    else:
        if not Path(cfg.model_path or "").is_dir():
            raise ValueError(f"reward_kwargs.model_path: {cfg.model_path!r} is not a directory (rm_source=inprocess "
                             f"needs a ToolRM checkpoint directory)")
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
                    spec = render_spec_for(cfg)
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
        raise ValueError("reward_kwargs.model_path: RM inputs rendered here with a chat template need a tokenizer: "
                         "set model_path (the RM checkpoint directory) or enable verl's reward model "
                         "(reward_model_tokenizer)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


async def score_examples(scorer: Any, examples: Sequence[RMExample]) -> list[float]:
    """Scores from any scorer: ``ascore`` when it has one, else ``score`` in a worker thread."""
    if not examples:
        return []
    if hasattr(scorer, "ascore"):
        return list(await scorer.ascore(list(examples)))
    return list(await asyncio.get_running_loop().run_in_executor(None, scorer.score, list(examples)))


def note_fallback(err: BaseException) -> None:
    """Log (rate-limited) why a sample's RM score fell back to the rules: an outage (``ScorerUnavailable``)
    or an input the scorer could not take."""
    if isinstance(err, ScorerUnavailable):
        note("rm_unavailable", f"RM unavailable ({type(err).__name__}: {err}); falling back to the rule score "
                               f"(fallback=1)")
    else:
        note("rm_error", f"the RM could not score a sample ({type(err).__name__}: {err}); that sample gets the "
                         f"rule score (fallback=1)")
