"""Renderer throughput (inputs/s), against the renderer of an earlier commit in the same process.

    .venv/bin/python bench/bench_render.py [--baseline-rev REV] [--dev FILE] [--train FILE] [--n 2000] [--repeat 3]

Rendering is what a scorer does before every forward pass and what training does before step 1.
Sets: the dev file (FC-RewardBench-format pairs, both sides) and a training pair set (ToolRM-train-data
rows, both sides; default ``runs/quickstart/synth/pairs.jsonl``), rendered with the MiniLM tokenizer
and the ``recipes/rm/minilm_cpu.yaml`` render spec, plus ``--chat``: the same with the Qwen3 tokenizer
and its chat template. The baseline is ``toolrm_rl/core/render.py`` as of ``--baseline-rev`` (default: the
commit before the speed work), loaded from git as a separate module; both sides start with empty caches
(contexts, segment token counts) each round, rounds are interleaved, the best round is kept, and every output (text,
token count, truncation report, context) must be identical. The baseline's ``RenderSpec`` lacks the marks added
since (``mark_repeats``, ...): both sides render with the fields it knows, and the current renderer is timed once more
with the recipe's whole spec (the last column: what training and scoring run).

``--pool``: training-set rendering + tokenization (``model.train.tokenize_pairs``, group rows as ``train.loss=group``
builds them) in one process vs ``--num-proc`` forked processes, on the first ``--pool-sizes`` pairs of ``--train``
with the MiniLM tokenizer and the minilm_cpu render spec: seconds, pairs/s, the ratio, and whether the rows are
identical. It sets the size from which ``tokenize_pairs`` uses a pool by default (``RENDER_POOL_MIN_PAIRS``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_FILE = ROOT.parent / "shared" / "data" / "bfcl_failures_dev.jsonl"
TRAIN_FILE = ROOT / "runs" / "quickstart" / "synth" / "pairs.jsonl"
BASELINE_REV = "02293b0"  # main before issue 15's renderer changes


def load_baseline(rev: str):
    """``toolrm_rl.core.render`` as of ``rev``, imported under another name."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:toolrm_rl/core/render.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="render-baseline-")) / "render_baseline.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("render_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_baseline"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def examples(path: Path, n: int) -> list:
    """Both sides of the first ``n // 2`` pairs of a pair file, as RMExamples (side by side, like scoring)."""
    from toolrm_rl.data.records import load_pairs

    pairs = load_pairs(path, limit=(n + 1) // 2)[0]
    return [ex for p in pairs for ex in (p.chosen_example(), p.rejected_example())]


def run(module, items: list, spec_fields: dict, tokenizer) -> tuple[float, list]:
    """Seconds to render ``items`` cold, and the outputs."""
    spec = module.RenderSpec(**spec_fields)
    module._CONTEXTS.clear()
    getattr(module, "_SEGMENT_COUNTS", {}).clear()  # the token counts of segments seen in an earlier round
    t = time.perf_counter()
    out = [module.render(ex.tools, ex.conversation, ex.calls, spec=spec, tokenizer=tokenizer, candidate_text=ex.text)
           for ex in items]
    seconds = time.perf_counter() - t
    return seconds, [(r.text, r.n_tokens, r.n_tokens_exact, dataclasses.asdict(r.truncation), r.context) for r in out]


def main_pool(args: argparse.Namespace) -> None:
    """``--pool``: tokenize_pairs in one process vs a process pool, same rows."""
    import yaml
    from transformers import AutoTokenizer

    from toolrm_rl.core import render
    from toolrm_rl.core.render import RenderSpec
    from toolrm_rl.data.backbones import minilm_dir
    from toolrm_rl.data.records import load_pairs
    from toolrm_rl.model.train import tokenize_pairs

    if not args.train.is_file():
        sys.exit(f"{args.train} does not exist (a ToolRM-train-data pair file: --train)")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    fields = dict(yaml.safe_load((ROOT / "recipes" / "rm" / "minilm_cpu.yaml").read_text())["model"]["render"])
    spec = RenderSpec.from_dict({**RenderSpec(mode="plain", sep=" [SEP] ").to_dict(), **fields})
    sizes = [int(x) for x in args.pool_sizes.split(",")]
    everything = load_pairs(args.train, limit=max(sizes))[0]
    print(f"{args.train}: tokenize_pairs(group=True), 1 vs {args.num_proc} processes; best of {args.repeat} "
          f"interleaved rounds")
    for size in sizes:
        pairs = everything[:size]
        best = {1: float("inf"), args.num_proc: float("inf")}
        rows = {}
        for r in range(args.repeat):
            for procs in (list(best) if r % 2 == 0 else list(best)[::-1]):
                render._CONTEXTS.clear()  # cold caches each round (a fork would inherit warm ones)
                render._SEGMENT_COUNTS.clear()
                t = time.perf_counter()
                ds, cut = tokenize_pairs(pairs, tokenizer, spec, spec.max_tokens, desc=None, group=True,
                                         num_proc=procs)  # desc None: no progress bar
                best[procs] = min(best[procs], time.perf_counter() - t)
                rows[procs] = (ds.to_dict(), cut)
        one, many = best[1], best[args.num_proc]
        print(f"{len(pairs):6} pairs: 1 process {one:6.2f} s ({len(pairs) / one:6.0f} pairs/s), {args.num_proc} processes "
              f"{many:6.2f} s ({len(pairs) / many:6.0f} pairs/s); ratio {one / many:.2f}x; identical rows "
              f"{rows[1] == rows[args.num_proc]}")


def main(argv: list[str] | None = None) -> None:
    """The benchmark (``argv``: command-line arguments, default ``sys.argv[1:]``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    ap.add_argument("--dev", type=Path, default=DEV_FILE)
    ap.add_argument("--train", type=Path, default=TRAIN_FILE)
    ap.add_argument("--n", type=int, default=2000, help="inputs per set (both sides of n/2 pairs)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chat", action="store_true", help="also the Qwen3 chat-template rendering")
    ap.add_argument("--pool", action="store_true", help="tokenize_pairs: one process vs a pool (module doc)")
    ap.add_argument("--num-proc", type=int, default=2, help="--pool: processes")
    ap.add_argument("--pool-sizes", default="500,1000,2000,8000", help="--pool: pair counts, comma-separated")
    args = ap.parse_args(argv)
    if args.pool:
        return main_pool(args)

    import yaml
    from transformers import AutoTokenizer

    from toolrm_rl.core import render as current
    from toolrm_rl.data.backbones import minilm_dir, qwen3_tokenizer_dir

    baseline = load_baseline(args.baseline_rev)
    plain = dict(yaml.safe_load((ROOT / "recipes" / "rm" / "minilm_cpu.yaml").read_text())["model"]["render"])
    setups = [("plain/minilm", plain, AutoTokenizer.from_pretrained(str(minilm_dir())))]
    if args.chat:
        setups.append(("chat/qwen3", {"mode": "chat_template", "max_tokens": 1024, "candidate_tokens": 64},
                       AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir()))))
    sets = [(name, path) for name, path in (("dev", args.dev), ("train", args.train)) if path.is_file()]
    if not sets:
        sys.exit(f"neither {args.dev} nor {args.train} exists")
    print(f"baseline: render.py at {args.baseline_rev}; best of {args.repeat} interleaved rounds, cold caches")
    for set_name, path in sets:
        items = examples(path, args.n)
        for setup_name, fields, tok in setups:
            # The baseline's RenderSpec lacks the marks added since (mark_repeats, ...): both sides render with the
            # fields it knows (the rest at their defaults, off) for the identity check; "recipe" is the current
            # renderer with every field of the recipe, what training and scoring run.
            known = {f.name for f in dataclasses.fields(baseline.RenderSpec)}
            common = {k: v for k, v in fields.items() if k in known}
            left_out = sorted(set(fields) - known)
            sides = {"baseline": (baseline, common), "current": (current, common)}
            if left_out:  # otherwise "current" already renders the whole spec
                sides["recipe"] = (current, fields)
            best = dict.fromkeys(sides, float("inf"))
            outputs = {}
            for r in range(args.repeat):
                for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                    module, spec_fields = sides[side]
                    seconds, outputs[side] = run(module, items, spec_fields, tok)
                    best[side] = min(best[side], seconds)
            same = sum(a == b for a, b in zip(outputs["baseline"], outputs["current"]))
            print(f"{set_name:5} {setup_name:12} {len(items)} inputs: baseline {len(items) / best['baseline']:7.0f} "
                  f"inputs/s, current {len(items) / best['current']:7.0f} inputs/s, ratio "
                  f"{best['baseline'] / best['current']:.2f}x; identical outputs {same}/{len(items)}"
                  + (f"; current with the recipe's {', '.join(left_out)} too: "
                     f"{len(items) / best['recipe']:7.0f} inputs/s" if left_out else ""))


if __name__ == "__main__":
    main()
