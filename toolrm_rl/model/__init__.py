"""Reward models: :class:`~toolrm_rl.model.toolrm.ToolRM` (load, score, save, LoRA) over transformers.

This layer imports torch and transformers; it may import :mod:`toolrm_rl.core` and
:mod:`toolrm_rl.data`, never the layers above it (``tests/test_layers.py``). A checkpoint's
``toolrm.json`` is read and written by :mod:`toolrm_rl.core.toolrm_json`.
"""

from toolrm_rl.model.toolrm import (
    ENCODER_MODEL_TYPES,
    ToolRM,
    backbone_of,
    default_render_spec,
    length_batches,
    lora_head_modules,
)

__all__ = ["ENCODER_MODEL_TYPES", "ToolRM", "backbone_of", "default_render_spec", "length_batches", "lora_head_modules"]
