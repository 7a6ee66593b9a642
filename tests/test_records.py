"""Tests for toolrm_rl.data.records: pair records in the FC-RewardBench and ToolRM-train-data schemas."""

from __future__ import annotations

import collections
import copy
import doctest
import importlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolrm_rl.core.calls import ToolCall, ToolCatalog, calls_to_bfcl
from toolrm_rl.core.render import RMExample, render
from toolrm_rl.data.records import (
    MAX_ERRORS,
    LoadReport,
    PairRecord,
    RecordError,
    iter_rows,
    load_pairs,
    pair_rows,
    save_pairs,
)

SHARED_FAILURES = Path(__file__).resolve().parents[2] / "shared" / "data" / "bfcl_failures_dev.jsonl"
SCHEMAS = ("fc_rewardbench", "toolrm_train")

BFCL_TOOLS = [
    {"name": "calc.area", "description": "Area under a curve.",
     "parameters": {"type": "dict", "properties": {"poly": {"type": "array", "items": {"type": "float"}},
                                                   "unit": {"type": "string"}},
                    "required": ["poly"]}},
    {"name": "weather", "description": "Météo du jour.",
     "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
]
JSON_TOOLS = [{"name": "get_time", "description": "Time in a zone.",
               "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}]


def make_records() -> list[PairRecord]:
    """Pairs covering floats, parallel calls, abstentions, multi-turn tool-call turns, non-ASCII text."""
    tools = ToolCatalog.load(BFCL_TOOLS)
    return [
        PairRecord(  # nested float array vs int array: only the JSON types differ
            id="simple_1", tools=tools, conversation=[{"role": "user", "content": "Area of 3x^2+2x-4?"}],
            chosen=[ToolCall("calc.area", {"poly": [3.0, 2.0, -4.0]})],
            rejected=[ToolCall("calc.area", {"poly": [3, 2, -4]})],
            error_type="type_error:nested", source="simple", generator="model-a"),
        PairRecord(  # parallel calls vs a wrong count
            id="parallel_7", tools=tools,
            conversation=[{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "Weather in Zürich and 東京?"}],
            chosen=[ToolCall("weather", {"city": "Zürich"}), ToolCall("weather", {"city": "東京"})],
            rejected=[ToolCall("weather", {"city": "Zürich"})],
            error_type="parallel_function_checker_no_order:wrong_count", source="parallel", generator="model-b"),
        PairRecord(  # irrelevance: abstaining is right
            id="irrelevance_3", tools=ToolCatalog.load(JSON_TOOLS),
            conversation=[{"role": "user", "content": "Tell me a joke."}],
            chosen=[], rejected=[ToolCall("get_time", {"tz": "UTC"})],
            chosen_text="None of the tools can tell a joke.", error_type="irrelevance", source="xlam-irrelevance",
            generator="model-c"),
        PairRecord(  # multi-turn: an assistant tool-call turn (content null) and a tool observation last
            id="sgd_42", tools=ToolCatalog.load(JSON_TOOLS),
            conversation=[
                {"role": "user", "content": "Time in Paris, then in Lima."},
                {"role": "assistant", "content": None,
                 "tool_calls": [ToolCall("get_time", {"tz": "Europe/Paris"}).to_openai("call_0")]},
                {"role": "tool", "content": "14:02", "tool_call_id": "call_0"},
            ],
            chosen=[ToolCall("get_time", {"tz": "America/Lima"})], rejected=[],
            rejected_text="It is 14:02.", source="sgd", generator="model-d"),
    ]


def rows_of(records: list[PairRecord], schema: str) -> list[dict]:
    return pair_rows(records, schema)


def canonical(records: list[PairRecord]) -> list[str]:
    """JSON text of the records (tells 3 from 3.0, which == does not)."""
    return [json.dumps(r.to_toolrm_train() | {"id": r.id, "error_type": r.error_type}, sort_keys=True)
            for r in records]


def assert_same(loaded: list[PairRecord], expected: list[PairRecord]) -> None:
    assert loaded == expected
    assert canonical(loaded) == canonical(expected)


def write_jsonl(path: Path, rows: list, blank_after: int | None = None) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def datasets_mod():
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    return datasets


# -- round trips ----------------------------------------------------------------------------------

@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_save_then_load_round_trip(tmp_path, schema, suffix):
    records = make_records()
    path = save_pairs(records, tmp_path / f"pairs{suffix}", schema=schema)
    assert path == tmp_path / f"pairs{suffix}" and path.exists()
    loaded, report = load_pairs(path)
    assert_same(loaded, records)
    assert report == LoadReport(n_rows=4, n_loaded=4, n_skipped=0, errors=[], schemas={schema: 4})
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left
    assert isinstance(loaded[0].chosen[0].arguments["poly"][0], float)
    assert isinstance(loaded[0].rejected[0].arguments["poly"][0], int)


@pytest.mark.parametrize("schema", SCHEMAS)
def test_json_data_object_round_trip(tmp_path, schema):
    records = make_records()
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps({"data": rows_of(records, schema)}), encoding="utf-8")
    assert_same(load_pairs(path)[0], records)


def test_json_file_holding_json_lines_is_read_as_lines(tmp_path):
    records = make_records()
    path = write_jsonl(tmp_path / "pairs.json", rows_of(records, "fc_rewardbench"))
    assert_same(load_pairs(path)[0], records)


@pytest.mark.parametrize("schema", SCHEMAS)
def test_save_to_disk_dataset_round_trip(tmp_path, schema, datasets_mod):
    records = make_records()
    datasets_mod.Dataset.from_list(rows_of(records, schema)).save_to_disk(str(tmp_path / "ds"))
    loaded, report = load_pairs(tmp_path / "ds")
    assert_same(loaded, records)  # Arrow's null-filled struct keys are dropped again
    assert report.schemas == {schema: 4}


@pytest.mark.parametrize("schema", SCHEMAS)
def test_save_to_disk_dataset_dict_splits(tmp_path, schema, datasets_mod):
    records = make_records()
    rows = rows_of(records, schema)
    dd = datasets_mod.DatasetDict({"train": datasets_mod.Dataset.from_list(rows[:3]),
                                   "test": datasets_mod.Dataset.from_list(rows[3:])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert_same(load_pairs(tmp_path / "dd")[0], records[:3])  # default: "train"
    assert_same(load_pairs(tmp_path / "dd", split="test")[0], records[3:])
    with pytest.raises(ValueError, match=r"no split 'validation'.*'train'"):
        load_pairs(tmp_path / "dd", split="validation")
    labels = {label for label, _, _ in iter_rows(tmp_path / "dd", split="test")}
    assert labels == {f"{tmp_path / 'dd'} (split 'test')"}


def test_dataset_dict_default_split_rules(tmp_path, datasets_mod):
    rows = rows_of(make_records(), "fc_rewardbench")
    ds = datasets_mod.Dataset.from_list(rows[:2])
    datasets_mod.DatasetDict({"data": ds}).save_to_disk(str(tmp_path / "only"))
    assert len(load_pairs(tmp_path / "only")[0]) == 2  # the only split (FC-RewardBench's is "data")
    datasets_mod.DatasetDict({"data": ds, "extra": datasets_mod.Dataset.from_list(rows[2:])}).save_to_disk(
        str(tmp_path / "data_first"))
    assert len(load_pairs(tmp_path / "data_first")[0]) == 2
    datasets_mod.DatasetDict({"a": ds, "b": ds}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(ValueError, match=r"several splits \['a', 'b'\]: pass split="):
        load_pairs(tmp_path / "two")


def test_parquet_stores_tool_call_conversations_as_json(tmp_path):
    import pyarrow.parquet as pq

    records = make_records()
    save_pairs(records[:3], tmp_path / "simple.parquet")
    save_pairs(records, tmp_path / "tool_calls.parquet")
    assert str(pq.read_schema(tmp_path / "simple.parquet").field("conversation").type).startswith("list<")
    assert str(pq.read_schema(tmp_path / "tool_calls.parquet").field("conversation").type) == "string"
    assert_same(load_pairs(tmp_path / "tool_calls.parquet")[0], records)


def test_rows_share_columns_and_optional_ones_are_null(tmp_path):
    records = make_records()
    save_pairs(records, tmp_path / "p.jsonl", schema="toolrm_train")
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert all(list(r) == list(rows[0]) for r in rows)
    assert list(rows[0])[:7] == ["uuid", "dataset_name", "conversation", "tools", "tool_calls_correct",
                                 "tool_calls_incorrect", "generator_model"]
    assert rows[0]["chosen_text"] is None and rows[2]["chosen_text"] == "None of the tools can tell a joke."
    assert rows[2]["tool_calls_correct"] == "[]"
    assert rows[3]["error_type"] is None  # optional column, null where unset -> "" when loaded
    assert load_pairs(tmp_path / "p.jsonl")[0][3].error_type == ""


def test_arrow_ipc_file(tmp_path):
    import pyarrow as pa

    records = make_records()[:3]
    table = pa.Table.from_pylist(rows_of(records, "toolrm_train"))
    with pa.OSFile(str(tmp_path / "stream.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    with pa.OSFile(str(tmp_path / "file.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    assert_same(load_pairs(tmp_path / "stream.arrow")[0], records)
    assert_same(load_pairs(tmp_path / "file.arrow")[0], records)


# -- schemas ---------------------------------------------------------------------------------------

def test_auto_detection_per_row_in_a_mixed_file(tmp_path):
    records = make_records()
    rows = [records[0].to_fc_rewardbench(), records[1].to_toolrm_train(), records[2].to_fc_rewardbench()]
    rows.append({**records[3].to_toolrm_train(), "extra_column": {"anything": [1, 2]}})  # unknown: ignored
    loaded, report = load_pairs(write_jsonl(tmp_path / "mixed.jsonl", rows))
    assert_same(loaded, records)
    assert report.schemas == {"fc_rewardbench": 2, "toolrm_train": 2}


def test_forced_schema_and_undetectable_rows(tmp_path):
    rec = make_records()[0]
    path = write_jsonl(tmp_path / "fc.jsonl", [rec.to_fc_rewardbench()])
    assert load_pairs(path, schema="fc_rewardbench")[0] == [rec]
    with pytest.raises(RecordError, match=r"fc\.jsonl: line 1: field 'tool_calls_correct': missing"):
        load_pairs(path, schema="toolrm_train")
    both = {**rec.to_fc_rewardbench(), **rec.to_toolrm_train()}
    with pytest.raises(RecordError, match="has both .* pass schema="):
        load_pairs(write_jsonl(tmp_path / "both.jsonl", [both]))
    assert load_pairs(tmp_path / "both.jsonl", schema="toolrm_train")[0] == [rec]
    with pytest.raises(RecordError, match=r"line 1: not a pair record.*keys: \['conversation', 'tools'\]"):
        load_pairs(write_jsonl(tmp_path / "none.jsonl", [{"tools": "[]", "conversation": []}]))
    with pytest.raises(ValueError, match="schema: expected"):
        load_pairs(path, schema="bfcl")


def test_call_formats_and_conversation_as_json_string(tmp_path):
    row = make_records()[1].to_toolrm_train()
    calls = [{"name": "weather", "arguments": {"city": "Zürich"}},
             {"name": "weather", "arguments": {"city": "東京"}}]
    variants = [
        {"tool_calls_correct": json.dumps(calls)},  # name/arguments
        {"tool_calls_correct": json.dumps([{c["name"]: c["arguments"]} for c in calls])},  # BFCL
        {"tool_calls_correct": json.dumps([ToolCall(c["name"], c["arguments"]).to_openai() for c in calls])},
        {"tool_calls_correct": calls},  # already decoded
        {"conversation": json.dumps(row["conversation"])},
        {"conversation": [row["conversation"]]},  # BFCL's list of turns
    ]
    for change in variants:
        assert PairRecord.from_row({**row, **change}) == make_records()[1], change


def test_pair_record_examples_and_rendering():
    rec = make_records()[2]
    assert rec.chosen_example() == RMExample(rec.tools, rec.conversation, [], "None of the tools can tell a joke.")
    assert rec.rejected_example() == RMExample(rec.tools, rec.conversation, [ToolCall("get_time", {"tz": "UTC"})])
    for ex in (rec.chosen_example(), rec.rejected_example()):
        out = render(ex.tools, ex.conversation, ex.calls, candidate_text=ex.text)
        assert "Tell me a joke." in out.text
    assert "get_time" in render(rec.tools, rec.conversation, rec.rejected).text.split("\n")[0]


# -- malformed rows --------------------------------------------------------------------------------

def _fc_row() -> dict:
    return make_records()[0].to_fc_rewardbench()


def _train_row() -> dict:
    return make_records()[3].to_toolrm_train()


BAD_ROWS = [  # (id, base row, change, field, message fragment)
    ("tools-json", _fc_row, {"tools": "[{"}, "tools", "not valid JSON (Expecting"),
    ("tools-name", _fc_row, {"tools": '[{"description": "no name"}]'}, "tools", "tools[0].name: missing"),
    ("tools-missing", _fc_row, {"tools": None}, "tools", "is null"),
    ("tools-type", _fc_row, {"tools": "42"}, "tools", "expected a list of function specs"),
    ("conv-empty", _fc_row, {"conversation": []}, "conversation", "is empty"),
    ("conv-json", _fc_row, {"conversation": '[{"role": "user"'}, "conversation", "not valid JSON"),
    ("conv-ends-assistant", _fc_row,
     {"conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
     "conversation", "must end with a user or tool turn"),
    ("conv-no-content", _fc_row, {"conversation": [{"role": "user"}]}, "conversation",
     "conversation[0].content: missing"),
    ("conv-null-user-content", _fc_row, {"conversation": [{"role": "user", "content": None}]}, "conversation",
     "null (allowed only in an assistant tool-call turn)"),
    ("conv-no-role", _fc_row, {"conversation": [{"content": "hi"}]}, "conversation", "conversation[0].role"),
    ("conv-bad-tool-calls", _train_row,
     {"conversation": [{"role": "assistant", "content": None, "tool_calls": [{"function": {}}]},
                       {"role": "tool", "content": "x"}]},
     "conversation", "conversation[0].tool_calls[0].function.name: missing"),
    ("chosen-json", _fc_row, {"chosen_output": "[{'f': 1}]"}, "chosen_output", "not valid JSON"),
    ("chosen-args", _fc_row, {"chosen_output": '[{"f": 3}]'}, "chosen_output", "arguments must be an object"),
    ("rejected-null", _fc_row, {"rejected_output": None}, "rejected_output", "is null"),
    ("rejected-blank", _fc_row, {"rejected_output": "  "}, "rejected_output", "empty string (write []"),
    ("rejected-missing", _fc_row, {"rejected_output": ...}, "rejected_output", "missing"),
    ("correct-int", _train_row, {"tool_calls_correct": "42"}, "tool_calls_correct", "expected a list, got int"),
    ("incorrect-args", _train_row, {"tool_calls_incorrect": '[{"name": "f", "arguments": [1]}]'},
     "tool_calls_incorrect", "arguments: expected an object"),
    ("chosen-text", _train_row, {"chosen_text": 3}, "chosen_text", "expected a string or null, got int"),
    ("category-int", _fc_row, {"test_category": 3}, "test_category", "expected a string or null, got int 3"),
    ("model-list", _fc_row, {"model_name": ["m1"]}, "model_name", "expected a string or null, got list"),
    ("generator-dict", _train_row, {"generator_model": {"m": 1}}, "generator_model", "expected a string or null"),
    ("error-type-float", _fc_row, {"error_type": 1.5}, "error_type", "expected a string or null, got float"),
    ("id-list", _fc_row, {"test_id": ["a"]}, "test_id", "expected a string or null, got list"),
]


def _apply(base, change: dict) -> dict:
    row = copy.deepcopy(base())
    for key, value in change.items():
        if value is ...:
            row.pop(key)
        else:
            row[key] = value
    return row


@pytest.mark.parametrize("case", BAD_ROWS, ids=[c[0] for c in BAD_ROWS])
def test_bad_field_names_file_line_and_field(tmp_path, case):
    _, base, change, field_name, fragment = case
    good = _fc_row()
    path = write_jsonl(tmp_path / "data.jsonl", [good, good, _apply(base, change)], blank_after=1)
    with pytest.raises(RecordError) as info:
        load_pairs(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: line 4: field '{field_name}': "), msg  # a blank line precedes it
    assert fragment in msg, msg
    assert (info.value.file, info.value.row, info.value.field) == (str(path), 4, field_name)


@pytest.mark.parametrize("case", BAD_ROWS[:4] + BAD_ROWS[11:13], ids=[c[0] for c in BAD_ROWS[:4] + BAD_ROWS[11:13]])
def test_bad_field_in_parquet_names_the_zero_based_row(tmp_path, case):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, base, change, field_name, fragment = case
    rows = [_fc_row(), _fc_row(), _apply(base, change)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data.parquet")
    with pytest.raises(RecordError, match=rf"data\.parquet: row 2: field '{field_name}': ") as info:
        load_pairs(tmp_path / "data.parquet")
    assert fragment in str(info.value)


def test_row_level_errors(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [_fc_row(), "{not json", "[1, 2]"])
    with pytest.raises(RecordError, match=rf"^{path}: line 2: not valid JSON \(Expecting property name"):
        load_pairs(path)
    with pytest.raises(RecordError, match=r"line 2: not valid JSON"):
        list(iter_rows(path))
    path.write_text(json.dumps(_fc_row()) + "\n[1, 2]\n")
    with pytest.raises(RecordError, match=r"line 2: expected an object \(a row\), got list"):
        load_pairs(path)
    (tmp_path / "bad.json").write_text('{"rows": []}')
    with pytest.raises(RecordError, match=r"bad\.json: expected a JSON list of rows or \{\"data\""):
        load_pairs(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text('[{"a": ')
    with pytest.raises(RecordError, match=r"broken\.json: not valid JSON"):
        load_pairs(tmp_path / "broken.json")


def test_skip_bad_rows_counts_reports_and_warns(tmp_path, caplog):
    good = [r.to_fc_rewardbench() for r in make_records()]
    bad = [_apply(_fc_row, {"tools": "[{"}), "{oops", _apply(_fc_row, {"conversation": []})]
    rows = [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3]]
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="toolrm_rl.data.records"):
        loaded, report = load_pairs(path, skip_bad_rows=True)
    assert_same(loaded, make_records())
    assert (report.n_rows, report.n_loaded, report.n_skipped) == (7, 4, 3)
    quotes = "Expecting property name enclosed in double quotes"
    assert report.errors == [f"{path}: line 2: field 'tools': not valid JSON ({quotes} at char 2)",
                             f"{path}: line 4: not valid JSON ({quotes} at char 1)",
                             f"{path}: line 6: field 'conversation': is empty"]
    assert "skipped 3 of 7 rows" in caplog.text and "line 2" in caplog.text
    assert str(report).startswith("4 of 7 rows loaded, 3 skipped")


def test_skip_bad_rows_keeps_the_first_messages_only(tmp_path, caplog):
    rows = [_apply(_fc_row, {"chosen_output": "nope"})] * (MAX_ERRORS + 5) + [_fc_row()]
    loaded, report = load_pairs(write_jsonl(tmp_path / "d.jsonl", rows), skip_bad_rows=True)
    assert len(loaded) == 1 and report.n_skipped == MAX_ERRORS + 5 and len(report.errors) == MAX_ERRORS


def test_limit_reads_at_most_that_many_rows(tmp_path):
    path = save_pairs(make_records(), tmp_path / "p.jsonl")
    assert [r.id for r in load_pairs(path, limit=2)[0]] == ["simple_1", "parallel_7"]
    assert load_pairs(path, limit=0) == ([], LoadReport())
    assert load_pairs(path, limit=100)[1].n_loaded == 4
    with pytest.raises(ValueError):
        load_pairs(path, limit=-1)


def test_blank_lines_are_counted_and_reported_not_rows(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [_fc_row(), _fc_row(), _fc_row()], blank_after=1)
    path.write_text(path.read_text() + "\n  \n")
    records, report = load_pairs(path)
    assert (len(records), report.n_rows, report.n_loaded, report.n_blank_lines) == (3, 3, 3, 3)
    assert str(report) == "3 of 3 rows loaded, 3 blank lines ignored"
    assert [index for _, index, _ in iter_rows(path)] == [1, 3, 4]  # line numbers still count blank lines


def test_numeric_ids_are_read_as_text(tmp_path):
    assert load_pairs(write_jsonl(tmp_path / "d.jsonl", [{**_fc_row(), "test_id": 17}]))[0][0].id == "17"


def test_missing_ids_get_file_and_index(tmp_path):
    row = _fc_row()
    del row["test_id"]
    assert load_pairs(write_jsonl(tmp_path / "noid.jsonl", [row]))[0][0].id == "noid.jsonl#1"


# -- sources: local errors and the hub ------------------------------------------------------------

class _Recorder:
    def __init__(self, result=None, error: Exception | None = None):
        self.calls, self.result, self.error = [], result, error

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        return self.result


def test_missing_local_path_is_a_clear_error_without_hub(tmp_path, monkeypatch, datasets_mod):
    hub = _Recorder(error=AssertionError("the hub must not be tried for a local path"))
    monkeypatch.setattr(datasets_mod, "load_dataset", hub)
    for source in (tmp_path / "absent.jsonl", str(tmp_path / "absent.jsonl"), "data/pairs.parquet",
                   "./pairs", "../x/y", "a/b/c"):
        with pytest.raises(FileNotFoundError, match="no such file or directory") as info:
            load_pairs(source)
        assert str(source) in str(info.value)
    assert hub.calls == []


def test_hub_id_loads_through_datasets(monkeypatch, datasets_mod):
    records = make_records()
    ds = datasets_mod.Dataset.from_list(rows_of(records, "fc_rewardbench"))
    hub = _Recorder(result=ds)
    monkeypatch.setattr(datasets_mod, "load_dataset", hub)
    loaded, report = load_pairs("ibm-research/fc-reward-bench", split="data")
    assert_same(loaded, records)
    assert report.n_loaded == 4
    assert hub.calls == [(("ibm-research/fc-reward-bench",), {"split": "data"})]
    # without a split the hub returns a DatasetDict: its default split is used
    hub.result = datasets_mod.DatasetDict({"train": ds})
    assert_same(load_pairs("org/pairs")[0], records)
    assert hub.calls[-1] == (("org/pairs",), {})
    # bad rows coming from the hub name the hub id and split
    hub.result = datasets_mod.Dataset.from_list([_apply(_fc_row, {"chosen_output": "x"})])
    with pytest.raises(RecordError, match=r"^hub:org/pairs \(split 'train'\): row 0: field 'chosen_output'"):
        load_pairs("org/pairs", split="train")


def test_unreachable_hub_is_a_clear_error(monkeypatch, datasets_mod):
    monkeypatch.setattr(datasets_mod, "load_dataset", _Recorder(error=ConnectionError("offline: no route to hub")))
    with pytest.raises(FileNotFoundError) as info:
        load_pairs("ibm-research/ToolRM-train-data", split="train")
    msg = str(info.value)
    assert msg.startswith("ibm-research/ToolRM-train-data: no such local file or directory")
    assert "ConnectionError: offline: no route to hub" in msg


def test_unsupported_files_and_directories(tmp_path):
    (tmp_path / "pairs.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_pairs(tmp_path / "pairs.csv")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="save_to_disk did not write"):
        load_pairs(tmp_path / "folder")
    with pytest.raises(ValueError, match="unsupported suffix"):
        save_pairs(make_records(), tmp_path / "pairs.csv")
    with pytest.raises(ValueError, match="schema"):
        save_pairs(make_records(), tmp_path / "pairs.jsonl", schema="auto")


# -- atomic writes ---------------------------------------------------------------------------------

def _unserializable(where: str) -> list[PairRecord]:
    records = make_records()
    if where == "arguments":  # fails while building rows, before anything is written
        records[2].rejected = [ToolCall("get_time", {"tz": {"UTC", "CET"}})]
    else:  # fails while writing the third JSON line, after two lines were written
        records[2].conversation = [{"role": "user", "content": "hi", "meta": object()}]
    return records


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
@pytest.mark.parametrize("where", ["arguments", "conversation"])
def test_failed_write_leaves_no_partial_file(tmp_path, suffix, where):
    path = tmp_path / f"pairs{suffix}"
    with pytest.raises(RecordError, match=r"save_pairs: record 2 \(id 'irrelevance_3'\): not JSON-serializable"):
        save_pairs(_unserializable(where), path)
    assert list(tmp_path.iterdir()) == []
    save_pairs(make_records()[:1], path)  # an existing file survives a failed overwrite unchanged
    before = path.read_bytes()
    with pytest.raises(RecordError):
        save_pairs(_unserializable(where), path, schema="fc_rewardbench")
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_failed_write_on_interrupt_leaves_old_file(tmp_path):
    path = save_pairs(make_records()[:1], tmp_path / "p.jsonl")
    before = path.read_bytes()

    def records():
        yield from make_records()[:2]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_pairs(records(), path)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_save_creates_parent_folders(tmp_path):
    path = save_pairs(make_records(), tmp_path / "a" / "b" / "p.jsonl", schema="fc_rewardbench")
    assert_same(load_pairs(str(path))[0], make_records())


# -- properties ------------------------------------------------------------------------------------

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
_calls = st.lists(st.builds(ToolCall, st.text(min_size=1, max_size=6),
                            st.dictionaries(st.text(max_size=6), _values, max_size=3)), max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chosen=_calls, rejected=_calls, text=st.none() | st.text(max_size=10), schema=st.sampled_from(SCHEMAS))
def test_row_round_trip_keeps_values_and_json_types(chosen, rejected, text, schema):
    rec = PairRecord("x", ToolCatalog.load(JSON_TOOLS), [{"role": "user", "content": "q"}], chosen, rejected,
                     chosen_text=text, error_type="e", source="s", generator="g")
    back = PairRecord.from_row(rows_of([rec], schema)[0])
    assert canonical([back]) == canonical([rec])


# -- the shared evaluation data --------------------------------------------------------------------

@pytest.mark.shared_data
def test_shared_bfcl_failures_load_completely(tmp_path):
    if not SHARED_FAILURES.exists():
        pytest.skip(f"{SHARED_FAILURES} is absent (the product must not need ../shared)")
    records, report = load_pairs(SHARED_FAILURES)
    assert (report.n_rows, report.n_loaded, report.n_skipped) == (850, 850, 0)
    assert report.schemas == {"fc_rewardbench": 850}
    # FC-RewardBench pairs are call-vs-call: no abstentions on either side
    no_call = [(r.id, "chosen" if not r.chosen else "rejected") for r in records if not r.chosen or not r.rejected]
    assert no_call == [], f"abstentions, unexpected in BFCL single-turn pairs: {no_call[:5]}"
    assert len({r.id for r in records}) == 850
    assert set(collections.Counter(r.source for r in records)) == {
        "simple", "multiple", "parallel", "parallel_multiple", "java", "javascript"}
    assert all(r.conversation[-1]["role"] == "user" and r.error_type and r.generator for r in records)
    # Three pairs differ only in int vs float inside nested float arrays (BFCL type_error:nested): equal
    # under Python ==, different as JSON. The JSON types must survive loading and saving.
    same = [r for r in records if r.chosen == r.rejected]
    assert same and {r.error_type for r in same} == {"type_error:nested"}
    assert all(json.dumps(calls_to_bfcl(r.chosen)) != json.dumps(calls_to_bfcl(r.rejected)) for r in same)
    rows = [json.loads(line) for line in SHARED_FAILURES.read_text(encoding="utf-8").splitlines()]
    for rec, row in zip(records, rows):
        out = rec.to_fc_rewardbench()
        for key in ("tools", "chosen_output", "rejected_output"):
            assert json.dumps(json.loads(out[key])) == json.dumps(json.loads(row[key])), (rec.id, key)
        assert {k: out[k] for k in row if k not in ("tools", "chosen_output", "rejected_output")} == \
            {k: v for k, v in row.items() if k not in ("tools", "chosen_output", "rejected_output")}
    for suffix in (".jsonl", ".parquet"):
        back, _ = load_pairs(save_pairs(records, tmp_path / f"dev{suffix}"))
        assert canonical(back) == canonical(records)


# -- module guarantees -----------------------------------------------------------------------------

def test_import_is_light_and_layered():
    code = ("import sys, toolrm_rl.data.records\n"
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'pyarrow') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    text = (Path(__file__).resolve().parents[1] / "toolrm_rl" / "data" / "records.py").read_text()
    imports = [line.split()[1] for line in text.splitlines() if line.startswith(("from toolrm_rl", "import toolrm_rl"))]
    assert imports and all(m.startswith("toolrm_rl.core") for m in imports), imports


def test_doctests():
    result = doctest.testmod(importlib.import_module("toolrm_rl.data.records"))
    assert result.attempted > 0
    assert result.failed == 0
