"""Robustness of a scorer to input noise: pairwise accuracy under graded, seeded perturbations.

    toolrm eval noise --data pairs.jsonl --scorer rules --scorer rm --model PATH --levels 0,0.1,0.2,0.4

Perturbations of an evaluation pair (chosen and rejected answers stay right and wrong):

- ``typos``: typos (swap, drop, double or replace a letter) in a ``level`` share of the words of the
  last user message.
- ``descriptions``: a ``level`` share of the tool and parameter descriptions made noisy (a quarter
  of their words dropped, typos in half of the rest).
- ``rename_params``: a ``level`` share of the catalog's top-level parameters renamed to random
  identifiers, consistently in the schemas (``properties``, ``required``) and in both candidates' calls.
- ``shuffle_tools``: a ``level`` share of the catalog's tools (at least two) each moved to another one's
  position (a random cycle, so every chosen tool moves).
- ``distractors``: ``round(level * 10)`` tools from other pairs' catalogs (names not in this one) inserted
  at random positions.

Every perturbation is a function of (seed, perturbation, level, pair id, pair index): reruns give the
same inputs, and level 0 is the identity. Accuracy counts ties as losses, as in FC-RewardBench.
"""

from __future__ import annotations

import copy
import math
import random
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from toolrm_rl.config import option as _f
from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.io import atomic_write, write_json
from toolrm_rl.core.subset import seeded_subset
from toolrm_rl.data.obfuscate import random_identifier
from toolrm_rl.data.records import PairRecord
from toolrm_rl.scoring import Scorer, build_scorers, score_pairs

__all__ = ["PERTURBATIONS", "NoiseConfig", "NoiseResult", "perturb", "perturb_all", "rename_params", "typo_text",
           "evaluate_noise", "markdown", "run_noise"]

PERTURBATIONS = ("typos", "descriptions", "rename_params", "shuffle_tools", "distractors")
DISTRACTORS_PER_UNIT = 10  # distractor tools at level 1.0


@dataclass
class NoiseConfig:
    data: str | None = _f(None, "FC-RewardBench-format pairs (file, save_to_disk dir or hub id).")
    scorers: list = _f(["rules"], "Scorers to evaluate: names (rules, rm, hybrid, ...) or "
                                  "{name, label?, model?, options?}.")
    model: str | None = _f(None, "Checkpoint for rm/hybrid scorers (they share one loaded model).")
    scorer_options: dict = _f({}, "Options by scorer name (toolrm_rl.scoring.factory), e.g. {rm: {device: cuda}}.")
    perturbations: list = _f(list(PERTURBATIONS), "Perturbations to apply (see toolrm_rl.eval.noise).")
    levels: list = _f([0.0, 0.1, 0.2, 0.4], "Noise levels: share of words/descriptions/params/tools touched; x10 distractors.")
    limit: int | None = _f(None, "Use a seeded sample of this many pairs (None: all).")
    seed: int = _f(0, "Seed of the perturbations and the sample.")
    out: str = _f("runs/eval/noise", "Output directory: report.json, report.md, noise_<scorer>.png.")


def _count(level: float, n: int) -> int:
    return min(n, int(level * n + 0.5))


# -- text noise -----------------------------------------------------------------------------------------

_WORD = re.compile(r"\S+")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _typo(word: str, rng: random.Random) -> str:
    op = rng.randrange(4)
    i = rng.randrange(len(word))
    if op == 0 and len(word) > 1:  # swap with the next letter
        i = min(i, len(word) - 2)
        out = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    elif op == 1 and len(word) > 1:  # drop a letter
        out = word[:i] + word[i + 1:]
    elif op == 2:  # replace a letter
        out = word[:i] + rng.choice(_LETTERS) + word[i + 1:]
    else:
        out = word
    return out if out != word else word[:i] + word[i] + word[i:]  # doubling always changes the word


def typo_text(text: str, share: float, rng: random.Random) -> str:
    """``text`` with one typo in each of ``round(share * words)`` randomly chosen words (spacing kept)."""
    spans = [m.span() for m in _WORD.finditer(text)]
    chosen = sorted(rng.sample(range(len(spans)), _count(share, len(spans))))
    out, pos = [], 0
    for k in chosen:
        start, end = spans[k]
        out += [text[pos:start], _typo(text[start:end], rng)]
        pos = end
    return "".join(out) + text[pos:]


