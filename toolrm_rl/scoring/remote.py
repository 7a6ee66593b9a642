"""The ``remote`` scorer: reward-model scores from a server, as a :class:`~toolrm_rl.scoring.Scorer` that fails one way.

Two wire protocols (``api=``):

- ``"toolrm"``: ``POST {url}/score`` with ``{"items": [{"tools", "conversation", "calls", "text"}]}``
  (our server renders with the checkpoint's own render spec) -> ``{"scores": [...]}``; a chunk whose
  examples all share tools and conversation (one prompt's candidates) is sent as one context with
  ``"candidates"`` instead, so the prompt travels once.
- ``"vllm"``: ``POST {url}/classify`` with ``{"model", "input": [rendered texts]}`` (``vllm serve`` of
  a ToolRM, our server, or verl's reward router); the texts are rendered HERE by the core renderer
  with the checkpoint's :class:`RenderSpec` (read from ``toolrm.json`` by :mod:`toolrm_rl.core.toolrm_json`
  when ``model`` is a local checkpoint directory, else ``render_spec``); score = ``data[i]["probs"][-1]``.

Robustness, so a training loop never dies of a reward server: one pooled httpx client per scorer
(per event loop for :meth:`RemoteScorer.ascore`); a deadline of ``timeout_s`` per HTTP attempt (also
against servers that trickle bytes); ``retries`` more attempts with exponential backoff on connect
errors, timeouts and 5xx, none on 4xx; responses over ``max_response_mb`` are cut off; replies are
validated (JSON, count, numbers, finite). A circuit breaker opens after ``breaker_failures``
consecutive failed calls (4xx do not count) and fails fast for ``breaker_reset_s``; then one probe
call is let through (half-open): success closes it, failure re-opens it. Every failure surfaces as
:class:`~toolrm_rl.scoring.ScorerUnavailable` with the reason; no other exception type escapes
``score``/``ascore`` for transport or protocol problems.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolrm_rl.core.calls import ToolCatalog
from toolrm_rl.core.render import RenderSpec, RMExample, render_example
from toolrm_rl.core.toolrm_json import read_render_spec
from toolrm_rl.scoring.protocol import ScorerUnavailable

__all__ = ["APIS", "CircuitBreaker", "RemoteScorer", "TOKEN_ENV"]

APIS = ("toolrm", "vllm")
TOKEN_ENV = "TOOLRM_SERVE_TOKEN"  # read when no token is given


class _ClientError(Exception):
    """A 4xx answer: the request is wrong, retrying cannot help, the server is healthy."""


class _TooLarge(ScorerUnavailable):
    """A response over the size limit: the same request would get it again, so no retry."""


class CircuitBreaker:
    """Consecutive-failure breaker: closed -> open (after ``failures``) -> half-open (after ``reset_s``,
    one probe) -> closed on success / open on failure. Thread-safe; cheap enough for async code."""

    def __init__(self, failures: int = 5, reset_s: float = 30.0, clock=time.monotonic) -> None:
        self.failures, self.reset_s, self.clock = max(int(failures), 1), reset_s, clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self._probing = False
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # picklable: the lock is rebuilt
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self.opened_at is None:
            return "closed"
        return "open" if self.clock() - self.opened_at < self.reset_s else "half-open"

    def before_call(self) -> None:
        """Raise :class:`ScorerUnavailable` when open (or half-open with a probe already in flight)."""
        with self._lock:
            state = self.state
            if state == "open":
                left = self.reset_s - (self.clock() - self.opened_at)
                raise ScorerUnavailable(f"circuit breaker open after {self.consecutive} consecutive failures; "
                                        f"retrying in {left:.1f}s")
            if state == "half-open":
                if self._probing:
                    raise ScorerUnavailable("circuit breaker half-open: a probe request is in flight")
                self._probing = True

    def success(self) -> None:
        """Record a good call: closes the breaker."""
        with self._lock:
            self.consecutive, self.opened_at, self._probing = 0, None, False

    def failure(self) -> None:
        """Record a failed call: opens the breaker at the threshold (or at once after a failed probe)."""
        with self._lock:
            self.consecutive += 1
            if self._probing or self.consecutive >= self.failures:
                self.opened_at = self.clock()
            self._probing = False

    def neutral(self) -> None:
        """A call that says nothing about the server's health (a 4xx): release a probe slot only."""
        with self._lock:
            self._probing = False


