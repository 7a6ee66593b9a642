"""``toolrm quickstart``: the whole product on the embedded default, offline, on a CPU.

Four stages, each reusing the library's own entry points (no second pipeline):

1. **synth**: ``recipes/synth/cpu_default.yaml`` (offline packaged sources, mutation negatives; no
   BFCL single-turn question) -> ``DIR/synth/pairs.jsonl``;
2. **train**: ``recipes/rm/minilm_cpu.yaml`` on those pairs within ``minutes`` -> ``DIR/model/``;
3. **eval**: the ``rules``, ``rm`` and ``hybrid`` scorers on an FC-RewardBench-format set built from
   bfcl-eval's single-turn questions with verified mutation negatives (evaluation data, never
   training data), and on every ``--bench`` file -> ``DIR/eval/<name>/report.{md,json}`` + PNG;
4. **reward**: the verl reward function (``toolrm_rl.verl.reward.compute_score``) on a GRPO-style
   group of responses to one prompt -> ``DIR/reward_group.{md,json}``.

Then ``DIR/report.md`` and ``DIR/report.json`` gather everything. A finished stage leaves a marker
``DIR/.quickstart/<stage>.json`` with the settings it ran with: a rerun with the same settings reuses
it, different settings are refused (naming the stage) unless ``force``, which redoes every stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from toolrm_rl.config import option as _f
from toolrm_rl.config import wandb_offline_without_credentials
from toolrm_rl.core.io import atomic_write, write_json

log = logging.getLogger(__name__)

STAGES = ("synth", "train", "eval", "biases", "reward")
# Categories of the built-in evaluation set: BFCL's Python single-turn questions (Java/JavaScript
# values are source literals that the mutation operators do not rewrite).
BENCH_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple",
                    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
# What the paper reports on FC-RewardBench (approximate, from summaries of arXiv 2509.11963).
PAPER_REFERENCE = {"random": 0.5, "general-purpose RMs": "0.45-0.80", "LLM judges 70B+": ">0.80",
                   "ToolRM-14B": "0.82-0.88"}


@dataclass
class QuickstartConfig:
    """``toolrm quickstart`` settings; the defaults are the README's first command."""

    out: str = _f("runs/quickstart", "Output directory: model/, report.md, report.json, plots, stage markers.")
    minutes: float = _f(12.0, "Training time budget in minutes (the CPU recipe stops cleanly and saves).")
    max_train_pairs: int = _f(5_200, "Training pairs drawn from the synthesized ones: about what one epoch on 2 CPU cores "
                                     "gets through in 12 minutes (~1,650 groups of one chosen and ~3 negatives, 4 groups "
                                     "a step at ~1.8 s), so the learning-rate schedule ends with the budget.")
    max_steps: int = _f(-1, "Stop training after this many steps (-1: the time budget / one epoch decides).")
    synth_examples: int | None = _f(None, "Source examples for synthesis (None: every example of the sources).")
    synth_sources: list | None = _f(None, "Offline sources for synthesis (None: the sources of "
                                          "recipes/synth/cpu_default.yaml, the one list both use).")
    eval_pairs: int = _f(1500, "Pairs in the built-in BFCL mutation evaluation set.")
    bias_pairs: int = _f(200, "Pairs per bias in the bias suite (toolrm eval biases; a seeded sample of each).")
    bench: list = _f([], "Extra FC-RewardBench-format files to evaluate on (e.g. real failure pairs).")
    recipes_dir: str | None = _f(None, "Folder with synth/cpu_default.yaml and rm/minilm_cpu.yaml (None: the repo's recipes/).")
    wandb: bool = _f(True, "Log training and evaluation to wandb (offline automatically without credentials).")
    seed: int = _f(0, "Seed for synthesis, the evaluation set and the reward group.")
    force: bool = _f(False, "Redo every stage, replacing earlier outputs in out/.")
    show_progress: bool = _f(True, "Progress bars.")


