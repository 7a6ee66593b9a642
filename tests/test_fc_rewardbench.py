"""FC-RewardBench evaluation: metrics against hand-computed values, reports, the CLI and its --json contract."""

from __future__ import annotations

import doctest
import json
import os
import random
import sys
import types

import pytest
from typer.testing import CliRunner

from toolrm_rl import scoring
from toolrm_rl.cli import app
from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.data.records import PairRecord
from toolrm_rl.eval import fc_rewardbench as fcr
from toolrm_rl.eval import plots
from toolrm_rl.eval.fc_rewardbench import (bootstrap_ci, evaluate_pairs, load_config, result_json, schema_valid_mask,
                                           write_reports)

TOOLS = [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}, "s": {"type": "string"}},
                                       "required": ["x"]}},
         {"name": "g", "parameters": {"type": "object", "properties": {}}}]
CONV = [{"role": "user", "content": "call f"}]


class ByX:
    """Scores a candidate by its first call's integer x (strings and other calls score 0)."""

    name = "byx"

    def __init__(self):
        self.batches = 0

    def score(self, examples):
        self.batches += 1
        return [float(e.calls[0].arguments["x"]) if e.calls and isinstance(e.calls[0].arguments.get("x"), int) else 0.0
                for e in examples]


def _pair(i, chosen, rejected, error_type, category, model):
    return PairRecord(id=f"p{i}", tools=ToolCatalog.load(TOOLS), conversation=CONV, chosen=chosen, rejected=rejected,
                      error_type=error_type, source=category, generator=model)


# x values make ByX's outcome obvious; comments: ByX outcome, schema validity of (chosen, rejected).
PAIRS = [
    _pair(0, [ToolCall("f", {"x": 5})], [ToolCall("f", {"x": 1})], "value_error:string", "simple", "m1"),   # win, valid
    _pair(1, [ToolCall("f", {"x": 1})], [ToolCall("f", {"x": 5})], "value_error:others", "simple", "m1"),   # loss, valid
    _pair(2, [ToolCall("f", {"x": 3})], [ToolCall("f", {"x": 3, "s": "a"})],
          "parallel_function_checker_no_order:cannot_find_match", "parallel", "m2"),                        # tie, valid
    _pair(3, [ToolCall("f", {"x": 2})], [ToolCall("f", {"x": "2"})], "type_error:simple", "simple", "m2"),  # win, invalid
    _pair(4, [ToolCall("f", {"x": 4})], [ToolCall("g", {})], "simple_function_checker:wrong_func_name",
          "multiple", "m1"),                                                                                # win, valid
    _pair(5, [ToolCall("f", {"x": 0})], [ToolCall("f", {"x": 2}), ToolCall("f", {"x": 3})],
          "parallel_function_checker_no_order:wrong_count", "parallel", "m2"),                              # loss, valid
    _pair(6, [ToolCall("f", {"x": 7})], [ToolCall("h", {})], "mutation:made_up", "simple", "m1"),           # win, invalid
]


def test_accuracy_ties_and_every_breakdown_by_hand():
    report = evaluate_pairs(ByX(), PAIRS, bootstrap_samples=100)
    assert (report.n, report.ties) == (7, 1)
    assert report.accuracy == 4 / 7 and report.tie_rate == 1 / 7
    assert report.accuracy_ties_half == pytest.approx(4.5 / 7)
    assert report.by_error_type["value_error:string"] == {"accuracy": 1.0, "n": 1, "ties": 0}
    assert report.by_error_type["parallel_function_checker_no_order:cannot_find_match"] == {"accuracy": 0.0, "n": 1, "ties": 1}
    # card categories: cannot_find_match counts as a value error; unknown labels go to "other"
    assert report.by_category == {
        "wrong_value": {"accuracy": 1 / 3, "n": 3, "ties": 1},
        "wrong_type": {"accuracy": 1.0, "n": 1, "ties": 0},
        "wrong_function": {"accuracy": 1.0, "n": 1, "ties": 0},
        "wrong_count": {"accuracy": 0.0, "n": 1, "ties": 0},
        "other": {"accuracy": 1.0, "n": 1, "ties": 0},
    }
    assert report.by_test_category == {"simple": {"accuracy": 0.75, "n": 4, "ties": 0},
                                       "parallel": {"accuracy": 0.0, "n": 2, "ties": 1},
                                       "multiple": {"accuracy": 1.0, "n": 1, "ties": 0}}
    assert report.by_model == {"m1": {"accuracy": 0.75, "n": 4, "ties": 0}, "m2": {"accuracy": 1 / 3, "n": 3, "ties": 1}}
    assert schema_valid_mask(PAIRS) == [True, True, True, False, True, True, False]
    assert report.schema_valid_subset == {"accuracy": 0.4, "n": 5, "ties": 1}
    # schema-valid value errors only (pairs 0, 1, 2), by where the differing values come from ("call f": nowhere)
    assert report.by_value_grounding == {"? vs ?": {"accuracy": 0.5, "n": 2, "ties": 0},
                                         "added": {"accuracy": 0.0, "n": 1, "ties": 1}}


