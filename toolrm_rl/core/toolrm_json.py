"""A checkpoint's ``toolrm.json``: the render spec and backbone kind it was trained with.

The one module that reads and writes the file. It is torch-free, so the verl reward and the remote
scorer read a checkpoint's render spec without the model layer. Format (``format_version`` 1)::

    {"format_version": 1, "backbone": "encoder" | "decoder", "render": {RenderSpec fields},
     "toolrm_rl_version": "0.1.0"}

A file written by a newer format, or with a bad field, is refused with a ``ValueError`` naming the
file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolrm_rl import __version__
from toolrm_rl.core.io import write_json
from toolrm_rl.core.render import RenderSpec

__all__ = ["BACKBONES", "FORMAT_VERSION", "TOOLRM_JSON", "read_render_spec", "read_toolrm_json", "write_toolrm_json"]

TOOLRM_JSON = "toolrm.json"
FORMAT_VERSION = 1
BACKBONES = ("encoder", "decoder")


def write_toolrm_json(directory: str | Path, render_spec: RenderSpec | dict[str, Any], backbone: str) -> Path:
    """Write ``toolrm.json`` (format version, backbone, render spec, package version) into ``directory``,
    atomically; returns its path. Raises ``ValueError`` for a backbone outside :data:`BACKBONES`."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone: expected one of {BACKBONES}, got {backbone!r}")
    spec = render_spec if isinstance(render_spec, RenderSpec) else RenderSpec.from_dict(render_spec)
    data = {"format_version": FORMAT_VERSION, "backbone": backbone, "render": spec.to_dict(),
            "toolrm_rl_version": __version__}
    return write_json(Path(directory) / TOOLRM_JSON, data, indent=2)


def read_toolrm_json(directory: str | Path) -> dict[str, Any] | None:
    """The validated ``toolrm.json`` of ``directory`` as a dict (``render`` stays a dict: see
    :func:`read_render_spec`), or None when there is none.

    Raises ``ValueError`` naming the file and the field: not a JSON object, a ``format_version`` that is
    not an integer from 1 to :data:`FORMAT_VERSION`, a ``backbone`` outside :data:`BACKBONES`, a
    ``render`` entry that is not a valid :class:`~toolrm_rl.core.render.RenderSpec`.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = write_toolrm_json(d, RenderSpec(mode="plain", max_tokens=512), "encoder")
    >>> read_toolrm_json(d)["backbone"], read_render_spec(d).max_tokens
    ('encoder', 512)
    """
    path = Path(directory) / TOOLRM_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"{path}: field format_version is {version!r}; this toolrm-rl reads format_version 1 to "
                         f"{FORMAT_VERSION} (a newer toolrm-rl wrote it, or the file is not a toolrm.json)")
    if data.get("backbone") not in BACKBONES:
        raise ValueError(f"{path}: field backbone must be one of {BACKBONES}, got {data.get('backbone')!r}")
    render = data.get("render", {})
    try:
        RenderSpec.from_dict(render)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: field render: {err}") from None
    return data


def read_render_spec(directory: str | Path) -> RenderSpec | None:
    """The :class:`~toolrm_rl.core.render.RenderSpec` recorded in ``directory``'s ``toolrm.json``, or None
    when there is no such file; errors as :func:`read_toolrm_json`."""
    data = read_toolrm_json(directory)
    return None if data is None else RenderSpec.from_dict(data.get("render", {}))
