"""Obfuscation of tool examples: consistent random renaming of functions and parameters, schema key shuffling.

As in the ToolRM paper's data pipeline, a reward model trained on renamed tools cannot lean on
memorised API names: it has to read the schema. One seeded :class:`ObfuscationMap` per example renames
every function and top-level parameter in the catalog, in the conversation (earlier assistant
``tool_calls``, ``tool`` messages and whole-word mentions in message text), in the gold calls and in the
BFCL possible answer, and shuffles the order of schema properties and of keys in schema dicts. The map
is kept, so calls written against the renamed catalog are mapped back with :func:`deobfuscate_calls`.
"""

from __future__ import annotations

import copy
import json
import random
import re
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

from toolrm_rl.core.calls import ToolCall, ToolCatalog, ToolSpec
from toolrm_rl.core.example import ToolExample

__all__ = ["ObfuscationMap", "obfuscate", "deobfuscate_calls", "random_identifier"]

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"


def random_identifier(rng: random.Random, taken: set[str], words: int = 2) -> str:
    """A plausible identifier of ``words`` pronounceable lowercase chunks joined by ``_``
    (``"vobe_kitaru"``), never one in ``taken`` (the new name is added to it)."""
    while True:
        parts = ["".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.randint(2, 3)))
                 for _ in range(words)]
        name = "_".join(parts)
        if name not in taken:
            taken.add(name)
            return name


