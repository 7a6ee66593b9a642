"""Reward quality of the default recipe: train for a budget and seeds, evaluate on real failures.

    .venv/bin/python bench/bench_quality.py --pairs runs/synth/pairs.jsonl --steps 300 --seeds 0 1 \
        [--dev ../shared/data/bfcl_failures_dev.jsonl] [--biases] [--name NAME] [key=value ...]

For each seed: ``toolrm train recipes/rm/minilm_cpu.yaml`` on the pair file (``train.seed`` and
``data.seed`` set to the seed, ``report_to=none``, the extra ``key=value`` overrides passed through:
the lever under test), then the trained model on the dev file: rm alone and hybrid (schema gate,
the RM orders the rest) with ties as losses, rm on the pairs whose both calls pass the schema, by
error category, wrong_count split by direction (the rejected answer makes fewer / more calls than
the chosen one), and the schema-valid value errors split by where the differing values come from (the gold in
the request and the wrong value not, or the reverse: ``value_grounding_key``). With ``--biases`` the bias
suite (``toolrm eval biases``) runs too. One row per run is printed (and appended as JSON to
``--out``/results.jsonl), then the mean and spread per metric.
Compare levers with a budget in steps (``--steps``): wall minutes depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLRM = [str(Path(sys.executable).with_name("toolrm"))]


def train(pairs: str, seed: int, steps: int | None, minutes: float | None, out: Path, overrides: list[str]) -> dict:
    """Train one model; returns its metrics.json."""
    args = [*TOOLRM, "train", str(REPO / "recipes" / "rm" / "minilm_cpu.yaml"), "data.sources=[]",
            f"data.train_files=[{pairs}]", f"data.seed={seed}", f"train.seed={seed}", f"train.output_dir={out}",
            "train.report_to=none", "train.resume=false", "train.eval_steps=null"]
    args += [f"train.max_steps={steps}", "train.max_minutes=null"] if steps else [f"train.max_minutes={minutes}"]
    subprocess.run(args + overrides, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())


def evaluate(model: Path, dev: str) -> dict[str, float]:
    """rm / hybrid accuracy (ties as losses) on the dev file, schema-valid subset, categories, count direction."""
    from toolrm_rl.core.match import error_category
    from toolrm_rl.data.records import load_pairs
    from toolrm_rl.eval.fc_rewardbench import value_grounding_key
    from toolrm_rl.scoring import build_scorers, score_pairs

    pairs, _ = load_pairs(dev)
    examples = [(p.chosen_example(), p.rejected_example()) for p in pairs]
    scorers = build_scorers(["rules", "rm", "hybrid"], str(model))  # one model: hybrid reuses the rm's cached scores
    rm = score_pairs(scorers["rm"], examples)
    rules = score_pairs(scorers["rules"], examples)
    win_rm = [c > r for c, r in rm]
    win_hybrid = [c > r for c, r in score_pairs(scorers["hybrid"], examples)]  # the schema gate
    both_valid = [a == 0 and b == 0 for a, b in rules]

    def acc(wins: list[bool], keep: list[bool]) -> float:
        kept = [w for w, k in zip(wins, keep) if k]
        return round(sum(kept) / len(kept), 4) if kept else float("nan")

    row = {"rm": acc(win_rm, [True] * len(pairs)), "hybrid": acc(win_hybrid, [True] * len(pairs)),
           "rm_schema_valid": acc(win_rm, both_valid), "n_schema_valid": sum(both_valid)}
    cats = [error_category(p.error_type) for p in pairs]
    for cat in sorted(set(cats)):
        row[f"rm:{cat}"] = acc(win_rm, [c == cat for c in cats])
    fewer = [c == "wrong_count" and len(p.rejected) < len(p.chosen) for c, p in zip(cats, pairs)]
    more = [c == "wrong_count" and len(p.rejected) > len(p.chosen) for c, p in zip(cats, pairs)]
    row.update({"rm:count_fewer": acc(win_rm, fewer), "n_count_fewer": sum(fewer),
                "rm:count_more": acc(win_rm, more), "n_count_more": sum(more)})
    # Schema-valid value errors split by where the differing values come from (value_grounding_key): the gold
    # written in the request and the wrong value not ("= vs ?"), or the reverse ("? vs =": the gold converts
    # what the user wrote, the wrong answer copies it). A model that only prefers verbatim values wins the first
    # and loses the second.
    marks = [value_grounding_key(p).split(", ") if c == "wrong_value" and v else []
             for p, c, v in zip(pairs, cats, both_valid)]
    verbatim = [any(k[0] == "=" and k[-1] != "=" for k in m if " vs " in k) for m in marks]
    copied = [any(k[0] != "=" and k[-1] == "=" for k in m if " vs " in k) for m in marks]
    row.update({"rm:value_gold_verbatim": acc(win_rm, verbatim), "n_value_gold_verbatim": sum(verbatim),
                "rm:value_wrong_verbatim": acc(win_rm, copied), "n_value_wrong_verbatim": sum(copied)})
    return row


def biases(model: Path) -> dict[str, float]:
    """The bias suite's accuracy per bias (``toolrm eval biases --json``)."""
    proc = subprocess.run([*TOOLRM, "eval", "biases", "--model", str(model), "--json", "--limit", "300",
                           "--out", str(model.parent / "biases")], check=True, cwd=REPO, capture_output=True, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {f"bias:{k}": round(v["accuracy"], 4) if v["accuracy"] is not None else float("nan")
            for k, v in result["biases"].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, help="Training pair file (toolrm synth output).")
    ap.add_argument("--dev", default=str(REPO.parent / "shared" / "data" / "bfcl_failures_dev.jsonl"),
                    help="FC-RewardBench-format real-failure pairs (evaluation only).")
    ap.add_argument("--steps", type=int, default=None, help="Training budget in optimizer steps (comparisons).")
    ap.add_argument("--minutes", type=float, default=12.0, help="Training budget in wall minutes (without --steps).")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--biases", action="store_true", help="Also run the bias suite.")
    ap.add_argument("--name", default="run", help="Label of this configuration in the printed rows.")
    ap.add_argument("--out", default="runs/bench_quality", help="Models and results.jsonl go here.")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for toolrm train (the lever under test).")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        run_dir = out / f"{args.name}-s{seed}"
        start = time.monotonic()
        metrics = train(args.pairs, seed, args.steps, args.minutes, run_dir, args.overrides)
        row = {"name": args.name, "seed": seed, "steps": args.steps,
               "train_min": metrics.get("train_minutes"), "overrides": " ".join(args.overrides)}
        row.update(evaluate(run_dir / "final", args.dev))
        if args.biases:
            row.update(biases(run_dir / "final"))
        row["total_min"] = round((time.monotonic() - start) / 60, 1)
        rows.append(row)
        with (out / "results.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    keys = [k for k in rows[0] if isinstance(rows[0][k], float) and k.startswith(("rm", "hybrid", "bias"))]
    print(f"\n| {args.name} | " + " | ".join(keys) + " |")
    for label, fn in (("mean", statistics.mean), ("max-min", lambda v: max(v) - min(v))):
        print(f"| {label} | " + " | ".join(f"{fn([r[k] for r in rows]):.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
