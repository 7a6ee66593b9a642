"""Recipe loading shared by the config dataclasses (training, synthesis, ...): library defaults in
dataclasses whose fields carry help text, <- an OmegaConf YAML recipe <- ``key=value`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, TypeVar

__all__ = ["load_structured"]

T = TypeVar("T")


def load_structured(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """An instance of the dataclass ``schema``: its defaults, merged with the YAML at ``path`` and the
    ``key=value`` overrides. Unknown keys and wrong types are errors naming the key."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(schema)
    if path is not None:
        cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_object(cfg)
