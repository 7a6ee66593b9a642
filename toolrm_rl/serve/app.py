"""The ToolRM scoring server: a FastAPI app over one :class:`~toolrm_rl.model.ToolRM` with dynamic batching.

Routes (JSON in, JSON out; every error is ``{"error": {"type", "message", ...}}`` with a 4xx/5xx status):

- ``POST /score`` (native): ``{"items": [item, ...]}`` -> ``{"scores": [...], "model": name, "render": spec}``.
  An item is ``{"tools": [...] | JSON str, "conversation": [...] | JSON str, "calls": [...] | JSON str,
  "text": optional answer text}`` or, instead of ``calls``, the raw model output ``"text"`` with
  ``"format"`` (``hermes`` default, ``json``, ``pythonic``, ``openai``, ``auto``), parsed by the core
  parser. Calls are ``[{"name", "arguments"}]``, BFCL ``[{"f": {...}}]`` or OpenAI ``tool_calls``.
  Items are rendered with the checkpoint's own :class:`RenderSpec` (its ``toolrm.json``) by the core
  renderer, exactly as :meth:`ToolRM.score` renders them in process.
- ``POST /classify`` (vLLM-compatible): ``{"model": ..., "input": text | [texts]}`` with texts already
  rendered -> vLLM's classification response ``{"id", "object": "list", "created", "model",
  "data": [{"index", "label", "probs", "num_classes"}], "usage"}``. A ToolRM has one label, so
  ``num_classes`` is 1 and ``probs`` is ``[score]`` with the RAW scalar reward (the logit, what
  ``/score`` returns). vLLM itself applies a sigmoid to one-label heads by default; send
  ``"use_activation": true`` (or the older ``"activation": true``) to get ``[sigmoid(score)]``.
  verl reads ``data[i]["probs"][-1]``.
- ``GET /health``: model name, path, device, backbone, queue depth, forwards run, uptime; never
  needs the token (for liveness probes).

Dynamic batching (:class:`Batcher`): every request's texts join one queue, in chunks of at most
``max_batch``; a background task takes the first waiting chunk, adds more until ``max_batch`` texts
or ``max_wait_ms`` have passed, and runs ONE scoring call in a worker thread (the event loop stays
responsive); each request's future gets its own scores back. Limits: ``max_body_mb`` (413),
``max_items`` per request (413), a bad item names its index and field (422). With a bearer token
set, ``/score`` and ``/classify`` answer 401 without it. On shutdown (SIGTERM under uvicorn, or the
lifespan end) new requests get 503 and the queue is drained before the worker stops.

fastapi is imported inside :func:`create_app` only (the serve extra); torch only when a checkpoint
path is loaded.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at runtime.

import asyncio
import hmac
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from toolrm_rl.core.calls import CatalogError, ToolCatalog, calls_from_bfcl, calls_from_openai, load_json_field
from toolrm_rl.core.parse import parse
from toolrm_rl.core.render import RMExample

__all__ = ["Batcher", "ItemError", "ServeConfig", "create_app", "examples_from_items", "load_model"]

log = logging.getLogger(__name__)


def _help(default: Any, text: str) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class ServeConfig:
    """Options of ``toolrm serve`` (the CLI flags have the same names)."""

    model: str = _help("", "ToolRM checkpoint directory (with toolrm.json), or a plain sequence-classification one.")
    host: str = _help("127.0.0.1", "Interface to bind; loopback unless you mean to expose the server.")
    port: int = _help(8000, "TCP port (0: any free port).")
    token_env: str | None = _help("TOOLRM_SERVE_TOKEN", "Env var holding the bearer token; unset/empty: no auth.")
    max_batch: int = _help(64, "Most texts per forward call of the dynamic batcher.")
    max_wait_ms: float = _help(5.0, "How long the batcher waits for more texts after the first one arrives.")
    max_body_mb: float = _help(8.0, "Largest request body accepted (413 above).")
    max_items: int = _help(512, "Most items / input texts in one request (413 above).")
    device: str = _help("cpu", "Torch device for the model: cpu, cuda, cuda:1, ...")
    dtype: str | None = _help(None, "Model dtype (float32, bfloat16, auto); None: float32 on CPU, bf16 elsewhere.")
    torch_threads: int | None = _help(None, "torch.set_num_threads for CPU forwards; None: torch's default. "
                                      "On a shared CPU 1 avoids OpenMP threads waiting for each other.")
    served_name: str | None = _help(None, "Model name reported in responses; None: the checkpoint directory name.")


class ItemError(ValueError):
    """A request item that cannot be scored: carries its index and the offending field (-> 422)."""

    def __init__(self, index: int | None, field_name: str, message: str) -> None:
        self.index, self.field = index, field_name
        where = f"items[{index}].{field_name}" if index is not None else field_name
        super().__init__(f"{where}: {message}")


def _calls_from_any(value: Any) -> list:
    """``[{"name", "arguments"}]``, BFCL ``[{"f": {...}}]`` or OpenAI ``tool_calls`` (or their JSON) -> calls."""
    value = load_json_field(value, "calls")
    if isinstance(value, list) and any(isinstance(v, dict) and isinstance(v.get("function"), dict) for v in value):
        return calls_from_openai(value)
    return calls_from_bfcl(value)


def examples_from_items(items: Any) -> list[RMExample]:
    """Decode ``/score`` items into :class:`RMExample` (format in the module docstring).

    Raises :class:`ItemError` naming the first bad item's index and field."""
    if not isinstance(items, list):
        raise ItemError(None, "items", f"expected a list of items, got {type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ItemError(i, "item", f"expected an object, got {type(item).__name__}")
        if "tools" not in item:
            raise ItemError(i, "tools", "missing")
        try:
            tools = ToolCatalog.load(item["tools"])
        except (CatalogError, TypeError, ValueError) as err:
            raise ItemError(i, "tools", str(err)) from None
        conversation = item.get("conversation")
        try:
            conversation = load_json_field(conversation, "conversation") or []
        except CatalogError as err:
            raise ItemError(i, "conversation", str(err)) from None
        if not isinstance(conversation, list) or not all(isinstance(m, (dict, list)) for m in conversation):
            raise ItemError(i, "conversation", "expected a list of {role, content} messages")
        text = item.get("text")
        if text is not None and not isinstance(text, str):
            raise ItemError(i, "text", f"expected a string, got {type(text).__name__}")
        if "calls" in item:
            try:
                calls = _calls_from_any(item["calls"])
            except (CatalogError, TypeError, ValueError, AttributeError) as err:
                raise ItemError(i, "calls", str(err)) from None
        elif text is not None:
            fmt = item.get("format", "hermes")
            result = parse(text, fmt if isinstance(fmt, str) else "?")
            if not result.ok:
                field_name = "format" if result.error.kind == "bad_input" and "format" in result.error.message else "text"
                raise ItemError(i, field_name, f"{result.error.kind}: {result.error.message}")
            calls = result.calls
            text = None if calls else text.strip()  # calls: their text is the calls themselves
        else:
            raise ItemError(i, "calls", "missing: give 'calls' or the raw model output in 'text'")
        out.append(RMExample(tools, conversation, calls, text))
    return out


class Batcher:
    """Merge concurrent scoring requests into few calls of ``score_fn(texts) -> scores``.

    :param score_fn: scores a list of texts (runs in one worker thread, never two calls at once).
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

    async def submit(self, texts: Sequence[str]) -> list[float]:
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
    """Load a ToolRM checkpoint for serving (torch is imported here); ``torch_threads`` sets the
    process-wide CPU thread count."""
    import torch

    from toolrm_rl.model import ToolRM

    if torch_threads:
        torch.set_num_threads(torch_threads)
    return ToolRM.from_pretrained(path, device=device, dtype=dtype)


def _error(status: int, kind: str, message: str, **extra: Any):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": {"type": kind, "message": message, **extra}})


def create_app(model: Any, config: ServeConfig | None = None, *, token: str | None = None) -> Any:
    """The FastAPI app serving ``model``.

    :param model: a loaded :class:`~toolrm_rl.model.ToolRM` (anything with ``render``, ``score_texts``,
        ``render_spec``, ``tokenizer``, ``config``) or a checkpoint path, loaded with ``config.device``/``dtype``.
    :param config: server options (:class:`ServeConfig`); host/port are used by the caller, not here.
    :param token: the bearer token; None: read the env var ``config.token_env`` (unset/empty: no auth).
    :returns: a FastAPI app; ``app.state.batcher`` is its :class:`Batcher`.
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request

    config = config or ServeConfig()
    if isinstance(model, (str, os.PathLike)):
        config.model = str(model)
        model = load_model(str(model), device=config.device, dtype=config.dtype, torch_threads=config.torch_threads)
    if token is None and config.token_env:
        token = os.environ.get(config.token_env) or None
    name = config.served_name or (os.path.basename(os.path.normpath(config.model)) if config.model else "toolrm")
    label = (getattr(model.config, "id2label", None) or {0: "LABEL_0"}).get(0, "LABEL_0")
    plain = model.render_spec.mode == "plain"
    max_body = int(config.max_body_mb * 1024 * 1024)
    batcher = Batcher(lambda texts: model.score_texts(texts, show_progress=False),
                      max_batch=config.max_batch, max_wait_ms=config.max_wait_ms)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.close()  # uvicorn has stopped accepting connections: drain what is queued

    app = FastAPI(title="ToolRM scoring server", lifespan=lifespan)
    app.state.batcher, app.state.model, app.state.config = batcher, model, config

    async def read_json(request: Request) -> tuple[Any, Any]:
        """``(body as JSON, None)`` or ``(None, error response)`` (413 too big, 400 not JSON)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            return None, _error(413, "body_too_large", f"request body of {declared} bytes exceeds --max-body-mb "
                                f"{config.max_body_mb} ({max_body} bytes)")
        chunks, size = [], 0
        async for chunk in request.stream():  # counted as it arrives: a chunked body has no length header
            size += len(chunk)
            if size > max_body:
                return None, _error(413, "body_too_large", f"request body exceeds --max-body-mb "
                                    f"{config.max_body_mb} ({max_body} bytes)")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks)), None
        except (ValueError, RecursionError) as err:
            return None, _error(400, "bad_json", f"request body is not valid JSON: {err}")

    def unauthorized(request: Request):
        if token is None:
            return None
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            return _error(401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)")
        return None

    async def scores_or_error(texts: list[str]):
        try:
            return await batcher.submit(texts)
        except RuntimeError as err:
            if batcher.closing:
                return _error(503, "shutting_down", str(err))
            return _error(500, "scoring_failed", str(err))

    def render_all(examples: list[RMExample]) -> tuple[list[str], int]:
        texts, n_tokens = [], 0
        for i, ex in enumerate(examples):
            try:
                rendered = model.render(ex)
            except (CatalogError, TypeError, ValueError) as err:
                raise ItemError(i, "conversation" if "conversation" in str(err) else "item", str(err)) from None
            texts.append(rendered.text)
            n_tokens += rendered.n_tokens
        return texts, n_tokens

    @app.post("/score")
    async def score(request: Request):
        if (denied := unauthorized(request)) is not None:
            return denied
        body, failed = await read_json(request)
        if failed is not None:
            return failed
        if not isinstance(body, dict) or "items" not in body:
            return _error(422, "invalid_request", "expected a JSON object {\"items\": [...]}", field="items")
        items = body["items"]
        if isinstance(items, list) and len(items) > config.max_items:
            return _error(413, "too_many_items", f"{len(items)} items exceed --max-items {config.max_items}")
        try:  # decoding and rendering are CPU work: off the event loop
            texts, n_tokens = await asyncio.to_thread(lambda: render_all(examples_from_items(items)))
        except ItemError as err:
            return _error(422, "invalid_item", str(err), index=err.index, field=err.field)
        scores = await scores_or_error(texts)
        if not isinstance(scores, list):
            return scores
        return {"scores": scores, "model": name, "render": model.render_spec.to_dict(),
                "usage": {"prompt_tokens": n_tokens, "items": len(texts)}}

    @app.post("/classify")
    async def classify(request: Request):
        if (denied := unauthorized(request)) is not None:
            return denied
        body, failed = await read_json(request)
        if failed is not None:
            return failed
        if not isinstance(body, dict) or "input" not in body:
            return _error(422, "invalid_request", "expected a JSON object {\"model\": ..., \"input\": text | [texts]}",
                          field="input")
        texts = body["input"]
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error(422, "invalid_input", "input must be a string or a list of strings (rendered texts; "
                          "token ids are not supported)", field="input")
        if any(not t for t in texts):
            return _error(422, "invalid_input", f"input[{[i for i, t in enumerate(texts) if not t][0]}] is empty",
                          field="input")
        if len(texts) > config.max_items:
            return _error(413, "too_many_items", f"{len(texts)} inputs exceed --max-items {config.max_items}")
        activation = body.get("use_activation", body.get("activation"))
        n_tokens = await asyncio.to_thread(
            lambda: sum(map(len, model.tokenizer(texts, add_special_tokens=plain, verbose=False)["input_ids"])))
        scores = await scores_or_error(texts)
        if not isinstance(scores, list):
            return scores
        probs = [1.0 / (1.0 + math.exp(-s)) if activation else s for s in scores]
        return {"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                "model": body.get("model") or name,
                "data": [{"index": i, "label": label, "probs": [p], "num_classes": 1} for i, p in enumerate(probs)],
                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens, "completion_tokens": 0,
                          "prompt_tokens_details": None}}

    @app.get("/health")
    async def health():
        return {"status": "draining" if batcher.closing else "ok", "model": name, "path": config.model,
                "device": str(getattr(model, "device", config.device)), "backbone": getattr(model, "backbone", None),
                "render_mode": model.render_spec.mode, "queue_depth": batcher.pending, "forwards": batcher.forwards,
                "items_scored": batcher.items_scored, "max_batch": batcher.max_batch,
                "uptime_s": round(time.time() - started, 3), "auth": token is not None}

    return app


def run_server(config: ServeConfig) -> None:
    """Load the model and serve it with uvicorn until SIGINT/SIGTERM (then drain and exit)."""
    import uvicorn

    app = create_app(config.model, config)
    if config.host not in ("127.0.0.1", "localhost", "::1") and not (config.token_env and os.environ.get(config.token_env)):
        log.warning("serving on %s without a bearer token: anyone who can reach the port can use the model "
                    "(set %s)", config.host, config.token_env or "--token-env")
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", timeout_graceful_shutdown=30)
