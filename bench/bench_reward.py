"""Per-sample latency of the verl reward, and what the toolrm manager's cross-sample batching buys.

    .venv/bin/python bench/bench_reward.py [--n 128] [--model DIR] [--no-server] [--rounds 2] [--out DIR]

Samples: ``--n`` verl rows written by ``toolrm_rl.verl.data`` from the offline ``bfcl_exec`` source
(never BFCL single-turn questions), each with a response in hermes format: the gold calls (1/2), a
mutation of them (1/4, mostly schema-valid near misses) or a call to an unknown function (1/4, gated
before the RM). Measured in one process, rounds interleaved, best round kept:

- ``compute_score`` one sample at a time: rules only (``rm_source=none``), the RM in-process
  (``inprocess``, the checkpoint on CPU), and through ``toolrm serve`` on loopback (``server``,
  started as a subprocess by ``bench/bench_server.py``'s ``Server``; skipped with ``--no-server``).
- The ``toolrm`` reward manager scoring all samples concurrently (as verl's reward worker calls it),
  batching RM inputs across samples (window 20 ms, up to 64) versus the same manager with
  ``max_batch=1`` (one RM call per sample): the ratio is the batching speed-up, measured in the same run.

The model is ``runs/toolrm-minilm/final`` (or ``--model DIR``; ``--model tiny``: a tiny random BERT, where
the forward is cheap and per-call overhead dominates, as with a GPU or a remote RM). Read ratios, not
absolute numbers: the machine may be shared. ``--out`` writes results.json, results.md and latency.png.

``--groups``: a GRPO batch of ``--prompts`` (64) prompts x ``--responses`` (8) responses (the gold calls and
distinct schema-valid mutations, so they reach the RM) through the ``toolrm`` manager with an
in-process DECODER ToolRM (``--decoder``: a random Qwen3 with the real Qwen3 tokenizer, ``small`` = 256 wide and
4 layers, ``tiny`` = 64 x 2; ``smollm2``; or a checkpoint directory): one RM call per sample, cross-sample batches, and
cross-sample batches with group scoring (``rm_group``: each prompt once with the KV cache); wall times,
ratios to per-sample calls and the max |difference| of the RM scores. ``--group-max-batches 64,256,512`` runs
the grouped side at each ``max_batch`` in the same run (and prints the process's peak RSS after each, in
increasing order, so a growth is that setting's).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "runs" / "toolrm-minilm" / "final"


def build_samples(n: int, seed: int = 0) -> list[dict]:
    """``n`` (row, response) samples from the offline bfcl_exec source."""
    from toolrm_rl.core.calls import ToolCall
    from toolrm_rl.core.parse import to_hermes
    from toolrm_rl.data.mutate import mutate
    from toolrm_rl.data.sources import load_source
    from toolrm_rl.verl.data import example_to_row

    examples = [ex for ex in load_source("bfcl_exec") if ex.gold]
    random.Random(seed).shuffle(examples)
    samples = []
    for k, ex in enumerate(examples[:n]):
        calls = ex.gold
        if k % 4 == 1:
            wrong = next(iter(mutate(ex.gold, ex.tools, seed=k)), None)
            calls = wrong[1] if wrong is not None else calls
        elif k % 4 == 3:
            calls = [ToolCall(ex.gold[0].name + "_v2", dict(ex.gold[0].arguments))]
        row = example_to_row(ex, k, "train")
        samples.append({"row": row, "response": to_hermes(calls)})
    return samples


def clear_score_caches() -> None:
    """Forget the in-process scorer's cached scores (it caches by rendered text; every run here repeats
    the same texts, which would turn every measurement after the first into cache look-ups)."""
    from toolrm_rl.verl import scorers

    for scorer in scorers._SCORERS.values():
        cache = getattr(getattr(scorer, "scorer", None), "_cache", None)
        if cache is not None:
            cache.clear()


async def per_sample(samples: list[dict], kwargs: dict) -> list[float]:
    """Latency (ms) of compute_score for each sample, called one after another."""
    from toolrm_rl.verl.reward import compute_score

    clear_score_caches()
    out = []
    for s in samples:
        row = s["row"]
        t = time.perf_counter()
        result = await compute_score(row["data_source"], s["response"], row["reward_model"]["ground_truth"],
                                     row["extra_info"], **kwargs)
        out.append((time.perf_counter() - t) * 1000)
        if result["fallback"]:
            raise RuntimeError(f"reward fell back with {kwargs}: the RM is not answering")
    return out


def make_batch(samples: list[dict], tokenizer):
    """A DataProto of the samples, as verl's rollout hands it to the reward loop."""
    import numpy as np
    import torch
    from verl import DataProto

    pad = tokenizer.pad_token_id
    ids = [tokenizer(s["response"] + "<|im_end|>", add_special_tokens=False)["input_ids"] for s in samples]
    width = max(map(len, ids))
    prompts = torch.full((len(ids), 4), pad)
    responses = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    mask = torch.tensor([[1] * 4 + [1] * len(x) + [0] * (width - len(x)) for x in ids])
    rows = [s["row"] for s in samples]
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask},
        non_tensors={"data_source": np.array([r["data_source"] for r in rows], dtype=object),
                     "reward_model": np.array([r["reward_model"] for r in rows], dtype=object),
                     "extra_info": np.array([r["extra_info"] for r in rows], dtype=object)})