def _noisy_description(text: str, rng: random.Random) -> str:
    words = text.split()
    if not words:
        return text
    drop = set(rng.sample(range(len(words)), len(words) // 4))
    kept = " ".join(w for i, w in enumerate(words) if i not in drop)
    return typo_text(kept, 0.5, rng)


# -- perturbations ----------------------------------------------------------------------------------------

def _docs(pair: PairRecord) -> list[dict[str, Any]]:
    return ToolCatalog.load(pair.tools).to_dicts()  # deep copies


def _with(pair: PairRecord, *, tools: list | None = None, conversation: list | None = None,
          chosen: list | None = None, rejected: list | None = None) -> PairRecord:
    return replace(pair, tools=ToolCatalog.load(tools) if tools is not None else pair.tools,
                   conversation=conversation if conversation is not None else copy.deepcopy(pair.conversation),
                   chosen=chosen if chosen is not None else list(pair.chosen),
                   rejected=rejected if rejected is not None else list(pair.rejected))


def _typos(pair: PairRecord, level: float, rng: random.Random, pool: Any) -> PairRecord:
    conversation = copy.deepcopy(pair.conversation)
    for msg in reversed(conversation):
        if msg.get("role") == "user" and isinstance(msg.get("content"), str):
            msg["content"] = typo_text(msg["content"], level, rng)
            break
    return _with(pair, conversation=conversation)


def _descriptions(pair: PairRecord, level: float, rng: random.Random, pool: Any) -> PairRecord:
    docs = _docs(pair)
    slots: list[tuple[dict, str]] = [(d, "description") for d in docs]
    for d in docs:
        props = (d.get("parameters") or {}).get("properties") or {}
        slots += [(p, "description") for p in props.values() if isinstance(p, dict) and p.get("description")]
    for k in sorted(rng.sample(range(len(slots)), _count(level, len(slots)))):
        holder, key = slots[k]
        holder[key] = _noisy_description(str(holder.get(key) or ""), rng)
    return _with(pair, tools=docs)


def rename_params(pair: PairRecord, level: float, rng: random.Random) -> tuple[PairRecord, dict[str, dict[str, str]]]:
    """Rename a ``level`` share of top-level parameters in the schemas and in both candidates' calls;
    returns the new pair and ``{function: {old: new}}``."""
    docs = _docs(pair)
    slots = [(d["name"], p) for d in docs for p in ((d.get("parameters") or {}).get("properties") or {})]
    taken = {p for _, p in slots} | {d["name"] for d in docs}
    mapping: dict[str, dict[str, str]] = {}
    for k in sorted(rng.sample(range(len(slots)), _count(level, len(slots)))):
        func, param = slots[k]
        mapping.setdefault(func, {})[param] = random_identifier(rng, taken)
    for d in docs:
        names = mapping.get(d["name"])
        if not names:
            continue
        params = d["parameters"]
        params["properties"] = {names.get(p, p): v for p, v in params["properties"].items()}
        if isinstance(params.get("required"), list):
            params["required"] = [names.get(p, p) if isinstance(p, str) else p for p in params["required"]]

    def calls(items: list[ToolCall]) -> list[ToolCall]:
        return [ToolCall(c.name, {mapping.get(c.name, {}).get(a, a): v for a, v in c.arguments.items()}) for c in items]

    return _with(pair, tools=docs, chosen=calls(pair.chosen), rejected=calls(pair.rejected)), mapping


def _rename(pair: PairRecord, level: float, rng: random.Random, pool: Any) -> PairRecord:
    return rename_params(pair, level, rng)[0]


def _shuffle(pair: PairRecord, level: float, rng: random.Random, pool: Any) -> PairRecord:
    docs = _docs(pair)
    k = _count(level, len(docs))
    k = 2 if k == 1 and len(docs) > 1 else k  # moving one tool needs a second one to swap with
    positions = rng.sample(range(len(docs)), k)  # a random cycle: every chosen tool lands elsewhere
    moved = [docs[i] for i in positions]
    for i, doc in zip(positions[1:] + positions[:1], moved):
        docs[i] = doc
    return _with(pair, tools=docs)


def _distractors(pair: PairRecord, level: float, rng: random.Random, pool: Any) -> PairRecord:
    docs = _docs(pair)
    names = {d["name"] for d in docs}
    own = pool["index"]
    options = [(i, doc) for i, doc in pool["docs"] if i != own and doc["name"] not in names]
    rng.shuffle(options)  # a seeded order; the first tools with unseen names are taken
    extra: list[dict] = []
    for _, doc in options:
        if len(extra) >= int(level * DISTRACTORS_PER_UNIT + 0.5):
            break
        if doc["name"] not in names:
            names.add(doc["name"])
            extra.append(copy.deepcopy(doc))
    for doc in extra:
        docs.insert(rng.randint(0, len(docs)), doc)
    return _with(pair, tools=docs)


_FUNCS: dict[str, Callable[..., PairRecord]] = {"typos": _typos, "descriptions": _descriptions, "rename_params": _rename,
                                                 "shuffle_tools": _shuffle, "distractors": _distractors}


def _rng(seed: int, kind: str, level: float, pair: PairRecord, index: int) -> random.Random:
    return random.Random(f"{seed}|{kind}|{level!r}|{pair.id}|{index}")  # str seeds hash with SHA-512: stable


def _pool(pairs: Sequence[PairRecord]) -> list[tuple[int, dict]]:
    return [(i, doc) for i, p in enumerate(pairs) for doc in ToolCatalog.load(p.tools).to_dicts()]


def perturb(pair: PairRecord, kind: str, level: float, *, seed: int = 0, index: int = 0,
            pool: list[tuple[int, dict]] | None = None) -> PairRecord:
    """One perturbed copy of ``pair`` (``pair`` itself at level 0). ``pool`` (``(pair index, tool doc)``
    items; see :func:`perturb_all`) supplies distractor tools; ``index`` is the pair's position in it."""
    if kind not in _FUNCS:
        raise ValueError(f"unknown perturbation {kind!r}; choose from {PERTURBATIONS}")
    if not 0 <= level <= 1 and kind != "distractors":
        raise ValueError(f"{kind}: level must be in [0, 1], got {level}")
    if level == 0:
        return pair
    return _FUNCS[kind](pair, level, _rng(seed, kind, level, pair, index), {"docs": pool or [], "index": index})


def perturb_all(pairs: Sequence[PairRecord], kind: str, level: float, *, seed: int = 0) -> list[PairRecord]:
    """Every pair perturbed (distractors come from the other pairs' catalogs)."""
    pool = _pool(pairs) if kind == "distractors" and level > 0 else None
    return [perturb(p, kind, level, seed=seed, index=i, pool=pool) for i, p in enumerate(pairs)]


# -- evaluation ---------------------------------------------------------------------------------------------

@dataclass
class NoiseResult:
    """Pairwise accuracy (ties are losses) per perturbation and level: ``accuracy[kind][i]`` at ``levels[i]``."""

    scorer: str
    n: int
    levels: list[float]
    accuracy: dict[str, list[float]]
    ties: dict[str, list[int]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def _accuracy(scorer: Scorer, pairs: Sequence[PairRecord]) -> tuple[float, int]:
    scores = score_pairs(scorer, [(p.chosen_example(), p.rejected_example()) for p in pairs])
    return (sum(c > r for c, r in scores) / len(scores) if scores else math.nan), sum(c == r for c, r in scores)


def evaluate_noise(scorer: Scorer, pairs: Sequence[PairRecord], *, perturbations: Sequence[str] = PERTURBATIONS,
                   levels: Sequence[float] = (0.0, 0.1, 0.2, 0.4), seed: int = 0,
                   progress: Callable[[str], None] | None = None) -> NoiseResult:
    """Accuracy of ``scorer`` on ``pairs`` under each perturbation at each level (level 0 scored once)."""
    levels = [float(x) for x in levels]
    accuracy: dict[str, list[float]] = {k: [] for k in perturbations}
    ties: dict[str, list[int]] = {k: [] for k in perturbations}
    clean = None
    for kind in perturbations:
        for level in levels:
            if level == 0:
                clean = clean or _accuracy(scorer, pairs)
                acc, tie = clean
            else:
                acc, tie = _accuracy(scorer, perturb_all(pairs, kind, level, seed=seed))
            accuracy[kind].append(acc)
            ties[kind].append(tie)
            if progress:
                progress(f"{getattr(scorer, 'name', '?')} {kind} @ {level:g}: {acc:.3f}")
    return NoiseResult(getattr(scorer, "name", type(scorer).__name__), len(pairs), levels, accuracy, ties)


def markdown(results: Sequence[NoiseResult]) -> str:
    """One table per scorer: rows = perturbations, columns = levels."""
    from toolrm_rl.eval.plots import md_table

    parts = []
    for r in results:
        parts.append(f"### {r.scorer} ({r.n} pairs; pairwise accuracy, ties are losses)\n\n"
                     + md_table(["perturbation"] + [f"level {x:g}" for x in r.levels],
                                [[k] + list(v) for k, v in r.accuracy.items()]))
    return "\n".join(parts)


def run_noise(cfg: NoiseConfig, *, scorers: Sequence[Scorer] | None = None,
              progress: Callable[[str], None] | None = None) -> list[NoiseResult]:
    """The recipe: load pairs, evaluate every scorer, write ``report.json``, ``report.md`` and one
    ``noise_<scorer>.png`` per scorer in ``cfg.out``."""
    from toolrm_rl.data.records import load_pairs
    from toolrm_rl.eval.plots import line_chart

    if not cfg.data:
        raise ValueError("data: a pair file is required")
    pairs, _ = load_pairs(cfg.data)
    pairs = seeded_subset(pairs, cfg.limit, cfg.seed)
    if scorers is None:
        scorers = list(build_scorers(cfg.scorers, cfg.model, cfg.scorer_options).values())
    results = [evaluate_noise(s, pairs, perturbations=cfg.perturbations, levels=cfg.levels, seed=cfg.seed,
                              progress=progress) for s in scorers]
    out = Path(cfg.out)
    write_json(out / "report.json", [r.to_dict() for r in results])
    atomic_write(out / "report.md", markdown(results))
    for r in results:
        line_chart(r.levels, r.accuracy, out / f"noise_{r.scorer}.png", title=f"{r.scorer}: accuracy under input noise "
                   f"({r.n} pairs)", xlabel="noise level", reference=0.5, ylim=(0.0, 1.0))
    return results
