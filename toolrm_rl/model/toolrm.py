"""ToolRM: an outcome reward model over any Hugging Face sequence-classification backbone (one label).

- Decoder backbones (Qwen3, Llama, Granite, ...): the score is read at the last non-pad token (the
  transformers ``*ForSequenceClassification`` rule), with position ids built from the attention mask
  so left and right padding give the same score. A tokenizer without a pad token gets its eos token
  as pad, or a new ``<|pad|>`` token (embeddings resized) when it has no eos either.
- Encoder backbones (BERT family, the embedded MiniLM default): the head reads [CLS]; padding is
  always on the right.

Backbone rule (:func:`backbone_of`): an encoder-decoder config is refused; a config whose
``model_type`` is in :data:`ENCODER_MODEL_TYPES` and that is not ``is_decoder`` is an encoder;
everything else is a decoder.

Every consumer renders inputs the same way because a checkpoint carries ``toolrm.json``
(:mod:`toolrm_rl.core.toolrm_json`, torch-free) with the :class:`RenderSpec` it was trained
with. Scoring renders with :func:`~toolrm_rl.core.render.render_example`, tokenizes, and runs
length-sorted batches under a token budget; results come back in input order and do not depend on
which other inputs share a batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from toolrm_rl.core.io import atomic_write, cache_root, write_json
from toolrm_rl.core.render import RenderedInput, RenderSpec, RMExample, render_example
from toolrm_rl.core.toolrm_json import TOOLRM_JSON, read_toolrm_json, write_toolrm_json

__all__ = ["ENCODER_MODEL_TYPES", "MIN_SHARED_TOKENS", "ToolRM", "backbone_of", "default_render_spec",
           "freeze_lower", "length_batches", "lora_head_modules", "portable_base_model", "save_adapter",
           "QUANTIZE_MODES", "quantize_int8", "linear_input_absmax", "smooth_linear_inputs", "calibration_examples",
           "onnxruntime_int8", "load_onnxruntime_int8", "ort_int8_cache_file"]

log = logging.getLogger(__name__)

ENCODER_MODEL_TYPES = frozenset({
    "bert", "roberta", "xlm-roberta", "xlm-roberta-xl", "distilbert", "albert", "electra", "deberta",
    "deberta-v2", "mpnet", "camembert", "modernbert", "megatron-bert", "roformer", "ernie", "mobilebert",
    "squeezebert", "convbert", "data2vec-text", "longformer", "big_bird", "funnel", "rembert", "nomic_bert",
})
HEAD_MODULE_NAMES = ("score", "classifier")  # decoders (GenericForSequenceClassification), BERT family
PAD_TOKEN = "<|pad|>"
DEFAULT_DECODER_MAX_TOKENS = 2048
# Token budget per forward pass. On CPU the forward is compute-bound already at batch 1 and big
# batches fall out of cache (MiniLM, 2 cores: 2-4K tokens fastest, 16K ~40% slower); GPUs want more.
BATCH_TOKENS = {"cpu": 4096, "other": 32768}
AUTO_PROGRESS_MIN = 256  # show_progress=None: a progress bar above this many inputs
# Group scoring: a shorter shared prefix saves less than its extra forward pass costs.
MIN_SHARED_TOKENS = 16


def backbone_of(config: Any) -> str:
    """``"encoder"`` or ``"decoder"`` for a transformers config (rule in the module docstring)."""
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"encoder-decoder backbones ({config.model_type}) are not supported by ToolRM")
    if config.model_type in ENCODER_MODEL_TYPES and not getattr(config, "is_decoder", False):
        return "encoder"
    return "decoder"


def _model_max_tokens(config: Any, tokenizer: Any) -> int | None:
    """Longest input the model accepts: max positions, capped by a real ``model_max_length``
    (RoBERTa has 514 positions but 512 usable; the tokenizer knows)."""
    limits = [getattr(config.get_text_config(), "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 10**7]  # 1e30 = "no limit" sentinel
    return min(limits) if limits else None


def default_render_spec(config: Any, tokenizer: Any, *,
                        decoder_max_tokens: int = DEFAULT_DECODER_MAX_TOKENS) -> RenderSpec:
    """The RenderSpec for a backbone without ``toolrm.json``.

    Encoder: ``plain``, ``max_tokens`` = the model's max positions, ``sep`` = ``" [SEP] "`` (the
    tokenizer's sep token) when it has one. Decoder: ``chat_template`` with ``decoder_max_tokens``
    (capped by the model's max positions); a tokenizer without a chat template falls back to plain,
    with a warning."""
    limit = _model_max_tokens(config, tokenizer)
    sep = f" {tokenizer.sep_token} " if getattr(tokenizer, "sep_token", None) else "\n"
    if backbone_of(config) == "encoder":
        return RenderSpec(mode="plain", max_tokens=limit or 512, sep=sep)
    max_tokens = min(decoder_max_tokens, limit) if limit else decoder_max_tokens
    if getattr(tokenizer, "chat_template", None):
        return RenderSpec(mode="chat_template", max_tokens=max_tokens)
    warnings.warn(f"{type(tokenizer).__name__} has no chat template: ToolRM falls back to plain rendering "
                  "(candidate first). Give the tokenizer a chat template to render conversations as chats.",
                  stacklevel=3)
    return RenderSpec(mode="plain", max_tokens=max_tokens, sep=sep)


def _ensure_pad_token(tokenizer: Any, config: Any) -> bool:
    """Give the tokenizer a pad token (eos first, else a new ``<|pad|>``) and record its id on the
    config; True when a token was added (the embeddings must then be resized)."""
    added = False
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            added = tokenizer.add_special_tokens({"pad_token": PAD_TOKEN}) > 0
    for cfg in {id(c): c for c in (config, config.get_text_config())}.values():
        cfg.pad_token_id = tokenizer.pad_token_id
    return added


def lora_head_modules(model: Any) -> list[str]:
    """Names of the scalar-head modules to train and save with a LoRA adapter (peft
    ``modules_to_save``): ``["score"]`` for decoders, ``["classifier"]`` for the BERT family."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = [n for n in HEAD_MODULE_NAMES if isinstance(getattr(base, n, None), torch.nn.Module)]
    if not names:
        raise ValueError(f"{type(base).__name__} has no scalar head among {HEAD_MODULE_NAMES}")
    return names


def freeze_lower(model: Any, layers: int) -> int:
    """Stop training the input embeddings and the lowest ``layers`` transformer blocks of ``model`` (any HF
    encoder or decoder with a scalar head); returns how many parameters were frozen.

    Why: on a compute-bound CPU most of a step is the backward pass, and nothing below the lowest trained
    block needs a gradient, so freezing the embeddings and the first blocks cuts each step's cost (MiniLM-L6,
    16 inputs of 170 tokens, ``bench/bench_train_step.py``: 1.04x with the embeddings alone, 1.22x with 2
    blocks, 1.43x with 3). The blocks are the first ``torch.nn.ModuleList`` of the base model with
    ``config.num_hidden_layers`` entries.
    Raises ``ValueError`` when ``layers`` is negative or more than the model has, or no block list is found.
    """
    if layers < 0:
        raise ValueError(f"freeze_layers: expected a block count >= 0, got {layers}")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(base, "base_model", base)
    n_blocks = getattr(body.config, "num_hidden_layers", None)
    blocks = next((m for m in body.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n_blocks), None)
    if blocks is None:
        raise ValueError(f"freeze_layers: no list of {n_blocks} transformer blocks in {type(body).__name__}")
    if layers > len(blocks):
        raise ValueError(f"freeze_layers: {layers} blocks asked, {type(body).__name__} has {len(blocks)}")
    # BERT keeps position/type embeddings and their LayerNorm beside the word embeddings: all of them sit
    # below the first block, so they go too.
    embeddings = getattr(body, "embeddings", None)
    embeddings = embeddings if isinstance(embeddings, torch.nn.Module) else base.get_input_embeddings()
    frozen = 0
    for module in [embeddings, *blocks[:layers]]:
        for param in module.parameters():
            if param.requires_grad:
                param.requires_grad_(False)
                frozen += param.numel()
    return frozen


def keep_lower_blocks(config: Any, layers: int) -> Any:
    """Cut ``config`` (a transformers config, changed in place and returned) to its lowest ``layers``
    transformer blocks: a model loaded with it reads only those blocks' weights and is saved as a plain
    checkpoint of that depth.

    Why: on a CPU a forward and a backward pass cost about in proportion to the block count: a 4-block MiniLM
    trained at 1.47x the 6-block one's tokens/s and ran the 1,500-pair evaluation 1.29x faster in float32 (2.27x
    with ort-int8), at a lower accuracy on BFCL mutation pairs (docs/reward_model.md, "Fewer blocks").
    Decoders' per-block ``layer_types`` lists are cut too. Raises ``ValueError`` for a count below 1 or above
    ``config.num_hidden_layers``.
    """
    total = getattr(config, "num_hidden_layers", None)
    if total is None:
        raise ValueError(f"num_layers: {type(config).__name__} has no num_hidden_layers")
    if not 1 <= layers <= total:
        raise ValueError(f"num_layers: expected 1..{total} blocks, got {layers}")
    config.num_hidden_layers = layers
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:layers]
    return config


