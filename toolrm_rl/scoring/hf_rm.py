"""Any Hugging Face sequence-classification reward model with its own chat template as a scorer: the
"general-purpose RM" baselines of the ToolRM paper (Skywork-Reward, other RewardBench models).

The model and tokenizer load with ``AutoModelForSequenceClassification`` / ``AutoTokenizer`` from a
local directory or a hub id. Inputs are rendered by the core renderer in ``chat_template`` mode with
the model's own template: the conversation, then the candidate as the final assistant turn. Two
choices adapt to templates that know nothing about tools:

- ``tools_in="template"`` passes the catalog as the template's ``tools=`` argument; ``"system"``
  writes it (OpenAI JSON) into the system message instead.
- ``candidate_as="tool_calls"`` gives the candidate as ``tool_calls``; ``"text"`` as assistant text
  (the calls as ``[{"name", "arguments"}]`` JSON; an abstention keeps its answer text).

Scoring is :class:`~toolrm_rl.model.ToolRM`'s (length-sorted batches under a token budget, padding
invariant, so a score does not depend on which inputs share its batch). The score is ``logits[:, 0]``:
a head with several labels is cut to its first row at load time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from toolrm_rl.config import option as _f
from toolrm_rl.core.calls import ToolCatalog, load_json_field
from toolrm_rl.core.render import RMExample

__all__ = ["HFRMConfig", "HFRewardModelScorer", "adapt_example"]

TOOLS_IN = ("template", "system")
CANDIDATE_AS = ("tool_calls", "text")
_SYSTEM_TOOLS = "You can call these functions (OpenAI JSON schemas):\n"


@dataclass
class HFRMConfig:
    """Options of the general-purpose HF reward-model scorer (``scorer_options.hf-rm`` of the evaluation recipes)."""

    path: str = _f("", "Local checkpoint directory or hub id of an AutoModelForSequenceClassification reward model.")
    device: str = _f("cpu", "Device (cpu, cuda, cuda:1, ...).")
    dtype: str | None = _f(None, "Weights dtype (None: float32 on CPU, bfloat16 elsewhere; 'auto': the checkpoint's).")
    max_tokens: int = _f(4096, "Token budget per input; the renderer cuts descriptions, old turns, then unused tools.")
    tools_in: str = _f("template", "template (chat template tools= argument) or system (catalog JSON in the system message).")
    candidate_as: str = _f("tool_calls", "tool_calls (assistant tool_calls) or text (the calls as JSON text).")
    batch_tokens: int | None = _f(None, "Token budget per forward pass (None: 4096 on CPU, 32768 on GPU).")
    show_progress: bool | None = _f(None, "tqdm bar (None: above 256 inputs).")
    name: str = _f("hf-rm", "Scorer name in reports.")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field (called by the scorer, so recipes can hold defaults)."""
        if not self.path:
            raise ValueError("scorer_options.hf-rm.path: the reward model's directory or hub id is required")
        if self.tools_in not in TOOLS_IN:
            raise ValueError(f"scorer_options.hf-rm.tools_in: expected one of {TOOLS_IN}, got {self.tools_in!r}")
        if self.candidate_as not in CANDIDATE_AS:
            raise ValueError(f"scorer_options.hf-rm.candidate_as: expected one of {CANDIDATE_AS}, "
                             f"got {self.candidate_as!r}")


