"""Train ToolRM: a scalar sequence-classification reward model with a Bradley-Terry loss and the
reward-centering term, on TRL's ``RewardTrainer`` (with the group loss of :mod:`toolrm_rl.model.group`
by default: a query's chosen answer and all its negatives in one forward pass).

    toolrm train recipes/rm/minilm_cpu.yaml [key=value ...]

The recipe is an OmegaConf YAML whose keys mirror :class:`RMTrainConfig` (defaults live there); under
``train:`` any field of TRL's ``RewardConfig`` is passed through (:class:`TrainSettings`).
Pairs come from offline sources (mutation negatives, verified) and/or pair files (FC-RewardBench or
ToolRM-train-data schema). Inputs are rendered by the core renderer within the token budget and
tokenized here, so TRL's silent ``max_length`` filter never applies and no pair is dropped: an input
still too long after the renderer's cuts is hard-truncated on the side away from the candidate
(end of a plain, candidate-first text; start of a chat-template text) and counted in the report.
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from toolrm_rl.config import option as _f
from toolrm_rl.config import wandb_offline_without_credentials
from toolrm_rl.core.io import write_json
from toolrm_rl.core.render import RenderSpec, render_example
from toolrm_rl.data.records import PairRecord

log = logging.getLogger(__name__)

__all__ = ["ModelConfig", "DataConfig", "LoraSettings", "TrainSettings", "TRL_DEFAULTS", "RMTrainConfig",
           "load_config", "build_pairs", "tokenize_pairs", "reward_config", "train", "TrainResult", "checkpoint_problem",
           "last_complete_checkpoint"]


@dataclass
class ModelConfig:
    name_or_path: str = _f("embedded:minilm", "Backbone: a local HF checkpoint, a hub id, or embedded:minilm / embedded:qwen3-tiny.")
    dtype: str = _f("auto", "Weights dtype: auto (float32 weights; mixed precision comes from train.bf16), bfloat16, float16.")
    render: dict = _f({}, "RenderSpec overrides (mode, max_tokens, sep, ...); defaults depend on the backbone kind.")
    num_layers: int | None = _f(None, "Keep only the lowest N transformer blocks of the backbone "
                                      "(toolrm_rl.model.toolrm.keep_lower_blocks): training and scoring cost "
                                      "about N/total as much; the saved model is a plain checkpoint of N blocks. "
                                      "None: every block.")


@dataclass
class DataConfig:
    sources: list = _f(["bfcl_exec", "bfcl_sql", "bfcl_multi_turn", "nestful"], "Offline sources turned into mutation pairs (toolrm_rl.data.sources).")
    train_files: list = _f([], "Pair files (jsonl/json/parquet/arrow dir or hub id) in FC-RewardBench or ToolRM-train-data schema.")
    eval_files: list = _f([], "Extra held-out pair files evaluated during training (never BFCL dev/test data you report on).")
    negatives_per_example: int = _f(3, "Mutation negatives per source example (the paper keeps at most 3).")
    schema_valid_share: float = _f(0.7, "Target share of mutation negatives that pass the schema rules (the hard ones).")
    eval_fraction: float = _f(0.05, "Share of source examples held out (split by example, so no query is in both).")
    file_eval_fraction: float | None = _f(None, "Share of the queries in train_files held out for evaluation (split "
                                                "by query; obfuscated copies of a query stay on its side). None: "
                                                "eval_fraction when no eval_files are given, else 0.")
    max_train_pairs: int | None = _f(None, "Cap on training pairs after shuffling (None: all).")
    source_temperature: float | None = _f(None, "How max_train_pairs draws from the sources (PairRecord.source): a "
                                                "source with n pairs gets a share of about n**T (1 or None: in "
                                                "proportion to n, a uniform draw; 0: every source alike; 0.5: "
                                                "large sources subsampled, small ones drawn whole). Without a cap "
                                                "every pair is kept and only the order changes.")
    max_eval_pairs: int | None = _f(None, "Cap on held-out pairs after shuffling (None: all); evaluation costs time too.")
    skip_bad_rows: bool = _f(False, "Count and skip malformed rows in pair files instead of failing.")
    seed: int = _f(0, "Seed for pair synthesis, splits and shuffling.")


@dataclass
class LoraSettings:
    enabled: bool = _f(False, "Train LoRA adapters (plus the full score head) instead of all weights.")
    r: int = _f(16, "LoRA rank.")
    alpha: int = _f(32, "LoRA alpha.")
    dropout: float = _f(0.05, "LoRA dropout.")
    target_modules: Any = _f("all-linear", "Modules to adapt (peft syntax).")
    merge: bool = _f(True, "Also save a merged plain-HF checkpoint at the end (what transformers/vLLM load).")


# The project's defaults for TRL RewardConfig fields where they differ from TRL's; every other field keeps
# TRL's (and transformers') default.
TRL_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 1.0,             # one epoch; on a CPU the time budget (max_minutes) usually ends it first
    "learning_rate": 5e-5,
    "warmup_ratio": 0.05,
    "per_device_eval_batch_size": 16,
    "center_rewards_coefficient": 0.01,  # eta in eta*(r+ + r-)^2: keeps rewards near 0 for RL use
    "gradient_checkpointing": False,     # TRL turns it on; small backbones train faster without
    "save_steps": 200,
    "save_total_limit": 2,
}
# RewardConfig fields that train() sets itself, and what decides them.
_SET_BY_TRAIN = {"eval_strategy": "train.eval_steps", "train_sampling_strategy": "train.group_by_length",
                 "max_length": "model.render (inputs are rendered within the model's budget, never filtered)",
                 "disable_dropout": "reward training (always on)", "use_cpu": "whether CUDA is available",
                 "dataloader_pin_memory": "whether CUDA is available"}


@dataclass
class TrainSettings:
    """ToolRM's own training settings. Every other key under ``train:`` is a field of TRL's ``RewardConfig``
    (transformers' ``TrainingArguments`` plus TRL's reward options), gathered into ``trl`` and given to
    ``RewardConfig`` as it is: ``train.learning_rate``, ``train.per_device_train_batch_size``, ...
    """

    output_dir: str = _f("runs/toolrm", "Where checkpoints, the final model (final/) and metrics.json go.")
    max_minutes: float | None = _f(None, "Wall-clock budget for the training loop; stops cleanly and saves when reached.")
    loss: str = _f("group", "group: a query's chosen answer and all its negatives in one forward pass (the chosen "
                            "input once; toolrm_rl.model.group); pairwise: TRL's loss, one (chosen, rejected) pair per row. "
                            "Both are the same Bradley-Terry loss with centering on a one-negative group. A batch "
                            "row (per_device_train_batch_size) is a group or a pair accordingly.")
    head_learning_rate: float | None = _f(None, "Learning rate of the fresh score head (None: learning_rate); a "
                                                "higher one leaves the ln 2 plateau sooner.")
    margin: float | None = _f(None, "Optional constant margin m in -log sigmoid(r+ - r- - m).")
    freeze_layers: int | None = _f(None, "Freeze the input embeddings and the lowest N transformer blocks "
                                         "(toolrm_rl.model.toolrm.freeze_lower): a shorter backward pass, more "
                                         "steps in a time budget on a CPU. None: train every weight; 0: all but the "
                                         "embeddings. Ignored with LoRA (the base is frozen there already).")
    ema_decay: float | None = _f(None, "Save an exponential moving average of the weights (toolrm_rl.model.ema) "
                                       "instead of the last step's: spans ~1/(1-decay) steps after warm-up; "
                                       "None: the last step's weights.")
    group_by_length: bool = _f(True, "Batch rows of similar length together (transformers' LengthGroupedSampler over "
                                     "megabatches of 50 batches): less padding, more pairs per minute on a CPU.")
    bf16: bool | None = _f(None, "bf16 mixed precision (None: on when a CUDA GPU supports it).")
    eval_steps: int | None = _f(100, "Evaluate held-out pairs every N steps (None: only at the end).")
    resume: bool = _f(True, "Resume from the newest complete checkpoint in output_dir when there is one "
                            "(metrics.json then counts the whole run).")
    report_to: str = _f("wandb", "wandb (offline automatically without credentials), tensorboard, or none.")
    push_to_hub: bool = _f(False, "Push the final model to hub_model_id once, at the end.")
    hub_model_id: str | None = _f(None, "Hub repo id for push_to_hub.")
    seed: int = _f(42, "Training seed: the fresh score head's initialisation and the Trainer's.")
    trl: dict = _f(TRL_DEFAULTS, "Fields of TRL's RewardConfig, passed through: every key under train: that is not "
                                 "a setting above lands here (learning_rate, num_train_epochs, max_steps, "
                                 "warmup_ratio, weight_decay, per_device_train_batch_size, "
                                 "gradient_accumulation_steps, center_rewards_coefficient, logging_steps, save_steps, "
                                 "run_name, deepspeed, fsdp, ...; help: trl.RewardConfig). Defaults: TRL's, except "
                                 "TRL_DEFAULTS.", passthrough=True)

    def __post_init__(self) -> None:
        _check_trl_fields(self.trl)


def _check_trl_fields(settings: dict[str, Any]) -> None:
    """Every key a field of TRL's ``RewardConfig`` that :func:`train` does not set itself, and every scalar
    value of its field's type; the ``ValueError`` names ``train.<key>``."""
    import dataclasses
    import difflib
    import types
    import typing

    from trl import RewardConfig

    fields = {f.name: f for f in dataclasses.fields(RewardConfig)}
    own = [f.name for f in dataclasses.fields(TrainSettings) if f.name != "trl"]
    for key, value in settings.items():
        if key in own:
            raise ValueError(f"train.trl.{key}: a ToolRM setting; set train.{key}")
        if key in _SET_BY_TRAIN:
            raise ValueError(f"train.{key}: set by ToolRM from {_SET_BY_TRAIN[key]}")
        if key not in fields:
            close = difflib.get_close_matches(key, [*own, *fields], n=1)
            raise ValueError(f"train.{key}: neither a ToolRM training setting nor a field of TRL's RewardConfig"
                             + (f" (did you mean {close[0]}?)" if close else ""))
        hint = fields[key].type
        allowed = (typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
                   else (hint,))
        if not all(t in (int, float, bool, str, type(None)) for t in allowed):
            continue  # dicts, lists, enums: RewardConfig checks them itself
        ok = (value is None and type(None) in allowed) or (isinstance(value, bool) and bool in allowed) or (
            not isinstance(value, bool) and (isinstance(value, tuple(t for t in allowed if t is not bool))
                                             or (isinstance(value, int) and float in allowed)))
        if not ok:
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise ValueError(f"train.{key}: expected {names}, got {value!r}")