def portable_base_model(name_or_path: str | Path | None) -> str | None:
    """The base-model reference an adapter should record: ``embedded:minilm`` for the MiniLM shipped in
    site-packages and ``embedded:smollm2`` for its dequantised cache (an absolute path there would not
    exist on another machine), else unchanged."""
    if name_or_path is None:
        return None
    from toolrm_rl.data.backbones import minilm_dir, smollm2_cache_root  # cheap: path look-ups, no model import

    for name, where in (("embedded:minilm", minilm_dir), ("embedded:smollm2", smollm2_cache_root)):
        try:
            if Path(name_or_path).resolve() == where().resolve():
                return name
        except OSError:  # the package is not installed: nothing to map
            pass
    return str(name_or_path)


def save_adapter(model: Any, directory: str | Path, base_model: str | None = None) -> None:
    """Save a peft model's adapter (LoRA weights and the trained head) with a portable config: the base
    model as ``base_model`` (e.g. the training recipe's ``embedded:minilm`` or hub id; default: the
    loaded path made portable by :func:`portable_base_model`) and ``modules_to_save`` without the
    duplicates peft adds for sequence classification."""
    config = model.peft_config[model.active_adapter]
    saved = (config.base_model_name_or_path, config.modules_to_save)
    config.base_model_name_or_path = portable_base_model(base_model or config.base_model_name_or_path)
    if config.modules_to_save:
        config.modules_to_save = list(dict.fromkeys(config.modules_to_save))
    try:
        model.save_pretrained(str(directory))
    finally:
        config.base_model_name_or_path, config.modules_to_save = saved


def _resolve_base(reference: str) -> Path:
    """An adapter's base-model reference as a loadable path (``embedded:*`` names are built or found)."""
    if reference.startswith("embedded:"):
        from toolrm_rl.data.backbones import resolve_backbone

        return Path(resolve_backbone(reference))
    return Path(reference)


def truncate_ids(ids: list[int], cap: int, mode: str) -> tuple[list[int], bool]:
    """Cut token ids to ``cap`` on the side away from the candidate: the end of a plain text (the
    candidate comes first; the closing special token is kept), the start of a chat-template text
    (the candidate is the last turn). Returns ``(ids, was_cut)``."""
    if len(ids) <= cap:
        return ids, False
    if mode == "plain":
        return ids[:cap - 1] + ids[-1:], True
    return ids[-cap:], True


def _suffix_batches(lengths: Sequence[int], batch_tokens: int, min_fill: float = 0.8) -> list[list[int]]:
    """Batches of candidate suffixes for group scoring: :func:`length_batches`, and a new batch wherever a
    suffix is shorter than ``min_fill`` of its batch's longest (one long candidate must not pad the rest:
    suffixes are short, so padding is most of what a mixed batch would compute)."""
    out: list[list[int]] = []
    for batch in length_batches(lengths, batch_tokens):
        for i in batch:
            if out and out[-1][0] in batch and lengths[i] >= min_fill * lengths[out[-1][0]]:
                out[-1].append(i)
            else:
                out.append([i])
    return out


def length_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Index batches, longest inputs first, each with ``rows * longest <= batch_tokens`` (an input
    longer than the budget gets a batch of its own). Neighbours in length share a batch: little padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _resolve_dtype(dtype: Any, device: str) -> torch.dtype | str:
    if dtype is None:  # float32 on CPU (exact, and bf16 matmuls are slow there); bf16 on accelerators
        return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16
    return getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype


