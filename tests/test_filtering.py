"""Reward-guided filtering: the expected rows are kept, in the input's format, with scores and a histogram."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from toolrm_rl.cli import app
from toolrm_rl.core.calls import ToolCall
from toolrm_rl.eval.filtering import filter_dataset, row_example, select_rows
from toolrm_rl.scoring import RulesScorer

TOOLS = [{"type": "function", "function": {"name": "f", "description": "f", "parameters": {
    "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}]


def chat_row(i, calls=None, content=None):
    assistant = {"role": "assistant", "content": content}
    if calls is not None:
        assistant["tool_calls"] = [{"type": "function", "function": {"name": n, "arguments": json.dumps(a)}} for n, a in calls]
    return {"id": f"r{i}", "tools": TOOLS,
            "messages": [{"role": "system", "content": "be useful"}, {"role": "user", "content": f"question {i}"}, assistant]}


# Rules scores: 0, -1 (type), -3 (unknown function), -2 (missing required), 0, 0 (an answer without a call).
CHAT_ROWS = [chat_row(0, [("f", {"x": 1})]), chat_row(1, [("f", {"x": "1"})]), chat_row(2, [("g", {})]),
             chat_row(3, [("f", {})]), chat_row(4, [("f", {"x": 3})]), chat_row(5, content="I cannot do that.")]

XLAM_TOOLS = json.dumps([{"name": "f", "description": "f", "parameters": {
    "x": {"type": "int", "description": "x"}, "u": {"type": "str, optional", "description": "unit", "default": "a"}}}])
XLAM_ROWS = [{"id": 0, "query": "q0", "tools": XLAM_TOOLS, "answers": json.dumps([{"name": "f", "arguments": {"x": 1}}])},
             {"id": 1, "query": "q1", "tools": XLAM_TOOLS, "answers": json.dumps([{"name": "f", "arguments": {"u": "b"}}])},
             {"id": 2, "query": "q2", "tools": XLAM_TOOLS,
              "answers": json.dumps([{"name": "f", "arguments": {"x": 1, "u": "b"}}])},
             {"id": 3, "query": "q3", "tools": XLAM_TOOLS, "answers": json.dumps([{"name": "f", "arguments": {"x": 1, "z": 2}}])}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_row_examples_take_the_last_assistant_turn():
    ex = row_example(CHAT_ROWS[1])
    assert ex.calls == [ToolCall("f", {"x": "1"})] and ex.conversation[-1]["role"] == "user" and len(ex.conversation) == 2
    assert row_example(CHAT_ROWS[5]).calls == [] and row_example(CHAT_ROWS[5]).text == "I cannot do that."
    xlam = row_example(XLAM_ROWS[0])
    assert xlam.conversation == [{"role": "user", "content": "q0"}] and xlam.calls == [ToolCall("f", {"x": 1})]
    assert RulesScorer().score([row_example(r) for r in CHAT_ROWS]) == [0.0, -1.0, -3.0, -2.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"row 7: field 'messages': no assistant message"):
        row_example({"messages": [{"role": "user", "content": "hi"}]}, "row 7")
    with pytest.raises(ValueError, match="neither an OpenAI chat row"):
        row_example({"text": "x"})


def test_select_rows_top_fraction_and_threshold():
    scores = [0.0, -1.0, -3.0, -2.0, 0.0, 0.0]
    assert select_rows(scores, keep_top=0.5) == ([True, False, False, False, True, True], 0.0)
    assert select_rows(scores, keep_top=1 / 3) == ([True, False, False, False, True, False], 0.0)  # ties: earlier rows
    assert select_rows(scores, threshold=-1.5) == ([True, True, False, False, True, True], -1.5)
    with pytest.raises(ValueError):
        select_rows(scores, keep_top=0.5, threshold=0.0)
    with pytest.raises(ValueError):
        select_rows(scores, keep_top=1.5)


def test_filter_openai_jsonl_keeps_the_expected_rows(tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", CHAT_ROWS)
    out = tmp_path / "kept.jsonl"
    result = filter_dataset(data, out, RulesScorer(), keep_top=0.5)
    assert (result.n, result.kept, result.cut) == (6, 3, 0.0)
    assert read_jsonl(out) == [CHAT_ROWS[0], CHAT_ROWS[4], CHAT_ROWS[5]]  # rows unchanged, input order
    scores = read_jsonl(tmp_path / "kept_filter" / "scores.jsonl")
    assert [s["score"] for s in scores] == [0.0, -1.0, -3.0, -2.0, 0.0, 0.0]
    assert [s["kept"] for s in scores] == [True, False, False, False, True, True] and scores[1]["id"] == "r1"
    assert (tmp_path / "kept_filter" / "score_hist.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "kept_filter" / "scores.partial.jsonl").exists()


def test_filter_xlam_json_list_keeps_the_format(tmp_path):
    data = tmp_path / "xlam.json"
    data.write_text(json.dumps(XLAM_ROWS))
    out = tmp_path / "xlam.kept.json"
    result = filter_dataset(data, out, RulesScorer(), threshold=0.0, report_dir=tmp_path / "rep")
    assert result.kept == 2
    assert json.loads(out.read_text()) == [XLAM_ROWS[0], XLAM_ROWS[2]]  # missing required x / unknown z dropped


class Flaky:
    """Scores rows by their question number; fails on its second call (a run stopped mid-way)."""

    name = "flaky"

    def __init__(self, fail_on=None):
        self.calls = 0
        self.scored = 0
        self.fail_on = fail_on

    def score(self, examples):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("stopped")
        self.scored += len(examples)
        return [float(e.conversation[-1]["content"].split()[-1]) for e in examples]


def test_filter_resumes_from_saved_scores(tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", CHAT_ROWS)
    out = tmp_path / "kept.jsonl"
    with pytest.raises(RuntimeError, match="stopped"):
        filter_dataset(data, out, Flaky(fail_on=2), keep_top=0.5, chunk_size=2)
    assert not out.exists()
    second = Flaky()
    result = filter_dataset(data, out, second, keep_top=0.5, chunk_size=2)
    assert second.scored == 4  # the first chunk's 2 scores were reused
    assert result.scores == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [r["id"] for r in read_jsonl(out)] == ["r3", "r4", "r5"]


def test_cli_filter_threshold(tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", CHAT_ROWS)
    out = tmp_path / "valid.jsonl"
    result = CliRunner().invoke(app, ["filter", "--data", str(data), "--scorer", "rules", "--threshold", "0",
                                      "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["kept"] == 3
    assert [r["id"] for r in read_jsonl(out)] == ["r0", "r4", "r5"]
    both = CliRunner().invoke(app, ["filter", "--data", str(data), "--keep-top", "0.5", "--threshold", "0",
                                    "--out", str(out)])
    assert both.exit_code != 0 and "exactly one" in both.output
