"""The verl reward function: combination rule, multi-turn splitting, RM sources, faults, any input."""

from __future__ import annotations

import asyncio
import copy
import doctest
import json
import math
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import LoopbackServer

from toolrm_rl.core.calls import ToolCall
from toolrm_rl.core.parse import to_hermes
from toolrm_rl.verl import combine as C
from toolrm_rl.verl import config as Cfg
from toolrm_rl.verl import reward as R
from toolrm_rl.verl import sample as S
from toolrm_rl.verl import turns as T

TOOLS = [{"name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                         "required": ["city"]}}]
CONV = [{"role": "user", "content": "Weather in Paris for 2 days?"}]
GOOD = ToolCall("get_weather", {"city": "Paris", "days": 2})


def extra(gold=(GOOD,), **more):
    info = {"tools": json.dumps(TOOLS), "conversation": json.dumps(CONV),
            "gold": json.dumps([c.to_bfcl() for c in gold]) if gold is not None else ""}
    info.update(more)
    return info


def score(solution, info=None, ground_truth=None, **kw):
    return asyncio.run(R.compute_score("toolrm/test", solution, ground_truth, info if info is not None else extra(), **kw))


class FakeScorer:
    """Scores an input by its calls' ``days`` argument (abstention: -0.5); records every call."""

    name = "fake"

    def __init__(self, fail: Exception | None = None):
        self.batches: list[list] = []
        self.fail = fail

    def score(self, examples):
        self.batches.append(list(examples))
        if self.fail is not None:
            raise self.fail
        return [float(ex.calls[0].arguments.get("days", 0)) if ex.calls else -0.5 for ex in examples]


@pytest.fixture
def fake(monkeypatch):
    scorer = FakeScorer()
    monkeypatch.setattr(R, "get_rm_scorer", lambda cfg, *a, **k: scorer)
    return scorer


def test_doctests_of_the_combination_rule():
    result = doctest.testmod(C)
    assert result.attempted >= 4 and result.failed == 0


def test_valid_call_rules_only_has_fixed_keys_and_gold_match():
    out = score(to_hermes([GOOD]), rm_source="none", w_gt=1.0, valid_reward=0.5)
    assert tuple(out) == R.KEYS and all(isinstance(v, float) for v in out.values())
    assert (out["format_ok"], out["schema_ok"], out["valid"], out["n_calls"], out["gt_match"]) == (1, 1, 1, 1, 1)
    assert out["score"] == pytest.approx(1.5) and out["fallback"] == 0.0


def test_invalid_format_and_schema_gate_to_the_penalty(fake):
    bad_json = score("<tool_call>{not json</tool_call>", invalid_penalty=-2.0)
    unknown_fn = score(to_hermes([ToolCall("get_wether", {"city": "Paris"})]), invalid_penalty=-2.0)
    wrong_type = score(to_hermes([ToolCall("get_weather", {"city": "Paris", "days": "2"})]), invalid_penalty=-2.0)
    assert bad_json["format_ok"] == 0 and bad_json["score"] == -2.0
    assert unknown_fn["format_ok"] == 1 and unknown_fn["schema_ok"] == 0 and unknown_fn["score"] == -2.0
    assert wrong_type["schema_ok"] == 0 and wrong_type["score"] == -2.0
    assert fake.batches == []  # the gate: the RM is not asked about invalid calls


def test_rm_score_is_weighted_and_clipped(fake):
    out = score(to_hermes([GOOD]), w_rm=0.5, valid_reward=0.1, rm_transform="clip")
    assert out["rm_score"] == 2.0 and out["score"] == pytest.approx(0.1 + 0.5 * 2.0)
    big = score(to_hermes([ToolCall("get_weather", {"city": "Paris", "days": 50})]), rm_clip=3.0, rm_transform="clip")
    assert big["rm_score"] == 50.0 and big["score"] == 3.0
    squashed = score(to_hermes([GOOD]), w_rm=0.5, valid_reward=0.1)  # default: sigmoid
    assert squashed["score"] == pytest.approx(0.1 + 0.5 / (1 + math.exp(-2.0)))
    tanh = score(to_hermes([GOOD]), rm_transform="tanh")
    assert tanh["score"] == pytest.approx(math.tanh(2.0))
    ex = fake.batches[0][0]
    assert ex.calls == [GOOD] and ex.conversation == CONV and "get_weather" in ex.tools


def test_the_gate_ranks_every_valid_call_above_every_invalid_one(fake):
    # however low the RM scores a valid call, it stays above the penalty of an invalid one
    low = score(to_hermes([ToolCall("get_weather", {"city": "Paris", "days": -1000})]), rm_clip=1e9)
    invalid = score("<tool_call>{not json</tool_call>")
    assert low["rm_score"] == -1000.0 and low["valid"] == 1 and invalid["valid"] == 0
    assert low["score"] > invalid["score"]
    with pytest.raises(ValueError, match="rm_transform"):
        R.load_reward_config({"rm_transform": "log"})


def test_abstention_reward_only_when_gold_is_no_call(fake):
    right = score("I cannot help with that.", extra(gold=[]), abstain_reward=1.0, w_rm=0.0)
    wrong = score("I cannot help with that.", extra(), abstain_reward=1.0, w_rm=0.0)
    assert right["abstained"] == 1 and right["gt_match"] == 1 and right["score"] == 1.0
    assert wrong["abstained"] == 1 and wrong["gt_match"] == 0 and wrong["score"] == 0.0
    assert fake.batches[0][0].calls == [] and fake.batches[0][0].text == "I cannot help with that."


def test_gold_from_ground_truth_and_bfcl_possible_answer():
    info = extra(gold=None)
    out = score(to_hermes([GOOD]), info, ground_truth=json.dumps([GOOD.to_bfcl()]), rm_source="none", w_gt=1.0)
    assert out["has_gold"] == 1 and out["gt_match"] == 1
    # a possible answer accepts alternatives that the concrete gold does not
    answer = json.dumps([{"get_weather": {"city": ["Paris", "Paris, France"], "days": [2, ""]}}])
    alt = ToolCall("get_weather", {"city": "Paris, France"})
    out = score(to_hermes([alt]), extra(answer=answer, category="simple"), rm_source="none", w_gt=1.0)
    assert out["gt_match"] == 1
    assert score("no gold here", extra(gold=None), ground_truth="42", rm_source="none")["has_gold"] == 0


def test_extra_info_is_not_mutated(fake):
    info = extra()
    before = copy.deepcopy(info)
    score(to_hermes([GOOD]), info)
    assert info == before


def _qwen_rollout(turns):
    """A tool_agent response as verl decodes it (real Qwen3 template, skip_special_tokens=True)."""
    from transformers import AutoTokenizer

    from toolrm_rl.data.backbones import qwen3_tokenizer_dir

    tok = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    tools = [{"type": "function", "function": TOOLS[0]}]
    prompt = tok.apply_chat_template(CONV, tools=tools, tokenize=False, add_generation_prompt=True)
    msgs = list(CONV)
    for assistant, observations in turns:
        msgs.append({"role": "assistant", "content": assistant})
        msgs.extend({"role": "tool", "content": o} for o in observations)
    full = tok.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=False)
    ids = tok(full[len(prompt):], add_special_tokens=False)["input_ids"]
    return tok.decode(ids, skip_special_tokens=True)


def test_split_turns_on_a_real_qwen3_multi_turn_rollout():
    c1, c2 = to_hermes([GOOD]), to_hermes([ToolCall("get_weather", {"city": "Lyon", "days": 1})])
    text = _qwen_rollout([(c1, ["sunny", "warm"]), (c2, ["rain"]), ("Paris is sunny, Lyon rainy.", [])])
    turns = R.split_turns(text)
    assert [t[1] for t in turns] == [["sunny", "warm"], ["rain"], []]
    assert "<tool_call>" in turns[0][0] and turns[2][0] == "Paris is sunny, Lyon rainy."


@pytest.mark.parametrize("how,expected", [("last", 1.0), ("mean", 1.5), ("min", 1.0)])
def test_multi_turn_scores_each_turn_in_context_and_combines(fake, how, expected):
    c1, c2 = to_hermes([GOOD]), to_hermes([ToolCall("get_weather", {"city": "Lyon", "days": 1})])
    text = _qwen_rollout([(c1, ["sunny"]), (c2, ["rain"]), ("Done.", [])])
    out = score(text, turn_combine=how, rm_transform="clip")  # raw scores: the expected values are the days
    assert out["n_turns"] == 3 and out["n_calls"] == 2 and out["score"] == pytest.approx(expected)
    first, second = fake.batches[0]  # the final text answer is not scored by default
    assert first.conversation == CONV
    assert [m["role"] for m in second.conversation] == ["user", "assistant", "tool"]
    assert second.conversation[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert second.conversation[2]["content"] == "sunny"


def test_multi_turn_invalid_turn_counts_in_min(fake):
    text = _qwen_rollout([(to_hermes([ToolCall("nope", {})]), ["error"]), (to_hermes([GOOD]), ["ok"])])
    out = score(text, turn_combine="min", invalid_penalty=-1.0, rm_transform="clip")
    assert out["schema_ok"] == 0 and out["score"] == -1.0
    # by default one invalid turn gates the whole sample, whatever turn_combine says
    assert score(text, turn_combine="last", rm_transform="clip")["score"] == -1.0
    assert score(text, turn_combine="mean", rm_transform="clip")["score"] == -1.0
    assert score(text, turn_combine="last", rm_transform="clip", invalid_turn_gates=False)["score"] == 2.0


def test_fake_observations_cannot_dilute_an_invalid_call(fake):
    """A policy writes an invalid call, then its own <tool_response> and valid calls: still the penalty,
    below a single valid call."""
    fake_turn = "\nuser\n<tool_response>ok</tool_response>\nassistant\n"
    diluted = to_hermes([ToolCall("nope", {})]) + (fake_turn + to_hermes([GOOD])) * 6
    out = score(diluted, turn_combine="mean")
    assert out["valid"] == 0 and out["score"] == -1.0
    assert score(to_hermes([GOOD]))["score"] > out["score"]


def test_config_file_and_kwargs_precedence(tmp_path, monkeypatch):
    path = tmp_path / "reward.yaml"
    path.write_text("w_rm: 0.25\ninvalid_penalty: -3.0\n")
    monkeypatch.setenv(Cfg.CONFIG_ENV, str(path))
    cfg = R.load_reward_config({"invalid_penalty": -5.0, "not_an_option": 1})
    assert (cfg.w_rm, cfg.invalid_penalty) == (0.25, -5.0)
    with pytest.raises(ValueError, match="turn_combine"):
        R.load_reward_config({"turn_combine": "max"})


def test_choice_options_take_their_yaml_strings_and_name_the_key_otherwise(tmp_path, monkeypatch):
    path = tmp_path / "reward.yaml"
    path.write_text("format: pythonic\nrm_source: none\nserver_api: vllm\nrm_quantize: int8-mixed\n"
                    "rm_transform: tanh\nturn_combine: min\n")
    monkeypatch.setenv(Cfg.CONFIG_ENV, str(path))
    cfg = R.load_reward_config()
    assert (cfg.format, cfg.rm_source, cfg.server_api, cfg.rm_quantize, cfg.rm_transform, cfg.turn_combine) == (
        "pythonic", "none", "vllm", "int8-mixed", "tanh", "min")
    for key in ("format", "rm_source", "server_api", "rm_quantize", "rm_transform", "turn_combine"):
        with pytest.raises(ValueError, match=rf"reward_kwargs\.{key}: expected one of .*got 'bogus'"):
            R.load_reward_config({key: "bogus"})


def test_file_path_entry_is_the_same_function():
    from verl.utils.import_utils import load_extern_object

    fn = load_extern_object("reward_fns/toolrm_reward.py", "compute_score")
    pkg = load_extern_object("pkg://toolrm_rl.verl.reward", "compute_score")
    assert fn is pkg is R.compute_score


def test_inprocess_rm_matches_the_scorer(tmp_path):
    import torch

    from toolrm_rl.core.render import RMExample
    from toolrm_rl.data.backbones import build_tiny_qwen3
    from toolrm_rl.scoring import RMScorer

    torch.set_num_threads(1)
    path = str(build_tiny_qwen3(tmp_path / "rm"))
    out = score(to_hermes([GOOD]), rm_source="inprocess", model_path=path, w_rm=1.0, rm_clip=1e9, rm_transform="clip")
    expected = RMScorer(path=path).score([RMExample(TOOLS, CONV, [GOOD])])[0]
    assert out["fallback"] == 0 and out["rm_score"] == pytest.approx(expected, abs=1e-4)
    assert out["score"] == pytest.approx(expected, abs=1e-4)


def _classify(body, headers):
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    return 200, {"data": [{"index": i, "probs": [0.1 * (i + 1)]} for i in range(len(texts))]}


def test_router_source_renders_with_tools_and_reads_classify():
    from transformers import AutoTokenizer

    from toolrm_rl.data.backbones import qwen3_tokenizer_dir

    tok = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    with LoopbackServer({("POST", "/classify"): _classify}) as srv:
        addr = srv.url.removeprefix("http://")
        out = score(to_hermes([GOOD]), reward_router_address=addr, reward_model_tokenizer=tok, server_model="rm")
        sent = srv.requests[-1]["body"]
    assert out["fallback"] == 0 and out["rm_score"] == pytest.approx(0.1)
    text = sent["input"][0] if isinstance(sent["input"], list) else sent["input"]
    assert sent["model"] == "rm" and '"name": "get_weather"' in text and "<tools>" in text and "Paris" in text


def test_server_source_vllm_and_toolrm_apis():
    from transformers import AutoTokenizer

    from toolrm_rl.data.backbones import qwen3_tokenizer_dir

    tok = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    routes = {("POST", "/classify"): _classify,
              ("POST", "/score"): lambda body, h: (200, {"scores": [0.7] * len(body["items"])})}
    with LoopbackServer(routes) as srv:
        v = score(to_hermes([GOOD]), rm_source="server", server_url=srv.url, server_api="vllm", reward_model_tokenizer=tok)
        t = score(to_hermes([GOOD]), rm_source="server", server_url=srv.url, server_api="toolrm")
        item = srv.requests[-1]["body"]["items"][0]
    assert v["rm_score"] == pytest.approx(0.1) and t["rm_score"] == pytest.approx(0.7)
    assert item["calls"] == [{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}]


def _slow(body, headers):
    time.sleep(1.5)
    return 200, {"scores": [1.0]}


def _huge(body, headers):
    return 200, b'{"scores": [' + b"1.0, " * 4_000_000 + b"1.0]}"


FAULTS = {
    "http_500": lambda body, h: (500, {"error": "boom"}),
    "malformed_json": lambda body, h: (200, b'{"scores": [1.0,'),
    "garbage": lambda body, h: (200, b"\x00\xff\xfe garbage"),
    "wrong_count": lambda body, h: (200, {"scores": [1.0, 2.0, 3.0]}),
    "not_a_number": lambda body, h: (200, {"scores": ["NaN"]}),
    "slow": _slow,
    "huge": _huge,
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_server_faults_fall_back_with_the_same_keys(fault):
    with LoopbackServer({("POST", "/score"): FAULTS[fault]}) as srv:
        out = score(to_hermes([GOOD]), rm_source="server", server_url=srv.url, timeout_s=0.5, retries=0,
                    valid_reward=0.25, w_gt=1.0)
    assert tuple(out) == R.KEYS
    assert out["fallback"] == 1.0 and out["rm_score"] == 0.0
    assert out["score"] == pytest.approx(1.25)  # the rule score: valid_reward + w_gt * gt_match


def test_server_down_falls_back():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = score(to_hermes([GOOD]), rm_source="server", server_url=f"http://127.0.0.1:{port}", timeout_s=0.5, retries=1)
    assert out["fallback"] == 1.0 and out["score"] == 0.0 and tuple(out) == R.KEYS


def test_a_misconfigured_rm_fails_at_start_up_naming_the_key(tmp_path):
    """Configuration errors raise on the first call, whatever the sample; they never become a silent
    rules-only run."""
    with pytest.raises(ValueError, match="reward_kwargs.model_path"):
        score("no call at all", rm_source="inprocess", model_path=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="reward_kwargs.rm_source=router"):
        score(to_hermes([GOOD]), rm_source="router")
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "toolrm.json").write_text("{not json")
    with pytest.raises(ValueError, match="toolrm.json"):
        score(to_hermes([GOOD]), rm_source="server", server_api="vllm", server_url="http://127.0.0.1:1",
              model_path=str(tmp_path / "rm"))


_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                            max_leaves=10)
_texts = st.one_of(
    st.text(max_size=300),
    st.builds(lambda a, b: f"{a}<tool_call>{b}</tool_call>", st.text(max_size=30), st.text(max_size=80)),
    st.builds(lambda v: "<tool_call>" + json.dumps({"name": "get_weather", "arguments": v}) + "</tool_call>"
              "\nuser\n<tool_response>x</tool_response>\nassistant\n", _json_values),
)
_extras = st.one_of(
    st.none(), st.text(max_size=20), _json_values,
    st.fixed_dictionaries({}, optional={"tools": st.one_of(st.text(max_size=40), _json_values, st.just(json.dumps(TOOLS))),
                                        "conversation": st.one_of(st.text(max_size=40), _json_values),
                                        "gold": st.one_of(st.text(max_size=40), _json_values),
                                        "answer": st.one_of(st.text(max_size=40), _json_values)}),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(solution=st.one_of(_texts, st.none(), st.integers(), _json_values), info=_extras,
       gt=st.one_of(st.none(), st.text(max_size=30), _json_values))
def test_any_input_never_raises_and_keeps_the_keys(solution, info, gt):
    out = score(solution, info, ground_truth=gt, rm_source="none", w_gt=1.0, abstain_reward=0.5)
    assert tuple(out) == R.KEYS and all(isinstance(v, float) for v in out.values())


def test_huge_solution_string_is_cut_not_fatal():
    text = "x" * 3_000_000 + to_hermes([GOOD])
    out = score(text, rm_source="none", max_chars=100_000)
    assert out["n_calls"] == 1 and out["valid"] == 1


def test_against_our_server_with_a_tiny_model(tmp_path):
    """toolrm serve's app under uvicorn on loopback: /score and /classify give the in-process scores."""
    import threading

    import torch
    import uvicorn
    from transformers import AutoTokenizer

    from toolrm_rl.core.render import RMExample
    from toolrm_rl.model import ToolRM
    from toolrm_rl.data.backbones import build_tiny_qwen3
    from toolrm_rl.serve.app import ServeConfig, create_app

    torch.set_num_threads(1)
    path = str(build_tiny_qwen3(tmp_path / "rm"))
    rm = ToolRM.from_pretrained(path)
    expected = rm.score([RMExample(TOOLS, CONV, [GOOD])])[0]
    server = uvicorn.Server(uvicorn.Config(create_app(rm, ServeConfig(model=path, max_wait_ms=0)), host="127.0.0.1",
                                           port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        native = score(to_hermes([GOOD]), rm_source="server", server_url=url, server_api="toolrm", rm_clip=1e9)
        vllm = score(to_hermes([GOOD]), rm_source="server", server_url=url, server_api="vllm", model_path=path,
                     server_model=path, rm_clip=1e9, reward_model_tokenizer=AutoTokenizer.from_pretrained(path))
    finally:
        server.should_exit = True
        thread.join(30)
    assert native["fallback"] == 0 and native["rm_score"] == pytest.approx(expected, abs=1e-4)
    assert vllm["fallback"] == 0 and vllm["rm_score"] == pytest.approx(expected, abs=1e-4)


# -- hostile inputs: time, malformed tools, surrogates, history, window ---------------------------------

# The turn splitter before it was made linear: the reference its replacement must agree with.
_OLD_OBS_RE = re.compile(
    r"(?:<\|im_end\|>)?\s*(?:<\|im_start\|>)?(?:user|tool)?\s*"
    r"((?:<tool_response>.*?(?:</tool_response>|$)\s*)+)"
    r"(?:<\|im_end\|>)?\s*(?:<\|im_start\|>)?(?:assistant\n)?", re.DOTALL)
_OLD_RESPONSE_RE = re.compile(r"<tool_response>(.*?)(?:</tool_response>|$)", re.DOTALL)


def _old_split_turns(text):
    turns, pos = [], 0
    for m in _OLD_OBS_RE.finditer(text):
        turns.append((T.clean_turn(text[pos:m.start()]), [r.strip() for r in _OLD_RESPONSE_RE.findall(m.group(1))]))
        pos = m.end()
    last = T.clean_turn(text[pos:])
    if last or not turns:
        turns.append((last, []))
    return turns


_PIECES = ["<tool_response>", "</tool_response>", "<|im_end|>", "<|im_start|>", "user", "tool", "assistant\n",
           "assistant", "\n", " ", "\t", "x", "us", "er", '<tool_call>{"name": "f", "arguments": {}}</tool_call>']


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=14))
def test_split_turns_agrees_with_the_regex_it_replaced(pieces):
    text = "".join(pieces)
    assert R.split_turns(text) == _old_split_turns(text)


CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
HOSTILE = {  # each about 200,000 characters: the old splitter took 9 s for 1,000 newlines
    "newlines": CALL + "\n" * 200_000,
    "blanks": CALL + " \t\r\n" * 50_000,
    "roles": CALL + "user\n tool " * 18_000,
    "markers": CALL + "<|im_end|>\n<|im_start|>" * 8_000,
    "open_responses": "<tool_response>" * 13_000,
    "observations": (CALL + "\nuser\n<tool_response>x</tool_response>\nassistant\n") * 1_500,
    "think": "<think>" * 28_571,
    "tool_calls": "<tool_call>" * 18_000,
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_long_responses_are_scored_in_linear_time(kind):
    text = HOSTILE[kind]
    start = time.perf_counter()
    out = score(text, rm_source="none")
    elapsed = time.perf_counter() - start
    assert tuple(out) == R.KEYS and all(math.isfinite(v) for v in out.values())
    assert elapsed < 2.0, f"{kind}: {elapsed:.2f} s for {len(text)} characters"  # goal 0.5 s; shared CI CPUs


def test_many_fake_turns_keep_the_rm_input_bounded(fake):
    text = (to_hermes([GOOD]) + "\nuser\n<tool_response>x</tool_response>\nassistant\n") * 1_000
    out = score(text, max_turns=4, rm_transform="clip")
    assert out["n_turns"] == 1_000 and out["n_calls"] == 1_000 and out["valid"] == 1
    assert len(fake.batches[0]) == 4  # the last max_turns turns, each with a bounded history
    assert all(len(ex.conversation) <= len(CONV) + S.RM_HISTORY for ex in fake.batches[0])


def test_an_invalid_turn_before_the_window_still_counts(fake):
    fake_turn = "\nuser\n<tool_response>ok</tool_response>\nassistant\n"
    text = to_hermes([ToolCall("nope", {})]) + fake_turn + (to_hermes([GOOD]) + fake_turn) * 5
    out = score(text, max_turns=3, turn_combine="min")
    assert out["valid"] == 0 and out["score"] == -1.0
    inside = score(to_hermes([GOOD]) + fake_turn + to_hermes([GOOD]), max_turns=3, turn_combine="min")
    assert inside["valid"] == 1 and inside["score"] > 0


BAD_TOOLS = {
    "truncated_json": json.dumps(TOOLS)[:-7],
    "entry_without_name": json.dumps([{"description": "x", "parameters": TOOLS[0]["parameters"]}]),
    "parameters_list": json.dumps([{"name": "get_weather", "parameters": []}]),
    "parameters_number": json.dumps([{"name": "get_weather", "parameters": 3}]),
    "invalid_utf8": b"\xff\xfe" + json.dumps(TOOLS).encode(),
    "empty_string": "",
    "not_a_list": "42",
    "too_deep": json.dumps([{"name": "get_weather", "parameters": json.loads('{"a": ' * 100 + "1" + "}" * 100)}]),
    "empty_list": "[]",
    "duplicate_names": json.dumps(TOOLS + TOOLS),
    "required_not_a_list": json.dumps([{**TOOLS[0], "parameters": {**TOOLS[0]["parameters"], "required": "city"}}]),
}
RESPONSES_AGAINST_TOOLS = {
    "valid": to_hermes([GOOD]),
    "unknown_function": to_hermes([ToolCall("get_wether", {"city": "Paris"})]),
    "wrong_type": to_hermes([ToolCall("get_weather", {"city": "Paris", "days": "2"})]),
    "missing_required": to_hermes([ToolCall("get_weather", {"days": 2})]),
    "abstention": "I will not call anything.",
}


@pytest.mark.parametrize("bad", sorted(BAD_TOOLS))
def test_malformed_tools_are_marked_and_never_rewarded(fake, caplog, bad):
    scores = {}
    for name, text in RESPONSES_AGAINST_TOOLS.items():
        with caplog.at_level("WARNING", logger=S.__name__):
            S._NOTES.clear()  # the rate limit is per process: each case must log
            out = score(text, extra(tools=BAD_TOOLS[bad]), w_gt=1.0, abstain_reward=1.0, invalid_penalty=-1.5)
        assert tuple(out) == R.KEYS and all(math.isfinite(v) for v in out.values())
        assert out["tools_error"] == 1 and out["schema_ok"] == 0 and out["valid"] == 0 and out["fallback"] == 0
        assert "extra_info.tools is unreadable" in caplog.text
        scores[name] = out["score"]
    assert set(scores.values()) == {-1.5}  # whatever the response says: nothing can be verified
    assert fake.batches == []  # and the RM is not asked


def test_a_row_without_tools_gets_the_format_check_only():
    no_key = {"conversation": json.dumps(CONV)}
    for info in (no_key, {**no_key, "tools": None}):  # no key, or parquet's null for it
        for text in (RESPONSES_AGAINST_TOOLS["unknown_function"], RESPONSES_AGAINST_TOOLS["abstention"]):
            out = score(text, info, rm_source="none")
            assert (out["tools_error"], out["schema_ok"], out["valid"], out["score"]) == (0, 1, 1, 0.0)
    broken = score("<tool_call>{broken</tool_call>", no_key, rm_source="none")
    assert (broken["tools_error"], broken["format_ok"], broken["score"]) == (0, 0, -1.0)


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    import torch

    from toolrm_rl.data.backbones import build_tiny_qwen3

    torch.set_num_threads(1)
    return str(build_tiny_qwen3(tmp_path_factory.mktemp("rm")))


def test_no_invalid_or_unverifiable_sample_outscores_a_valid_one_with_the_rm(tiny_rm):
    kw = dict(rm_source="inprocess", model_path=tiny_rm, w_gt=1.0, abstain_reward=0.5)
    valid, other = [], []
    for name, text in RESPONSES_AGAINST_TOOLS.items():
        out = score(text, extra(), **kw)
        (valid if out["valid"] else other).append((name, "intact", out))
        for bad, tools in BAD_TOOLS.items():
            other.append((name, bad, score(text, extra(tools=tools), **kw)))
    assert [n for n, _, _ in valid] == ["valid", "abstention"]
    assert all(o["fallback"] == 0 for _, _, o in valid + other)
    worst_valid = min(o["score"] for _, _, o in valid)
    best_other = max(other, key=lambda item: item[2]["score"])
    assert best_other[2]["score"] < worst_valid, best_other


def test_lone_surrogates_reach_the_rm_replaced(tiny_rm):
    kw = dict(rm_source="inprocess", model_path=tiny_rm, rm_clip=1e9, rm_transform="clip")
    clean = score(to_hermes([ToolCall("get_weather", {"city": "Pa\ufffdris"})]), **kw)
    literal = score(to_hermes([ToolCall("get_weather", {"city": "Pa\ud800ris"})]), **kw)
    escaped = score('<tool_call>{"name": "get_weather", "arguments": {"city": "Pa\\ud800ris"}}</tool_call>', **kw)
    assert clean["fallback"] == literal["fallback"] == escaped["fallback"] == 0
    assert literal["rm_score"] == pytest.approx(clean["rm_score"]) == escaped["rm_score"]
    # in the conversation, the tools and an abstention text too
    conv = [{"role": "user", "content": "Weather in Pa\ud800ris?"}]
    tools = json.dumps(TOOLS).replace("Weather of a city", "Weather \\udfff of a city")
    for out in (score(to_hermes([GOOD]), extra(conversation=json.dumps(conv), tools=tools), **kw),
                score("I can\ud83dnot help.", **kw)):
        assert out["fallback"] == 0 and out["tools_error"] == 0 and math.isfinite(out["rm_score"])


OPENAI_HISTORY = [
    {"role": "user", "content": "Weather in Paris, then Lyon?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
]


@pytest.mark.parametrize("tool_calls", [
    OPENAI_HISTORY[1]["tool_calls"],  # well-formed: kept
    [{"id": "c1", "type": "function", "function": {"arguments": "{}"}}],  # no name
    [{"function": {"name": "get_weather", "arguments": '{"city": '}}],  # cut-off JSON arguments
    [{"function": {"name": "get_weather", "arguments": [1, 2]}}],  # arguments not an object
    "not a list",
])
def test_tool_calls_in_the_conversation_never_force_a_fallback(tiny_rm, fake, tool_calls):
    conv = [OPENAI_HISTORY[0], {**OPENAI_HISTORY[1], "tool_calls": tool_calls}, OPENAI_HISTORY[2]]
    out = score(to_hermes([GOOD]), extra(conversation=json.dumps(conv)), rm_source="inprocess", model_path=tiny_rm)
    assert out["fallback"] == 0 and out["valid"] == 1
    shown = S.load_conversation(conv)
    assert [m["role"] for m in shown] == ["user", "assistant", "tool"]
    kept = tool_calls is OPENAI_HISTORY[1]["tool_calls"]
    assert ("tool_calls" in shown[1]) == kept


HUGE_INT_CALL = ToolCall("get_weather", {"city": "Paris", "days": int("9" * 4000)})  # valid, too long for the RM


def test_a_valid_call_the_rm_cannot_be_shown_is_scored_by_the_rules(fake):
    out = score(to_hermes([HUGE_INT_CALL]), valid_reward=0.25)
    assert out["valid"] == 1 and out["fallback"] == 1 and out["score"] == 0.25 and fake.batches == []


def test_rules_only_needs_no_rm_input():
    out = score(to_hermes([HUGE_INT_CALL]), valid_reward=0.25, rm_source="none")
    assert out["valid"] == 1 and out["fallback"] == 0 and out["score"] == 0.25


def test_the_gate_accepts_what_bfcl_accepts_for_the_possible_answer():
    as_string = to_hermes([ToolCall("get_weather", {"city": "Paris", "days": "2"})])  # wrong type for the schema
    accepted = json.dumps([{"get_weather": {"city": ["Paris"], "days": ["2"]}}])  # BFCL: "2" is a variable
    other = json.dumps([{"get_weather": {"city": ["Paris"], "days": [3]}}])
    kw = dict(rm_source="none", w_gt=1.0)
    assert score(as_string, extra(answer=accepted, category="simple"), **kw)["valid"] == 1
    assert score(as_string, extra(answer=other, category="simple"), **kw)["valid"] == 0
    assert score(as_string, extra(), **kw)["valid"] == 0  # no answer: the schema alone
    bad_answer = score(to_hermes([GOOD]), extra(answer='{"get_weather": 3}', category="simple"), **kw)
    assert bad_answer["valid"] == 1 and bad_answer["gt_match"] == 1  # unreadable answer: the concrete gold
