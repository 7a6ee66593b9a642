"""ToolRM training on CPU: a learnable pair task, checkpoints, LoRA, resume, time budget, truncation."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.render import RenderSpec
from toolrm_rl.core.toolrm_json import read_toolrm_json
from toolrm_rl.data.records import PairRecord, save_pairs
from toolrm_rl.model import ToolRM
from toolrm_rl.data.backbones import minilm_dir, qwen3_tokenizer_dir
from toolrm_rl.model.train import (build_pairs, checkpoint_problem, last_complete_checkpoint, load_config,
                                   query_key, reward_config, tokenize_pairs, train)

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "rm"

TOOLS = ToolCatalog.load([
    {"name": "get_weather", "description": "Weather for a city.", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}},
    {"name": "get_time", "description": "Local time in a city.", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}},
])
CITIES = ["Paris", "Lyon", "Berlin", "Madrid", "Rome", "Oslo", "Vienna", "Prague", "Lisbon", "Dublin", "Athens", "Warsaw"]


def learnable_pairs(n: int, seed: int) -> list[PairRecord]:
    """Weather questions: the right answer calls get_weather with the asked city, the wrong one get_time."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        city = rng.choice(CITIES)
        conv = [{"role": "user", "content": f"What's the weather like in {city} today?"}]
        pairs.append(PairRecord(id=f"w{seed}-{i}", tools=TOOLS, conversation=conv,
                                chosen=[ToolCall("get_weather", {"city": city})],
                                rejected=[ToolCall("get_time", {"city": city})], error_type="wrong_func_name"))
    return pairs


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: OpenMP threads only contend on a shared 2-core machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    train_file = save_pairs(learnable_pairs(96, seed=0), root / "train.jsonl")
    eval_file = save_pairs(learnable_pairs(40, seed=1), root / "eval.jsonl")
    return train_file, eval_file


def _overrides(out: Path, train_file: Path, eval_file: Path, **extra) -> list[str]:
    base = {"model.name_or_path": "embedded:minilm", "model.render.max_tokens": 64, "data.sources": "[]",
            "data.train_files": f"[{train_file}]", "data.eval_files": f"[{eval_file}]", "train.output_dir": str(out),
            "train.report_to": "none", "train.learning_rate": 1e-4, "train.per_device_train_batch_size": 8,
            "train.warmup_ratio": 0.0, "train.logging_steps": 5, "train.eval_steps": "null", "train.save_steps": 100}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def test_learnable_task_loss_falls_and_heldout_accuracy_high(pair_files, tmp_path):
    cfg = load_config(RECIPES / "minilm_cpu.yaml", _overrides(tmp_path / "run", *pair_files, **{"train.max_steps": 24}))
    result = train(cfg)
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert result.metrics["eval"]["eval_accuracy"] > 0.95
    assert result.metrics["eval"]["eval_loss"] < 0.5
    assert history["data"]["n_train"] == 96 and history["data"]["n_eval"] == 40
    # the final checkpoint is plain HF + toolrm.json, and ToolRM ranks held-out pairs the same way
    final = result.final_dir
    assert AutoModelForSequenceClassification.from_pretrained(final).config.num_labels == 1
    saved = read_toolrm_json(final)
    assert saved["backbone"] == "encoder" and saved["render"]["max_tokens"] == 64
    rm = ToolRM.from_pretrained(final)
    pairs = learnable_pairs(20, seed=5)
    scores = rm.score_pairs([(p.chosen_example(), p.rejected_example()) for p in pairs])
    assert sum(c > r for c, r in scores) >= 19