@dataclass
class RMTrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RMTrainConfig:
    """Defaults <- recipe YAML <- ``key=value`` overrides; unknown keys are errors naming the key."""
    from toolrm_rl.config import load_structured

    return load_structured(RMTrainConfig, path, overrides)


# -- data ------------------------------------------------------------------------------------------

def query_key(pair_id: str) -> str:
    """The query a pair id belongs to: ``<example id>[@obf<seed>]#<k>`` -> ``<example id>``.

    >>> query_key("bfcl_sql_12@obf3#g1"), query_key("nestful_7#0"), query_key("plain")
    ('bfcl_sql_12', 'nestful_7', 'plain')
    """
    return pair_id.rsplit("#", 1)[0].split("@obf", 1)[0]


def build_pairs(cfg: DataConfig) -> tuple[list[PairRecord], list[PairRecord], dict[str, Any]]:
    """Training and held-out pairs from the configured sources and files, with a report."""
    from toolrm_rl.data.pairs import mutation_pairs
    from toolrm_rl.data.records import load_pairs
    from toolrm_rl.data.sources import load_source

    rng = random.Random(cfg.seed)
    report: dict[str, Any] = {}
    train_pairs: list[PairRecord] = []
    eval_pairs: list[PairRecord] = []
    examples = [ex for name in cfg.sources for ex in load_source(name)]
    if examples:
        ids = sorted({ex.id for ex in examples})
        held = set(rng.sample(ids, round(len(ids) * cfg.eval_fraction)))
        pairs, stats = mutation_pairs(examples, negatives_per_example=cfg.negatives_per_example,
                                      schema_valid_share=cfg.schema_valid_share, seed=cfg.seed, show_progress=True)
        for pair in pairs:
            (eval_pairs if pair.id.rsplit("#", 1)[0] in held else train_pairs).append(pair)
        report["mutation"] = {"examples": stats.n_examples, "pairs": stats.n_pairs,
                              "schema_valid_share": round(stats.schema_valid_share, 3), "by_operator": stats.by_operator}
    file_fraction = cfg.file_eval_fraction
    if file_fraction is None:  # like sources: a held-out share, unless held-out files are given
        file_fraction = 0.0 if cfg.eval_files else cfg.eval_fraction
    for path in cfg.train_files:
        pairs, load_report = load_pairs(path, skip_bad_rows=cfg.skip_bad_rows)
        if file_fraction > 0:
            queries = sorted({query_key(p.id) for p in pairs})
            held = set(rng.sample(queries, round(len(queries) * file_fraction)))
            for pair in pairs:
                (eval_pairs if query_key(pair.id) in held else train_pairs).append(pair)
        else:
            train_pairs.extend(pairs)
        report[f"file:{path}"] = asdict(load_report)
    for path in cfg.eval_files:
        pairs, load_report = load_pairs(path, skip_bad_rows=cfg.skip_bad_rows)
        eval_pairs.extend(pairs)
        report[f"eval_file:{path}"] = asdict(load_report)
    train_pairs = _whole_queries(train_pairs, cfg.max_train_pairs, rng, cfg.source_temperature)
    if cfg.source_temperature is not None:
        report["train_by_source"] = dict(Counter(p.source for p in train_pairs).most_common())
    eval_pairs = _whole_queries(eval_pairs, cfg.max_eval_pairs, rng) if cfg.max_eval_pairs is not None else eval_pairs
    if not train_pairs:
        raise ValueError("no training pairs: set data.sources and/or data.train_files")
    report.update(n_train=len(train_pairs), n_eval=len(eval_pairs))
    return train_pairs, eval_pairs, report


