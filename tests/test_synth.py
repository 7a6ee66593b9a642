"""Synthesis pipeline: verification and pairing of generator outputs, shards, resume, Ray, CLI, recipes."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolrm_rl.cli import app
from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.parse import to_hermes
from toolrm_rl.data import synth
from toolrm_rl.data.generate import ReplayGenerator
from toolrm_rl.data.records import load_pairs
from toolrm_rl.core.example import ToolExample
from toolrm_rl.data.synth import GenerationSettings, generation_pairs, load_config, synthesize

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "synth"
CATALOG = ToolCatalog.load([
    {"name": "get_weather", "description": "Weather for a city.",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                    "required": ["city"]}},
    {"name": "get_time", "description": "Local time in a city.",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
])
WEATHER = ToolExample("w1", "fixture", [{"role": "user", "content": "Weather in Paris?"}], CATALOG,
                      [ToolCall("get_weather", {"city": "Paris"})], category="simple")
NO_TOOL = ToolExample("n1", "fixture_irrelevance", [{"role": "user", "content": "Tell me a joke."}], CATALOG, [],
                      category="simple")


def _hermes(name, **args):
    return to_hermes([ToolCall(name, args)])


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


def test_known_outputs_give_exactly_the_expected_pairs_and_labels():
    gen_a = ReplayGenerator("model-a", completions={
        "w1": [_hermes("get_weather", city="paris"),                     # correct after normalisation: dropped
               _hermes("get_weather", city="Rome"),                      # duplicate of model-b's first (normalised)
               '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>'],  # unparsable: over k=3
        "n1": ["Sorry, no tool can tell jokes.",                          # abstaining is right: dropped
               _hermes("get_time", city="Paris")]})                      # any call is wrong
    gen_b = ReplayGenerator("model-b", completions={
        "w1": [_hermes("get_weather", city="rome"),                      # wrong value
               _hermes("get_time", city="Paris"),                        # wrong function
               "It is sunny."],                                          # no call: kept before the unparsable one
        "n1": [_hermes("get_time", city="Paris")]})                      # duplicate of model-a's
    counts = Counter()
    pairs = generation_pairs([WEATHER, NO_TOOL], [gen_a, gen_b], GenerationSettings(n=3, negatives_per_example=3),
                             counts=counts)
    got = [(p.id, p.generator, p.error_type, p.rejected, p.rejected_text is not None) for p in pairs]
    assert got == [
        ("w1#g0", "model-b", "value_error:string", [ToolCall("get_weather", {"city": "rome"})], False),
        ("w1#g1", "model-b", "simple_function_checker:wrong_func_name", [ToolCall("get_time", {"city": "Paris"})], False),
        ("w1#g2", "model-b", "simple_function_checker:wrong_count", [], True),  # parsed failures fill k first
        ("n1#g0", "model-b", "simple_function_checker:wrong_count", [ToolCall("get_time", {"city": "Paris"})], False),
    ]
    assert all(p.chosen == ex.gold and p.source == ex.source for p, ex in zip(pairs, [WEATHER] * 3 + [NO_TOOL]))
    assert pairs[2].rejected_text == "It is sunny."
    assert dict(counts) == {"n_outputs": 9, "n_correct": 2, "n_duplicate": 2, "n_unparsable": 1, "n_over_cap": 1}
    # rows in the ToolRM-train-data schema plus error_type
    row = pairs[0].to_toolrm_train()
    assert set(row) >= {"uuid", "dataset_name", "conversation", "tools", "tool_calls_correct", "tool_calls_incorrect",
                        "generator_model", "error_type"}


def _small_cfg(out, **over):
    args = [f"output_dir={out}", "sources=[bfcl_exec,bfcl_sql,nestful]", "max_examples=60", "shard_size=12",
            "show_progress=false", "obfuscation.enabled=true", "obfuscation.keep_original=true"]
    return load_config(RECIPES / "cpu_default.yaml", args + [f"{k}={v}" for k, v in over.items()])


def _replay_file(tmp_path, cfg) -> str:
    """Completions for every query of the run: the gold (correct), a near miss, garbage and a text answer."""
    path = tmp_path / "completions.jsonl"
    queries = synth._expand(synth.load_examples(cfg), cfg.obfuscation, cfg.seed)
    with open(path, "w") as f:
        for ex in queries:
            wrong = [ToolCall(c.name, {**c.arguments, "__extra": 1}) for c in ex.gold]
            f.write(json.dumps({"id": ex.id, "completions": [to_hermes(ex.gold), to_hermes(wrong), "<tool_call>{oops",
                                                             "I cannot do that."]}) + "\n")
    return str(path)


def test_ray_local_run_equals_single_process_run(tmp_path):
    ray = pytest.importorskip("ray")
    base = _small_cfg(tmp_path / "probe")
    gen = f"[{{kind: replay, name: replayed, path: {_replay_file(tmp_path, base)}}}]"
    local = synthesize(_small_cfg(tmp_path / "local", **{"generation.generators": gen, "generation.n": 4}))
    try:
        ray.init(num_cpus=2, include_dashboard=False)
        remote = synthesize(_small_cfg(tmp_path / "ray", **{"generation.generators": gen, "generation.n": 4,
                                                            "ray.enabled": "true"}))
    finally:
        ray.shutdown()
    rows = local.pairs_file.read_text().splitlines()
    assert rows and rows == remote.pairs_file.read_text().splitlines()
    by_gen = local.summary["by_generator"]
    assert by_gen["replayed"] > 0 and any(k.startswith("mutation:") for k in by_gen)
    assert local.summary["by_error_type"]["ast_decoder:decoder_failed"] > 0
    assert local.summary["n_correct"] > 0  # the replayed gold answers were judged correct and dropped


class _Killed(Exception):
    """Stands in for a crash or a kill in the middle of a run."""


def test_interrupted_run_resumes_to_the_same_output(tmp_path, monkeypatch):
    whole = synthesize(_small_cfg(tmp_path / "whole"))
    real = synth.run_shard
    calls = []
    armed = [True]

    def failing(examples, cfg, generators=()):
        calls.append(examples[0].id)
        if armed[0] and len(calls) == 3:
            armed[0] = False
            raise _Killed("killed during shard 2")
        return real(examples, cfg, generators)

    monkeypatch.setattr(synth, "run_shard", failing)
    out = tmp_path / "resumed"
    with pytest.raises(_Killed):
        synthesize(_small_cfg(out))
    assert sorted(p.name for p in out.glob("shard-*.jsonl")) == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert not list(out.glob(".*tmp*"))  # no partial files
    calls.clear()
    resumed = synthesize(_small_cfg(out))
    assert len(calls) == whole.summary["n_shards"] - 2  # finished shards were skipped
    assert resumed.pairs_file.read_text() == whole.pairs_file.read_text()
    assert resumed.summary["n_pairs"] == whole.summary["n_pairs"] > 0


_KILLED_WRITER = """
import os, signal, sys
from toolrm_rl.data.records import save_pairs

