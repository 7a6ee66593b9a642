"""Preference-pair records: FC-RewardBench and ToolRM-train-data rows <-> :class:`PairRecord`.

Two row schemas are read and written (detected per row by their call columns):

- ``fc_rewardbench`` (``ibm-research/fc-reward-bench``, ``../shared/data/bfcl_failures_dev.jsonl``):
  ``tools``, ``conversation``, ``chosen_output``, ``rejected_output`` (BFCL form
  ``[{"func": {"arg": value}}]``), ``error_type``, ``model_name``, ``test_category``, ``test_id``.
- ``toolrm_train`` (``ibm-research/ToolRM-train-data``): ``uuid``, ``dataset_name``, ``conversation``,
  ``tools``, ``tool_calls_correct``, ``tool_calls_incorrect`` (``[{"name": .., "arguments": {..}}]``
  or BFCL form), ``generator_model``.

``tools`` and the calls are JSON strings (lists are accepted too); ``conversation`` is a list of
``{role, content}`` messages or its JSON string. A call list ``[]`` means "no call" (the right answer
for irrelevance data). Columns this project adds when it has something to put there, and that other
readers can ignore: ``chosen_text`` / ``rejected_text`` (the text of an abstention answer) in both
schemas, ``error_type`` in ``toolrm_train``. Any other column is ignored.

Sources: JSON Lines (``.jsonl``, ``.ndjson``, ``.jsonl.gz``), JSON (a list of rows or
``{"data": [...]}``; a ``.json`` file holding JSON lines is read as such), Parquet, Arrow IPC
files, directories written by ``datasets`` ``save_to_disk`` (``Dataset`` or ``DatasetDict``), and
Hugging Face hub ids when a hub is reachable.

>>> row = {"tools": '[{"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": "integer"}}}}]',
...        "conversation": [{"role": "user", "content": "f of 3"}],
...        "chosen_output": '[{"f": {"x": 3}}]', "rejected_output": '[{"f": {"x": "3"}}]'}
>>> rec = PairRecord.from_row(row)
>>> rec.chosen, rec.rejected
([ToolCall(name='f', arguments={'x': 3})], [ToolCall(name='f', arguments={'x': '3'})])
>>> rec.to_toolrm_train()["tool_calls_correct"]
'[{"name": "f", "arguments": {"x": 3}}]'
>>> PairRecord.from_row({**row, "rejected_output": "[1"})
Traceback (most recent call last):
...
toolrm_rl.data.records.RecordError: field 'rejected_output': not valid JSON (Expecting ',' delimiter at char 2)
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolrm_rl.core.calls import (
    CatalogError,
    ToolCall,
    ToolCatalog,
    calls_from_any,
    calls_from_openai,
    calls_to_bfcl,
)
from toolrm_rl.core.io import atomic_write
from toolrm_rl.core.render import RMExample

__all__ = ["END_ROLES", "SCHEMAS", "LoadReport", "PairRecord", "RecordError", "detect_schema", "iter_jsonl",
           "iter_rows", "load_pairs", "pair_rows", "save_pairs"]

log = logging.getLogger(__name__)

SCHEMAS = ("fc_rewardbench", "toolrm_train")
# Roles a conversation may end with: the scored answer is the assistant turn that comes next.
END_ROLES = ("user", "tool", "function", "ipython")
MAX_ERRORS = 20  # messages kept in LoadReport.errors

# Column names per schema: (id, source, generator, error_type, chosen calls, rejected calls).
_COLUMNS = {
    "fc_rewardbench": ("test_id", "test_category", "model_name", "error_type", "chosen_output", "rejected_output"),
    "toolrm_train": ("uuid", "dataset_name", "generator_model", "error_type", "tool_calls_correct",
                     "tool_calls_incorrect"),
}
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
_DATA_SUFFIXES = _JSONL_SUFFIXES + (".json", ".json.gz", ".parquet", ".arrow", ".csv", ".txt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_SIMPLE_MESSAGE_KEYS = {"role", "content", "name", "tool_call_id"}


class RecordError(ValueError):
    """A row that cannot be read as a pair record. The message names the file, the row (``line N``:
    1-based line of a JSON Lines file; ``row N``: 0-based row index otherwise) and the field;
    the same parts are in ``file``, ``row`` and ``field`` (None when not applicable)."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.file, self.row, self.field = file, row, field