class QuickstartError(RuntimeError):
    """A quickstart stage cannot run as asked (e.g. earlier outputs made with other settings)."""


# -- stage bookkeeping ------------------------------------------------------------------------------

def _fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_stage(out: Path, name: str, settings: dict[str, Any], fn: Callable[[], dict[str, Any]], *, force: bool,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run stage ``name`` unless a marker says it finished with the same ``settings``; returns its result.

    Raises :class:`QuickstartError` when the marker was written with other settings and not ``force``.
    """
    marker = out / ".quickstart" / f"{name}.json"
    fp = _fingerprint(settings)
    if marker.exists() and not force:
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("fingerprint") == fp:
            echo(f"[{name}] reusing the finished stage in {out} (--force to redo)")
            return done["result"]
        changed = sorted(k for k in settings if done.get("settings", {}).get(k) != settings[k])
        raise QuickstartError(f"stage {name!r} in {out} was run with other settings ({', '.join(changed) or '?'} "
                              f"differ); use another --out or --force to redo it")
    echo(f"[{name}] running")
    start = time.perf_counter()
    result = fn()
    result["seconds"] = round(time.perf_counter() - start, 1)
    write_json(marker, {"stage": name, "fingerprint": fp, "settings": settings, "result": result}, indent=2,
               default=str)
    return result


def recipes_dir(cfg: QuickstartConfig) -> Path:
    """The recipes folder: ``cfg.recipes_dir`` or the repository's ``recipes/`` next to the package."""
    path = Path(cfg.recipes_dir) if cfg.recipes_dir else Path(__file__).resolve().parents[1] / "recipes"
    if not (path / "synth" / "cpu_default.yaml").exists() or not (path / "rm" / "minilm_cpu.yaml").exists():
        raise QuickstartError(f"recipes not found in {path}: run from a clone of the repository or pass "
                              f"--recipes DIR (with synth/cpu_default.yaml and rm/minilm_cpu.yaml)")
    return path


# -- 1. synthesis -----------------------------------------------------------------------------------

def synth_config(cfg: QuickstartConfig, out: Path) -> Any:
    """The CPU default synthesis recipe with the quickstart's output folder, seed and optional limits."""
    from toolrm_rl.data.synth import load_config

    overrides = [f"output_dir={out / 'synth'}", f"seed={cfg.seed}", f"show_progress={cfg.show_progress}"]
    if cfg.synth_sources is not None:
        overrides.append(f"sources=[{','.join(cfg.synth_sources)}]")
    if cfg.synth_examples is not None:
        overrides.append(f"max_examples={cfg.synth_examples}")
    return load_config(recipes_dir(cfg) / "synth" / "cpu_default.yaml", overrides)


def stage_synth(cfg: QuickstartConfig, out: Path) -> dict[str, Any]:
    """Synthesize training pairs with the CPU default recipe into ``out/synth``."""
    from toolrm_rl.data.synth import summary_markdown, synthesize

    scfg = synth_config(cfg, out)
    res = synthesize(scfg, force=cfg.force)
    print(summary_markdown(res.summary))
    return {"pairs_file": str(res.pairs_file), "summary": res.summary, "summary_png": str(out / "synth" / "summary.png")}


# -- 2. training ------------------------------------------------------------------------------------

def stage_train(cfg: QuickstartConfig, out: Path, pairs_file: str) -> dict[str, Any]:
    """Train the embedded MiniLM ToolRM on the synthesized pairs; the final checkpoint goes to ``out/model``."""
    from toolrm_rl.model.train import load_config, train

    train_dir, model_dir = out / "train", out / "model"
    if cfg.force:
        shutil.rmtree(train_dir, ignore_errors=True)
    overrides = ["data.sources=[]", f"data.train_files=[{pairs_file}]", "data.file_eval_fraction=0.05",
                 f"data.seed={cfg.seed}", f"data.max_train_pairs={cfg.max_train_pairs}",
                 f"train.output_dir={train_dir}", f"train.max_minutes={cfg.minutes}",
                 f"train.max_steps={cfg.max_steps}", f"train.report_to={'wandb' if cfg.wandb else 'none'}",
                 "data.max_eval_pairs=400", "train.eval_steps=null",  # one held-out evaluation, at the end
                 "train.run_name=quickstart-train"]
    tcfg = load_config(recipes_dir(cfg) / "rm" / "minilm_cpu.yaml", overrides)
    result = train(tcfg)
    tmp = out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(result.final_dir, tmp)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(tmp, model_dir)
    metrics = result.metrics
    curve = _plot_training(train_dir, out / "training_loss.png")
    ev = metrics.get("eval") or {}
    return {"model_dir": str(model_dir), "train_minutes": metrics.get("train_minutes"),
            "train_steps": (metrics.get("train") or {}).get("global_step") or _last_step(train_dir),
            "train_pairs": (metrics.get("data") or {}).get("n_train"),
            "heldout_pairs": (metrics.get("data") or {}).get("n_eval"),
            "heldout_accuracy": ev.get("eval_accuracy"), "tokens_per_second": metrics.get("train_tokens_per_second"),
            "loss_png": str(curve) if curve else None}


def _trainer_state(train_dir: Path) -> dict[str, Any] | None:
    states = sorted(train_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1]))
    return json.loads(states[-1].read_text()) if states else None