def rows():  # save_pairs has opened its temporary file when it asks for the rows
    os.kill(os.getpid(), signal.SIGKILL)
    yield from ()

save_pairs(rows(), sys.argv[1])
"""


def test_a_rerun_removes_the_temporary_files_of_a_killed_run(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    out.mkdir()
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(out / "shard-00001.jsonl")])
    assert killed.returncode == -9
    left = list(out.glob(".shard-*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size == 0  # what a kill during a shard write leaves
    live = out / f".summary.json.{os.getppid()}.tmp"  # a writer that is still running keeps its file
    live.write_text("")
    result = synthesize(_small_cfg(out, max_examples=24))
    assert result.summary["n_pairs"] > 0
    assert sorted(p.name for p in out.glob(".*tmp*")) == [live.name]


def test_different_config_in_same_dir_is_refused_unless_forced(tmp_path):
    out = tmp_path / "run"
    synthesize(_small_cfg(out, max_examples=24))
    with pytest.raises(ValueError, match="different config_hash.*--force"):
        synthesize(_small_cfg(out, max_examples=24, **{"mutations.negatives_per_example": 1}))
    with pytest.raises(ValueError, match="generation.format"):
        synthesize(_small_cfg(out, max_examples=24, **{"generation.format": "xml"}))
    result = synthesize(_small_cfg(out, max_examples=24, **{"mutations.negatives_per_example": 1}), force=True)
    records, _ = load_pairs(result.pairs_file)
    assert Counter(r.id.rsplit("#", 1)[0] for r in records).most_common(1)[0][1] == 1


def test_cpu_recipe_composes_and_runs_on_a_subset_via_cli(tmp_path):
    out = tmp_path / "cpu"
    runner = CliRunner()
    printed = runner.invoke(app, ["synth", str(RECIPES / "cpu_default.yaml"), "--print-config", "max_examples=30"])
    assert printed.exit_code == 0, printed.output
    assert "max_examples: 30" in printed.output and "generators: []" in printed.output
    result = runner.invoke(app, ["synth", str(RECIPES / "cpu_default.yaml"), "max_examples=30", f"output_dir={out}",
                                 "show_progress=false"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    records, report = load_pairs(out / "pairs.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert len(records) == summary["n_pairs"] > 30 and report.n_skipped == 0
    assert all(r.generator.startswith("mutation:") and r.error_type for r in records)
    assert all(not r.source.startswith(("bfcl_simple", "bfcl_live", "bfcl_parallel", "bfcl_multiple")) for r in records)
    assert (out / "summary.md").read_text().startswith("| total |") and (out / "summary.png").stat().st_size > 0
    assert "error category" in result.output
    bad = runner.invoke(app, ["synth", str(RECIPES / "cpu_default.yaml"), "nonexistent_key=1"])
    assert bad.exit_code != 0 and "nonexistent_key" in bad.output


def test_cpu_recipe_is_the_quickstarts_synthesis_without_complexfuncbench(tmp_path):
    from toolrm_rl.quickstart import QuickstartConfig, synth_config

    recipe = load_config(RECIPES / "cpu_default.yaml")
    assert "complexfuncbench" not in recipe.sources and "nestful" in recipe.sources
    quick = synth_config(QuickstartConfig(out=str(tmp_path)), tmp_path)
    assert quick.sources == recipe.sources  # one list: the quickstart reads the recipe's
    assert quick.output_dir == str(tmp_path / "synth")
    chosen = synth_config(QuickstartConfig(out=str(tmp_path), synth_sources=["nestful"]), tmp_path)
    assert chosen.sources == ["nestful"]


def test_gpu_pool_recipe_resolves():
    cfg = load_config(RECIPES / "gpu_pool.yaml")
    assert cfg.obfuscation.enabled and cfg.generation.negatives_per_example == 3 and cfg.generation.n == 4
    assert {g["kind"] for g in cfg.generation.generators} == {"vllm"} and len(cfg.generation.generators) >= 5
    assert {s["name"] for s in cfg.sources if isinstance(s, dict)} == {"xlam", "xlam_irrelevance", "sgd"}


def test_transformers_generator_through_the_pipeline(tmp_path):
    cfg = load_config(None, [f"output_dir={tmp_path / 'tf'}", "sources=[bfcl_exec]", "max_examples=3",
                             "show_progress=false", "mutations.enabled=false", "generation.n=2",
                             "generation.max_tokens=6", "generation.temperature=1.0",
                             f"generation.generators=[{{kind: transformers, model: 'embedded:qwen3-tiny', "
                             f"name: tiny, device: cpu, cache_dir: '{tmp_path}'}}]"])
    result = synthesize(cfg)
    assert result.summary["n_outputs"] == 6
    records, _ = load_pairs(result.pairs_file)
    # random weights never produce the gold call: every distinct output is a labelled negative
    assert records and all(r.generator == "tiny" and r.error_type for r in records)
    assert len(records) == 6 - result.summary.get("n_duplicate", 0)
