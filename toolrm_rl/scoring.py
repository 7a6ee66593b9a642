"""The one scorer interface, shared by evaluation, the verl reward and the server, and its backends.

A scorer maps reward-model examples (:class:`~toolrm_rl.core.render.RMExample`: tools,
conversation, candidate calls) to floats; higher is better. Backends:

- ``rules``: schema checks from the core, no model. 0 for a call list with no violation, minus a
  weighted violation count otherwise.
- ``rm``: a ToolRM checkpoint (:class:`toolrm_rl.model.ToolRM`).
- ``hybrid``: rules and RM together, either as a *gate* (any schema violation ranks the candidate
  below every schema-valid one; the RM orders candidates within each side) or a weighted sum.
- ``judge``: an LLM as judge over any OpenAI-compatible endpoint, pointwise or pairwise
  (:mod:`toolrm_rl.judge`).
- ``hf-rm``: any Hugging Face sequence-classification reward model with its own chat template
  (:mod:`toolrm_rl.hf_rm`).
- ``remote``: scores from a scoring server, ours (``toolrm serve``) or a vLLM ``/classify`` one
  (:class:`toolrm_rl.serve.client.RemoteScorer`); fails only with :class:`ScorerUnavailable`.

``get_scorer(name, **options)`` builds one by name; later backends register in :data:`SCORERS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from toolrm_rl.core.calls import ToolCatalog
from toolrm_rl.core.render import RMExample
from toolrm_rl.core.schema import check_calls

__all__ = ["Scorer", "ScorerUnavailable", "RulesScorer", "RMScorer", "HybridScorer", "SCORERS", "get_scorer", "score_pairs",
           "DEFAULT_RULE_WEIGHTS"]


class ScorerUnavailable(RuntimeError):
    """A scorer backend cannot answer now (server down, timeout, open circuit breaker, bad reply).

    Remote backends raise only this, so callers that must never fail (the verl reward) catch one
    exception type and fall back to the rule score.
    """


@runtime_checkable
class Scorer(Protocol):
    """Anything with a ``name`` and ``score(examples) -> list[float]`` (input order, higher is better)."""

    name: str

    def score(self, examples: Sequence[RMExample]) -> list[float]:
        """One score per example, in input order."""
        ...


def score_pairs(scorer: Scorer, pairs: Sequence[tuple[RMExample, RMExample]]) -> list[tuple[float, float]]:
    """Score (chosen, rejected) example pairs in one batch: ``[(s_chosen, s_rejected), ...]``.

    A scorer with its own pair-aware ``score_pairs(pairs)`` (the pairwise LLM judge) is asked about
    the pairs; any other scorer scores the flattened list."""
    if callable(getattr(scorer, "score_pairs", None)):
        return [(float(a), float(b)) for a, b in scorer.score_pairs(pairs)]
    flat = [ex for pair in pairs for ex in pair]
    scores = scorer.score(flat)
    return list(zip(scores[0::2], scores[1::2]))


# Violation category -> penalty. A call to a function that does not exist is worse than a wrong type.
DEFAULT_RULE_WEIGHTS: dict[str, float] = {
    "unknown_function": 3.0, "missing_required": 2.0, "unexpected_param": 2.0, "type": 1.0,
    "nested_type": 1.0, "enum": 1.0, "constraint": 1.0, "no_call": 2.0,
}


@dataclass
class RulesScorer:
    """Schema-rule score: ``0`` when every call passes, ``-sum(weight[category])`` over violations.

    >>> from toolrm_rl.core.calls import ToolCall
    >>> tools = [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}]
    >>> RulesScorer().score([RMExample(tools, [], [ToolCall("f", {"x": 1})]), RMExample(tools, [], [ToolCall("g", {})])])
    [0.0, -3.0]
    """

    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RULE_WEIGHTS))
    language: str = "python"
    name: str = "rules"

    def violations(self, example: RMExample):
        """The schema report of one example (catalogs are compiled once per catalog object)."""
        return check_calls(example.calls, _catalog(example), language=self.language)

    def score(self, examples: Sequence[RMExample]) -> list[float]:
        """Rule scores, in input order."""
        out = []
        for ex in examples:
            report = self.violations(ex)
            out.append(-float(sum(self.weights.get(v.category, 1.0) for v in report.violations)) if report.violations else 0.0)
        return out


def _catalog(example: RMExample) -> ToolCatalog:
    # Keep the loaded catalog on the example so repeated scoring reuses its compiled checks.
    if not isinstance(example.tools, ToolCatalog):
        example.tools = ToolCatalog.load(example.tools)
    return example.tools


class RMScorer:
    """A ToolRM checkpoint as a scorer (loads lazily: torch is imported only here).

    The checkpoint is frozen, so scores are cached by rendered text (at most ``cache_size`` entries):
    evaluating ``rm`` and ``hybrid`` on the same pairs, or an RL group with repeated responses, runs
    the model once per distinct input. ``quantize="int8"`` scores with dynamic int8 linear layers on
    CPU (:meth:`toolrm_rl.model.ToolRM.quantize`); :attr:`quantization` says which scheme ran. With a
    decoder backbone and ``group`` (the default), candidates of one prompt share one forward pass of the
    prompt (:meth:`toolrm_rl.model.ToolRM.score_groups`; the same scores within float tolerance).
    """

    name = "rm"

    def __init__(self, model: Any = None, *, path: str | None = None, device: str = "cpu",
                 batch_tokens: int | None = None, show_progress: bool | None = None, cache_size: int = 100_000,
                 quantize: str = "none", group: bool = True) -> None:
        if model is None:
            if path is None:
                raise ValueError("RMScorer needs a ToolRM model or a checkpoint path")
            from toolrm_rl.model import ToolRM

            model = ToolRM.from_pretrained(path, device=device, quantize=quantize)
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


def _judge_scorer(**options: Any) -> Scorer:
    from toolrm_rl.judge import JudgeScorer  # imported on use: an optional backend

    return JudgeScorer(**options)


def _remote_scorer(**options: Any) -> Scorer:
    from toolrm_rl.serve.client import RemoteScorer  # imported on use: the server client (httpx)

    return RemoteScorer(**options)


def _hf_rm_scorer(**options: Any) -> Scorer:
    from toolrm_rl.hf_rm import HFRewardModelScorer  # imported on use: torch and transformers

    return HFRewardModelScorer(**options)


SCORERS: dict[str, Callable[..., Scorer]] = {
    "rules": lambda **kw: RulesScorer(**kw),
    "rm": lambda **kw: RMScorer(**kw),
    "hybrid": lambda rm=None, path=None, device="cpu", **kw: HybridScorer(
        rm=rm if rm is not None else RMScorer(path=path, device=device), **kw),
    "judge": lambda **kw: _judge_scorer(**kw),
    "hf-rm": lambda **kw: _hf_rm_scorer(**kw),
    "remote": lambda **kw: _remote_scorer(**kw),
}


def get_scorer(name: str, **options: Any) -> Scorer:
    """Build a scorer by backend name (``rules``, ``rm``, ``hybrid``, ``judge``, ``hf-rm``); options go to
    its constructor."""
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; available: {sorted(SCORERS)}")
    return SCORERS[name](**options)
