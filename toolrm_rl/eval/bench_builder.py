"""Build FC-RewardBench-format pairs from BFCL result/score logs (rebuild the benchmark from new failures).

    toolrm bench build --bfcl-logs DIR --out pairs.jsonl [--models m1 --models m2] [--categories simple ...]

A pair: chosen = the question's possible answer written as one concrete call list (first acceptable
value per parameter, :func:`toolrm_rl.data.bfcl.concrete_calls`; optional parameters whose acceptable
values include ``""`` are omitted, or with ``optional_params="first"`` given their first non-empty
value, which is what most FC-RewardBench rows do), rejected = a model's logged failed output.

Log layouts read (every ``*.json`` file under ``--bfcl-logs``, recursively; the format is detected
per file and per row):

- **Score files** (``score/<model>/[non_live|live/]<prefix>_<category>_score.json``, JSON lines):
  the first line is a summary ``{"accuracy", "correct_count", "total_count"}``, every other line one
  failure: ``id``, ``model_name``, ``test_category``, ``valid: false``, ``error`` (a list of messages, or
  a dict holding ``error_type``), ``error_type``, ``prompt`` (the question entry: ``question`` + ``function``),
  ``model_result_raw``, ``model_result_decoded`` and ``possible_answer``.
  - 2024 dict style (BFCL v1/v2, e.g. the leaderboard's published logs of 2024-08-11): ``prompt.question``
    is a string, ``prompt.function`` one doc or a list, ``possible_answer`` a dict ``{"func": {...}}``
    (parallel entries may carry ``func_1``, ``func_2``); ``id`` is the 1-based line number and
    ``prompt.id`` the question id (``parallel_function_9``); categories have their v1 names
    (``multiple_function``, ``parallel_function``, ``parallel_multiple_function``).
  - v3/v4 list style: ``prompt`` is the full entry (``question`` a list of turns of messages),
    ``possible_answer`` a list ``[{"func": {param: [options]}}]``; v4 rows carry the decoded output as
    a list of ``{func: {args}}`` dicts.
- **Result files** (``result/<model>/.../<prefix>_<category>_result.json``: ``{"id", "result"}`` per
  line, all questions): used only for a (model, category) with no score file. The question and its
  answer come from bfcl-eval's packaged data by id (``--bfcl-data`` or the installed wheel), the output
  is parsed with the core parser and checked with the core matcher; failing ones become pairs.

Test ids keep their category prefix as logged (``prompt.id`` of 2024 rows, else ``id``; a bare 2024
line number ``n`` becomes ``<category>_<n-1>``); ``test_category`` is written with the v3 names
FC-RewardBench uses (``simple``, ``multiple``, ``parallel``, ``parallel_multiple``, ``java``,
``javascript``, ``live_*``). Only those AST categories have a possible answer; rows of the others
(``executable_*``, ``rest``, ``relevance``, ``irrelevance``, ``sql``, ``chatable``, multi-turn, ...) are
counted as ``not_ast_category``.

Rows are skipped (and counted in :class:`BuildReport`) when the rejected output is unparsable
(unless ``keep_unparsable``: the pair then has no rejected calls and the raw text as ``rejected_text``),
when the "failed" output actually matches the answer under our matcher, when the question is not a
single-turn one with a possible answer, when the concrete chosen answer fails our own matcher
(``chosen_fails_matcher``), or when our matcher cannot judge the answer at all (``matcher_error``:
e.g. 2024 Java ``HashMap`` answers written as a literal map with non-list values). Every pair written
therefore has a chosen output that passes :meth:`GroundTruth.check` and a rejected one that fails it
(or, with ``keep_unparsable``, no rejected calls).
One pair per question by default: a seeded choice among the models that failed it.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from toolrm_rl.core.bfcl_types import language_of_category
from toolrm_rl.core.calls import CatalogError, ToolCall, ToolCatalog, calls_from_bfcl
from toolrm_rl.core.match import GroundTruth, normalize_answer
from toolrm_rl.core.parse import parse
from toolrm_rl.data.bfcl import SINGLE_TURN_CATEGORIES, concrete_calls
from toolrm_rl.data.records import PairRecord, iter_jsonl

__all__ = ["LogRow", "BuildReport", "read_bfcl_logs", "build_pairs", "canonical_category", "UNPARSABLE"]

UNPARSABLE = "ast_decoder:decoder_failed"
_EXAMPLES_PER_REASON = 5
_SPACE_NUMBER = re.compile(r" \d+$")
# BFCL v1/v2 (2024) category names -> v3; v3 names -> v4 (the packaged data is v4). FC-RewardBench and
# our pairs keep the v3 names.
_V2_TO_V3 = {"multiple_function": "multiple", "parallel_function": "parallel",
             "parallel_multiple_function": "parallel_multiple"}
_V3_TO_V4 = {"simple": "simple_python", "java": "simple_java", "javascript": "simple_javascript"}
_V4_TO_V3 = {v: k for k, v in _V3_TO_V4.items()}
_FILE_RE = re.compile(r"^(?:BFCL_v\d+_|gorilla_openfunctions_v\d+_test_)?(?P<cat>\w+?)_(?P<kind>score|result)\.json$")


@dataclass
class LogRow:
    """One logged model output for one question (from a score or result file)."""

    id: str
    model_name: str
    test_category: str
    error_type: str
    conversation: list[dict[str, Any]] | None
    functions: Any
    possible_answer: Any
    decoded: list[ToolCall] | None  # None: the output could not be decoded
    raw: Any
    file: str
    line: int


@dataclass
class BuildReport:
    """What :func:`build_pairs` read and why rows were dropped."""

    files: dict[str, str] = field(default_factory=dict)  # path -> "score" | "result"
    rows: int = 0
    failures: int = 0
    candidates: int = 0
    pairs: int = 0
    questions: int = 0
    skipped: Counter = field(default_factory=Counter)
    pairs_by_category: Counter = field(default_factory=Counter)  # v3 category name -> pairs written
    # reason -> the first few rows dropped for it ("file: line N (id X): why"), to find them in the logs
    examples: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, row: LogRow | None = None, why: str = "") -> None:
        """Count a skipped row; with ``row``, keep it among the reason's first few examples."""
        self.skipped[reason] += 1
        if row is not None and len(self.examples.setdefault(reason, [])) < _EXAMPLES_PER_REASON:
            self.examples[reason].append(f"{row.file}: line {row.line} (id {row.id}): {why}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"files": len(self.files), "rows": self.rows, "failures": self.failures, "candidates": self.candidates,
                "questions": self.questions, "pairs": self.pairs, "skipped": dict(sorted(self.skipped.items())),
                "pairs_by_category": dict(sorted(self.pairs_by_category.items())), "examples": self.examples}

    def __str__(self) -> str:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        by_category = ", ".join(f"{k} {v}" for k, v in sorted(self.pairs_by_category.items())) or "none"
        return (f"{len(self.files)} log files, {self.rows} rows, {self.failures} failures, {self.candidates} usable "
                f"rejected outputs for {self.questions} questions -> {self.pairs} pairs ({by_category}); "
                f"skipped: {skipped}")


