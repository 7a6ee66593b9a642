"""LLM-as-judge scorer over any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, OpenAI, ...).

Two modes, on the :class:`~toolrm_rl.scoring.Scorer` interface:

- *pointwise* (``score(examples)``): one prompt per candidate (tools, conversation, candidate calls);
  the judge replies ``Score: N`` on a 1-10 scale (``pointwise_format="scale"``), or yes/no
  (``"yes_no"``: the score is P(yes) from the first token's top logprobs when the server returns
  them, else 1.0 / 0.0).
- *pairwise* (``score_pairs(pairs)``, used by evaluation for pairs): both candidates in one prompt,
  asked in BOTH orders (A=first, then A=second) so position bias cancels: a candidate's score is its
  share of the two verdicts (a tie verdict gives 0.5 each), so a judge that always says "A" yields a tie.

Prompts reuse the core renderer's plain format (``core.render``: conversation turns and
``function f: ... | param (type, required)`` lines, within a token budget) and ``format_calls`` for
candidates: no second renderer. Requests run ``concurrency`` at a time with ``retries`` (exponential
backoff) on transport errors, timeouts, 429 and 5xx; when they are exhausted, or on another 4xx, the
scorer raises :class:`~toolrm_rl.scoring.ScorerUnavailable`. A reply the parser cannot read gives the
neutral score (5.5, 0.5, or a tie) and is counted in ``stats["unparsed"]``. Replies are cached by
prompt, in memory and optionally in ``cache_file`` (JSON lines), so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from toolrm_rl.config import option as _f
from toolrm_rl.core.render import RenderSpec, RMExample, format_calls, render
from toolrm_rl.scoring.protocol import ScorerUnavailable

__all__ = ["JudgeConfig", "JudgeScorer", "parse_scale", "parse_verdict", "parse_yes_no", "judge_context",
           "format_candidate", "pointwise_messages", "pairwise_messages"]

log = logging.getLogger(__name__)

MODES = ("pairwise", "pointwise")
POINTWISE_FORMATS = ("scale", "yes_no")
NEUTRAL = {"scale": 5.5, "yes_no": 0.5}


@dataclass
class JudgeConfig:
    """Options of the LLM judge (``scorer_options.judge`` of the evaluation recipes)."""

    base_url: str = _f("http://127.0.0.1:8000/v1", "OpenAI-compatible base URL (as for the openai client; '/v1' is added to a bare host).")
    model: str = _f("", "Model name sent in each request (required).")
    api_key_env: str = _f("OPENAI_API_KEY", "Environment variable holding the API key (unset: no Authorization header).")
    mode: str = _f("pairwise", "pairwise (both orders, for pairs; pointwise for single examples) or pointwise.")
    pointwise_format: str = _f("scale", "scale (reply 'Score: 1-10') or yes_no (P(yes) from logprobs when available).")
    temperature: float = _f(0.0, "Sampling temperature of the judge.")
    max_completion_tokens: int = _f(512, "max_tokens of each judge reply (room for a short rationale).")
    context_tokens: int | None = _f(6000, "Token budget (estimated, 4 chars/token) for tools + conversation in a prompt.")
    timeout: float = _f(60.0, "Seconds per request.")
    retries: int = _f(3, "Retries per request on transport errors, timeouts, 429 and 5xx.")
    backoff: float = _f(1.0, "First retry delay in seconds; doubles each retry.")
    concurrency: int = _f(8, "Requests in flight at once.")
    cache_file: str | None = _f(None, "JSON-lines file of replies by prompt hash: reruns resume from it.")
    show_progress: bool | None = _f(None, "tqdm bar (None: above 32 requests).")
    name: str = _f("judge", "Scorer name in reports.")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field (called by the scorer, so recipes can hold defaults)."""
        if self.mode not in MODES:
            raise ValueError(f"scorer_options.judge.mode: expected one of {MODES}, got {self.mode!r}")
        if self.pointwise_format not in POINTWISE_FORMATS:
            raise ValueError(f"scorer_options.judge.pointwise_format: expected one of {POINTWISE_FORMATS}, "
                             f"got {self.pointwise_format!r}")
        if not self.model:
            raise ValueError("scorer_options.judge.model: the judge's model name is required "
                             "(e.g. scorer_options.judge.model=Qwen/Qwen3-32B)")
        if self.concurrency < 1 or self.retries < 0:
            raise ValueError("scorer_options.judge: concurrency must be >= 1 and retries >= 0")


