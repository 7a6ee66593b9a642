"""The tool-call core: one representation, parsers, schema checks, BFCL matching, rendering.

Nothing in this package imports torch (tests enforce it): the RL reward path calls it thousands
of times per step in CPU-only reward workers.
"""

from toolrm_rl.core.calls import (
    CatalogError, EmptyCatalogError, ToolCall, ToolCatalog, ToolSpec, calls_from_bfcl, calls_from_openai,
)
from toolrm_rl.core.parse import ParseError, ParseResult, parse, serialize

__all__ = [
    "CatalogError", "EmptyCatalogError", "ToolCall", "ToolCatalog", "ToolSpec", "calls_from_bfcl", "calls_from_openai",
    "ParseError", "ParseResult", "parse", "serialize",
]
