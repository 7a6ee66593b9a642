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
(:func:`write_toolrm_json` / :func:`read_toolrm_json`) with the :class:`RenderSpec` it was trained
with. Scoring renders with :func:`~toolrm_rl.core.render.render_example`, tokenizes, and runs
length-sorted batches under a token budget; results come back in input order and do not depend on
which other inputs share a batch.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from toolrm_rl import __version__
from toolrm_rl.core.render import RenderedInput, RenderSpec, RMExample, render_example

__all__ = ["ENCODER_MODEL_TYPES", "TOOLRM_JSON", "ToolRM", "backbone_of", "default_render_spec",
           "length_batches", "lora_head_modules", "portable_base_model", "read_toolrm_json", "save_adapter",
           "write_toolrm_json"]

log = logging.getLogger(__name__)

TOOLRM_JSON = "toolrm.json"
FORMAT_VERSION = 1
BACKBONES = ("encoder", "decoder")
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


def portable_base_model(name_or_path: str | Path | None) -> str | None:
    """The base-model reference an adapter should record: ``embedded:minilm`` for the MiniLM shipped in
    site-packages and ``embedded:smollm2`` for its dequantised cache (an absolute path there would not
    exist on another machine), else unchanged."""
    if name_or_path is None:
        return None
    from toolrm_rl.model.backbones import minilm_dir, smollm2_cache_root  # cheap: path look-ups, no model import

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
        from toolrm_rl.model.backbones import resolve_backbone

        return Path(resolve_backbone(reference))
    return Path(reference)


def write_toolrm_json(directory: str | Path, render_spec: RenderSpec | dict[str, Any], backbone: str) -> Path:
    """Write ``toolrm.json`` (format version, backbone, render spec, package version) into ``directory``."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone: expected one of {BACKBONES}, got {backbone!r}")
    spec = render_spec if isinstance(render_spec, RenderSpec) else RenderSpec.from_dict(render_spec)
    path = Path(directory) / TOOLRM_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format_version": FORMAT_VERSION, "backbone": backbone, "render": spec.to_dict(),
            "toolrm_rl_version": __version__}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def read_toolrm_json(directory: str | Path) -> dict[str, Any] | None:
    """The validated ``toolrm.json`` of ``directory`` as a dict (``render`` stays a dict: rebuild it
    with ``RenderSpec.from_dict``), or None when there is none. Raises ``ValueError`` on a newer
    format version or a bad backbone/render entry."""
    path = Path(directory) / TOOLRM_JSON
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    version = data.get("format_version") if isinstance(data, dict) else None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {version!r} (this version reads <= {FORMAT_VERSION})")
    if data.get("backbone") not in BACKBONES:
        raise ValueError(f"{path}: backbone must be one of {BACKBONES}, got {data.get('backbone')!r}")
    RenderSpec.from_dict(data.get("render", {}))  # raises on a malformed spec, naming the field
    return data


def truncate_ids(ids: list[int], cap: int, mode: str) -> tuple[list[int], bool]:
    """Cut token ids to ``cap`` on the side away from the candidate: the end of a plain text (the
    candidate comes first; the closing special token is kept), the start of a chat-template text
    (the candidate is the last turn). Returns ``(ids, was_cut)``."""
    if len(ids) <= cap:
        return ids, False
    if mode == "plain":
        return ids[:cap - 1] + ids[-1:], True
    return ids[-cap:], True


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

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu", dtype: Any = None,
                        render_spec: RenderSpec | None = None, adapter: str | Path | None = None,
                        decoder_max_tokens: int = DEFAULT_DECODER_MAX_TOKENS) -> ToolRM:
        """Load a ToolRM checkpoint, a plain sequence-classification checkpoint, or a causal-LM
        checkpoint (a fresh scalar head is added), optionally with a LoRA ``adapter`` directory.

        The render spec is, in order: ``render_spec``; the adapter's then the base's ``toolrm.json``;
        :func:`default_render_spec`. ``dtype``: None means float32 on CPU, bfloat16 elsewhere; a
        ``torch.dtype``, its name, or ``"auto"`` (the checkpoint's). ``path`` may be an ``embedded:*``
        backbone name (:func:`~toolrm_rl.model.backbones.resolve_backbone`). A ``path`` holding only an adapter
        (``adapter_config.json``, no ``config.json``) loads the base model the adapter names."""
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
        return cls(model, tokenizer, render_spec, decoder_max_tokens=decoder_max_tokens)

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

    def save_pretrained(self, path: str | Path) -> None:
        """Write the model (safetensors; the adapter only, for a peft model), the tokenizer (with its
        chat template) and ``toolrm.json``. A plain model reloads with
        ``AutoModelForSequenceClassification.from_pretrained(path)``."""
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
              show_progress: bool | None = None, cache: dict[str, float] | None = None) -> list[float]:
        """Scores of examples (rendered with this model's RenderSpec), in input order; ``cache`` as
        in :meth:`score_texts`."""
        texts, over = [], 0
        for i, ex in enumerate(examples):
            try:
                rendered = self.render(ex)
            except Exception as err:
                if hasattr(err, "add_note"):
                    err.add_note(f"while rendering example {i}")
                raise
            texts.append(rendered.text)
            over += not rendered.truncation.fits
        if over:
            warnings.warn(f"{over} of {len(texts)} inputs exceed RenderSpec.max_tokens={self.render_spec.max_tokens} "
                          "after every allowed cut", stacklevel=2)
        return self.score_texts(texts, batch_tokens=batch_tokens, show_progress=show_progress, cache=cache)

    def score_pairs(self, pairs: Sequence[tuple[RMExample, RMExample]], *, batch_tokens: int | None = None,
                    show_progress: bool | None = None) -> list[tuple[float, float]]:
        """``(score(a), score(b))`` per pair, all examples batched together."""
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError("score_pairs: every pair must hold exactly two examples")
        flat = self.score([ex for pair in pairs for ex in pair], batch_tokens=batch_tokens, show_progress=show_progress)
        return list(zip(flat[0::2], flat[1::2]))
