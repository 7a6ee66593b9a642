"""The options of the ToolRM verl reward: :class:`ToolRewardConfig` and :func:`load_reward_config`.

Options come from ``reward.custom_reward_function.reward_kwargs`` (verl passes them as keyword arguments),
a YAML file named by ``$TOOLRM_REWARD_CONFIG``, or both (defaults <- file <- kwargs). A bad value raises
``ValueError`` naming the key when the config is built, i.e. when the reward starts, never per sample.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

from toolrm_rl.config import option as _help

__all__ = ["CONFIG_ENV", "ToolRewardConfig", "load_reward_config"]

logger = logging.getLogger(__name__)

CONFIG_ENV = "TOOLRM_REWARD_CONFIG"

# The choices of the string options (the one place each is listed; __post_init__ checks them).
CallFormat = Literal["hermes", "json", "pythonic", "auto"]
RMSource = Literal["auto", "router", "server", "inprocess", "none"]
ServerAPI = Literal["toolrm", "vllm"]
Quantize = Literal["none", "int8", "int8-mixed", "ort-int8"]
RMTransform = Literal["sigmoid", "tanh", "clip"]
TurnCombine = Literal["last", "mean", "min"]


@dataclass
class ToolRewardConfig:
    """Options of the ToolRM reward (``reward_kwargs`` keys); defaults are the GRPO recipe's.

    An option typed with a ``Literal`` alias takes one of its strings (as YAML writes them); any other
    value raises ``ValueError`` naming the key.
    """

    format: CallFormat = _help("hermes", "Tool-call format of the policy: hermes (<tool_call> JSON), json, pythonic, auto.")
    rm_source: RMSource = _help("auto", "Where the RM score comes from: router, server, inprocess, none, or auto "
                                   "(router if verl gives an address, else server_url, else model_path, else none).")
    server_url: str | None = _help(None, "rm_source=server: base URL of `toolrm serve` or `vllm serve`.")
    server_api: ServerAPI = _help("toolrm", "rm_source=server: 'toolrm' (native /score) or 'vllm' (/classify).")
    server_model: str | None = _help(None, "Model name sent to /classify (router or vllm server); None: omitted.")
    server_token: str | None = _help(None, "Bearer token for the server; None: $TOOLRM_SERVE_TOKEN if set.")
    model_path: str | None = _help(None, "rm_source=inprocess: ToolRM checkpoint directory, loaded once per process "
                                         "on CPU. For router/vllm: where toolrm.json (the render spec) is read.")
    rm_group: bool = _help(True, "rm_source=inprocess with a decoder RM: the responses to one prompt in an RM call are "
                                 "scored against one forward pass of the shared prompt (KV cache); same scores "
                                 "within float tolerance.")
    rm_quantize: Quantize = _help("none", "rm_source=inprocess: 'int8' or 'int8-mixed' score with dynamic int8 linear layers "
                                     "on CPU (faster; scores differ slightly from float32), 'ort-int8' the same in ONNX Runtime "
                                     "(encoders, the onnx extra), 'none' in float32.")
    render_max_tokens: int = _help(4096, "router/vllm without toolrm.json: token budget of the rendered RM input.")
    timeout_s: float = _help(10.0, "Per-request timeout of RM calls (seconds).")
    retries: int = _help(2, "Retries of a failed RM call (bounded; then the sample falls back).")
    breaker_failures: int = _help(5, "Consecutive failed calls that open the circuit breaker.")
    breaker_reset_s: float = _help(30.0, "Seconds an open breaker waits before trying the RM again.")
    w_rm: float = _help(1.0, "Weight of the (clipped) RM score in a valid turn's score.")
    rm_transform: RMTransform = _help("sigmoid", "How the RM score enters a valid turn: sigmoid (into (0, 1)) or tanh (into "
                                         "(-1, 1)) keep every valid call above an invalid_penalty <= the range's floor, "
                                         "so the gate holds whatever the RM says; clip uses the raw score in "
                                         "[-rm_clip, rm_clip] (then the gate needs invalid_penalty < -rm_clip).")
    rm_clip: float = _help(10.0, "RM scores are clipped to [-rm_clip, rm_clip] first (a runaway head cannot dominate).")
    valid_reward: float = _help(0.0, "Added to a turn whose calls parse and pass the schema checks.")
    invalid_penalty: float = _help(-1.0, "Score of a turn whose calls do not parse or fail the schema (the gate).")
    w_gt: float = _help(0.0, "Weight of the gold-call match (1/0) when extra_info has gold calls.")
    abstain_reward: float = _help(0.0, "Added when the gold is 'no call' and the response makes no call.")
    turn_combine: TurnCombine = _help("mean", "Multi-turn rollouts: combine turn scores by last, mean or min.")
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
    max_batch: int = _help(512, "Manager: at most this many RM inputs per call. 512: a GRPO batch of 64 prompts x "
                                "8 responses is one call, so a decoder RM's group scoring sees whole groups "
                                "(bench_reward.py --groups, 2 CPU cores: 2.98x over per-sample calls at 64, 3.52x at "
                                "256, 4.39x at 512, peak memory unchanged: each forward pass stays within the "
                                "scorer's token budget, and a remote scorer splits its own requests).")
    skip_special_tokens: bool = _help(False, "Manager: decode with skip_special_tokens (False keeps tool markers "
                                             "that some tokenizers mark special; role markers are stripped).")

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"reward_kwargs.{name}: expected one of {', '.join(choices)}, "
                                 f"got {getattr(self, name)!r}")
        if self.rm_source == "server" and not self.server_url:
            raise ValueError("reward_kwargs.server_url: required with rm_source=server")
        if self.rm_source == "inprocess" and not self.model_path:
            raise ValueError("reward_kwargs.model_path: required with rm_source=inprocess")


_FIELDS = {f.name for f in dataclasses.fields(ToolRewardConfig)}
# The options typed with a Literal alias above, and their choices.
_CHOICES = {name: get_args(kind) for name, kind in get_type_hints(ToolRewardConfig).items() if get_origin(kind) is Literal}
_CONFIG_CACHE: dict[str, ToolRewardConfig] = {}
_warned_unknown: set[str] = set()


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
    if unknown and repr(unknown) not in _warned_unknown:
        _warned_unknown.add(repr(unknown))
        logger.warning("toolrm reward: ignoring unknown options %s (known: %s)", unknown, sorted(_FIELDS))
    cfg = ToolRewardConfig(**{k: v for k, v in values.items() if k in _FIELDS})
    if len(_CONFIG_CACHE) >= 256:  # bounded: callers that vary their options must not grow it forever
        _CONFIG_CACHE.clear()
    _CONFIG_CACHE[key] = cfg
    return cfg
