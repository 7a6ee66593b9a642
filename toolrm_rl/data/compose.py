"""New examples composed from existing ones: parallel questions from pairs of single-call questions.

The offline training sources have few questions that need several independent calls at once, while
real failures are often one call where a parallel question wants several. :func:`parallel_examples`
joins two single-call questions over the same tools into one ("X. Also, Y.") whose gold is both calls,
order-free, as BFCL's parallel category.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import re
from typing import Iterable

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.example import ToolExample
from toolrm_rl.core.forms import restatements
from toolrm_rl.core.match import calls_equal

__all__ = ["parallel_examples", "merged_parallel_examples", "abstention_examples", "without_called_tools",
           "called_in_history", "join_questions", "composable", "restated_examples",
           "mark_abstention_twins"]

# First words that keep their capital after "Also, ": the pronoun I and its contractions.
_KEEP_CASE = {"I", "I'd", "I'm", "I've", "I'll"}
# An abstention example's id is its source example's id plus this (abstention_examples, mark_abstention_twins).
ABSTAIN_SUFFIX = "~abstain"


def join_questions(first: str, second: str) -> str:
    """``"X. Also, Y."``: the first question closed with its own punctuation (a full stop if it has none),
    the second lower-cased at its first letter unless its first word is "I", an acronym or a camel-case name.

    >>> join_questions("What is the weather in Paris?", "Calculate the area of a circle of radius 3")
    'What is the weather in Paris? Also, calculate the area of a circle of radius 3.'
    >>> join_questions("Get the stock price of AAPL", "I need the time in Tokyo.")
    'Get the stock price of AAPL. Also, I need the time in Tokyo.'
    """
    first, second = first.strip(), second.strip()
    if first and first[-1] not in ".?!":
        first += "."
    word = re.match(r"[A-Za-z']+", second)
    if word and word.group(0) not in _KEEP_CASE and word.group(0)[1:] == word.group(0)[1:].lower():
        second = second[0].lower() + second[1:]
    if second and second[-1] not in ".?!":
        second += "."
    return f"{first} Also, {second}"


def composable(example: ToolExample) -> bool:
    """A standalone question: one user message (text) and one gold call."""
    conv = example.conversation
    return (len(example.gold) == 1 and len(conv) == 1 and conv[0].get("role") == "user"
            and isinstance(conv[0].get("content"), str) and bool(conv[0]["content"].strip()))


def _catalog_key(example: ToolExample) -> str:
    return json.dumps(sorted(example.tools.to_dicts(), key=lambda d: d.get("name", "")), sort_keys=True)


def parallel_examples(examples: Iterable[ToolExample], seed: int = 0) -> list[ToolExample]:
    """Parallel examples from pairs of :func:`composable` examples with identical catalogs.

    Within each catalog the examples are shuffled with ``seed`` and paired in turn (each used at most
    once); a pair whose two calls are the same (after BFCL normalisation) or whose questions are the
    same text is skipped. A composed example has id ``<a.id>+<b.id>``, source ``<a.source>_parallel``,
    category ``parallel``, the joined question (:func:`join_questions`), both gold calls, and both BFCL
    possible answers concatenated when both examples have one (pairs where only one has one are skipped:
    the gold of the other would be judged by exact value). The output is the same for the same input
    order and seed.

    Args:
        examples: candidate examples; those that are not standalone single-call questions are ignored.
        seed: the pairing's seed.

    Returns:
        The composed examples, in order of their first member's position in ``examples``.
    """
    groups: dict[str, list[tuple[int, ToolExample]]] = {}
    for pos, ex in enumerate(examples):
        if composable(ex):
            groups.setdefault(_catalog_key(ex), []).append((pos, ex))
    out: list[tuple[int, ToolExample]] = []
    for key, members in groups.items():
        members = sorted(members, key=lambda m: m[1].id)
        random.Random(f"{seed}:{key}").shuffle(members)
        for (pos, a), (_, b) in zip(members[0::2], members[1::2]):
            qa, qb = a.conversation[0]["content"], b.conversation[0]["content"]
            if qa.strip() == qb.strip() or calls_equal(a.gold, b.gold) or (a.answer is None) != (b.answer is None):
                continue
            gold = [ToolCall(c.name, copy.deepcopy(c.arguments)) for c in a.gold + b.gold]
            answer = (a.answer + b.answer) if a.answer is not None and b.answer is not None else None
            out.append((pos, ToolExample(f"{a.id}+{b.id}", f"{a.source}_parallel",
                                         [{"role": "user", "content": join_questions(qa, qb)}], a.tools, gold,
                                         answer=answer, category="parallel",
                                         meta={"composed_from": [a.id, b.id]})))
    return [ex for _, ex in sorted(out, key=lambda item: item[0])]


def merged_parallel_examples(examples: Iterable[ToolExample], seed: int = 0,
                             limit: int | None = None) -> list[ToolExample]:
    """Parallel questions over two catalogs: like :func:`parallel_examples`, but the two single-call
    questions come from *different* catalogs (no function name in common), merged into one catalog, as
    BFCL's parallel_multiple category. Examples are shuffled with ``seed`` and paired in turn (each used at
    most once, at most ``limit`` results); pairs where only one side has a possible answer are skipped.
    The composed example has id ``<a.id>&<b.id>``, source ``<a.source>_merged``, category ``parallel``.
    """
    pool = sorted((ex for ex in examples if composable(ex)), key=lambda ex: ex.id)
    random.Random(f"merged:{seed}").shuffle(pool)
    out: list[ToolExample] = []
    used: set[str] = set()
    for a in pool:
        if limit is not None and len(out) >= limit:
            break
        if a.id in used:
            continue
        names_a = set(a.tools.names())
        for b in pool:
            if b.id in used or b.id == a.id or names_a & set(b.tools.names()) or (a.answer is None) != (b.answer is None):
                continue
            used.update((a.id, b.id))
            qa, qb = a.conversation[0]["content"], b.conversation[0]["content"]
            tools = ToolCatalog.load(a.tools.to_dicts() + b.tools.to_dicts())
            gold = [ToolCall(c.name, copy.deepcopy(c.arguments)) for c in a.gold + b.gold]
            answer = (a.answer + b.answer) if a.answer is not None else None
            out.append(ToolExample(f"{a.id}&{b.id}", f"{a.source}_merged", [{"role": "user", "content": join_questions(qa, qb)}],
                                   tools, gold, answer=answer, category="parallel",
                                   meta={"composed_from": [a.id, b.id]}))
            break
    return out


def called_in_history(conversation: list[dict]) -> set[str]:
    """Names of the functions the conversation's earlier assistant turns call (OpenAI ``tool_calls``)."""
    names = set()
    for message in conversation:
        for call in (message.get("tool_calls") if isinstance(message, dict) else None) or []:
            function = call.get("function", call) if isinstance(call, dict) else {}
            if isinstance(function, dict) and function.get("name"):
                names.add(function["name"])
    return names


