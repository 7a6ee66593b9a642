"""BFCL data and checker shipped offline by the ``bfcl-eval`` wheel (installed ``--no-deps``).

- :func:`load_bfcl` reads the single-turn records (question, functions, possible answer) of the
  categories asked for, each a ``ToolExample`` (``core.example``). These are *evaluation* data:
  BFCL single-turn questions must never enter training data (FC-RewardBench is built from them).
- :func:`concrete_calls` writes a possible answer as one concrete model output (first acceptable
  value per parameter; Java/JavaScript values as source literals, as BFCL decodes them): a record's ``gold``.
- :func:`load_bfcl_checker` returns BFCL's own ``ast_checker`` for differential tests and benchmarks,
  importing it with the standard library only (its model registry pulls every API client).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, Callable, Iterator

from toolrm_rl.core.bfcl_types import encode_java, encode_js, language_of_category
from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.example import ToolExample
from toolrm_rl.core.match import normalize_answer
from toolrm_rl.data.packages import package_dir
from toolrm_rl.data.records import iter_jsonl

__all__ = ["SINGLE_TURN_CATEGORIES", "bfcl_data_dir", "load_bfcl", "concrete_calls", "load_bfcl_checker"]

# The single-turn categories with possible answers (what FC-RewardBench and BFCL's AST track use).
SINGLE_TURN_CATEGORIES = (
    "simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple",
    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple",
)


def bfcl_data_dir() -> Path:
    """The ``data/`` folder of the installed ``bfcl_eval`` package (raises if it is not installed)."""
    return package_dir("bfcl_eval") / "data"


def _read_jsonl(path: Path) -> Iterator[dict]:
    return (row for _, row in iter_jsonl(path))


def load_bfcl(categories: tuple[str, ...] | list[str] = SINGLE_TURN_CATEGORIES,
              data_dir: Path | None = None) -> list[ToolExample]:
    """Load BFCL v4 single-turn records (question + possible answer) for ``categories``.

    Each is a ``ToolExample`` whose ``source`` and ``category`` are the test category (FC-RewardBench's
    ``test_category``), ``answer`` the normalised possible answer, ``gold`` its :func:`concrete_calls`, and
    ``meta["functions"]`` BFCL's own function docs (what its ``ast_checker`` takes).
    """
    data_dir = Path(data_dir) if data_dir else bfcl_data_dir()
    records = []
    for category in categories:
        if category not in SINGLE_TURN_CATEGORIES:
            raise ValueError(f"unknown BFCL single-turn category {category!r}; choose from {SINGLE_TURN_CATEGORIES}")
        answers = {r["id"]: r["ground_truth"] for r in _read_jsonl(data_dir / "possible_answer" / f"BFCL_v4_{category}.json")}
        for row in _read_jsonl(data_dir / f"BFCL_v4_{category}.json"):
            if row["id"] not in answers:
                continue
            catalog = ToolCatalog.load(row["function"])
            turns = row["question"]
            conversation = [m for turn in turns for m in turn] if turns and isinstance(turns[0], list) else turns
            answer = normalize_answer(answers[row["id"]], catalog)
            records.append(ToolExample(row["id"], category, conversation, catalog,
                                       concrete_calls(answer, catalog, language_of_category(category)), answer,
                                       category, meta={"functions": row["function"]}))
    return records


def _first_value(options: list) -> tuple[bool, Any]:
    for option in options:
        if option != "":
            return True, option
    return False, None


_DICT_TYPES = ("dict", "HashMap")


def _concrete(option: Any, type_name: str | None, nested: str | None) -> Any:
    """Options of a dict are per-key option lists (BFCL's dict checker): take the first of each.
    A dict whose values are not all lists is a literal value (2024 Java ``HashMap`` answers): kept as is."""
    if type_name in _DICT_TYPES and isinstance(option, dict) and all(isinstance(o, list) for o in option.values()):
        return {k: v for k, (ok, v) in ((k, _first_value(opts)) for k, opts in option.items()) if ok}
    if nested in _DICT_TYPES and isinstance(option, list):
        return [_concrete(o, nested, None) for o in option]
    return option


def concrete_calls(answer: list[dict], catalog: ToolCatalog, language: str = "python") -> list[ToolCall]:
    """A possible answer as one concrete output: the first acceptable value of every parameter,
    omittable-only parameters left out; Java/JavaScript values written as source literals."""
    calls = []
    for item in answer:
        (name, params), = item.items()
        spec = catalog.get(name)
        props = spec.properties if spec else {}
        args = {}
        for param, options in params.items():
            present, value = _first_value(options if isinstance(options, list) else [options])
            if not present or (param not in props and "" in options):
                continue
            schema = props.get(param) or {}
            type_name, nested = schema.get("type"), (schema.get("items") or {}).get("type")
            value = _concrete(value, type_name, nested)
            if language == "java":
                value = encode_java(value, type_name, nested)
            elif language == "javascript":
                value = encode_js(value, type_name, nested)
            args[param] = value
        calls.append(ToolCall(name, args))
    return calls


def load_bfcl_checker() -> Callable[[list, list, list, str], dict]:
    """BFCL's reference checker as ``check(functions, decoded_output, possible_answer, category) -> dict``.

    ``bfcl_eval.constants.model_config`` imports every API client; a stand-in module that answers
    "no model converts dots to underscores" replaces it, so the checker imports with the standard library.
    """
    name = "bfcl_eval.constants.model_config"
    if name not in sys.modules:
        stub = types.ModuleType(name)
        stub.MODEL_CONFIG_MAPPING = _NoDotConversion()  # type: ignore[attr-defined]
        sys.modules[name] = stub
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    languages = {"python": Language.PYTHON, "java": Language.JAVA, "javascript": Language.JAVASCRIPT}

    def check(functions: list, decoded_output: list, possible_answer: list, category: str) -> dict:
        return ast_checker(functions, decoded_output, possible_answer, languages[language_of_category(category)],
                           category, "toolrm")

    return check


class _NoDotConversion(dict):
    def __missing__(self, key: str) -> Any:
        return types.SimpleNamespace(underscore_to_dot=False)