def _whole_queries(pairs: list[PairRecord], cap: int | None, rng: random.Random,
                   source_temperature: float | None = None) -> list[PairRecord]:
    """``pairs`` shuffled by query (a query's pairs stay together, in file order, so the group loss sees
    all negatives of a chosen answer), cut to at most ``cap`` pairs at a query boundary (None: all).

    ``source_temperature`` T (None: a uniform shuffle) orders the queries by a weighted draw without
    replacement (Efraimidis and Spirakis: key u**(1/w)) with w = n**(T - 1) for a query of a source with
    n pairs: a cut takes roughly n**T of each source (less of a small one that runs out first), so a large
    source of near-repeats (bfcl's long-context turns repeat the base ones) no longer fills most of the budget.

    >>> from types import SimpleNamespace as P
    >>> ps = [P(id=f"q{i // 3}#{i % 3}", source="s") for i in range(9)]
    >>> out = _whole_queries(ps, 7, random.Random(0))  # 7 would split a query: two whole ones instead
    >>> sizes = {}
    >>> for p in out: sizes[p.id.split("#")[0]] = sizes.get(p.id.split("#")[0], 0) + 1
    >>> len(out), sorted(sizes.values())
    (6, [3, 3])
    >>> big = [P(id=f"b{i}#0", source="big") for i in range(900)] + [P(id=f"s{i}#0", source="small") for i in range(100)]
    >>> [sum(p.source == "small" for p in _whole_queries(big, 200, random.Random(1), t)) for t in (1.0, 0.5, 0.0)]
    [15, 40, 76]
    """
    by_query: dict[str, list[PairRecord]] = {}
    for pair in pairs:
        by_query.setdefault(pair.id.rsplit("#", 1)[0], []).append(pair)
    keys = list(by_query)
    rng.shuffle(keys)
    if source_temperature is not None:
        per_source = Counter(pair.source for pair in pairs)
        weight = {src: n ** (source_temperature - 1.0) for src, n in per_source.items()}
        draw = {key: rng.random() ** (1.0 / weight[by_query[key][0].source]) for key in keys}
        keys.sort(key=draw.__getitem__, reverse=True)
    out: list[PairRecord] = []
    for key in keys:
        if cap is not None and len(out) + len(by_query[key]) > cap:
            if out:
                break
            return by_query[key][:cap]
        out.extend(by_query[key])
    return out