def test_value_grounding_breakdown_exposes_a_scorer_that_only_prefers_verbatim_values(tmp_path):
    from toolrm_rl.core.render import value_grounding

    tools = ToolCatalog.load([{"name": "loan", "parameters": {"type": "object", "properties": {
        "rate": {"type": "number"}, "city": {"type": "string"}}}}])
    conv = [{"role": "user", "content": "A loan at 5% in Paris or Rome"}]

    class Verbatim:
        name = "verbatim"

        def score(self, examples):  # +1 per argument the user wrote verbatim
            return [float(sum(value_grounding(v, e.conversation[0]["content"]) == "=" for c in e.calls
                              for v in c.arguments.values())) for e in examples]

    def pair(i, chosen, rejected):
        return PairRecord(id=f"v{i}", tools=tools, conversation=conv, chosen=[ToolCall("loan", chosen)],
                          rejected=[ToolCall("loan", rejected)], error_type="value_error:others")

    pairs = [pair(0, {"rate": 0.05, "city": "Paris"}, {"rate": 5, "city": "Paris"}),      # converted vs copied
             pair(1, {"rate": 0.05, "city": "Paris"}, {"rate": 5.0, "city": "Paris"}),
             pair(2, {"rate": 0.05, "city": "Paris"}, {"rate": 0.05, "city": "Lyon"}),    # the user's city vs invented
             pair(3, {"rate": 0.05, "city": "Paris"}, {"rate": 0.05, "city": "Rome"})]    # two cities the user named
    report = evaluate_pairs(Verbatim(), pairs, bootstrap_samples=10)
    assert report.by_value_grounding == {"^ vs =": {"accuracy": 0.0, "n": 2, "ties": 0},
                                         "= vs ?": {"accuracy": 1.0, "n": 1, "ties": 0},
                                         "= vs =": {"accuracy": 0.0, "n": 1, "ties": 1}}
    paths = write_reports([report], tmp_path)
    md = paths["md"].read_text()
    # the report pools kinds under 3 pairs (n-weighted accuracy; ties are losses); report.json keeps each
    assert "## Schema-valid value errors by grounding" in md and "| 3 other kinds (n=4) | 0.250 |" in md
    assert "| ^ vs = (n=2) | 0.000 |" in fcr.markdown_table([report], "by_value_grounding")
    table = fcr.markdown_table([report], "by_value_grounding", min_n=2)
    assert "| ^ vs = (n=2) | 0.000 |" in table and "| 2 other kinds (n=2) | 0.500 |" in table and "= vs ?" not in table
    assert json.loads(paths["json"].read_text())["by_value_grounding"]["= vs ?"]["n"] == 1


def test_bootstrap_interval_fixed_seed():
    wins = [True] * 7 + [False] * 3
    lo, hi = bootstrap_ci(wins, samples=200, seed=3)
    # the same percentile bootstrap written out: 200 resamples of 10 pairs with random.Random(3)
    rng = random.Random(3)
    stats = sorted(sum(wins[rng.randrange(10)] for _ in range(10)) / 10 for _ in range(200))
    assert (lo, hi) == (stats[5], stats[195])
    assert lo < 0.7 < hi and bootstrap_ci(wins, samples=200, seed=3) == (lo, hi)
    assert bootstrap_ci([False] * 5) == (0.0, 0.0)
    report = evaluate_pairs(ByX(), PAIRS, bootstrap_samples=200, seed=3)
    assert report.ci95 == bootstrap_ci([True, False, False, True, True, False, True], samples=200, seed=3)


def test_pair_aware_scorer_is_asked_about_pairs():
    class PairJudge:
        name = "pairjudge"

        def score(self, examples):
            raise AssertionError("flat score must not be used when score_pairs exists")

        def score_pairs(self, pairs):
            return [(1.0, 0.0) if a.calls and a.calls[0].name == "f" and b.calls[0].name != "f" else (0.5, 0.5)
                    for a, b in pairs]

    report = evaluate_pairs(PairJudge(), PAIRS, bootstrap_samples=10)
    assert report.accuracy == 2 / 7 and report.ties == 5  # pairs 4 and 6 call another function


