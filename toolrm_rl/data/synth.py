"""Preference-pair synthesis: sources -> (obfuscation) -> generator pool and/or mutations -> verified,
labelled, deduplicated negatives in the ToolRM-train-data schema, in resumable shards.

    toolrm synth recipes/synth/cpu_default.yaml [key=value ...] [--force]

Per source example (obfuscated first when enabled) every generator answers ``n`` times through its
own chat template; each output is parsed with the core parser and checked against the ground truth
with :mod:`toolrm_rl.core.match` through :class:`toolrm_rl.data.pairs.NegativeJudge` (the BFCL
possible answer when the source has one, else an answer built from the gold calls; empty gold: only
abstaining is correct), the same judge that verifies mutation negatives. Correct outputs are dropped;
the others are labelled with the matcher's raw ``error_type`` (``ast_decoder:decoder_failed`` when
unparsable), deduplicated by canonical call form and capped at ``k`` per query, interleaving
generators and samples so the kept ones come from different models, parsed wrong calls before
unparsable texts. Mutation negatives
(:func:`toolrm_rl.data.pairs.mutation_pairs`) are the other source of negatives; their rows have
``generator_model = "mutation:<operator>"`` and the matcher's ``error_type`` too.

Obfuscated examples stay obfuscated: catalog, conversation, chosen and rejected calls of a pair all
use the renamed functions and parameters (as in the paper's released data), so a pair is consistent
without mapping model outputs back; the map is in the source example's ``meta``.

Examples are split into deterministic shards by index (``shard_size`` source examples each). A
shard's pairs go to ``shard-00007.jsonl`` (and its counts to ``shard-00007.stats.json``), written
atomically; finished shards are skipped on a rerun, so an interrupted run resumes without duplicates
or losses (the temporary files a killed run leaves behind are removed when a run starts). ``manifest.json`` records a hash of the config and of the example ids; rerunning into the
same directory with a different config is refused unless ``force`` (which clears the old shards).
Shards run in this process or as Ray tasks (``ray.enabled``), with generators as Ray actors (GPU
actors for vLLM). At the end ``pairs.jsonl`` holds every shard's rows and ``summary.md`` /
``summary.json`` / ``summary.png`` count pairs per source, error category and generator. With
generators, the summary also gives their failures (wrong or unparsable outputs) per CPU-minute of the
shards, the generated negatives' error mix next to FC-RewardBench's published one
(:data:`FC_REWARDBENCH_ERROR_MIX`), the share of them that passes the schema, and how each generator
was prompted (:meth:`toolrm_rl.data.generate.PromptFormat.describe`: template or system, prefill).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from toolrm_rl.config import option as _f
from toolrm_rl.core.example import ToolExample
from toolrm_rl.core.io import atomic_write, remove_stale_tmp, write_json
from toolrm_rl.core.match import canonical_calls, error_category
from toolrm_rl.core.parse import FORMATS, parse
from toolrm_rl.core.schema import check_calls
from toolrm_rl.core.subset import seeded_subset
from toolrm_rl.data.generate import GenerationRequest, Generator, get_generator
from toolrm_rl.data.pairs import NegativeJudge
from toolrm_rl.data.records import PairRecord, save_pairs
from toolrm_rl.data.sources import is_bias_holdout, load_source

__all__ = ["ObfuscationSettings", "GenerationSettings", "MutationSettings", "RaySettings", "SynthConfig",
           "SynthResult", "load_config", "load_examples", "generation_pairs", "run_shard", "synthesize",
           "summary_markdown", "UNPARSABLE", "FC_REWARDBENCH_ERROR_MIX"]

log = logging.getLogger(__name__)

UNPARSABLE = "ast_decoder:decoder_failed"
# FC-RewardBench's published error mix over the card's categories (core.match.ERROR_CATEGORIES): what a
# synthesis summary sets the generated negatives' mix against.
FC_REWARDBENCH_ERROR_MIX = {"wrong_value": 0.43, "wrong_function": 0.27, "wrong_count": 0.16, "missing_optional": 0.05,
                            "missing_required": 0.03, "wrong_type": 0.03, "unexpected_param": 0.01,
                            "unparsable": 0.01}
_RAY_KEYS = ("num_gpus", "num_cpus", "replicas")  # generator-spec keys that place Ray actors


@dataclass
class ObfuscationSettings:
    enabled: bool = _f(False, "Rename functions/parameters and shuffle schema keys (toolrm_rl.data.obfuscate) before generating/mutating.")
    copies: int = _f(1, "Obfuscated variants per example (seeds seed, seed+1, ...): each is its own query.")
    keep_original: bool = _f(False, "Also keep the un-obfuscated example as a query.")


@dataclass
class GenerationSettings:
    generators: list = _f([], "Generator pool: each {kind: vllm|transformers|openai|replay, name, ...backend options}; "
                              "with Ray also num_gpus, num_cpus (default 0), replicas per actor. Empty: no generation.")
    n: int = _f(4, "Samples per query per generator.")
    temperature: float = _f(0.8, "Sampling temperature.")
    max_tokens: int = _f(512, "Max new tokens per sample.")
    format: str = _f("hermes", "Output parser: hermes, json, pythonic or auto (toolrm_rl.core.parse).")
    negatives_per_example: int = _f(3, "k: at most this many generated negatives per query (the paper keeps 3).")
    batch_size: int = _f(256, "Queries per generate() call (a shard is split into batches of this size).")


@dataclass
class MutationSettings:
    enabled: bool = _f(True, "Add rule-based mutation negatives (no model; toolrm_rl.data.pairs.mutation_pairs).")
    negatives_per_example: int = _f(3, "At most this many mutation negatives per query.")
    schema_valid_share: float = _f(0.7, "Target share of mutation negatives that pass the schema rules.")
    operators: list | None = _f(None, "Mutation operators to use (None: all; see toolrm_rl.data.mutate).")
    operator_weights: dict | None = _f(None, "Relative preference per operator over toolrm_rl.data.pairs.OPERATOR_WEIGHTS "
                                             "(0 disables one), e.g. {drop_call: 2.0}.")
    count_contrast: bool = _f(False, "Where a query's negatives change the call count in one direction only, swap one "
                                     "for a negative of the other direction (fewer vs more calls against one gold). "
                                     "Off: in two 120-step runs it lowered dev accuracy (see docs/reward_model.md).")
    relevance_contrast: bool = _f(False, "An example whose question is also composed without its called functions "
                                         "(compose.abstain_share) always gets the 'no call' negative too: the same "
                                         "question with and without the tool, so only the catalog decides whether "
                                         "not calling is right.")


@dataclass
class ComposeSettings:
    enabled: bool = _f(False, "Add parallel questions composed from pairs of single-call questions ('X. Also, Y.', "
                              "both calls gold; toolrm_rl.data.compose): the sources have few, real failures often "
                              "answer them with too few calls.")
    merged_share: float = _f(0.5, "Besides same-catalog pairs, questions from two different catalogs (merged) up to "
                                  "this share of the composable single-call questions.")
    abstain_share: float = _f(0.0, "Also this share of the examples with their called functions removed from the "
                                   "catalog, so no call is right (toolrm_rl.data.compose.abstention_examples): "
                                   "the sources have no such questions.")
    restate_share: float = _f(0.0, "Also this share of the examples with a gold value rewritten in the user's words "
                                   "('2022-03-11' -> 'March 11, 2022', 0.05 -> '5%'; the gold unchanged; "
                                   "toolrm_rl.data.compose.restated_examples): real failures copy such words as "
                                   "often as they invent values, the sources rarely need the conversion.")


@dataclass
class RaySettings:
    enabled: bool = _f(False, "Run shards as Ray tasks (generators as Ray actors) instead of in this process.")
    address: str | None = _f(None, "Ray cluster address (e.g. auto or ray://head:10001); None: start a local Ray.")
    num_cpus: int | None = _f(None, "CPUs for a local ray.init (None: all).")
    task_num_cpus: float = _f(1.0, "CPUs reserved per shard task (verification and mutations run there).")


@dataclass
class SynthConfig:
    output_dir: str = _f("runs/synth", "Where shards, pairs.jsonl, manifest.json and the summary go.")
    sources: list = _f(["bfcl_exec", "bfcl_sql", "bfcl_multi_turn", "nestful"],
                       "Sources for toolrm_rl.data.sources.load_source: names, or {name: ..., <kwargs>} dicts.")
    exclude_bias_holdout: bool = _f(True, "Leave out the bias suite's hold-out examples (toolrm_rl.data.sources.is_bias_holdout, "
                                          "~10% of tasks), so `toolrm eval biases` measures on examples never trained on.")
    max_examples: int | None = _f(None, "Use a seeded random subset of this many source examples (None: all).")
    shard_size: int = _f(250, "Source examples per shard (the unit of resume and of Ray tasks).")
    seed: int = _f(0, "Seed for subsets, obfuscation, sampling and mutations.")
    obfuscation: ObfuscationSettings = field(default_factory=ObfuscationSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    mutations: MutationSettings = field(default_factory=MutationSettings)
    compose: ComposeSettings = field(default_factory=ComposeSettings)
    ray: RaySettings = field(default_factory=RaySettings)
    merged_file: str | None = _f("pairs.jsonl", "All shards' rows in one file at the end (None: shards only).")
    show_progress: bool = _f(True, "tqdm progress bar over shards.")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> SynthConfig:
    """Defaults <- recipe YAML <- ``key=value`` overrides; unknown keys are errors naming the key."""
    from toolrm_rl.config import load_structured

    return load_structured(SynthConfig, path, overrides)


# -- examples and verification -----------------------------------------------------------------------

def _source_entry(entry: Any) -> tuple[str, dict]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        return entry["name"], {k: v for k, v in entry.items() if k != "name"}
    raise ValueError(f"sources: expected a name or a {{name: ..., <kwargs>}} dict, got {entry!r}")


def load_examples(cfg: SynthConfig) -> list[ToolExample]:
    """The configured sources' examples in a fixed order, without the bias hold-out slice unless
    ``exclude_bias_holdout`` is off (a seeded subset with ``max_examples``)."""
    examples: list[ToolExample] = []
    for entry in cfg.sources:
        name, kwargs = _source_entry(entry)
        examples += load_source(name, **kwargs)
    if cfg.exclude_bias_holdout:
        examples = [ex for ex in examples if not is_bias_holdout(ex.id)]
    examples = seeded_subset(examples, cfg.max_examples, cfg.seed)
    if cfg.compose.enabled:
        from toolrm_rl.data.compose import (abstention_examples, composable, mark_abstention_twins,
                                            merged_parallel_examples, parallel_examples, restated_examples)

        n_single = sum(composable(ex) for ex in examples)
        abstentions = abstention_examples(examples, cfg.seed, cfg.compose.abstain_share)
        examples = mark_abstention_twins(examples, abstentions) + parallel_examples(examples, cfg.seed) + (
            merged_parallel_examples(examples, cfg.seed, limit=int(cfg.compose.merged_share * n_single))
            + abstentions + restated_examples(examples, cfg.seed, cfg.compose.restate_share))
    dupes = [i for i, n in Counter(ex.id for ex in examples).items() if n > 1]
    if dupes:
        raise ValueError(f"sources: example ids must be unique, repeated: {dupes[:5]}")
    return examples


def _expand(examples: Sequence[ToolExample], cfg: ObfuscationSettings, seed: int) -> list[ToolExample]:
    """The queries of a shard: each example, obfuscated ``copies`` times when enabled."""
    if not cfg.enabled:
        return list(examples)
    from toolrm_rl.data.obfuscate import obfuscate

    out = []
    for ex in examples:
        if cfg.keep_original:
            out.append(ex)
        out += [obfuscate(ex, seed + c)[0] for c in range(cfg.copies)]
    return out


def generation_pairs(examples: Sequence[ToolExample], generators: Sequence[Generator], settings: GenerationSettings,
                     seed: int = 0, counts: Counter | None = None) -> list[PairRecord]:
    """Negatives from the generator pool: at most ``settings.negatives_per_example`` per example,
    wrong and distinct (see the module doc). ``counts`` (if given) is updated with ``n_outputs``,
    ``n_correct``, ``n_duplicate``, ``n_over_cap`` and ``n_unparsable``."""
    counts = counts if counts is not None else Counter()
    examples = list(examples)
    requests = [GenerationRequest.from_example(ex) for ex in examples]
    outputs: list[tuple[str, list[list[str]]]] = []
    for gen in generators:
        texts: list[list[str]] = []
        for start in range(0, len(requests), settings.batch_size):
            texts += gen.generate(requests[start:start + settings.batch_size], n=settings.n,
                                  temperature=settings.temperature, max_tokens=settings.max_tokens, seed=seed)
        if len(texts) != len(requests):
            raise RuntimeError(f"generator {gen.name!r} returned {len(texts)} answers for {len(requests)} requests")
        outputs.append((gen.name, texts))
    pairs: list[PairRecord] = []
    for i, ex in enumerate(examples):
        judge = NegativeJudge(ex)
        if not judge.usable:  # a gold that fails its own answer cannot judge outputs
            counts["n_unusable_examples"] += 1
            continue
        seen: set = set()
        kept = 0
        failures = []
        # sample j of every generator before sample j+1 of any: the k kept come from different models
        width = max((len(texts[i]) for _, texts in outputs), default=0)
        for j in range(width):
            for gen_name, texts in outputs:
                if j >= len(texts[i]):
                    continue
                text = texts[i][j]
                counts["n_outputs"] += 1
                result = parse(text, settings.format)
                if result.ok:
                    error_type = judge.error_type(result.calls)
                    if not error_type:
                        counts["n_correct"] += 1
                        continue
                    key = ("calls", canonical_calls(result.calls, judge.ordered))
                else:
                    counts["n_unparsable"] += 1
                    error_type, key = UNPARSABLE, ("text", " ".join(text.split()))
                failures.append((gen_name, text, result, error_type, key))
        # Parsed failures fill the k slots first: an unparsable output teaches a reward model one thing, and
        # a small model's rambling would otherwise crowd out its wrong calls (FC-RewardBench: 1% unparsable).
        failures.sort(key=lambda f: not f[2].ok)
        for gen_name, text, result, error_type, key in failures:
            if key in seen:
                counts["n_duplicate"] += 1
                continue
            seen.add(key)
            if kept >= settings.negatives_per_example:
                counts["n_over_cap"] += 1
                continue
            rejected = result.calls if result.ok else []
            pairs.append(PairRecord(id=f"{ex.id}#g{kept}", tools=ex.tools, conversation=ex.conversation,
                                    chosen=ex.gold, rejected=rejected, rejected_text=None if rejected else text,
                                    error_type=error_type, source=ex.source, generator=gen_name))
            kept += 1
    return pairs


def _mutation_records(examples: Sequence[ToolExample], settings: MutationSettings, seed: int) -> list[PairRecord]:
    from toolrm_rl.data.pairs import mutation_pairs

    pairs, _ = mutation_pairs(examples, negatives_per_example=settings.negatives_per_example,
                              schema_valid_share=settings.schema_valid_share, seed=seed,
                              operators=list(settings.operators) if settings.operators else None,
                              operator_weights=dict(settings.operator_weights) if settings.operator_weights else None,
                              count_contrast=settings.count_contrast,
                              relevance_contrast=settings.relevance_contrast)
    return pairs


def run_shard(examples: Sequence[ToolExample], cfg: SynthConfig,
              generators: Sequence[Generator] = ()) -> tuple[list[PairRecord], dict[str, Any]]:
    """One shard: expand (obfuscate), generate and/or mutate, verify. Returns the pairs and counts."""
    start, cpu_start = time.perf_counter(), time.process_time()
    queries = _expand(examples, cfg.obfuscation, cfg.seed)
    counts: Counter = Counter()
    records: list[PairRecord] = []
    if generators:
        records += generation_pairs(queries, generators, cfg.generation, cfg.seed, counts)
    if cfg.mutations.enabled:
        records += _mutation_records(queries, cfg.mutations, cfg.seed)
    stats = {"n_examples": len(examples), "n_queries": len(queries), **counts, **_record_counts(records),
             "seconds": round(time.perf_counter() - start, 3),
             # CPU time of this process (all its threads): what a CPU-minute rate is measured in
             "cpu_seconds": round(time.process_time() - cpu_start, 3)}
    prompts = {g.name: g.prompt.describe() for g in generators if hasattr(getattr(g, "prompt", None), "describe")}
    if prompts:
        stats["generator_prompts"] = prompts  # how each generator was prompted (prefill), next to its outputs
    return records, stats


_BY_KEYS = ("by_source", "by_category", "by_error_type", "by_generator", "generated_by_category")


def _record_counts(records: Sequence[PairRecord]) -> dict[str, Any]:
    by = {k: Counter() for k in _BY_KEYS}
    valid = generated = generated_valid = 0
    for rec in records:
        by["by_source"][rec.source] += 1
        by["by_category"][error_category(rec.error_type)] += 1
        by["by_error_type"][rec.error_type] += 1
        by["by_generator"][rec.generator] += 1
        ok = rec.error_type != UNPARSABLE and check_calls(rec.rejected, rec.tools).ok
        valid += ok
        if not rec.generator.startswith("mutation:"):  # a model's output, not a rule-made mutation
            generated += 1
            generated_valid += ok
            by["generated_by_category"][error_category(rec.error_type)] += 1
    return {"n_pairs": len(records), "n_schema_valid": valid, "n_generated_pairs": generated,
            "n_generated_schema_valid": generated_valid, **{k: dict(v) for k, v in by.items()}}


# -- shards on disk ----------------------------------------------------------------------------------

def _shard_paths(out: Path, index: int) -> tuple[Path, Path]:
    return out / f"shard-{index:05d}.jsonl", out / f"shard-{index:05d}.stats.json"


def _write_shard(out: Path, index: int, records: list[PairRecord], stats: dict) -> None:
    data, stats_path = _shard_paths(out, index)
    write_json(stats_path, {"shard": index, **stats})  # stats first: data marks "done"
    save_pairs(records, data, schema="toolrm_train")


def _shard_done(out: Path, index: int) -> bool:
    return all(p.exists() for p in _shard_paths(out, index))


def config_hash(cfg: SynthConfig) -> str:
    """Hash of everything that decides a shard's content (not where or how it runs)."""
    data = dataclasses.asdict(cfg)
    for key in ("output_dir", "ray", "show_progress", "merged_file"):
        data.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_manifest(out: Path, manifest: dict, force: bool) -> None:
    path = out / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        changed = [k for k in ("config_hash", "examples_hash") if old.get(k) != manifest[k]]
        if changed and not force:
            raise ValueError(f"{out}: holds a run with a different {' and '.join(changed)} ({path}); use another "
                             "output_dir, or --force to discard its shards and start over")
        if changed:
            for p in list(out.glob("shard-*.jsonl")) + list(out.glob("shard-*.stats.json")):
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, manifest)


