"""bench/fuzz_reward.py, briefly: a few hundred hostile inputs pass, and the harness catches what it must."""

from __future__ import annotations

import json
import time

import pytest


@pytest.fixture(scope="module")
def fuzz(load_bench):
    return load_bench("fuzz_reward")


def test_a_brief_seeded_run_has_no_violation(fuzz, tmp_path, capsys):
    out = tmp_path / "fuzz.json"
    code = fuzz.main(["--n", "300", "--rm-n", "20", "--seed", "7", "--json", str(out)])
    summary = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert summary["n_inputs"] == 320 and summary["escaped_exceptions"] == {} and summary["n_violations"] == 0
    assert set(summary["inputs_per_target"]) == set(fuzz.TARGET_WEIGHTS) | {"reward_rm"}
    assert "slowest reward_rules:" in printed and "escaped exceptions: 0" in printed


def test_the_same_seed_gives_the_same_inputs(fuzz, tmp_path):
    kinds = []
    for _ in range(2):
        path = tmp_path / "run.json"
        assert fuzz.main(["--n", "60", "--rm-n", "0", "--seed", "3", "--targets", "reward_rules,parse",
                          "--json", str(path)]) == 0
        kinds.append(json.loads(path.read_text())["inputs_per_kind"])
    assert kinds[0] == kinds[1] and sum(kinds[0].values()) == 60


def test_escaped_exceptions_bad_results_and_slow_calls_are_violations(fuzz, tmp_path, monkeypatch):
    async def broken(data_source, solution_str, ground_truth, extra_info, **kw):
        if isinstance(solution_str, str) and len(solution_str) % 2:
            raise RuntimeError("boom")
        return {"score": 0.0}  # not the reward's keys

    monkeypatch.setattr(fuzz, "compute_score", broken)
    monkeypatch.setattr(fuzz, "strip_thinking", lambda text: time.sleep(0.05) or text)
    path = tmp_path / "bad.json"
    code = fuzz.main(["--n", "40", "--rm-n", "0", "--seed", "1", "--targets", "reward_rules,strip_thinking",
                      "--base-s", "0.01", "--per-char-s", "0", "--json", str(path)])
    summary = json.loads(path.read_text())
    assert code == 1
    assert set(summary["violations"]) == {"escaped exception", "bad result", "time bound"}
    assert any(k.startswith("reward_rules: RuntimeError") for k in summary["escaped_exceptions"])
