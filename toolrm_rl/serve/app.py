"""The ToolRM scoring server: a FastAPI app over one :class:`~toolrm_rl.model.ToolRM` with dynamic batching.

Routes (JSON in, JSON out; every error, 404 and 405 included, is ``{"error": {"type", "message", ...}}``
with a 4xx/5xx status; a bad field adds ``"field"``, its JSON path such as ``input[2]`` or
``items[1].calls``, and a bad ``/score`` item its ``"index"``):

- ``POST /score`` (native): ``{"items": [item, ...]}`` -> ``{"scores": [...], "model": name, "render": spec}``.
  An item is ``{"tools": [...] | JSON str, "conversation": [...] | JSON str, "calls": [...] | JSON str,
  "text": optional answer text}`` or, instead of ``calls``, the raw model output ``"text"`` with
  ``"format"`` (``hermes`` default, ``json``, ``pythonic``, ``openai``, ``auto``), parsed by the core
  parser. Calls are ``[{"name", "arguments"}]``, BFCL ``[{"f": {...}}]`` or OpenAI ``tool_calls``.
  Items are rendered with the checkpoint's own :class:`RenderSpec` (its ``toolrm.json``) by the core
  renderer, exactly as :meth:`ToolRM.score` renders them in process.
- ``POST /score`` (one context, many candidates: a GRPO group, a Best-of-N set): ``{"tools": ...,
  "conversation": ..., "candidates": [{"calls": ...} | {"text": ..., "format": ...}, ...]}`` -> the same
  response, one score per candidate. Validated by a pydantic model: a bad candidate is a 422 with its
  ``"index"`` and ``"field"`` (``candidates[2].calls``).
- ``POST /classify`` (vLLM-compatible): ``{"model": ..., "input": text | [texts]}`` with texts already
  rendered -> vLLM's classification response ``{"id", "object": "list", "created", "model",
  "data": [{"index", "label", "probs", "num_classes"}], "usage"}``. A ToolRM has one label, so
  ``num_classes`` is 1 and ``probs`` is ``[score]`` with the RAW scalar reward (the logit, what
  ``/score`` returns). vLLM itself applies a sigmoid to one-label heads by default; send
  ``"use_activation": true`` (or the older ``"activation": true``) to get ``[sigmoid(score)]``.
  verl reads ``data[i]["probs"][-1]``.
- ``GET /health``: model name, device, backbone, queue depth, forwards run, uptime. With a token
  set, a request without it gets only ``{"status": "ok" | "draining"}`` (a liveness probe needs no
  secret, and learns nothing about the model); the model path is never shown.

Dynamic batching (:class:`Batcher`): every request's texts join one queue, in chunks of at most
``max_batch``; a background task takes the first waiting chunk, adds more until ``max_batch`` texts
or ``max_wait_ms`` have passed, and runs ONE scoring call in a worker thread (the event loop stays
responsive); each request's future gets its own scores back. With ``group`` (the default) and a decoder
backbone, ``/score`` texts travel with their rendered context, and the texts of one context in a batch
(the candidates of one request, or of several requests for the same prompt) are scored against one shared
prefix (:meth:`ToolRM.score_rendered`; equal to independent scoring within float tolerance). Encoders,
and ``/classify`` texts, are scored independently.

Bad input is a JSON 4xx, never a 500: a body over ``max_body_mb`` or more than ``max_items`` items
413; a body that is not UTF-8 JSON 400; a wrong or missing field, a wrong type, an empty input or a
lone UTF-16 surrogate (JSON ``"\\ud800"``) 422 naming the field; a body not received within
``body_timeout_s`` 408. A bug is a JSON 500 with the traceback in the log.

Slow and idle clients are bounded (:func:`uvicorn_config`): the request head must arrive within
``header_timeout_s``, the body within ``body_timeout_s``, an idle kept-alive connection is closed
after ``keep_alive_s``, and above ``max_connections`` uvicorn answers 503. With a bearer token set,
every route but a bare ``/health`` (``/docs`` and ``/openapi.json`` too) answers 401 without it;
:func:`check_exposure` refuses a non-loopback ``host`` without a token unless ``insecure``. On
shutdown (SIGTERM under uvicorn, or the lifespan end) new requests get 503 and the queue is drained
before the worker stops.

fastapi, pydantic and uvicorn are imported inside functions only (the serve extra); torch only
when a checkpoint path is loaded.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at runtime.

import asyncio
import functools
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from toolrm_rl.config import option
from toolrm_rl.core.calls import (
    CatalogError,
    ToolCatalog,
    calls_from_any,
    load_json_field,
)
from toolrm_rl.core.parse import FORMATS, parse
from toolrm_rl.core.render import RMExample
from toolrm_rl.scoring.factory import build_scorer
from toolrm_rl.scoring.remote import TOKEN_ENV

__all__ = [
    "Batcher",
    "ItemError",
    "ServeConfig",
    "check_exposure",
    "create_app",
    "examples_from_items",
    "head_timeout_protocol",
    "is_loopback",
    "load_model",
    "lone_surrogate_path",
    "resolve_token",
    "run_server",
    "uvicorn_config",
]

log = logging.getLogger(__name__)

PARSE_FORMATS = (*FORMATS, "auto")  # a candidate's raw-output formats (core.parse)


@dataclass
class ServeConfig:
    """Options of ``toolrm serve`` (the CLI flags have the same names)."""

    model: str = option("", "ToolRM checkpoint directory (with toolrm.json), or a plain sequence-classification one.")
    host: str = option("127.0.0.1", "Interface to bind; loopback unless you mean to expose the server.")
    port: int = option(8000, "TCP port (0: any free port).")
    token_env: str | None = option(TOKEN_ENV, "Env var holding the bearer token; unset/empty: no auth.")
    max_batch: int = option(64, "Most texts per forward call of the dynamic batcher.")
    max_wait_ms: float = option(5.0, "How long the batcher waits for more texts after the first one arrives.")
    max_body_mb: float = option(8.0, "Largest request body accepted (413 above).")
    max_items: int = option(512, "Most items / input texts in one request (413 above).")
    device: str = option("cpu", "Torch device for the model: cpu, cuda, cuda:1, ...")
    dtype: str | None = option(None, "Model dtype (float32, bfloat16, auto); None: float32 on CPU, bf16 elsewhere.")
    torch_threads: int | None = option(None, "torch.set_num_threads for CPU forwards; None: torch's default. "
                                      "On a shared CPU 1 avoids OpenMP threads waiting for each other.")
    served_name: str | None = option(None, "Model name reported in responses; None: the checkpoint directory name.")
    group: bool = option(True, "Decoder backbones: score /score candidates whose rendered context is identical "
                         "against one shared prefix run once (KV cache); same scores within float tolerance, "
                         "several times faster for groups of candidates. Encoders always score independently.")
    header_timeout_s: float = option(10.0, "Seconds a connection has to send a complete request head (from the "
                                     "connection, or a later request's first byte); then it is closed.")
    body_timeout_s: float = option(30.0, "Seconds to receive the whole request body once its head arrived (408 after).")
    keep_alive_s: float = option(5.0, "Seconds an idle kept-alive connection stays open between requests.")
    max_connections: int = option(1000, "Most open connections and requests in flight (uvicorn limit_concurrency; "
                                  "503 above); 0: no cap.")
    insecure: bool = option(False, "Allow a non-loopback host without a bearer token (anyone reaching the port "
                            "can use the model).")

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s", "max_body_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_connections < 0 or self.max_items < 1 or self.max_batch < 1:
            raise ValueError(f"max_connections must be >= 0 (got {self.max_connections}), max_items and max_batch "
                             f">= 1 (got {self.max_items}, {self.max_batch})")


class ItemError(ValueError):
    """A request item that cannot be scored (-> 422): carries its ``index``, the offending ``field``
    ("" for the item itself) and ``path``, where both are in the request (``items[1].calls``; ``where``
    names the request's list: ``items``, or ``candidates`` for a group request)."""

    def __init__(self, index: int | None, field_name: str, message: str, *, where: str = "items") -> None:
        self.index, self.field = index, field_name
        item = f"{where}[{index}]" if index is not None else ""
        self.path = ".".join(p for p in (item, field_name) if p) or "items"
        super().__init__(f"{self.path}: {message}")


class _FieldError(ValueError):
    """One field of an item or candidate that cannot be decoded (``field`` names it)."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        super().__init__(message)


def _decode_tools(value: Any) -> ToolCatalog:
    """An item's ``tools`` (a list or its JSON string) as a catalog; :class:`_FieldError` otherwise."""
    try:
        return ToolCatalog.load(value)
    except (CatalogError, TypeError, ValueError, RecursionError) as err:
        raise _FieldError("tools", str(err) or type(err).__name__) from None


def _decode_conversation(value: Any) -> list:
    """An item's ``conversation`` (a list of messages or its JSON string; None: empty)."""
    try:
        conversation = load_json_field(value, "conversation") or []
    except (CatalogError, RecursionError) as err:
        raise _FieldError("conversation", str(err) or type(err).__name__) from None
    if not isinstance(conversation, list) or not all(isinstance(m, (dict, list)) for m in conversation):
        raise _FieldError("conversation", "expected a list of {role, content} messages")
    return conversation


def _decode_calls(value: Any) -> list:
    """A candidate's ``calls`` (any form :func:`calls_from_any` reads, or its JSON string)."""
    try:
        return calls_from_any(value)
    except (CatalogError, TypeError, ValueError, AttributeError, RecursionError) as err:
        raise _FieldError("calls", str(err) or type(err).__name__) from None


def _decode_candidate(candidate: dict) -> tuple[list, str | None]:
    """``(calls, answer text)`` of one candidate: its ``calls``, or its raw model output ``text`` parsed in
    ``format`` (an abstention keeps its text; parsed calls drop it, their text is the calls themselves)."""
    text = candidate.get("text")
    if text is not None and not isinstance(text, str):
        raise _FieldError("text", f"expected a string, got {type(text).__name__}")
    if "calls" in candidate:
        return _decode_calls(candidate["calls"]), text
    if text is None:
        raise _FieldError("calls", "missing: give 'calls' or the raw model output in 'text'")
    fmt = candidate.get("format", "hermes")
    if not isinstance(fmt, str):
        raise _FieldError("format", f"expected a string, got {type(fmt).__name__}")
    result = parse(text, fmt)
    if not result.ok:
        field_name = "format" if result.error.kind == "bad_input" and "format" in result.error.message else "text"
        raise _FieldError(field_name, f"{result.error.kind}: {result.error.message}")
    return result.calls, None if result.calls else text.strip()


def examples_from_items(items: Any) -> list[RMExample]:
    """Decode ``/score`` items into :class:`RMExample` (format in the module docstring).

    Raises :class:`ItemError` naming the first bad item's index and field."""
    if not isinstance(items, list):
        raise ItemError(None, "items", f"expected a list of items, got {type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ItemError(i, "", f"expected an object, got {type(item).__name__}")
        if "tools" not in item:
            raise ItemError(i, "tools", "missing")
        try:
            tools = _decode_tools(item["tools"])
            conversation = _decode_conversation(item.get("conversation"))
            calls, text = _decode_candidate(item)
        except _FieldError as err:
            raise ItemError(i, err.field, str(err)) from None
        out.append(RMExample(tools, conversation, calls, text))
    return out


class Batcher:
    """Merge concurrent scoring requests into few calls of ``score_fn(texts) -> scores``.

    :param score_fn: scores a list of texts (runs in one worker thread, never two calls at once); a
        "text" is whatever the caller submits, passed through as it is (the app sends ``(text, context)``).
    :param max_batch: most texts per call; a longer request is split into chunks.
    :param max_wait_ms: after the first waiting chunk, how long to wait for more before scoring.
    """

    def __init__(self, score_fn: Callable[[list[str]], list[float]], *, max_batch: int = 64,
                 max_wait_ms: float = 5.0) -> None:
        if max_batch < 1:
            raise ValueError("Batcher.max_batch must be >= 1")
        self.score_fn, self.max_batch, self.max_wait_s = score_fn, max_batch, max(max_wait_ms, 0.0) / 1000.0
        self.forwards = 0          # scoring calls made
        self.items_scored = 0      # texts scored
        self.batch_sizes: list[int] = []  # the last few batch sizes (for tests and /health)
        self.pending = 0           # texts waiting or being scored
        self.closing = False
        self._queue: asyncio.Queue | None = None
        self._arrived: asyncio.Event | None = None  # set on every submit: wakes a batch that waits for more
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="toolrm-score")

    def start(self) -> None:
        """Start the background task in the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._queue, self._arrived = asyncio.Queue(), asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, texts: Sequence[Any]) -> list[float]:
        """Scores of ``texts`` (input order), batched with whatever else is waiting."""
        if self.closing:
            raise RuntimeError("server is shutting down")
        if not texts:
            return []
        self.start()
        loop = asyncio.get_running_loop()
        futures = []
        for k in range(0, len(texts), self.max_batch):
            chunk = list(texts[k:k + self.max_batch])
            fut = loop.create_future()
            self.pending += len(chunk)
            self._queue.put_nowait((chunk, fut))
            futures.append(fut)
        self._arrived.set()
        results = await asyncio.gather(*futures)
        return [s for part in results for s in part]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        carry = None  # a chunk that did not fit the previous batch
        while True:
            first = carry if carry is not None else await self._queue.get()
            carry = None
            if first is None:  # close() sentinel: everything before it has been scored
                return
            batch, size = [first], len(first[0])
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    # wait on an event, not on queue.get(): a get cancelled by the timeout can lose an item
                    self._arrived.clear()
                    try:
                        await asyncio.wait_for(self._arrived.wait(), timeout)
                    except asyncio.TimeoutError:
                        break
                    continue
                if nxt is None:  # the close() sentinel: score this batch, then stop
                    self._queue.put_nowait(None)
                    break
                if size + len(nxt[0]) > self.max_batch:
                    carry = nxt  # starts the next batch
                    break
                batch.append(nxt)
                size += len(nxt[0])
            await self._score(batch, loop)

    async def _score(self, batch: list, loop: asyncio.AbstractEventLoop) -> None:
        texts = [t for chunk, _ in batch for t in chunk]
        try:
            scores = await loop.run_in_executor(self._executor, self.score_fn, texts)
            if len(scores) != len(texts):
                raise RuntimeError(f"scorer returned {len(scores)} scores for {len(texts)} texts")
        except Exception as err:  # every waiting request gets the error, the loop goes on
            log.exception("scoring a batch of %d texts failed", len(texts))
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(RuntimeError(f"scoring failed: {type(err).__name__}: {err}"))
        else:
            k = 0
            for chunk, fut in batch:
                if not fut.done():
                    fut.set_result([float(s) for s in scores[k:k + len(chunk)]])
                k += len(chunk)
            self.items_scored += len(texts)
        finally:
            self.forwards += 1
            self.batch_sizes = (self.batch_sizes + [len(texts)])[-256:]
            self.pending -= len(texts)

    async def close(self) -> None:
        """Refuse new work, score everything already queued, then stop the task and the worker thread."""
        self.closing = True
        if self._task is not None and not self._task.done():
            self._queue.put_nowait(None)
            self._arrived.set()
            await self._task
        self._executor.shutdown(wait=True)


def load_model(path: str, *, device: str = "cpu", dtype: str | None = None, torch_threads: int | None = None) -> Any:
    """Load a ToolRM checkpoint for serving through the scorer factory (the ``rm`` scorer's model; torch is
    imported here); ``torch_threads`` sets the process-wide CPU thread count."""
    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)
    return build_scorer("rm", path, {"device": device, "dtype": dtype}).model


def _json_path(loc: Sequence[Any]) -> str:
    """``("items", 0, "tools")`` -> ``items[0].tools`` (the field a 422 names)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:  # keys are echoed: never let a lone surrogate into the response
            out += ("." if out else "") + str(part).encode("utf-8", "backslashreplace").decode("utf-8")
    return out


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# A JSON escape of a UTF-16 surrogate: the only way a lone surrogate gets past a strict UTF-8 decode.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF][0-9a-fA-F]{2}")


def lone_surrogate_path(value: Any) -> str | None:
    """The JSON path (``input[2]``, ``items[0].conversation[1].content``) of the first string or key in
    ``value`` that holds a lone UTF-16 surrogate (JSON ``"\\ud800"``: not Unicode text, tokenizers
    reject it), or None. Iterative, so any depth ``json.loads`` accepted is fine.

    >>> lone_surrogate_path({"items": [{"text": "ok"}, {"text": "x\\ud800"}]})
    'items[1].text'
    >>> lone_surrogate_path({"input": ["caf\u00e9", "\U0001F600"]}) is None  # what JSON's "\\ud83d\\ude00" decodes to
    True
    """
    stack: list[tuple[Any, tuple]] = [(value, ())]
    while stack:
        node, loc = stack.pop()
        if isinstance(node, str):
            if not _is_unicode(node):
                return _json_path(loc) or "body"
        elif isinstance(node, dict):
            for key in node:
                if not _is_unicode(key):
                    return _json_path(loc + (key,))
            stack.extend((v, loc + (k,)) for k, v in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend((v, loc + (i,)) for i, v in reversed(list(enumerate(node))))
    return None


def _error(status: int, kind: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any):
    """The one error response: ``{"error": {"type", "message", ...extra}}``, ASCII JSON (so no echoed
    text can make it unencodable), the message cut at 1,000 characters."""
    from fastapi.responses import Response

    if len(message) > 1000:
        message = message[:1000] + "..."
    body = json.dumps({"error": {"type": kind, "message": message, **extra}}, ensure_ascii=True, default=str)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


_CLOSE = {"Connection": "close"}  # the request was not read to its end: this connection cannot carry another


def resolve_token(config: ServeConfig) -> str | None:
    """The bearer token from the env var ``config.token_env`` (unset or empty: None)."""
    return (os.environ.get(config.token_env) or None) if config.token_env else None


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``localhost``, 127.0.0.0/8, ``::1``).

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0"), is_loopback("example.org")
    (True, True, False, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost, or "" (every interface)
        return False


def check_exposure(config: ServeConfig, token: str | None = None) -> None:
    """Refuse to serve beyond loopback without a bearer token unless ``config.insecure``.

    :param token: the token the server will use; None: read ``config.token_env``.
    :raises ValueError: binding ``config.host`` would let anyone who reaches the port use the model."""
    token = token or resolve_token(config)
    if is_loopback(config.host) or token or config.insecure:
        return
    env = config.token_env or TOKEN_ENV
    raise ValueError(f"--host {config.host} is reachable beyond this machine and no bearer token is set: set "
                     f"{env} (clients send 'Authorization: Bearer <token>'), bind 127.0.0.1, or pass --insecure "
                     f"to serve unauthenticated anyway")


def _bearer_ok(headers: Any, token: str | None) -> bool:
    """Whether the ``Authorization`` header carries ``token`` (always True without a token)."""
    if token is None:
        return True
    scheme, _, value = (headers.get("authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


class _BearerAuth:
    """ASGI middleware: with a token set, every path but ``/health`` (which answers a bare liveness
    status without it) needs ``Authorization: Bearer <token>``: /score, /classify, /docs, /openapi.json,
    and unknown paths alike (a 401 does not tell which routes exist)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            from starlette.datastructures import Headers

            if not _bearer_ok(Headers(scope=scope), self.token):
                response = _error(401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)",
                                  headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


@functools.cache
def _request_models() -> tuple[type, type, type]:
    """The pydantic models of the ``/score`` bodies (items; one context with candidates) and the ``/classify``
    body (pydantic comes with fastapi, the serve extra: built on first use)."""
    from typing import Annotated, Literal

    from pydantic import (
        BaseModel,
        ConfigDict,
        Field,
        PrivateAttr,
        StrictBool,
        StrictStr,
        field_validator,
        model_validator,
    )
    from pydantic_core import PydanticCustomError

    class ScoreRequest(BaseModel):
        """``{"items": [item, ...]}``; each item is decoded by :func:`examples_from_items`."""

        items: list[Any]

    def decoded(decode: Callable[[Any], Any], value: Any) -> Any:
        try:
            return decode(value)
        except _FieldError as err:  # pydantic reports a ValueError at the field it validates
            raise ValueError(str(err)) from None

    class Candidate(BaseModel):
        """One candidate of a group request: ``calls``, or the raw model output ``text`` in ``format``."""

        model_config = ConfigDict(extra="forbid")
        calls: Any = None
        format: Literal[PARSE_FORMATS] = "hermes"
        text: StrictStr | None = None
        _parsed: tuple[list, str | None] | None = PrivateAttr(default=None)

        @model_validator(mode="before")
        @classmethod
        def calls_or_text(cls, value: Any) -> Any:
            if isinstance(value, dict) and value.get("calls") is None and value.get("text") is None:
                raise ValueError("give 'calls' or the raw model output in 'text'")
            return value

        @field_validator("calls")
        @classmethod
        def calls_decoded(cls, value: Any) -> Any:
            return None if value is None else decoded(_decode_calls, value)

        @model_validator(mode="after")
        def text_parsed(self) -> "Candidate":
            # raw output is parsed once, here (after format is known); the calls are kept for calls_and_text
            if self.calls is None:
                try:
                    self._parsed = _decode_candidate({"text": self.text, "format": self.format})
                except _FieldError as err:  # located at the candidate; _validated appends ctx["field"]
                    raise PydanticCustomError("invalid_candidate", "{message}",
                                              {"message": str(err), "field": err.field}) from None
            return self

        def calls_and_text(self) -> tuple[list, str | None]:
            """``(calls, answer text)`` as :func:`examples_from_items` decodes an item's."""
            return (self.calls, self.text) if self.calls is not None else self._parsed

    class GroupScoreRequest(BaseModel):
        """``{"tools", "conversation", "candidates": [...]}``: one context, many candidates (scored with a
        shared prefix on decoder backbones). Unknown keys (``items`` too) are refused."""

        model_config = ConfigDict(extra="forbid")
        tools: Any
        conversation: Any = None
        candidates: list[Candidate]

        @field_validator("tools")
        @classmethod
        def tools_decoded(cls, value: Any) -> Any:
            return decoded(_decode_tools, value)

        @field_validator("conversation")
        @classmethod
        def conversation_decoded(cls, value: Any) -> Any:
            return decoded(_decode_conversation, value)

        def examples(self) -> list[RMExample]:
            """One :class:`RMExample` per candidate, sharing the decoded tools and conversation."""
            return [RMExample(self.tools, self.conversation or [], *c.calls_and_text()) for c in self.candidates]

    class ClassifyRequest(BaseModel):
        """vLLM's classification request; other vLLM fields (``user``, ``truncate_prompt_tokens``, ...) are ignored."""

        model_config = ConfigDict(extra="ignore")
        model: StrictStr | None = None
        input: list[Annotated[StrictStr, Field(min_length=1)]] = Field(min_length=1)
        use_activation: StrictBool | None = None
        activation: StrictBool | None = None  # vLLM's older name

        @field_validator("input", mode="before")
        @classmethod
        def one_or_many(cls, value: Any) -> Any:
            if isinstance(value, str):
                return [value]
            if isinstance(value, list) and value and all(
                    isinstance(v, int) or isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
                raise ValueError("token ids are not supported: send rendered texts")
            return value

    return ScoreRequest, GroupScoreRequest, ClassifyRequest


def _validated(model_cls: type, body: Any) -> tuple[Any, Any]:
    """``(model_cls(**body), None)`` or ``(None, 422 response)`` naming the first bad field."""
    from pydantic import ValidationError

    try:
        return model_cls.model_validate(body), None
    except ValidationError as err:
        errors = err.errors(include_url=False, include_input=False)
        for e in errors:  # an error raised for a whole candidate may name its field in ctx (Candidate.text_parsed)
            if (field_name := (e.get("ctx") or {}).get("field")) is not None:
                e["loc"] = (*e["loc"], field_name)
        loc = errors[0]["loc"]
        where = _json_path(loc) or "body"
        detail = "; ".join(f"{_json_path(e['loc']) or 'body'}: {e['msg']}" for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        if len(loc) > 1 and loc[0] == "candidates" and isinstance(loc[1], int):  # a bad candidate: its index
            return None, _error(422, "invalid_item", detail + more, field=where, index=loc[1])
        return None, _error(422, "invalid_request", detail + more, field=where)


def create_app(model: Any, config: ServeConfig | None = None, *, token: str | None = None) -> Any:
    """The FastAPI app serving ``model``.

    :param model: a loaded :class:`~toolrm_rl.model.ToolRM` (anything with ``render``, ``score_texts``,
        ``render_spec``, ``tokenizer``, ``config``) or a checkpoint path, loaded with ``config.device``/``dtype``.
    :param config: server options (:class:`ServeConfig`); host/port/timeouts are used by the caller
        (:func:`uvicorn_config`), ``body_timeout_s`` and the limits here.
    :param token: the bearer token; None: read the env var ``config.token_env`` (unset/empty: no auth).
    :returns: a FastAPI app; ``app.state.batcher`` is its :class:`Batcher`.
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    config = config or ServeConfig()
    if isinstance(model, (str, os.PathLike)):
        config.model = str(model)
        model = load_model(str(model), device=config.device, dtype=config.dtype, torch_threads=config.torch_threads)
    token = token or resolve_token(config)
    score_request, group_request, classify_request = _request_models()
    name = config.served_name or (os.path.basename(os.path.normpath(config.model)) if config.model else "toolrm")
    label = (getattr(model.config, "id2label", None) or {0: "LABEL_0"}).get(0, "LABEL_0")
    plain = model.render_spec.mode == "plain"
    max_body = int(config.max_body_mb * 1024 * 1024)
    grouped = config.group and hasattr(model, "score_rendered")

    def score_batch(inputs: list[tuple[str, str | None]]) -> list[float]:
        """One forward call over ``(rendered text, its context or None)`` pairs (score_rendered shares a
        context's prefix on a decoder and scores encoders and None contexts independently)."""
        texts = [text for text, _ in inputs]
        if grouped:
            return model.score_rendered(texts, [context for _, context in inputs], show_progress=False)
        return model.score_texts(texts, show_progress=False)

    batcher = Batcher(score_batch, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.close()  # uvicorn has stopped accepting connections: drain what is queued

    app = FastAPI(title="ToolRM scoring server", lifespan=lifespan)
    app.state.batcher, app.state.model, app.state.config = batcher, model, config
    if token is not None:
        app.add_middleware(_BearerAuth, token=token)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # 404, 405: our error shape, not {"detail"}
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, kind, f"{request.method} {request.url.path}: {exc.detail}", headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):  # a bug: JSON 500; starlette re-raises it to the log
        return _error(500, "internal_error", f"{type(exc).__name__} while serving the request (see the server log)")

    async def read_json(request: Request) -> tuple[Any, Any]:
        """``(body as JSON, None)`` or ``(None, error response)``: 413 too big, 408 not received within
        ``body_timeout_s``, 400 not UTF-8 JSON, 422 a lone surrogate (naming its field)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            return None, _error(413, "body_too_large", f"request body of {declared} bytes exceeds --max-body-mb "
                                f"{config.max_body_mb} ({max_body} bytes)", headers=_CLOSE)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.body_timeout_s
        chunks, size, stream = [], 0, request.stream()
        try:
            while True:  # counted as it arrives (a chunked body has no length header), under one deadline
                try:
                    chunk = await asyncio.wait_for(anext(stream), max(deadline - loop.time(), 0.0))
                except StopAsyncIteration:
                    break
                size += len(chunk)
                if size > max_body:
                    return None, _error(413, "body_too_large", f"request body exceeds --max-body-mb "
                                        f"{config.max_body_mb} ({max_body} bytes)", headers=_CLOSE)
                chunks.append(chunk)
        except asyncio.TimeoutError:
            return None, _error(408, "body_timeout", f"request body not received within --body-timeout-s "
                                f"{config.body_timeout_s} ({size} bytes arrived)", headers=_CLOSE)
        except ClientDisconnect:
            return None, _error(400, "client_disconnected", "the client closed the connection mid-body")
        try:
            text = b"".join(chunks).decode("utf-8")  # JSON is UTF-8 (RFC 8259); strict: no encoded surrogates
        except UnicodeDecodeError as err:
            return None, _error(400, "bad_json", f"request body is not UTF-8: {err}")
        try:
            body = json.loads(text)
        except (ValueError, RecursionError) as err:
            return None, _error(400, "bad_json", f"request body is not valid JSON: {err}")
        if _SURROGATE_ESCAPE.search(text) and (where := lone_surrogate_path(body)) is not None:
            return None, _error(422, "invalid_text", f"{where}: contains a lone UTF-16 surrogate (e.g. \"\\ud800\"), "
                                "which is not Unicode text", field=where)
        return body, None

    async def scores_or_error(inputs: list[tuple[str, str | None]]):
        try:
            return await batcher.submit(inputs)
        except RuntimeError as err:
            if batcher.closing:
                return _error(503, "shutting_down", str(err))
            return _error(500, "scoring_failed", str(err))

    def render_all(examples: list[RMExample], where: str = "items") -> tuple[list[tuple[str, str]], int]:
        """``[(text, context)]`` of the examples and their token count; :class:`ItemError` for one the
        renderer refuses (``where``: the request's list, ``items`` or ``candidates``)."""
        inputs, n_tokens = [], 0
        for i, ex in enumerate(examples):
            try:
                rendered = model.render(ex)
            except (CatalogError, TypeError, ValueError, RecursionError) as err:
                field_name = "conversation" if "conversation" in str(err) else ""
                raise ItemError(i, field_name, str(err), where=where) from None
            inputs.append((rendered.text, rendered.context))
            n_tokens += rendered.n_tokens
        return inputs, n_tokens

    def too_many(values: Any, what: str):
        if isinstance(values, list) and len(values) > config.max_items:  # before validating them one by one
            return _error(413, "too_many_items", f"{len(values)} {what} exceed --max-items {config.max_items}")
        return None

    @app.post("/score")
    async def score(request: Request):
        body, failed = await read_json(request)
        # the shape: one context with "candidates", else a list of "items" (whose errors name "items")
        group_shape = isinstance(body, dict) and "candidates" in body
        if failed is None:
            failed = too_many(body.get("candidates" if group_shape else "items") if isinstance(body, dict) else None,
                              "candidates" if group_shape else "items")
        if failed is None:
            req, failed = await asyncio.to_thread(_validated, group_request if group_shape else score_request, body)
        if failed is not None:
            return failed
        try:  # decoding and rendering are CPU work: off the event loop
            if group_shape:
                inputs, n_tokens = await asyncio.to_thread(lambda: render_all(req.examples(), "candidates"))
            else:
                inputs, n_tokens = await asyncio.to_thread(lambda: render_all(examples_from_items(req.items)))
        except ItemError as err:
            return _error(422, "invalid_item", str(err), index=err.index, field=err.path)
        scores = await scores_or_error(inputs)
        if not isinstance(scores, list):
            return scores
        return {"scores": scores, "model": name, "render": model.render_spec.to_dict(),
                "usage": {"prompt_tokens": n_tokens, "items": len(inputs)}}

    @app.post("/classify")
    async def classify(request: Request):
        body, failed = await read_json(request)
        if failed is None:
            failed = too_many(body.get("input") if isinstance(body, dict) else None, "inputs")
        if failed is None:
            req, failed = _validated(classify_request, body)
        if failed is not None:
            return failed
        texts = req.input
        activation = req.use_activation if req.use_activation is not None else req.activation
        n_tokens = await asyncio.to_thread(
            lambda: sum(map(len, model.tokenizer(texts, add_special_tokens=plain, verbose=False)["input_ids"])))
        scores = await scores_or_error([(text, None) for text in texts])
        if not isinstance(scores, list):
            return scores
        probs = [1.0 / (1.0 + math.exp(-s)) if activation else s for s in scores]
        return {"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                "model": req.model or name,
                "data": [{"index": i, "label": label, "probs": [p], "num_classes": 1} for i, p in enumerate(probs)],
                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens, "completion_tokens": 0,
                          "prompt_tokens_details": None}}

    @app.get("/health")
    async def health(request: Request):
        status = "draining" if batcher.closing else "ok"
        if not _bearer_ok(request.headers, token):  # liveness only: nothing about the model or the machine
            return {"status": status}
        return {"status": status, "model": name, "device": str(getattr(model, "device", config.device)),
                "backbone": getattr(model, "backbone", None), "render_mode": model.render_spec.mode,
                "queue_depth": batcher.pending, "forwards": batcher.forwards, "items_scored": batcher.items_scored,
                "max_batch": batcher.max_batch, "uptime_s": round(time.time() - started, 3), "auth": token is not None}

    return app


def head_timeout_protocol(timeout_s: float) -> type:
    """uvicorn's h11 HTTP protocol with a deadline on the request head (request line + headers).

    uvicorn's own ``timeout_keep_alive`` only runs between a response and the next request's first
    byte: a client that connects and sends nothing, or half a request head, is otherwise held forever.
    Here the head must be complete ``timeout_s`` after the connection opens (or after the first byte
    of a later request on a kept-alive connection), or the connection is closed. h11 also caps a head
    at 16 KiB (uvicorn answers 400 above), which httptools does not. uvicorn is imported here.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimeoutH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def data_received(self, data: bytes) -> None:
            if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
                self._arm_head_timer()  # the first bytes of the next request on a kept-alive connection
            cycle = self.cycle
            super().data_received(data)
            if self.cycle is not cycle:  # a complete head started a request: the app owns it now
                self._cancel_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(timeout_s, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeadTimeoutH11Protocol


def uvicorn_config(app: Any, config: ServeConfig, **overrides: Any) -> Any:
    """The ``uvicorn.Config`` of ``toolrm serve``: host/port, the request-head deadline
    (:func:`head_timeout_protocol`), keep-alive, the connection cap (``limit_concurrency``: above it
    uvicorn answers new requests with a plain-text 503) and a 30 s graceful drain. ``overrides`` go to
    ``uvicorn.Config`` as they are (``log_level``, ...)."""
    import uvicorn

    kwargs = {"host": config.host, "port": config.port, "http": head_timeout_protocol(config.header_timeout_s),
              "timeout_keep_alive": config.keep_alive_s, "limit_concurrency": config.max_connections or None,
              "timeout_graceful_shutdown": 30, "log_level": "info"}
    return uvicorn.Config(app, **{**kwargs, **overrides})


def run_server(config: ServeConfig) -> None:
    """Load the model and serve it with uvicorn until SIGINT/SIGTERM (then drain and exit).

    :raises ValueError: from :func:`check_exposure`, before the model is loaded."""
    import uvicorn

    check_exposure(config)
    if not is_loopback(config.host) and not resolve_token(config):
        log.warning("--insecure: serving on %s without a bearer token: anyone who can reach the port can use "
                    "the model", config.host)
    uvicorn.Server(uvicorn_config(create_app(config.model, config), config)).run()