# -- reading logs --------------------------------------------------------------------------------------

def canonical_category(category: str) -> str:
    """A BFCL test category under its v3 name (``parallel_function`` -> ``parallel``, ``simple_python``
    -> ``simple``); names of other versions' categories without a v3 equivalent are returned unchanged."""
    return _V4_TO_V3.get(category, _V2_TO_V3.get(category, category))


def _test_id(row: dict, prompt: dict, category: str, fallback: str) -> str:
    """The question id with its category prefix: 2024 rows carry it as ``prompt.id`` (their ``id`` is
    the 1-based line number), later ones as ``id``."""
    if isinstance(prompt.get("id"), str) and prompt["id"]:
        return prompt["id"]
    test_id = row.get("id")
    if isinstance(test_id, int) and not isinstance(test_id, bool):
        return f"{category}_{test_id - 1}"  # BFCL 2024 wrote id = index + 1 (prompt.id = <category>_<index>)
    return str(test_id) if test_id is not None else fallback


def _file_kind(path: Path) -> tuple[str, str] | None:
    """(kind, category from the file name) for ``..._score.json`` / ``..._result.json`` files."""
    m = _FILE_RE.match(path.name)
    return (m["kind"], m["cat"]) if m else None


def _model_of(path: Path, root: Path) -> str:
    """The ``<model>`` folder right under ``score/`` or ``result/`` (else the first folder under root)."""
    parts = path.relative_to(root).parts[:-1]
    for i, part in enumerate(parts[:-1]):
        if part in ("score", "result"):
            return parts[i + 1]
    return parts[0] if parts else ""


