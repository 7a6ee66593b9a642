"""RemoteScorer against fake servers on loopback: what it sends, and that every fault (server down,
slow, 5xx, 4xx, malformed/garbage/wrong-length/NaN/huge replies) ends as ScorerUnavailable, promptly;
retries, chunking, the circuit breaker (fake clock), the vLLM /classify protocol, async, pickling."""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import threading
import time

import pytest
from loopback import LoopbackServer

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.render import RenderSpec, RMExample, render_example
from toolrm_rl.scoring import ScorerUnavailable, get_scorer
from toolrm_rl.scoring.remote import CircuitBreaker, RemoteScorer

TOOLS = [{"name": "f", "description": "Adds.", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}},
                                                               "required": ["x"]}}]
CONV = [{"role": "user", "content": "f of 1"}]


def ex(x):
    return RMExample(TOOLS, CONV, [ToolCall("f", {"x": x})])


EXS = [ex(1), ex(2), RMExample(ToolCatalog.load(TOOLS), CONV, [], text="No.")]


def score_route(body, headers):
    """A correct /score (items, or one context with candidates): a score is the first call's x (0 without a call)."""
    entries = body["items"] if "items" in body else body["candidates"]
    return 200, {"scores": [float(it["calls"][0]["arguments"]["x"]) if it["calls"] else 0.0 for it in entries]}


def fixed(status, payload):
    return lambda body, headers: (status, payload)


def fast(url, **kw):
    return RemoteScorer(url, **{"timeout_s": 2.0, "retries": 1, "backoff_s": 0.01, **kw})


def closed_port_url():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


# ------------------------------------------------------------------ the happy paths
def test_score_sends_items_and_token_and_chunks_at_max_batch():
    other = RMExample(TOOLS, [{"role": "user", "content": "f of 3"}], [ToolCall("f", {"x": 3})])
    with LoopbackServer({("POST", "/score"): score_route}) as srv:
        scorer = fast(srv.url + "/", token="tok", max_batch=2)
        assert scorer.score([EXS[0], other, EXS[2]]) == [1.0, 3.0, 0.0]
        assert scorer.score([]) == []
    assert [len(r["body"]["items"]) for r in srv.requests] == [2, 1]
    item = srv.requests[0]["body"]["items"][0]
    assert item == {"tools": TOOLS, "conversation": CONV, "calls": [{"name": "f", "arguments": {"x": 1}}]}
    last = srv.requests[1]["body"]["items"][0]
    assert last["calls"] == [] and last["text"] == "No." and last["tools"][0]["name"] == "f"  # a catalog is sent as dicts
    assert srv.requests[0]["headers"]["Authorization"] == "Bearer tok"


def test_one_prompts_candidates_are_sent_as_one_context():
    """Examples sharing tools and conversation (a GRPO group) travel as {tools, conversation, candidates}."""
    with LoopbackServer({("POST", "/score"): score_route}) as srv:
        assert fast(srv.url).score(EXS) == [1.0, 2.0, 0.0]  # EXS[2]'s catalog equals TOOLS as dicts
    body = srv.requests[0]["body"]
    assert set(body) == {"tools", "conversation", "candidates"} and body["tools"] == TOOLS and body["conversation"] == CONV
    assert body["candidates"] == [{"calls": [{"name": "f", "arguments": {"x": 1}}]},
                                  {"calls": [{"name": "f", "arguments": {"x": 2}}]}, {"calls": [], "text": "No."}]


def test_token_from_env_and_registry(monkeypatch):
    monkeypatch.setenv("TOOLRM_SERVE_TOKEN", "envtok")
    scorer = get_scorer("remote", url="http://127.0.0.1:1")
    assert isinstance(scorer, RemoteScorer) and scorer.name == "remote" and scorer.token == "envtok"


def test_async_score_and_pickle_round_trip():
    with LoopbackServer({("POST", "/score"): score_route}) as srv:
        scorer = fast(srv.url, max_batch=1)
        assert asyncio.run(scorer.ascore(EXS)) == [1.0, 2.0, 0.0]
        clone = pickle.loads(pickle.dumps(scorer))  # for Ray workers: no live client or lock inside
        assert clone.score(EXS[:2]) == [1.0, 2.0] and clone.url == scorer.url


