"""verl parquet rows from tool-calling datasets (``toolrm verl-data``).

Input: an offline source name (:func:`toolrm_rl.data.sources.load_source`), or a file: xlam /
APIGen rows, OpenAI-format chat JSONL, SGD (through ``load_source``'s file sources), BFCL-format
question files (``{"id", "question", "function"}`` lines, gold from ``ground_truth`` in the row or a
``possible_answer`` file next to it), or our own canonical JSONL (``conversation``, ``tools``, ``gold``).

Output: ``train.parquet`` and ``val.parquet`` (written atomically) with one row per example::

    data_source   "toolrm/<source>"
    prompt        chat messages ({role, content} strings): the tools in the system prompt
                  (--tools-in system) or not (--tools-in template: verl's tool config supplies them)
    ability       "tool_calling"
    reward_model  {"style": "model" | "rule", "ground_truth": gold calls as JSON ("[]": no call is right)}
    extra_info    {"format_version", "split", "index", "id", "tools", "conversation", "gold", "answer", "category"}
                  (tools/conversation/gold/answer as JSON strings: toolrm_rl.core.extra_info, read by the reward)
    agent_name    optional, e.g. "tool_agent" for verl's multi-turn tool loop

Earlier assistant calls in a conversation are written as text in the policy's call format, and tool
results as ``tool`` messages, so every prompt message is a plain ``{role, content}`` pair (parquet
needs one schema for all rows). BFCL single-turn questions are refused (they are the benchmark).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolrm_rl.core.calls import (
    ToolCall,
    ToolCatalog,
    calls_from_bfcl,
    calls_from_openai,
)
from toolrm_rl.core.example import ToolExample
from toolrm_rl.core.extra_info import decode as decode_extra_info
from toolrm_rl.core.extra_info import encode as encode_extra_info
from toolrm_rl.core.io import atomic_write
from toolrm_rl.core.parse import serialize

__all__ = [
    "SINGLE_TURN_PREFIXES",
    "VerlDataReport",
    "example_to_row",
    "load_examples",
    "prompt_token_count",
    "system_prompt",
    "write_verl_data",
]

TOOLS_IN = ("system", "template")
# BFCL single-turn ids look like "simple_12", "live_multiple_3-1-0", "parallel_multiple_7", "java_4".
SINGLE_TURN_PREFIXES = ("simple", "multiple", "parallel", "live_", "java", "javascript")

_INSTRUCTIONS = {
    "hermes": ('To call functions, write each call on its own as <tool_call>{"name": <function name>, '
               '"arguments": <arguments as a JSON object>}</tool_call>; several blocks are several calls.'),
    "json": 'To call functions, answer with only a JSON list of calls: [{"name": <function name>, "arguments": {...}}].',
    "pythonic": "To call functions, answer with only a Python list of calls with keyword arguments: [f(a=1), g(b='x')].",
}


def system_prompt(catalog: ToolCatalog, fmt: str = "hermes") -> str:
    """The system prompt that lists the tools (OpenAI JSON schemas) and says how to write calls in ``fmt``."""
    if fmt not in _INSTRUCTIONS:
        raise ValueError(f"format: expected one of {sorted(_INSTRUCTIONS)}, got {fmt!r}")
    tools = "\n".join(json.dumps(t, ensure_ascii=False) for t in catalog.to_openai())
    return ("You are an assistant that can call functions. The functions you may call are described by these "
            f"JSON schemas:\n<tools>\n{tools}\n</tools>\n{_INSTRUCTIONS[fmt]} If no function fits the request, "
            "answer in plain text without calling any.")


def _prompt_messages(conversation: Sequence[dict[str, Any]], fmt: str) -> list[dict[str, str]]:
    """Conversation -> plain {role, content} messages (earlier calls as text in ``fmt``)."""
    out = []
    for m in conversation:
        role = str(m.get("role", "user"))
        content = m.get("content")
        content = "" if content is None else content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        if role == "assistant" and m.get("tool_calls"):
            calls = serialize(calls_from_openai(m["tool_calls"]), fmt)
            content = (content + "\n" + calls).strip() if content else calls
        if role in ("function", "ipython"):
            role = "tool"
        out.append({"role": role, "content": content})
    return out


def example_to_row(example: ToolExample, index: int, split: str, *, tools_in: str = "system", fmt: str = "hermes",
                   style: str = "model", agent_name: str | None = None) -> dict[str, Any]:
    """One :class:`~toolrm_rl.core.example.ToolExample` as a verl parquet row (see the module docstring)."""
    if tools_in not in TOOLS_IN:
        raise ValueError(f"tools_in: expected one of {TOOLS_IN}, got {tools_in!r}")
    if style not in ("model", "rule"):
        raise ValueError(f"style: expected 'model' or 'rule', got {style!r}")
    catalog = ToolCatalog.load(example.tools)
    messages = _prompt_messages(example.conversation, fmt)
    if tools_in == "system":
        text = system_prompt(catalog, fmt)
        if messages and messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": messages[0]["content"].rstrip() + "\n\n" + text}
        else:
            messages.insert(0, {"role": "system", "content": text})
    extra_info = encode_extra_info(example, split=split, index=index)
    row = {
        "data_source": f"toolrm/{example.source}",
        "prompt": messages,
        "ability": "tool_calling",
        "reward_model": {"style": style, "ground_truth": extra_info["gold"]},
        "extra_info": extra_info,
    }
    if agent_name:
        row["agent_name"] = agent_name
    return row


def prompt_token_count(row: dict[str, Any], tokenizer: Any, *, tools_in: str = "system") -> int:
    """Tokens of a row's prompt as verl 0.9.1's ``RLHFDataset`` counts them for ``max_prompt_length``:
    ``tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)``, with
    ``tools=`` the row's catalog when ``tools_in="template"`` (verl passes its tool config's schemas).

    :param row: a row of :func:`example_to_row` (``prompt`` and ``extra_info["tools"]``).
    :param tokenizer: a Hugging Face tokenizer with a chat template (e.g. the Qwen3 one).
    """
    kwargs: dict[str, Any] = {}
    if tools_in == "template":
        kwargs["tools"] = ToolCatalog.load(decode_extra_info(row["extra_info"]).tools).to_openai()
    ids = tokenizer.apply_chat_template(list(row["prompt"]), add_generation_prompt=True, tokenize=True, **kwargs)
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return len(ids)


# -- inputs --------------------------------------------------------------------------------------------

def _first_row(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        rows = json.loads(stripped)
        return rows[0] if rows and isinstance(rows[0], dict) else {}
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            return row if isinstance(row, dict) else {}
    return {}


def detect_kind(path: Path) -> str:
    """The input kind of a file from its first row: bfcl, canonical, xlam, openai_jsonl (or sgd by name)."""
    try:
        row = _first_row(path)
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: cannot read the first row ({err})") from None
    if "question" in row and "function" in row:
        return "bfcl"
    if "conversation" in row and "tools" in row and "gold" in row:
        return "canonical"
    if "query" in row and "tools" in row:
        return "xlam" if row.get("answers") not in (None, "", "[]", []) else "xlam_irrelevance"
    if "messages" in row:
        return "openai_jsonl"
    if "dialogue_id" in row or "turns" in row:
        return "sgd"
    raise ValueError(f"{path}: unknown row format (keys {sorted(row)[:10]}); pass --kind")


def _rows(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        yield from enumerate(json.loads(text), 1)
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except ValueError as err:
                raise ValueError(f"{path}: row {n}: not valid JSON ({err})") from None


def _bfcl_examples(path: Path) -> list[Any]:
    """BFCL-format question rows; gold from the row's ``ground_truth`` or ``possible_answer/<same name>``."""
    from toolrm_rl.data.bfcl import concrete_calls

    answers: dict[str, Any] = {}
    answer_file = path.parent / "possible_answer" / path.name
    if answer_file.is_file():
        answers = {r["id"]: r["ground_truth"] for _, r in _rows(answer_file) if isinstance(r, dict) and "id" in r}
    out = []
    for n, row in _rows(path):
        rid = str(row.get("id", f"row{n}"))
        if rid.startswith(SINGLE_TURN_PREFIXES) and "exec" not in rid and "multi_turn" not in rid:
            raise ValueError(f"{path}: row {n} (id {rid!r}) is a BFCL single-turn question: evaluation data, "
                             "not for training")
        try:
            catalog = ToolCatalog.load(row["function"])
            conversation = [m for turn in row["question"] for m in (turn if isinstance(turn, list) else [turn])]
            answer = row.get("ground_truth", answers.get(rid))
            if answer is None:
                raise ValueError("no ground_truth in the row or in possible_answer/")
            if isinstance(answer, list) and answer and isinstance(answer[0], str):  # pythonic call strings
                from toolrm_rl.core.parse import parse_pythonic

                gold: list[ToolCall] = [c for text in answer for c in parse_pythonic(text).calls]
                possible = None
            else:
                gold, possible = concrete_calls(answer, catalog), answer
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: row {n} (id {rid!r}): {type(err).__name__}: {err}") from None
        out.append(ToolExample(rid, "bfcl_file", conversation, catalog, gold, possible,
                               category=str(row.get("category") or ("parallel" if len(gold) > 1 else "simple"))))
    return out


