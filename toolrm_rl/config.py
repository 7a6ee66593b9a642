"""Recipe loading shared by the config dataclasses (training, synthesis, ...): library defaults in
dataclasses whose fields carry help text, <- an OmegaConf YAML recipe <- ``key=value`` overrides."""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any, Sequence, TypeVar

__all__ = ["load_structured", "option", "wandb_offline_without_credentials"]

T = TypeVar("T")


def option(default: Any, help: str) -> Any:
    """A dataclass field with ``help`` text in its metadata (lists and dicts get a fresh copy per instance).

    >>> from dataclasses import dataclass, fields
    >>> @dataclass
    ... class C:
    ...     n: int = option(3, "How many.")
    ...     xs: list = option([1], "Which.")
    >>> C().xs is not C().xs, fields(C)[0].metadata["help"]
    (True, 'How many.')
    """
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def load_structured(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                    values: dict[str, Any] | None = None) -> T:
    """An instance of the dataclass ``schema``: its defaults, merged with the YAML at ``path``, the
    ``key=value`` overrides, then ``values`` (e.g. the CLI flags that were given). Unknown keys and
    wrong types are errors naming the key."""
    import json

    from omegaconf import OmegaConf

    overrides = list(overrides) + [f"{key}={json.dumps(value)}" for key, value in (values or {}).items()]

    cfg = OmegaConf.structured(schema)
    if path is not None:
        cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_object(cfg)


def wandb_offline_without_credentials() -> None:
    """Set ``WANDB_MODE=offline`` when there is no wandb API key or ``~/.netrc`` and the user chose no
    mode: runs then go to a local directory (``wandb sync`` uploads them later) instead of failing."""
    import os

    has_key = os.environ.get("WANDB_API_KEY") or (Path.home() / ".netrc").exists()
    if not has_key and os.environ.get("WANDB_MODE") is None:
        os.environ["WANDB_MODE"] = "offline"