def _encode(text: str, tokenizer: Any, max_length: int, mode: str) -> tuple[list[int], bool]:
    from toolrm_rl.model.toolrm import truncate_ids  # the same cut rule as scoring

    # verbose=False: the ids are cut to max_length right here, so the tokenizer's "longer than the maximum ...
    # will result in indexing errors" warning (a hard-truncated input, reported in the cut count) is wrong here.
    ids = tokenizer(text, add_special_tokens=mode == "plain", verbose=False)["input_ids"]
    return truncate_ids(ids, max_length, mode)


def tokenize_pairs(pairs: Sequence[PairRecord], tokenizer: Any, spec: RenderSpec, max_length: int,
                   margin: float | None = None, desc: str | None = "rendering pairs", group: bool = False,
                   num_proc: int | None = None):
    """Render and tokenize pairs into a ``datasets.Dataset`` with ``chosen_ids``/``rejected_ids``.

    With ``group`` a row is a query's group (:func:`toolrm_rl.model.group.group_rows`): ``chosen_ids`` once
    and ``rejected_ids`` a list of its negatives. ``length`` is a row's longest input (for length-grouped
    batches). ``num_proc``: processes that render (:func:`_tokenize_in_pool`; the same rows as one process);
    None: 2 from ``RENDER_POOL_MIN_PAIRS`` pairs on a machine with 2+ cores and ``fork``, else 1. ``desc``: the
    progress bar's label (None: no bar).
    Returns ``(dataset, n_hard_truncated)``; every pair is kept.
    """
    from datasets import Dataset

    from toolrm_rl.model.group import group_rows

    groups = group_rows(pairs) if group else [[i] for i in range(len(pairs))]
    if num_proc is None:
        num_proc = 2 if len(pairs) >= RENDER_POOL_MIN_PAIRS and (os.cpu_count() or 1) > 1 else 1
    args = (pairs, groups, tokenizer, spec, max_length)
    if num_proc > 1 and len(groups) > 1 and "fork" in multiprocessing.get_all_start_methods():
        chosen, rejected, cut = _tokenize_in_pool(args, num_proc, desc)
    else:
        chosen, rejected, cut = _tokenize_groups(*args, range(len(groups)), desc=desc)
    rows: dict[str, list] = {"chosen_ids": chosen, "rejected_ids": [r if group else r[0] for r in rejected],
                             "length": [max(map(len, [c, *r])) for c, r in zip(chosen, rejected)]}  # what a batch pads to
    if margin is not None:
        rows["margin"] = [float(margin)] * len(chosen)
    return Dataset.from_dict(rows), len(cut)