def _canonical_examples(path: Path) -> list[Any]:
    out = []
    for n, row in _rows(path):
        try:
            conv = row["conversation"]
            conv = json.loads(conv) if isinstance(conv, str) else conv
            out.append(ToolExample(str(row.get("id", f"row{n}")), str(row.get("source", path.stem)), list(conv),
                                   ToolCatalog.load(row["tools"]), calls_from_bfcl(row["gold"]),
                                   json.loads(row["answer"]) if isinstance(row.get("answer"), str) and row["answer"]
                                   else row.get("answer") or None, category=str(row.get("category", "parallel"))))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: row {n}: {type(err).__name__}: {err}") from None
    return out


def load_examples(source: str, kind: str = "auto", *, skipped: dict[str, int] | None = None) -> list[Any]:
    """Examples from an offline source name or a file (``kind``: auto, bfcl, canonical, or a file source
    of :func:`toolrm_rl.data.sources.load_source` such as xlam, openai_jsonl, sgd).

    :param skipped: filled with what an offline source that counts its skips (``bfcl_multi_turn``: turns
        whose history could not be rebuilt) left out, by reason.
    """
    import inspect

    from toolrm_rl.data import sources

    path = Path(source)
    if not path.exists():
        loader = sources.OFFLINE_SOURCES.get(source)
        if skipped is not None and loader is not None and "skipped" in inspect.signature(loader).parameters:
            return sources.load_source(source, skipped=skipped)
        return sources.load_source(source)
    kind = detect_kind(path) if kind == "auto" else kind
    if kind == "bfcl":
        return _bfcl_examples(path)
    if kind == "canonical":
        return _canonical_examples(path)
    file_sources = getattr(sources, "FILE_SOURCES", {})
    if kind not in file_sources:
        raise ValueError(f"{path}: input kind {kind!r} is not available; kinds: bfcl, canonical, {sorted(file_sources)}")
    return sources.load_source(kind, path=path)


