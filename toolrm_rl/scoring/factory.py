"""The one way to build scorers from configuration: the registry :data:`SCORERS`, :func:`build_scorer` and
:func:`build_scorers`. Every command, the quickstart, the server and the verl reward build theirs here.

One configuration shape, the same in every recipe:

- ``scorer`` (one) or ``scorers`` (several, each its own column): a backend name, or
  ``{name, label?, model?, options?}``;
- ``model``: the ToolRM checkpoint of ``rm`` and ``hybrid`` (other backends ignore it);
- ``scorer_options``: options by backend name, e.g. ``{rm: {device: cuda, quantize: int8}, hybrid: {mode:
  weighted}, judge: {base_url: ..., model: ...}}``, given to the backend's constructor; an entry's own
  ``options`` override them. ``hybrid`` wraps an ``rm`` scorer built with the ``rm`` options (its own keys
  outside :data:`HYBRID_OPTIONS` go to that RM too), so ``rm`` and ``hybrid`` of one checkpoint share one
  loaded model and its score cache.

Backends: ``rules``, ``rm``, ``hybrid`` (:mod:`toolrm_rl.scoring.rules`, :mod:`toolrm_rl.scoring.rm`),
``judge``, ``hf-rm`` and ``remote`` (imported on use: :mod:`~toolrm_rl.scoring.judge`,
:mod:`~toolrm_rl.scoring.hf_rm`, :mod:`~toolrm_rl.scoring.remote`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from toolrm_rl.scoring.protocol import Scorer
from toolrm_rl.scoring.rm import HybridScorer, RMScorer
from toolrm_rl.scoring.rules import RulesScorer

__all__ = ["HYBRID_OPTIONS", "MODEL_SCORERS", "SCORERS", "build_scorer", "build_scorers", "get_scorer"]

MODEL_SCORERS = ("rm", "hybrid")  # the backends that load the recipe's `model` checkpoint
HYBRID_OPTIONS = frozenset(f.name for f in dataclasses.fields(HybridScorer))  # the rest goes to its RM
_CHECKPOINT_GIVEN = frozenset({"path", "model", "rm"})  # options that already say which reward model to use


def _hybrid(rm: Scorer | None = None, **options: Any) -> HybridScorer:
    own = {k: options.pop(k) for k in list(options) if k in HYBRID_OPTIONS}
    return HybridScorer(rm=rm if rm is not None else RMScorer(**options), **own)


def _judge(**options: Any) -> Scorer:
    from toolrm_rl.scoring.judge import JudgeScorer  # imported on use: an optional backend (httpx)

    return JudgeScorer(**options)


def _hf_rm(**options: Any) -> Scorer:
    from toolrm_rl.scoring.hf_rm import HFRewardModelScorer  # imported on use: torch and transformers

    return HFRewardModelScorer(**options)


def _remote(**options: Any) -> Scorer:
    from toolrm_rl.scoring.remote import RemoteScorer  # imported on use: the server client (httpx)

    return RemoteScorer(**options)


#: Backend name -> constructor taking the scorer's options as keywords.
SCORERS: dict[str, Callable[..., Scorer]] = {
    "rules": RulesScorer,
    "rm": RMScorer,
    "hybrid": _hybrid,
    "judge": _judge,
    "hf-rm": _hf_rm,
    "remote": _remote,
}


def build_scorer(name: str, model: str | None = None, options: Mapping[str, Any] | None = None) -> Scorer:
    """One scorer: backend ``name`` with ``options`` (its constructor's keywords). ``model`` is the ToolRM
    checkpoint of ``rm`` and ``hybrid`` (unless ``options`` already give ``path``, a loaded ``model`` or an
    ``rm`` scorer) and is ignored by the other backends. Raises ``ValueError`` for an unknown name.

    >>> build_scorer("rules", "any/checkpoint").name, build_scorer("hybrid", options={"rm": build_scorer("rules")}).mode
    ('rules', 'gate')
    """
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; available: {sorted(SCORERS)}")
    options = dict(options or {})
    if name in MODEL_SCORERS and model is not None and not _CHECKPOINT_GIVEN & options.keys():
        options["path"] = str(model)
    return SCORERS[name](**options)


def get_scorer(name: str, **options: Any) -> Scorer:
    """:func:`build_scorer` with the options as keywords (for Python callers):
    ``get_scorer("rm", path=CKPT, device="cuda")``."""
    return build_scorer(name, options=options)


def _options_by_name(scorer_options: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    out = {}
    for key, value in (scorer_options or {}).items():
        if key not in SCORERS:
            raise ValueError(f"scorer_options.{key}: not a scorer name; scorer_options maps a scorer name "
                             f"({', '.join(sorted(SCORERS))}) to its options, e.g. scorer_options.rm.device=cuda")
        if not isinstance(value, Mapping):
            raise ValueError(f"scorer_options.{key}: expected a mapping of options, got {type(value).__name__}")
        out[key] = dict(value)
    return out


def _entry(i: int, entry: Any) -> dict[str, Any]:
    spec = {"name": entry} if isinstance(entry, str) else dict(entry) if isinstance(entry, Mapping) else None
    if not spec or not isinstance(spec.get("name"), str):
        raise ValueError(f"scorers[{i}]: expected a scorer name or {{name, label?, model?, options?}}, got {entry!r}")
    unknown = sorted(set(spec) - {"name", "label", "model", "options"})
    if unknown:
        raise ValueError(f"scorers[{i}]: unknown key(s) {unknown}")
    if not isinstance(spec.get("options") or {}, Mapping):
        raise ValueError(f"scorers[{i}].options: expected a mapping, got {type(spec['options']).__name__}")
    return spec


def build_scorers(entries: Sequence[Any], model: str | None = None,
                  scorer_options: Mapping[str, Any] | None = None) -> dict[str, Scorer]:
    """A recipe's scorers by label, in entry order (see the module docstring for the shape).

    :param entries: backend names, or ``{name, label?, model?, options?}`` (``label`` defaults to the
        name; ``model`` to the recipe's).
    :param model: the recipe's ToolRM checkpoint for ``rm`` and ``hybrid``.
    :param scorer_options: ``{backend name: options}``; an entry's ``options`` override them.
    :returns: ``{label: scorer}``; ``rm`` and ``hybrid`` entries of one checkpoint with the same RM options
        share one :class:`~toolrm_rl.scoring.rm.RMScorer`. Raises ``ValueError`` naming the entry or key.
    """
    defaults = _options_by_name(scorer_options)
    out: dict[str, Scorer] = {}
    shared: dict[tuple[str, str], Scorer] = {}
    for i, entry in enumerate(entries):
        spec = _entry(i, entry)
        name, label = spec["name"], str(spec.get("label") or spec["name"])
        if name not in SCORERS:
            raise ValueError(f"scorers[{i}]: unknown scorer {name!r}; available: {sorted(SCORERS)}")
        if label in out:
            raise ValueError(f"scorers[{i}]: label {label!r} is taken (give each a distinct `label`)")
        options = {**defaults.get(name, {}), **(spec.get("options") or {})}
        checkpoint = spec.get("model") or model
        if name not in MODEL_SCORERS or _CHECKPOINT_GIVEN & options.keys():
            out[label] = build_scorer(name, checkpoint, options)
            continue
        if not checkpoint:
            raise ValueError(f"scorers[{i}]: scorer {name!r} needs a ToolRM checkpoint (model=PATH, --model)")
        if name == "hybrid":
            options = {**defaults.get("rm", {}), **options}
        rm_options = {k: v for k, v in options.items() if name == "rm" or k not in HYBRID_OPTIONS}
        key = (str(checkpoint), repr(sorted(rm_options.items())))
        if key not in shared:
            shared[key] = build_scorer("rm", checkpoint, rm_options)
        out[label] = shared[key] if name == "rm" else build_scorer(
            "hybrid", options={**{k: v for k, v in options.items() if k in HYBRID_OPTIONS}, "rm": shared[key]})
    return out
