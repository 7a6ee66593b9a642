"""Reward models: :class:`~toolrm_rl.model.toolrm.ToolRM` (load, score, save, LoRA) over transformers.

This layer imports torch and transformers; it may import :mod:`toolrm_rl.core` and
:mod:`toolrm_rl.data`, never the CLI, evaluation or verl layers.
"""

from toolrm_rl.model.toolrm import (
    ENCODER_MODEL_TYPES,
    TOOLRM_JSON,
    ToolRM,
    backbone_of,
    default_render_spec,
    length_batches,
    lora_head_modules,
    read_toolrm_json,
    write_toolrm_json,
)

__all__ = [
    "ENCODER_MODEL_TYPES", "TOOLRM_JSON", "ToolRM", "backbone_of", "default_render_spec", "length_batches",
    "lora_head_modules", "read_toolrm_json", "write_toolrm_json",
]