# -- output --------------------------------------------------------------------------------------------

@dataclass
class VerlDataReport:
    """What ``write_verl_data`` wrote."""

    train_path: str
    val_path: str
    n_train: int
    n_val: int
    n_no_call: int  # examples whose gold is "no call"
    sources: dict[str, int]


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    atomic_write(path, lambda tmp: pq.write_table(pa.Table.from_pylist(rows), tmp))


def write_verl_data(examples: Sequence[Any], out_dir: str | Path, *, val_fraction: float = 0.05, seed: int = 0,
                    tools_in: str = "system", fmt: str = "hermes", style: str = "model", agent_name: str | None = None,
                    max_rows: int | None = None) -> VerlDataReport:
    """Shuffle (seeded), split and write ``train.parquet`` / ``val.parquet`` in ``out_dir``.

    :param examples: :class:`~toolrm_rl.core.example.ToolExample` objects.
    :param val_fraction: share of examples in ``val.parquet`` (at least one when there are two or more).
    :param max_rows: keep at most this many examples (after the shuffle) before splitting.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    examples = list(examples)
    random.Random(seed).shuffle(examples)
    if max_rows is not None:
        examples = examples[:max_rows]
    n_val = round(len(examples) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(examples) >= 2:
        n_val = 1
    splits = {"val": examples[:n_val], "train": examples[n_val:]}
    out_dir = Path(out_dir)
    counts: dict[str, int] = {}
    for ex in examples:
        counts[ex.source] = counts.get(ex.source, 0) + 1
    for split, items in splits.items():
        rows = [example_to_row(ex, i, split, tools_in=tools_in, fmt=fmt, style=style, agent_name=agent_name)
                for i, ex in enumerate(items)]
        _write_parquet(rows, out_dir / f"{split}.parquet")
    return VerlDataReport(str(out_dir / "train.parquet"), str(out_dir / "val.parquet"), len(splits["train"]),
                          len(splits["val"]), sum(1 for ex in examples if not ex.gold), counts)