def _last_step(train_dir: Path) -> int | None:
    state = _trainer_state(train_dir)
    return state.get("global_step") if state else None


def _plot_training(train_dir: Path, path: Path) -> Path | None:
    """Training loss (and held-out accuracy) over steps from the last checkpoint's trainer state."""
    from toolrm_rl.eval.plots import line_chart

    state = _trainer_state(train_dir)
    rows = [h for h in (state or {}).get("log_history", []) if "loss" in h]
    if len(rows) < 2:
        return None
    return line_chart([h["step"] for h in rows], {"train loss": [h["loss"] for h in rows]}, path,
                      title="ToolRM training loss (Bradley-Terry + centering)", xlabel="step", ylabel="loss")


# -- 3. evaluation ----------------------------------------------------------------------------------

def bfcl_mutation_bench(n: int, seed: int = 0, categories: tuple[str, ...] = BENCH_CATEGORIES) -> list:
    """An FC-RewardBench-format evaluation set: BFCL single-turn questions, chosen = the ground truth,
    rejected = one verified mutation negative (``model_name`` = ``mutation:<operator>``).

    For evaluation only: BFCL single-turn questions never enter training data.
    """
    from toolrm_rl.data.bfcl import load_bfcl
    from toolrm_rl.data.pairs import mutation_pairs

    examples = load_bfcl(categories)  # source = category: the pairs' test_category
    random.Random(seed).shuffle(examples)
    pairs, _ = mutation_pairs(examples, negatives_per_example=1, schema_valid_share=0.7, seed=seed)
    return pairs[:n]


def _evaluate_set(out: Path, name: str, path: str, model_dir: str, seed: int, wandb: bool) -> dict[str, Any]:
    """Evaluate rules, rm and hybrid on one FC-RewardBench-format file; reports go to ``out/eval/<name>``."""
    from toolrm_rl.data.records import load_pairs
    from toolrm_rl.eval.fc_rewardbench import (
        evaluate_pairs,
        markdown_table,
        result_json,
        schema_valid_mask,
        write_reports,
    )
    from toolrm_rl.scoring import build_scorers

    pairs, load_report = load_pairs(path)
    scorers = list(build_scorers(["rules", "rm", "hybrid"], model_dir).values())  # hybrid shares the rm's model
    valid = schema_valid_mask(pairs)
    reports = [evaluate_pairs(s, pairs, valid=valid, seed=seed) for s in scorers]
    paths = write_reports(reports, out / "eval" / name, data=path)
    print(f"\n{name}: {len(pairs)} pairs from {path}\n" + markdown_table(reports, "by_category"))
    result = {"data": path, "n": len(pairs), "n_skipped": load_report.n_skipped, "report_dir": str(out / "eval" / name),
              "png": str(paths["png"]), "rm_seconds": round(reports[1].seconds, 1),
              "scorers": result_json(reports)["scorers"]}
    if wandb:
        _log_eval_wandb({name: result}, out)
    return result