QUANTIZE_MODES = ("none", "int8", "int8-mixed", "ort-int8")
FFN_DOWN_NAMES = ("down_proj", "dense_4h_to_h", "fc2", "wo")  # decoder FFN output projections (BERT: see below)


def _is_ffn_down(name: str) -> bool:
    """Whether a linear layer is a feed-forward output projection (wide input: its activations carry the
    outliers that per-tensor int8 handles worst)."""
    parts = name.split(".")
    return parts[-1] in FFN_DOWN_NAMES or name.endswith("output.dense") and "attention" not in parts


def _cpu_has_vnni() -> bool:
    """True on an x86 CPU with VNNI (int8 dot products accumulate in int32, no int16 saturation)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _stays_float(name: str) -> bool:
    """Whether a linear layer keeps float32 under every int8 scheme: the score head and an encoder's pooler
    read one token, so quantizing them gains no speed."""
    return any(part in HEAD_MODULE_NAMES + ("pooler",) for part in name.split("."))


SMOOTH_ALPHA = 0.85  # share of each input channel's range moved into the weights (SmoothQuant's alpha)


class _InputScaled(torch.nn.Module):
    """``linear(x * inv_scale)``: a linear layer whose weight columns were multiplied by ``1 / inv_scale``
    (the same function in exact arithmetic), so that per-tensor int8 sees inputs without outlier channels."""

    def __init__(self, linear: torch.nn.Module, inv_scale: torch.Tensor) -> None:
        super().__init__()
        self.linear = linear
        self.register_buffer("inv_scale", inv_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inv_scale)


def linear_input_absmax(model: Any, run: Any) -> dict[str, torch.Tensor]:
    """Per-channel max |input| of every ``nn.Linear`` of ``model`` while ``run()`` makes its forward passes
    (calibration for :func:`quantize_int8`'s smoothing); keyed by module name."""
    stats: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(_module: Any, inputs: tuple, _output: Any) -> None:
            x = inputs[0].detach()
            peak = x.reshape(-1, x.shape[-1]).abs().amax(0).float().cpu()
            stats[name] = torch.maximum(stats[name], peak) if name in stats else peak
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return stats


def smooth_linear_inputs(model: Any, input_absmax: dict[str, torch.Tensor], alpha: float = SMOOTH_ALPHA) -> list[str]:
    """Move part of each named linear layer's input range into its weights (float, in place; the model
    computes the same function up to rounding): input channel j is multiplied by ``1 / s_j`` and weight
    column j by ``s_j = absmax_j ** alpha / max|W[:, j]| ** (1 - alpha)``. Each layer is replaced by an
    :class:`_InputScaled` wrapper whose ``linear`` is the original module. Returns the names smoothed."""
    done = []
    for name, absmax in input_absmax.items():
        linear = model.get_submodule(name)
        weight_peak = linear.weight.detach().abs().amax(0).float().clamp(min=1e-5)
        scale = (absmax.to(weight_peak.device).float().clamp(min=1e-5) ** alpha
                 / weight_peak ** (1 - alpha)).clamp(min=1e-5)
        with torch.no_grad():
            linear.weight.mul_(scale.to(linear.weight.dtype))
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, _InputScaled(linear, (1.0 / scale).to(linear.weight.dtype)))
        done.append(name)
    return done


def quantize_int8(model: Any, *, keep_ffn_out: bool = False, input_absmax: dict[str, torch.Tensor] | None = None,
                  smooth_alpha: float = SMOOTH_ALPHA) -> tuple[Any, str]:
    """Dynamic int8 quantization (torch fbgemm) of a model's ``nn.Linear`` layers, for CPU inference.

    Weights become int8 per output channel; activations are quantized per tensor at run time. The
    score head and an encoder's pooler stay float32 (they read one token: no speed to gain), and with
    ``keep_ffn_out`` the feed-forward output projections too (on the MiniLM ToolRM: 1.5x instead of
    1.9x faster, but 8 instead of 21 of 150 dev pairs ordered differently from float32). Returns the
    model (changed in place) and a description of the scheme for reports.

    ``input_absmax`` (from :func:`linear_input_absmax` on calibration inputs) turns on smoothing
    (SmoothQuant, Xiao et al. 2023): each quantized layer's input channel j is divided by
    ``s_j = absmax_j ** alpha / max|W[:, j]| ** (1 - alpha)`` and its weight column multiplied by it,
    so a few outlier channels no longer set the one activation scale of the whole tensor. On two
    12-minute MiniLM ToolRMs (dev file, 850 pairs, the default calibration) it cut the pairs ordered
    differently from float32 from 73 to 43 and from 60 to 37, and the accuracy change from -0.008 to
    -0.006 and from -0.014 to -0.001 (``bench/bench_scoring.py --int8 --calibration 0 16 48``). Alpha
    0.85 was the best of 0.5-1.0 on training-pair calibration (90, 59, 49, 51, 55 flips at 0.5, 0.7,
    0.85, 0.9, 1.0).

    Activations use all 8 bits (torch's default keeps 7 to avoid the int16 saturation of AVX2's
    multiply-add): 7-bit activations lost most of the agreement with float32 on the MiniLM ToolRM
    (Spearman 0.971 vs 0.994 at 8 bits). Without VNNI the weights use 7 bits instead, which makes the
    same saturation impossible (255 * 64 * 2 < 2**15). Scores then depend slightly on which inputs share
    a batch (one activation scale per forward pass)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
    from torch.ao.quantization import PerChannelMinMaxObserver, PlaceholderObserver, QConfig, quantize_dynamic

    class FullRangeLinear(DynamicQuantizedLinear):
        """torch's dynamic int8 linear with 8-bit activations (``reduce_range=False``)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            packed = self._packed_params._packed_params
            return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False).to(x.dtype)

    weight_max = 127 if _cpu_has_vnni() else 63
    qconfig = QConfig(
        activation=PlaceholderObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                  quant_min=-weight_max - 1, quant_max=weight_max))
    names = {name: qconfig for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
             and not _stays_float(name) and not (keep_ffn_out and _is_ffn_down(name))}
    smoothed = smooth_linear_inputs(model, {n: input_absmax[n] for n in names if n in input_absmax},
                                    smooth_alpha) if input_absmax else []
    names = {f"{n}.linear" if n in smoothed else n: qconfig for n in names}
    with warnings.catch_warnings():  # torch.ao's deprecation notices: the kernels are what we measured
        warnings.simplefilter("ignore")
        quantize_dynamic(model, names, dtype=torch.qint8, mapping={torch.nn.Linear: FullRangeLinear}, inplace=True)
    details = ", feed-forward outputs float32" if keep_ffn_out else ""
    details += f", {len(smoothed)} layers smoothed (alpha {smooth_alpha})" if smoothed else ""
    bits = 8 if weight_max == 127 else 7
    return model, f"int8 dynamic (fbgemm, weights per channel {bits}-bit, activations 8-bit{details})"


