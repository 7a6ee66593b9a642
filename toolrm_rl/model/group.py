"""Group Bradley-Terry training: one chosen answer and all of its negatives in one forward pass.

A query's negatives share its chosen answer; TRL's pairwise trainer forwards that chosen input once
per pair. Here a training row is a *group* (``chosen_ids``, ``rejected_ids``: a list of negatives), the
chosen input is forwarded once, and the loss is the mean over the batch's (chosen, negative) pairs of

    -log sigmoid(r+ - r- - margin) + eta * (r+ + r-)^2

which is exactly TRL's pairwise loss (with ``center_rewards_coefficient = eta``) on a group of one
negative, so the two are interchangeable and only the cost differs: a group of k negatives is k + 1
sequences instead of 2k. The fresh score head may also learn faster than the pretrained body
(``head_learning_rate``): a new linear head at the body's learning rate sits at ln 2 for many steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from trl import RewardTrainer

__all__ = ["GroupCollator", "GroupRewardTrainer", "group_loss", "group_rows"]


def group_loss(chosen: torch.Tensor, rejected: torch.Tensor, group_index: torch.Tensor,
               margin: torch.Tensor | None = None, center_coefficient: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Group Bradley-Terry loss and the per-pair reward differences.

    Args:
        chosen: ``[G]`` rewards of the groups' chosen inputs.
        rejected: ``[N]`` rewards of all negatives, flattened.
        group_index: ``[N]`` the group (index into ``chosen``) of each negative.
        margin: optional ``[G]`` margin per group.
        center_coefficient: eta of the centering term (None: none).

    Returns:
        ``(loss, diff)`` with ``diff = r+ - r-`` per negative.

    >>> c, r = torch.tensor([1.0]), torch.tensor([0.0])
    >>> round(group_loss(c, r, torch.tensor([0]))[0].item(), 4)  # -log sigmoid(1)
    0.3133
    """
    pos = chosen[group_index]
    diff = pos - rejected
    shifted = diff - margin[group_index] if margin is not None else diff
    loss = -nn.functional.logsigmoid(shifted).mean()
    if center_coefficient is not None:
        loss = loss + center_coefficient * torch.mean((pos + rejected) ** 2)
    return loss, diff


def group_rows(pairs: Sequence[Any]) -> list[list[int]]:
    """Indices of ``pairs`` grouped by query: same id before ``#`` and the same chosen calls and text.

    >>> from types import SimpleNamespace as P
    >>> group_rows([P(id="q1#0", chosen=[1]), P(id="q2#0", chosen=[2]), P(id="q1#1", chosen=[1])])
    [[0, 2], [1]]
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for i, pair in enumerate(pairs):
        key = (pair.id.rsplit("#", 1)[0], repr(pair.chosen) + repr(getattr(pair, "chosen_text", None)))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


class GroupCollator:
    """Pads a batch of groups: ``input_ids``/``attention_mask`` hold the chosen inputs first, then every
    negative; ``group_index`` maps each negative to its group (``margin`` per group when present)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seqs = [row["chosen_ids"] for row in rows] + [neg for row in rows for neg in row["rejected_ids"]]
        index = [g for g, row in enumerate(rows) for _ in row["rejected_ids"]]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = 1
        out = {"input_ids": ids, "attention_mask": mask, "group_index": torch.tensor(index, dtype=torch.long)}
        if "margin" in rows[0]:
            out["margin"] = torch.tensor([row["margin"] for row in rows], dtype=torch.float)
        return out


class GroupRewardTrainer(RewardTrainer):
    """TRL's ``RewardTrainer`` with the group loss for batches from :class:`GroupCollator` (TRL's own loss
    for its pair batches) and an optional separate learning rate for the score head
    (``head_learning_rate``, ``head_modules``)."""

    def __init__(self, *args: Any, head_modules: Sequence[str] = (), head_learning_rate: float | None = None,
                 **kwargs: Any) -> None:
        self.head_modules = tuple(head_modules)
        self.head_learning_rate = head_learning_rate
        super().__init__(*args, **kwargs)

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:  # TRL's columns, and each row's length for length-grouped batches
            self._signature_columns = ["chosen_ids", "rejected_ids", "margin", "length"]

    def create_optimizer(self, model: Any = None) -> Any:
        """AdamW with two parameter groups when ``head_learning_rate`` is set (head, rest)."""
        if self.optimizer is not None or self.head_learning_rate is None or not self.head_modules:
            return super().create_optimizer(model) if model is not None else super().create_optimizer()
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

        def is_head(name: str) -> bool:
            return any(part in self.head_modules for part in name.split("."))

        head = [p for n, p in params if is_head(n)]
        body = [p for n, p in params if not is_head(n)]
        groups = [{"params": body, "lr": self.args.learning_rate, "weight_decay": self.args.weight_decay},
                  {"params": head, "lr": self.head_learning_rate, "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], betas=(self.args.adam_beta1,
                                           self.args.adam_beta2), eps=self.args.adam_epsilon)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "group_index" not in inputs:  # TRL's pair rows (DataCollatorForPreference)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        group_index = inputs.pop("group_index")
        margin = inputs.pop("margin", None)
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        rewards = outputs.logits.squeeze(-1)
        n_groups = rewards.shape[0] - group_index.shape[0]
        loss, diff = group_loss(rewards[:n_groups], rewards[n_groups:], group_index, margin,
                                self.args.center_rewards_coefficient)
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        with torch.no_grad():
            self._metrics[mode]["mean_reward"].append(rewards.mean().item())
            self._metrics[mode]["accuracy"].append(self.accelerator.gather_for_metrics((diff > 0).float().mean()).mean().item())
            self._metrics[mode]["margin"].append(self.accelerator.gather_for_metrics(diff.mean()).mean().item())
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if "group_index" not in inputs:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, dict(inputs))
        return loss.detach(), None, None