# -- execution ---------------------------------------------------------------------------------------

def _local_generators(cfg: SynthConfig) -> list[Generator]:
    gens = []
    for i, spec in enumerate(cfg.generation.generators):
        spec = dict(spec)
        if "kind" not in spec:
            raise ValueError(f"generation.generators[{i}]: missing 'kind' (vllm, transformers, openai or replay)")
        gens.append(get_generator(spec.pop("kind"), **{k: v for k, v in spec.items() if k not in _RAY_KEYS}))
    return gens


class _GeneratorActor:
    """Ray actor holding one generator (a vLLM engine on its GPU, a transformers model, an HTTP client)."""

    def __init__(self, spec: dict) -> None:
        spec = dict(spec)
        self.gen = get_generator(spec.pop("kind"), **{k: v for k, v in spec.items() if k not in _RAY_KEYS})

    def name(self) -> str:
        return self.gen.name

    def generate(self, requests, **kw):
        return self.gen.generate(requests, **kw)


class _ActorGenerator:
    """A :class:`Generator` that forwards to a Ray actor."""

    def __init__(self, name: str, handle: Any) -> None:
        self.name, self.handle = name, handle

    def generate(self, requests, **kw):
        import ray

        return ray.get(self.handle.generate.remote(list(requests), **kw))


