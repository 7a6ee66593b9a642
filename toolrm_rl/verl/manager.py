"""The ``toolrm`` reward manager for verl 0.9.1: the ToolRM reward with RM requests batched across samples.

verl's reward loop calls ``run_single`` for every sample of a chunk concurrently; this manager parses
and checks each sample at once (:func:`toolrm_rl.verl.sample.prepare`), then collects the RM inputs
of the samples that arrive within ``batch_window_ms`` (or until ``max_batch`` inputs) into ONE scorer
call (a remote batch or one in-process forward pass), instead of one request per sample. It decodes
responses itself (``skip_special_tokens`` configurable; tool markers kept) and returns the same keys
as ``compute_score`` (:data:`toolrm_rl.verl.combine.KEYS`).

Use: ``reward.reward_manager.name=toolrm`` and ``reward.custom_reward_function.path=pkg://toolrm_rl.verl.reward``
(the path must be set: without it, verl's worker sends the sample to its own RM router and never calls a
manager when ``reward.reward_model.enable=True``). Options come from
``reward.custom_reward_function.reward_kwargs`` (:class:`~toolrm_rl.verl.config.ToolRewardConfig`).

Registered in every verl process by the ``verl.plugins`` entry point ``toolrm = "toolrm_rl.verl.manager"``:
``import verl`` imports this module, whose ``@register("toolrm")`` adds the class to verl's registry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from toolrm_rl.core.render import RMExample
from toolrm_rl.scoring import ScorerUnavailable
from toolrm_rl.verl.combine import error_result, finish
from toolrm_rl.verl.config import load_reward_config
from toolrm_rl.verl.sample import prepare
from toolrm_rl.verl.scorers import get_rm_scorer, note_fallback, score_examples

__all__ = ["RMBatcher", "ToolRMRewardManager", "reward_kwargs_of"]

logger = logging.getLogger(__name__)


def reward_kwargs_of(config: Any) -> dict[str, Any]:
    """The reward options in a verl config: ``reward.custom_reward_function.reward_kwargs``."""
    try:
        from omegaconf import OmegaConf

        reward = config.get("reward") if hasattr(config, "get") else None
        fn_cfg = (reward.get("custom_reward_function") if reward is not None else None) or {}
        kwargs = fn_cfg.get("reward_kwargs") or {}
        return dict(OmegaConf.to_container(kwargs, resolve=True)) if OmegaConf.is_config(kwargs) else dict(kwargs)
    except Exception as err:
        logger.warning("toolrm manager: could not read reward_kwargs (%s); using defaults", err)
        return {}


class RMBatcher:
    """Collects RM inputs submitted concurrently on one event loop and scores them in few calls.

    ``await submit(examples)`` returns their scores; a batch is sent when ``window_s`` has passed since
    its first input or when it holds ``max_batch`` inputs. A call that fails with ``ScorerUnavailable``
    (an outage: timeouts, retries spent, an open breaker) fails every sample of that batch (each then
    falls back); any other error is retried once per sample, so one input the scorer cannot take fails
    only its own sample. ``n_calls``/``n_inputs`` count scorer calls and inputs sent.
    """

    def __init__(self, scorer: Any, window_s: float, max_batch: int) -> None:
        self.scorer, self.window_s, self.max_batch = scorer, max(0.0, window_s), max(1, max_batch)
        self._pending: list[tuple[Sequence[RMExample], asyncio.Future]] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self.n_calls = 0
        self.n_inputs = 0

    async def submit(self, examples: Sequence[RMExample]) -> list[float]:
        """Scores of ``examples`` (input order), sent together with other concurrent submissions."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._pending.append((list(examples), future))
        self._size += len(examples)
        if self._size >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending, self._size = self._pending, [], 0
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)  # keep a reference until done (the loop holds only weak ones)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[Sequence[RMExample], asyncio.Future]]) -> None:
        flat = [ex for examples, _ in batch for ex in examples]
        self.n_calls += 1
        self.n_inputs += len(flat)
        try:
            scores = await score_examples(self.scorer, flat)
            if len(scores) != len(flat):
                raise ValueError(f"scorer returned {len(scores)} scores for {len(flat)} inputs")
        except Exception as err:
            if len(batch) > 1 and not isinstance(err, ScorerUnavailable):
                # not an outage but an input the scorer could not take: it must not fail the other
                # samples, so each is scored alone (and only the culprit falls back)
                await asyncio.gather(*(self._run([item]) for item in batch))
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        except BaseException as err:
            for _, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError(repr(err)))
            raise
        pos = 0
        for examples, future in batch:
            if not future.done():
                future.set_result(scores[pos:pos + len(examples)])
            pos += len(examples)