def without_called_tools(example: ToolExample, example_id: str) -> tuple[ToolExample | None, str]:
    """``example`` with the functions its gold calls removed from the catalog, so no call is right (gold
    ``[]``, category ``irrelevance``), named ``example_id``; or ``(None, reason)`` when the conversation
    already calls a removed function (``history_calls_removed_tool``) or nothing would remain
    (``no_tool_left``)."""
    removed = {c.name for c in example.gold}
    if removed & called_in_history(example.conversation):
        return None, "history_calls_removed_tool"
    remaining = ToolCatalog(spec for spec in example.tools if spec.name not in removed)
    if not len(remaining):
        return None, "no_tool_left"
    return ToolExample(example_id, example.source, example.conversation, remaining, [], category="irrelevance",
                       meta={"removed_tools": sorted(removed)}), ""


def abstention_examples(examples: Iterable[ToolExample], seed: int = 0, share: float = 0.1) -> list[ToolExample]:
    """Questions no tool can serve: for a seeded ``share`` of the examples with gold calls, the functions the
    gold calls are removed from the catalog, so the right answer is no call (gold ``[]``, category
    ``irrelevance``, id ``<id>~abstain``). Skipped when nothing would remain or the conversation already
    calls a removed function. The offline sources have no irrelevance questions; without these a reward
    model learns that an answer without calls is always wrong (the paper's known weakness).

    >>> from toolrm_rl.core.calls import ToolCatalog
    >>> tools = ToolCatalog.load([{"name": "weather"}, {"name": "stock"}])
    >>> ex = ToolExample("q", "toy", [{"role": "user", "content": "Weather in Oslo?"}], tools,
    ...                  [ToolCall("weather", {"city": "Oslo"})])
    >>> [(a.id, a.tools.names(), a.gold) for a in abstention_examples([ex], share=1.0)]
    [('q~abstain', ['stock'], [])]
    """
    rng = random.Random(f"abstain:{seed}")
    out = []
    for ex in examples:
        if not ex.gold or rng.random() >= share:
            continue
        made, _ = without_called_tools(ex, ex.id + ABSTAIN_SUFFIX)
        if made is not None:
            out.append(made)
    return out


