"""Load test of the scoring server on loopback: throughput, latency, errors, and what dynamic batching buys.

    .venv/bin/python bench/bench_server.py [--model DIR] [--concurrency 32] [--duration 20] \
        [--items-per-request 1] [--max-batch 64] [--out DIR]

Starts ``toolrm serve`` as a subprocess on 127.0.0.1 twice, with ``--max-batch N`` (dynamic batching)
and with ``--max-batch 1`` (one item per forward: the baseline), and for each runs ``--concurrency``
asyncio clients that POST ``/score`` back to back for ``--duration`` seconds (``--items-per-request``
items each, BFCL single-turn examples: a ground-truth call list or one mutation of it, as an RL
reward would send them). Reports items/s, requests/s, p50/p99 latency, the error count (must be 0),
the server's forwards and mean batch size (from ``/health``), and the throughput ratio batched /
unbatched measured in the same run. The model is ``runs/toolrm-minilm/final`` when present, else (or
with ``--model tiny``) a tiny random BERT built into a temporary directory: there the forward is cheap
and per-call overhead dominates, which is the regime where batching pays on CPU (on a GPU it pays
for real models too). ``--out`` writes results.json, results.md and a
PNG. Read ratios, not absolute numbers: the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from toolrm_rl.core.io import atomic_write, write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "runs" / "toolrm-minilm" / "final"


def build_items(n: int, seed: int = 0) -> list[dict]:
    """``n`` /score items from BFCL single-turn records (gold calls, or a mutation of them)."""
    from toolrm_rl.data.bfcl import load_bfcl
    from toolrm_rl.data.mutate import mutate

    records = load_bfcl()
    random.Random(seed).shuffle(records)
    items = []
    for k, rec in enumerate(records):
        if len(items) >= n:
            break
        calls = rec.gold
        if k % 2:
            wrong = next(iter(mutate(calls, rec.tools, seed=k, literal_values=rec.language != "python")), None)
            calls = wrong[1] if wrong is not None else calls
        items.append({"tools": rec.tools.to_dicts(), "conversation": rec.conversation,
                      "calls": [{"name": c.name, "arguments": c.arguments} for c in calls]})
    return items


def tiny_model(directory: Path) -> Path:
    """A tiny random BERT ToolRM with the MiniLM tokenizer (when no trained checkpoint is around)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from toolrm_rl.model import ToolRM
    from toolrm_rl.data.backbones import minilm_dir

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    config = AutoConfig.for_model("bert", vocab_size=len(tok), hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=128, num_labels=1)
    torch.manual_seed(0)
    ToolRM(AutoModelForSequenceClassification.from_config(config), tok).save_pretrained(directory)
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``toolrm serve`` in a subprocess, on a free loopback port."""

    def __init__(self, model: Path, max_batch: int, max_wait_ms: float, torch_threads: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "toolrm_rl.cli", "serve", "--model", str(model), "--port", str(self.port),
               "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--max-items", "4096",
               "--torch-threads", str(torch_threads)]
        env = {**os.environ, "TOOLRM_SERVE_TOKEN": ""}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start within 180 s")

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()

    def __exit__(self, *exc) -> None:
        self.proc.terminate()  # SIGTERM: uvicorn drains and exits
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def load(url: str, items: list[dict], concurrency: int, duration: float, per_request: int) -> dict:
    """``concurrency`` clients posting /score back to back for ``duration`` seconds."""
    latencies: list[float] = []
    errors: list[str] = []
    done_items = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        # warm-up: one request per client, not timed
        await asyncio.gather(*(client.post(url + "/score", json={"items": items[:per_request]})
                               for _ in range(concurrency)))
        stop = time.perf_counter() + duration

        async def worker(w: int) -> None:
            nonlocal done_items
            k = w * per_request
            while time.perf_counter() < stop:
                batch = [items[(k + j) % len(items)] for j in range(per_request)]
                k += per_request * concurrency
                t0 = time.perf_counter()
                try:
                    res = await client.post(url + "/score", json={"items": batch})
                    ok = res.status_code == 200 and len(res.json()["scores"]) == per_request
                    if not ok:
                        errors.append(f"HTTP {res.status_code}: {res.text[:200]}")
                        continue
                except (httpx.HTTPError, ValueError, KeyError) as err:
                    errors.append(f"{type(err).__name__}: {err}")
                    continue
                latencies.append(time.perf_counter() - t0)
                done_items += per_request

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    return {"items_per_s": done_items / elapsed, "requests_per_s": len(latencies) / elapsed,
            "p50_ms": 1000 * q[49], "p99_ms": 1000 * q[98], "requests": len(latencies), "errors": len(errors),
            "first_errors": errors[:3], "elapsed_s": elapsed}


def run_config(model: Path, items: list[dict], max_batch: int, args: argparse.Namespace) -> dict:
    with Server(model, max_batch, args.max_wait_ms, args.torch_threads) as server:
        before = server.health()
        result = asyncio.run(load(server.url, items, args.concurrency, args.duration, args.items_per_request))
        after = server.health()
    forwards = after["forwards"] - before["forwards"]
    scored = after["items_scored"] - before["items_scored"]
    return {"max_batch": max_batch, **result, "forwards": forwards, "mean_batch": scored / max(forwards, 1)}


def markdown(rows: list[dict]) -> str:
    head = ("| server | items/s | requests/s | p50 ms | p99 ms | errors | forwards | mean batch |\n"
            "|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| --max-batch {r['max_batch']} | {r['items_per_s']:.1f} | {r['requests_per_s']:.1f} | {r['p50_ms']:.1f} "
        f"| {r['p99_ms']:.1f} | {r['errors']} | {r['forwards']} | {r['mean_batch']:.1f} |\n" for r in rows)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"max_batch={r['max_batch']}" for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.bar(labels, [r["items_per_s"] for r in rows], color=["tab:blue", "tab:gray"])
    a.set_ylabel("items / s")
    a.set_title("throughput")
    for i, key in enumerate(("p50_ms", "p99_ms")):
        b.bar([x + i * 0.4 for x in range(len(rows))], [r[key] for r in rows], width=0.4, label=key[:3])
    b.set_xticks([x + 0.2 for x in range(len(rows))], labels)
    b.set_ylabel("latency (ms)")
    b.set_title("request latency")
    b.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint, or 'tiny' for a tiny random BERT "
                        "(default: runs/toolrm-minilm/final when present, else tiny)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per server config")
    parser.add_argument("--items-per-request", type=int, default=1, help="items per /score request")
    parser.add_argument("--max-batch", type=int, default=64, help="the batched server's --max-batch")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the servers' --max-wait-ms")
    parser.add_argument("--torch-threads", type=int, default=1, help="the servers' --torch-threads")
    parser.add_argument("--n-items", type=int, default=400, help="distinct BFCL items to cycle through")
    parser.add_argument("--out", type=Path, default=None, help="write results.json, results.md, results.png here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if str(args.model) == "tiny" or (args.model is None and not (DEFAULT_MODEL / "config.json").is_file()):
            model = tiny_model(Path(tmp))
        else:
            model = args.model or DEFAULT_MODEL
        items = build_items(args.n_items)
        print(f"model {model}; {len(items)} BFCL items; {args.concurrency} clients x {args.duration:.0f} s per "
              f"config; {args.items_per_request} item(s) per request; server torch threads {args.torch_threads}; cpus {os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        rows = [run_config(model, items, args.max_batch, args), run_config(model, items, 1, args)]
    table = markdown(rows)
    ratio = rows[0]["items_per_s"] / rows[1]["items_per_s"] if rows[1]["items_per_s"] else float("nan")
    print(table)
    print(f"dynamic batching / --max-batch 1 throughput ratio: {ratio:.2f}x "
          f"(load average after: {os.getloadavg()[0]:.2f})")
    for r in rows:
        if r["errors"]:
            print(f"errors with --max-batch {r['max_batch']}: {r['first_errors']}")
    if args.out:
        write_json(args.out / "results.json", {"rows": rows, "ratio": ratio, "args": vars(args)}, indent=2, default=str)
        atomic_write(args.out / "results.md", table)
        plot(rows, args.out / "results.png")
    if any(r["errors"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