def adapt_example(example: RMExample, *, tools_in: str = "template", candidate_as: str = "tool_calls") -> RMExample:
    """The example reshaped for a template: catalog moved into the system message (``tools_in="system"``)
    and/or calls turned into assistant text (``candidate_as="text"``). Unchanged for the defaults."""
    tools, conversation, calls, text = example.tools, example.conversation, list(example.calls), example.text
    if tools_in == "system":
        catalog = ToolCatalog.load(tools)
        block = _SYSTEM_TOOLS + json.dumps(catalog.to_openai(), ensure_ascii=False)
        conv = load_json_field(conversation, "conversation") or []
        conv = [conv] if isinstance(conv, dict) else conv
        msgs = [dict(m) for item in conv for m in (item if isinstance(item, list) else [item])]  # BFCL turns
        if msgs and msgs[0].get("role") == "system":
            msgs[0] = {**msgs[0], "content": f"{msgs[0].get('content') or ''}\n\n{block}".lstrip()}
        else:
            msgs = [{"role": "system", "content": block}] + msgs
        tools, conversation = ToolCatalog(), msgs
    if candidate_as == "text" and calls:
        text = json.dumps([{"name": c.name, "arguments": c.arguments} for c in calls], ensure_ascii=False)
        calls = []
    return RMExample(tools, conversation, calls, text)


def _keep_first_label(model: Any) -> None:
    """Cut a multi-label head to its first output (``logits[:, 0]``) so the model has one label."""
    import torch

    n = model.config.num_labels
    if n == 1:
        return
    for head_name in ("score", "classifier"):
        if not isinstance(getattr(model, head_name, None), torch.nn.Module):
            continue
        found = [name for name, m in model.named_modules()
                 if (name == head_name or name.startswith(head_name + ".")) and isinstance(m, torch.nn.Linear)
                 and m.out_features == n]
        if not found:  # the head holds no linear layer with the label count (a custom head)
            continue
        parent_path, _, attr = found[-1].rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        linear = getattr(parent, attr)
        cut = torch.nn.Linear(linear.in_features, 1, bias=linear.bias is not None,
                              dtype=linear.weight.dtype, device=linear.weight.device)
        with torch.no_grad():
            cut.weight.copy_(linear.weight[:1])
            if linear.bias is not None:
                cut.bias.copy_(linear.bias[:1])
        setattr(parent, attr, cut)
        model.config.num_labels = 1
        return
    raise ValueError(f"{type(model).__name__}: cannot find a linear head with {n} outputs to keep logits[:, 0]")


class HFRewardModelScorer:
    """A general-purpose HF reward model as a scorer; options are :class:`HFRMConfig` fields (or ``config=``).
    ``model``: an already loaded :class:`~toolrm_rl.model.ToolRM` wrapping the reward model (to share one
    model between scorers with different layouts); ``path`` is then not loaded again."""

    def __init__(self, config: HFRMConfig | None = None, *, model: Any = None, **options: Any) -> None:
        if config is not None and options:
            config = HFRMConfig(**{**asdict(config), **options})
        self.config = config if config is not None else HFRMConfig(**options)
        self.config.validate()
        self.name = self.config.name
        self.model = model if model is not None else self._load()
        self._cache: dict[str, float] = {}

    def _load(self) -> Any:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from toolrm_rl.core.render import RenderSpec
        from toolrm_rl.model.toolrm import ToolRM, _resolve_dtype

        cfg = self.config
        tokenizer = AutoTokenizer.from_pretrained(cfg.path)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{cfg.path}: the tokenizer has no chat template; a general-purpose RM is scored on "
                             "chats (use the rm scorer for ToolRM checkpoints)")
        model = AutoModelForSequenceClassification.from_pretrained(cfg.path, dtype=_resolve_dtype(cfg.dtype, cfg.device))
        _keep_first_label(model)
        model.to(cfg.device).eval()
        return ToolRM(model, tokenizer, RenderSpec(mode="chat_template", max_tokens=cfg.max_tokens))

    def score(self, examples: Sequence[RMExample]) -> list[float]:
        """Reward-model scores (``logits[:, 0]``), in input order."""
        cfg = self.config
        adapted = [adapt_example(ex, tools_in=cfg.tools_in, candidate_as=cfg.candidate_as) for ex in examples]
        if len(self._cache) > 100_000:
            self._cache.clear()
        return self.model.score(adapted, batch_tokens=cfg.batch_tokens, show_progress=cfg.show_progress,
                                cache=self._cache)