@dataclass
class ObfuscationMap:
    """Original -> obfuscated names: ``functions[f]`` and ``params[f][p]`` (keyed by the original function)."""

    functions: dict[str, str] = field(default_factory=dict)
    params: dict[str, dict[str, str]] = field(default_factory=dict)

    def from_original(self, calls: list[ToolCall]) -> list[ToolCall]:
        """Rename calls written against the original catalog (unknown names are kept)."""
        return [ToolCall(self.functions.get(c.name, c.name),
                         {self.params.get(c.name, {}).get(k, k): copy.deepcopy(v) for k, v in c.arguments.items()})
                for c in calls]

    def to_original(self, calls: list[ToolCall]) -> list[ToolCall]:
        """Map calls written against the obfuscated catalog back to the original names."""
        names = {v: k for k, v in self.functions.items()}
        out = []
        for c in calls:
            original = names.get(c.name, c.name)
            back = {v: k for k, v in self.params.get(original, {}).items()}
            out.append(ToolCall(original, {back.get(k, k): copy.deepcopy(v) for k, v in c.arguments.items()}))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored next to obfuscated records so model outputs can be mapped back)."""
        return {"functions": dict(self.functions), "params": {f: dict(p) for f, p in self.params.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ObfuscationMap":
        """Inverse of :meth:`to_dict`."""
        return cls(dict(data.get("functions") or {}), {f: dict(p) for f, p in (data.get("params") or {}).items()})


def deobfuscate_calls(calls: list[ToolCall], mapping: ObfuscationMap | dict) -> list[ToolCall]:
    """Calls against an obfuscated catalog, with the original function and parameter names."""
    if isinstance(mapping, dict):
        mapping = ObfuscationMap.from_dict(mapping)
    return mapping.to_original(calls)


def _shuffled(d: dict, rng: random.Random) -> dict:
    keys = list(d)
    rng.shuffle(keys)
    return {k: d[k] for k in keys}


def _shuffle_schema(schema: Any, rng: random.Random) -> Any:
    """The same schema with the order of keys (and of ``properties``) shuffled at every level."""
    if isinstance(schema, list):
        return [_shuffle_schema(s, rng) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in _shuffled(schema, rng).items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {k: _shuffle_schema(v, rng) for k, v in _shuffled(value, rng).items()}
        elif key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf"):
            out[key] = _shuffle_schema(value, rng)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _rename_spec(spec: ToolSpec, mapping: ObfuscationMap, rng: random.Random) -> ToolSpec:
    renames = mapping.params.get(spec.name, {})
    params = copy.deepcopy(spec.parameters)
    props = params.get("properties")
    if isinstance(props, dict):
        params["properties"] = {renames.get(k, k): v for k, v in props.items()}
    if isinstance(params.get("required"), list):
        params["required"] = [renames.get(r, r) if isinstance(r, str) else r for r in params["required"]]
    return ToolSpec(mapping.functions.get(spec.name, spec.name), spec.description, _shuffle_schema(params, rng),
                    spec.dialect)


def _name_pattern(names: list[str]) -> re.Pattern | None:
    # only distinctive names (``get_weather``, ``math.factorial``, ``sendEmail``): ``cd`` or ``sort`` in
    # prose are ordinary words
    distinctive = [n for n in names if len(n) >= 4 and (re.search(r"[_.]", n) or re.search(r"[a-z][A-Z]", n))]
    if not distinctive:
        return None
    alternatives = "|".join(re.escape(n) for n in sorted(distinctive, key=len, reverse=True))
    return re.compile(rf"(?<![\w.])({alternatives})(?![\w])")


def _rename_message(message: dict, mapping: ObfuscationMap, pattern: re.Pattern | None) -> dict:
    out = dict(message)
    if pattern is not None and isinstance(out.get("content"), str):
        out["content"] = pattern.sub(lambda m: mapping.functions[m.group(1)], out["content"])
    if out.get("role") == "tool" and isinstance(out.get("name"), str):
        out["name"] = mapping.functions.get(out["name"], out["name"])
    if isinstance(out.get("tool_calls"), list):
        calls = []
        for item in out["tool_calls"]:
            item = copy.deepcopy(item)
            fn = item.get("function", item) if isinstance(item, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                original = fn["name"]
                fn["name"] = mapping.functions.get(original, original)
                args = fn.get("arguments")
                decoded = json.loads(args) if isinstance(args, str) and args.strip().startswith("{") else args
                if isinstance(decoded, dict):
                    renames = mapping.params.get(original, {})
                    decoded = {renames.get(k, k): v for k, v in decoded.items()}
                    fn["arguments"] = json.dumps(decoded, ensure_ascii=False) if isinstance(args, str) else decoded
            calls.append(item)
        out["tool_calls"] = calls
    return out


def obfuscate(example: ToolExample, seed: int = 0) -> tuple[ToolExample, ObfuscationMap]:
    """A renamed, schema-shuffled copy of ``example`` and the map back to the original names.

    Args:
        example: the example to rename (not modified).
        seed: with the example id, decides every name and order: the same seed gives the same output.

    Returns:
        ``(obfuscated example, ObfuscationMap)``; the copy's id gets an ``@obf<seed>`` suffix and its
        ``meta["obfuscation"]`` holds :meth:`ObfuscationMap.to_dict`.
    """
    rng = random.Random(zlib.crc32(f"{seed}:{example.id}".encode()))
    mapping = ObfuscationMap()
    taken: set[str] = set()
    # functions called but absent from the catalog (a wrong gold) keep a consistent new name too
    names = list(dict.fromkeys(example.tools.names() + [c.name for c in example.gold]))
    for name in names:
        mapping.functions[name] = random_identifier(rng, taken, words=rng.choice((2, 2, 3)))
        spec = example.tools.get(name)
        params = list(spec.properties) if spec else []
        params += [k for c in example.gold if c.name == name for k in c.arguments if k not in params]
        taken_params: set[str] = set()
        mapping.params[name] = {p: random_identifier(rng, taken_params, words=rng.choice((1, 2))) for p in params}
    catalog = ToolCatalog(_rename_spec(spec, mapping, rng) for spec in example.tools)
    pattern = _name_pattern(names)
    conversation = [_rename_message(m, mapping, pattern) for m in example.conversation]
    answer = None
    if example.answer is not None:
        answer = []
        for item in example.answer:
            (name, params), = item.items()
            renames = mapping.params.get(name, {})
            answer.append({mapping.functions.get(name, name): {renames.get(k, k): copy.deepcopy(v) for k, v in params.items()}})
    meta = {**example.meta, "obfuscation": mapping.to_dict(), "original_id": example.id}
    renamed = replace(example, id=f"{example.id}@obf{seed}", conversation=conversation, tools=catalog,
                      gold=mapping.from_original(example.gold), answer=answer, meta=meta)
    return renamed, mapping