def test_vllm_api_renders_locally_and_reads_probs_in_index_order():
    spec = RenderSpec(mode="plain", max_tokens=None)

    def classify(body, headers):
        data = [{"index": i, "label": "LABEL_0", "probs": [0.5, float(len(t))], "num_classes": 2}
                for i, t in enumerate(body["input"])]
        return 200, {"object": "list", "data": list(reversed(data))}  # out of order on purpose

    with LoopbackServer({("POST", "/classify"): classify}) as srv:
        scorer = fast(srv.url, api="vllm", model="my-rm", render_spec=spec)
        texts = [render_example(e, spec=spec).text for e in EXS]
        assert scorer.score(EXS) == [float(len(t)) for t in texts]
    assert srv.requests[0]["body"] == {"model": "my-rm", "input": texts}


def test_vllm_api_needs_a_render_spec():
    with pytest.raises(ValueError, match="renders locally"):
        RemoteScorer("http://x", api="vllm", model="not-a-dir")
    with pytest.raises(ValueError, match="needs tokenizer"):
        RemoteScorer("http://x", api="vllm", render_spec={"mode": "chat_template"})
    with pytest.raises(ValueError, match="api"):
        RemoteScorer("http://x", api="grpc")


# ------------------------------------------------------------------ faults: always ScorerUnavailable
def _raises(scorer, match, examples=EXS[:2]):
    t0 = time.monotonic()
    with pytest.raises(ScorerUnavailable, match=match):
        scorer.score(examples)
    with pytest.raises(ScorerUnavailable, match=match):
        asyncio.run(scorer.ascore(examples))
    return time.monotonic() - t0


def test_server_down():
    _raises(fast(closed_port_url(), breaker_failures=100), "ConnectError")


def test_slow_server_times_out_and_is_retried():
    def slow(body, headers):
        time.sleep(1.5)
        return 200, {"scores": [0.0, 0.0]}

    with LoopbackServer({("POST", "/score"): slow}) as srv:
        _raises(fast(srv.url, timeout_s=0.3, retries=1, breaker_failures=100), "after 2 attempts")
        assert len(srv.requests) == 4  # sync and async, each tried twice


def test_trickling_server_hits_the_deadline():
    def trickle(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "400")
        handler.end_headers()
        try:
            for _ in range(40):  # 10 bytes every 0.1 s: every read is quick, the whole answer is not
                handler.wfile.write(b" " * 10)
                handler.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    with LoopbackServer({("POST", "/score"): lambda b, h: (200, trickle)}) as srv:
        _raises(fast(srv.url, timeout_s=0.5, retries=0, breaker_failures=100), "within 0.5s")


def test_http_500_is_retried_then_unavailable():
    with LoopbackServer({("POST", "/score"): fixed(500, {"error": "boom"})}) as srv:
        _raises(fast(srv.url, retries=2, breaker_failures=100), r"HTTP 500.*boom.*after 3 attempts")
    assert len(srv.requests) == 6


def test_http_4xx_is_not_retried_and_does_not_trip_the_breaker():
    with LoopbackServer({("POST", "/score"): fixed(422, {"error": {"message": "items[0].calls: bad"}})}) as srv:
        scorer = fast(srv.url, retries=3, breaker_failures=1)
        _raises(scorer, r"HTTP 422.*items\[0\].calls")
        assert len(srv.requests) == 2 and scorer.breaker.state == "closed"


@pytest.mark.parametrize("payload, match", [
    (b"{not json", "not valid JSON"),
    (b"\x00\xff garbage", "not valid JSON"),
    ({"result": [1, 2]}, "no 'scores' list"),
    ([1.0, 2.0], "no 'scores' list"),
    ({"scores": [1.0]}, "1 scores for 2 inputs"),
    ({"scores": [1.0, 2.0, 3.0]}, "3 scores for 2 inputs"),
    ({"scores": [1.0, "2"]}, "score 1 is not a finite number"),
    ({"scores": [True, 1.0]}, "score 0 is not a finite number"),
    ({"scores": [None, 1.0]}, "score 0 is not a finite number"),
    (b'{"scores": [NaN, 1.0]}', "score 0 is not a finite number"),
    (b'{"scores": [1.0, Infinity]}', "score 1 is not a finite number"),
])
def test_bad_replies(payload, match):
    with LoopbackServer({("POST", "/score"): fixed(200, payload)}) as srv:
        _raises(fast(srv.url, breaker_failures=100), match)