def test_result_json_first_scorer_on_top_and_all_by_name():
    a = evaluate_pairs(ByX(), PAIRS, bootstrap_samples=10)
    b = evaluate_pairs(scoring.RulesScorer(), PAIRS, bootstrap_samples=10)
    out = result_json([a, b, a], data="x")
    assert out["accuracy"] == a.accuracy and out["scorer"] == "byx" and out["data"] == "x"
    assert list(out["scorers"]) == ["byx", "rules", "byx#2"]
    assert out["scorers"]["rules"]["ties"] == b.ties == 5  # rules separate only the two schema-invalid pairs
    json.dumps(out)  # JSON-able


def test_write_reports_md_json_png(tmp_path):
    reports = [evaluate_pairs(ByX(), PAIRS, bootstrap_samples=10),
               evaluate_pairs(scoring.RulesScorer(), PAIRS, bootstrap_samples=10)]
    paths = write_reports(reports, tmp_path / "out", data="fixture")
    md = paths["md"].read_text()
    assert "## By error category" in md and "| wrong_value (n=3) | 0.333 | 0.000 |" in md
    assert "| byx | 0.571 |" in md and "| other (n=1) | 1.000 | 1.000 |" in md
    assert "| m2 (n=3) |" in md and "| parallel (n=2) | 0.000 | 0.000 |" in md
    assert json.loads(paths["json"].read_text())["scorers"]["rules"]["n"] == 7
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes leave no temporaries


def test_wandb_table_rows(monkeypatch, tmp_path):
    logged = {}

    class Table:
        def __init__(self, columns):
            self.columns, self.rows = columns, []

        def add_data(self, *row):
            self.rows.append(row)

    class Run:
        def log(self, data):
            logged.update(data)

        def finish(self):
            logged["finished"] = True

    def init(**kw):
        logged["init"] = kw
        return Run()

    fake = types.SimpleNamespace(Table=Table, init=init)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "set-then-deleted")  # so teardown removes what log_wandb sets
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: offline mode
    report = evaluate_pairs(ByX(), PAIRS, bootstrap_samples=10)
    fcr.log_wandb([report], load_config(None, ["out=" + str(tmp_path)]))
    table = logged["fc_rewardbench"]
    assert ("byx", "by_category", "wrong_value", 1 / 3, 3, 1) in table.rows
    assert ("byx", "overall", "all", 4 / 7, 7, 1) in table.rows
    assert logged["byx/accuracy"] == 4 / 7 and logged["finished"] and logged["init"]["dir"] == str(tmp_path)
    assert os.environ["WANDB_MODE"] == "offline"


def _write_rows(path, pairs=PAIRS):
    path.write_text("\n".join(json.dumps(p.to_fc_rewardbench()) for p in pairs) + "\n")
    return path


def test_cli_json_last_line_contract_for_several_scorers(tmp_path, monkeypatch):
    monkeypatch.setitem(scoring.SCORERS, "byx", lambda **kw: ByX())
    data = _write_rows(tmp_path / "pairs.jsonl")
    result = CliRunner().invoke(app, ["eval", "fc-rewardbench", "--data", str(data), "--scorer", "byx", "--scorer",
                                      "rules", "--out", str(tmp_path / "out"), "--json", "bootstrap_samples=50"])
    assert result.exit_code == 0, result.output
    last = json.loads(result.output.strip().splitlines()[-1])
    for key in ("accuracy", "n", "ties", "ci95", "by_error_type", "by_category", "schema_valid_subset", "scorers"):
        assert key in last, key
    assert (last["scorer"], last["accuracy"], last["n"], last["ties"]) == ("byx", 4 / 7, 7, 1)
    assert last["schema_valid_subset"]["accuracy"] == 0.4 and last["schema_valid_subset"]["n"] == 5
    assert last["scorers"]["rules"]["accuracy"] == 2 / 7 and len(last["ci95"]) == 2
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"report.md", "report.json", "by_category.png"}


