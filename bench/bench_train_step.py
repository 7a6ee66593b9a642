"""Cost of one training step of the MiniLM ToolRM with its lower blocks frozen (``train.freeze_layers``).

    .venv/bin/python bench/bench_train_step.py                  # None,0,1,2,3 frozen blocks, 6 rounds
    .venv/bin/python bench/bench_train_step.py --freeze none,3 --rows 16 --tokens 170 --rounds 4

One step is what the Trainer does per batch: forward, backward of the summed scores, AdamW step. Every
setting gets its own copy of the model and optimizer, and the settings run interleaved round by round in
one process (this machine is noisy), so the ratios compare like with like; the first round is a warm-up
and not counted. Printed: the median seconds per step and the ratio to training every weight. The batch is
random token ids (the cost of a step does not depend on which tokens), ``--rows`` sequences of ``--tokens``
each: the quickstart's group batch is ~16 sequences of ~170 tokens.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from toolrm_rl.data.backbones import resolve_backbone
from toolrm_rl.model.toolrm import ToolRM, freeze_lower


def parse_settings(text: str) -> list[int | None]:
    """``"none,0,3"`` -> ``[None, 0, 3]`` (``none``: every weight trains)."""
    return [None if s.strip().lower() == "none" else int(s) for s in text.split(",") if s.strip()]


def build(freeze: int | None, model: str, lr: float) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A fresh ToolRM in training mode with ``freeze`` applied, and AdamW over what still trains."""
    rm = ToolRM.from_pretrained(resolve_backbone(model), dtype="float32", device="cpu")
    net = rm.model.train()
    if freeze is not None:
        freeze_lower(net, freeze)
    return net, torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr)


def step_seconds(net: torch.nn.Module, opt: torch.optim.Optimizer, ids: torch.Tensor) -> float:
    """Wall seconds of one forward + backward + optimizer step on ``ids``."""
    t = time.perf_counter()
    net(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--freeze", default="none,0,1,2,3", help="Comma list of frozen block counts (none: all train), "
                                                             "the first is the baseline of the ratios.")
    ap.add_argument("--model", default="embedded:minilm", help="Backbone (any HF path; default the embedded MiniLM).")
    ap.add_argument("--rows", type=int, default=16, help="Sequences per step.")
    ap.add_argument("--tokens", type=int, default=170, help="Tokens per sequence.")
    ap.add_argument("--rounds", type=int, default=6, help="Interleaved rounds (the first is a warm-up).")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = parse_settings(args.freeze)
    if not settings or args.rounds < 2:
        raise SystemExit("--freeze: at least one setting; --rounds: at least 2 (the first is a warm-up)")
    torch.manual_seed(0)
    nets = {s: build(s, args.model, 1e-5) for s in settings}
    vocab = next(iter(nets.values()))[0].config.vocab_size
    ids = torch.randint(1000, min(20000, vocab), (args.rows, args.tokens))
    times: dict[int | None, list[float]] = {s: [] for s in settings}
    for r in range(args.rounds):
        for s in (settings if r % 2 == 0 else settings[::-1]):
            t = step_seconds(*nets[s], ids)
            if r:
                times[s].append(t)
    base = statistics.median(times[settings[0]])
    print(f"model {args.model}; batch {args.rows} x {args.tokens} tokens; torch threads {torch.get_num_threads()}; "
          f"median of {args.rounds - 1} interleaved rounds")
    print(f"{'frozen blocks':>14} {'trainable':>11} {'s/step':>7} {'ratio':>6}")
    for s in settings:
        trainable = sum(p.numel() for p in nets[s][0].parameters() if p.requires_grad)
        med = statistics.median(times[s])
        print(f"{'none' if s is None else s:>14} {trainable:>11,} {med:7.3f} {base / med:5.2f}x")


if __name__ == "__main__":
    main()