# From this many pairs tokenize_pairs renders in 2 processes by default. bench/bench_render.py --pool, 2 cores,
# quickstart training pairs: 1.26x at 500 pairs, 1.51x at 1,000, 1.68x at 2,000, 1.51x at 8,000 (identical rows).
RENDER_POOL_MIN_PAIRS = 1000
_POOL_ARGS: tuple = ()  # tokenize_pairs' arguments, inherited by forked workers (never pickled)


def _tokenize_groups(pairs: Sequence[PairRecord], groups: list[list[int]], tokenizer: Any, spec: RenderSpec,
                     max_length: int, which: range, desc: str | None = None) -> tuple[list, list, set]:
    """Token ids of the groups ``which``: ``(chosen ids per group, [rejected ids] per group, keys of the inputs
    cut to max_length)``. Each distinct input is rendered once (the chosen side repeats across a query's rows)."""
    from tqdm.auto import tqdm

    cache: dict[tuple, list[int]] = {}
    cut: set[tuple] = set()

    def encode(pair: PairRecord, example: Any) -> list[int]:
        key = (id(pair.tools), id(pair.conversation), repr(example.calls), example.text)
        if key not in cache:
            text = render_example(example, spec=spec, tokenizer=tokenizer).text
            cache[key], was_cut = _encode(text, tokenizer, max_length, spec.mode)
            if was_cut:
                cut.add(key)
        return cache[key]

    chosen, rejected = [], []
    for g in tqdm(which, desc=desc, disable=desc is None or len(which) < 256):
        members = groups[g]
        first = pairs[members[0]]
        chosen.append(encode(first, first.chosen_example()))
        rejected.append([encode(pairs[i], pairs[i].rejected_example()) for i in members])
    return chosen, rejected, cut


def _tokenize_chunk(which: range) -> tuple[list, list, set]:
    """A pool worker's part: :func:`_tokenize_groups` over the arguments its fork inherited."""
    return _tokenize_groups(*_POOL_ARGS, which)


def _tokenize_in_pool(args: tuple, num_proc: int, desc: str | None) -> tuple[list, list, set]:
    """:func:`_tokenize_groups` over all groups in ``num_proc`` forked processes, one contiguous chunk of groups
    each (a query's rows stay together), results joined in order: the same ids as one process. Workers
    inherit ``args`` through the fork (pairs and tokenizer are not pickled); only ids come back. Cut inputs
    are counted by key (object ids are the parent's in every fork), so the count equals one process's."""
    global _POOL_ARGS
    from concurrent.futures import ProcessPoolExecutor

    n = len(args[1])
    bounds = [round(n * k / num_proc) for k in range(num_proc + 1)]
    _POOL_ARGS = args
    try:
        with ProcessPoolExecutor(num_proc, mp_context=multiprocessing.get_context("fork")) as pool:
            log.info("%s: %d groups in %d processes", desc, n, num_proc)
            parts = list(pool.map(_tokenize_chunk, [range(a, b) for a, b in itertools.pairwise(bounds)]))
    finally:
        _POOL_ARGS = ()
    return ([c for part in parts for c in part[0]], [r for part in parts for r in part[1]],
            set().union(*(part[2] for part in parts)))


# -- training --------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """Where the trained model is and what training measured."""

    final_dir: Path
    metrics: dict[str, Any]


def _setup_reporting(settings: TrainSettings) -> list[str]:
    if settings.report_to in ("none", "", None):
        return []
    if settings.report_to == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            log.warning("wandb is not installed: logging to the console only")
            return []
        wandb_offline_without_credentials()
        os.environ.setdefault("WANDB_DIR", settings.output_dir)
        os.environ.setdefault("WANDB_PROJECT", "toolrm-rl")
    return [settings.report_to]