def test_cli_counts_blank_lines_and_rejects_bad_fields_and_missing_files(tmp_path):
    runner = CliRunner()
    rows = [json.dumps(p.to_fc_rewardbench()) for p in PAIRS]
    data = tmp_path / "blank.jsonl"
    data.write_text(rows[0] + "\n\n" + "\n".join(rows[1:]) + "\n   \n")
    result = runner.invoke(app, ["eval", "fc-rewardbench", "--data", str(data), "--scorer", "rules", "--json",
                                 "bootstrap_samples=10"])
    assert result.exit_code == 0, result.output
    assert "7 pairs from" in result.output and "2 blank lines ignored" in result.output
    assert json.loads(result.output.strip().splitlines()[-1])["n_blank_lines"] == 2
    for column, value in (("test_category", 3), ("model_name", ["m1"])):
        bad = tmp_path / f"bad_{column}.jsonl"
        bad.write_text("\n".join(rows[:2] + [json.dumps({**json.loads(rows[2]), column: value})]) + "\n")
        result = runner.invoke(app, ["eval", "fc-rewardbench", "--data", str(bad), "--scorer", "rules"],
                               env={"COLUMNS": "1000"})
        assert result.exit_code == 2, result.output
        assert f"{bad}: line 3: field '{column}': expected a string" in result.output
    missing = tmp_path / "missing.jsonl"
    result = runner.invoke(app, ["eval", "fc-rewardbench", "--data", str(missing), "--scorer", "rules"],
                           env={"COLUMNS": "1000"})
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output  # no traceback
    assert f"{missing}: no such file" in result.output


def test_cli_recipe_with_overrides_and_print_config(tmp_path):
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "eval" / "fc_rewardbench.yaml"
    data = _write_rows(tmp_path / "pairs.jsonl")
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "fc-rewardbench", "--config", str(recipe), "--print-config", "limit=3",
                                 "scorer_options.judge.concurrency=2"])
    assert result.exit_code == 0, result.output
    assert "limit: 3" in result.output and "concurrency: 2" in result.output and "- hybrid" in result.output
    result = runner.invoke(app, ["eval", "fc-rewardbench", "--config", str(recipe), "--data", str(data),
                                 "--scorer", "rules", "--out", str(tmp_path / "o"), "--json", "limit=3"])
    assert result.exit_code == 0, result.output
    last = json.loads(result.output.strip().splitlines()[-1])
    assert last["n"] == 3 and list(last["scorers"]) == ["rules"]
    result = runner.invoke(app, ["eval", "fc-rewardbench", "--data", str(data), "nope=1"])
    assert result.exit_code != 0 and "nope" in result.output
    result = runner.invoke(app, ["eval", "fc-rewardbench", "--data", str(data), "--scorer", "hybrid"])
    assert result.exit_code != 0 and "--model" in result.output


@pytest.mark.shared_data
def test_rules_on_the_shared_dev_failures(shared_failures_path, tmp_path):
    result = CliRunner().invoke(app, ["eval", "fc-rewardbench", "--data", str(shared_failures_path), "--scorer", "rules",
                                      "--json", "bootstrap_samples=100"])
    assert result.exit_code == 0, result.output
    last = json.loads(result.output.strip().splitlines()[-1])
    assert last["n"] == 850 and sum(v["n"] for v in last["by_category"].values()) == 850
    # rules score every schema-valid call 0: on pairs where both calls are valid they can only tie
    sub = last["schema_valid_subset"]
    assert sub["ties"] == sub["n"] > 0 and sub["accuracy"] == 0.0
    assert 0.4 < last["accuracy"] < last["accuracy_ties_half"] <= 1.0


def test_doctests_of_the_report_modules():
    for module in (fcr, plots):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_plot_helpers_write_pngs_and_reject_ragged_series(tmp_path):
    png = b"\x89PNG\r\n\x1a\n"
    assert plots.line_chart([1, 2, 4, 8], {"reward": [0.5, 0.6, 0.7, 0.75], "oracle": [0.5, 0.7, 0.8, 0.9]},
                            tmp_path / "curve.png", logx=True, reference=0.5).read_bytes()[:8] == png
    assert plots.histogram([0.1, 0.2, float("nan"), 0.9], tmp_path / "h.png", threshold=0.5).read_bytes()[:8] == png
    with pytest.raises(ValueError, match="series 'a' has 1 values for 2 groups"):
        plots.bar_chart(["x", "y"], {"a": [0.5]}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="series 'a' has 3 values for 2 x values"):
        plots.line_chart([1, 2], {"a": [1, 2, 3]}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    assert plots.md_table(["k", "acc", "n"], [["a", float("nan"), 3]]) == "| k | acc | n |\n|---|---:|---:|\n| a | nan | 3 |\n"
