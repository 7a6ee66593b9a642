"""bench/bench_render.py runs against its baseline commit: same outputs, a row per set."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.data.records import PairRecord, save_pairs

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ToolCatalog.load([{"name": "book", "description": "Book a table in a city's restaurant for a number of "
                           "people.", "parameters": {"type": "object", "properties": {
                               "city": {"type": "string", "description": "City name."},
                               "people": {"type": "integer", "description": "How many."}}, "required": ["city"]}}])


def test_bench_render_compares_with_its_baseline_on_identical_outputs(tmp_path, capsys, load_bench):
    """The recipe's spec has fields the baseline's RenderSpec lacks (mark_repeats): the bench renders both
    renderers with the shared fields (identical outputs) and times the whole recipe spec separately."""
    bench = load_bench("bench_render")
    known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{bench.BASELINE_REV}^{{commit}}"],
                           capture_output=True)
    if known.returncode:
        pytest.skip(f"baseline commit {bench.BASELINE_REV} not in this checkout (shallow clone)")
    pairs = [PairRecord(id=f"p{i}", tools=TOOLS, conversation=[{"role": "user", "content": f"A table in {c} for {i}."}],
                        chosen=[ToolCall("book", {"city": c, "people": i})],
                        rejected=[ToolCall("book", {"city": c, "people": i}), ToolCall("book", {"city": c, "people": i})])
             for i, c in enumerate(["Paris", "Lyon", "Nice"], start=2)]
    data = save_pairs(pairs, tmp_path / "dev.jsonl")
    bench.main(["--dev", str(data), "--train", str(tmp_path / "absent.jsonl"), "--n", "6", "--repeat", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("dev ")]
    assert len(rows) == 1
    assert "6 inputs" in rows[0] and "identical outputs 6/6" in rows[0] and "recipe's mark_repeats" in rows[0]