def stage_eval(cfg: QuickstartConfig, out: Path, model_dir: str) -> dict[str, Any]:
    """Build the BFCL mutation evaluation set and evaluate rules, rm and hybrid on it."""
    from toolrm_rl.data.records import save_pairs

    bench_file = out / "eval" / "bfcl_mutations.jsonl"
    bench_file.parent.mkdir(parents=True, exist_ok=True)
    save_pairs(bfcl_mutation_bench(cfg.eval_pairs, cfg.seed), bench_file, schema="fc_rewardbench")
    return _evaluate_set(out, "bfcl_mutations", str(bench_file), model_dir, cfg.seed, cfg.wandb)


def stage_biases(cfg: QuickstartConfig, out: Path, model_dir: str) -> dict[str, Any]:
    """The bias suite (``toolrm eval biases``) on the trained RM: fewer/more calls, no call, abstention,
    near-miss values, on hold-out examples of the training sources -> ``out/eval/biases``."""
    from toolrm_rl.eval.biases import BiasConfig, markdown, run_biases

    report = run_biases(BiasConfig(model=model_dir, scorer="rm", limit=cfg.bias_pairs, seed=cfg.seed,
                                   out=str(out / "eval" / "biases")))
    print("\nbias suite (rm)\n" + markdown(report))
    return {"report_dir": str(out / "eval" / "biases"), "biases": report["biases"]}


def bench_names(paths: list[str]) -> dict[str, str]:
    """A unique report name per ``--bench`` file (its file name without suffixes).

    >>> bench_names(["a/dev.jsonl", "b/dev.jsonl", "c/test.parquet"])
    {'dev': 'a/dev.jsonl', 'dev_2': 'b/dev.jsonl', 'test': 'c/test.parquet'}
    """
    names: dict[str, str] = {}
    for path in paths:
        base = Path(path).name.split(".")[0] or "bench"
        name, k = base, 2
        while name in names or name == "bfcl_mutations":
            name, k = f"{base}_{k}", k + 1
        names[name] = str(path)
    return names


def _log_eval_wandb(results: dict[str, Any], out: Path) -> None:
    """One wandb run with a table (set, scorer, accuracy, schema-valid accuracy, n); offline without credentials."""
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed: skipping the evaluation table")
        return
    wandb_offline_without_credentials()
    run = wandb.init(project="toolrm-rl", name="quickstart-eval", dir=str(out), job_type="eval")
    table = wandb.Table(columns=["set", "scorer", "accuracy", "ties", "schema_valid_accuracy", "n"])
    for name, res in results.items():
        for scorer, r in res["scorers"].items():
            table.add_data(name, scorer, r["accuracy"], r["ties"], r["schema_valid_subset"].get("accuracy"), r["n"])
    run.log({"quickstart_eval": table})
    run.finish()


# -- 4. the verl reward on a GRPO-style group ------------------------------------------------------

