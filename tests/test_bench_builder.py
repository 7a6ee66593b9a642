"""Benchmark builder: BFCL score/result logs (2024 dict style, v3/v4 list style) -> FC-RewardBench pairs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolrm_rl.cli import app
from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.match import GroundTruth, match_bfcl, normalize_answer
from toolrm_rl.data.bfcl import concrete_calls
from toolrm_rl.data.records import load_pairs, save_pairs
from toolrm_rl.eval.bench_builder import build_pairs

AREA = {"name": "calc_area", "description": "Area of a triangle.",
        "parameters": {"type": "dict", "properties": {"base": {"type": "integer", "description": "base"},
                                                      "height": {"type": "integer", "description": "height"},
                                                      "unit": {"type": "string", "description": "unit"}},
                       "required": ["base", "height"]}}
AREA_ANSWER = [{"calc_area": {"base": [10], "height": [5], "unit": ["units", ""]}}]
PLAY = {"name": "spotify.play", "description": "Play an artist.",
        "parameters": {"type": "dict", "properties": {"artist": {"type": "string", "description": "who"},
                                                      "duration": {"type": "integer", "description": "minutes"}},
                       "required": ["artist", "duration"]}}
QUESTION = "Find the area of a triangle with a base of 10 units and height of 5 units."
SUMMARY = {"accuracy": 0.5, "correct_count": 3, "total_count": 6}


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def dict_style_rows(model="old-model"):
    """2024 (BFCL v1/v2) score rows: question a string, function a dict, possible answer a dict."""
    prompt = {"question": QUESTION, "function": AREA}
    base = {"model_name": model, "test_category": "simple", "valid": False, "prompt": prompt,
            "possible_answer": {"calc_area": {"base": [10], "height": [5], "unit": ["units", ""]}}}
    return [SUMMARY,
            {**base, "id": 1, "error": ["Invalid type for parameter 'height'."], "error_type": "type_error:simple",
             "model_result_raw": "[calc_area(base=10, height='5')]",
             "model_result_decoded": [{"calc_area": {"base": 10, "height": "5"}}]},
            {**base, "id": 2, "error": ["Invalid syntax. Failed to decode AST."], "error_type": "ast_decoder:decoder_failed",
             "model_result_raw": "calc_area(base=10"},
            # Logged as a failure, yet our matcher accepts it: a checker disagreement, skipped.
            {**base, "id": 3, "error": ["?"], "error_type": "value_error:others",
             "model_result_raw": "[calc_area(base=10, height=5)]",
             "model_result_decoded": [{"calc_area": {"base": 10, "height": 5}}]},
            {"id": 4, "model_name": model, "test_category": "parallel", "valid": False,
             "prompt": {"question": "Play Taylor Swift for 20 minutes and Maroon 5 for 15.", "function": [PLAY]},
             "possible_answer": {"spotify.play_1": {"artist": ["Taylor Swift"], "duration": [20]},
                                 "spotify.play_2": {"artist": ["Maroon 5"], "duration": [15]}},
             "error": ["Wrong number of functions."], "error_type": "parallel_function_checker_no_order:wrong_count",
             "model_result_raw": "[spotify.play(artist='Taylor Swift', duration=20)]",
             "model_result_decoded": [{"spotify.play": {"artist": "Taylor Swift", "duration": 20}}]}]


def v4_rows(model, height):
    """v4 score rows: prompt is the full entry, possible answer a list, decoded a list of {func: {args}}."""
    entry = {"id": "simple_python_0", "question": [[{"role": "user", "content": QUESTION}]], "function": [AREA]}
    return [SUMMARY,
            {"id": "simple_python_0", "model_name": model, "test_category": "simple_python", "valid": False,
             "error": ["Invalid value for parameter 'height': 6. Expected one of [5]."], "error_type": "value_error:others",
             "prompt": entry, "model_result_raw": f"[calc_area(base=10, height={height})]",
             "model_result_decoded": [{"calc_area": {"base": 10, "height": height}}], "possible_answer": AREA_ANSWER}]


@pytest.fixture()
def logs(tmp_path):
    root = tmp_path / "logs"
    write_jsonl(root / "score" / "old-model" / "simple_score.json", dict_style_rows()[:4])
    write_jsonl(root / "score" / "old-model" / "parallel_score.json", [SUMMARY, dict_style_rows()[4]])
    write_jsonl(root / "score" / "model-b" / "non_live" / "BFCL_v4_simple_python_score.json", v4_rows("model-b", 6))
    write_jsonl(root / "score" / "model-c" / "non_live" / "BFCL_v4_simple_python_score.json", v4_rows("model-c", 7))
    # model-c's result file is ignored: it has a score file for that category.
    write_jsonl(root / "result" / "model-c" / "non_live" / "BFCL_v4_simple_python_result.json",
                [{"id": "simple_python_0", "result": "[calc_area(base=1, height=1)]"}])
    # model-d has only a result file: questions come from the data folder, verdicts from our matcher.
    write_jsonl(root / "result" / "model-d" / "non_live" / "BFCL_v4_simple_python_result.json",
                [{"id": "simple_python_0", "result": "[calc_area(base=10, height=5)]"},  # right: not a failure
                 {"id": "simple_python_1", "result": "[calc_area(base=3)]"},
                 {"id": "simple_python_9", "result": "[calc_area(base=3)]"}])  # no such question
    # model-e logs function-calling output: [{func: "json args"}]; its second answer's JSON is cut off.
    write_jsonl(root / "result" / "model-e" / "BFCL_v4_simple_python_result.json",
                [{"id": "simple_python_1", "result": [{"calc_area": '{"base": 3, "height": 5}'}]},
                 {"id": "simple_python_0", "result": [{"calc_area": '{"base": 10, "hei'}]}])
    data = tmp_path / "data"
    write_jsonl(data / "BFCL_v4_simple_python.json", [
        {"id": "simple_python_0", "question": [[{"role": "user", "content": QUESTION}]], "function": [AREA]},
        {"id": "simple_python_1", "question": [[{"role": "user", "content": "Base 3, height 4."}]], "function": [AREA]}])
    write_jsonl(data / "possible_answer" / "BFCL_v4_simple_python.json", [
        {"id": "simple_python_0", "ground_truth": AREA_ANSWER},
        {"id": "simple_python_1", "ground_truth": [{"calc_area": {"base": [3], "height": [4], "unit": ["", "units"]}}]}])
    return root, data


def by_key(pairs):
    return {(p.id, p.generator): p for p in pairs}


def test_both_formats_give_the_expected_pairs_and_skip_counts(logs):
    root, data = logs
    pairs, report = build_pairs(root, data_dir=data, per_question=2)
    got = by_key(pairs)
    # 2024 rows without prompt.id: the 1-based line id n becomes <category>_<n-1>, as BFCL numbered them.
    assert sorted(got) == [("parallel_3", "old-model"), ("simple_0", "old-model"), ("simple_python_0", "model-b"),
                           ("simple_python_0", "model-c"), ("simple_python_1", "model-d"), ("simple_python_1", "model-e")]
    assert got[("simple_python_1", "model-e")].rejected == [ToolCall("calc_area", {"base": 3, "height": 5})]
    old = got[("simple_0", "old-model")]
    assert old.conversation == [{"role": "user", "content": QUESTION}]
    # Chosen: first acceptable values, the omittable "unit" left out; rejected: the logged decoded output.
    assert old.chosen == [ToolCall("calc_area", {"base": 10, "height": 5})]
    assert old.rejected == [ToolCall("calc_area", {"base": 10, "height": "5"})]
    assert (old.error_type, old.source) == ("type_error:simple", "simple")
    parallel = got[("parallel_3", "old-model")]  # dict-style answer with _1/_2 suffixes
    assert parallel.chosen == [ToolCall("spotify.play", {"artist": "Taylor Swift", "duration": 20}),
                               ToolCall("spotify.play", {"artist": "Maroon 5", "duration": 15})]
    assert got[("simple_python_0", "model-b")].rejected == [ToolCall("calc_area", {"base": 10, "height": 6})]
    from_result = got[("simple_python_1", "model-d")]
    assert from_result.error_type == "simple_function_checker:missing_required"  # our matcher's verdict
    assert from_result.conversation == [{"role": "user", "content": "Base 3, height 4."}]
    assert report.skipped == {"unparsable": 2, "passes_answer": 1, "not_a_failure": 1, "question_not_found": 1}
    assert report.pairs == 6 and report.questions == 4
    assert sum(k == "result" for k in report.files.values()) == 2  # model-c's result file was not read


def test_one_pair_per_question_is_a_seeded_choice_among_failing_models(logs):
    root, data = logs
    picks = set()
    for seed in range(12):
        pairs, _ = build_pairs(root, data_dir=data, seed=seed)
        again, _ = build_pairs(root, data_dir=data, seed=seed)
        assert [(p.id, p.generator) for p in pairs] == [(p.id, p.generator) for p in again]
        ids = [p.id for p in pairs]
        assert len(ids) == len(set(ids)) == 4
        picks.add(next(p.generator for p in pairs if p.id == "simple_python_0"))
    assert picks == {"model-b", "model-c"}


def test_filters_by_model_and_category_and_keeps_unparsable_on_request(logs):
    root, data = logs
    pairs, report = build_pairs(root, data_dir=data, models=["old-model"], categories=["simple"], keep_unparsable=True,
                                per_question=3)
    assert sorted(p.id for p in pairs) == ["simple_0", "simple_1"]
    unparsable = next(p for p in pairs if p.id == "simple_1")
    assert unparsable.rejected == [] and unparsable.rejected_text == "calc_area(base=10"
    assert unparsable.error_type == "ast_decoder:decoder_failed"
    assert report.skipped["other_model"] == 7 and report.skipped["other_category"] == 1
    # v4 names select the same question set as v3 names.
    v4, _ = build_pairs(root, data_dir=data, categories=["simple_python"], models=["model-b"])
    assert [p.id for p in v4] == ["simple_python_0"]


def test_optional_params_first_writes_the_first_non_empty_value(logs):
    root, data = logs
    pairs, _ = build_pairs(root, data_dir=data, models=["old-model"], categories=["simple"], optional_params="first")
    assert pairs[0].chosen == [ToolCall("calc_area", {"base": 10, "height": 5, "unit": "units"})]


def test_pairs_round_trip_and_chosen_passes_while_rejected_fails_the_matcher(logs, tmp_path):
    root, data = logs
    pairs, _ = build_pairs(root, data_dir=data, per_question=2)
    path = save_pairs(pairs, tmp_path / "bench.jsonl", schema="fc_rewardbench")
    loaded, report = load_pairs(path)
    assert report.n_loaded == len(pairs) and [p.id for p in loaded] == [p.id for p in pairs]
    row = json.loads(path.read_text().splitlines()[0])
    assert set(row) >= {"tools", "conversation", "chosen_output", "rejected_output", "error_type", "model_name",
                        "test_category", "test_id"}
    for p in loaded:
        if p.source.startswith("simple"):
            assert match_bfcl(p.chosen, p.tools, AREA_ANSWER if p.id != "simple_python_1" else
                              [{"calc_area": {"base": [3], "height": [4], "unit": ["", "units"]}}], p.source).valid
            assert not match_bfcl(p.rejected, p.tools, AREA_ANSWER if p.id != "simple_python_1" else
                                  [{"calc_area": {"base": [3], "height": [4], "unit": ["", "units"]}}], p.source).valid


def test_bad_log_line_is_a_clear_error(tmp_path):
    path = tmp_path / "score" / "m" / "BFCL_v4_simple_python_score.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(SUMMARY) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"BFCL_v4_simple_python_score.json: line 2"):
        build_pairs(tmp_path)


def test_cli_bench_build(logs, tmp_path):
    root, data = logs
    out = tmp_path / "bench.jsonl"
    result = CliRunner().invoke(app, ["bench", "build", "--bfcl-logs", str(root), "--bfcl-data", str(data),
                                      "--out", str(out), "--models", "old-model,model-b", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["pairs"] == 3 and summary["skipped"]["unparsable"] == 1 and summary["skipped"]["other_model"] == 6
    assert len(out.read_text().splitlines()) == 3


# -- the BFCL leaderboard's real logs of 2024-08-11 (tests/data/bfcl_2024_08_11, see its README) ----------
LOGS_2024 = Path(__file__).parent / "data" / "bfcl_2024_08_11"
# v3 category written on the pair -> the 2024 category that prefixes its test id
PREFIX_2024 = {"simple": "simple", "multiple": "multiple_function", "parallel": "parallel_function",
               "parallel_multiple": "parallel_multiple_function", "java": "java", "javascript": "javascript"}


def logged_rows_2024():
    """(model, question id) -> the logged score row, for every row of the fixture."""
    rows = {}
    for path in sorted(LOGS_2024.glob("score/*/*_score.json")):
        for line in path.read_text().splitlines()[1:]:
            row = json.loads(line)
            rows[(row["model_name"], (row.get("prompt") or {}).get("id"))] = row
    return rows


def test_2024_logs_give_pairs_in_every_ast_category_with_category_prefixed_ids():
    pairs, report = build_pairs(LOGS_2024, per_question=3)
    assert set(report.pairs_by_category) == set(PREFIX_2024)
    assert all(n > 0 for n in report.pairs_by_category.values())
    assert sum(report.pairs_by_category.values()) == report.pairs == len(pairs)
    for pair in pairs:
        assert re.fullmatch(PREFIX_2024[pair.source] + r"_\d+", pair.id), (pair.source, pair.id)
    assert {p.generator for p in pairs} == {"gorilla-openfunctions-v2", "gpt-4o-2024-05-13-FC", "claude-3-haiku-20240307"}
    # The non-AST categories (relevance, executable_simple) are counted, not paired or mistaken for AST ones.
    assert report.skipped["not_ast_category"] == 2 and "not_single_turn" not in report.skipped
    # The 2024 names select the same questions as the v3 and v4 names.
    by_name = {name: sorted(p.id for p in build_pairs(LOGS_2024, categories=[name], per_question=3)[0])
               for name in ("parallel_function", "parallel")}
    assert by_name["parallel_function"] == by_name["parallel"] == sorted(p.id for p in pairs if p.source == "parallel")
    assert {p.id for p in build_pairs(LOGS_2024, categories=["simple_java"])[0]} == \
           {p.id for p in pairs if p.source == "java"}


def test_every_2024_pair_is_validated_by_the_matcher_against_the_logged_answer():
    pairs, report = build_pairs(LOGS_2024, per_question=3)
    logged = logged_rows_2024()
    for pair in pairs:
        row = logged[(pair.generator, pair.id)]
        names = {f["name"] for f in (row["prompt"]["function"] if isinstance(row["prompt"]["function"], list)
                                     else [row["prompt"]["function"]])}
        # 2024 answers number repeated calls "f_1" or "f 1".
        answer = [{(re.sub(r"[ _]\d+$", "", k) if re.sub(r"[ _]\d+$", "", k) in names else k): v}
                  for k, v in row["possible_answer"].items()]
        truth = GroundTruth(row["prompt"]["function"], answer, pair.source)
        assert truth.check(pair.chosen).valid, (pair.id, pair.chosen)
        assert not truth.check(pair.rejected).valid, (pair.id, pair.rejected)
        assert pair.error_type == row["error_type"]
    # Rows the matcher cannot validate are dropped, each counted under its reason with the row named.
    # java_1's literal HashMap answer: our matcher reads it as BFCL does (no exception), and its
    # logged answer then rejects the chosen output like java_64's.
    assert "matcher_error" not in report.skipped
    assert report.skipped["chosen_fails_matcher"] == 2
    assert {"(id java_1)", "(id java_64)"} <= {e[e.index("(id"):e.index(")") + 1] for e in report.examples["chosen_fails_matcher"]}
    assert report.skipped["bad_question"] == 1
    assert "(id parallel_multiple_function_179)" in report.examples["bad_question"][0]
    assert not {p.id for p in pairs} & {"java_1", "java_64", "parallel_multiple_function_179"}


def test_java_literal_map_answer_gives_a_hashmap_literal_instead_of_crashing():
    row = logged_rows_2024()[("gorilla-openfunctions-v2", "java_1")]
    answer = normalize_answer(row["possible_answer"])
    assert answer[0]["SQLCompletionAnalyzer.makeProposalsFromObject"]["params"] == [{"limit": 50, "schemaFilter": "public"}]
    call, = concrete_calls(answer, ToolCatalog.load(row["prompt"]["function"]), "java")
    assert call.arguments["params"] == 'new HashMap<String, Object>() {{ put("limit", 50); put("schemaFilter", "public"); }}'
    assert call.arguments["useShortName"] == "true"
    # A per-key option map (BFCL's dict checker form) still gives the first option of each key.
    fn = {"name": "f", "parameters": {"type": "dict", "properties": {"m": {"type": "HashMap", "description": ""}}}}
    call, = concrete_calls([{"f": {"m": [{"a": ["x", "y"], "b": [1]}]}}], ToolCatalog.load([fn]), "java")
    assert call.arguments["m"] == 'new HashMap<String, Object>() {{ put("a", "x"); put("b", 1); }}'


def test_2024_answer_quirks_still_give_valid_pairs():
    got = by_key(build_pairs(LOGS_2024, per_question=3)[0])
    # Answer keys "get_stock_price 1" ... "4": four calls of the catalog's function.
    stock = got[("parallel_function_178", "gorilla-openfunctions-v2")]
    assert [c.name for c in stock.chosen] == ["get_stock_price"] * 4
    # A required parameter whose options include "" is written with its first non-empty value.
    emissions = got[("simple_200", "gpt-4o-2024-05-13-FC")]
    assert emissions.chosen[0].arguments["fuel_efficiency"] == 25.0
    assert "efficiency_reduction" not in emissions.chosen[0].arguments  # optional: omitted


def test_2024_result_only_logs_find_their_questions_under_v4_ids(tmp_path):
    root = tmp_path / "logs"
    write_jsonl(root / "result" / "m" / "gorilla_openfunctions_v1_test_parallel_function_result.json",
                [{"id": "parallel_function_0", "result": "[spotify.play(artist='Taylor Swift', duration=20)]"}])
    data = tmp_path / "data"
    write_jsonl(data / "BFCL_v4_parallel.json", [
        {"id": "parallel_0", "question": [[{"role": "user", "content": "Play Taylor Swift for 20 and Maroon 5 for 15."}]],
         "function": [PLAY]}])
    write_jsonl(data / "possible_answer" / "BFCL_v4_parallel.json", [
        {"id": "parallel_0", "ground_truth": [{"spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}},
                                              {"spotify.play": {"artist": ["Maroon 5"], "duration": [15]}}]}])
    pairs, report = build_pairs(root, data_dir=data)
    assert [(p.id, p.source, p.error_type) for p in pairs] == \
           [("parallel_function_0", "parallel", "parallel_function_checker_no_order:wrong_count")]
    assert report.pairs_by_category == {"parallel": 1}


def test_2024_ids_follow_the_dev_file_convention(shared_failures_path):
    """The shared dev pairs were built from the same 2024-08-11 logs: same category names, same id prefixes."""
    dev = {}
    for line in shared_failures_path.read_text().splitlines():
        row = json.loads(line)
        dev.setdefault(row["test_category"], set()).add(re.sub(r"_\d+$", "", row["test_id"]))
    pairs, _ = build_pairs(LOGS_2024, per_question=3)
    ours = {}
    for pair in pairs:
        ours.setdefault(pair.source, set()).add(re.sub(r"_\d+$", "", pair.id))
    assert ours == dev


def test_cli_bench_build_on_2024_logs_prints_counts_per_category_and_dropped_rows(tmp_path):
    out = tmp_path / "bench.jsonl"
    result = CliRunner().invoke(app, ["bench", "build", "--bfcl-logs", str(LOGS_2024), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert set(summary["pairs_by_category"]) == set(PREFIX_2024)
    assert "dropped (chosen_fails_matcher):" in result.output and "(id java_1)" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == summary["pairs"] == sum(summary["pairs_by_category"].values())
    assert {r["test_category"] for r in rows} == set(PREFIX_2024)
    assert all(r["test_id"].startswith(PREFIX_2024[r["test_category"]] + "_") for r in rows)
