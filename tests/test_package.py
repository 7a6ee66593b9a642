"""Package-level guarantees: cheap imports without torch, the CLI, the examples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from toolrm_rl.cli import app

ROOT = Path(__file__).resolve().parents[1]
CORE_MODULES = ["toolrm_rl", "toolrm_rl.core", "toolrm_rl.core.calls", "toolrm_rl.core.parse",
                "toolrm_rl.core.schema", "toolrm_rl.core.match", "toolrm_rl.core.bfcl_types",
                "toolrm_rl.core.render", "toolrm_rl.core.toolrm_json", "toolrm_rl.data.mutate", "toolrm_rl.scoring"]


def test_core_imports_do_not_import_torch():
    code = ("import sys, importlib\n"
            f"for m in {CORE_MODULES!r}: importlib.import_module(m)\n"
            "bad = [m for m in ('torch', 'transformers', 'verl') if m in sys.modules]\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_core_modules_import_only_the_core():
    """The core must not reach up into data, model or CLI layers."""
    for path in (ROOT / "toolrm_rl" / "core").glob("*.py"):
        text = path.read_text()
        for upper in ("toolrm_rl.data", "toolrm_rl.cli", "toolrm_rl.model", "toolrm_rl.verl", "toolrm_rl.eval"):
            assert f"from {upper}" not in text and f"import {upper}" not in text, (path.name, upper)


def test_cli_help_everywhere():
    runner = CliRunner()
    for args in ([], ["--help"], ["core", "--help"], ["core", "check", "--help"], ["core", "demo", "--help"]):
        result = runner.invoke(app, args)
        assert "Usage" in result.output, (args, result.output)
    assert runner.invoke(app, ["--version"]).output.startswith("toolrm-rl ")


def test_cli_check_reports_parse_schema_and_match(tmp_path):
    tools = [{"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}]
    (tmp_path / "tools.json").write_text(json.dumps(tools))
    runner = CliRunner()
    result = runner.invoke(app, ["core", "check", "--tools", f"@{tmp_path / 'tools.json'}",
                                 "--output", '<tool_call>{"name": "f", "arguments": {"x": "3"}}</tool_call>',
                                 "--answer", '[{"f": {"x": [3]}}]'])
    assert result.exit_code == 1, result.output  # an invalid call fails the check
    out = json.loads(result.output)
    assert out["format"] == "hermes" and out["calls"] == [{"f": {"x": "3"}}]
    assert out["schema_ok"] is False and out["violations"][0]["category"] == "type"
    assert out["match"] == {"valid": False, "error_type": "type_error:simple", "message": out["match"]["message"]}


def test_cli_check_exit_code_says_whether_the_output_passed():
    tools = '[{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}]'
    runner = CliRunner()

    def check(output, *extra):
        result = runner.invoke(app, ["core", "check", "--tools", tools, "--output", output, *extra])
        return result.exit_code, json.loads(result.output)

    code, out = check('<tool_call>{"name": "f", "arguments": {"x": 3}}</tool_call>', "--answer", '[{"f": {"x": [3]}}]')
    assert code == 0 and out["schema_ok"] is True and out["match"]["valid"] is True
    code, out = check('<tool_call>{"name": "f", "arguments": {"x": 3}}</tool_call>', "--answer", '[{"f": {"x": [4]}}]')
    assert code == 1 and out["schema_ok"] is True and out["match"]["valid"] is False  # schema-valid, wrong value
    code, out = check('<tool_call>{"name": "g", "arguments": {}}</tool_call>')
    assert code == 1 and out["schema_ok"] is False  # unknown function, no ground truth given
    code, out = check('<tool_call>{"name": "f", "arguments": {"x": 3}')
    assert code == 1 and out["parse_error"] is not None and out["schema_ok"] is False


def test_cli_check_bad_tools_is_a_clear_error():
    result = CliRunner().invoke(app, ["core", "check", "--tools", '[{"description": "no name"}]', "--output", "x"])
    assert result.exit_code == 2  # a usage error, not a failed check
    assert "tools[0].name" in result.output


def test_cli_demo_on_real_bfcl_data(bfcl_records):
    result = CliRunner().invoke(app, ["core", "demo", "--questions", "40", "--no-show-render"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.startswith("│")}
    assert "ground_truth" in rows and "wrong_value" in rows
    assert "valid (100%)" in rows["ground_truth"]


def test_example_script_runs():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "check_tool_calls.py")],
                         capture_output=True, text=True, check=True).stdout
    assert "correct" in out and "bfcl=valid" in out.splitlines()[0]
    assert "value_error:string" in out


def test_cli_train_print_config_and_bad_override():
    runner = CliRunner()
    recipe = str(ROOT / "recipes" / "rm" / "minilm_cpu.yaml")
    result = runner.invoke(app, ["train", recipe, "--print-config", "train.max_minutes=2"])
    assert result.exit_code == 0, result.output
    assert "max_minutes: 2" in result.output and "name_or_path: embedded:minilm" in result.output
    result = runner.invoke(app, ["train", recipe, "--print-config", "train.nope=1"])
    assert result.exit_code != 0 and "nope" in result.output
    result = runner.invoke(app, ["train", recipe, "--print-config", "not-an-override"])
    assert result.exit_code != 0 and "key=value" in result.output


def test_cli_eval_fc_rewardbench_rules_json(tmp_path):
    rows = [{"tools": json.dumps([{"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": "integer"}},
                                                                "required": ["x"]}}]),
             "conversation": [{"role": "user", "content": "x is 1"}],
             "chosen_output": json.dumps([{"f": {"x": 1}}]), "rejected_output": json.dumps([{"f": {"x": bad}}]),
             "error_type": et, "model_name": "m", "test_category": "simple", "test_id": f"t{i}"}
            for i, (bad, et) in enumerate([("1", "type_error:simple"), (2, "value_error:others")])]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    result = CliRunner().invoke(app, ["eval", "fc-rewardbench", "--data", str(data), "--scorer", "rules", "--json",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    last = json.loads(result.output.strip().splitlines()[-1])
    assert last["n"] == 2 and last["ties"] == 1 and last["accuracy"] == 0.5
    assert last["by_error_type"]["type_error:simple"]["accuracy"] == 1.0
    assert (tmp_path / "out" / "report.json").exists() and "| overall (n=2) | 0.500 |" in (tmp_path / "out" / "report.md").read_text()
    result = CliRunner().invoke(app, ["eval", "fc-rewardbench", "--data", str(data), "--scorer", "rm"])
    assert result.exit_code != 0 and "--model" in result.output