def _conversation(question: Any) -> list[dict[str, Any]] | None:
    if isinstance(question, str):
        return [{"role": "user", "content": question}]
    if isinstance(question, list) and question:
        flat = [m for turn in question for m in (turn if isinstance(turn, list) else [turn])]
        return [dict(m) for m in flat if isinstance(m, dict)] or None
    return None


def _error_type(row: dict) -> str:
    if isinstance(row.get("error_type"), str):
        return row["error_type"]
    err = row.get("error")
    return err.get("error_type", "") if isinstance(err, dict) else ""


def _decoded(value: Any) -> list[ToolCall] | None:
    if not isinstance(value, (list, dict)):
        return None  # missing, or BFCL's str() of an output in the wrong format
    try:
        return calls_from_bfcl(value)
    except (CatalogError, TypeError, ValueError):
        return None


def _score_rows(path: Path, model: str, file_category: str) -> Iterator[LogRow]:
    for line_no, row in iter_jsonl(path):
        if "accuracy" in row and "id" not in row:
            continue  # the summary line
        if row.get("valid", False) is not False:
            continue
        prompt = row.get("prompt")
        prompt = prompt if isinstance(prompt, dict) else {}
        error_type = _error_type(row)
        decoded = None if error_type == UNPARSABLE else _decoded(row.get("model_result_decoded"))
        logged_category = str(row.get("test_category") or file_category)
        yield LogRow(id=_test_id(row, prompt, logged_category, f"{path.name}#{line_no}"),
                     model_name=str(row.get("model_name") or model), test_category=canonical_category(logged_category),
                     error_type=error_type or ("ast_decoder:decoder_wrong_output_format" if decoded is None else ""),
                     conversation=_conversation(prompt.get("question")), functions=prompt.get("function"),
                     possible_answer=row.get("possible_answer"), decoded=decoded,
                     raw=row.get("model_result_raw", row.get("model_result")), file=str(path), line=line_no)


def _result_rows(path: Path, model: str, file_category: str) -> Iterator[LogRow]:
    for line_no, row in iter_jsonl(path):
        raw = row.get("result")
        if isinstance(raw, list) and all(isinstance(x, dict) for x in raw):  # FC models: [{"f": "{json args}"}]
            try:
                raw_calls = [{k: (json.loads(v) if isinstance(v, str) else v) for k, v in x.items()} for x in raw]
            except json.JSONDecodeError:
                raw_calls = None
            decoded = _decoded(raw_calls)
        elif isinstance(raw, str):
            parsed = parse(raw)
            decoded = parsed.calls if parsed.ok and parsed.calls else None
        else:
            decoded = None
        yield LogRow(id=_test_id(row, {}, file_category, f"{path.name}#{line_no}"), model_name=model,
                     test_category=canonical_category(file_category),
                     error_type="" if decoded is not None else UNPARSABLE, conversation=None, functions=None,
                     possible_answer=None, decoded=decoded, raw=raw, file=str(path), line=line_no)


