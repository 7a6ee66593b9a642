"""ToolRM + schema checks as a verl 0.9.1 reward: the entry point ``compute_score``.

Point verl at it with ``reward.custom_reward_function.path=pkg://toolrm_rl.verl.reward`` (or the file
``reward_fns/toolrm_reward.py``); options go in ``reward.custom_reward_function.reward_kwargs``
(:class:`~toolrm_rl.verl.config.ToolRewardConfig`, also from ``$TOOLRM_REWARD_CONFIG``).

One sample runs through the modules of this package, one concern each:

- :mod:`toolrm_rl.verl.config`: the options (a bad value raises ``ValueError`` naming the key);
- :mod:`toolrm_rl.verl.sample`: parse, split (:mod:`toolrm_rl.verl.turns`) and check the response
  against the row's ``extra_info``; the RM inputs of its valid turns;
- :mod:`toolrm_rl.verl.scorers`: the RM scorer of the config (router, server, in process, or none),
  built once per process;
- :mod:`toolrm_rl.verl.combine`: the combination rule and the returned dict (:data:`KEYS`).

Failures: a configuration error (a bad option value, rm_source=router without a router, an
in-process ``model_path`` that is not a checkpoint, an unreadable ``toolrm.json``) raises at start-up,
on the first call, naming the key. At run time nothing raises: an RM outage (``ScorerUnavailable``:
timeouts, bounded retries, an open circuit breaker, bad replies) or an input the RM cannot take gives the
rule score with ``fallback = 1`` and a logged reason; bad rollout input (unparsable text, hostile JSON,
huge outputs, unusable tools) gets the defined penalty, the reason in the returned fields and the log.
Every sample returns the same keys (:data:`KEYS`), each step linear in the response length.
"""

from __future__ import annotations

import asyncio
from typing import Any

from toolrm_rl.verl.combine import KEYS, combine, combine_turns, error_result, finish
from toolrm_rl.verl.config import ToolRewardConfig, load_reward_config
from toolrm_rl.verl.sample import Prepared, prepare
from toolrm_rl.verl.scorers import get_rm_scorer, note_fallback, score_examples
from toolrm_rl.verl.turns import split_turns

__all__ = [
    "KEYS",
    "Prepared",
    "ToolRewardConfig",
    "combine",
    "combine_turns",
    "compute_score",
    "finish",
    "get_rm_scorer",
    "load_reward_config",
    "prepare",
    "reward_sync",
    "score_examples",
    "split_turns",
]


async def compute_score(data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
                        extra_info: Any = None, **reward_kwargs: Any) -> dict[str, float]:
    """verl 0.9.1 reward function: ToolRM + schema checks for one sample.

    :param data_source: the row's ``data_source`` (unused; any value).
    :param solution_str: the decoded response (several turns and observations for tool_agent rollouts).
    :param ground_truth: ``reward_model.ground_truth`` (gold calls as JSON, or anything: then no gold).
    :param extra_info: the row's ``extra_info`` (:mod:`toolrm_rl.core.extra_info`).
    :param reward_kwargs: :class:`ToolRewardConfig` options, plus ``reward_router_address`` and
        ``reward_model_tokenizer`` which verl adds when its reward model is enabled.
    :returns: a dict with the keys of :data:`KEYS` (floats), whatever the sample; never raises for
        sample inputs or RM failures. Raises ``ValueError`` naming the key for a configuration error
        (on the first call: the scorer is built before the sample is looked at).
    """
    router = reward_kwargs.pop("reward_router_address", None)
    rm_tokenizer = reward_kwargs.pop("reward_model_tokenizer", None)
    cfg = load_reward_config(reward_kwargs)
    scorer = get_rm_scorer(cfg, router, rm_tokenizer)  # configuration errors raise here (cached after the first)
    try:
        p = prepare(solution_str, ground_truth, extra_info, cfg)
        if scorer is None or (not p.examples and not p.rm_skipped):
            return finish(p, None, False)
        if not p.examples:  # a valid call the RM cannot be shown: the rules alone
            return finish(p, None, True)
        try:
            scores = await score_examples(scorer, p.examples)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # an outage (ScorerUnavailable) or an input the RM cannot take: the rules
            note_fallback(err)
            return finish(p, None, True)
        return finish(p, scores, False)
    except asyncio.CancelledError:
        raise
    except Exception:  # pragma: no cover - prepare/finish already guard themselves
        return error_result(cfg.invalid_penalty)


def reward_sync(data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
                extra_info: Any = None, **reward_kwargs: Any) -> dict[str, float]:
    """:func:`compute_score` for synchronous callers (scripts, notebooks); not for use inside an event loop."""
    return asyncio.run(compute_score(data_source, solution_str, ground_truth, extra_info, **reward_kwargs))
