"""`toolrm quickstart` end to end in a reduced mode (tiny budgets), and its stage reuse rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from toolrm_rl.quickstart import QuickstartConfig, QuickstartError, run_quickstart, run_stage

pytestmark = pytest.mark.slow

REWARD_KEYS = {"score", "rm_score", "format_ok", "schema_ok", "n_calls", "gt_match", "fallback", "latency_ms"}


def _tiny(out: Path, **kw) -> QuickstartConfig:
    return QuickstartConfig(out=str(out), minutes=2.0, max_steps=3, synth_examples=12, eval_pairs=24,
                            bias_pairs=4, wandb=False, show_progress=False, **kw)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("qs") / "run"
    report = run_quickstart(_tiny(out), echo=lambda *_: None)
    return out, report


def test_every_artefact_is_written(quick_run):
    out, report = quick_run
    for name in ("report.md", "report.json", "reward_group.md", "reward_group.json", "synth/pairs.jsonl",
                 "synth/summary.png", "eval/bfcl_mutations/report.md", "eval/bfcl_mutations/by_category.png"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "report.json").read_text())["train"]["model_dir"] == str(out / "model")
    md = (out / "report.md").read_text()
    for scorer in ("rules", "rm", "hybrid"):
        assert f"| bfcl_mutations | {scorer} |" in md
    assert set(report) >= {"synth", "train", "eval", "biases", "reward", "config"}
    # the bias suite ran on the trained model: every bias measured, in the report and its own folder
    biases = report["biases"]["biases"]
    assert {"fewer_calls", "more_calls", "no_call", "abstain", "near_miss"} <= set(biases)
    assert all(0 < b["n"] <= 4 and 0.0 <= b["accuracy"] <= 1.0 for b in biases.values())
    assert "## 4. Biases" in md and "| fewer_calls |" in md
    assert (out / "eval" / "biases" / "report.json").stat().st_size > 0


def test_model_is_a_plain_hf_checkpoint_that_scores(quick_run):
    from transformers import AutoModelForSequenceClassification

    from toolrm_rl.scoring import get_scorer

    out, report = quick_run
    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert model.config.num_labels == 1
    assert (out / "model" / "toolrm.json").exists()
    ev = report["eval"]["sets"]["bfcl_mutations"]
    assert ev["n"] == 24
    rm = ev["scorers"]["rm"]
    assert 0.0 <= rm["accuracy"] <= 1.0 and rm["schema_valid_subset"]["n"] <= 24
    # the rules scorer ties on every schema-valid pair: accuracy there is exactly 0
    assert ev["scorers"]["rules"]["schema_valid_subset"].get("accuracy", 0.0) == 0.0
    assert get_scorer("rm", path=str(out / "model")).score  # loads through the scorer interface


def test_training_pairs_hold_no_bfcl_single_turn_question(quick_run):
    from toolrm_rl.data.bfcl import load_bfcl

    out, _ = quick_run
    questions = {m["content"] for r in load_bfcl() for m in r.conversation if m.get("role") == "user"}
    with open(out / "synth" / "pairs.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    assert rows
    for row in rows:
        conv = row["conversation"] if isinstance(row["conversation"], list) else json.loads(row["conversation"])
        assert not any(m.get("role") == "user" and m.get("content") in questions for m in conv)


def test_reward_group_has_the_fixed_keys_and_gates_bad_calls(quick_run):
    out, report = quick_run
    rows = report["reward"]["rows"]
    assert len(rows) == 6
    assert all(set(r) >= REWARD_KEYS for r in rows) and len({frozenset(r) for r in rows}) == 1
    by = {r["response"]: r for r in rows}
    assert by["gold"]["gt_match"] == 1.0 and by["gold"]["schema_ok"] == 1.0
    assert by["unparsable"]["format_ok"] == 0.0 and by["unparsable"]["score"] == -1.0
    assert by["unexpected parameter (schema-invalid)"]["schema_ok"] == 0.0
    assert all(r["fallback"] == 0.0 for r in rows)  # the in-process RM answered every sample


def test_rerun_reuses_finished_stages_and_refuses_other_settings(quick_run):
    out, _ = quick_run
    markers = {p.name: p.stat().st_mtime_ns for p in (out / ".quickstart").glob("*.json")}
    assert set(markers) == {"synth.json", "train.json", "eval.json", "biases.json", "reward.json"}
    messages = []
    run_quickstart(_tiny(out), echo=messages.append)
    assert sum("reusing" in m for m in messages) == 5
    assert {p.name: p.stat().st_mtime_ns for p in (out / ".quickstart").glob("*.json")} == markers
    with pytest.raises(QuickstartError, match="stage 'train'.*minutes"):
        run_quickstart(QuickstartConfig(**{**_tiny(out).__dict__, "minutes": 3.0}), echo=lambda *_: None)


def test_run_stage_force_redoes_and_foreign_dirs_are_refused(tmp_path):
    calls = []
    fn = lambda: calls.append(1) or {"x": len(calls)}  # noqa: E731
    assert run_stage(tmp_path, "s", {"a": 1}, fn, force=False, echo=lambda *_: None)["x"] == 1
    assert run_stage(tmp_path, "s", {"a": 1}, fn, force=False, echo=lambda *_: None)["x"] == 1
    assert run_stage(tmp_path, "s", {"a": 2}, fn, force=True, echo=lambda *_: None)["x"] == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(QuickstartError, match="not empty"):
        run_quickstart(_tiny(foreign), echo=lambda *_: None)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_bench_file_added_later_runs_only_its_own_stage(quick_run, tmp_path):
    import shutil

    out, _ = quick_run
    extra = tmp_path / "extra.jsonl"
    shutil.copy(out / "eval" / "bfcl_mutations.jsonl", extra)
    messages = []
    report = run_quickstart(_tiny(out, bench=[str(extra)]), echo=messages.append)
    assert sum("reusing" in m for m in messages) == 5 and "[bench-extra] running" in messages
    sets = report["eval"]["sets"]
    assert set(sets) == {"bfcl_mutations", "extra"}
    # the same pairs and the same model give the same accuracies
    for scorer in ("rules", "rm", "hybrid"):
        assert sets["extra"]["scorers"][scorer]["accuracy"] == sets["bfcl_mutations"]["scorers"][scorer]["accuracy"]
    assert "| extra | hybrid |" in (out / "report.md").read_text()
