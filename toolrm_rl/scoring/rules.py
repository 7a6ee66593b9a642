"""The ``rules`` scorer: schema checks from the core, no model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from toolrm_rl.core.render import RMExample
from toolrm_rl.core.schema import check_calls

__all__ = ["DEFAULT_RULE_WEIGHTS", "RulesScorer"]

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
        return check_calls(example.calls, example.tools, language=self.language)

    def score(self, examples: Sequence[RMExample]) -> list[float]:
        """Rule scores, in input order."""
        out = []
        for ex in examples:
            report = self.violations(ex)
            out.append(-float(sum(self.weights.get(v.category, 1.0) for v in report.violations)) if report.violations else 0.0)
        return out