def read_bfcl_logs(logs_dir: str | Path, report: BuildReport | None = None) -> Iterator[LogRow]:
    """Every logged output under ``logs_dir``: failures from score files, all outputs from result files
    of (model, category) pairs that have no score file (their verdict is computed later)."""
    root = Path(logs_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--bfcl-logs: {root} is not a directory")
    files = sorted(p for p in root.rglob("*.json") if _file_kind(p))
    scored = {(_model_of(p, root), _file_kind(p)[1]) for p in files if _file_kind(p)[0] == "score"}
    for path in files:
        kind, category = _file_kind(path)
        model = _model_of(path, root)
        if kind == "result" and (model, category) in scored:
            continue
        if report is not None:
            report.files[str(path)] = kind
        yield from (_score_rows if kind == "score" else _result_rows)(path, model, category)


# -- building pairs -----------------------------------------------------------------------------------

def _v4_category(category: str) -> str:
    """A category of any BFCL version under its v4 name."""
    v3 = canonical_category(category)
    return _V3_TO_V4.get(v3, v3)


def _v4_id(test_id: str, category: str) -> tuple[str, str]:
    """(v4 id, v4 category) of a 2024 (``parallel_function_3``), v3 (``simple_3``) or v4 id."""
    v4_cat = _v4_category(category)
    if test_id.startswith(v4_cat + "_") and test_id[len(v4_cat) + 1:].isdigit():
        return test_id, v4_cat
    for name in (k for k, v in {**_V2_TO_V3, **_V3_TO_V4}.items() if _v4_category(v) == v4_cat):
        if test_id.startswith(name + "_") and test_id[len(name) + 1:].isdigit():
            return v4_cat + test_id[len(name):], v4_cat
    return test_id, v4_cat


class _QuestionBank:
    """bfcl-eval's packaged questions by v4 id, loaded per category on first use."""

    def __init__(self, data_dir: str | Path | None) -> None:
        self.data_dir = data_dir
        self.by_id: dict[str, Any] = {}
        self.loaded: set[str] = set()

    def get(self, test_id: str, category: str):
        v4_id, v4_cat = _v4_id(test_id, category)
        if v4_cat in SINGLE_TURN_CATEGORIES and v4_cat not in self.loaded:
            from toolrm_rl.data.bfcl import load_bfcl

            self.loaded.add(v4_cat)
            self.by_id.update((r.id, r) for r in load_bfcl([v4_cat], self.data_dir))
        return self.by_id.get(v4_id)


def _resolve(row: LogRow, bank: _QuestionBank) -> tuple[list, ToolCatalog, list] | None:
    """(conversation, catalog, normalised answer) from the row, else from the packaged data."""
    if row.conversation and row.functions and row.possible_answer:
        catalog = ToolCatalog.load(row.functions)
        return row.conversation, catalog, _logged_answer(row.possible_answer, catalog)
    record = bank.get(row.id, row.test_category)
    if record is None:
        return None
    return (row.conversation or record.conversation, record.tools, record.answer)


def _logged_answer(answer: Any, catalog: ToolCatalog) -> list[dict]:
    """A logged possible answer in the list form. 2024 dict-form answers number repeated calls of one
    function ``f_1`` (which :func:`normalize_answer` reads) or, in about 30 parallel questions, ``f 1``."""
    if isinstance(answer, dict):
        answer = [{(bare if (bare := _SPACE_NUMBER.sub("", name)) in catalog else name): params}
                  for name, params in answer.items()]
    return normalize_answer(answer, catalog)


def _without_omittable(answer: list[dict], catalog: ToolCatalog) -> list[dict]:
    """The answer without the parameters that may be omitted (``""`` among their acceptable values), except
    the schema's required ones (some BFCL answers accept ``""`` for them, the matcher does not)."""
    out = []
    for item in answer:
        for name, params in item.items():
            spec = catalog.get(name)
            required = set(spec.required) if spec else set()
            out.append({name: {p: opts for p, opts in params.items()
                               if p in required or not (isinstance(opts, list) and "" in opts)}})
    return out


def _is_ast_category(category: str) -> bool:
    """A single-turn category with possible answers (the AST track), under any version's name."""
    return _v4_category(category) in SINGLE_TURN_CATEGORIES


# What our matcher may raise on an answer it cannot read (e.g. a literal map whose values are not
# option lists): such a row cannot be validated, so it is dropped and counted, not written.
_MATCHER_ERRORS = (TypeError, ValueError, KeyError, IndexError, RecursionError)


def build_pairs(logs_dir: str | Path, *, data_dir: str | Path | None = None, models: Iterable[str] | None = None,
                categories: Iterable[str] | None = None, per_question: int = 1, seed: int = 0,
                keep_unparsable: bool = False, optional_params: str = "omit") -> tuple[list[PairRecord], BuildReport]:
    """Turn BFCL logs under ``logs_dir`` into FC-RewardBench pairs (see the module doc).

    :param data_dir: bfcl-eval's ``data/`` folder for questions missing from the logs (default: the wheel's).
    :param models: keep only these ``model_name`` values (None: all).
    :param categories: keep only these test categories (2024, v3 or v4 names; None: all AST ones).
    :param per_question: pairs per question, each from a different failing model (seeded choice).
    :param keep_unparsable: keep ``ast_decoder:decoder_failed`` outputs as pairs with no rejected calls.
    :param optional_params: ``"omit"`` leaves out parameters whose acceptable values include ``""``;
        ``"first"`` writes their first non-empty acceptable value.
    :returns: ``(pairs sorted by test id then model, report)``.
    """
    if per_question < 1:
        raise ValueError("per_question must be >= 1")
    if optional_params not in ("omit", "first"):
        raise ValueError(f"optional_params must be 'omit' or 'first', not {optional_params!r}")
    report = BuildReport()
    models = set(models) if models else None
    wanted = {_v4_category(c) for c in categories} if categories else None
    bank = _QuestionBank(data_dir)
    by_question: dict[str, list[PairRecord]] = defaultdict(list)
    for row in read_bfcl_logs(logs_dir, report):
        report.rows += 1
        if models is not None and row.model_name not in models:
            report.skipped["other_model"] += 1
            continue
        if wanted is not None and _v4_category(row.test_category) not in wanted:
            report.skipped["other_category"] += 1
            continue
        if not _is_ast_category(row.test_category):
            report.skipped["not_ast_category"] += 1
            continue
        try:
            resolved = _resolve(row, bank)
            if resolved is not None:
                conversation, catalog, answer = resolved
                language = language_of_category(row.test_category)
                truth = GroundTruth(catalog, answer, row.test_category, language)
        except (CatalogError, ValueError) as err:
            # A defect in the logged question itself (BFCL's 2024 parallel_multiple_function_179 has a
            # parameter outside its function): that question cannot be paired, the others can.
            report.drop("bad_question", row, str(err))
            continue
        if resolved is None:
            report.skipped["question_not_found"] += 1
            continue
        error_type = row.error_type
        if row.decoded is not None:
            try:
                verdict = truth.check(row.decoded)
            except _MATCHER_ERRORS as err:
                report.drop("matcher_error", row, f"rejected output: {type(err).__name__}: {err}")
                continue
            if verdict.valid:
                # A result-file output that passes is not a failure; a score-file one is a checker disagreement.
                if row.error_type:
                    report.drop("passes_answer", row, f"logged {row.error_type}, accepted by our matcher")
                else:
                    report.skipped["not_a_failure"] += 1
                continue
            error_type = error_type or verdict.error_type
        report.failures += 1
        if row.decoded is None and not keep_unparsable:
            report.skipped["unparsable"] += 1
            continue
        chosen = concrete_calls(_without_omittable(answer, catalog) if optional_params == "omit" else answer, catalog,
                                language)
        try:
            chosen_verdict = truth.check(chosen)
        except _MATCHER_ERRORS as err:
            report.drop("matcher_error", row, f"chosen output: {type(err).__name__}: {err}")
            continue
        if not chosen_verdict.valid:
            report.drop("chosen_fails_matcher", row, f"{chosen_verdict.error_type}: {chosen_verdict.message}")
            continue
        raw_text = row.raw if isinstance(row.raw, str) else json.dumps(row.raw, ensure_ascii=False, default=str)
        by_question[f"{row.test_category}\x00{row.id}"].append(PairRecord(
            id=row.id, tools=catalog, conversation=conversation, chosen=chosen, rejected=row.decoded or [],
            rejected_text=None if row.decoded is not None else raw_text,
            error_type=error_type or UNPARSABLE, source=row.test_category, generator=row.model_name))
        report.candidates += 1
    rng = random.Random(seed)
    pairs: list[PairRecord] = []
    for key in sorted(by_question):
        options: dict[str, PairRecord] = {}
        for rec in sorted(by_question[key], key=lambda r: r.generator):
            options.setdefault(rec.generator, rec)  # one output per model and question
        chosen_models = rng.sample(sorted(options), min(per_question, len(options)))
        pairs.extend(options[m] for m in sorted(chosen_models))
    report.questions = len(by_question)
    report.pairs = len(pairs)
    report.pairs_by_category.update(p.source for p in pairs)
    return pairs, report
