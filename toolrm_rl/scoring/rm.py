"""The ``rm`` scorer (a ToolRM checkpoint) and the ``hybrid`` scorer (rules and a reward model together)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from toolrm_rl.core.render import RMExample
from toolrm_rl.scoring.protocol import Scorer
from toolrm_rl.scoring.rules import RulesScorer

__all__ = ["HybridScorer", "RMScorer"]


class RMScorer:
    """A ToolRM checkpoint as a scorer (loads lazily: torch is imported only here).

    The checkpoint is frozen, so scores are cached by rendered text (at most ``cache_size`` entries):
    evaluating ``rm`` and ``hybrid`` on the same pairs, or an RL group with repeated responses, runs
    the model once per distinct input. ``quantize="int8"`` scores with dynamic int8 linear layers on
    CPU (``"ort-int8"``: the same in ONNX Runtime, encoders; :meth:`toolrm_rl.model.ToolRM.quantize`);
    :attr:`quantization` says which scheme ran. With a
    decoder backbone and ``group`` (the default), candidates of one prompt share one forward pass of the
    prompt (:meth:`toolrm_rl.model.ToolRM.score_groups`; the same scores within float tolerance).
    ``dtype``: the weights' dtype at load (:meth:`toolrm_rl.model.ToolRM.from_pretrained`; None: float32
    on CPU, bfloat16 elsewhere).
    """

    name = "rm"

    def __init__(self, model: Any = None, *, path: str | None = None, device: str = "cpu",
                 batch_tokens: int | None = None, show_progress: bool | None = None, cache_size: int = 100_000,
                 quantize: str = "none", group: bool = True, dtype: Any = None) -> None:
        if model is None:
            if path is None:
                raise ValueError("RMScorer needs a ToolRM model or a checkpoint path")
            from toolrm_rl.model import ToolRM

            model = ToolRM.from_pretrained(path, device=device, dtype=dtype, quantize=quantize)
        elif quantize != "none":
            model.quantize(quantize)
        self.model = model
        self.batch_tokens = batch_tokens  # None: the model's device-aware default
        self.show_progress = show_progress
        self.cache_size = cache_size
        self.group = group
        self._cache: dict[str, float] = {}

    @property
    def quantization(self) -> str:
        """The model's quantization scheme (``"none"`` for float weights)."""
        return getattr(self.model, "quantization", "none")

    def score(self, examples: Sequence[RMExample]) -> list[float]:
        """Reward-model scores, in input order."""
        if len(self._cache) > self.cache_size:
            self._cache.clear()
        return self.model.score(list(examples), batch_tokens=self.batch_tokens, show_progress=self.show_progress,
                                cache=self._cache, group=self.group)  # ToolRM groups decoder inputs only


@dataclass
class HybridScorer:
    """Rules and a reward model together.

    ``mode="gate"``: ``rm + (0 if schema-valid else -(gate_penalty + rule penalty))``, so every
    schema-invalid candidate ranks below every valid one (for RM scores within +-gate_penalty/2),
    and the RM breaks ties inside each side. ``mode="weighted"``: ``rules_weight * rules + rm_weight * rm``.
    """

    rm: Scorer
    rules: RulesScorer = field(default_factory=RulesScorer)
    mode: str = "gate"
    gate_penalty: float = 100.0
    rules_weight: float = 1.0
    rm_weight: float = 1.0
    name: str = "hybrid"

    def __post_init__(self) -> None:
        if self.mode not in ("gate", "weighted"):
            raise ValueError(f"HybridScorer.mode must be 'gate' or 'weighted', not {self.mode!r}")

    def score(self, examples: Sequence[RMExample]) -> list[float]:
        """Combined scores, in input order."""
        rule_scores = self.rules.score(examples)
        rm_scores = self.rm.score(examples)
        if self.mode == "weighted":
            return [self.rules_weight * r + self.rm_weight * m for r, m in zip(rule_scores, rm_scores)]
        return [m if r == 0 else m - self.gate_penalty + r for r, m in zip(rule_scores, rm_scores)]
