"""The toolrm reward manager with the real verl 0.9.1 on CPU: registry, entry point, batching, and verl's
own NaiveRewardManager / RewardLoopManager calling our function and manager."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch

from toolrm_rl.core.calls import ToolCall
from toolrm_rl.core.parse import to_hermes
from toolrm_rl.verl import reward as R

torch.set_num_threads(1)

TOOLS = [{"name": "get_weather", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}]
CONV = [{"role": "user", "content": "Weather in Paris?"}]
RESPONSES = [
    to_hermes([ToolCall("get_weather", {"city": "Paris", "days": 2})]),
    to_hermes([ToolCall("get_weather", {"city": "Paris", "days": 5})]),
    to_hermes([ToolCall("get_wether", {"city": "Paris"})]),  # unknown function: schema gate
    "<tool_call>{broken",  # format gate
]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from toolrm_rl.data.backbones import qwen3_tokenizer_dir

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())


def make_batch(tokenizer, responses, prompt_len=24, response_len=64):
    """A verl DataProto like the rollout produces: left-padded prompts, right-padded responses (+ <|im_end|>)."""
    from verl import DataProto

    pad = tokenizer.pad_token_id
    prompt_text = tokenizer.apply_chat_template(CONV, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"][-prompt_len:]
    rows_p, rows_r, masks = [], [], []
    for text in responses:
        ids = tokenizer(text + "<|im_end|>", add_special_tokens=False)["input_ids"][:response_len]
        rows_p.append([pad] * (prompt_len - len(prompt_ids)) + prompt_ids)
        rows_r.append(ids + [pad] * (response_len - len(ids)))
        masks.append([0] * (prompt_len - len(prompt_ids)) + [1] * len(prompt_ids) + [1] * len(ids)
                     + [0] * (response_len - len(ids)))
    prompts, resp = torch.tensor(rows_p), torch.tensor(rows_r)
    n = len(responses)
    info = {"tools": json.dumps(TOOLS), "conversation": json.dumps(CONV),
            "gold": json.dumps([{"get_weather": {"city": "Paris", "days": 2}}])}
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": resp, "input_ids": torch.cat([prompts, resp], 1),
                 "attention_mask": torch.tensor(masks)},
        non_tensors={"data_source": np.array(["toolrm/test"] * n, dtype=object),
                     "reward_model": np.array([{"style": "model", "ground_truth": info["gold"]}] * n, dtype=object),
                     "extra_info": np.array([dict(info) for _ in range(n)], dtype=object),
                     "raw_prompt": np.array([list(CONV) for _ in range(n)], dtype=object),
                     "uid": np.array([str(i) for i in range(n)], dtype=object)})


class CountingScorer:
    """Scores by the ``days`` argument; counts calls (one call = one RM request)."""

    name = "counting"

    def __init__(self):
        self.calls = 0
        self.sizes = []

    async def ascore(self, examples):
        self.calls += 1
        self.sizes.append(len(examples))
        await asyncio.sleep(0)
        return [float(ex.calls[0].arguments.get("days", 0)) if ex.calls else 0.0 for ex in examples]


def test_get_reward_manager_cls_resolves_after_import():
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

    from toolrm_rl.verl.manager import ToolRMRewardManager

    assert get_reward_manager_cls("toolrm") is ToolRMRewardManager


@pytest.mark.skipif(not any(ep.name == "toolrm" for ep in entry_points(group="verl.plugins")),
                    reason="the verl.plugins entry point is not installed yet (pyproject: "
                           "[project.entry-points.\"verl.plugins\"] toolrm = \"toolrm_rl.verl.manager\"; reinstall)")
def test_entry_point_registers_the_manager_on_import_verl():
    ep = next(ep for ep in entry_points(group="verl.plugins") if ep.name == "toolrm")
    assert ep.value == "toolrm_rl.verl.manager"
    code = ("import verl\n"  # only verl: the entry point must import our module
            "from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls\n"
            "print(get_reward_manager_cls('toolrm').__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "toolrm_rl.verl.manager"


def _manager(tokenizer, **kwargs):
    from omegaconf import OmegaConf

    kwargs.setdefault("rm_transform", "clip")  # raw RM scores: the expected rewards are the fake's numbers

    from toolrm_rl.verl.manager import ToolRMRewardManager

    config = OmegaConf.create({"reward": {"custom_reward_function": {"path": "pkg://toolrm_rl.verl.reward",
                                                                      "reward_kwargs": kwargs}}})
    return ToolRMRewardManager(config, tokenizer, None)


def test_manager_batches_concurrent_samples_into_one_rm_call(tokenizer, monkeypatch):
    scorer = CountingScorer()
    monkeypatch.setattr("toolrm_rl.verl.manager.get_rm_scorer", lambda *a, **k: scorer)
    monkeypatch.setattr(R, "get_rm_scorer", lambda *a, **k: scorer)
    mgr = _manager(tokenizer, batch_window_ms=50, max_batch=64, w_gt=1.0)
    data = make_batch(tokenizer, RESPONSES * 4)

    async def run_all():
        return await asyncio.gather(*(mgr.run_single(data[i:i + 1]) for i in range(len(data))))

    outs = asyncio.run(run_all())
    assert scorer.calls == 1 and scorer.sizes == [8]  # 8 valid samples of 16, one request
    per_sample = [asyncio.run(R.compute_score("toolrm/test", text, None, dict(data[i].non_tensor_batch["extra_info"]),
                                              w_gt=1.0, rm_transform="clip"))
                  for i, text in enumerate(RESPONSES * 4)]
    for out, ref in zip(outs, per_sample):
        info = out["reward_extra_info"]
        assert tuple(info) == R.KEYS and out["reward_score"] == info["score"]
        assert {k: v for k, v in info.items() if k != "latency_ms"} == {k: v for k, v in ref.items() if k != "latency_ms"}
    assert [o["reward_score"] for o in outs[:4]] == [3.0, 5.0, -1.0, -1.0]


def test_manager_max_batch_splits_and_failure_falls_back(tokenizer, monkeypatch):
    scorer = CountingScorer()
    monkeypatch.setattr("toolrm_rl.verl.manager.get_rm_scorer", lambda *a, **k: scorer)
    mgr = _manager(tokenizer, batch_window_ms=1000, max_batch=3)
    data = make_batch(tokenizer, [RESPONSES[0]] * 6)

    async def run_all():
        return await asyncio.gather(*(mgr.run_single(data[i:i + 1]) for i in range(len(data))))

    asyncio.run(run_all())
    assert scorer.sizes == [3, 3]  # flushed by size, never waiting for the 1 s window

    class Down(CountingScorer):
        async def ascore(self, examples):
            from toolrm_rl.scoring import ScorerUnavailable

            raise ScorerUnavailable("server down")

    monkeypatch.setattr("toolrm_rl.verl.manager.get_rm_scorer", lambda *a, **k: Down())
    outs = asyncio.run(_manager(tokenizer, valid_reward=0.5).run_single(data[0:1]))
    assert outs["reward_extra_info"]["fallback"] == 1.0 and outs["reward_score"] == 0.5


def test_manager_keeps_tool_markers_and_survives_a_malformed_item(tokenizer):
    mgr = _manager(tokenizer, rm_source="none")
    data = make_batch(tokenizer, [RESPONSES[0]])
    assert "<tool_call>" in mgr.decode(data.batch["responses"][0].tolist())
    del data.non_tensor_batch["reward_model"]
    data.non_tensor_batch["extra_info"] = np.array(["not a dict"], dtype=object)
    out = asyncio.run(mgr.run_single(data))
    assert tuple(out["reward_extra_info"]) == R.KEYS


def test_verl_naive_manager_calls_our_function(tokenizer):
    from omegaconf import OmegaConf
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": "pkg://toolrm_rl.verl.reward", "name": "compute_score",
        "reward_kwargs": {"rm_source": "none", "w_gt": 1.0}}}})
    fn = get_custom_reward_fn(config)
    mgr = NaiveRewardManager(config, tokenizer, fn)
    data = make_batch(tokenizer, RESPONSES)
    # verl's managers keep the event loop they were built on (verl.utils.ray_utils.get_event_loop)
    outs = [mgr.loop.run_until_complete(mgr.run_single(data[i:i + 1])) for i in range(len(data))]
    assert [o["reward_score"] for o in outs] == [1.0, 0.0, -1.0, -1.0]
    assert all(tuple(o["reward_extra_info"])[:len(R.KEYS)] == R.KEYS for o in outs)


def _compose(overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


def _score_by_days(body, headers):
    entries = body["items"] if "items" in body else body["candidates"]  # one prompt's samples come as candidates
    return 200, {"scores": [float(item["calls"][0]["arguments"].get("days", 0)) if item["calls"] else 0.0
                            for item in entries]}


@pytest.mark.slow
@pytest.mark.parametrize("manager", ["naive", "toolrm"])
def test_reward_loop_manager_puts_scores_on_the_last_response_token(tokenizer, ray_session, manager):
    """verl's RewardLoopManager (a Ray reward worker) -> naive + our function (rules only), or -> our manager
    -> RemoteScorer -> a fake scoring server on loopback: the RM inputs of the chunk go in ONE request."""
    import ray
    from loopback import LoopbackServer
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager

    from toolrm_rl.data.backbones import qwen3_tokenizer_dir

    kw = "+reward.custom_reward_function.reward_kwargs"
    with LoopbackServer({("POST", "/score"): _score_by_days}) as srv:
        rm = ([f"{kw}.rm_source=server", f"{kw}.server_url={srv.url}", f"{kw}.batch_window_ms=500",
               f"{kw}.rm_transform=clip"]
              if manager == "toolrm" else [f"{kw}.rm_source=none"])
        cfg = _compose([f"actor_rollout_ref.model.path={qwen3_tokenizer_dir()}",
                        "reward.custom_reward_function.path=pkg://toolrm_rl.verl.reward", f"{kw}.w_gt=1.0",
                        f"reward.reward_manager.name={manager}", "reward.num_workers=1", *rm])
        data = make_batch(tokenizer, RESPONSES)
        loop_manager = RewardLoopManager(cfg)
        try:
            out = loop_manager.compute_rm_score(data)
        finally:
            for worker in loop_manager.reward_loop_workers:
                ray.kill(worker)  # the named workers must not clash with the next test's
        requests = list(srv.requests)
    expected = [1.0, 0.0, -1.0, -1.0] if manager == "naive" else [3.0, 5.0, -1.0, -1.0]
    scores = out.batch["rm_scores"]
    lengths = data.batch["attention_mask"][:, data.batch["prompts"].shape[1]:].sum(1)
    for i, value in enumerate(expected):
        assert scores[i, lengths[i] - 1].item() == value
        assert scores[i].abs().sum().item() == abs(value)  # nothing anywhere else
    assert set(R.KEYS) <= set(out.meta_info["reward_extra_keys"])
    assert list(out.non_tensor_batch["format_ok"]) == [1.0, 1.0, 1.0, 0.0]
    if manager == "toolrm":  # two schema-valid samples reach the RM, in one request
        assert [len(r["body"].get("items") or r["body"]["candidates"]) for r in requests] == [2]
        assert list(out.non_tensor_batch["fallback"]) == [0.0] * 4


def test_manager_marks_malformed_tools_and_scores_them_as_invalid(tokenizer, monkeypatch):
    scorer = CountingScorer()
    monkeypatch.setattr("toolrm_rl.verl.manager.get_rm_scorer", lambda *a, **k: scorer)
    mgr = _manager(tokenizer, w_gt=1.0)
    data = make_batch(tokenizer, RESPONSES)
    for info in data.non_tensor_batch["extra_info"]:
        info["tools"] = info["tools"][:-9]  # cut-off JSON

    async def run_all():
        return await asyncio.gather(*(mgr.run_single(data[i:i + 1]) for i in range(len(data))))

    outs = asyncio.run(run_all())
    assert [o["reward_score"] for o in outs] == [-1.0] * 4 and scorer.calls == 0
    assert all(o["reward_extra_info"]["tools_error"] == 1 and tuple(o["reward_extra_info"]) == R.KEYS for o in outs)


def test_one_input_the_scorer_cannot_take_fails_only_its_own_sample(tokenizer, monkeypatch):
    class Picky(CountingScorer):
        async def ascore(self, examples):
            if any(ex.calls[0].arguments.get("days") == 5 for ex in examples):
                raise TypeError("this input breaks the tokenizer")
            return await super().ascore(examples)

    scorer = Picky()
    monkeypatch.setattr("toolrm_rl.verl.manager.get_rm_scorer", lambda *a, **k: scorer)
    mgr = _manager(tokenizer, batch_window_ms=50)
    data = make_batch(tokenizer, [RESPONSES[0], RESPONSES[1], RESPONSES[0]])

    async def run_all():
        return await asyncio.gather(*(mgr.run_single(data[i:i + 1]) for i in range(len(data))))

    outs = asyncio.run(run_all())
    assert [o["reward_extra_info"]["fallback"] for o in outs] == [0.0, 1.0, 0.0]
    assert [o["reward_score"] for o in outs] == [2.0, 0.0, 2.0]
    assert scorer.sizes == [1, 1]  # the batch failed, then each sample alone (the culprit again fails)