def _json_tools(tools: Any) -> Any:
    return tools.to_dicts() if isinstance(tools, ToolCatalog) else tools


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class RemoteScorer:
    """Scores from a ToolRM server (``api="toolrm"``) or a vLLM-style ``/classify`` server (``api="vllm"``).

    :param url: server base URL, e.g. ``http://127.0.0.1:8000`` (a trailing ``/`` is ignored).
    :param api: ``"toolrm"`` (POST /score, the server renders) or ``"vllm"`` (POST /classify, we render).
    :param model: ``vllm``: the model name sent in requests; when it is a local checkpoint directory its
        ``toolrm.json`` render spec and tokenizer are used for rendering.
    :param render_spec: ``vllm``: the RenderSpec (overrides the checkpoint's).
    :param tokenizer: ``vllm``: the tokenizer for rendering (needed for chat-template specs).
    :param token: bearer token; None: the ``TOOLRM_SERVE_TOKEN`` env var when set.
    :param timeout_s: deadline per HTTP attempt (connect + send + whole response).
    :param retries: extra attempts after a connect error, timeout or 5xx (not after a 4xx).
    :param backoff_s: sleep before retry k is ``backoff_s * 2**k``.
    :param breaker_failures: consecutive failed calls that open the circuit breaker.
    :param breaker_reset_s: how long the open breaker fails fast before a probe.
    :param max_batch: most examples per HTTP request (bigger inputs are split).
    :param max_response_mb: responses larger than this are refused.
    """

    name = "remote"

    def __init__(self, url: str, *, api: str = "toolrm", model: str | None = None, render_spec: Any = None,
                 tokenizer: Any = None, token: str | None = None, timeout_s: float = 10.0, retries: int = 2,
                 backoff_s: float = 0.2, breaker_failures: int = 5, breaker_reset_s: float = 30.0,
                 max_batch: int = 64, max_response_mb: float = 16.0) -> None:
        if api not in APIS:
            raise ValueError(f"RemoteScorer.api: expected one of {APIS}, got {api!r}")
        if max_batch < 1 or retries < 0 or timeout_s <= 0:
            raise ValueError("RemoteScorer: max_batch >= 1, retries >= 0 and timeout_s > 0 are required")
        self.url, self.api, self.model = url.rstrip("/"), api, model
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), int(retries), float(backoff_s)
        self.max_batch, self.max_response_bytes = int(max_batch), int(max_response_mb * 1024 * 1024)
        self.breaker = CircuitBreaker(breaker_failures, breaker_reset_s)
        self.render_spec, self.tokenizer = render_spec, tokenizer
        if api == "vllm":
            self._load_render_settings()
        self._client = None
        self._aclients: dict[int, Any] = {}  # id(event loop) -> httpx.AsyncClient
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ set-up
    def _load_render_settings(self) -> None:
        path = Path(self.model) if self.model else None
        if path is not None and path.is_dir():
            if self.render_spec is None:
                self.render_spec = read_render_spec(path)  # None without toolrm.json
            if self.tokenizer is None and (path / "tokenizer_config.json").is_file():
                from transformers import AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        if isinstance(self.render_spec, dict):
            self.render_spec = RenderSpec.from_dict(self.render_spec)
        if self.render_spec is None:
            raise ValueError("RemoteScorer(api='vllm') renders locally: give render_spec, or model= a local "
                             "ToolRM checkpoint directory with toolrm.json")
        if self.render_spec.mode == "chat_template" and self.tokenizer is None:
            raise ValueError("RemoteScorer(api='vllm'): a chat_template render spec needs tokenizer= (or model= a "
                             "local checkpoint directory with its tokenizer)")

    def __getstate__(self) -> dict[str, Any]:  # picklable for Ray workers: clients and locks are rebuilt
        state = dict(self.__dict__)
        state.update(_client=None, _aclients={}, _lock=None)
        state["breaker"] = CircuitBreaker(self.breaker.failures, self.breaker.reset_s)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _limits_timeout(self):
        import httpx

        return httpx.Timeout(self.timeout_s), httpx.Limits(max_connections=64, max_keepalive_connections=16)

    def _sync_client(self):
        import httpx

        with self._lock:
            if self._client is None:
                timeout, limits = self._limits_timeout()
                self._client = httpx.Client(timeout=timeout, limits=limits, headers=self._headers())
            return self._client

    def _async_client(self):
        import httpx

        key = id(asyncio.get_running_loop())
        client = self._aclients.get(key)
        if client is None:
            timeout, limits = self._limits_timeout()
            client = httpx.AsyncClient(timeout=timeout, limits=limits, headers=self._headers())
            self._aclients = {key: client}  # a client belongs to one loop; an old loop's client is dropped
        return client

    def close(self) -> None:
        """Close the pooled sync client (async clients close with their event loop)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # ------------------------------------------------------------------ requests
    def _request(self, examples: Sequence[RMExample]) -> tuple[str, dict[str, Any]]:
        """``(path, JSON body)`` for one chunk."""
        if self.api == "toolrm":
            candidates = [{"calls": [{"name": c.name, "arguments": c.arguments} for c in ex.calls],
                           **({"text": ex.text} if ex.text is not None else {})} for ex in examples]
            tools = [_json_tools(ex.tools) for ex in examples]  # once each: compared, then sent
            first = examples[0]
            if len(examples) > 1 and all(ex.conversation == first.conversation and t == tools[0]
                                         for ex, t in zip(examples[1:], tools[1:])):
                # one prompt's candidates (a GRPO group, a Best-of-N set): its tools and conversation sent once
                return "/score", {"tools": tools[0], "conversation": first.conversation, "candidates": candidates}
            items = [{"tools": t, "conversation": ex.conversation, **cand}
                     for ex, t, cand in zip(examples, tools, candidates)]
            return "/score", {"items": items}
        texts = [render_example(ex, spec=self.render_spec, tokenizer=self.tokenizer).text for ex in examples]
        return "/classify", {"model": self.model, "input": texts}

    def _parse(self, raw: bytes, n: int) -> list[float]:
        """Validated scores from a response body, or ScorerUnavailable naming what is wrong."""
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as err:
            raise ScorerUnavailable(f"{self.url}: response is not valid JSON ({err})") from None
        if self.api == "toolrm":
            scores = data.get("scores") if isinstance(data, dict) else None
            if not isinstance(scores, list):
                raise ScorerUnavailable(f"{self.url}/score: response has no 'scores' list")
        else:
            rows = data.get("data") if isinstance(data, dict) else None
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ScorerUnavailable(f"{self.url}/classify: response has no 'data' list of objects")
            if all(isinstance(r.get("index"), int) and not isinstance(r.get("index"), bool) for r in rows):
                rows = sorted(rows, key=lambda r: r["index"])
            scores = [r["probs"][-1] if isinstance(r.get("probs"), list) and r["probs"] else None for r in rows]
        if len(scores) != n:
            raise ScorerUnavailable(f"{self.url}: {len(scores)} scores for {n} inputs")
        bad = [i for i, s in enumerate(scores) if not _is_number(s)]
        if bad:
            raise ScorerUnavailable(f"{self.url}: score {bad[0]} is not a finite number: {scores[bad[0]]!r:.40}")
        return [float(s) for s in scores]

    def _check_status(self, status: int, raw: bytes, path: str) -> None:
        if status < 400:
            return
        detail = raw[:300].decode("utf-8", "replace")
        if status < 500:
            raise _ClientError(f"{self.url}{path}: HTTP {status}: {detail}")
        raise ScorerUnavailable(f"{self.url}{path}: HTTP {status}: {detail}")

    def _too_big(self, path: str) -> ScorerUnavailable:
        return _TooLarge(f"{self.url}{path}: response larger than {self.max_response_bytes} bytes")

    def _post_once(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        import httpx

        deadline = time.monotonic() + self.timeout_s
        try:
            with self._sync_client().stream("POST", self.url + path, json=body) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_response_bytes:
                    raise self._too_big(path)
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        raise self._too_big(path)
                    if time.monotonic() > deadline:
                        raise ScorerUnavailable(f"{self.url}{path}: response not complete within {self.timeout_s}s")
                    chunks.append(chunk)
                return response.status_code, b"".join(chunks)
        except httpx.HTTPError as err:
            raise ScorerUnavailable(f"{self.url}{path}: {type(err).__name__}: {err or 'no detail'}") from None

    async def _apost_once(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        import httpx

        async def go() -> tuple[int, bytes]:
            async with self._async_client().stream("POST", self.url + path, json=body) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_response_bytes:
                    raise self._too_big(path)
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        raise self._too_big(path)
                    chunks.append(chunk)
                return response.status_code, b"".join(chunks)

        try:
            return await asyncio.wait_for(go(), self.timeout_s)
        except asyncio.TimeoutError:
            raise ScorerUnavailable(f"{self.url}{path}: no complete response within {self.timeout_s}s") from None
        except httpx.HTTPError as err:
            raise ScorerUnavailable(f"{self.url}{path}: {type(err).__name__}: {err or 'no detail'}") from None

    def _score_chunk(self, examples: Sequence[RMExample]) -> list[float]:
        path, body = self._request(examples)
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                status, raw = self._post_once(path, body)
                self._check_status(status, raw, path)
            except _TooLarge:
                raise
            except ScorerUnavailable as err:
                last = err
                continue
            return self._parse(raw, len(examples))
        raise ScorerUnavailable(f"{last} (after {self.retries + 1} attempts)")

    async def _ascore_chunk(self, examples: Sequence[RMExample]) -> list[float]:
        path, body = self._request(examples)
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                status, raw = await self._apost_once(path, body)
                self._check_status(status, raw, path)
            except _TooLarge:
                raise
            except ScorerUnavailable as err:
                last = err
                continue
            return self._parse(raw, len(examples))
        raise ScorerUnavailable(f"{last} (after {self.retries + 1} attempts)")

    def _chunks(self, examples: Sequence[RMExample]) -> list[Sequence[RMExample]]:
        return [examples[k:k + self.max_batch] for k in range(0, len(examples), self.max_batch)]

    def _guarded(self, err: BaseException) -> ScorerUnavailable:
        """Book the failure and return it as ScorerUnavailable. Only server-side failures (transport,
        5xx, bad replies) count for the breaker; a 4xx or an input we could not render does not."""
        if isinstance(err, ScorerUnavailable):
            self.breaker.failure()
            return err
        self.breaker.neutral()
        return ScorerUnavailable(f"{self.url}: {type(err).__name__}: {err}")

    # ------------------------------------------------------------------ public
    def score(self, examples: Sequence[RMExample]) -> list[float]:
        """Scores in input order; raises :class:`ScorerUnavailable` on any failure (see the module docstring)."""
        examples = list(examples)
        if not examples:
            return []
        self.breaker.before_call()
        try:
            out = [s for chunk in self._chunks(examples) for s in self._score_chunk(chunk)]
        except Exception as err:
            raise self._guarded(err) from None
        self.breaker.success()
        return out

    async def ascore(self, examples: Sequence[RMExample]) -> list[float]:
        """:meth:`score` with ``httpx.AsyncClient``; chunks are sent concurrently."""
        examples = list(examples)
        if not examples:
            return []
        self.breaker.before_call()
        try:
            parts = await asyncio.gather(*(self._ascore_chunk(c) for c in self._chunks(examples)))
        except Exception as err:
            raise self._guarded(err) from None
        self.breaker.success()
        return [s for part in parts for s in part]
