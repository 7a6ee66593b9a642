"""Seeded fuzzing of the reward path: no escaped exception, fixed keys, finite values, linear time.

    .venv/bin/python bench/fuzz_reward.py [--n 100000] [--rm-n 2000] [--seed 0] [--max-len 200000] [--json out.json]

Input ``i`` is generated from ``(seed, i)`` alone (``--only i`` replays one and prints it), so every
finding can be reproduced. Targets:

- ``reward_rules``: :func:`toolrm_rl.verl.reward.compute_score` with ``rm_source="none"``;
- ``reward_rm``: the same with the in-process RM (a tiny random Qwen3 ToolRM checkpoint built in a
  temporary folder; ``--rm-n`` inputs, after the ``--n`` others);
- ``parse`` (every format and ``auto``), ``strip_thinking``, ``ToolCatalog.load``, ``check_calls``,
  ``GroundTruth`` (construction and ``check``).

Hostile generators: whitespace runs, repeated and mixed tags (``<think>``, ``<tool_call>``,
``<tool_response>``, chat markers), deep nesting, huge ints and hex literals, lone surrogates, invalid
UTF-8, truncated JSON, malformed tools and extra_info, strings up to ``--max-len`` characters, random
mutations of valid calls, fake multi-turn rollouts.

Checks (each failure is a violation; the exit status is 1 when there is any):

- no exception escapes, except the ones a function documents (``ToolCatalog.load``: ``CatalogError``;
  ``GroundTruth(...)``: ``ValueError``; ``check_calls`` with raw tools: ``CatalogError``);
- a reward result has exactly :data:`~toolrm_rl.verl.reward.KEYS`, in order, as finite floats, and obeys
  the gate: rules only, ``score == 0`` exactly when ``valid`` (else ``< 0``); ``tools_error`` scores
  ``invalid_penalty``; with the RM, a single-turn invalid sample scores ``invalid_penalty`` and a valid
  one at least ``valid_reward``;
- time: every call finishes within ``base + per_char * length`` seconds (defaults 0.1 s + 2e-6 s per
  character: 0.5 s at 200,000 characters; the RM target has ``--rm-base-s``); a call over its bound is
  timed twice more and the fastest time counts (other processes share the CPU).

A call that hangs for ``--hang-s`` seconds stops the run with the stack of every thread (faulthandler).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import math
import os
import random
import string
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from toolrm_rl.core.calls import CatalogError, ToolCall, ToolCatalog
from toolrm_rl.core.io import write_json
from toolrm_rl.core.match import GroundTruth
from toolrm_rl.core.parse import parse, strip_thinking, to_hermes, to_json, to_pythonic
from toolrm_rl.core.schema import check_calls
from toolrm_rl.verl.reward import KEYS, compute_score

TOOLS = [
    {"name": "get_weather", "description": "Weather of a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                                     "unit": {"type": "string", "enum": ["C", "F"]}},
                    "required": ["city"]}},
    {"name": "math.gcd", "description": "GCD (BFCL dialect)",
     "parameters": {"type": "dict", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"},
                                                   "scale": {"type": "float"}}, "required": ["a", "b"]}},
    {"name": "book", "description": "Book a trip",
     "parameters": {"type": "object", "properties": {
         "who": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                 "required": ["name"]},
         "stops": {"type": "array", "items": {"type": "string"}},
         "flex": {"type": ["string", "null"]}, "when": {"type": "string", "format": "date"}},
         "required": ["who"]}},
]
VALID_CALLS = [
    ToolCall("get_weather", {"city": "Paris", "days": 2}),
    ToolCall("get_weather", {"city": "Lyon", "unit": "C"}),
    ToolCall("math.gcd", {"a": 12, "b": 18}),
    ToolCall("math.gcd", {"a": 7, "b": 3, "scale": 1.5}),
    ToolCall("book", {"who": {"name": "Ada", "age": 36}, "stops": ["Rome", "Oslo"], "flex": None}),
]
CONVERSATION = [{"role": "system", "content": "You call functions."}, {"role": "user", "content": "Weather in Paris?"}]
TAGS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<|im_end|>",
        "<|im_start|>", "user\n", "tool\n", "assistant\n", "```json\n", "```", "[", "]", "{", "}", "(", ")"]
SPACES = " \n\t\r\x0b\x0c\u00a0\u2028\u3000"
SERIALIZERS = {"hermes": to_hermes, "json": to_json, "pythonic": to_pythonic}
PARSE_FORMATS = ("hermes", "json", "pythonic", "openai", "auto")
CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "java", "javascript", "live_simple",
              "sequential", "", "x" * 40)
TARGET_WEIGHTS = {"reward_rules": 40, "parse": 25, "strip_thinking": 5, "catalog_load": 10, "check_calls": 10,
                  "ground_truth": 10}
DOCUMENTED: dict[str, tuple[type[BaseException], ...]] = {  # exceptions a target may raise by its contract
    "reward_rules": (), "reward_rm": (), "parse": (), "strip_thinking": (), "catalog_load": (CatalogError,),
    "check_calls": (CatalogError,), "ground_truth": (ValueError,), "ground_truth.check": (),
}


# -- generators -------------------------------------------------------------------------------------

class Gen:
    """Hostile inputs from one random stream; ``length()`` is log-uniform in [1, max_len]."""

    def __init__(self, rng: random.Random, max_len: int) -> None:
        self.rng, self.max_len = rng, max_len

    def length(self) -> int:
        if self.rng.random() < 0.05:
            return self.max_len
        return max(1, int(math.exp(self.rng.uniform(0, math.log(self.max_len)))))

    def call(self) -> ToolCall:
        return self.rng.choice(VALID_CALLS)

    def call_text(self, calls: list[ToolCall] | None = None, fmt: str | None = None) -> str:
        fmt = fmt or self.rng.choice(list(SERIALIZERS))
        return SERIALIZERS[fmt](calls if calls is not None else [self.call()])

    def json_value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if depth > 3 or r < 0.5:
            return self.rng.choice([None, True, False, 0, -1, 2 ** 63, 1.5, float("inf"), float("nan"), "", "x",
                                    "Paris", "\ud800", "é" * 3, 10 ** 30])
        if r < 0.75:
            return [self.json_value(depth + 1) for _ in range(self.rng.randint(0, 3))]
        return {self.rng.choice(["a", "city", "name", "type", "properties", "", "\udfff"]): self.json_value(depth + 1)
                for _ in range(self.rng.randint(0, 3))}

    # each text generator returns a str of about n characters
    def whitespace(self, n: int) -> str:
        run = "".join(self.rng.choice(SPACES[: self.rng.randint(1, len(SPACES))]) for _ in range(min(n, 64)))
        run = (run * (n // len(run) + 1))[:n]
        head = self.call_text(fmt="hermes") if self.rng.random() < 0.8 else ""
        tail = self.rng.choice(["", "x", "<tool_response>", "user", self.call_text(fmt="hermes")])
        return head + run + tail

    def repeated_tag(self, n: int) -> str:
        unit = self.rng.choice(TAGS) + self.rng.choice(["", "", " ", "\n", "x", "a(", '{"a":'])
        return unit * max(1, n // len(unit))

    def tag_soup(self, n: int) -> str:
        pieces = TAGS + [" ", "\n", "x", "user", "tool", self.call_text(), '"', "\\", ":", ",", "=", "'"]
        out, size = [], 0
        while size < n:
            piece = self.rng.choice(pieces)
            out.append(piece)
            size += len(piece)
        return "".join(out)

    def deep_nesting(self, n: int) -> str:
        depth = max(1, n // 6)
        form = self.rng.randrange(5)
        if form == 0:
            return '<tool_call>{"name": "get_weather", "arguments": {"city": ' + "[" * depth + "]" * depth + "}}</tool_call>"
        if form == 1:
            return '<tool_call>{"name": "book", "arguments": {"who": ' + '{"a": ' * depth + "1" + "}" * depth + "}}</tool_call>"
        if form == 2:
            return "[book(who=" + "[" * depth + "1" + "]" * depth + ")]"
        if form == 3:
            return "[f(" * depth + ")]" * depth
        return self.rng.choice(["[", "{", "(", '{"a":', "f(", "[f(a="]) * depth

    def huge_number(self, n: int) -> str:
        digits = max(1, min(n, 20_000))
        form = self.rng.randrange(6)
        if form == 0:
            return '<tool_call>{"name": "math.gcd", "arguments": {"a": ' + "9" * digits + ', "b": 1}}</tool_call>'
        if form == 1:
            return "[math.gcd(a=0x" + "f" * digits + ", b=1)]"
        if form == 2:
            return "[math.gcd(a=" + "9" * digits + ", b=-0x" + "A" * min(digits, 4000) + ")]"
        if form == 3:
            return '[{"name": "math.gcd", "arguments": {"a": 1e' + "9" * min(digits, 400) + ', "b": -0.0}}]'
        if form == 4:
            return "[math.gcd(a=" + "1" * digits + "j, b=1e999, scale=" + self.rng.choice(["nan", "-inf", "1_000"]) + ")]"
        return '<tool_call>{"name": "get_weather", "arguments": {"city": "x", "days": ' + \
            self.rng.choice(["NaN", "Infinity", "-Infinity", "1e400", "-" + "0" * digits]) + "}}</tool_call>"

    def surrogates(self, n: int) -> str:
        text = self.call_text()
        out = []
        for ch in text:
            out.append(ch)
            if ch == '"' and self.rng.random() < 0.2:
                out.append(self.rng.choice(["\ud800", "\udfff", "\\ud800", "\\udc00x", "\ud83d", "\\ud83d\\ude00"]))
        filler = "".join(self.rng.choice(["\ud800", "a", "\udc80", " "]) for _ in range(min(n, 2000)))
        return "".join(out) + filler

    def invalid_utf8(self, n: int) -> str:
        raw = self.call_text().encode() + bytes(self.rng.randrange(256) for _ in range(min(n, 5000)))
        return raw.decode("utf-8", "surrogateescape")  # undecodable bytes become lone surrogates

    def truncated_json(self, n: int) -> str:
        text = self.call_text([self.call() for _ in range(self.rng.randint(1, 3))])
        return text[: self.rng.randrange(len(text) + 1)]

    def mutation(self, n: int) -> str:
        text = list(self.call_text([self.call() for _ in range(self.rng.randint(1, 3))]))
        for _ in range(self.rng.randint(1, 8)):
            i = self.rng.randrange(len(text) + 1)
            op = self.rng.randrange(4)
            if op == 0 and text:
                del text[min(i, len(text) - 1)]
            elif op == 1:
                text.insert(i, self.rng.choice(string.printable + "\ud800é\u0000"))
            elif op == 2 and text:
                text[min(i, len(text) - 1)] = self.rng.choice('{}[]()"\':,=0x')
            else:
                j = self.rng.randrange(len(text) + 1)
                text[i:i] = text[min(i, j):max(i, j)][:200]
        return "".join(text)

    def huge_string(self, n: int) -> str:
        form = self.rng.randrange(4)
        if form == 0:
            return to_hermes([ToolCall("get_weather", {"city": "x" * n})])
        if form == 1:
            return to_pythonic([ToolCall("book", {"who": {"name": "é" * n}})])
        if form == 2:
            return "a" * n
        return " ".join(self.rng.choice(["word", "call", "get_weather", "(", "=", "'"]) for _ in range(n // 5 + 1))

    def multi_turn(self, n: int) -> str:
        turns = []
        size = 0
        while size < n:
            turn = self.call_text(fmt="hermes") if self.rng.random() < 0.8 else self.mutation(0)
            obs = "\nuser\n<tool_response>\n" + self.rng.choice(["ok", "42", "", "x" * 50]) + "\n</tool_response>\nassistant\n"
            turns.append(turn + obs)
            size += len(turns[-1])
        return "".join(turns) + self.rng.choice(["Done.", "", self.call_text(fmt="hermes")])

    def random_unicode(self, n: int) -> str:
        return "".join(chr(self.rng.randrange(0x110000)) for _ in range(min(n, 20_000)))

    def valid(self, n: int) -> str:
        calls = [self.call() for _ in range(self.rng.randint(0, 2))]
        return self.call_text(calls) if calls else "I cannot help with that."

    TEXT_KINDS = ("whitespace", "repeated_tag", "tag_soup", "deep_nesting", "huge_number", "surrogates",
                  "invalid_utf8", "truncated_json", "mutation", "huge_string", "multi_turn", "random_unicode", "valid")

    def text(self) -> tuple[str, str]:
        kind = self.rng.choice(self.TEXT_KINDS)
        return kind, getattr(self, kind)(self.length())

    # tools fields: (kind, value)
    def tools(self, valid_share: float = 0.0) -> tuple[str, Any]:
        if self.rng.random() < valid_share:
            return "valid", json.dumps(TOOLS)
        kind = self.rng.choice(["valid", "valid", "valid_object", "truncated", "no_name", "params_list", "params_number",
                                "invalid_utf8", "empty_list", "empty_string", "deep", "random_json", "weird_schema",
                                "huge", "surrogates", "duplicate", "not_json", "numbers"])
        good = json.dumps(TOOLS)
        if kind == "valid":
            return kind, good
        if kind == "valid_object":
            return kind, [dict(t) for t in TOOLS]
        if kind == "truncated":
            return kind, good[: self.rng.randrange(len(good))]
        if kind == "no_name":
            return kind, json.dumps([{k: v for k, v in t.items() if k != "name"} for t in TOOLS])
        if kind == "params_list":
            return kind, json.dumps([{"name": "get_weather", "parameters": [1, 2]}])
        if kind == "params_number":
            return kind, json.dumps([{"name": "get_weather", "parameters": 3.5}])
        if kind == "invalid_utf8":
            return kind, b"\xff\xfe" + good.encode() if self.rng.random() < 0.5 else good.encode()[:-3] + b"\xc3"
        if kind == "empty_list":
            return kind, "[]"
        if kind == "empty_string":
            return kind, self.rng.choice(["", "   ", "null"])
        if kind == "deep":
            depth = self.rng.choice([10, 70, 500, 5000])
            return kind, '[{"name": "f", "parameters": {"type": "object", "properties": {"a": ' + \
                '{"type": "object", "properties": {"b": ' * depth + '{"type": "string"}' + "}}" * depth + "}}}]"
        if kind == "random_json":
            return kind, json.dumps(self.json_value(), allow_nan=True)
        if kind == "weird_schema":
            schema = self.rng.choice([{"type": 5}, {"type": ["string", 3]}, {"enum": "abc"}, {"items": 7, "type": "array"},
                                      {"anyOf": [{"type": "string"}, 3]}, {"pattern": "(a+)+$", "type": "string"},
                                      {"type": "tuple"}, {"type": "object", "properties": []},
                                      {"minimum": "x", "type": "integer"}, {"$ref": "#/x"}])
            params = {"type": "object", "properties": {"city": schema}, "required": self.rng.choice([["city"], "city", [3], None])}
            return kind, json.dumps([{"name": "get_weather", "parameters": params}])
        if kind == "huge":
            n = self.length()
            return kind, json.dumps([{"name": f"f{i}", "description": "d" * 50,
                                      "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}
                                     for i in range(max(1, n // 120))])
        if kind == "surrogates":
            return kind, good.replace("Weather", "Wea\\ud800ther").replace("city", "ci\udfffty")
        if kind == "duplicate":
            return kind, json.dumps(TOOLS + TOOLS[:1])
        if kind == "not_json":
            return kind, self.rng.choice(["{not json", "[{'name': 'f'}]", "tools", "\x00"])
        return kind, self.rng.choice([42, 3.5, True, ["a"], {"name": 3}])

    def conversation(self) -> Any:
        r = self.rng.randrange(8)
        if r == 0:
            return json.dumps(CONVERSATION)
        if r == 1:  # OpenAI history with tool calls, good and broken
            tc = self.rng.choice([
                [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
                [{"function": {"arguments": "{}"}}], [{"function": {"name": "get_weather", "arguments": '{"city": '}}],
                [{"function": {"name": "get_weather", "arguments": [1]}}], "nope", [None], {"a": 1}])
            return json.dumps(CONVERSATION + [{"role": "assistant", "content": None, "tool_calls": tc},
                                              {"role": "tool", "tool_call_id": "c1", "content": "sunny"}])
        if r == 2:
            return json.dumps([{"role": "user", "content": "Pa\ud800ris " * 3}, {"role": "weird", "content": [1, {"a": 2}]}])
        if r == 3:
            return '[{"role": "user", "content": ' + "[" * 3000 + "]" * 3000 + "}]"
        if r == 4:
            return self.rng.choice(["", "[", "not json", b"\xff", 42, None])
        if r == 5:
            return [[{"role": "user", "content": "bfcl turns"}], [{"role": "assistant", "content": "x"}]]
        if r == 6:
            return json.dumps(self.json_value(), allow_nan=True)
        return json.dumps([{"role": "user", "content": "x" * self.length()}])

    def extra_info(self) -> tuple[str, Any, Any]:
        """(tools kind, extra_info, ground_truth)."""
        r = self.rng.random()
        if r < 0.03:
            return "no_extra", self.rng.choice([None, "str", 42, [1, 2]]), None
        extra: dict[str, Any] = {}
        kind = "absent"
        if self.rng.random() < 0.9:
            kind, extra["tools"] = self.tools()
        if self.rng.random() < 0.8:
            extra["conversation"] = self.conversation()
        if self.rng.random() < 0.6:
            gold = [self.call() for _ in range(self.rng.randint(0, 2))]
            extra["gold"] = self.rng.choice([json.dumps([c.to_bfcl() for c in gold]), "", "garbage", json.dumps(self.json_value())])
        if self.rng.random() < 0.4:
            extra["answer"] = self.answer()
            extra["category"] = self.rng.choice(CATEGORIES)
        gt = self.rng.choice([None, None, "42", json.dumps([self.call().to_bfcl()]), self.json_value()])
        return kind, extra, gt

    def answer(self) -> Any:
        r = self.rng.randrange(4)
        if r == 0:
            call = self.call()
            return json.dumps([{call.name: {k: [v, ""] for k, v in call.arguments.items()}}])
        if r == 1:
            return [{c.name: {k: [v] for k, v in c.arguments.items()}} for c in (self.call(), self.call())]
        if r == 2:
            return json.dumps(self.json_value(), allow_nan=True)
        return self.rng.choice(["", "[", '{"f": 3}', [{}], [{"a": {}, "b": {}}], None])

    def calls(self) -> tuple[str, list[ToolCall]]:
        if self.rng.random() < 0.5:
            kind, text = self.text()
            return kind, parse(text, self.rng.choice(PARSE_FORMATS[:3])).calls
        out = []
        for _ in range(self.rng.randint(0, 3)):
            call = self.call()
            args = dict(call.arguments)
            for _ in range(self.rng.randint(0, 3)):
                args[self.rng.choice(list(args) + ["extra", "days", "a"])] = self.rng.choice(
                    [self.json_value(), 10 ** self.rng.randint(1, 4000), int("f" * self.rng.randint(1, 3000), 16),
                     "x" * self.length(), nested(self.rng.randint(1, 600)), "\ud800", float("nan")])
            out.append(ToolCall(self.rng.choice([call.name, call.name, "nope", "", "math_gcd"]), args))
        return "random_calls", out


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def size_of(value: Any) -> int:
    """Characters in an input (strings, bytes, and the strings inside containers, to a bounded depth)."""
    stack, total = [(value, 0)], 0
    while stack:
        v, d = stack.pop()
        if isinstance(v, (str, bytes)):
            total += len(v)
        elif d < 50 and isinstance(v, dict):
            stack.extend((x, d + 1) for kv in v.items() for x in kv)
        elif d < 50 and isinstance(v, (list, tuple)):
            stack.extend((x, d + 1) for x in v)
        elif isinstance(v, ToolCall):
            stack.append((v.arguments, d + 1))
        else:
            total += 1
    return total


# -- one input ---------------------------------------------------------------------------------------

@dataclass
class Case:
    """One generated input: what to call and how to judge it."""

    index: int
    target: str
    kind: str
    length: int
    run: Callable[[], Any]
    check: Callable[[Any], str | None] = lambda out: None
    describe: str = ""


def make_case(index: int, seed: int, max_len: int, target: str, loop: asyncio.AbstractEventLoop,
              rm_path: str | None) -> Case:
    rng = random.Random(f"{seed}:{index}")
    g = Gen(rng, max_len)
    if target in ("reward_rules", "reward_rm"):
        kind, text = g.text()
        tools_kind, extra, gt = g.extra_info()
        if rng.random() < 0.02:
            text = text.encode("utf-8", "surrogatepass") if rng.random() < 0.5 else rng.choice([None, 42, [text]])
        kw: dict[str, Any] = {"rm_source": "none"} if target == "reward_rules" else {
            "rm_source": "inprocess", "model_path": rm_path}
        kw["format"] = rng.choice(["hermes", "hermes", "hermes", "json", "pythonic", "auto"])
        length = size_of(text) + size_of(extra) + size_of(gt)

        def run() -> Any:
            return loop.run_until_complete(compute_score("fuzz", text, gt, extra, **kw))

        return Case(index, target, f"{kind}/tools:{tools_kind}/{kw['format']}", length, run,
                    lambda out: check_reward(out, target), f"solution={text!r:.300} extra={extra!r:.300} gt={gt!r:.100}")
    if target == "parse":
        kind, text = g.text()
        fmt = rng.choice(PARSE_FORMATS)
        if fmt == "openai" and rng.random() < 0.5:
            text = {"role": "assistant", "content": text, "tool_calls": rng.choice([[], "x", [{"function": {"name": "f"}}]])}
        return Case(index, target, f"{kind}/{fmt}", size_of(text), lambda: parse(text, fmt),
                    lambda out: None if hasattr(out, "ok") else f"parse returned {type(out).__name__}", f"{text!r:.300}")
    if target == "strip_thinking":
        kind, text = g.text()
        return Case(index, target, kind, len(text), lambda: strip_thinking(text),
                    lambda out: None if isinstance(out, str) else "not a str", f"{text!r:.300}")
    if target == "catalog_load":
        kind, tools = g.tools()
        strict = rng.random() < 0.5
        return Case(index, target, f"{kind}/{'strict' if strict else 'lenient'}", size_of(tools),
                    lambda: ToolCatalog.load(tools, strict=strict), describe=f"{tools!r:.300}")
    if target == "check_calls":
        tools_kind, tools = g.tools(valid_share=0.5)
        kind, calls = g.calls()
        language = rng.choice(["python", "java", "javascript"])
        try:
            catalog: Any = ToolCatalog.load(tools)
        except CatalogError:
            catalog = tools  # raw: check_calls may raise CatalogError itself (documented)
        return Case(index, target, f"{kind}/tools:{tools_kind}", size_of(tools) + size_of(calls),
                    lambda: check_calls(calls, catalog, language=language), describe=f"{calls!r:.300} {tools!r:.200}")
    # ground_truth: construction may raise ValueError (documented); check must not raise
    tools_kind, tools = g.tools(valid_share=0.5)
    answer = g.answer()
    category = rng.choice(CATEGORIES)
    kind, calls = g.calls()
    if rng.random() < 0.1:
        calls = rng.choice([[], [{"f": {}}], "garbage"])

    def run_gt() -> Any:
        try:
            truth = GroundTruth(tools, answer, category)
        except ValueError as err:
            return Documented(err)
        try:
            return truth.check(calls)
        except CatalogError as err:
            if isinstance(calls, list) and all(isinstance(c, ToolCall) for c in calls):
                raise
            return Documented(err, ".check")

    return Case(index, target, f"{kind}/tools:{tools_kind}/{category or 'none'}",
                size_of(tools) + size_of(answer) + size_of(calls), run_gt,
                describe=f"answer={answer!r:.200} calls={calls!r:.200} tools={tools!r:.200}")


@dataclass
class Documented:
    """A documented exception caught inside a case (``where``: which call of the target raised it)."""

    error: BaseException
    where: str = ""


def check_reward(out: Any, target: str) -> str | None:
    if not isinstance(out, dict) or tuple(out) != KEYS:
        return f"keys {tuple(out) if isinstance(out, dict) else type(out).__name__} != KEYS"
    bad = [k for k, v in out.items() if type(v) is not float or not math.isfinite(v)]
    if bad:
        return f"not finite floats: {bad}"
    score, valid = out["score"], out["valid"]
    if out["tools_error"] and score != -1.0:
        return f"tools_error with score {score}"
    if target == "reward_rules" and (score == 0.0) != (valid == 1.0):
        return f"rules only: valid={valid} with score {score}"
    if target == "reward_rm" and out["n_turns"] == 1 and not out["fallback"]:
        if valid == 0.0 and score != -1.0:
            return f"single-turn invalid sample scored {score}"
        if valid == 1.0 and score < 0.0:
            return f"single-turn valid sample scored {score}"
    return None


# -- the run -----------------------------------------------------------------------------------------

@dataclass
class Stats:
    counts: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    documented: Counter = field(default_factory=Counter)
    escaped: Counter = field(default_factory=Counter)
    violations: list[dict[str, Any]] = field(default_factory=list)
    n_violations: Counter = field(default_factory=Counter)
    slowest: dict[str, dict[str, Any]] = field(default_factory=dict)
    worst_ratio: dict[str, Any] = field(default_factory=dict)
    by_decade: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    retimed: int = 0
    notes: Counter = field(default_factory=Counter)  # facts worth reporting that are not violations

    def violation(self, case: Case, what: str, detail: str) -> None:
        self.n_violations[what] += 1
        if len(self.violations) < 50:
            self.violations.append({"index": case.index, "target": case.target, "kind": case.kind,
                                    "length": case.length, "what": what, "detail": detail[:500],
                                    "input": case.describe[:600]})


def timed(case: Case) -> tuple[float, Any, BaseException | None]:
    start = time.perf_counter()
    try:
        out, err = case.run(), None
    except Exception as e:  # judged by the caller
        out, err = None, e
    return time.perf_counter() - start, out, err


def run_case(case: Case, stats: Stats, args: argparse.Namespace) -> None:
    # the real stderr: a captured sys.stderr (pytest) has no file descriptor for the watchdog thread
    faulthandler.dump_traceback_later(args.hang_s, exit=True, file=sys.__stderr__)
    try:
        elapsed, out, err = timed(case)
        base = args.rm_base_s if case.target == "reward_rm" else args.base_s
        bound = base + args.per_char_s * case.length
        if elapsed > bound:  # noise from other processes: the fastest of three counts
            stats.retimed += 1
            elapsed = min([elapsed] + [timed(case)[0] for _ in range(2)])
    finally:
        faulthandler.cancel_dump_traceback_later()
    stats.counts[case.target] += 1
    stats.kinds[f"{case.target}:{case.kind.split('/')[0]}"] += 1
    if err is not None:
        name = "ground_truth.check" if case.target == "ground_truth" else case.target
        key = f"{case.target}: {type(err).__name__}"
        if isinstance(err, DOCUMENTED[name]):
            stats.documented[key] += 1
        else:
            stats.escaped[f"{key} ({case.kind.split('/')[0]})"] += 1
            stats.violation(case, "escaped exception", f"{type(err).__name__}: {err!s:.300}")
    elif isinstance(out, Documented):
        stats.documented[f"{case.target}{out.where}: {type(out.error).__name__}"] += 1
    else:
        problem = case.check(out)
        if problem:
            stats.violation(case, "bad result", problem)
        elif case.target.startswith("reward") and out["n_turns"] > 1 and not out["valid"] and out["score"] > 0:
            # turn_combine=mean: valid turns can outweigh an invalid one (the documented combination rule)
            stats.notes[f"{case.target}: multi-turn sample with an invalid turn scored > 0"] += 1
    if elapsed > bound:
        stats.violation(case, "time bound", f"{elapsed:.3f} s > {bound:.3f} s for {case.length} characters")
    slow = stats.slowest.get(case.target)
    if slow is None or elapsed > slow["seconds"]:
        stats.slowest[case.target] = {"seconds": round(elapsed, 4), "kind": case.kind, "length": case.length,
                                      "index": case.index}
    ratio = elapsed / bound
    if not stats.worst_ratio or ratio > stats.worst_ratio["ratio"]:
        stats.worst_ratio = {"ratio": round(ratio, 3), "target": case.target, "kind": case.kind,
                             "length": case.length, "seconds": round(elapsed, 4), "index": case.index}
    decade = f"<=1e{max(0, math.ceil(math.log10(max(case.length, 1))))}"
    cell = stats.by_decade[case.target]
    cell[decade] = round(max(cell.get(decade, 0.0), elapsed), 4)


def targets_for(args: argparse.Namespace) -> list[tuple[int, str]]:
    names = [t for t in TARGET_WEIGHTS if t in args.targets]
    weights = [TARGET_WEIGHTS[t] for t in names]
    plan = []
    rng = random.Random(f"{args.seed}:targets")
    if names:
        plan = [(i, rng.choices(names, weights)[0]) for i in range(args.n)]
    if "reward_rm" in args.targets:
        plan += [(args.n + i, "reward_rm") for i in range(args.rm_n)]
    return plan


def build_rm(folder: str) -> str:
    import torch

    from toolrm_rl.data.backbones import build_tiny_qwen3

    torch.set_num_threads(1)
    return str(build_tiny_qwen3(os.path.join(folder, "tiny-qwen3-rm")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="inputs for the targets without the RM")
    ap.add_argument("--rm-n", type=int, default=None, help="inputs for reward_rm (default n // 50, at most 2,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-len", type=int, default=200_000, help="longest generated text (characters)")
    ap.add_argument("--json", default=None, help="also write the summary to this file")
    ap.add_argument("--targets", default=",".join(list(TARGET_WEIGHTS) + ["reward_rm"]),
                    help="comma-separated subset of: " + ", ".join(list(TARGET_WEIGHTS) + ["reward_rm"]))
    ap.add_argument("--base-s", type=float, default=0.1, help="time bound: seconds allowed at length 0")
    ap.add_argument("--per-char-s", type=float, default=2e-6, help="time bound: seconds per input character")
    ap.add_argument("--rm-base-s", type=float, default=2.0, help="time bound of reward_rm at length 0 (a forward pass)")
    ap.add_argument("--hang-s", type=float, default=120.0, help="a call this long stops the run with stack traces")
    ap.add_argument("--only", type=int, default=None, help="replay input INDEX alone and print it")
    ap.add_argument("--progress", type=int, default=0, help="print a progress line every N inputs (0: never)")
    args = ap.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(TARGET_WEIGHTS) - {"reward_rm"}
    if unknown:
        ap.error(f"--targets: unknown {sorted(unknown)}")
    if args.rm_n is None:
        args.rm_n = min(args.n // 50, 2000)
    # the reward's own (rate-limited) warnings and the RM's over-long-input warnings are expected here
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            summary = run(args)
    finally:
        logging.disable(previous)
    print_summary(summary)
    if args.json:
        write_json(args.json, summary)
    return 1 if summary["n_violations"] else 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate and check every planned input; the summary as a JSON-able dict."""
    plan = targets_for(args)
    if args.only is not None:
        plan = [p for p in plan if p[0] == args.only]
    loop = asyncio.new_event_loop()
    stats = Stats()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz-reward-") as folder:
        rm_path = build_rm(folder) if any(t == "reward_rm" for _, t in plan) else None
        if rm_path:  # load the checkpoint and warm up outside the timed calls
            loop.run_until_complete(compute_score("fuzz", to_hermes(VALID_CALLS[:1]), None, {"tools": json.dumps(TOOLS)},
                                                  rm_source="inprocess", model_path=rm_path))
        for done, (index, target) in enumerate(plan, 1):
            case = make_case(index, args.seed, args.max_len, target, loop, rm_path)
            if args.only is not None:
                print(f"input {index}: target={case.target} kind={case.kind} length={case.length}\n{case.describe}")
            run_case(case, stats, args)
            if args.progress and done % args.progress == 0:
                print(f"... {done}/{len(plan)} inputs, {len(stats.violations)} violations, "
                      f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    loop.close()
    return {
        "seed": args.seed, "n_inputs": sum(stats.counts.values()), "max_len": args.max_len,
        "seconds": round(time.perf_counter() - start, 1),
        "time_bound": f"{args.base_s} s + {args.per_char_s} s/char (reward_rm: {args.rm_base_s} s + the same per char)",
        "inputs_per_target": dict(sorted(stats.counts.items())),
        "inputs_per_kind": dict(sorted(stats.kinds.items())),
        "documented_exceptions": dict(sorted(stats.documented.items())),
        "escaped_exceptions": dict(sorted(stats.escaped.items())),
        "violations": dict(stats.n_violations), "n_violations": sum(stats.n_violations.values()),
        "retimed": stats.retimed, "notes": dict(stats.notes),
        "slowest_per_target": stats.slowest, "closest_to_the_bound": stats.worst_ratio,
        "max_seconds_by_length": {t: dict(sorted(v.items(), key=lambda kv: int(kv[0][4:]))) for t, v in
                                  sorted(stats.by_decade.items())},
        "first_violations": stats.violations,
    }


def print_summary(s: dict[str, Any]) -> None:
    print(f"fuzz_reward: {s['n_inputs']} inputs (seed {s['seed']}, max length {s['max_len']}) in {s['seconds']} s")
    print("inputs per target: " + ", ".join(f"{k} {v}" for k, v in s["inputs_per_target"].items()))
    print(f"time bound per call: {s['time_bound']}; re-timed over the bound: {s['retimed']}")
    print("escaped exceptions: " + (", ".join(f"{k} x{v}" for k, v in s["escaped_exceptions"].items()) or "0"))
    print("documented exceptions: " + (", ".join(f"{k} x{v}" for k, v in s["documented_exceptions"].items()) or "0"))
    print("violations: " + (", ".join(f"{k} x{v}" for k, v in s["violations"].items()) or "0"))
    for target, slow in sorted(s["slowest_per_target"].items()):
        print(f"slowest {target}: {slow['seconds']:.4f} s, kind {slow['kind']}, length {slow['length']} "
              f"(input {slow['index']})")
    w = s["closest_to_the_bound"]
    if w:
        print(f"closest to the bound: {w['ratio']:.3f} of it, {w['target']} {w['kind']} length {w['length']} "
              f"{w['seconds']:.4f} s (input {w['index']})")
    for target, cells in s["max_seconds_by_length"].items():
        print(f"max seconds by length, {target}: " + ", ".join(f"{k} {v:.4f}" for k, v in cells.items()))
    for note, count in s["notes"].items():
        print(f"note: {note}: {count}")
    for v in s["first_violations"][:10]:
        print(f"VIOLATION input {v['index']} {v['target']} {v['kind']} length {v['length']}: {v['what']}: "
              f"{v['detail']}\n    {v['input'][:300]}")


if __name__ == "__main__":
    sys.exit(main())