def mark_abstention_twins(examples: Iterable[ToolExample], abstentions: Iterable[ToolExample]) -> list[ToolExample]:
    """``examples`` with ``meta["abstention_twin"] = True`` on each one that an abstention example (id
    ``<id>~abstain``, :func:`abstention_examples`) was made from (copies; the inputs are not changed), so
    pair building can contrast the question with and without its tools even when the two land in
    different shards.
    """
    twins = {a.id.removesuffix(ABSTAIN_SUFFIX) for a in abstentions if a.id.endswith(ABSTAIN_SUFFIX)}
    return [dataclasses.replace(ex, meta={**(ex.meta or {}), "abstention_twin": True}) if ex.id in twins else ex
            for ex in examples]


def _last_user_index(conversation: list[dict]) -> int | None:
    for i in range(len(conversation) - 1, -1, -1):
        m = conversation[i]
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            return i
    return None


def restated_examples(examples: Iterable[ToolExample], seed: int = 0, share: float = 1.0) -> list[ToolExample]:
    """Questions that say a value in the user's words while the gold call keeps its canonical form: for a
    seeded ``share`` of the examples whose last user turn contains a gold argument value verbatim (once,
    and nowhere else in the conversation) that has a :func:`~toolrm_rl.core.forms.restatements` form, that
    value is rewritten in the turn ("2022-03-11" -> "March 11, 2022", 0.05 -> "5%", "USD" -> "US dollars");
    the gold is unchanged (id ``<id>~restated``, source ``<source>_restated``). Real failures copy the
    user's words where the answer converts them as often as they invent values, but the sources mostly
    quote values as the calls write them, so the copy (the ``raw_copy`` mutation) is rare without these.

    >>> from toolrm_rl.core.calls import ToolCatalog
    >>> tools = ToolCatalog.load([{"name": "book", "parameters": {"type": "object", "properties": {
    ...     "date": {"type": "string"}}}}])
    >>> ex = ToolExample("q", "toy", [{"role": "user", "content": "Book a room on 2025-07-04."}], tools,
    ...                  [ToolCall("book", {"date": "2025-07-04"})])
    >>> [(r.id, r.conversation[0]["content"], r.gold[0].arguments) for r in restated_examples([ex])]
    [('q~restated', 'Book a room on July 4, 2025.', {'date': '2025-07-04'})]
    """
    rng = random.Random(f"restate:{seed}")
    out = []
    for ex in examples:
        if not ex.gold or rng.random() >= share:
            continue
        turn = _last_user_index(ex.conversation)
        if turn is None:
            continue
        text = ex.conversation[turn]["content"]
        others = " ".join(str(m.get("content") or "") for i, m in enumerate(ex.conversation)
                          if i != turn and isinstance(m, dict))
        options = []
        for call in ex.gold:
            for value in call.arguments.values():
                written = (value if isinstance(value, str) else repr(value) if type(value) is float
                           else str(value) if type(value) is int else None)
                phrases = restatements(value)
                if not written or not phrases or written in others:
                    continue
                hits = list(re.finditer(rf"(?<![\w.]){re.escape(written)}(?![\w]|\.\d)", text))
                if len(hits) == 1:
                    options.append((hits[0], phrases))
        if not options:
            continue
        hit, phrases = rng.choice(options)
        conversation = copy.deepcopy(ex.conversation)
        conversation[turn]["content"] = text[:hit.start()] + rng.choice(phrases) + text[hit.end():]
        out.append(ToolExample(f"{ex.id}~restated", f"{ex.source}_restated", conversation, ex.tools,
                               [ToolCall(c.name, copy.deepcopy(c.arguments)) for c in ex.gold],
                               answer=ex.answer, category=ex.category, meta={**(ex.meta or {}), "restated": True}))
    return out
