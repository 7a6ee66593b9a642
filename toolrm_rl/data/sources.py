"""Offline tool-calling sources that are fair training data, as canonical :class:`ToolExample`s.

Only data that no benchmark here measures: bfcl-eval's multi-turn records (each user turn with the
gold calls of that turn), its unused executable/SQL question sets, and NESTFUL's sequences of calls
(shipped by ``nestful-wrapper``). BFCL single-turn categories
(simple, multiple, parallel, parallel_multiple, java, javascript, live_*) are refused: FC-RewardBench
and BFCL's AST track are built from them.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.parse import parse_pythonic
from toolrm_rl.data.bfcl import SINGLE_TURN_CATEGORIES, _read_jsonl, bfcl_data_dir, concrete_calls
from toolrm_rl.core.match import normalize_answer
from toolrm_rl.data.packages import package_dir

__all__ = ["ToolExample", "SourceError", "OFFLINE_SOURCES", "load_source", "bfcl_exec_examples",
           "bfcl_sql_examples", "bfcl_multi_turn_examples", "nestful_examples", "bind_positional"]

# bfcl-eval's class name -> function-doc file for multi-turn records.
_MULTI_TURN_DOCS = {
    "GorillaFileSystem": "gorilla_file_system.json", "MathAPI": "math_api.json", "MessageAPI": "message_api.json",
    "TwitterAPI": "posting_api.json", "TicketAPI": "ticket_api.json", "TradingBot": "trading_bot.json",
    "TravelAPI": "travel_booking.json", "VehicleControlAPI": "vehicle_control.json",
}


class SourceError(ValueError):
    """A source that cannot be used (unknown, or a benchmark's evaluation data)."""


@dataclass
class ToolExample:
    """One query with its tools and gold calls (``[]``: no call is right).

    ``answer`` is a BFCL possible answer when the source has one (it lists acceptable alternatives,
    so negatives are verified with the BFCL matcher); otherwise negatives must differ from ``gold``.
    """

    id: str
    source: str
    conversation: list[dict[str, Any]]
    tools: ToolCatalog
    gold: list[ToolCall]
    answer: list[dict] | None = None
    category: str = "parallel"
    meta: dict[str, Any] = field(default_factory=dict)


def bind_positional(call_text: str, catalog: ToolCatalog) -> ToolCall | None:
    """Parse one pythonic call, naming positional arguments by the function's parameter order
    (multi-turn answers write ``sort('a.pdf')``). None when the text is not a single call."""
    result = parse_pythonic(call_text)
    if result.ok and len(result.calls) == 1:
        return result.calls[0]
    try:
        node = ast.parse(call_text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.func.id not in catalog:
        return None
    names = list(catalog[node.func.id].properties)
    if len(node.args) > len(names):
        return None
    keywords = ", ".join([f"{n}={ast.unparse(a)}" for n, a in zip(names, node.args)] +
                         [ast.unparse(k) for k in node.keywords])
    result = parse_pythonic(f"{node.func.id}({keywords})")
    return result.calls[0] if result.ok and len(result.calls) == 1 else None


def bfcl_exec_examples(data_dir: Path | None = None) -> Iterator[ToolExample]:
    """bfcl-eval's unused executable question sets (exec_simple/multiple/parallel/parallel_multiple)."""
    root = (Path(data_dir) if data_dir else bfcl_data_dir()) / "unused_datasets"
    for category in ("exec_simple", "exec_multiple", "exec_parallel", "exec_parallel_multiple"):
        answers = {r["id"]: r["ground_truth"] for r in _read_jsonl(root / "possible_answer" / f"BFCL_v4_{category}.json")}
        for row in _read_jsonl(root / "question" / f"BFCL_v4_{category}.json"):
            catalog = ToolCatalog.load(row["function"])
            calls = [bind_positional(text, catalog) for text in answers.get(row["id"], [])]
            if not calls or any(c is None for c in calls):
                continue
            yield ToolExample(row["id"], f"bfcl_{category}", _flatten(row["question"]), catalog, calls,
                              category="parallel" if "parallel" in category else "simple")


def bfcl_sql_examples(data_dir: Path | None = None) -> Iterator[ToolExample]:
    """bfcl-eval's unused SQL question set (BFCL possible answers)."""
    root = (Path(data_dir) if data_dir else bfcl_data_dir()) / "unused_datasets"
    answers = {r["id"]: r["ground_truth"] for r in _read_jsonl(root / "possible_answer" / "BFCL_v4_sql.json")}
    for row in _read_jsonl(root / "question" / "BFCL_v4_sql.json"):
        if row["id"] not in answers:
            continue
        catalog = ToolCatalog.load(row["function"])
        answer = normalize_answer(answers[row["id"]], catalog)
        yield ToolExample(row["id"], "bfcl_sql", _flatten(row["question"]), catalog,
                          concrete_calls(answer, catalog), answer=answer, category="simple")


def bfcl_multi_turn_examples(data_dir: Path | None = None,
                             categories: tuple[str, ...] = ("multi_turn_base", "multi_turn_long_context")) -> Iterator[ToolExample]:
    """One example per user turn of bfcl-eval's multi-turn records: the conversation so far (earlier
    turns with their gold calls as assistant tool calls) and the gold calls of that turn."""
    root = Path(data_dir) if data_dir else bfcl_data_dir()
    docs: dict[str, list[dict]] = {}
    for cls, fname in _MULTI_TURN_DOCS.items():
        docs[cls] = list(_read_jsonl(root / "multi_turn_func_doc" / fname))
    for category in categories:
        answers = {r["id"]: r["ground_truth"] for r in _read_jsonl(root / "possible_answer" / f"BFCL_v4_{category}.json")}
        for row in _read_jsonl(root / f"BFCL_v4_{category}.json"):
            excluded = {name.split(".")[-1] for name in row.get("excluded_function", [])}
            functions = [f for cls in row.get("involved_classes", []) for f in docs.get(cls, []) if f["name"] not in excluded]
            catalog = ToolCatalog.load([{k: v for k, v in f.items() if k != "response"} for f in functions])
            history: list[dict[str, Any]] = []
            for turn, (messages, gold_texts) in enumerate(zip(row["question"], answers.get(row["id"], []))):
                history.extend(messages)
                calls = [bind_positional(text, catalog) for text in gold_texts]
                if not messages or not calls or any(c is None for c in calls):
                    break  # turns after an unreadable one would have the wrong history
                yield ToolExample(f"{row['id']}/turn{turn}", f"bfcl_{category}", list(history), catalog, calls,
                                  category="multi_turn")
                history.append({"role": "assistant", "content": "",
                                "tool_calls": [c.to_openai(f"call_{turn}_{i}") for i, c in enumerate(calls)]})


_NESTFUL_SETS = {"glaive": "non-executable/non-executable-glaive", "sgd": "non-executable/non-executable-sgd",
                  "executable": "executable/executable"}


def _nestful_spec(item: dict) -> dict:
    props, required = {}, []
    for name, param in (item.get("query_parameters") or {}).items():
        schema: dict[str, Any] = {"type": param.get("type") or "string", "description": param.get("description", "")}
        if param.get("allowed_values"):
            schema["enum"] = param["allowed_values"]
        if "default_value" in param:
            schema["default"] = param["default_value"]
        props[name] = schema
        if param.get("required"):
            required.append(name)
    return {"name": item["name"], "description": item.get("description", ""),
            "parameters": {"type": "object", "properties": props, "required": required}}


def nestful_examples(sets: tuple[str, ...] = ("glaive", "sgd", "executable"), distractors: int = 4,
                     seed: int = 0) -> Iterator[ToolExample]:
    """NESTFUL (shipped by ``nestful-wrapper``): single requests answered by a sequence of calls whose
    later arguments reference earlier results (``$var1.field$``). The catalog is the called functions
    plus ``distractors`` other functions of the same API set, in a seeded order."""
    import random

    try:
        root = package_dir("data_v1")  # nestful-wrapper ships its data as this top-level package
    except FileNotFoundError as err:
        raise SourceError(str(err)) from None
    for set_name in sets:
        stem = root / _NESTFUL_SETS[set_name]
        specs = {s["name"]: _nestful_spec(s) for s in json.loads(Path(f"{stem}-spec.json").read_text())}
        for i, row in enumerate(json.loads(Path(f"{stem}-data.json").read_text())):
            calls = [ToolCall(c["name"], dict(c.get("arguments") or {})) for c in row.get("output", [])
                     if c.get("name") != "var_result"]
            if not calls or any(c.name not in specs for c in calls):
                continue
            rng = random.Random(f"{seed}:{set_name}:{i}")
            used = list(dict.fromkeys(c.name for c in calls))
            others = [n for n in specs if n not in used]
            names = used + rng.sample(others, min(distractors, len(others)))
            rng.shuffle(names)
            yield ToolExample(f"nestful_{set_name}_{i}", f"nestful_{set_name}",
                              [{"role": "user", "content": row["input"]}], ToolCatalog.load([specs[n] for n in names]),
                              calls, category="sequential")


def _flatten(question: Any) -> list[dict[str, Any]]:
    if question and isinstance(question[0], list):
        return [m for turn in question for m in turn]
    return list(question)


OFFLINE_SOURCES = {
    "bfcl_exec": bfcl_exec_examples,
    "bfcl_sql": bfcl_sql_examples,
    "bfcl_multi_turn": bfcl_multi_turn_examples,
    "nestful": nestful_examples,
}


def load_source(name: str, **kwargs: Any) -> list[ToolExample]:
    """Load an offline training source by name (see :data:`OFFLINE_SOURCES`).

    Raises :class:`SourceError` for BFCL single-turn categories (benchmark data) and unknown names.
    """
    bare = name.removeprefix("bfcl_")
    if bare in SINGLE_TURN_CATEGORIES or any(bare.startswith(c) for c in ("simple", "live_", "java", "javascript")):
        raise SourceError(f"{name!r} is a BFCL single-turn category: it is evaluation data (FC-RewardBench is built "
                          "from it) and may not be used for training")
    if name not in OFFLINE_SOURCES:
        raise SourceError(f"unknown source {name!r}; offline sources: {sorted(OFFLINE_SOURCES)}")
    return list(OFFLINE_SOURCES[name](**kwargs))


def _debug_counts() -> dict[str, int]:  # pragma: no cover - used from the shell
    return {name: len(load_source(name)) for name in OFFLINE_SOURCES}


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(_debug_counts()))
