"""Recipe loading shared by the config dataclasses (training, synthesis, ...): library defaults in
dataclasses whose fields carry help text, <- an OmegaConf YAML recipe <- ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Any, Sequence, TypeVar

__all__ = ["load_structured", "option", "wandb_offline_without_credentials"]

T = TypeVar("T")


def option(default: Any, help: str, *, passthrough: bool = False) -> Any:
    """A dataclass field with ``help`` text in its metadata (lists and dicts get a fresh copy per instance).

    ``passthrough`` (a dict field, at most one per dataclass): :func:`load_structured` gathers here the keys
    of the dataclass's section that name none of its fields, for a library's own config to take (and check),
    as ``train:`` does for TRL's ``RewardConfig``.

    >>> from dataclasses import dataclass, fields
    >>> @dataclass
    ... class C:
    ...     n: int = option(3, "How many.")
    ...     xs: list = option([1], "Which.")
    >>> C().xs is not C().xs, fields(C)[0].metadata["help"]
    (True, 'How many.')
    """
    metadata = {"help": help, **({"passthrough": True} if passthrough else {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def load_structured(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                    values: dict[str, Any] | None = None) -> T:
    """An instance of the dataclass ``schema``: its defaults, merged with the YAML at ``path``, the
    ``key=value`` overrides, then ``values`` (e.g. the CLI flags that were given). Unknown keys and
    wrong types are errors naming the key, except in a section with a ``passthrough`` field (see :func:`option`)."""
    import json

    from omegaconf import OmegaConf

    overrides = list(overrides) + [f"{key}={json.dumps(value)}" for key, value in (values or {}).items()]

    cfg = OmegaConf.structured(schema)
    if path is not None:
        cfg = OmegaConf.merge(cfg, _gather_passthrough(schema, OmegaConf.load(path)))
    if overrides:
        cfg = OmegaConf.merge(cfg, _gather_passthrough(schema, OmegaConf.from_dotlist(list(overrides))))
    return OmegaConf.to_object(cfg)


def _gather_passthrough(schema: Any, node: Any) -> Any:
    """``node`` (a YAML or key=value layer for the dataclass ``schema``) with each section's keys that name no
    field of its dataclass moved into that dataclass's ``passthrough`` field, when it has one."""
    from omegaconf import DictConfig

    if not (dataclasses.is_dataclass(schema) and isinstance(node, DictConfig)):
        return node
    fields = {f.name: f for f in dataclasses.fields(schema)}
    rest = next((f.name for f in fields.values() if f.metadata.get("passthrough")), None)
    for key in list(node.keys()):
        if key in fields:  # a nested config section: its own fields decide
            _gather_passthrough(fields[key].default_factory, node[key])
        elif rest is not None:
            if node.get(rest) is None:
                node[rest] = {}
            node[rest][key] = node[key]
            del node[key]
    return node


def wandb_offline_without_credentials() -> None:
    """Set ``WANDB_MODE=offline`` when there is no wandb API key or ``~/.netrc`` and the user chose no
    mode: runs then go to a local directory (``wandb sync`` uploads them later) instead of failing."""
    import os

    has_key = os.environ.get("WANDB_API_KEY") or (Path.home() / ".netrc").exists()
    if not has_key and os.environ.get("WANDB_MODE") is None:
        os.environ["WANDB_MODE"] = "offline"
