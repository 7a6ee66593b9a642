"""The one scorer interface, shared by evaluation, the verl reward and the server, its backends, and the
one factory that builds them from configuration.

A scorer maps reward-model examples (:class:`~toolrm_rl.core.render.RMExample`: tools, conversation,
candidate calls) to floats; higher is better.

- :mod:`~toolrm_rl.scoring.protocol`: :class:`Scorer`, :class:`ScorerUnavailable` (the one exception remote
  backends raise), :func:`score_pairs`.
- :mod:`~toolrm_rl.scoring.rules`: ``rules``, schema checks from the core, no model. 0 for a call list with
  no violation, minus a weighted violation count otherwise.
- :mod:`~toolrm_rl.scoring.rm`: ``rm``, a ToolRM checkpoint; ``hybrid``, rules and RM together, either as a
  *gate* (any schema violation ranks the candidate below every schema-valid one; the RM orders candidates
  within each side) or a weighted sum.
- :mod:`~toolrm_rl.scoring.judge`: ``judge``, an LLM as judge over any OpenAI-compatible endpoint,
  pointwise or pairwise.
- :mod:`~toolrm_rl.scoring.hf_rm`: ``hf-rm``, any Hugging Face sequence-classification reward model with
  its own chat template.
- :mod:`~toolrm_rl.scoring.remote`: ``remote``, scores from a scoring server, ours (``toolrm serve``) or a
  vLLM ``/classify`` one; fails only with :class:`ScorerUnavailable`.
- :mod:`~toolrm_rl.scoring.factory`: the registry :data:`SCORERS`, :func:`build_scorer` (one scorer from a
  name, a checkpoint and an options dict), :func:`build_scorers` (a recipe's ``scorers`` entries, ``rm`` and
  ``hybrid`` sharing one model), and :func:`get_scorer` (the same with keyword options).

This layer sits above :mod:`toolrm_rl.model` (loaded on use: torch is imported only when a model scorer is
built) and below evaluation, verl and the server; nothing here imports them.
"""

from toolrm_rl.scoring.factory import SCORERS, build_scorer, build_scorers, get_scorer
from toolrm_rl.scoring.protocol import Scorer, ScorerUnavailable, score_pairs
from toolrm_rl.scoring.rm import HybridScorer, RMScorer
from toolrm_rl.scoring.rules import DEFAULT_RULE_WEIGHTS, RulesScorer

__all__ = ["Scorer", "ScorerUnavailable", "RulesScorer", "RMScorer", "HybridScorer", "SCORERS", "build_scorer",
           "build_scorers", "get_scorer", "score_pairs", "DEFAULT_RULE_WEIGHTS"]