def reward_config(t: TrainSettings, *, bf16: bool, evaluate: bool, report_to: list[str]) -> Any:
    """TRL's ``RewardConfig`` for a run: ``t.trl`` as it is, plus the fields ToolRM decides (output_dir, seed,
    ``bf16``, ``report_to``, evaluation every ``t.eval_steps`` when ``evaluate``, the length-grouped sampler,
    no max_length filter, no dropout, no hub pushes by the Trainer, the CPU without CUDA)."""
    import torch
    from trl import RewardConfig

    cuda = torch.cuda.is_available()
    return RewardConfig(
        **t.trl, output_dir=str(Path(t.output_dir)), seed=t.seed, bf16=bf16, report_to=report_to,
        eval_strategy="steps" if (evaluate and t.eval_steps) else "no", eval_steps=t.eval_steps,
        push_to_hub=False, max_length=None,  # we render within budget ourselves
        disable_dropout=True, dataloader_pin_memory=cuda, use_cpu=not cuda,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random")


def _time_budget_callback(minutes: float):
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        """Stops training (with a final save) once the wall-clock budget is spent."""

        def __init__(self) -> None:
            self.deadline = time.monotonic() + minutes * 60

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() >= self.deadline:
                log.warning("time budget of %.1f min reached at step %d: stopping", minutes, state.global_step)
                control.should_training_stop = True
                control.should_save = True
            return control

    return TimeBudget()


def _run_totals_callback():
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class RunTotals(TrainerCallback, ExportableState):
        """Whole-run counters across resumes: wall seconds of the training loop, tokens, the loss sum
        and the parts (one per start). They are saved in every checkpoint's ``trainer_state.json``
        (``stateful_callbacks``), so a run resumed from a checkpoint continues its totals: steps done
        after the last checkpoint of a killed part are redone and counted once."""

        def __init__(self, seconds: float = 0.0, tokens: int = 0, loss_sum: float | None = 0.0,
                     parts: list | None = None, recorded: bool = True) -> None:
            self.prior = {"seconds": seconds, "tokens": tokens, "loss_sum": loss_sum, "parts": list(parts or []),
                          "recorded": recorded}
            self.trainer: Any = None
            self.start: float | None = None
            self.end: float | None = None
            self.start_step = 0
            self.final_loss_sum: float | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            saved = state.stateful_callbacks.get(type(self).__name__)
            if isinstance(saved, dict) and state.global_step > 0:  # resumed: the checkpoint's totals
                self.prior = type(self)(**saved.get("args", {})).prior
            elif state.global_step > 0:  # a checkpoint written before totals were recorded
                self.prior.update(recorded=False, loss_sum=None)
            state.stateful_callbacks.setdefault(type(self).__name__, self.state())  # the Trainer indexes it
            self.start, self.start_step = time.monotonic(), state.global_step
            return control

        def finish(self, training_loss: float) -> None:
            """Stop the clock once ``trainer.train`` returned (``training_loss``: its whole-run mean)."""
            self.end = time.monotonic()
            self.final_loss_sum = training_loss * self.trainer.state.global_step  # HF: this part's sum / all steps

        def _part_loss(self) -> float | None:
            if self.final_loss_sum is not None:
                return self.final_loss_sum
            total, pending = getattr(self.trainer, "_total_loss_scalar", None), getattr(self.trainer, "_tr_loss", None)
            return None if total is None or pending is None else total + float(pending)

        def totals(self) -> dict[str, Any]:
            """The whole run so far: ``seconds``, ``tokens``, ``loss_sum``, ``parts``, ``recorded``."""
            out = {**self.prior, "parts": list(self.prior["parts"])}
            if self.start is None or self.trainer is None:
                return out
            seconds = (self.end or time.monotonic()) - self.start
            tokens = int(getattr(self.trainer, "_total_train_tokens", 0) or 0)  # non-pad tokens, as TRL counts
            loss = self._part_loss()
            out["seconds"] = round(self.prior["seconds"] + seconds, 3)
            out["tokens"] = self.prior["tokens"] + tokens
            out["loss_sum"] = None if loss is None or self.prior["loss_sum"] is None else self.prior["loss_sum"] + loss
            out["parts"].append({"start_step": self.start_step, "end_step": self.trainer.state.global_step,
                                 "seconds": round(seconds, 3), "tokens": tokens})
            return out

        def state(self) -> dict:
            return {"args": self.totals(), "attributes": {}}

    return RunTotals()


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is incomplete (header or data cut short), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 0 or 8 + n > size:
                return f"{path.name}: truncated header"
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{path.name}: unreadable ({type(err).__name__})"
    return f"{path.name}: truncated ({size} of {8 + n + end} bytes)" if 8 + n + end > size else None


def _zip_problem(path: Path) -> str | None:
    """Why a torch.save file (a zip archive) is incomplete, or None; reads only its central directory."""
    import zipfile

    try:
        with zipfile.ZipFile(path):
            return None
    except (OSError, zipfile.BadZipFile) as err:
        return f"{path.name}: incomplete ({err})"


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why ``ckpt`` (a ``checkpoint-N`` folder) cannot be resumed from, or None when it is complete:
    ``trainer_state.json`` (written last) with ``global_step`` N, model weights (full, sharded, LoRA
    adapter, FSDP or DeepSpeed), optimizer and scheduler state, and every weight/state file intact
    (safetensors sizes match their headers, torch files are whole zip archives, JSON files parse)."""
    state_file = ckpt / "trainer_state.json"
    if not state_file.is_file():
        return "no trainer_state.json (written last: the save was interrupted)"
    try:
        step = json.loads(state_file.read_text(encoding="utf-8")).get("global_step")
    except (OSError, ValueError, AttributeError) as err:
        return f"trainer_state.json unreadable ({type(err).__name__})"
    if str(step) != ckpt.name.rsplit("-", 1)[-1]:
        return f"trainer_state.json says global_step {step!r}"
    for path in sorted(p for p in ckpt.iterdir() if p.is_file()):
        if path.suffix == ".safetensors":
            problem = _safetensors_problem(path)
        elif path.suffix in (".pt", ".pth", ".bin"):
            problem = _zip_problem(path)
        elif path.suffix == ".json":
            try:
                json.loads(path.read_text(encoding="utf-8"))
                problem = None
            except (OSError, ValueError):
                problem = f"{path.name}: not valid JSON"
        else:
            continue
        if problem:
            return problem
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (ckpt / index_name).is_file():
            shards = set(json.loads((ckpt / index_name).read_text(encoding="utf-8")).get("weight_map", {}).values())
            missing = sorted(s for s in shards if not (ckpt / s).is_file())
            if missing:
                return f"{index_name}: missing shard {missing[0]}"
    sharded = [p.name for p in ckpt.iterdir() if p.is_dir() and p.name.startswith(("global_step", "pytorch_model_fsdp"))]
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
               "adapter_model.safetensors", "adapter_model.bin", "pytorch_model_fsdp_0.bin")
    if not sharded and not any((ckpt / w).is_file() for w in weights):
        return "no model weights"
    if not sharded and not ((ckpt / "optimizer.pt").is_file() and (ckpt / "scheduler.pt").is_file()):
        return "no optimizer.pt/scheduler.pt (resuming would restart the optimizer)"
    return None


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` that :func:`checkpoint_problem` finds complete
    (None when there is none); newer incomplete ones (a run killed while saving) are logged and skipped."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = [p for p in output_dir.iterdir() if p.is_dir() and p.name.startswith("checkpoint-")
             and p.name[len("checkpoint-"):].isdigit()]
    skipped = []
    for ckpt in sorted(found, key=lambda p: -int(p.name[len("checkpoint-"):])):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            if skipped:
                log.warning("resuming from %s, the newest complete checkpoint; skipped newer incomplete ones: %s",
                            ckpt, "; ".join(skipped))
            return str(ckpt)
        skipped.append(f"{ckpt.name} ({problem})")
    if skipped:
        log.warning("no complete checkpoint in %s (skipped: %s): starting from the beginning", output_dir,
                    "; ".join(skipped))
    return None


def _run_metrics(trainer: Any, totals: Any, train_output: Any, resume: str | None) -> dict[str, Any]:
    """``metrics.json``'s training part for the whole run, across resumes: ``train`` (global_step, epoch,
    train_runtime in seconds, train_loss, total_flos, steps/s), ``train_minutes``, ``train_tokens`` and
    ``train_tokens_per_second``, ``parts`` (one per start: steps, seconds, tokens) and ``this_part``
    (the Trainer's own metrics of this start, with the checkpoint it resumed from)."""
    totals.finish(train_output.training_loss)
    run = totals.totals()
    state, seconds = trainer.state, run["seconds"]
    steps = state.global_step
    metrics: dict[str, Any] = {
        "train": {"global_step": steps, "epoch": state.epoch, "train_runtime": seconds,
                  "train_steps_per_second": round(steps / seconds, 3) if seconds else None,
                  "train_loss": run["loss_sum"] / steps if steps and run["loss_sum"] is not None else None,
                  "total_flos": state.total_flos},
        "train_minutes": round(seconds / 60, 2), "parts": run["parts"],
        "this_part": {**train_output.metrics, "resumed_from": resume}}
    if not run["recorded"]:  # resumed from a checkpoint of an older version: earlier parts are not counted
        metrics["earlier_parts_unrecorded"] = True
    if run["tokens"] and seconds:
        metrics["train_tokens"] = run["tokens"]
        metrics["train_tokens_per_second"] = round(run["tokens"] / seconds, 1)
    return metrics


def train(cfg: RMTrainConfig) -> TrainResult:
    """Run one training job described by ``cfg``; returns the final model directory and metrics."""
    import torch

    from toolrm_rl.model.ema import ema_callback
    from toolrm_rl.model.group import GroupCollator, GroupRewardTrainer

    from toolrm_rl.core.toolrm_json import write_toolrm_json
    from toolrm_rl.data.backbones import resolve_backbone
    from toolrm_rl.model.toolrm import ToolRM, freeze_lower, lora_head_modules, save_adapter

    t = cfg.train
    out = Path(t.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.model.num_layers is not None and cfg.lora.enabled:  # the adapter would reload onto every block of its base
        raise ValueError("model.num_layers does not go with lora.enabled: an adapter names its base model, which "
                         "reloads with all its blocks; train every weight of the cut model instead")
    backbone = resolve_backbone(cfg.model.name_or_path, cache_dir=out / ".backbone")
    from transformers import set_seed

    set_seed(t.seed)  # the fresh score head is drawn at load time: seed it, or one seed gives different runs
    dtype = cfg.model.dtype
    use_bf16 = t.bf16 if t.bf16 is not None else bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    # Loaded on the CPU: the Trainer (accelerate) places it, one device per process under FSDP/DeepSpeed.
    rm = ToolRM.from_pretrained(backbone, dtype="float32" if dtype == "auto" else dtype, render_spec=None, device="cpu",
                                num_layers=cfg.model.num_layers)
    spec = RenderSpec.from_dict({**rm.render_spec.to_dict(), **dict(cfg.model.render)})
    max_length = min(n for n in (spec.hard_cap_tokens, rm.max_length, 1 << 30) if n)
    # Before the pairs are built: a bad block count fails in seconds, not after rendering.
    frozen = freeze_lower(rm.model, t.freeze_layers) if t.freeze_layers is not None and not cfg.lora.enabled else 0

    train_pairs, eval_pairs, data_report = build_pairs(cfg.data)
    if t.loss not in ("group", "pairwise"):
        raise ValueError(f"train.loss: expected 'group' or 'pairwise', got {t.loss!r}")
    grouped = t.loss == "group"
    train_ds, cut_train = tokenize_pairs(train_pairs, rm.tokenizer, spec, max_length, t.margin,
                                         "rendering train pairs", group=grouped)
    eval_ds, cut_eval = (tokenize_pairs(eval_pairs, rm.tokenizer, spec, max_length, t.margin,
                                        "rendering eval pairs", group=grouped) if eval_pairs else (None, 0))
    data_report.update(hard_truncated_train=cut_train, hard_truncated_eval=cut_eval, max_length=max_length,
                       frozen_parameters=frozen)
    log.info("data: %s", json.dumps(data_report, default=str))

    peft_config = None
    if cfg.lora.enabled:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="SEQ_CLS", r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                                 lora_dropout=cfg.lora.dropout, target_modules=cfg.lora.target_modules,
                                 modules_to_save=lora_head_modules(rm.model))
    args = reward_config(t, bf16=use_bf16, evaluate=eval_ds is not None, report_to=_setup_reporting(t))
    totals = _run_totals_callback()
    callbacks = [totals] + ([_time_budget_callback(t.max_minutes)] if t.max_minutes else [])
    ema = ema_callback(t.ema_decay) if t.ema_decay is not None else None
    callbacks += [ema] if ema is not None else []
    pad_id = rm.tokenizer.pad_token_id if rm.tokenizer.pad_token_id is not None else rm.tokenizer.eos_token_id
    trainer = GroupRewardTrainer(model=rm.model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                 processing_class=rm.tokenizer, peft_config=peft_config, callbacks=callbacks,
                                 data_collator=GroupCollator(pad_id) if grouped else None,  # None: TRL's pairs
                                 head_modules=lora_head_modules(rm.model), head_learning_rate=t.head_learning_rate)
    totals.trainer = trainer
    resume = last_complete_checkpoint(out) if t.resume else None
    if resume:
        log.info("resuming from %s", resume)
    train_output = trainer.train(resume_from_checkpoint=resume)
    metrics = _run_metrics(trainer, totals, train_output, resume)
    metrics["data"] = data_report
    if ema is not None:
        metrics["ema_steps"] = ema.apply(trainer.model)  # evaluated and saved below: the averaged weights
    if eval_ds is not None:
        metrics["eval"] = trainer.evaluate()

    final = out / "final"
    model = trainer.model
    if cfg.lora.enabled:
        save_adapter(model, out / "adapter", cfg.model.name_or_path)  # adapter + score head, portable base name
        write_toolrm_json(out / "adapter", spec, rm.backbone)
        model = model.merge_and_unload() if cfg.lora.merge else None
    if model is not None:
        model.save_pretrained(final, safe_serialization=True)
        rm.tokenizer.save_pretrained(final)
        write_toolrm_json(final, spec, rm.backbone)
    write_json(out / "metrics.json", metrics, indent=2, default=str)
    if t.push_to_hub and model is not None:
        if not t.hub_model_id:
            raise ValueError("train.push_to_hub needs train.hub_model_id")
        model.push_to_hub(t.hub_model_id)
        rm.tokenizer.push_to_hub(t.hub_model_id)
    return TrainResult(final if model is not None else out / "adapter", metrics)