def _ray_shard(examples, cfg, generators):
    return run_shard(examples, cfg, generators)


def _run_ray(cfg: SynthConfig, todo: list[tuple[int, list[ToolExample]]], done_cb) -> None:
    import ray

    started = False
    if not ray.is_initialized():
        if cfg.ray.address:
            ray.init(address=cfg.ray.address)
        else:
            ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False)
        started = True
    try:
        pools: list[list[_ActorGenerator]] = []
        for i, spec in enumerate(cfg.generation.generators):
            if "kind" not in spec:
                raise ValueError(f"generation.generators[{i}]: missing 'kind'")
            # num_cpus 0 by default: actors that reserve CPUs can starve the shard tasks that call them
            actor_cls = ray.remote(num_gpus=spec.get("num_gpus", 0), num_cpus=spec.get("num_cpus", 0))(_GeneratorActor)
            handles = [actor_cls.remote(dict(spec)) for _ in range(int(spec.get("replicas", 1)))]
            name = ray.get(handles[0].name.remote())
            pools.append([_ActorGenerator(name, h) for h in handles])
        task = ray.remote(num_cpus=cfg.ray.task_num_cpus)(_ray_shard)
        refs = {task.remote(examples, cfg, [p[index % len(p)] for p in pools]): index for index, examples in todo}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            index = refs.pop(ready[0])
            done_cb(index, *ray.get(ready[0]))
    finally:
        if started:
            ray.shutdown()


