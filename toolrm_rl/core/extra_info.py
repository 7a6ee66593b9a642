"""The ``extra_info`` of a verl parquet row: written by ``toolrm verl-data`` (:func:`encode`), read by the
verl reward (:func:`decode`). Torch-free; the one place that knows the field names and their encoding.

Fields (JSON strings, so that parquet stores every row with one schema)::

    format_version  int; absent in rows written before it existed (read as version 1)
    split, index, id
    tools           the catalog, [{name, description, parameters}]; a row without tools has no key or null
    conversation    the messages before the response
    gold            the gold calls, BFCL style ([] : no call is right)
    answer          BFCL's possible answer ("" when the row has none)
    category        BFCL's test category ("" when none)

:func:`decode` never raises on a field's content (the reward reads rollout rows and must not stop
training): a field that cannot be decoded is None, with the reason in :attr:`ExtraInfo.errors`. A
``format_version`` newer than :data:`FORMAT_VERSION` raises ``ValueError`` naming the field.

>>> from toolrm_rl.core.calls import ToolCall
>>> from toolrm_rl.core.example import ToolExample
>>> ex = ToolExample("q1", "demo", [{"role": "user", "content": "Weather in Paris?"}],
...                  [{"name": "weather", "parameters": {"type": "object", "properties": {}}}],
...                  [ToolCall("weather", {"city": "Paris"})])
>>> info = decode(encode(ex, split="train", index=3))
>>> info.gold, info.conversation[0]["content"], info.tools[0]["name"], info.index, info.errors
([ToolCall(name='weather', arguments={'city': 'Paris'})], 'Weather in Paris?', 'weather', 3, {})
>>> decode({"tools": "[{", "gold": "[]"}).errors["tools"][:26], decode({"gold": "[]"}).gold
('tools: not valid JSON (Exp', [])
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from toolrm_rl.core.calls import CatalogError, ToolCall, ToolCatalog, calls_from_any, calls_to_bfcl, load_json_field
from toolrm_rl.core.example import ToolExample

__all__ = ["FORMAT_VERSION", "ExtraInfo", "decode", "encode"]

FORMAT_VERSION = 1


def encode(example: ToolExample, *, split: str, index: int) -> dict[str, Any]:
    """The ``extra_info`` dict of one example's verl row (JSON strings; see the module docstring)."""
    return {
        "format_version": FORMAT_VERSION,
        "split": str(split), "index": int(index), "id": str(example.id),
        "tools": json.dumps(ToolCatalog.load(example.tools).to_dicts(), ensure_ascii=False),
        "conversation": json.dumps(list(example.conversation), ensure_ascii=False, default=str),
        "gold": json.dumps(calls_to_bfcl(example.gold), ensure_ascii=False),
        "answer": json.dumps(example.answer, ensure_ascii=False) if example.answer is not None else "",
        "category": str(example.category or ""),
    }


@dataclass(frozen=True)
class ExtraInfo:
    """A decoded ``extra_info``. JSON fields hold the decoded value (None: absent, blank or undecodable);
    ``has_tools`` is False only for a row without tools (no key, or null), which is not an error."""

    format_version: int = FORMAT_VERSION
    id: str = ""
    split: str = ""
    index: int | None = None
    has_tools: bool = False
    tools: Any = None
    conversation: Any = None
    gold: list[ToolCall] | None = None
    answer: Any = None
    category: str = ""
    errors: dict[str, str] = field(default_factory=dict)  # field -> why it could not be decoded


def _json(info: Mapping[str, Any], name: str, errors: dict[str, str]) -> Any:
    try:
        return load_json_field(info.get(name), name)
    except CatalogError as err:
        errors[name] = str(err)
        return None


def decode(info: Any) -> ExtraInfo:
    """Read a row's ``extra_info`` (anything: a non-mapping reads as an empty row); see the module docstring."""
    if not isinstance(info, Mapping):
        return ExtraInfo()
    version = info.get("format_version", 1)
    # numbers.Integral: parquet readers may give numpy integers
    if isinstance(version, bool) or not isinstance(version, numbers.Integral) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"extra_info.format_version is {version!r}; this toolrm-rl reads 1 to {FORMAT_VERSION}")
    errors: dict[str, str] = {}
    raw_tools = info.get("tools")
    if isinstance(raw_tools, (str, bytes, bytearray)) and not raw_tools.strip():
        tools, errors["tools"] = None, "tools: a blank string"  # present but empty: nothing can be checked
    else:
        tools = _json(info, "tools", errors)
    gold = _json(info, "gold", errors)
    try:
        gold = calls_from_any(gold) if isinstance(gold, (list, dict)) else None
    except (CatalogError, TypeError, RecursionError) as err:
        gold, errors["gold"] = None, str(err)
    index = info.get("index")
    return ExtraInfo(
        format_version=int(version), id=str(info.get("id") or ""), split=str(info.get("split") or ""),
        index=int(index) if isinstance(index, numbers.Integral) else None, has_tools=raw_tools is not None, tools=tools,
        conversation=_json(info, "conversation", errors), gold=gold, answer=_json(info, "answer", errors),
        category=str(info.get("category") or ""), errors=errors)