# -- prompts ---------------------------------------------------------------------------------------

SYSTEM_PROMPT = ("You are an expert evaluator of function calls made by AI assistants. Given the functions "
                 "available and a conversation, you judge whether the assistant's next turn is correct: the "
                 "right function(s), each with correct argument names and values for what the user asked, or "
                 "no call when no available function fits.")
_CONTEXT_HEAD = ("Conversation so far, then the available functions (one per line: 'function NAME: description | "
                 "param (type, required): description'):")


def judge_context(example: RMExample, max_tokens: int | None = 6000) -> str:
    """Conversation and tool catalog of an example in the core renderer's plain format (without the
    candidate line the renderer puts first)."""
    text = render(example.tools, example.conversation, [],
                  spec=RenderSpec(mode="plain", max_tokens=max_tokens, sep="\n")).text
    return text.split("\n", 1)[1] if "\n" in text else ""


def format_candidate(example: RMExample) -> str:
    """One candidate as text: ``[2 calls] f(a=1) ; g(b="x")`` or ``[no call] <answer text>``."""
    if not example.calls:
        return ("[no call] " + (example.text or "").strip()).rstrip()
    n = len(example.calls)
    return f"[{n} call{'s' if n != 1 else ''}] {format_calls(example.calls)}"


def pointwise_messages(example: RMExample, fmt: str = "scale", context_tokens: int | None = 6000) -> list[dict[str, str]]:
    """Chat messages asking the judge to grade one candidate."""
    ask = ("Rate the candidate from 1 (wrong) to 10 (fully correct). Think briefly, then end your reply with "
           "'Score: N'." if fmt == "scale" else "Is the candidate correct? Answer with one word: yes or no.")
    user = (f"{_CONTEXT_HEAD}\n{judge_context(example, context_tokens)}\n\n"
            f"Candidate next assistant turn:\n{format_candidate(example)}\n\n{ask}")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def pairwise_messages(a: RMExample, b: RMExample, context_tokens: int | None = 6000) -> list[dict[str, str]]:
    """Chat messages asking which of two candidates (same context, taken from ``a``) is correct."""
    user = (f"{_CONTEXT_HEAD}\n{judge_context(a, context_tokens)}\n\n"
            f"Answer A:\n{format_candidate(a)}\n\nAnswer B:\n{format_candidate(b)}\n\n"
            "One of the two answers is correct and the other is not. Which one is correct? Think briefly, then "
            "end your reply with 'Verdict: A' or 'Verdict: B'.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# -- reply parsing ---------------------------------------------------------------------------------

_SCORE = re.compile(r"score\W{0,4}(\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"^\W*(\d+(?:\.\d+)?)\W*$")
_VERDICT = re.compile(r"verdict\W{0,4}(A|B|tie)\b", re.IGNORECASE)
_LONE = re.compile(r"^\W*(?:answer\s+)?(A|B)\W*$", re.IGNORECASE)


def parse_scale(reply: str) -> float | None:
    """The 1-10 grade of a reply (last ``Score: N``, or a reply that is just a number), clamped to
    [1, 10]; None when there is none.

    >>> parse_scale("The call is right.\\n**Score:** 9"), parse_scale(" 3 "), parse_scale("great"), parse_scale("Score: 12")
    (9.0, 3.0, None, 10.0)
    """
    found = _SCORE.findall(reply or "") or _NUMBER.findall(reply or "")
    return min(10.0, max(1.0, float(found[-1]))) if found else None


def parse_verdict(reply: str) -> str | None:
    """``"A"``, ``"B"`` or ``"tie"`` from a reply (last ``Verdict: X``, or a reply that is just A or B).

    >>> parse_verdict("B has the wrong unit. Verdict: A"), parse_verdict("**Verdict**: b"), parse_verdict("A."), parse_verdict("both")
    ('A', 'B', 'A', None)
    """
    found = _VERDICT.findall(reply or "") or _LONE.findall(reply or "")
    if not found:
        return None
    v = found[-1]
    return "tie" if v.lower() == "tie" else v.upper()


def parse_yes_no(reply: str, top_logprobs: Sequence[dict[str, Any]] | None = None) -> float | None:
    """P(yes): from the first token's top logprobs when given (yes/no mass renormalised), else 1.0 /
    0.0 from the reply's first word; None when neither is readable.

    >>> parse_yes_no("Yes."), parse_yes_no("no"), parse_yes_no("maybe")
    (1.0, 0.0, None)
    >>> round(parse_yes_no("yes", [{"token": "yes", "logprob": math.log(0.6)}, {"token": " No", "logprob": math.log(0.2)}]), 3)
    0.75
    """
    if top_logprobs:
        mass = {"yes": 0.0, "no": 0.0}
        for item in top_logprobs:
            tok = str(item.get("token", "")).strip().lower()
            if tok in mass and isinstance(item.get("logprob"), (int, float)):
                mass[tok] += math.exp(item["logprob"])
        if mass["yes"] + mass["no"] > 0:
            return mass["yes"] / (mass["yes"] + mass["no"])
    words = re.findall(r"[a-z]+", (reply or "").lower())
    if words and words[0] in ("yes", "no"):
        return 1.0 if words[0] == "yes" else 0.0
    return None


# -- the scorer ------------------------------------------------------------------------------------

def _endpoint(base_url: str) -> str:
    url = base_url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if urlparse(url).path in ("", "/"):
        url += "/v1"
    return url + "/chat/completions"


class JudgeScorer:
    """An LLM judge as a scorer; options are :class:`JudgeConfig` fields (or pass ``config=``)."""

    def __init__(self, config: JudgeConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            config = JudgeConfig(**{**asdict(config), **options})
        self.config = config if config is not None else JudgeConfig(**options)
        self.config.validate()
        self.name = self.config.name
        self.url = _endpoint(self.config.base_url)
        self.stats = {"requests": 0, "retries": 0, "cached": 0, "unparsed": 0}
        self._cache: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if self.config.cache_file and Path(self.config.cache_file).is_file():
            self._load_cache(Path(self.config.cache_file))

    # -- transport -----------------------------------------------------------------------------
    def _load_cache(self, path: Path) -> None:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                self._cache[row["key"]] = row["reply"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by an interrupted run

    def _remember(self, key: str, reply: dict[str, Any]) -> None:
        with self._lock:
            self._cache[key] = reply
            if self.config.cache_file:
                path = Path(self.config.cache_file)
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"key": key, "reply": reply}) + "\n")

    def _payload(self, messages: list[dict[str, str]], logprobs: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.config.model, "messages": messages,
                                "temperature": self.config.temperature, "max_tokens": self.config.max_completion_tokens}
        if logprobs:
            body.update(logprobs=True, top_logprobs=5, max_tokens=1)
        return body

    def _ask(self, client: Any, messages: list[dict[str, str]], logprobs: bool = False) -> dict[str, Any]:
        """``{"content": str, "top_logprobs": list | None}`` for one prompt (cached; retried)."""
        import httpx

        body = self._payload(messages, logprobs)
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if key in self._cache:
            with self._lock:
                self.stats["cached"] += 1
            return self._cache[key]
        problem = ""
        for attempt in range(self.config.retries + 1):
            if attempt:
                with self._lock:
                    self.stats["retries"] += 1
                time.sleep(self.config.backoff * 2 ** (attempt - 1))
            try:
                with self._lock:
                    self.stats["requests"] += 1
                resp = client.post(self.url, json=body)
            except httpx.HTTPError as err:  # connection refused, timeout, protocol error
                problem = f"{type(err).__name__}: {err}"
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                problem = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code != 200:
                raise ScorerUnavailable(f"judge {self.url}: HTTP {resp.status_code}: {resp.text[:300]}")
            try:
                choice = resp.json()["choices"][0]
                content = choice["message"].get("content") or ""
                lp = ((choice.get("logprobs") or {}).get("content") or [{}])[0].get("top_logprobs") if logprobs else None
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
                problem = f"malformed reply ({type(err).__name__}: {err}): {resp.text[:200]}"
                continue
            reply = {"content": content, "top_logprobs": lp}
            self._remember(key, reply)
            return reply
        raise ScorerUnavailable(f"judge {self.url}: no answer after {self.config.retries + 1} attempts ({problem})")

    def _run(self, jobs: list[tuple[list[dict[str, str]], bool]]) -> list[dict[str, Any]]:
        import httpx
        from tqdm.auto import tqdm

        headers = {}
        key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        show = len(jobs) > 32 if self.config.show_progress is None else self.config.show_progress
        with httpx.Client(timeout=self.config.timeout, headers=headers) as client, \
                ThreadPoolExecutor(max_workers=self.config.concurrency) as pool, \
                tqdm(total=len(jobs), desc=f"{self.name} requests", disable=not show) as bar:
            futures = [pool.submit(self._ask, client, msgs, lp) for msgs, lp in jobs]
            out = []
            try:
                for fut in futures:
                    out.append(fut.result())
                    bar.update(1)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
        return out

    # -- scoring -------------------------------------------------------------------------------
    def _unparsed(self, reply: dict[str, Any]) -> None:
        with self._lock:
            self.stats["unparsed"] += 1
            if self.stats["unparsed"] <= 3:
                log.warning("judge reply not understood (neutral score used): %.200r", reply.get("content"))

    def score(self, examples: Sequence[RMExample]) -> list[float]:
        """Pointwise scores (1-10, or P(yes) in [0, 1]), in input order."""
        fmt = self.config.pointwise_format
        jobs = [(pointwise_messages(ex, fmt, self.config.context_tokens), fmt == "yes_no") for ex in examples]
        out = []
        for reply in self._run(jobs):
            value = (parse_scale(reply["content"]) if fmt == "scale"
                     else parse_yes_no(reply["content"], reply.get("top_logprobs")))
            if value is None:
                self._unparsed(reply)
                value = NEUTRAL[fmt]
            out.append(value)
        return out

    def score_pairs(self, pairs: Sequence[tuple[RMExample, RMExample]]) -> list[tuple[float, float]]:
        """Pairwise mode: ``(s_first, s_second)`` per pair, each the candidate's share of the two verdicts
        (asked with the first as A, then as B). Pointwise mode: ``score`` of both."""
        if self.config.mode == "pointwise":
            flat = self.score([ex for pair in pairs for ex in pair])
            return list(zip(flat[0::2], flat[1::2]))
        ctx = self.config.context_tokens
        jobs = [(pairwise_messages(a, b, ctx), False) for a, b in pairs] + [(pairwise_messages(b, a, ctx), False)
                                                                            for a, b in pairs]
        replies = self._run(jobs)
        out = []
        for i in range(len(pairs)):
            first = second = 0.0
            for reply, first_is in ((replies[i], "A"), (replies[len(pairs) + i], "B")):
                verdict = parse_verdict(reply["content"])
                if verdict is None:
                    self._unparsed(reply)
                    verdict = "tie"
                if verdict == "tie":
                    first, second = first + 0.25, second + 0.25
                elif verdict == first_is:
                    first += 0.5
                else:
                    second += 0.5
            out.append((first, second))
        return out