def test_time_budget_stops_and_resume_continues(pair_files, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(RECIPES / "minilm_cpu.yaml", _overrides(out, *pair_files, **{
        "train.max_steps": 50, "train.max_minutes": 1e-4, "train.save_steps": 1, "data.eval_files": "[]"}))
    train(cfg)
    state = json.loads(sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
                       .joinpath("trainer_state.json").read_text())
    assert state["global_step"] == 1  # stopped by the budget after the first step, with a save
    cfg = load_config(RECIPES / "minilm_cpu.yaml", _overrides(out, *pair_files, **{
        "train.max_steps": 3, "train.save_steps": 1, "data.eval_files": "[]"}))
    result = train(cfg)
    assert result.metrics["train"]["train_runtime"] >= 0
    last = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert last == 3  # resumed from step 1, not restarted


class _Killed(Exception):
    """Stands in for a kill in the middle of writing a checkpoint."""


def test_a_run_killed_while_saving_resumes_from_the_newest_complete_checkpoint(pair_files, tmp_path, monkeypatch, caplog):
    import logging

    from transformers import Trainer

    extra = {"train.max_steps": 2, "train.save_steps": 1, "train.save_total_limit": 3, "data.eval_files": "[]",
             "train.logging_steps": 1}
    whole = train(load_config(RECIPES / "minilm_cpu.yaml", _overrides(tmp_path / "whole", *pair_files, **extra)))

    out = tmp_path / "run"
    real = Trainer._save_rng_state

    def killed_at_step_2(self, output_dir):  # after weights, optimizer and scheduler; before trainer_state.json
        if self.state.global_step == 2:
            raise _Killed(output_dir)
        return real(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", killed_at_step_2)
    with pytest.raises(_Killed):
        train(load_config(RECIPES / "minilm_cpu.yaml", _overrides(out, *pair_files, **extra)))
    monkeypatch.undo()
    assert (out / "checkpoint-2" / "model.safetensors").exists()  # half-written: no trainer_state.json
    assert "trainer_state.json" in checkpoint_problem(out / "checkpoint-2")
    assert checkpoint_problem(out / "checkpoint-1") is None and not (out / "metrics.json").exists()

    with caplog.at_level(logging.WARNING, logger="toolrm_rl.model.train"):
        resumed = train(load_config(RECIPES / "minilm_cpu.yaml", _overrides(out, *pair_files, **extra)))
    assert f"resuming from {out / 'checkpoint-1'}" in caplog.text and "checkpoint-2 (no trainer_state.json" in caplog.text
    m = json.loads((out / "metrics.json").read_text())
    assert m["this_part"]["resumed_from"] == str(out / "checkpoint-1")
    assert [(p["start_step"], p["end_step"]) for p in m["parts"]] == [(0, 1), (1, 2)]  # continued, not restarted
    assert checkpoint_problem(out / "checkpoint-2") is None  # rewritten whole by the resumed part
    # the whole run counts both parts, as an uninterrupted run does
    w = whole.metrics
    assert m["train"]["global_step"] == w["train"]["global_step"] == 2
    assert m["train_tokens"] == w["train_tokens"] == sum(p["tokens"] for p in m["parts"]) > m["parts"][1]["tokens"] > 0
    # the loss of both parts: the mean of the logged step losses (step 1 logged before the kill)
    logged = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    step_losses = {h["step"]: h["loss"] for h in logged if "loss" in h}
    assert sorted(step_losses) == [1, 2]
    assert m["train"]["train_loss"] == pytest.approx(sum(step_losses.values()) / 2, rel=1e-4)
    assert m["this_part"]["train_loss"] == pytest.approx(step_losses[2] / 2, rel=1e-4)  # the Trainer's own: part 2 only
    assert m["train"]["train_runtime"] == pytest.approx(sum(p["seconds"] for p in m["parts"]), abs=0.01)
    assert m["train"]["train_runtime"] > m["parts"][1]["seconds"] and m["train_minutes"] * 60 >= m["parts"][0]["seconds"]
    assert resumed.metrics["train_tokens"] == m["train_tokens"]


def test_checkpoint_problem_names_what_is_incomplete(tmp_path):
    import shutil

    from safetensors.torch import save_file

    out = tmp_path / "run"
    good = out / "checkpoint-1"  # the files a Trainer save writes, small
    good.mkdir(parents=True)
    save_file({"w": torch.zeros(64, 64)}, str(good / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.zeros(64, 64)}}}, good / "optimizer.pt")
    torch.save({"last_epoch": 1}, good / "scheduler.pt")
    torch.save({"python": 1}, good / "rng_state.pth")
    (good / "config.json").write_text("{}")
    (good / "trainer_state.json").write_text(json.dumps({"global_step": 1, "log_history": []}))
    assert checkpoint_problem(good) is None and last_complete_checkpoint(out) == str(good)

    def broken(name, damage, renumber=True):
        ckpt = out / name
        shutil.copytree(good, ckpt)
        if renumber:  # a whole checkpoint of that step, then the damage
            state = json.loads((ckpt / "trainer_state.json").read_text())
            state["global_step"] = int(name.split("-")[1])
            (ckpt / "trainer_state.json").write_text(json.dumps(state))
            assert checkpoint_problem(ckpt) is None
        damage(ckpt)
        return checkpoint_problem(ckpt)

    def cut(file):
        return lambda ckpt: (ckpt / file).write_bytes((ckpt / file).read_bytes()[:(ckpt / file).stat().st_size // 2])

    assert "model.safetensors: truncated" in broken("checkpoint-2", cut("model.safetensors"))
    assert "optimizer.pt: incomplete" in broken("checkpoint-3", cut("optimizer.pt"))
    assert "trainer_state.json unreadable" in broken("checkpoint-4", cut("trainer_state.json"))
    assert "global_step 1" in broken("checkpoint-5", lambda ckpt: None, renumber=False)  # another step's state
    assert "no model weights" in broken("checkpoint-6", lambda ckpt: (ckpt / "model.safetensors").unlink())
    assert "scheduler.pt" in broken("checkpoint-7", lambda ckpt: (ckpt / "scheduler.pt").unlink())
    assert last_complete_checkpoint(out) == str(good)  # every newer one is incomplete
    assert last_complete_checkpoint(tmp_path / "nothing") is None


def test_train_files_alone_get_a_query_split_held_out_share(tmp_path):
    from dataclasses import replace

    from toolrm_rl.model.train import DataConfig

    pairs = [replace(p, id=f"q{i // 6}{'@obf1' if i % 2 else ''}#{i % 3}")  # 40 queries, each with copies
             for i, p in enumerate(learnable_pairs(240, seed=3))]
    path = save_pairs(pairs, tmp_path / "pairs.jsonl")
    cfg = DataConfig(sources=[], train_files=[str(path)], eval_fraction=0.1)
    train_pairs, eval_pairs, report = build_pairs(cfg)
    held = {query_key(p.id) for p in eval_pairs}
    assert len(held) == 4 and report["n_eval"] == len(eval_pairs) == 24  # eval_fraction of the queries
    assert not held & {query_key(p.id) for p in train_pairs} and len(train_pairs) + len(eval_pairs) == 240
    assert build_pairs(replace(cfg, file_eval_fraction=0.25))[2]["n_eval"] == 60  # an explicit share wins
    # held-out files given: the training files are all trained on (unless a share is asked for)
    with_eval = replace(cfg, eval_files=[str(path)])
    assert build_pairs(with_eval)[2]["n_train"] == 240
    assert build_pairs(replace(with_eval, file_eval_fraction=0.1))[2]["n_train"] == 216


def test_source_temperature_draws_small_sources_more_and_keeps_queries_whole(tmp_path):
    from dataclasses import replace

    from toolrm_rl.model.train import DataConfig

    # 90 queries of a large source, 10 of a small one, 3 pairs each
    pairs = [replace(p, id=f"q{i // 3}#{i % 3}", source="big" if i // 3 < 90 else "small")
             for i, p in enumerate(learnable_pairs(300, seed=5))]
    path = save_pairs(pairs, tmp_path / "pairs.jsonl")
    cfg = DataConfig(sources=[], train_files=[str(path)], file_eval_fraction=0.0, max_train_pairs=60)

    def small_share(temperature):
        shares = []
        for seed in range(8):
            train_pairs, _, report = build_pairs(replace(cfg, seed=seed, source_temperature=temperature))
            groups = {}
            for pair in train_pairs:
                groups.setdefault(query_key(pair.id), []).append(pair)
            assert len(train_pairs) == 60 and all(len(g) == 3 for g in groups.values())  # whole queries
            if temperature is not None:
                assert sum(report["train_by_source"].values()) == 60
            shares.append(sum(p.source == "small" for p in train_pairs) / 60)
        return sum(shares) / len(shares)

    uniform, flat = small_share(None), small_share(0.0)
    assert uniform < 0.2 < 0.3 < flat  # 10% of the pairs in proportion, a third or more with sources alike
    # no cap: every pair is kept, whatever the temperature
    everything = build_pairs(replace(cfg, max_train_pairs=None, source_temperature=0.5))[0]
    assert sorted(p.id for p in everything) == sorted(p.id for p in pairs)


def test_lora_training_saves_adapter_with_head_and_merged_model(pair_files, tmp_path, monkeypatch):
    out = tmp_path / "lora"
    cfg = load_config(RECIPES / "qwen3_tiny_test.yaml", _overrides(out, *pair_files, **{
        "model.name_or_path": "embedded:qwen3-tiny", "model.render.max_tokens": 512, "lora.enabled": True,
        "lora.r": 4, "lora.alpha": 8, "train.max_steps": 2, "data.eval_files": "[]", "train.learning_rate": 1e-3}))
    result = train(cfg)
    adapter = out / "adapter"
    assert (adapter / "adapter_config.json").exists() and read_toolrm_json(adapter)["backbone"] == "decoder"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert "score" in config["modules_to_save"]
    assert len(config["modules_to_save"]) == len(set(config["modules_to_save"]))  # peft's duplicates removed
    assert config["base_model_name_or_path"] == "embedded:qwen3-tiny"  # portable: no path of this machine
    merged = ToolRM.from_pretrained(result.final_dir)
    monkeypatch.chdir(tmp_path)  # where the adapter's embedded base is built
    with_adapter = ToolRM.from_pretrained(adapter)
    ex = learnable_pairs(3, seed=9)
    examples = [e for p in ex for e in (p.chosen_example(), p.rejected_example())]
    assert merged.score(examples) == pytest.approx(with_adapter.score(examples), abs=1e-4)


def test_tokenize_pairs_never_drops_or_loses_the_candidate():
    long_turn = "please " * 2000 + "what is the weather in Oslo?"
    pair = PairRecord(id="long", tools=TOOLS, conversation=[{"role": "user", "content": long_turn}],
                      chosen=[ToolCall("get_weather", {"city": "Oslo"})], rejected=[ToolCall("get_time", {"city": "Oslo"})])
    from transformers import AutoTokenizer

    bert = AutoTokenizer.from_pretrained(minilm_dir())
    ds, cut = tokenize_pairs([pair], bert, RenderSpec(mode="plain", max_tokens=64, sep=" [SEP] "), 64)
    assert len(ds) == 1 and cut == 2
    assert len(ds[0]["chosen_ids"]) == 64
    assert bert.decode(ds[0]["chosen_ids"], skip_special_tokens=True).startswith("call : [ 1 call, 1 / 1 asked ] get _ weather")

    qwen = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    ds, cut = tokenize_pairs([pair], qwen, RenderSpec(mode="chat_template", max_tokens=256), 256)
    assert len(ds) == 1 and cut == 2 and len(ds[0]["rejected_ids"]) == 256
    tail = qwen.decode(ds[0]["rejected_ids"][-40:])
    assert '"name": "get_time"' in tail and "Oslo" in tail


def test_config_defaults_recipe_and_overrides():
    cfg = load_config(RECIPES / "minilm_cpu.yaml", ["train.max_minutes=3", "data.negatives_per_example=2"])
    assert cfg.model.name_or_path == "embedded:minilm" and cfg.model.render["mode"] == "plain"
    assert cfg.train.max_minutes == 3 and cfg.data.negatives_per_example == 2
    assert cfg.train.trl["center_rewards_coefficient"] == 0.01
    with pytest.raises(Exception, match="nonexistent"):
        load_config(RECIPES / "minilm_cpu.yaml", ["train.nonexistent=1"])
    for recipe in RECIPES.glob("*.yaml"):
        first = recipe.read_text().splitlines()[0]
        assert first.startswith("#"), recipe
        assert "toolrm_rl.cli train" in recipe.read_text() or "toolrm train" in recipe.read_text(), recipe
        load_config(recipe)  # every shipped recipe resolves against the config dataclasses


def test_train_keys_that_are_trl_fields_pass_through_to_reward_config(tmp_path):
    cfg = load_config(RECIPES / "qwen3_8b.yaml", [f"train.output_dir={tmp_path}", "train.lr_scheduler_type=cosine",
                                                  "train.seed=7", "train.eval_steps=null", "train.logging_steps=3"])
    args = reward_config(cfg.train, bf16=False, evaluate=True, report_to=[])
    # the recipe's and the override's TRL keys as given, TRL_DEFAULTS where unset, TRL's own default otherwise
    assert (args.learning_rate, args.gradient_accumulation_steps, args.save_total_limit) == (5e-6, 8, 3)
    assert (args.lr_scheduler_type.value, args.logging_steps, args.seed) == ("cosine", 3, 7)
    assert args.fsdp_config["transformer_layer_cls_to_wrap"] == ["Qwen3DecoderLayer"]
    assert args.num_train_epochs == 1 and args.per_device_eval_batch_size == 8 and args.max_grad_norm == 1.0
    assert args.eval_strategy.value == "no" and args.max_length is None and args.output_dir == str(tmp_path)
    default = reward_config(load_config(None).train, bf16=False, evaluate=True, report_to=[])
    assert (default.learning_rate, default.save_steps, default.gradient_checkpointing) == (5e-5, 200, False)
    assert default.eval_strategy.value == "steps" and default.eval_steps == 100


@pytest.mark.parametrize("override, message", [
    ("train.learnin_rate=0.1", "train.learnin_rate: neither a ToolRM training setting nor a field of TRL's "
                               "RewardConfig (did you mean learning_rate?)"),
    ("train.learning_rate=fast", "train.learning_rate: expected float, got 'fast'"),
    ("train.max_steps=1.5", "train.max_steps: expected int, got 1.5"),
    ("train.eval_strategy=steps", "train.eval_strategy: set by ToolRM from train.eval_steps"),
    ("train.trl.seed=1", "train.trl.seed: a ToolRM setting; set train.seed"),
])
def test_a_bad_train_key_is_an_error_naming_it(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(RECIPES / "minilm_cpu.yaml", [override])


def test_wandb_goes_offline_without_credentials_and_push_to_hub_is_called(pair_files, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no credentials
    pushed = []
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    monkeypatch.setattr(PreTrainedModel, "push_to_hub", lambda self, repo, **kw: pushed.append(("model", repo)))
    monkeypatch.setattr(PreTrainedTokenizerBase, "push_to_hub", lambda self, repo, **kw: pushed.append(("tok", repo)))
    out = tmp_path / "run"
    cfg = load_config(RECIPES / "minilm_cpu.yaml", _overrides(out, *pair_files, **{
        "train.max_steps": 1, "data.eval_files": "[]", "train.report_to": "wandb", "train.push_to_hub": True,
        "train.hub_model_id": "me/toolrm-test"}))
    train(cfg)
    import os

    assert os.environ["WANDB_MODE"] == "offline"
    assert list((out / "wandb").glob("offline-run-*")), "no offline wandb run directory"
    assert pushed == [("model", "me/toolrm-test"), ("tok", "me/toolrm-test")]


def test_freeze_layers_trains_only_the_upper_blocks_and_the_head(pair_files, tmp_path):
    out = tmp_path / "run"
    before = ToolRM.from_pretrained(minilm_dir()).model.state_dict()
    cfg = load_config(RECIPES / "minilm_cpu.yaml", _overrides(out, *pair_files, **{
        "train.max_steps": 3, "train.freeze_layers": 4, "data.eval_files": "[]"}))
    result = train(cfg)
    after = AutoModelForSequenceClassification.from_pretrained(result.final_dir).state_dict()
    changed = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    assert not any(k.startswith("bert.embeddings.") or k.startswith(tuple(f"bert.encoder.layer.{i}." for i in range(4)))
                   for k in changed)
    assert any(k.startswith("bert.encoder.layer.5.") for k in changed) and any(k.startswith("classifier.") for k in changed)
    assert result.metrics["data"]["frozen_parameters"] > 11_000_000  # the word embeddings alone are 11.7M


def test_bench_train_step_prints_a_ratio_per_frozen_setting(capsys, load_bench):
    bench = load_bench("bench_train_step")
    assert bench.parse_settings("none, 0,3") == [None, 0, 3]
    bench.main(["--freeze", "none,2", "--rows", "2", "--tokens", "8", "--rounds", "2", "--threads", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["none", "2"] and rows[0][-1] == "1.00x"
    assert int(rows[1][1].replace(",", "")) < int(rows[0][1].replace(",", ""))  # fewer trainable weights


def test_a_bad_freeze_layers_fails_before_the_pairs_are_built(pair_files, tmp_path, monkeypatch):
    import toolrm_rl.model.train as train_module

    monkeypatch.setattr(train_module, "build_pairs", lambda cfg: pytest.fail("pairs built before the check"))
    cfg = load_config(RECIPES / "minilm_cpu.yaml", _overrides(tmp_path / "run", *pair_files, **{"train.freeze_layers": 7}))
    with pytest.raises(ValueError, match="freeze_layers: 7 blocks asked, BertModel has 6"):
        train(cfg)


def test_num_layers_trains_and_saves_a_cut_model_and_refuses_lora(pair_files, tmp_path, monkeypatch):
    import toolrm_rl.model.train as train_module

    cfg = load_config(RECIPES / "minilm_cpu.yaml", _overrides(tmp_path / "run", *pair_files, **{
        "model.num_layers": 2, "train.max_steps": 2}))
    result = train(cfg)
    saved = json.loads((result.final_dir / "config.json").read_text())
    assert saved["num_hidden_layers"] == 2
    assert len(ToolRM.from_pretrained(result.final_dir).model.bert.encoder.layer) == 2

    monkeypatch.setattr(train_module, "build_pairs", lambda cfg: pytest.fail("pairs built before the check"))
    cfg = load_config(RECIPES / "minilm_cpu.yaml", _overrides(tmp_path / "lora", *pair_files, **{
        "model.num_layers": 2, "lora.enabled": True}))
    with pytest.raises(ValueError, match="num_layers does not go with lora"):
        train(cfg)
