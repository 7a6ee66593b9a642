"""The LLM-as-judge scorer against a scripted fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import doctest
import re
import socket

import pytest
from loopback import LoopbackServer

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.render import RMExample
from toolrm_rl.data.records import PairRecord
from toolrm_rl.eval.fc_rewardbench import evaluate_pairs
from toolrm_rl.scoring import ScorerUnavailable, get_scorer
from toolrm_rl.scoring import judge as judge_module
from toolrm_rl.scoring.judge import JudgeConfig, JudgeScorer, format_candidate, judge_context, pairwise_messages

ROUTE = ("POST", "/v1/chat/completions")
TOOLS = [{"name": "get_weather", "description": "Current weather for a city.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name."}},
                         "required": ["city"]}}]
CONV = [{"role": "user", "content": "Weather in Paris?"}]
RIGHT = RMExample(TOOLS, CONV, [ToolCall("get_weather", {"city": "Paris"})])
WRONG = RMExample(TOOLS, CONV, [ToolCall("get_weather", {"city": "Rome"})])
NONE = RMExample(TOOLS, CONV, [], text="I cannot check the weather.")


def reply(content, logprobs=None):
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": "x", "logprob": 0.0, "top_logprobs": logprobs}]}
    return 200, {"id": "c", "object": "chat.completion", "choices": [choice]}


def prompt(body):
    return body["messages"][-1]["content"]


def answers(body):
    """(Answer A, Answer B) candidate lines of a pairwise prompt."""
    m = re.search(r"Answer A:\n(.*)\n\nAnswer B:\n(.*)\n\n", prompt(body))
    return m.group(1), m.group(2)


def scorer(srv, **kw):
    return JudgeScorer(**{"base_url": srv.url + "/v1", "model": "judge-model", "backoff": 0.01, "concurrency": 2, **kw})


def test_prompt_uses_the_core_renderers_formats():
    text = pairwise_messages(RIGHT, NONE)[-1]["content"]
    assert "user: Weather in Paris?" in text
    assert "function get_weather: Current weather for a city. | city (string, required): City name." in text
    assert 'Answer A:\n[1 call] get_weather(city="Paris")' in text and "Answer B:\n[no call] I cannot" in text
    assert judge_context(RIGHT).startswith("user: ") and format_candidate(WRONG) == '[1 call] get_weather(city="Rome")'


def test_pointwise_scale_scores_and_request(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    with LoopbackServer({ROUTE: lambda b, h: reply("Looks right.\nScore: 9" if '"Paris"' in prompt(b).split("Candidate")[1]
                                                   else "Score: 2")}) as srv:
        judge = scorer(srv, mode="pointwise", api_key_env="JUDGE_KEY")
        assert judge.score([RIGHT, WRONG]) == [9.0, 2.0]
        body, headers = srv.requests[0]["body"], srv.requests[0]["headers"]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0 and body["messages"][0]["role"] == "system"
    assert headers.get("Authorization") == "Bearer sk-test"
    assert judge.score_pairs([(RIGHT, WRONG)]) == [(9.0, 2.0)]  # pointwise mode: cached, no server needed


def test_pointwise_yes_no_from_logprobs_and_text():
    import math

    def handler(body, headers):
        assert body["logprobs"] is True and body["top_logprobs"] == 5
        if '"Paris"' in prompt(body).split("Candidate")[1]:
            return reply("yes", [{"token": "yes", "logprob": math.log(0.8)}, {"token": "no", "logprob": math.log(0.2)}])
        return reply("No")  # a server without logprobs: the word decides

    with LoopbackServer({ROUTE: handler}) as srv:
        got = scorer(srv, mode="pointwise", pointwise_format="yes_no").score([RIGHT, WRONG])
    assert got[0] == pytest.approx(0.8) and got[1] == 0.0


def _pair(i, chosen, rejected):
    return PairRecord(id=str(i), tools=ToolCatalog.load(TOOLS), conversation=CONV, chosen=chosen.calls,
                      rejected=rejected.calls, rejected_text=rejected.text, error_type="value_error:string",
                      source="simple", generator="m")


def test_pairwise_asks_both_orders_and_always_a_is_a_tie():
    with LoopbackServer({ROUTE: lambda b, h: reply("Verdict: A")}) as srv:
        judge = scorer(srv)
        assert judge.score_pairs([(RIGHT, WRONG)]) == [(0.5, 0.5)]
        orders = [answers(r["body"]) for r in srv.requests]
        report = evaluate_pairs(judge, [_pair(0, RIGHT, WRONG)], bootstrap_samples=10)
    right, wrong = format_candidate(RIGHT), format_candidate(WRONG)
    assert sorted(orders) == sorted([(right, wrong), (wrong, right)])  # both orders asked, once each
    assert report.ties == 1 and report.accuracy == 0.0  # position bias cancels: a tie, not a win


def test_pairwise_judge_that_finds_the_right_answer_wins_in_both_orders():
    def handler(body, headers):
        a, b = answers(body)
        return reply("Verdict: A" if '"Paris"' in a else "B is right. Verdict: B" if '"Paris"' in b else "Verdict: tie")

    pairs = [_pair(0, RIGHT, WRONG), _pair(1, RIGHT, NONE), _pair(2, WRONG, NONE)]
    with LoopbackServer({ROUTE: handler}) as srv:
        judge = scorer(srv)
        report = evaluate_pairs(judge, pairs, bootstrap_samples=10)
        assert len(srv.requests) == 6
        assert judge.score_pairs([(WRONG, RIGHT)]) == [(0.0, 1.0)]
    assert (report.accuracy, report.ties) == (2 / 3, 1)  # the third pair holds no right answer: tie verdicts


def test_unparsable_replies_give_neutral_scores_and_are_counted():
    with LoopbackServer({ROUTE: lambda b, h: reply("I am not sure.")}) as srv:
        judge = scorer(srv, mode="pointwise")
        assert judge.score([RIGHT]) == [5.5]
        pj = scorer(srv)
        assert pj.score_pairs([(RIGHT, WRONG)]) == [(0.5, 0.5)]
    assert judge.stats["unparsed"] == 1 and pj.stats["unparsed"] == 2


def test_server_errors_are_retried_then_scorer_unavailable():
    with LoopbackServer({ROUTE: lambda b, h: (503, {"error": "overloaded"})}) as srv:
        with pytest.raises(ScorerUnavailable, match="no answer after 3 attempts.*503"):
            scorer(srv, retries=2, concurrency=1).score([RIGHT])
        assert len(srv.requests) == 3
    with LoopbackServer({ROUTE: lambda b, h: (400, {"error": "bad model"})}) as srv:
        with pytest.raises(ScorerUnavailable, match="HTTP 400"):
            scorer(srv, retries=2).score([RIGHT])
        assert len(srv.requests) == 1  # a client error is not retried
    with LoopbackServer({ROUTE: lambda b, h: (200, b"not json")}) as srv:
        with pytest.raises(ScorerUnavailable, match="malformed reply"):
            scorer(srv, retries=1, concurrency=1).score([RIGHT])


def test_a_transient_error_is_retried_and_recovers():
    seen = []

    def flaky(body, headers):
        seen.append(1)
        return (500, {"error": "hiccup"}) if len(seen) == 1 else reply("Score: 7")

    with LoopbackServer({ROUTE: flaky}) as srv:
        judge = scorer(srv, mode="pointwise", retries=2, concurrency=1)
        assert judge.score([RIGHT]) == [7.0] and judge.stats["retries"] == 1


def test_connection_refused_is_scorer_unavailable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = JudgeScorer(base_url=f"http://127.0.0.1:{port}", model="m", retries=1, backoff=0.01, timeout=2.0)
    assert judge.url == f"http://127.0.0.1:{port}/v1/chat/completions"
    with pytest.raises(ScorerUnavailable, match="ConnectError"):
        judge.score([RIGHT])


def test_cache_file_resumes_without_asking_again(tmp_path):
    cache = tmp_path / "judge_cache.jsonl"
    with LoopbackServer({ROUTE: lambda b, h: reply("Verdict: A" if '"Paris"' in answers(b)[0] else "Verdict: B")}) as srv:
        first = scorer(srv, cache_file=str(cache)).score_pairs([(RIGHT, WRONG)])
        n = len(srv.requests)
        again = scorer(srv, cache_file=str(cache))
        assert again.score_pairs([(RIGHT, WRONG)]) == first == [(1.0, 0.0)]
        assert len(srv.requests) == n == 2 and again.stats["cached"] == 2


def test_registry_and_config_errors():
    judge = get_scorer("judge", model="m", base_url="http://x:1/v1")
    assert isinstance(judge, JudgeScorer) and judge.name == "judge" and judge.url == "http://x:1/v1/chat/completions"
    named = get_scorer("judge", config=JudgeConfig(model="m", name="qwen-judge"), mode="pointwise")
    assert named.name == "qwen-judge" and named.config.mode == "pointwise"
    with pytest.raises(ValueError, match="judge.model"):
        get_scorer("judge")
    with pytest.raises(ValueError, match="judge.mode"):
        JudgeScorer(model="m", mode="listwise")


def test_judge_doctests():
    assert doctest.testmod(judge_module).failed == 0


def test_eval_command_with_the_judge_from_overrides(tmp_path):
    import json

    from typer.testing import CliRunner

    from toolrm_rl.cli import app

    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(_pair(i, RIGHT, bad).to_fc_rewardbench()) for i, bad in enumerate([WRONG, NONE])))
    with LoopbackServer({ROUTE: lambda b, h: reply("Verdict: A" if '"Paris"' in answers(b)[0] else "Verdict: B")}) as srv:
        result = CliRunner().invoke(app, ["eval", "fc-rewardbench", "--data", str(data), "--scorer", "rules", "--scorer",
                                          "judge", "--json", f"scorer_options.judge.base_url={srv.url}",
                                          "scorer_options.judge.model=m", "scorer_options.judge.name=my-judge"])
        assert result.exit_code == 0, result.output
        assert len(srv.requests) == 4
    last = json.loads(result.output.strip().splitlines()[-1])
    assert last["scorers"]["my-judge"]["accuracy"] == 1.0 and last["scorers"]["rules"]["ties"] == 2
    result = CliRunner().invoke(app, ["eval", "fc-rewardbench", "--data", str(data), "--scorer", "judge",
                                      f"scorer_options.judge.base_url={srv.url}", "scorer_options.judge.model=m",
                                      "scorer_options.judge.retries=0"])
    assert result.exit_code == 2 and "scorer unavailable" in result.output  # the server is gone