@dataclass
class SynthResult:
    """What :func:`synthesize` produced: the output directory, the merged file (if any), the summary
    (see :func:`summary_markdown`) and the wall-clock seconds of this call."""

    output_dir: Path
    pairs_file: Path | None
    summary: dict[str, Any]
    seconds: float


def synthesize(cfg: SynthConfig, *, force: bool = False) -> SynthResult:
    """Run (or resume) a synthesis into ``cfg.output_dir``; see the module doc."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    if cfg.shard_size < 1:
        raise ValueError("shard_size: must be >= 1")
    if cfg.generation.format not in (*FORMATS, "auto"):
        raise ValueError(f"generation.format: expected auto or one of {FORMATS}, got {cfg.generation.format!r}")
    if not cfg.generation.generators and not cfg.mutations.enabled:
        raise ValueError("nothing to do: no generation.generators and mutations.enabled is false")
    out = Path(cfg.output_dir)
    remove_stale_tmp(out)
    examples = load_examples(cfg)
    shards = [examples[i:i + cfg.shard_size] for i in range(0, len(examples), cfg.shard_size)]
    ids_hash = hashlib.sha256("\n".join(ex.id for ex in examples).encode()).hexdigest()[:16]
    _check_manifest(out, {"config_hash": config_hash(cfg), "examples_hash": ids_hash, "n_examples": len(examples),
                          "n_shards": len(shards), "shard_size": cfg.shard_size,
                          "config": dataclasses.asdict(cfg)}, force)
    todo = [(i, shard) for i, shard in enumerate(shards) if not _shard_done(out, i)]
    bar = tqdm(total=len(shards), initial=len(shards) - len(todo), desc="synth shards", unit="shard",
               disable=not cfg.show_progress)
    pairs_done = Counter()

    def done(index: int, records: list[PairRecord], stats: dict) -> None:
        _write_shard(out, index, records, stats)
        pairs_done["n"] += len(records)
        bar.update(1)
        bar.set_postfix(pairs=pairs_done["n"])

    try:
        if cfg.ray.enabled:
            _run_ray(cfg, todo, done)
        else:
            generators = _local_generators(cfg) if todo else []
            for index, shard in todo:
                done(index, *run_shard(shard, cfg, generators))
    finally:
        bar.close()
    summary = _summarize(out, len(shards))
    summary["seconds_this_run"] = round(time.perf_counter() - start, 2)
    pairs_file = _merge(out, len(shards), cfg.merged_file) if cfg.merged_file else None
    md = summary_markdown(summary)
    write_json(out / "summary.json", summary)
    atomic_write(out / "summary.md", md)
    _plot(summary, out / "summary.png")
    return SynthResult(out, pairs_file, summary, time.perf_counter() - start)


def _merge(out: Path, n_shards: int, name: str) -> Path:
    def concatenate(tmp: Path) -> None:
        with open(tmp, "x", encoding="utf-8") as f:
            for i in range(n_shards):
                with open(_shard_paths(out, i)[0], encoding="utf-8") as shard:
                    f.writelines(shard)

    return atomic_write(out / name, concatenate)


# -- summary -----------------------------------------------------------------------------------------

def _summarize(out: Path, n_shards: int) -> dict[str, Any]:
    total: Counter = Counter()
    by: dict[str, Counter] = {k: Counter() for k in _BY_KEYS}
    prompts: dict[str, Any] = {}
    for i in range(n_shards):
        stats = json.loads(_shard_paths(out, i)[1].read_text())
        for key, value in stats.items():
            if key in by:
                by[key].update(value)
            elif key == "generator_prompts":
                prompts.update(value)
            elif isinstance(value, (int, float)) and key != "shard":
                total[key] += value
    n_pairs = total["n_pairs"]
    summary = {"n_shards": n_shards, **{k: round(v, 3) if isinstance(v, float) else v for k, v in total.items()},
               "schema_valid_share": round(total["n_schema_valid"] / n_pairs, 4) if n_pairs else 0.0,
               **{k: dict(v.most_common()) for k, v in by.items()}}
    if total["n_outputs"]:
        # failures: every wrong or unparsable model output, before deduplication and the k cap
        summary["n_failures"] = total["n_outputs"] - total["n_correct"]
        summary["generated_schema_valid_share"] = (round(total["n_generated_schema_valid"] / total["n_generated_pairs"], 4)
                                                   if total["n_generated_pairs"] else 0.0)
        cpu_minutes = total["cpu_seconds"] / 60
        if cpu_minutes > 0:
            summary["failures_per_cpu_minute"] = round(summary["n_failures"] / cpu_minutes, 2)
            summary["generated_pairs_per_cpu_minute"] = round(total["n_generated_pairs"] / cpu_minutes, 2)
    if prompts:
        summary["generator_prompts"] = prompts
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    """Markdown tables of a summary: totals, then pairs per source, error category and generator; with
    generators, their failures per CPU-minute and their error mix next to FC-RewardBench's."""
    n = summary.get("n_pairs", 0) or 1
    lines = ["| total | value |", "|---|---:|"]
    for key in ("n_examples", "n_queries", "n_outputs", "n_correct", "n_unparsable", "n_duplicate", "n_over_cap",
                "n_pairs", "n_schema_valid", "schema_valid_share", "n_failures", "n_generated_pairs",
                "generated_schema_valid_share", "cpu_seconds", "failures_per_cpu_minute",
                "generated_pairs_per_cpu_minute", "seconds_this_run"):
        if key in summary:
            lines.append(f"| {key} | {summary[key]} |")
    for key, title in (("by_source", "source"), ("by_category", "error category"), ("by_generator", "generator")):
        lines += ["", f"| {title} | pairs | share |", "|---|---:|---:|"]
        lines += [f"| {name or '-'} | {count} | {count / n:.1%} |" for name, count in summary.get(key, {}).items()]
    generated = summary.get("generated_by_category") or {}
    if generated:
        total = sum(generated.values())
        lines += ["", "| generated negatives: error category | pairs | share | FC-RewardBench |", "|---|---:|---:|---:|"]
        for category in [*FC_REWARDBENCH_ERROR_MIX, *(c for c in generated if c not in FC_REWARDBENCH_ERROR_MIX)]:
            count = generated.get(category, 0)
            published = FC_REWARDBENCH_ERROR_MIX.get(category)
            lines.append(f"| {category} | {count} | {count / total:.1%} | "
                         + (f"{published:.0%} |" if published is not None else "- |"))
    for name, prompt in (summary.get("generator_prompts") or {}).items():
        lines.append(f"\n{name}: tools in {prompt.get('tools_in')}, prefill {prompt.get('prefill')!r}, "
                     f"prompt {prompt.get('prompt_hash')}")
    return "\n".join(lines) + "\n"


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, t) for k, t in (("by_category", "error category"), ("by_generator", "generator"),
                                  ("by_source", "source")) if summary.get(k)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        items = list(summary[key].items())[:15]
        ax.barh([str(k) for k, _ in items][::-1], [v for _, v in items][::-1])
        ax.set_title(f"pairs per {title}")
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"{summary.get('n_pairs', 0)} pairs, schema-valid share {summary.get('schema_valid_share', 0):.0%}")
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