class _FieldError(Exception):
    """Internal: a bad field; turned into a RecordError with the row's location."""

    def __init__(self, field_name: str | None, detail: str) -> None:
        super().__init__(detail)
        self.field, self.detail = field_name, detail

    def message(self) -> str:
        return f"field '{self.field}': {self.detail}" if self.field else self.detail


@dataclass
class PairRecord:
    """One preference pair: a catalog and a conversation, a chosen and a rejected answer.

    ``chosen`` / ``rejected`` are call lists; ``[]`` is an abstention (no call), whose answer text,
    when known, is in ``chosen_text`` / ``rejected_text``. ``error_type`` is the raw BFCL checker string
    or a mutation label; ``source`` the test category or source data set; ``generator`` the model that
    produced the rejected answer.
    """

    id: str
    tools: ToolCatalog
    conversation: list[dict[str, Any]]
    chosen: list[ToolCall]
    rejected: list[ToolCall]
    chosen_text: str | None = None
    rejected_text: str | None = None
    error_type: str = ""
    source: str = ""
    generator: str = ""

    # -- reading -------------------------------------------------------------------------------
    @classmethod
    def from_row(cls, row: dict[str, Any], *, schema: str = "auto", default_id: str = "") -> PairRecord:
        """Read one row of either schema (``schema="auto"`` detects it from the row's keys).

        Raises :class:`RecordError` naming the field (the location is added by :func:`load_pairs`).
        """
        try:
            return _parse_row(row, schema, default_id)
        except _FieldError as err:
            raise RecordError(err.message(), field=err.field) from None

    # -- reward-model inputs ---------------------------------------------------------------------
    def chosen_example(self) -> RMExample:
        """The chosen answer as an :class:`~toolrm_rl.core.render.RMExample`."""
        return RMExample(self.tools, self.conversation, self.chosen, self.chosen_text)

    def rejected_example(self) -> RMExample:
        """The rejected answer as an :class:`~toolrm_rl.core.render.RMExample`."""
        return RMExample(self.tools, self.conversation, self.rejected, self.rejected_text)

    # -- writing -------------------------------------------------------------------------------
    def to_fc_rewardbench(self) -> dict[str, Any]:
        """A JSON-able row in the FC-RewardBench schema (calls in BFCL form, JSON strings).

        ``chosen_text`` / ``rejected_text`` are added only when set.
        """
        row = {
            "tools": _dumps(ToolCatalog.load(self.tools).to_dicts()),
            "conversation": _copy_messages(self.conversation),
            "chosen_output": _dumps(calls_to_bfcl(self.chosen)),
            "rejected_output": _dumps(calls_to_bfcl(self.rejected)),
            "error_type": self.error_type,
            "model_name": self.generator,
            "test_category": self.source,
            "test_id": self.id,
        }
        return self._add_texts(row)

    def to_toolrm_train(self) -> dict[str, Any]:
        """A JSON-able row in the ToolRM-train-data schema (calls as ``[{"name", "arguments"}]`` JSON).

        ``error_type`` (when non-empty) and ``chosen_text`` / ``rejected_text`` (when set) are added.
        """
        row = {
            "uuid": self.id,
            "dataset_name": self.source,
            "conversation": _copy_messages(self.conversation),
            "tools": _dumps(ToolCatalog.load(self.tools).to_dicts()),
            "tool_calls_correct": _dumps(_named_calls(self.chosen)),
            "tool_calls_incorrect": _dumps(_named_calls(self.rejected)),
            "generator_model": self.generator,
        }
        if self.error_type:
            row["error_type"] = self.error_type
        return self._add_texts(row)

    def _add_texts(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.chosen_text is not None:
            row["chosen_text"] = self.chosen_text
        if self.rejected_text is not None:
            row["rejected_text"] = self.rejected_text
        return row


@dataclass
class LoadReport:
    """What :func:`load_pairs` read: rows seen, records loaded, rows skipped (``skip_bad_rows=True``)
    with the first :data:`MAX_ERRORS` messages, the number of rows of each schema, and the blank lines
    of JSON Lines input (skipped; not rows)."""

    n_rows: int = 0
    n_loaded: int = 0
    n_skipped: int = 0
    errors: list[str] = field(default_factory=list)
    schemas: dict[str, int] = field(default_factory=dict)
    n_blank_lines: int = 0

    def __str__(self) -> str:
        text = f"{self.n_loaded} of {self.n_rows} rows loaded"
        if self.n_skipped:
            text += f", {self.n_skipped} skipped (first: {self.errors[0]})"
        if self.n_blank_lines:
            text += f", {self.n_blank_lines} blank line{'s' if self.n_blank_lines > 1 else ''} ignored"
        return text


# -- row parsing -----------------------------------------------------------------------------------

def detect_schema(row: dict[str, Any]) -> str:
    """``"fc_rewardbench"`` or ``"toolrm_train"``, from the row's call columns.

    >>> detect_schema({"tool_calls_correct": "[]", "tool_calls_incorrect": "[]"})
    'toolrm_train'
    """
    fc = any(k in row for k in _COLUMNS["fc_rewardbench"][4:])
    tr = any(k in row for k in _COLUMNS["toolrm_train"][4:])
    if fc and tr:
        raise _FieldError(None, "has both chosen_output/rejected_output and tool_calls_correct/"
                                "tool_calls_incorrect columns: pass schema='fc_rewardbench' or 'toolrm_train'")
    if not (fc or tr):
        raise _FieldError(None, "not a pair record: no chosen_output/rejected_output (fc_rewardbench) or "
                                f"tool_calls_correct/tool_calls_incorrect (toolrm_train) column; keys: {sorted(row)}")
    return "fc_rewardbench" if fc else "toolrm_train"


def _check_schema(schema: str) -> None:
    if schema != "auto" and schema not in SCHEMAS:
        raise ValueError(f"schema: expected 'auto' or one of {SCHEMAS}, got {schema!r}")


def _parse_row(row: Any, schema: str, default_id: str) -> PairRecord:
    if not isinstance(row, dict):
        raise _FieldError(None, f"expected an object (a row), got {type(row).__name__}")
    _check_schema(schema)
    if schema == "auto":
        schema = detect_schema(row)
    id_col, source_col, gen_col, err_col, chosen_col, rejected_col = _COLUMNS[schema]
    tools = _parse_tools(row)
    conversation = _parse_conversation(row)
    chosen = _parse_calls(row, chosen_col)
    rejected = _parse_calls(row, rejected_col)
    return PairRecord(
        id=_identifier(row, id_col) or default_id,
        tools=tools,
        conversation=conversation,
        chosen=chosen,
        rejected=rejected,
        chosen_text=_optional_text(row, "chosen_text"),
        rejected_text=_optional_text(row, "rejected_text"),
        error_type=_text(row, err_col),
        source=_text(row, source_col),
        generator=_text(row, gen_col),
    )


def _decode(row: dict[str, Any], name: str) -> Any:
    """The field's value, JSON-decoded when it is a string; missing, null or blank is an error."""
    if name not in row:
        raise _FieldError(name, "missing")
    value = row[name]
    if value is None:
        raise _FieldError(name, "is null")
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        if not value.strip():
            raise _FieldError(name, "is an empty string (write [] for an empty list)")
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise _FieldError(name, f"not valid JSON ({err.msg} at char {err.pos})") from None
    return value


def _parse_tools(row: dict[str, Any]) -> ToolCatalog:
    value = _decode(row, "tools")
    try:
        return ToolCatalog.load(value)
    except (CatalogError, TypeError, ValueError, AttributeError) as err:
        raise _FieldError("tools", _describe(err)) from None


def _parse_calls(row: dict[str, Any], name: str) -> list[ToolCall]:
    value = _decode(row, name)
    try:
        if isinstance(value, str):  # double-encoded JSON
            value = json.loads(value)
        return calls_from_any(value)
    except json.JSONDecodeError as err:
        raise _FieldError(name, f"not valid JSON inside a JSON string ({err.msg} at char {err.pos})") from None
    except (CatalogError, TypeError, ValueError, AttributeError) as err:
        raise _FieldError(name, _describe(err)) from None


def _parse_conversation(row: dict[str, Any]) -> list[dict[str, Any]]:
    value = _decode(row, "conversation")
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise _FieldError("conversation", f"expected a list of messages, got {type(value).__name__}")
    flat = [m for item in value for m in (item if isinstance(item, list) else [item])]  # BFCL: list of turns
    if not flat:
        raise _FieldError("conversation", "is empty")
    messages = []
    for i, msg in enumerate(flat):
        where = f"conversation[{i}]"
        if not isinstance(msg, dict):
            raise _FieldError("conversation", f"{where}: expected a {{role, content}} object, got {msg!r:.60}")
        role = msg.get("role")
        if not isinstance(role, str) or not role:
            raise _FieldError("conversation", f"{where}.role: missing or not a string")
        if "content" not in msg:
            raise _FieldError("conversation", f"{where}.content: missing")
        content = msg["content"]
        if content is None and role != "assistant":
            raise _FieldError("conversation", f"{where}.content: null (allowed only in an assistant tool-call turn)")
        if content is not None and not isinstance(content, str):
            raise _FieldError("conversation", f"{where}.content: expected a string, got {type(content).__name__}")
        if msg.get("tool_calls") is not None:
            try:
                calls_from_openai(msg["tool_calls"])
            except (CatalogError, TypeError, ValueError, AttributeError) as err:
                raise _FieldError("conversation", f"{where}.{_describe(err)}") from None
        # Arrow/Parquet give every message every key of the column's struct: drop the null extras.
        messages.append({k: v for k, v in msg.items() if v is not None or k == "content"})
    last = messages[-1]["role"]
    if last not in END_ROLES:
        raise _FieldError("conversation", f"must end with a user or tool turn (the scored answer comes next), "
                                          f"ends with {last!r}")
    return messages


def _text(row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    if value is not None and not isinstance(value, str):
        raise _FieldError(name, f"expected a string or null, got {type(value).__name__} {value!r:.60}")
    return value or ""


def _identifier(row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    if type(value) is int:  # numeric ids are common and unambiguous
        return str(value)
    return _text(row, name)


def _optional_text(row: dict[str, Any], name: str) -> str | None:
    value = row.get(name)
    if value is not None and not isinstance(value, str):
        raise _FieldError(name, f"expected a string or null, got {type(value).__name__}")
    return value


def _describe(err: Exception) -> str:
    return str(err) if isinstance(err, CatalogError) else f"{type(err).__name__}: {err}"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _named_calls(calls: Iterable[ToolCall]) -> list[dict[str, Any]]:
    return [{"name": c.name, "arguments": c.arguments} for c in calls]


def _copy_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(m) for m in messages]


# -- sources ---------------------------------------------------------------------------------------

def _suffix_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith((".json", ".json.gz")):
        return "json"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".arrow"):
        return "arrow"
    return None


def _looks_like_hub_id(text: str) -> bool:
    return (bool(_HUB_ID.match(text)) and ".." not in text and "--" not in text and len(text) <= 96
            and not text.lower().endswith(_DATA_SUFFIXES))


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


# An item of _rows: (label, unit, index, row or the RecordError of an unreadable row, or BLANK for a
# blank line); unit is "line" (1-based line of a JSON Lines file) or "row" (0-based index).
_Item = tuple[str, str, int, Any]
_BLANK = object()  # a blank line of JSON Lines input: not a row, but counted


def iter_jsonl(path: str | Path, *, objects: bool = True) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of a JSON Lines file; a bad line raises
    ``ValueError`` naming the file and the line (and so does a non-object line when ``objects``)."""
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {line_no}: not valid JSON ({err.msg})") from None
            if objects and not isinstance(row, dict):
                raise ValueError(f"{path}: line {line_no}: expected a JSON object, got {type(row).__name__}")
            yield line_no, row


def _jsonl_rows(lines: Iterable[str], label: str) -> Iterator[_Item]:
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            yield label, "line", lineno, _BLANK
            continue
        try:
            yield label, "line", lineno, json.loads(line)
        except json.JSONDecodeError as err:
            yield label, "line", lineno, RecordError(f"{label}: line {lineno}: not valid JSON ({err.msg} at char "
                                                     f"{err.pos})", file=label, row=lineno)


def _json_rows(path: Path, label: str) -> Iterator[_Item]:
    with _open_text(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # a .json file holding JSON lines (BFCL ships its data so)
            yield from _jsonl_rows(text.splitlines(), label)
            return
        raise RecordError(f"{label}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})",
                          file=label) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        keys = f" with keys {sorted(data)[:8]}" if isinstance(data, dict) else ""
        raise RecordError(f'{label}: expected a JSON list of rows or {{"data": [...]}}, got '
                          f"{type(data).__name__}{keys}", file=label)
    for i, row in enumerate(data):
        yield label, "row", i, row


def _batches_rows(batches: Iterable[Any], label: str) -> Iterator[_Item]:
    i = 0
    for batch in batches:
        for row in batch.to_pylist():
            yield label, "row", i, row
            i += 1


def _parquet_rows(path: Path, label: str) -> Iterator[_Item]:
    import pyarrow.parquet as pq

    yield from _batches_rows(pq.ParquetFile(path).iter_batches(batch_size=1024), label)


def _arrow_rows(path: Path, label: str) -> Iterator[_Item]:
    import pyarrow as pa

    with pa.memory_map(str(path), "r") as source:
        try:
            reader = pa.ipc.open_stream(source)  # what datasets writes
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            yield from _batches_rows((reader.get_batch(i) for i in range(reader.num_record_batches)), label)
            return
        yield from _batches_rows(reader, label)


def _dataset_rows(ds: Any, label: str) -> Iterator[_Item]:
    import datasets

    if isinstance(ds, datasets.Dataset):
        i = 0
        for batch in ds.iter(batch_size=1024):
            columns = list(batch)
            n = len(batch[columns[0]]) if columns else 0
            for j in range(n):
                yield label, "row", i, {c: batch[c][j] for c in columns}
                i += 1
    else:  # IterableDataset or any iterable of dicts
        for i, row in enumerate(ds):
            yield label, "row", i, row


def _pick_split(dd: Any, split: str | None, label: str) -> tuple[Any, str]:
    """The split of a DatasetDict: ``split``, else the only one, else ``train``, else ``data``."""
    names = list(dd.keys())
    if split is not None:
        if split not in dd:
            raise ValueError(f"{label}: no split {split!r}; splits: {names}")
        return dd[split], split
    if len(names) == 1:
        return dd[names[0]], names[0]
    for name in ("train", "data"):
        if name in dd:
            return dd[name], name
    raise ValueError(f"{label}: several splits {names}: pass split=")


def _datasets_dir_rows(path: Path, label: str, split: str | None) -> Iterator[_Item]:
    if not ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        raise ValueError(f"{label}: a directory that datasets' save_to_disk did not write (no dataset_dict.json "
                         "or state.json); pass a .jsonl, .json, .parquet or .arrow file or a save_to_disk directory")
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds, name = _pick_split(ds, split, label)
        label = f"{label} (split {name!r})"
    yield from _dataset_rows(ds, label)


def _hub_rows(source: str, split: str | None) -> Iterator[_Item]:
    try:
        import datasets

        ds = datasets.load_dataset(source, split=split) if split is not None else datasets.load_dataset(source)
    except Exception as err:  # any failure (no hub, unknown id, bad split) means "not found" here
        raise FileNotFoundError(f"{source}: no such local file or directory, and loading it as a Hugging Face hub "
                                f"dataset failed ({type(err).__name__}: {str(err)[:300]})") from err
    label = f"hub:{source}"
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):  # no split asked for
        ds, split = _pick_split(ds, split, label)
    if split is not None:
        label = f"{label} (split {split!r})"
    yield from _dataset_rows(ds, label)


def _rows(source: str | Path, split: str | None) -> Iterator[_Item]:
    path = Path(source).expanduser()
    label = str(source)
    if path.is_dir():
        yield from _datasets_dir_rows(path, label, split)
        return
    if path.is_file():
        kind = _suffix_kind(path)
        if kind == "jsonl":
            with _open_text(path) as f:
                yield from _jsonl_rows(f, label)
        elif kind == "json":
            yield from _json_rows(path, label)
        elif kind == "parquet":
            yield from _parquet_rows(path, label)
        elif kind == "arrow":
            yield from _arrow_rows(path, label)
        else:
            raise ValueError(f"{label}: unsupported file type; expected .jsonl, .ndjson, .json, .parquet or .arrow "
                             "(optionally .gz for JSON), or a save_to_disk directory")
        return
    if isinstance(source, str) and _looks_like_hub_id(source):
        yield from _hub_rows(source, split)
        return
    raise FileNotFoundError(f"{label}: no such file or directory (and not a Hugging Face hub id)")


def iter_rows(source: str | Path, split: str | None = None) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Raw rows of a source as ``(file label, index, row)``.

    ``index`` is the 1-based line number for JSON Lines files and the 0-based row index otherwise
    (error messages say ``line N`` or ``row N``). ``split`` picks a split of a ``DatasetDict``
    directory or hub data set (default: the only split, else ``train``, else ``data``); single files
    have no splits and ignore it. Raises :class:`RecordError` on a line that is not JSON,
    ``FileNotFoundError`` when the source is neither a local path nor a loadable hub id.
    """
    for label, _unit, index, row in _rows(source, split):
        if row is _BLANK:
            continue
        if isinstance(row, RecordError):
            raise row
        yield label, index, row


def load_pairs(source: str | Path, *, split: str | None = None, schema: str = "auto", skip_bad_rows: bool = False,
               limit: int | None = None) -> tuple[list[PairRecord], LoadReport]:
    """Load pair records from a file, a ``save_to_disk`` directory or a hub id (see the module doc).

    :param split: the split of a ``DatasetDict`` directory or a hub data set (see :func:`iter_rows`).
    :param schema: ``"auto"`` (detected per row from its call columns), ``"fc_rewardbench"`` or
        ``"toolrm_train"``.
    :param skip_bad_rows: False: the first malformed row raises :class:`RecordError` naming the file,
        the row and the field. True: malformed rows are skipped, counted in the report (with the first
        :data:`MAX_ERRORS` messages) and a warning is logged.
    :param limit: read at most this many rows (bad rows included).
    :returns: ``(records, report)``.

    Each record is validated: ``tools`` loads as a catalog, both call lists parse (``[]`` is no call),
    the conversation is a non-empty list of ``{role, content}`` messages (``content`` may be null in an
    assistant tool-call turn) ending with one of :data:`END_ROLES`. A record without an id gets
    ``"<file name>#<index>"``.
    """
    _check_schema(schema)
    if limit is not None and limit < 0:
        raise ValueError("limit: must be >= 0 or None")
    records: list[PairRecord] = []
    report = LoadReport()
    schemas: Counter[str] = Counter()
    label = str(source)
    if limit == 0:
        return records, report
    for label, unit, index, row in _rows(source, split):
        if row is _BLANK:
            report.n_blank_lines += 1
            continue
        report.n_rows += 1
        try:
            if isinstance(row, RecordError):
                raise row
            try:
                row_schema = detect_schema(row) if schema == "auto" and isinstance(row, dict) else schema
                rec = _parse_row(row, row_schema, f"{Path(label).name}#{index}")
            except _FieldError as err:
                raise RecordError(f"{label}: {unit} {index}: {err.message()}", file=label, row=index,
                                  field=err.field) from None
        except RecordError as err:
            if not skip_bad_rows:
                raise
            report.n_skipped += 1
            if len(report.errors) < MAX_ERRORS:
                report.errors.append(str(err))
        else:
            records.append(rec)
            schemas[row_schema] += 1
        if limit is not None and report.n_rows >= limit:
            break
    report.n_loaded = len(records)
    report.schemas = dict(schemas)
    if report.n_blank_lines:
        log.info("%s: ignored %d blank line(s)", label, report.n_blank_lines)
    if report.n_skipped:
        log.warning("%s: skipped %d of %d rows; first: %s", label, report.n_skipped, report.n_rows, report.errors[0])
    return records, report


# -- saving ----------------------------------------------------------------------------------------

def save_pairs(records: Iterable[PairRecord], path: str | Path, *, schema: str = "toolrm_train") -> Path:
    """Write records in ``schema`` (``"toolrm_train"`` or ``"fc_rewardbench"``) to ``path``.

    The format follows the suffix: ``.jsonl`` / ``.ndjson`` (JSON Lines), ``.json`` (a JSON list),
    ``.parquet``. Every row gets the same columns (optional ones null where unset). In Parquet the
    ``conversation`` column is a list of ``{role, content}`` structs when every message has only
    string/null ``role``, ``content``, ``name``, ``tool_call_id``; otherwise (e.g. ``tool_calls``,
    whose argument objects Arrow would widen into structs with null-filled keys) each conversation is
    stored as its JSON string, which :func:`load_pairs` reads too.

    The file is written atomically (:func:`toolrm_rl.core.io.atomic_write`): a failure (e.g. a value that is not JSON-serializable, reported as :class:`RecordError` naming the
    record) leaves any previous file untouched and no partial file behind. Returns the path.
    """
    if schema not in SCHEMAS:
        raise ValueError(f"schema: expected one of {SCHEMAS}, got {schema!r}")
    path = Path(path)
    kind = _suffix_kind(path)
    if kind not in ("jsonl", "json", "parquet") or path.name.lower().endswith(".gz"):
        raise ValueError(f"{path}: unsupported suffix for save_pairs; use .jsonl, .ndjson, .json or .parquet")

    def write(tmp: Path) -> None:
        if kind == "parquet":
            _write_parquet(pair_rows(records, schema), tmp)
            return
        with open(tmp, "x", encoding="utf-8") as f:
            rows = pair_rows(records, schema)
            if kind == "jsonl":
                f.writelines(_row_json(row, i) + "\n" for i, row in enumerate(rows))
            else:
                f.write("[\n" + ",\n".join(_row_json(row, i) for i, row in enumerate(rows)) + "\n]\n")

    return atomic_write(path, write)


def _to_row(rec: PairRecord, schema: str, i: int) -> dict[str, Any]:
    if not isinstance(rec, PairRecord):
        raise TypeError(f"save_pairs: record {i}: expected a PairRecord, got {type(rec).__name__}")
    try:
        return rec.to_toolrm_train() if schema == "toolrm_train" else rec.to_fc_rewardbench()
    except (TypeError, ValueError) as err:
        raise RecordError(f"save_pairs: record {i} (id {rec.id!r}): not JSON-serializable ({err})", row=i) from None


def pair_rows(records: Iterable[PairRecord], schema: str = "toolrm_train") -> list[dict[str, Any]]:
    """The rows :func:`save_pairs` writes: every row with the same columns (the schema's first, then the
    optional ones, null where unset). Build tables from these, not from ``to_*`` dicts one by one:
    ``datasets.Dataset.from_list`` and ``pyarrow.Table.from_pylist`` take the columns of the first row
    and silently drop the others."""
    if schema not in SCHEMAS:
        raise ValueError(f"schema: expected one of {SCHEMAS}, got {schema!r}")
    rows = [_to_row(rec, schema, i) for i, rec in enumerate(records)]
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return [{c: row.get(c) for c in columns} for row in rows]


def _row_json(row: dict[str, Any], i: int) -> str:
    try:
        return json.dumps(row, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise RecordError(f"save_pairs: record {i} (id {row.get('uuid', row.get('test_id'))!r}): not "
                          f"JSON-serializable ({err})", row=i) from None


def _simple_conversation(messages: Any) -> bool:
    return isinstance(messages, list) and all(
        isinstance(m, dict) and set(m) <= _SIMPLE_MESSAGE_KEYS
        and all(v is None or isinstance(v, str) for v in m.values()) for m in messages)


def _write_parquet(rows: list[dict[str, Any]], tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for i, row in enumerate(rows):
        _row_json(row, i)  # the same serializability check and error as the JSON formats
    if rows and not all(_simple_conversation(r["conversation"]) for r in rows):
        rows = [{**r, "conversation": _dumps(r["conversation"])} for r in rows]
    pq.write_table(pa.Table.from_pylist(rows), tmp)