@register("toolrm")
class ToolRMRewardManager(RewardManagerBase):
    """verl reward manager ``toolrm``: ToolRM + schema checks, RM requests batched across samples.

    The ``compute_score`` verl passes is not called: the scoring is :mod:`toolrm_rl.verl.reward`'s,
    with its options from ``reward.custom_reward_function.reward_kwargs``.
    """

    def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, reward_router_address: str | None = None,
                 reward_model_tokenizer: Any = None, **reward_kwargs: Any) -> None:
        super().__init__(config, tokenizer, compute_score)
        self.cfg = load_reward_config({**reward_kwargs_of(config), **reward_kwargs})
        self.reward_router_address = reward_router_address
        self.reward_model_tokenizer = reward_model_tokenizer
        self._batchers: dict[int, RMBatcher] = {}  # per event loop
        strip = {getattr(tokenizer, name, None) for name in ("eos_token", "pad_token", "bos_token")}
        self._strip = [t for t in strip if isinstance(t, str) and t and "tool" not in t]
        # built now (cached per process) so that a configuration error stops start-up, naming its key
        get_rm_scorer(self.cfg, reward_router_address, reward_model_tokenizer)

    def batcher(self) -> RMBatcher | None:
        """This event loop's batcher (None for rules only)."""
        scorer = get_rm_scorer(self.cfg, self.reward_router_address, self.reward_model_tokenizer)
        if scorer is None:
            return None
        loop_id = id(asyncio.get_running_loop())
        b = self._batchers.get(loop_id)
        if b is None or b.scorer is not scorer:
            b = self._batchers[loop_id] = RMBatcher(scorer, self.cfg.batch_window_ms / 1000.0, self.cfg.max_batch)
        return b

    def decode(self, response_ids: Any) -> str:
        """Response token ids -> text with this manager's special-token settings."""
        text = self.tokenizer.decode(response_ids, skip_special_tokens=self.cfg.skip_special_tokens)
        for token in self._strip:
            text = text.replace(token, "")
        return text

    async def run_single(self, data: DataProto) -> dict:
        """Score the last sample of ``data``: ``{"reward_score": float, "reward_extra_info": {KEYS...}}``."""
        try:
            item = data[-1:][0]
            response_ids = item.batch["responses"]
            length = response_ids.shape[-1]
            valid_length = int(item.batch["attention_mask"][-length:].sum())
            ids = response_ids[:valid_length].tolist()
            text = await asyncio.get_running_loop().run_in_executor(None, self.decode, ids)
            nt = item.non_tensor_batch
            reward_model = nt.get("reward_model") or {}
            ground_truth = reward_model.get("ground_truth") if hasattr(reward_model, "get") else None
            p = prepare(text, ground_truth, nt.get("extra_info"), self.cfg)
            result = finish(p, None, False)
            batcher = self.batcher() if p.examples or p.rm_skipped else None
            if batcher is not None and not p.examples:  # a valid call the RM cannot be shown: the rules alone
                result = finish(p, None, True)
            elif batcher is not None:
                try:
                    result = finish(p, await batcher.submit(p.examples), False)
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # an outage (ScorerUnavailable) or an input the RM cannot take
                    note_fallback(err)
                    result = finish(p, None, True)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the guard: a malformed item must not stop training
            logger.warning("toolrm manager: could not score a sample (%s: %.200s)", type(err).__name__, err)
            result = error_result(self.cfg.invalid_penalty)
        return {"reward_score": result["score"], "reward_extra_info": result}
