"""`toolrm verl-data`: verl parquet rows from offline sources and files, read back by pandas, by our reward
and by verl's own RLHFDataset with the real Qwen3 tokenizer."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from toolrm_rl.cli import app
from toolrm_rl.core.calls import ToolCall, calls_from_bfcl
from toolrm_rl.core.example import ToolExample
from toolrm_rl.core.parse import to_hermes
from toolrm_rl.verl.data import (
    example_to_row,
    load_examples,
    system_prompt,
    write_verl_data,
)
from toolrm_rl.verl.reward import compute_score

TOOLS = [{"name": "get_weather", "description": "Weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def _example(i, gold=True):
    from toolrm_rl.core.calls import ToolCatalog

    conv = [{"role": "user", "content": f"Weather in city {i}?"}]
    calls = [ToolCall("get_weather", {"city": f"c{i}"})] if gold else []
    return ToolExample(f"ex{i}", "unit", conv, ToolCatalog.load(TOOLS), calls)


@pytest.fixture(scope="module")
def offline_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("verl")
    result = CliRunner().invoke(app, ["verl-data", "--source", "bfcl_exec", "--out", str(out), "--max-rows", "12",
                                      "--val-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    return out


def test_offline_source_rows_load_with_pandas_and_split(offline_dir):
    import pandas as pd

    train, val = pd.read_parquet(offline_dir / "train.parquet"), pd.read_parquet(offline_dir / "val.parquet")
    assert (len(train), len(val)) == (9, 3)
    assert {"data_source", "prompt", "ability", "reward_model", "extra_info"} <= set(train.columns)
    assert not [p for p in offline_dir.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave nothing behind
    row = train.iloc[0]
    info = dict(row.extra_info)
    assert info["split"] == "train" and set(val.iloc[0].extra_info["split"] for _ in [0]) == {"val"}
    tools, gold = json.loads(info["tools"]), calls_from_bfcl(info["gold"])
    assert row.prompt[0]["role"] == "system" and tools[0]["name"] in row.prompt[0]["content"]
    assert row.prompt[-1]["role"] == "user" and json.loads(info["conversation"])[-1]["role"] == "user"
    assert row.reward_model["style"] == "model" and calls_from_bfcl(row.reward_model["ground_truth"]) == gold
    assert len({r["id"] for r in train.extra_info} | {r["id"] for r in val.extra_info}) == 12


def test_rows_feed_the_reward_end_to_end(offline_dir):
    import pandas as pd

    for _, row in pd.read_parquet(offline_dir / "train.parquet").head(4).iterrows():
        info = dict(row.extra_info)
        gold = calls_from_bfcl(info["gold"])
        out = asyncio.run(compute_score(row.data_source, to_hermes(gold), row.reward_model["ground_truth"], info,
                                        rm_source="none", w_gt=1.0))
        assert (out["valid"], out["gt_match"], out["score"]) == (1.0, 1.0, 1.0), info["id"]


def test_verl_rlhf_dataset_accepts_the_rows(offline_dir):
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from toolrm_rl.data.backbones import qwen3_tokenizer_dir

    tok = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    # (verl's overlong filter is a datasets.map: slow to start; the length is checked below instead)
    cfg = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 4096, "filter_overlong_prompts": False,
                            "truncation": "error"})
    ds = RLHFDataset(data_files=[str(offline_dir / "val.parquet")], tokenizer=tok, config=cfg)
    assert len(ds) == 3
    for i in range(len(ds)):
        item = ds[i]
        assert item["raw_prompt"][0]["role"] == "system" and set(json.loads(item["extra_info"]["tools"])[0]) >= {"name"}
        text = tok.apply_chat_template(item["raw_prompt"], tokenize=False, add_generation_prompt=True)
        assert "<tool_call>" in text and text.rstrip().endswith("assistant")
        assert len(tok(text, add_special_tokens=False)["input_ids"]) <= 4096


def test_template_mode_agent_name_and_no_call_gold(tmp_path):
    examples = [_example(i) for i in range(3)] + [_example(9, gold=False)]
    report = write_verl_data(examples, tmp_path, val_fraction=0.0, tools_in="template", agent_name="tool_agent",
                             style="rule")
    import pandas as pd

    df = pd.read_parquet(report.train_path)
    assert report.n_train == 4 and report.n_no_call == 1 and set(df.agent_name) == {"tool_agent"}
    assert all(p[0]["role"] == "user" for p in df.prompt)  # no tools in the prompt: verl's tool config has them
    assert set(r["style"] for r in df.reward_model) == {"rule"} and "[]" in set(r["ground_truth"] for r in df.reward_model)


def test_prior_calls_become_text_in_the_policy_format():
    ex = _example(1)
    ex.conversation = [{"role": "user", "content": "a"},
                       {"role": "assistant", "content": None, "tool_calls": [
                           {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "x"}'}}]},
                       {"role": "tool", "content": "sunny"}, {"role": "user", "content": "and y?"}]
    row = example_to_row(ex, 0, "train", fmt="pythonic")
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "tool", "user"]
    assert row["prompt"][2]["content"] == "[get_weather(city='x')]" and "Python list" in row["prompt"][0]["content"]
    with pytest.raises(ValueError, match="format"):
        system_prompt(ex.tools, "xml")


def test_bfcl_format_file_with_possible_answers(tmp_path):
    qdir = tmp_path / "q"
    (qdir / "possible_answer").mkdir(parents=True)
    rows = [{"id": f"mine_{i}", "question": [[{"role": "user", "content": f"weather {i}"}]], "function": TOOLS}
            for i in range(2)]
    (qdir / "mine.json").write_text("\n".join(json.dumps(r) for r in rows))
    answers = [{"id": f"mine_{i}", "ground_truth": [{"get_weather": {"city": [f"c{i}", f"C{i}"]}}]} for i in range(2)]
    (qdir / "possible_answer" / "mine.json").write_text("\n".join(json.dumps(a) for a in answers))
    examples = load_examples(str(qdir / "mine.json"))
    assert [e.gold for e in examples] == [[ToolCall("get_weather", {"city": "c0"})], [ToolCall("get_weather", {"city": "c1"})]]
    row = example_to_row(examples[0], 0, "train")
    alt = asyncio.run(compute_score(row["data_source"], to_hermes([ToolCall("get_weather", {"city": "C0"})]),
                                    row["reward_model"]["ground_truth"], row["extra_info"], rm_source="none", w_gt=1.0))
    assert alt["gt_match"] == 1.0  # the possible answer's alternative is accepted


def test_bfcl_single_turn_questions_are_refused(tmp_path):
    path = tmp_path / "BFCL_v4_simple_python.json"
    path.write_text(json.dumps({"id": "simple_python_3", "question": [[{"role": "user", "content": "x"}]],
                                "function": TOOLS, "ground_truth": [{"get_weather": {"city": ["x"]}}]}) + "\n")
    result = CliRunner().invoke(app, ["verl-data", "--source", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "single-turn" in result.output and "simple_python_3" in result.output
    assert not (tmp_path / "o" / "train.parquet").exists()


def test_xlam_and_canonical_files(tmp_path):
    from toolrm_rl.data import sources

    canonical = tmp_path / "canon.jsonl"
    canonical.write_text(json.dumps({"id": "c1", "conversation": [{"role": "user", "content": "w?"}], "tools": TOOLS,
                                     "gold": [{"get_weather": {"city": "z"}}]}) + "\n")
    assert load_examples(str(canonical))[0].gold == [ToolCall("get_weather", {"city": "z"})]
    if "xlam" not in getattr(sources, "FILE_SOURCES", {}):
        pytest.skip("the xlam file source has not landed in toolrm_rl.data.sources yet")
    xlam = tmp_path / "xlam.json"
    tools = [{"name": "get_weather", "description": "Weather", "parameters": {
        "city": {"type": "str", "description": "City"}}}]
    xlam.write_text(json.dumps([{"id": 1, "query": "Weather in Rome?", "tools": json.dumps(tools),
                                 "answers": json.dumps([{"name": "get_weather", "arguments": {"city": "Rome"}}])}]))
    report = write_verl_data(load_examples(str(xlam)), tmp_path / "out", val_fraction=0.0)
    assert report.n_train == 1


def test_unknown_source_is_a_clear_cli_error(tmp_path):
    result = CliRunner().invoke(app, ["verl-data", "--source", "no_such_source", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "no_such_source" in result.output


def test_parquet_files_respect_the_umask(tmp_path):
    import os
    import stat

    for mask, expected in ((0o022, 0o644), (0o027, 0o640)):
        old = os.umask(mask)
        try:
            report = write_verl_data([_example(i) for i in range(4)], tmp_path / oct(mask), val_fraction=0.25)
        finally:
            os.umask(old)
        for path in (report.train_path, report.val_path):
            assert stat.S_IMODE(os.stat(path).st_mode) == expected, (path, oct(mask))


# -- bfcl multi-turn: earlier turns with the real outputs of their gold calls ----------------------------

@pytest.fixture(scope="module")
def multi_turn():
    import importlib.util

    if importlib.util.find_spec("bfcl_eval") is None:
        pytest.skip("bfcl-eval is not installed (scripts/setup.sh installs it)")
    from toolrm_rl.data.sources import bfcl_multi_turn_examples

    skipped: dict[str, int] = {}
    return {ex.id: ex for ex in bfcl_multi_turn_examples(skipped=skipped)}, skipped


def test_multi_turn_history_has_each_earlier_call_followed_by_its_real_output(multi_turn):
    examples, _ = multi_turn
    turn1 = examples["multi_turn_base_0/turn1"]
    roles = [m["role"] for m in turn1.conversation]
    assert roles == ["user", "assistant", "tool", "tool", "tool", "user"]
    calls = turn1.conversation[1]["tool_calls"]
    outputs = turn1.conversation[2:5]
    assert [o["tool_call_id"] for o in outputs] == [c["id"] for c in calls]
    assert [o["name"] for o in outputs] == [c["function"]["name"] for c in calls] == ["cd", "mkdir", "mv"]
    # GorillaFileSystem ran the calls on the record's initial_config: the move really happened.
    assert json.loads(outputs[0]["content"]) == {"current_working_directory": "document"}
    assert "final_report.pdf" in outputs[2]["content"] and "temp" in outputs[2]["content"]
    row = example_to_row(turn1, 0, "train")
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "tool", "tool", "tool", "user"]


def test_multi_turn_prompt_shows_the_output_the_next_turn_refers_to(multi_turn):
    examples, _ = multi_turn
    ex = examples["multi_turn_base_131/turn2"]  # "the third stock in the list"
    assert "third stock in the list" in ex.conversation[-1]["content"]
    listing = [json.loads(m["content"]) for m in ex.conversation if m["role"] == "tool" and "stock_list" in m["content"]]
    symbol = ex.gold[0].arguments["symbol"]
    assert listing and listing[-1]["stock_list"][2] == symbol
    assert not any(symbol in m["content"] for m in ex.conversation if m["role"] == "user")


def test_multi_turn_outputs_are_capped_and_long_context_state_is_loaded(multi_turn):
    from toolrm_rl.data.sources import MULTI_TURN_RESULT_CHARS

    examples, skipped = multi_turn
    outputs = [m["content"] for ex in examples.values() for m in ex.conversation if m["role"] == "tool"]
    cut = [o for o in outputs if "[cut: " in o]
    assert cut and all(len(o) <= MULTI_TURN_RESULT_CHARS + 40 for o in outputs)
    base = [m["content"] for k, ex in examples.items() if k.startswith("multi_turn_base_")
            for m in ex.conversation if m["role"] == "tool"]
    assert not [o for o in base if "[cut: " in o]  # only the long-context records' outputs are that long
    # every skipped turn has a reason; the count covers the turns the records have but no example shows
    assert all(n > 0 for n in skipped.values())


def test_multi_turn_replay_failure_ends_the_record_with_a_counted_reason(tmp_path):
    import importlib.util
    import shutil

    if importlib.util.find_spec("bfcl_eval") is None:
        pytest.skip("bfcl-eval is not installed")
    from toolrm_rl.data.bfcl import bfcl_data_dir
    from toolrm_rl.data.sources import bfcl_multi_turn_examples

    shutil.copytree(bfcl_data_dir() / "multi_turn_func_doc", tmp_path / "multi_turn_func_doc")
    (tmp_path / "possible_answer").mkdir()
    turns = [[{"role": "user", "content": f"step {i}"}] for i in range(4)]
    records = [{"id": "multi_turn_base_ok", "involved_classes": ["MathAPI"], "initial_config": {}, "question": turns},
               {"id": "multi_turn_base_bad", "involved_classes": ["MathAPI"], "initial_config": {}, "question": turns}]
    answers = [{"id": "multi_turn_base_ok", "ground_truth": [["add(a=1, b=2)"]] * 4},
               # the backend rejects the made-up keyword: turns 2 and 3 would follow a history that never ran
               {"id": "multi_turn_base_bad", "ground_truth": [["add(a=1, b=2)"], ["add(a=1, nope=2)"],
                                                              ["add(a=1, b=2)"], ["add(a=1, b=2)"]]}]
    (tmp_path / "BFCL_v4_multi_turn_base.json").write_text("\n".join(json.dumps(r) for r in records))
    (tmp_path / "possible_answer" / "BFCL_v4_multi_turn_base.json").write_text("\n".join(json.dumps(a) for a in answers))
    skipped: dict[str, int] = {}
    ids = [ex.id for ex in bfcl_multi_turn_examples(tmp_path, categories=("multi_turn_base",), skipped=skipped)]
    assert ids == [f"multi_turn_base_ok/turn{i}" for i in range(4)] + ["multi_turn_base_bad/turn0",
                                                                       "multi_turn_base_bad/turn1"]
    assert list(skipped.values()) == [2] and "replay" in next(iter(skipped))


def test_cli_reports_the_multi_turn_turns_it_skipped(tmp_path, multi_turn):
    _, skipped = multi_turn
    result = CliRunner().invoke(app, ["verl-data", "--source", "bfcl_multi_turn", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for reason, n in skipped.items():
        assert f"skipped {n} turns: {reason}" in result.output
