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
                "toolrm_rl.core.render", "toolrm_rl.data.mutate"]


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
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["format"] == "hermes" and out["calls"] == [{"f": {"x": "3"}}]
    assert out["schema_ok"] is False and out["violations"][0]["category"] == "type"
    assert out["match"] == {"valid": False, "error_type": "type_error:simple", "message": out["match"]["message"]}


def test_cli_check_bad_tools_is_a_clear_error():
    result = CliRunner().invoke(app, ["core", "check", "--tools", '[{"description": "no name"}]', "--output", "x"])
    assert result.exit_code != 0
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