class _OrtSession:
    """An ONNX Runtime session standing in for an encoder's forward pass: ``(ids, mask)`` -> scores."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        return torch.from_numpy(out).reshape(len(ids)).float()


def _ort_cpu_session(path: str, threads: int | None) -> Any:
    """An ONNX Runtime CPU session of the model file ``path``: ``threads`` intra-op threads (default: torch's),
    one inter-op thread, errors only in its log."""
    import onnxruntime as ort  # the "onnx" extra

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnxruntime_int8(model: Any, *, input_absmax: dict[str, torch.Tensor] | None = None,
                     smooth_alpha: float = SMOOTH_ALPHA, threads: int | None = None,
                     cache_file: str | Path | None = None) -> tuple[_OrtSession, str]:
    """An encoder ToolRM as an ONNX Runtime int8 session (the ``"ort-int8"`` mode of :meth:`ToolRM.quantize`).

    A float32 copy of ``model`` has its feed-forward layers smoothed as in :func:`quantize_int8` (when
    ``input_absmax`` is given), is exported to ONNX (opset 17, eager attention), fused by
    ``onnxruntime.transformers.optimizer`` (attention, layer norms, GELU) and quantized by ``onnxruntime.quantization.quantize_dynamic`` (weights int8 per output channel,
    activations uint8 per tensor at run time; the score head and the pooler stay float32). ``model`` is
    not changed. ``threads``: ONNX Runtime's intra-op threads (default: torch's). ``cache_file``: also keep the
    int8 model there (written atomically, with its description beside it in ``<file>.json``), for
    :func:`load_onnxruntime_int8`. Returns the session and a description of the scheme.

    Why both paths exist, measured on one AMD EPYC with AVX2 and no VNNI (2 threads, the quickstart model,
    ``bench/bench_scoring.py --int8 --n 1700``: the dev file's 850 pairs, one process): torch float32 66.5 s;
    torch int8 (fbgemm, 7-bit weights without VNNI, smoothed) 1.22x, 55 pairs ordered differently from
    float32, accuracy -0.013; this path 1.48x, 47 flips, -0.006. In a 1,500-pair evaluation (``--eval``)
    1.47x against torch int8's 1.21x (dev accuracy +0.015 against -0.011: int8 activation scales are per
    batch, so which inputs share a batch moves scores). Smoothing every layer (a multiply in front of
    query/key/value stops the attention fusion) was 1.08x slower with the same 47 flips; ONNX Runtime in
    float32, fused, was only 1.07x faster than torch; 7-bit weights (``reduce_range``) were slower and less
    accurate. Conversion costs ~13 s; :meth:`ToolRM.quantize` keeps the result in a per-machine cache."""
    import copy
    import tempfile

    import onnxruntime as ort  # the "onnx" extra
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    if backbone_of(model.config) != "encoder":
        raise ValueError("ort-int8 runs encoder backbones only (decoders: quantize='int8')")
    work = copy.deepcopy(model).float().eval()
    # Only the feed-forward layers are smoothed: a multiply in front of query/key/value or the attention output
    # stops ONNX Runtime's attention fusion (1.08x slower on the dev file, the same 47 flips of 850).
    smoothed = smooth_linear_inputs(work, {n: a for n, a in input_absmax.items()
                                           if "attention" not in n and not _stays_float(n)},
                                    smooth_alpha) if input_absmax else []
    if hasattr(work, "set_attn_implementation"):
        work.set_attn_implementation("eager")  # the exporter traces eager attention into plain ONNX ops
    ids = torch.full((2, 16), min(1000, work.config.vocab_size - 1), dtype=torch.long)
    cfg = work.config.get_text_config()
    not_cached: OSError | None = None
    logging.disable(logging.WARNING)  # the quantizer's root-logger advice and the fusion's notes, on every call
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's tracer warnings about shape-dependent branches
            raw, fused, int8 = (os.path.join(tmp, f"{n}.onnx") for n in ("raw", "fused", "int8"))
            torch.onnx.export(work, (ids, torch.ones_like(ids)), raw, input_names=["input_ids", "attention_mask"],
                              output_names=["logits"], opset_version=17, dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                            "attention_mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}})
            opt = optimizer.optimize_model(raw, model_type="bert", num_heads=cfg.num_attention_heads,
                                           hidden_size=cfg.hidden_size)
            opt.save_model_to_file(fused)
            keep_float = [n.name for n in opt.model.graph.node  # ONNX names: "/bert/pooler/dense/Gemm", ...
                          if _stays_float(n.name.strip("/").replace("/", "."))]
            quantize_dynamic(fused, int8, weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul", "Attention"], nodes_to_exclude=keep_float,
                             extra_options={"DefaultTensorType": 1})  # 1: float, for the fused ops' outputs
            session = _ort_cpu_session(int8, threads)
            details = f", {len(smoothed)} layers smoothed (alpha {smooth_alpha})" if smoothed else ""
            description = (f"int8 dynamic (onnxruntime {ort.__version__}, weights per channel 8-bit, "
                           f"activations 8-bit{details})")
            if cache_file is not None:  # the model first: the description's presence marks a complete entry
                try:
                    atomic_write(cache_file, lambda tmp: shutil.copyfile(int8, tmp))
                    write_json(f"{cache_file}.json", {"format": ORT_CACHE_FORMAT, "description": description})
                except OSError as err:  # a read-only or full cache costs the next load time, never this one
                    not_cached = err
    finally:
        logging.disable(logging.NOTSET)
    if not_cached is not None:  # warned here: the conversion above silences warnings
        warnings.warn(f"ort-int8 conversion not cached ({not_cached}); set TOOLRM_CACHE to a writable folder",
                      stacklevel=2)
    return _OrtSession(session), description


ORT_CACHE_FORMAT = 1  # bump when the conversion changes what it writes: older entries are then not used


def load_onnxruntime_int8(cache_file: str | Path, *, threads: int | None = None) -> tuple[_OrtSession, str]:
    """The session and description that :func:`onnxruntime_int8` kept in ``cache_file``. Raises ``OSError``
    or ``ValueError`` when the entry is missing, incomplete, of another format, or not a readable model."""
    meta = json.loads(Path(f"{cache_file}.json").read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != ORT_CACHE_FORMAT or not isinstance(meta.get("description"), str):
        raise ValueError(f"{cache_file}.json: not a format-{ORT_CACHE_FORMAT} ort-int8 cache entry")
    try:
        session = _ort_cpu_session(str(cache_file), threads)
    except Exception as err:  # onnxruntime raises its own exception types for a damaged file
        raise ValueError(f"{cache_file}: not a readable ONNX model ({err})") from err
    return _OrtSession(session), meta["description"]


def ort_int8_cache_file(model: Any, calibration_texts: Sequence[str], smooth_alpha: float = SMOOTH_ALPHA) -> Path:
    """Where the ort-int8 conversion of ``model`` calibrated on ``calibration_texts`` is cached:
    ``cache_root("ort-int8")/<key>.onnx``, the key a hash of everything the conversion reads (the weights, the
    calibration inputs as rendered, the smoothing strength, the library versions, :data:`ORT_CACHE_FORMAT`),
    so a changed model or calibration set never reads a stale entry."""
    import onnxruntime as ort
    import transformers

    digest = hashlib.blake2b(digest_size=20)
    for part in (ORT_CACHE_FORMAT, torch.__version__, transformers.__version__, ort.__version__, smooth_alpha,
                 type(model).__name__, len(calibration_texts)):
        digest.update(f"{part}\x00".encode())
    for text in calibration_texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
    for name, tensor in model.state_dict().items():
        t = tensor.detach().float().contiguous().cpu()
        digest.update(f"{name}:{tuple(t.shape)}\x00".encode())
        digest.update(t.numpy().tobytes())
    return cache_root("ort-int8") / f"{digest.hexdigest()}.onnx"


# Each with its gold call and without a call: 96 inputs, a few seconds on 2 CPU cores. 16 did as well on
# accuracy (same 0.7435 on the dev file) with a few more flips (43 against 37 of 850).
CALIBRATION_EXAMPLES = 48


def calibration_examples(n: int = CALIBRATION_EXAMPLES) -> list[RMExample]:
    """``n`` examples spread over bfcl-eval's executable set (a training source, never the benchmark),
    each answered with its gold calls and with no call: the default calibration of :meth:`ToolRM.quantize`.
    Empty (with a warning) when bfcl-eval is not installed: the model is then quantized without smoothing."""
    from toolrm_rl.data.sources import bfcl_exec_examples

    try:
        source = list(bfcl_exec_examples())
    except (ImportError, OSError) as err:
        warnings.warn(f"int8 calibration set unavailable ({err}): quantizing without smoothing", stacklevel=2)
        return []
    picked = source[::max(1, len(source) // n)][:n]
    return [RMExample(ex.tools, ex.conversation, calls) for ex in picked for calls in (ex.gold, [])]


class ToolRM:
    """A scalar reward model for tool calls: a transformers sequence-classification model with one
    label, its tokenizer and the :class:`RenderSpec` that turns an :class:`RMExample` into text.

    :param model: an ``AutoModelForSequenceClassification`` model (``num_labels=1``), optionally a
        peft model with a LoRA adapter.
    :param tokenizer: its tokenizer; a pad token is added when missing (see the module docstring).
        Its truncation side is set to right in plain mode and its padding side to right for encoders.
    :param render_spec: how inputs are rendered; default :func:`default_render_spec`.
    """

    def __init__(self, model: Any, tokenizer: Any, render_spec: RenderSpec | None = None, *,
                 decoder_max_tokens: int = DEFAULT_DECODER_MAX_TOKENS) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.config = model.config
        if self.config.num_labels != 1:
            raise ValueError(f"ToolRM needs a single-label head, got num_labels={self.config.num_labels}")
        self.backbone = backbone_of(self.config)
        if _ensure_pad_token(tokenizer, self.config) and len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        self.render_spec = render_spec or default_render_spec(self.config, tokenizer,
                                                              decoder_max_tokens=decoder_max_tokens)
        self.max_length = _model_max_tokens(self.config, tokenizer)
        if self.render_spec.mode == "plain":
            tokenizer.truncation_side = "right"  # plain puts the candidate first: a cut only loses the tail
        if self.backbone == "encoder":
            tokenizer.padding_side = "right"  # absolute positions and [CLS] pooling assume it
        self._warned_trailing_pad = False
        self._warned_cut = False
        self.quantization = "none"  # set by quantize(): reports record it
        self._session: _OrtSession | None = None  # quantize("ort-int8"): ONNX Runtime runs the forward passes
        # score(group=True): inputs scored against a shared prefix, and inputs that fell back to independent scoring
        self.group_stats = {"groups": 0, "shared_inputs": 0, "independent_inputs": 0}

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu", dtype: Any = None,
                        render_spec: RenderSpec | None = None, adapter: str | Path | None = None,
                        decoder_max_tokens: int = DEFAULT_DECODER_MAX_TOKENS, quantize: str = "none",
                        num_layers: int | None = None) -> ToolRM:
        """Load a ToolRM checkpoint, a plain sequence-classification checkpoint, or a causal-LM
        checkpoint (a fresh scalar head is added), optionally with a LoRA ``adapter`` directory.

        The render spec is, in order: ``render_spec``; the adapter's then the base's ``toolrm.json``;
        :func:`default_render_spec`. ``dtype``: None means float32 on CPU, bfloat16 elsewhere; a
        ``torch.dtype``, its name, or ``"auto"`` (the checkpoint's). ``path`` may be an ``embedded:*``
        backbone name (:func:`~toolrm_rl.data.backbones.resolve_backbone`). A ``path`` holding only an adapter
        (``adapter_config.json``, no ``config.json``) loads the base model the adapter names.
        ``quantize``: ``"none"``, ``"int8"`` or ``"int8-mixed"`` (see :meth:`quantize`). ``num_layers``: keep only
        the lowest N transformer blocks of the checkpoint (:func:`keep_lower_blocks`; None: all of them)."""
        if str(path).startswith("embedded:"):  # a backbone name: embedded:minilm, embedded:smollm2, ...
            path = _resolve_base(str(path))
        path = Path(path)
        if adapter is None and (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
            adapter = path
            path = _resolve_base(json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"])
        tok_dir = adapter if adapter is not None and (Path(adapter) / "tokenizer_config.json").is_file() else path
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        config = AutoConfig.from_pretrained(str(path))
        config.num_labels = 1
        if num_layers is not None:
            keep_lower_blocks(config, num_layers)
        added = _ensure_pad_token(tokenizer, config)  # before loading: the head reads config.pad_token_id
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(path), config=config, dtype=_resolve_dtype(dtype, device), output_loading_info=True)
        fresh = [k for k in info.get("missing_keys", ()) if k.split(".")[0] not in HEAD_MODULE_NAMES]
        if fresh:  # an adapter restores only its own modules: these stay random on every load
            warnings.warn(f"{path}: weights outside the head were newly initialized: {sorted(fresh)[:8]}", stacklevel=2)
        if added and len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        saved = (read_toolrm_json(adapter) if adapter is not None else None) or read_toolrm_json(path)
        if adapter is not None:
            from peft import PeftModel  # imported only when needed: peft is slow to import

            model = PeftModel.from_pretrained(model, str(adapter))
        if render_spec is None and saved is not None:
            render_spec = RenderSpec.from_dict(saved["render"])
            if saved["backbone"] != backbone_of(config):
                warnings.warn(f"{TOOLRM_JSON} says backbone {saved['backbone']!r}, the config says "
                              f"{backbone_of(config)!r}; the config wins", stacklevel=2)
        model.to(device).eval()
        rm = cls(model, tokenizer, render_spec, decoder_max_tokens=decoder_max_tokens)
        return rm.quantize(quantize) if quantize != "none" else rm

    @property
    def is_adapter(self) -> bool:
        """True while the model is a peft model (call :meth:`merge` for a plain checkpoint)."""
        return hasattr(self.model, "merge_and_unload")

    def merge(self) -> PreTrainedModel:
        """Merge a LoRA adapter (and its trained head) into the base weights; returns the plain
        model, which also replaces ``self.model``. A no-op without an adapter."""
        if self.is_adapter:
            self.model = self.model.merge_and_unload()
        return self.model

    def quantize(self, mode: str = "int8", calibration: Sequence[RMExample] | None = None, *,
                 cache: bool = True) -> ToolRM:
        """Quantize for CPU scoring (in place; returns self): ``"int8"`` is :func:`quantize_int8` after
        merging a LoRA adapter, ``"int8-mixed"`` the same with the feed-forward output projections left in
        float32 (slower, closer to float32), ``"ort-int8"`` (encoders; the ``onnx`` extra) the smoothed int8 model
        run by ONNX Runtime (:func:`onnxruntime_int8`: faster and closer to float32 than torch's kernels on AVX2
        CPUs without VNNI), ``"none"`` does nothing. A quantized model only scores: it cannot be
        trained or saved, and it runs on CPU only. :attr:`quantization` describes the scheme.

        ``calibration``: examples whose float32 forward passes measure each layer's input range for
        smoothing; None: :func:`calibration_examples` (gold calls of bfcl-eval's executable set, a
        training source); empty: no smoothing. ``cache`` (``"ort-int8"``): reuse the conversion of the same
        weights and calibration from the per-machine cache (:func:`ort_int8_cache_file`; ~13 s saved on each
        load of a MiniLM ToolRM), and keep a new one there."""
        if mode not in QUANTIZE_MODES:
            raise ValueError(f"quantize: expected one of {QUANTIZE_MODES}, got {mode!r}")
        if mode == "none" or self.quantization != "none":
            return self
        if self.device.type != "cpu":
            raise ValueError(f"quantize={mode!r} runs on CPU only; the model is on {self.device}")
        if mode == "ort-int8" and self.backbone != "encoder":
            raise ValueError("quantize='ort-int8' runs encoder backbones only; use 'int8' for a decoder")
        self.merge()
        self.model = self.model.float()
        examples = calibration_examples() if calibration is None else list(calibration)
        cache_file = (ort_int8_cache_file(self.model, [self.render(e).text for e in examples])
                      if mode == "ort-int8" and cache else None)
        if cache_file is not None and Path(f"{cache_file}.json").is_file():
            try:  # the float model stays (device, merge); the session does the forward passes
                self._session, self.quantization = load_onnxruntime_int8(cache_file)
                return self
            except (OSError, ValueError) as err:
                warnings.warn(f"ort-int8 cache entry unusable, converting again: {err}", stacklevel=2)
        absmax = (linear_input_absmax(self.model, lambda: self.score(examples, show_progress=False))
                  if examples else None)
        if mode == "ort-int8":
            self._session, self.quantization = onnxruntime_int8(self.model, input_absmax=absmax,
                                                                cache_file=cache_file)
        else:
            self.model, self.quantization = quantize_int8(self.model, keep_ffn_out=mode == "int8-mixed",
                                                          input_absmax=absmax)
        return self

    def save_pretrained(self, path: str | Path) -> None:
        """Write the model (safetensors; the adapter only, for a peft model), the tokenizer (with its
        chat template) and ``toolrm.json``. A plain model reloads with
        ``AutoModelForSequenceClassification.from_pretrained(path)``."""
        if self.quantization != "none":
            raise ValueError(f"a quantized ToolRM ({self.quantization}) cannot be saved: save the float model")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.is_adapter:
            save_adapter(self.model, path)
        else:
            self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))
        write_toolrm_json(path, self.render_spec, self.backbone)

    # ------------------------------------------------------------------ scoring
    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    def render(self, example: RMExample) -> RenderedInput:
        """Render one example with this model's RenderSpec and tokenizer."""
        return render_example(example, spec=self.render_spec, tokenizer=self.tokenizer)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of rendered texts, as scoring and training must see them (one rule for both).

        The cap is ``RenderSpec.hard_cap_tokens`` and the model's limit, whichever is smaller. Only
        inputs the renderer could not fit (or hostile, very long candidates) exceed it; they are cut away from the candidate (see
        :func:`truncate_ids`) with a one-time warning, never with an error (an RL reward must score)."""
        plain = self.render_spec.mode == "plain"
        limits = [n for n in (self.max_length, self.render_spec.hard_cap_tokens) if n]
        cap = min(limits) if limits else None
        ids = self.tokenizer(list(texts), add_special_tokens=plain, verbose=False)["input_ids"]
        if cap is not None and any(len(row) > cap for row in ids):
            if not self._warned_cut:
                self._warned_cut = True
                warnings.warn(f"inputs over {cap} tokens after the renderer's cuts are truncated away from the "
                              "candidate", stacklevel=2)
            ids = [truncate_ids(row, cap, self.render_spec.mode)[0] for row in ids]
        pad = self.tokenizer.pad_token_id
        if self.backbone == "decoder" and not self._warned_trailing_pad and any(r and r[-1] == pad for r in ids):
            self._warned_trailing_pad = True  # still padding-invariant, but not the literal last token
            warnings.warn("an input ends with the pad token: the score is read at the last token that is "
                          "not the pad token, as transformers does", stacklevel=3)
        return ids

    def _forward(self, rows: list[list[int]]) -> torch.Tensor:
        """Scores (float32, CPU) of one batch of token id lists."""
        width, pad = max(map(len, rows)), self.tokenizer.pad_token_id
        left = self.backbone == "decoder" and self.tokenizer.padding_side == "left"
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[r, span] = torch.tensor(row, dtype=torch.long)
            mask[r, span] = 1
        if self._session is not None:  # quantize("ort-int8"): an encoder, so ids and mask are all it reads
            return self._session(ids, mask)
        inputs = {"input_ids": ids, "attention_mask": mask}
        if self.backbone == "decoder":  # positions count real tokens only: left padding must not shift them
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        device = self.device
        logits = self.model(**{k: v.to(device) for k, v in inputs.items()}).logits
        return logits.reshape(len(rows)).float().cpu()

    def score_texts(self, texts: Sequence[str], *, batch_tokens: int | None = None,
                    show_progress: bool | None = None, cache: dict[str, float] | None = None) -> list[float]:
        """Scores of pre-rendered texts, in input order (identical texts are scored once).

        :param batch_tokens: token budget per forward pass (rows x longest row); None: 4096 on CPU,
            32768 on other devices.
        :param show_progress: a tqdm bar; None shows it above ~256 texts.
        :param cache: text -> score, read and filled: texts already in it are not scored again. Only
            for a model whose weights no longer change (the caller owns and bounds it)."""
        if not texts:
            return []
        if cache is not None and all(t in cache for t in texts):
            return [cache[t] for t in texts]
        if batch_tokens is None:
            batch_tokens = BATCH_TOKENS["cpu" if self.device.type == "cpu" else "other"]
        unique = [t for t in dict.fromkeys(texts) if cache is None or t not in cache]
        ids = self.encode(unique)
        show = len(unique) > AUTO_PROGRESS_MIN if show_progress is None else show_progress
        scores = [math.nan] * len(unique)
        was_training = self.model.training
        self.model.eval()  # dropout off: deterministic scores
        try:
            with torch.inference_mode(), tqdm(total=len(unique), desc="ToolRM scoring", unit="input",
                                              disable=not show) as bar:
                for batch in length_batches([len(r) for r in ids], batch_tokens):
                    for i, s in zip(batch, self._forward([ids[i] for i in batch]).tolist()):
                        scores[i] = s
                    bar.update(len(batch))
        finally:
            self.model.train(was_training)  # scoring during training must not switch dropout off
        by_text = dict(zip(unique, scores))
        if cache is not None:
            cache.update(by_text)
            by_text = cache
        return [by_text[t] for t in texts]

    def score(self, examples: Sequence[RMExample], *, batch_tokens: int | None = None,
              show_progress: bool | None = None, cache: dict[str, float] | None = None,
              group: bool = False) -> list[float]:
        """Scores of examples (rendered with this model's RenderSpec), in input order; ``cache`` as
        in :meth:`score_texts`. ``group=True`` (decoder backbones): candidates whose rendered context
        is byte-identical are scored against one shared prefix (:meth:`score_groups`)."""
        texts, contexts, over = [], [], 0
        for i, ex in enumerate(examples):
            try:
                rendered = self.render(ex)
            except Exception as err:
                if hasattr(err, "add_note"):
                    err.add_note(f"while rendering example {i}")
                raise
            texts.append(rendered.text)
            contexts.append(rendered.context)
            over += not rendered.truncation.fits
        if over:
            warnings.warn(f"{over} of {len(texts)} inputs exceed RenderSpec.max_tokens={self.render_spec.max_tokens} "
                          "after every allowed cut", stacklevel=2)
        if group and self.backbone == "decoder":
            return self._score_grouped(texts, contexts, batch_tokens, show_progress, cache)
        return self.score_texts(texts, batch_tokens=batch_tokens, show_progress=show_progress, cache=cache)

    def score_groups(self, groups: Sequence[Sequence[RMExample]], *, batch_tokens: int | None = None,
                     show_progress: bool | None = None) -> list[list[float]]:
        """Scores of groups of candidates for one prompt each (a GRPO group, a Best-of-N set).

        Decoder backbones: the candidates' shared token prefix (the tool catalog and the conversation,
        rendered byte-identically for every candidate of a prompt) runs once with the KV cache, and the
        candidates' suffixes run batched against it; each score is read at its suffix's last non-pad token,
        as in independent scoring (equal within float tolerance, any padding side). Candidates whose rendered
        context differs, a shared prefix under ``MIN_SHARED_TOKENS`` tokens, or encoder backbones are
        scored independently (``group_stats`` counts both)."""
        flat = self.score([ex for g in groups for ex in g], batch_tokens=batch_tokens, show_progress=show_progress,
                          group=True)
        out, pos = [], 0
        for g in groups:
            out.append(flat[pos:pos + len(g)])
            pos += len(g)
        return out

    def score_rendered(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None, *,
                       batch_tokens: int | None = None, show_progress: bool | None = None,
                       cache: dict[str, float] | None = None) -> list[float]:
        """Scores of texts rendered by :meth:`render`, in input order (the scoring server's entry point).

        :param contexts: each text's ``RenderedInput.context``, or None for a text to score on its own
            (e.g. a pre-rendered ``/classify`` input). A decoder scores the texts of one context against
            their shared prefix, as :meth:`score` does with ``group=True``; encoders, or no contexts at
            all, score every text independently (:meth:`score_texts`).
        :param cache: as in :meth:`score_texts`."""
        if len(texts) != len(contexts if contexts is not None else texts):
            raise ValueError(f"score_rendered: {len(texts)} texts but {len(contexts)} contexts")
        if self.backbone != "decoder" or contexts is None or all(c is None for c in contexts):
            return self.score_texts(texts, batch_tokens=batch_tokens, show_progress=show_progress, cache=cache)
        return self._score_grouped(list(texts), list(contexts), batch_tokens, show_progress, cache)

    def _score_grouped(self, texts: list[str], contexts: list[str | None], batch_tokens: int | None,
                       show_progress: bool | None, cache: dict[str, float] | None) -> list[float]:
        """:meth:`score` with ``group=True``: texts bucketed by their rendered context (a None context is a
        bucket of its own); buckets of two or more scored against their shared prefix, the rest (and
        fallbacks) by :meth:`score_texts`."""
        if batch_tokens is None:
            batch_tokens = BATCH_TOKENS["cpu" if self.device.type == "cpu" else "other"]
        buckets: dict[Any, dict[str, None]] = {}
        for text, context in zip(texts, contexts):
            if cache is None or text not in cache:  # ordered set: identical texts scored once
                buckets.setdefault(context if context is not None else (None, text), {})[text] = None
        groups = [list(members) for members in buckets.values() if len(members) > 1]
        rest = [t for members in buckets.values() if len(members) == 1 for t in members]
        scores: dict[str, float] = {}
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                got = self._shared_prefix_scores([self.encode(g) for g in groups], batch_tokens) if groups else []
        finally:
            self.model.train(was_training)
        for members, group_scores in zip(groups, got):
            if group_scores is None:
                rest += members
            else:
                scores.update(zip(members, group_scores))
                self.group_stats["groups"] += 1
                self.group_stats["shared_inputs"] += len(members)
        self.group_stats["independent_inputs"] += len(rest)
        if rest:
            scores.update(zip(rest, self.score_texts(rest, batch_tokens=batch_tokens, show_progress=show_progress)))
        if cache is not None:
            cache.update(scores)
            scores = cache
        return [scores[t] for t in texts]

    def _shared_prefix_scores(self, groups: list[list[list[int]]], batch_tokens: int) -> list[list[float] | None]:
        """Scores of groups of token rows, each group's rows sharing a prefix: the prefixes of several groups
        in one forward pass (right-padded) that fills their KV cache, then the suffixes of all their rows
        batched against it (each row reading its group's cache). None for a group whose shared prefix is
        too short, or one of whose rows has its score token (the last non-pad token) inside the prefix."""
        pad = self.tokenizer.pad_token_id
        out: list[list[float] | None] = [None] * len(groups)
        plans: list[tuple[int, int]] = []  # (group, shared prefix length)
        for g, rows in enumerate(groups):
            shared = min(len(os.path.commonprefix(rows)), min(map(len, rows)) - 1)  # each row keeps a suffix token
            if shared >= MIN_SHARED_TOKENS and not any(all(t == pad for t in row[shared:]) for row in rows):
                plans.append((g, shared))
        device, left = self.device, self.tokenizer.padding_side == "left"
        for chunk in length_batches([shared for _, shared in plans], batch_tokens):
            members = [plans[i] for i in chunk]
            width = max(shared for _, shared in members)
            ids = torch.full((len(members), width), pad, dtype=torch.long)
            prefix_mask = torch.zeros((len(members), width), dtype=torch.long)
            for k, (g, shared) in enumerate(members):
                ids[k, :shared] = torch.tensor(groups[g][0][:shared], dtype=torch.long)
                prefix_mask[k, :shared] = 1
            prefix = self.model(input_ids=ids.to(device), attention_mask=prefix_mask.to(device), use_cache=True,
                                position_ids=(prefix_mask.cumsum(-1) - 1).clamp(min=0).to(device))
            past = getattr(prefix, "past_key_values", None)
            layers = getattr(past, "layers", None)
            if not layers or any(type(layer).__name__ != "DynamicLayer" for layer in layers):
                continue  # another cache kind (sliding windows, offloading): independent scoring
            saved = [(layer.keys, layer.values) for layer in layers]
            rows = [(k, g, shared, row[shared:]) for k, (g, shared) in enumerate(members) for row in groups[g]]
            scores = {g: [math.nan] * len(groups[g]) for g, _ in members}
            position = {g: 0 for g, _ in members}
            slots = []
            for _, g, _, _ in rows:
                slots.append(position[g])
                position[g] += 1
            for batch in _suffix_batches([len(r[3]) for r in rows], batch_tokens):
                suffix_width = max(len(rows[i][3]) for i in batch)
                suffix_ids = torch.full((len(batch), suffix_width), pad, dtype=torch.long)
                suffix_mask = torch.zeros((len(batch), suffix_width), dtype=torch.long)
                for r, i in enumerate(batch):
                    suffix = rows[i][3]
                    begin = suffix_width - len(suffix) if left else 0
                    suffix_ids[r, begin:begin + len(suffix)] = torch.tensor(suffix, dtype=torch.long)
                    suffix_mask[r, begin:begin + len(suffix)] = 1
                owner = torch.tensor([rows[i][0] for i in batch], dtype=torch.long)
                shared = torch.tensor([[rows[i][2]] for i in batch], dtype=torch.long)
                positions = shared + suffix_mask.cumsum(-1) - 1  # real tokens continue their prefix's positions
                index = owner.to(device)
                for layer, (keys, values) in zip(layers, saved):  # each row reads its group's prefix; the
                    layer.keys, layer.values = keys.index_select(0, index), values.index_select(0, index)  # forward
                logits = self.model(  # appends to these copies, never to the saved prefix
                    input_ids=suffix_ids.to(device), use_cache=True, past_key_values=past,
                    attention_mask=torch.cat([prefix_mask[owner], suffix_mask], dim=1).to(device),
                    position_ids=positions.to(device)).logits
                for i, score in zip(batch, logits.reshape(len(batch)).float().cpu().tolist()):
                    scores[rows[i][1]][slots[i]] = score
            for g, _ in members:
                out[g] = scores[g]
        return out

    def score_pairs(self, pairs: Sequence[tuple[RMExample, RMExample]], *, batch_tokens: int | None = None,
                    show_progress: bool | None = None) -> list[tuple[float, float]]:
        """``(score(a), score(b))`` per pair, all examples batched together."""
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError("score_pairs: every pair must hold exactly two examples")
        flat = self.score([ex for pair in pairs for ex in pair], batch_tokens=batch_tokens, show_progress=show_progress)
        return list(zip(flat[0::2], flat[1::2]))
