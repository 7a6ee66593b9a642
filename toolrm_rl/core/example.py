"""The one example type: a query with its tools, gold calls and (for BFCL) possible answer and category.

Every layer speaks it: sources and synthesis (``data``), BFCL's single-turn records (``data.bfcl``), the
verl rows (``verl.data``, ``core.extra_info``) and best-of-N's questions (``eval.best_of_n``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolrm_rl.core.bfcl_types import language_of_category
from toolrm_rl.core.calls import ToolCall, ToolCatalog

__all__ = ["ToolExample"]


@dataclass
class ToolExample:
    """One query with its tools and gold calls (``[]``: no call is right).

    ``answer`` is a BFCL possible answer when the source has one (it lists acceptable alternatives,
    so negatives are verified with the BFCL matcher); otherwise negatives must differ from ``gold``.
    ``category`` is BFCL's test category (it sets the checker's language and parallel rules).
    ``meta`` holds what one source adds (BFCL's own function docs under ``functions``, an obfuscation map).

    >>> ex = ToolExample("java_1", "bfcl", [{"role": "user", "content": "..."}], ToolCatalog(), [], category="java")
    >>> ex.language, ex.answer
    ('java', None)
    """

    id: str
    source: str
    conversation: list[dict[str, Any]]
    tools: ToolCatalog
    gold: list[ToolCall] = field(default_factory=list)
    answer: list[dict] | None = None
    category: str = "parallel"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def language(self) -> str:
        """The checker's language for the category: ``python``, ``java`` or ``javascript``."""
        return language_of_category(self.category)
