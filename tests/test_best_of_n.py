"""Best-of-N: with known candidates every strategy makes exactly the expected picks and accuracies."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from toolrm_rl.cli import app
from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.example import ToolExample
from toolrm_rl.eval.best_of_n import (STRATEGIES, BestOfNConfig, best_of_n, load_candidates, n_values,
                                      questions_from_file, run_best_of_n, sample_candidates)

TOOLS = [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}]
CONV = [{"role": "user", "content": "call f"}]

# q1: greedy wrong; candidates: wrong & schema-valid, wrong & schema-invalid, right, right.
# q2: no greedy (candidate 0 is greedy); candidates: unparsable, right, wrong, wrong (the same wrong call twice).
CANDIDATES = {
    "q1": {"candidates": ["[f(x=2)]", "[f(x='1')]", "[f(x=1)]", '<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>'],
           "greedy": "[f(x=2)]"},
    "q2": {"candidates": ["f(x=", "[f(x=5)]", "[f(x=7)]", "[f(x=7.0)]"], "greedy": None},
}
# Hand-computed: N = 1, 2, 4.
EXPECTED_ACCURACY = {
    "greedy": [0.0, 0.0, 0.0],
    "reward": [0.0, 0.5, 0.0],       # the stub prefers larger x: q2 picks x=5 at N=2, x=7 at N=4
    "oracle": [0.0, 0.5, 1.0],
    "majority": [0.0, 0.5, 0.5],     # q1 at N=4: x=1 twice; q2 at N=4: x=7 twice (7 == 7.0)
    "first_valid": [0.0, 0.5, 0.5],  # q1 always x=2 (schema-valid, wrong); q2 x=5 from N=2
    "random": [0.0, 0.25, 0.375],    # expectation: (0/1 + 0/1)/2, (0/2 + 1/2)/2, (2/4 + 1/4)/2
}
EXPECTED_SELECTIONS = {
    "q1": {"greedy": {"1": -1, "2": -1, "4": -1}, "reward": {"1": 0, "2": 0, "4": 0},
           "majority": {"1": 0, "2": 0, "4": 2}, "first_valid": {"1": 0, "2": 0, "4": 0}},
    "q2": {"greedy": {"1": 0, "2": 0, "4": 0}, "reward": {"1": 0, "2": 1, "4": 2},
           "majority": {"1": 0, "2": 1, "4": 2}, "first_valid": {"1": 0, "2": 1, "4": 1}},
}


class LargestX:
    """A stub scorer: the score is the first call's x when it is a number, else -10."""

    name = "largest-x"

    def __init__(self):
        self.seen = 0

    def score(self, examples):
        self.seen += len(examples)
        return [float(e.calls[0].arguments["x"]) if e.calls and isinstance(e.calls[0].arguments.get("x"), (int, float))
                and not isinstance(e.calls[0].arguments.get("x"), bool) else -10.0 for e in examples]


class FakePolicy:
    """A generator (the data.generate contract) whose outputs are fixed: sampled = CANDIDATES, greedy = greedy."""

    name = "fake"

    def __init__(self):
        self.calls = []

    def generate(self, requests, *, n=1, temperature=0.7, max_tokens=512, seed=0):
        self.calls.append((len(requests), n, temperature))
        if temperature == 0:
            return [[CANDIDATES[r.id]["greedy"] or CANDIDATES[r.id]["candidates"][0]] for r in requests]
        return [CANDIDATES[r.id]["candidates"][:n] for r in requests]


def questions():
    return [ToolExample(q, "test", CONV, ToolCatalog.load(TOOLS), [ToolCall("f", {"x": x})], [{"f": {"x": [x]}}], "simple")
            for q, x in (("q1", 1), ("q2", 5))]


def test_n_values():
    assert n_values(1) == [1] and n_values(4) == [1, 2, 4] and n_values(6) == [1, 2, 4, 6] and n_values(32)[-1] == 32
    with pytest.raises(ValueError):
        n_values(0)


def test_every_strategy_makes_the_expected_picks():
    scorer = LargestX()
    result = best_of_n(questions(), CANDIDATES, scorer)
    assert result.ns == [1, 2, 4]
    assert result.accuracy == EXPECTED_ACCURACY
    assert result.selections == EXPECTED_SELECTIONS
    assert scorer.seen == 7  # every parsed candidate scored once (q2's unparsable one is not)
    assert result.candidate_stats == {"candidates": 8, "parsed": 7 / 8, "correct": 3 / 8}


def test_max_n_subsamples_the_first_candidates_and_missing_candidates_fail():
    result = best_of_n(questions(), CANDIDATES, LargestX(), max_n=2)
    assert result.ns == [1, 2]
    assert {s: v for s, v in result.accuracy.items()} == {s: v[:2] for s, v in EXPECTED_ACCURACY.items()}
    with pytest.raises(ValueError, match="fewer than N=5"):
        best_of_n(questions(), CANDIDATES, LargestX(), max_n=5)
    with pytest.raises(ValueError, match="no candidates"):
        best_of_n(questions(), {"q1": CANDIDATES["q1"]}, LargestX())


def test_fake_policy_sampling_gives_the_same_result_and_resumes(tmp_path):
    policy = FakePolicy()
    save = tmp_path / "candidates.jsonl"
    cands = sample_candidates(policy, questions(), n=4, temperature=0.8, seed=0, batch_size=1, save_to=save)
    assert policy.calls == [(1, 4, 0.8), (1, 1, 0.0)] * 2  # one sampled and one greedy call per batch
    result = best_of_n(questions(), cands, LargestX())
    # q2's greedy is now a separate sample (its candidate 0 text), so greedy picks -1 there too.
    assert result.accuracy == EXPECTED_ACCURACY
    assert load_candidates(save).keys() == {"q1", "q2"}
    again = FakePolicy()
    sample_candidates(again, questions(), n=4, save_to=save)
    assert again.calls == []  # everything was saved: nothing is sampled again


