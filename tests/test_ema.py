"""The weight average saved by train.ema_decay: its arithmetic, its checkpoint file and resume."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from toolrm_rl.model.ema import EMA_FILE, ema_callback

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _args(tmp_path, warmup=0):
    return SimpleNamespace(output_dir=str(tmp_path), get_warmup_steps=lambda steps: warmup)


def _run(cb, model, tmp_path, values, warmup=0, start=0):
    state = SimpleNamespace(global_step=start, max_steps=10)
    cb.on_train_begin(_args(tmp_path, warmup), state, None, model=model)
    for v in values:
        with torch.no_grad():
            model.weight.fill_(v)
        state.global_step += 1
        cb.on_step_end(_args(tmp_path, warmup), state, None, model=model)
    return state


def test_the_average_is_the_exponential_average_of_the_weights_after_warmup(tmp_path):
    model = torch.nn.Linear(2, 1, bias=False)
    cb = ema_callback(0.5)
    _run(cb, model, tmp_path, [9.0, 1.0, 2.0, 4.0], warmup=2)  # steps 1..4; the average starts at step 2
    expected = 0.5 * (0.5 * 1.0 + 0.5 * 2.0) + 0.5 * 4.0  # 1.0, then 1.5, then 2.75: step 1 (9.0) is warm-up
    assert cb.apply(model) == 3
    assert torch.allclose(model.weight, torch.full_like(model.weight, expected))


def test_the_average_is_saved_with_each_checkpoint_and_a_resumed_run_continues_it(tmp_path):
    model = torch.nn.Linear(2, 1, bias=False)
    cb = ema_callback(0.5)
    state = _run(cb, model, tmp_path, [2.0, 4.0])  # 2.0, then 3.0
    cb.on_save(_args(tmp_path), state, None)
    saved = load_file(str(tmp_path / "checkpoint-2" / EMA_FILE))
    assert torch.allclose(saved["weight"], torch.full((1, 2), 3.0))
    resumed = ema_callback(0.5)
    _run(resumed, model, tmp_path, [5.0], start=2)  # continues from 3.0, not from the weights
    resumed.apply(model)
    assert torch.allclose(model.weight, torch.full_like(model.weight, 4.0))


def test_no_average_leaves_the_model_alone_and_a_bad_decay_is_refused(tmp_path):
    model = torch.nn.Linear(2, 1, bias=False)
    before = model.weight.detach().clone()
    assert ema_callback(0.9).apply(model) == 0 and torch.equal(model.weight, before)
    with pytest.raises(ValueError, match="ema_decay"):
        ema_callback(1.0)


def test_training_with_ema_saves_the_averaged_weights(tmp_path):
    from test_train import RECIPES, _overrides, learnable_pairs
    from toolrm_rl.data.records import save_pairs
    from toolrm_rl.model.train import load_config, train

    train_file = save_pairs(learnable_pairs(24, seed=0), tmp_path / "train.jsonl")
    out = tmp_path / "run"
    cfg = load_config(RECIPES / "minilm_cpu.yaml", _overrides(out, train_file, train_file, **{
        "train.max_steps": 3, "train.save_steps": 1, "data.eval_files": "[]", "train.ema_decay": 0.5,
        "train.per_device_train_batch_size": 2}))
    result = train(cfg)
    assert result.metrics["ema_steps"] == 3
    average = load_file(str(out / "checkpoint-3" / EMA_FILE))
    final = load_file(str(result.final_dir / "model.safetensors"))
    last = load_file(str(out / "checkpoint-3" / "model.safetensors"))
    name = next(k for k in average if k.endswith("classifier.weight"))
    final_name = next(k for k in final if k.endswith("classifier.weight"))
    assert torch.allclose(final[final_name], average[name])  # the saved model is the average ...
    assert not torch.allclose(final[final_name], last[final_name])  # ... not the last step's weights
    assert json.loads((out / "metrics.json").read_text())["ema_steps"] == 3