@pytest.mark.parametrize("payload, match", [
    ({"data": [{"index": 0, "probs": []}, {"index": 1, "probs": [1.0]}]}, "score 0 is not a finite number"),
    ({"data": [{"index": 0, "probs": [1.0]}]}, "1 scores for 2 inputs"),
    ({"data": "x"}, "no 'data' list"),
])
def test_bad_vllm_replies(payload, match):
    with LoopbackServer({("POST", "/classify"): fixed(200, payload)}) as srv:
        _raises(fast(srv.url, api="vllm", render_spec=RenderSpec(), breaker_failures=100), match)


def test_huge_replies_are_refused_without_retry():
    huge = json.dumps({"scores": [0.0, 0.0], "pad": "x" * 3_000_000}).encode()

    def no_length(handler):  # streamed until close: no Content-Length to check up front
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Connection", "close")
        handler.end_headers()
        try:
            for k in range(0, len(huge), 65536):
                handler.wfile.write(huge[k:k + 65536])
        except OSError:
            pass
        handler.close_connection = True

    with LoopbackServer({("POST", "/score"): fixed(200, huge)}) as srv:
        _raises(fast(srv.url, max_response_mb=1, retries=2, breaker_failures=100), "larger than 1048576 bytes")
        assert len(srv.requests) == 2  # one attempt each for sync and async: the same answer would come back
    with LoopbackServer({("POST", "/score"): lambda b, h: (200, no_length)}) as srv:
        _raises(fast(srv.url, max_response_mb=1, retries=0, breaker_failures=100), "larger than")


# ------------------------------------------------------------------ circuit breaker
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_breaker_opens_fails_fast_then_half_opens():
    health = {"ok": False}

    def route(body, headers):
        return score_route(body, headers) if health["ok"] else (503, {"error": "down"})

    with LoopbackServer({("POST", "/score"): route}) as srv:
        scorer = fast(srv.url, retries=0, breaker_failures=2, breaker_reset_s=30)
        clock = scorer.breaker.clock = FakeClock()
        for _ in range(2):
            with pytest.raises(ScorerUnavailable, match="HTTP 503"):
                scorer.score(EXS[:1])
        assert scorer.breaker.state == "open" and len(srv.requests) == 2
        with pytest.raises(ScorerUnavailable, match="circuit breaker open"):
            scorer.score(EXS[:1])
        with pytest.raises(ScorerUnavailable, match="circuit breaker open"):
            asyncio.run(scorer.ascore(EXS[:1]))
        assert len(srv.requests) == 2  # failed fast: nothing was sent

        clock.now = 31.0  # half-open: one probe; it fails, so the breaker re-opens at once
        assert scorer.breaker.state == "half-open"
        with pytest.raises(ScorerUnavailable, match="HTTP 503"):
            scorer.score(EXS[:1])
        assert scorer.breaker.state == "open" and len(srv.requests) == 3

        clock.now = 62.0  # the next probe succeeds: closed again
        health["ok"] = True
        assert scorer.score(EXS[:1]) == [1.0]
        assert scorer.breaker.state == "closed" and scorer.breaker.consecutive == 0


def test_half_open_lets_one_probe_through():
    breaker = CircuitBreaker(failures=1, reset_s=10, clock=FakeClock())
    breaker.failure()
    breaker.clock.now = 11
    breaker.before_call()  # the probe
    with pytest.raises(ScorerUnavailable, match="probe request is in flight"):
        breaker.before_call()
    breaker.success()
    breaker.before_call()  # closed


def test_concurrent_calls_share_the_pooled_client():
    with LoopbackServer({("POST", "/score"): score_route}) as srv:
        scorer = fast(srv.url)
        out, errors = [], []

        def run():
            try:
                out.append(scorer.score(EXS[:2]))
            except Exception as err:  # pragma: no cover - reported below
                errors.append(err)

        threads = [threading.Thread(target=run) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors and out == [[1.0, 2.0]] * 8