def reward_group(seed: int = 0) -> tuple[Any, list[tuple[str, str]]]:
    """One training prompt (bfcl-eval's executable set, a fair training source) and a group of
    responses a policy might sample: the gold call, verified near misses, a schema-invalid call, no
    call, and unparsable text. Returns ``(example, [(label, response_text), ...])``."""
    from toolrm_rl.core.calls import ToolCall
    from toolrm_rl.core.parse import serialize
    from toolrm_rl.data.pairs import mutation_pairs
    from toolrm_rl.data.sources import load_source

    examples = [ex for ex in load_source("bfcl_exec") if len(ex.gold) == 1 and ex.gold[0].arguments]
    random.Random(seed).shuffle(examples)
    for ex in examples:
        pairs, _ = mutation_pairs([ex], negatives_per_example=6, schema_valid_share=1.0, seed=seed)
        near = [p for p in pairs if p.rejected and p.generator != "mutation:no_call"][:2]
        if len(near) == 2:
            break
    else:  # pragma: no cover - the packaged data always has such examples
        raise QuickstartError("no bfcl_exec example gives two near-miss negatives")
    gold = ex.gold[0]
    wrong_args = dict(gold.arguments)
    wrong_args["not_a_parameter"] = 1
    group = [("gold", serialize(ex.gold, "hermes"))]
    group += [(f"near miss ({p.generator.split(':', 1)[-1]}: {p.error_type})", serialize(p.rejected, "hermes"))
              for p in near]
    group += [("unexpected parameter (schema-invalid)", serialize([ToolCall(gold.name, wrong_args)], "hermes")),
              ("no call", "I can't help with that."),
              ("unparsable", "<tool_call>{\"name\": \"" + gold.name + "\", \"arguments\": {</tool_call>")]
    return ex, group


def stage_reward(cfg: QuickstartConfig, out: Path, model_dir: str) -> dict[str, Any]:
    """Score a GRPO-style group with ``toolrm_rl.verl.reward`` (in-process RM on CPU) and show the keys."""
    from toolrm_rl.verl.data import example_to_row
    from toolrm_rl.verl.reward import reward_sync

    ex, group = reward_group(cfg.seed)
    row = example_to_row(ex, 0, "train")
    kwargs = {"rm_source": "inprocess", "model_path": model_dir}
    rows = []
    for label, text in group:
        keys = reward_sync(row["data_source"], text, row["reward_model"]["ground_truth"], dict(row["extra_info"]), **kwargs)
        rows.append({"response": label, **keys})
    from toolrm_rl.eval.plots import md_table

    cols = list(rows[0])
    query = next((m["content"] for m in reversed(ex.conversation) if m.get("role") == "user"), "")
    md = (f"Prompt ({ex.id}): {query}\n\nGold: `{group[0][1]}`\n\n"
          + md_table(cols, [[r[c] for c in cols] for r in rows]))
    atomic_write(out / "reward_group.md", md)
    write_json(out / "reward_group.json", {"example": ex.id, "query": query, "reward_kwargs": kwargs,
                                            "responses": [{"text": t, **r} for (_, t), r in zip(group, rows)]},
               indent=2, default=str)
    print(md)
    return {"example": ex.id, "rows": rows, "md": str(out / "reward_group.md")}


# -- the whole run ----------------------------------------------------------------------------------

def _report(cfg: QuickstartConfig, out: Path, results: dict[str, Any]) -> str:
    from toolrm_rl.eval.plots import md_table

    syn, tr, ev = results["synth"], results["train"], results["eval"]
    s = syn["summary"]
    lines = ["# toolrm quickstart report", "",
             f"Output directory: `{out}`. Model: `{tr['model_dir']}` (plain HF checkpoint + toolrm.json).", "",
             "## 1. Synthesized training pairs", "",
             f"{s.get('n_pairs')} verified pairs in {syn['seconds']} s; schema-valid share "
             f"{s.get('schema_valid_share')}. Details: `{out / 'synth' / 'summary.md'}`.", "",
             "## 2. Reward model training (MiniLM-L6, CPU)", "",
             f"{tr.get('train_steps')} steps in {tr.get('train_minutes')} min on {tr.get('train_pairs')} pairs "
             f"({tr.get('tokens_per_second')} tokens/s); held-out synthetic pairwise accuracy "
             f"{_fmt(tr.get('heldout_accuracy'))} on {tr.get('heldout_pairs')} pairs.", "",
             "## 3. Pairwise accuracy (ties are not wins; random = 0.5)", ""]
    rows = []
    for name, res in ev["sets"].items():
        for scorer, r in res["scorers"].items():
            sv = r["schema_valid_subset"]
            rows.append([name, scorer, r["n"], _fmt(r["accuracy"]), f"[{_fmt(r['ci95'][0])}, {_fmt(r['ci95'][1])}]",
                         _fmt(r["tie_rate"]), _fmt(r.get("accuracy_ties_half")),
                         f"{_fmt(sv.get('accuracy'))} (n={sv.get('n')})"])
    lines += [md_table(["set", "scorer", "pairs", "accuracy", "95% CI", "tie rate", "ties as 1/2",
                        "schema-valid subset"], rows), "",
              "RM scoring time (all pairs of a set, both sides, on this machine): " +
              ", ".join(f"{name} {res.get('rm_seconds')} s for {res['n']} pairs" for name, res in ev["sets"].items()) + ".",
              "",
              "Paper reference on FC-RewardBench (approximate): " +
              ", ".join(f"{k} {v}" for k, v in PAPER_REFERENCE.items()) + ".", "",
              "## 4. Biases (held-out minimal pairs; ties are not wins)", "",
              md_table(["bias", "rm accuracy", "pairs"], [[b, _fmt(r.get("accuracy")), r.get("n")]
                                                          for b, r in results["biases"]["biases"].items()]), "",
              "fewer_calls: the gold vs one call dropped; more_calls: vs one call repeated (more_calls_extra: an "
              "extra call of the same function; more_calls_function: an extra call to another function); "
              "no_call: vs no call; abstain: no call is right vs a call to a remaining tool; "
              "near_miss: vs one near-miss value.", "",
              "## 5. The verl reward on one GRPO group", "", Path(results["reward"]["md"]).read_text(), ""]
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "n/a"