def test_recipe_run_with_a_candidates_file_and_examples_file(tmp_path):
    data = tmp_path / "examples.jsonl"
    data.write_text("".join(json.dumps({"id": q, "tools": TOOLS, "conversation": CONV, "category": "simple",
                                        "possible_answer": [{"f": {"x": [x]}}]}) + "\n" for q, x in (("q1", 1), ("q2", 5))))
    cands = tmp_path / "cands.jsonl"
    cands.write_text("".join(json.dumps({"id": k, **v}) + "\n" for k, v in CANDIDATES.items()))
    from_file = questions_from_file(data)
    assert [(q.answer, q.gold, q.category) for q in from_file] == [(q.answer, q.gold, q.category) for q in questions()]
    cfg = BestOfNConfig(data=str(data), candidates=str(cands), n=4, out=str(tmp_path / "out"))
    result = run_best_of_n(cfg, scorer=LargestX())
    assert result.accuracy == EXPECTED_ACCURACY
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["accuracy"] == EXPECTED_ACCURACY
    table = (tmp_path / "out" / "report.md").read_text()
    assert "| 4 | 0.000 | 0.000 | 1.000 | 0.500 | 0.500 | 0.375 |" in table
    assert (tmp_path / "out" / "best_of_n.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_best_of_n_with_rules_scorer(tmp_path):
    data = tmp_path / "examples.jsonl"
    data.write_text("".join(json.dumps({"id": q, "tools": TOOLS, "question": [CONV], "ground_truth": [{"f": {"x": [x]}}]})
                            + "\n" for q, x in (("q1", 1), ("q2", 5))))
    cands = tmp_path / "cands.jsonl"
    cands.write_text("".join(json.dumps({"id": k, **v}) + "\n" for k, v in CANDIDATES.items()))
    result = CliRunner().invoke(app, ["eval", "best-of-n", "--data", str(data), "--candidates", str(cands), "-n", "4",
                                      "--scorer", "rules", "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["ns"] == [1, 2, 4] and set(out["accuracy"]) == set(STRATEGIES)
    # Rules rate every schema-valid call 0: ties go to the earliest valid candidate, like first_valid.
    assert out["accuracy"]["reward"] == out["accuracy"]["first_valid"] == EXPECTED_ACCURACY["first_valid"]


def _five_questions_two_with_candidates(tmp_path):
    data = tmp_path / "examples.jsonl"
    data.write_text("".join(json.dumps({"id": q, "tools": TOOLS, "conversation": CONV, "category": "simple",
                                        "possible_answer": [{"f": {"x": [x]}}]}) + "\n"
                            for q, x in (("q0", 0), ("q1", 1), ("q2", 5), ("q3", 3), ("q4", 4))))
    cands = tmp_path / "cands.jsonl"
    rows = [{"id": k, **v} for k, v in CANDIDATES.items()] + [{"id": "elsewhere", "candidates": ["[f(x=1)]"]}]
    cands.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data, cands


def test_candidates_are_matched_before_the_limit_samples_and_gaps_are_warned(tmp_path, caplog):
    data, cands = _five_questions_two_with_candidates(tmp_path)
    messages = []
    cfg = BestOfNConfig(data=str(data), candidates=str(cands), n=4, limit=2, out=str(tmp_path / "out"))
    with caplog.at_level("WARNING", logger="toolrm_rl.eval.best_of_n"):
        result = run_best_of_n(cfg, scorer=LargestX(), progress=messages.append)
    # both questions with candidates are kept (sampling 2 of the 5 first would usually drop some)
    assert result.n_questions == 2 and set(result.selections) == {"q1", "q2"}
    assert result.accuracy == EXPECTED_ACCURACY
    assert result.coverage == {"questions": 5, "n_requested": 4, "with_candidates": 2, "without_candidates": 3,
                               "candidates_without_question": 1}
    warnings = [m for m in messages if m.startswith("WARNING: ")]
    assert any("3 of 5 questions" in m and "no candidates" in m for m in warnings), messages
    assert any("1 candidate rows" in m and "'elsewhere'" in m for m in warnings), messages
    assert "3 of 5 questions" in caplog.text
    assert "**3 of 5 questions had no candidates" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["coverage"]["without_candidates"] == 3
    # a limit below the matched count samples among the questions that have candidates
    one = run_best_of_n(BestOfNConfig(data=str(data), candidates=str(cands), n=4, limit=1, out=str(tmp_path / "o1")),
                        scorer=LargestX(), progress=messages.append)
    assert one.n_questions == 1 and set(one.selections) <= {"q1", "q2"}


def test_readme_positional_recipe_form_with_a_smaller_candidates_file(tmp_path):
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "eval" / "best_of_n.yaml"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "toolrm eval best-of-n recipes/eval/best_of_n.yaml --candidates" in readme  # the form tested here
    data, cands = _five_questions_two_with_candidates(tmp_path)
    result = CliRunner().invoke(app, ["eval", "best-of-n", str(recipe), "--candidates", str(cands), "--scorer", "rules",
                                      "--data", str(data), "--out", str(tmp_path / "out"), "--json"],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "WARNING: n=32 but 2 of 2 questions have fewer candidates" in result.output  # the recipe's n: 32
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["ns"] == [1, 2, 4] and out["n_questions"] == 2
