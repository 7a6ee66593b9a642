"""`limit` means one thing everywhere: a seeded sample in the input's order (toolrm_rl.core.subset)."""

from __future__ import annotations

import pytest

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.subset import seeded_subset
from toolrm_rl.data.records import PairRecord, save_pairs


def test_same_seed_same_subset_in_input_order():
    items = [f"x{i}" for i in range(50)]
    first = seeded_subset(items, 7, seed=3)
    assert first == seeded_subset(items, 7, seed=3) == seeded_subset(iter(items), 7, seed=3)
    assert len(first) == 7 and len(set(first)) == 7 and first == sorted(first, key=items.index)
    assert seeded_subset(items, 7, seed="3:bias") == seeded_subset(items, 7, seed="3:bias")
    others = {tuple(seeded_subset(items, 7, seed=s)) for s in range(5)}
    assert len(others) > 1  # the seed decides: not the first N
    assert seeded_subset(items, 0, seed=0) == []


@pytest.mark.parametrize("limit", [None, 50, 51, 1000])
def test_a_limit_at_or_over_the_count_keeps_all_in_order(limit):
    items = [5, 3, 9, 1] * 12 + [7, 7]
    assert seeded_subset(items, limit, seed=1) == items


def test_a_negative_limit_is_an_error_naming_it():
    with pytest.raises(ValueError, match="limit"):
        seeded_subset([1, 2, 3], -1, seed=0)


def test_fc_rewardbench_limit_is_the_seeded_sample(tmp_path):
    from toolrm_rl.eval.fc_rewardbench import FCRewardBenchConfig, run

    tools = ToolCatalog.load([{"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}])
    pairs = [PairRecord(id=f"p{i}", tools=tools, conversation=[{"role": "user", "content": f"a={i}"}],
                        chosen=[ToolCall("f", {"a": i})], rejected=[ToolCall("g", {"a": i})], generator=f"m{i}")
             for i in range(30)]
    data = save_pairs(pairs, tmp_path / "pairs.jsonl", schema="fc_rewardbench")
    result = run(FCRewardBenchConfig(data=str(data), scorers=["rules"], limit=5, seed=2, bootstrap_samples=10),
                 echo=lambda *_: None)
    assert set(result["by_model"]) == {p.generator for p in seeded_subset(pairs, 5, seed=2)}
