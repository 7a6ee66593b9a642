"""The group Bradley-Terry loss: equal to TRL's pairwise loss on one-negative groups, collated correctly,
and a training run with it learns."""

from __future__ import annotations

import torch
from torch import nn

from toolrm_rl.model.group import GroupCollator, group_loss, group_rows


def pairwise_trl(chosen: torch.Tensor, rejected: torch.Tensor, eta: float | None) -> torch.Tensor:
    """TRL RewardTrainer.compute_loss's formula, written out."""
    loss = -nn.functional.logsigmoid(chosen - rejected).mean()
    return loss + eta * torch.mean((chosen + rejected) ** 2) if eta is not None else loss


def test_group_loss_equals_pairwise_loss_on_one_negative_groups():
    gen = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(7, generator=gen), torch.randn(7, generator=gen)
    for eta in (None, 0.01, 0.5):
        loss, diff = group_loss(chosen, rejected, torch.arange(7), center_coefficient=eta)
        assert torch.allclose(loss, pairwise_trl(chosen, rejected, eta), atol=1e-6)
        assert torch.allclose(diff, chosen - rejected)


def test_group_loss_is_the_pairwise_loss_over_each_group_member():
    chosen = torch.tensor([2.0, -1.0])
    rejected = torch.tensor([0.5, 3.0, 1.0])
    index = torch.tensor([0, 0, 1])
    loss, _ = group_loss(chosen, rejected, index, center_coefficient=0.1)
    expanded = pairwise_trl(torch.tensor([2.0, 2.0, -1.0]), rejected, 0.1)
    assert torch.allclose(loss, expanded)
    # Gradient flows into the shared chosen reward from all its negatives.
    c = chosen.clone().requires_grad_(True)
    group_loss(c, rejected, index)[0].backward()
    assert c.grad[0] < 0 and c.grad[1] < 0 and abs(c.grad[0]) > 0


def test_group_loss_margin_shifts_each_groups_pairs():
    chosen, rejected, index = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]), torch.tensor([0, 1])
    with_margin, _ = group_loss(chosen, rejected, index, margin=torch.tensor([1.0, 0.0]))
    expected = (-nn.functional.logsigmoid(torch.tensor(0.0)) - nn.functional.logsigmoid(torch.tensor(1.0))) / 2
    assert torch.allclose(with_margin, expected)


def test_collator_puts_chosen_first_then_negatives_with_their_group():
    rows = [{"chosen_ids": [1, 2, 3], "rejected_ids": [[4], [5, 6]]}, {"chosen_ids": [7], "rejected_ids": [[8, 9, 10, 11]]}]
    batch = GroupCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0], [7, 0, 0, 0], [4, 0, 0, 0], [5, 6, 0, 0], [8, 9, 10, 11]]
    assert batch["attention_mask"].sum(1).tolist() == [3, 1, 1, 2, 4]
    assert batch["group_index"].tolist() == [0, 0, 1]


def test_group_rows_groups_by_query_and_chosen():
    from toolrm_rl.core.calls import ToolCall
    from toolrm_rl.data.records import PairRecord

    a, b = [ToolCall("f", {"x": 1})], [ToolCall("g", {})]
    pairs = [PairRecord(id="q1#0", tools=[], conversation=[], chosen=a, rejected=b),
             PairRecord(id="q1@obf1#0", tools=[], conversation=[], chosen=b, rejected=a),
             PairRecord(id="q1#1", tools=[], conversation=[], chosen=a, rejected=[]),
             PairRecord(id="q1#2", tools=[], conversation=[], chosen=b, rejected=a)]  # same id, other chosen
    assert group_rows(pairs) == [[0, 2], [1], [3]]


def test_training_with_groups_of_several_negatives_learns(tmp_path):
    """Weather questions with two negatives each (wrong function, wrong city): the group loss trains a
    model that ranks held-out pairs, and the pairwise loss (TRL's) runs on the same files."""
    import random

    from toolrm_rl.core.calls import ToolCall, ToolCatalog
    from toolrm_rl.data.records import PairRecord, save_pairs
    from toolrm_rl.model.train import load_config, train

    tools = ToolCatalog.load([
        {"name": "get_weather", "description": "Weather for a city.", "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}}, "required": ["city"]}},
        {"name": "get_time", "description": "Local time in a city.", "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}}, "required": ["city"]}}])
    cities = ["Paris", "Lyon", "Berlin", "Madrid", "Rome", "Oslo", "Vienna", "Prague"]

    def pairs(n: int, seed: int) -> list[PairRecord]:
        rng, out = random.Random(seed), []
        for i in range(n):
            city, other = rng.sample(cities, 2)
            conv = [{"role": "user", "content": f"What's the weather like in {city} today?"}]
            gold = [ToolCall("get_weather", {"city": city})]
            for k, bad in enumerate(([ToolCall("get_time", {"city": city})], [ToolCall("get_weather", {"city": other})])):
                out.append(PairRecord(id=f"q{seed}-{i}#{k}", tools=tools, conversation=conv, chosen=gold, rejected=bad))
        return out

    train_file = save_pairs(pairs(40, 0), tmp_path / "train.jsonl")
    eval_file = save_pairs(pairs(12, 1), tmp_path / "eval.jsonl")
    torch.set_num_threads(1)
    for loss in ("group", "pairwise"):
        cfg = load_config(None, [
            "model.name_or_path=embedded:minilm", "model.render.max_tokens=64", "data.sources=[]",
            f"data.train_files=[{train_file}]", f"data.eval_files=[{eval_file}]", f"train.output_dir={tmp_path / loss}",
            "train.report_to=none", "train.learning_rate=1e-4", "train.head_learning_rate=1e-3",
            "train.per_device_train_batch_size=4", "train.warmup_ratio=0.0", "train.eval_steps=null",
            "train.max_steps=20", f"train.loss={loss}"])
        result = train(cfg)
        assert result.metrics["eval"]["eval_accuracy"] > 0.9, (loss, result.metrics["eval"])