def run_quickstart(cfg: QuickstartConfig, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the four stages into ``cfg.out``; returns the ``report.json`` object."""
    out = Path(cfg.out)
    if cfg.minutes <= 0:
        raise QuickstartError("minutes: must be > 0")
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.force and any(out.iterdir()) and not (out / ".quickstart").exists():
        raise QuickstartError(f"{out} is not empty and holds no quickstart run: pick another --out or pass --force")
    results: dict[str, Any] = {}
    results["synth"] = run_stage(out, "synth", {"seed": cfg.seed, "synth_examples": cfg.synth_examples,
                                                "sources": list(synth_config(cfg, out).sources)},
                                 lambda: stage_synth(cfg, out), force=cfg.force, echo=echo)
    train_settings = {"seed": cfg.seed, "minutes": cfg.minutes, "max_steps": cfg.max_steps,
                      "max_train_pairs": cfg.max_train_pairs,
                      "pairs": results["synth"]["summary"].get("n_pairs")}
    results["train"] = run_stage(out, "train", train_settings,
                                 lambda: stage_train(cfg, out, results["synth"]["pairs_file"]), force=cfg.force, echo=echo)
    model_dir = results["train"]["model_dir"]
    sets = {"bfcl_mutations": run_stage(out, "eval", {**train_settings, "eval_pairs": cfg.eval_pairs},
                                        lambda: stage_eval(cfg, out, model_dir), force=cfg.force, echo=echo)}
    for name, path in bench_names(list(cfg.bench)).items():  # each file is its own stage: adding one later reuses the rest
        sets[name] = run_stage(out, f"bench-{name}", {**train_settings, "path": str(Path(path).resolve())},
                               lambda path=path, name=name: _evaluate_set(out, name, path, model_dir, cfg.seed, cfg.wandb),
                               force=cfg.force, echo=echo)
    results["eval"] = {"sets": sets}
    results["biases"] = run_stage(out, "biases", {**train_settings, "bias_pairs": cfg.bias_pairs},
                                  lambda: stage_biases(cfg, out, model_dir), force=cfg.force, echo=echo)
    results["reward"] = run_stage(out, "reward", train_settings, lambda: stage_reward(cfg, out, model_dir),
                                  force=cfg.force, echo=echo)
    report = {"config": dataclasses.asdict(cfg), **results, "paper_reference": PAPER_REFERENCE}
    write_json(out / "report.json", report, indent=2, default=str)
    atomic_write(out / "report.md", _report(cfg, out, results))
    return report