def build_group_samples(prompts: int, responses: int, seed: int = 0) -> list[dict]:
    """``prompts`` x ``responses`` samples (row, response): per bfcl_exec prompt its gold calls and distinct
    schema-valid mutations (so they reach the RM), the responses of one prompt side by side (as verl's
    rollout orders a GRPO group)."""
    from toolrm_rl.core.parse import to_hermes
    from toolrm_rl.core.schema import check_calls
    from toolrm_rl.data.mutate import mutate
    from toolrm_rl.data.sources import load_source
    from toolrm_rl.verl.data import example_to_row

    examples = [ex for ex in load_source("bfcl_exec") if ex.gold]
    random.Random(seed).shuffle(examples)
    samples: list[dict] = []
    for k, ex in enumerate(examples):
        seen = {repr(ex.gold): ex.gold}
        for s in range(8):
            for _, calls in mutate(ex.gold, ex.tools, seed=k * 100 + s):
                if calls and check_calls(calls, ex.tools).ok:
                    seen.setdefault(repr(calls), calls)
        if len(seen) < responses:
            continue
        row = example_to_row(ex, k, "train")
        samples += [{"row": row, "response": to_hermes(calls)} for calls in list(seen.values())[:responses]]
        if len(samples) == prompts * responses:
            break
    return samples


def decoder_checkpoint(spec: str, directory: Path) -> Path:
    """A decoder ToolRM checkpoint with a fixed (saved) head: a random Qwen3 of the named size, SmolLM2 with
    a seeded fresh head (``smollm2``, 512-token inputs), or ``spec`` itself when it is a directory."""
    if Path(spec).is_dir():
        return Path(spec)
    import torch

    from toolrm_rl.core.render import RenderSpec
    from toolrm_rl.core.toolrm_json import write_toolrm_json
    from toolrm_rl.data.backbones import build_tiny_qwen3, resolve_backbone
    from toolrm_rl.model import ToolRM

    if spec == "smollm2":  # every load of the causal LM draws a new head: save one, so all modes score alike
        torch.manual_seed(0)
        rm = ToolRM.from_pretrained(resolve_backbone("embedded:smollm2"), decoder_max_tokens=512)
        rm.save_pretrained(directory / "smollm2")
        return directory / "smollm2"

    width, layers = {"tiny": (64, 2), "small": (256, 4)}[spec]
    path = build_tiny_qwen3(directory / f"qwen3-{width}x{layers}", hidden_size=width, layers=layers)
    write_toolrm_json(path, RenderSpec(mode="chat_template", max_tokens=1024), "decoder")
    return path


async def manager_scores(data, tokenizer, kwargs: dict) -> tuple[float, int, list[float], int]:
    """(wall ms, RM calls, rm_score per sample, schema-valid samples) for the toolrm manager scoring every
    sample concurrently (raises when the manager fell back to rules)."""
    from omegaconf import OmegaConf

    from toolrm_rl.verl.manager import ToolRMRewardManager

    config = OmegaConf.create({"reward": {"custom_reward_function": {"reward_kwargs": kwargs}}})
    mgr = ToolRMRewardManager(config, tokenizer, None)
    clear_score_caches()
    t = time.perf_counter()
    outs = await asyncio.gather(*(mgr.run_single(data[i:i + 1]) for i in range(len(data))))
    wall = (time.perf_counter() - t) * 1000
    if any(o["reward_extra_info"]["fallback"] for o in outs):
        raise RuntimeError(f"manager fell back with {kwargs}")
    batcher = mgr._batchers.get(id(asyncio.get_running_loop()))
    info = [o["reward_extra_info"] for o in outs]
    return wall, batcher.n_calls if batcher else 0, [i["rm_score"] for i in info], sum(i["valid"] == 1.0 for i in info)


def main_groups(args: argparse.Namespace) -> None:
    """``--groups``: per-sample RM calls vs cross-sample batches vs batches with group scoring."""
    import tempfile

    from transformers import AutoTokenizer

    from toolrm_rl.data.backbones import qwen3_tokenizer_dir

    model = decoder_checkpoint(args.decoder, Path(tempfile.mkdtemp(prefix="toolrm-decoder-")))
    samples = build_group_samples(args.prompts, args.responses)
    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())  # the policy's tokenizer
    data = make_batch(samples, tokenizer)
    base = {"rm_source": "inprocess", "model_path": str(model)}
    group_batches = sorted({int(x) for x in args.group_max_batches.split(",")} if args.group_max_batches
                           else {args.max_batch})
    modes = {"per-sample": {**base, "batch_window_ms": 0.0, "max_batch": 1, "rm_group": False},
             "batched": {**base, "batch_window_ms": args.window_ms, "max_batch": args.max_batch, "rm_group": False}}
    for size in group_batches:
        modes["batched+group" if len(group_batches) == 1 else f"group mb={size}"] = {
            **base, "batch_window_ms": args.window_ms, "max_batch": size, "rm_group": True}
    asyncio.run(manager_scores(data[:16], tokenizer, modes[list(modes)[-1]]))  # warm-up: model loads, shapes
    best: dict[str, tuple[float, int, list[float], int]] = {}
    peak_mb: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, kw in modes.items():
            got = asyncio.run(manager_scores(data, tokenizer, kw))
            peak_mb[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
            if name not in best or got[0] < best[name][0]:
                best[name] = got
    rules_ms = min(asyncio.run(manager_scores(data, tokenizer, {"rm_source": "none"}))[0] for _ in range(args.rounds))
    reference = best["per-sample"][2]
    print(f"{len(samples)} samples ({args.prompts} prompts x {args.responses} responses; {best['per-sample'][3]} "
          f"schema-valid reach the RM), decoder "
          f"{args.decoder} ({model}), torch threads {args.threads}, best of {args.rounds} rounds; "
          f"window {args.window_ms} ms, max_batch {args.max_batch}")
    print(f"rules only    : {rules_ms / 1000:7.2f} s (the manager without the RM: decoding, parsing, checks)")
    for name, (wall, calls, scores, _) in best.items():
        diff = max(abs(a - b) for a, b in zip(reference, scores))
        print(f"{name:14}: {wall / 1000:7.2f} s, {calls:4} RM calls, speed-up vs per-sample "
              f"{best['per-sample'][0] / wall:5.2f}x, max |rm_score diff| {diff:.2e}, peak RSS {peak_mb[name]:,.0f} MiB")


def stats(ms: list[float]) -> dict:
    ordered = sorted(ms)
    return {"mean_ms": statistics.fmean(ms), "p50_ms": ordered[len(ms) // 2],
            "p99_ms": ordered[min(len(ms) - 1, int(0.99 * len(ms)))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--no-server", action="store_true")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=64, help="the manager's max_batch on the batched side")
    ap.add_argument("--window-ms", type=float, default=20.0, help="the manager's batch_window_ms on the batched side")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, here and in the server")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--groups", action="store_true",
                    help="per-sample vs batched vs grouped decoder scoring (module doc)")
    ap.add_argument("--prompts", type=int, default=64, help="--groups: prompts in the GRPO batch")
    ap.add_argument("--responses", type=int, default=8, help="--groups: responses per prompt")
    ap.add_argument("--group-max-batches", default="", help="--groups: comma list of the grouped side's max_batch "
                    "values, measured in one run (default: --max-batch)")
    ap.add_argument("--decoder", default="small", help="--groups: tiny, small (random Qwen3 sizes), smollm2 or a "
                    "checkpoint dir")
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer

    from toolrm_rl.data.backbones import qwen3_tokenizer_dir

    torch.set_num_threads(args.threads)
    if args.groups:
        return main_groups(args)
    sys.path.insert(0, str(ROOT / "bench"))
    if str(args.model) == "tiny":  # a forward costs little: the regime where per-call overhead shows
        import tempfile

        from bench_server import tiny_model

        args.model = tiny_model(Path(tempfile.mkdtemp(prefix="toolrm-tiny-")))
    if not (args.model / "config.json").is_file():
        sys.exit(f"no ToolRM checkpoint at {args.model} (train one: toolrm train recipes/rm/minilm_cpu.yaml)")
    samples = build_samples(args.n)
    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())  # the policy's tokenizer, for the manager
    data = make_batch(samples, tokenizer)
    sources = {"rules": {"rm_source": "none"}, "inprocess": {"rm_source": "inprocess", "model_path": str(args.model)}}

    server = None
    if not args.no_server:
        from bench_server import Server

        server = Server(args.model, max_batch=64, max_wait_ms=5.0, torch_threads=args.threads).__enter__()
        sources["server"] = {"rm_source": "server", "server_url": server.url, "timeout_s": 60.0}
    try:
        best: dict[str, list[float]] = {}
        managers: dict[str, dict] = {}
        for name, kw in sources.items():  # warm-up: model load, connections, and the batch shapes
            asyncio.run(per_sample(samples[:4], kw))  # (a first forward at a new shape is slow on CPU)
            if name != "rules":
                asyncio.run(manager_scores(data, tokenizer, {**kw, "batch_window_ms": args.window_ms,
                                                             "max_batch": args.max_batch}))
        for _ in range(args.rounds):
            for name, kw in sources.items():
                ms = asyncio.run(per_sample(samples, kw))
                if name not in best or sum(ms) < sum(best[name]):
                    best[name] = ms
            for name, kw in sources.items():
                if name == "rules":
                    continue
                batched = asyncio.run(manager_scores(data, tokenizer, {**kw, "batch_window_ms": args.window_ms,
                                                                        "max_batch": args.max_batch}))
                single = asyncio.run(manager_scores(data, tokenizer, {**kw, "batch_window_ms": 0.0, "max_batch": 1}))
                m = managers.setdefault(name, {"batched_ms": batched[0], "batched_calls": batched[1],
                                               "per_sample_ms": single[0], "per_sample_calls": single[1]})
                if batched[0] < m["batched_ms"]:
                    m.update(batched_ms=batched[0], batched_calls=batched[1])
                if single[0] < m["per_sample_ms"]:
                    m.update(per_sample_ms=single[0], per_sample_calls=single[1])
    finally:
        if server is not None:
            server.__exit__(None, None, None)

    from toolrm_rl.core.io import atomic_write, write_json
    from toolrm_rl.eval.plots import bar_chart, md_table

    lat_rows = [[name, round(s["mean_ms"], 3), round(s["p50_ms"], 3), round(s["p99_ms"], 3)]
                for name, s in ((n, stats(ms)) for n, ms in best.items())]
    mgr_rows = [[name, round(m["per_sample_ms"], 1), m["per_sample_calls"], round(m["batched_ms"], 1), m["batched_calls"],
                 round(m["per_sample_ms"] / m["batched_ms"], 2)] for name, m in managers.items()]
    text = (f"Reward latency, {len(samples)} samples (schema-valid ones reach the RM), model {args.model}, torch threads "
            f"{args.threads}, best of {args.rounds} rounds\n\n"
            + md_table(["rm_source", "mean ms/sample", "p50 ms", "p99 ms"], lat_rows)
            + f"\ntoolrm manager, all samples concurrent: one RM call per sample vs batched across samples "
              f"(window {args.window_ms} ms, max_batch {args.max_batch})\n\n"
            + md_table(["rm_source", "per-sample ms (total)", "RM calls", "batched ms (total)", "RM calls",
                        "speed-up (x)"], mgr_rows))
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out / "results.md", text)
        write_json(args.out / "results.json", {"n": len(samples), "latency": {n: stats(ms) for n, ms in best.items()},
                                               "manager": managers}, indent=2)
        bar_chart([r[0] for r in lat_rows], {"mean ms/sample": [r[1] for r in lat_rows]}, args.out / "latency.png",
                  title="verl reward latency per sample", ylabel="ms", ylim=None)
        print(f"wrote {args.out}/results.md, results.json, latency.png")


if __name__ == "__main__":
    main()
