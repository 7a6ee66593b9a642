"""Best-of-N with ground truth: how much a scorer lifts a policy when it picks one of N samples.

    toolrm eval best-of-n recipes/eval/best_of_n.yaml [key=value ...]

For questions with a possible answer (BFCL single-turn data from bfcl-eval, or a JSONL file of
examples), N candidate outputs per question come from a policy (any ``toolrm_rl.data.generate``
backend: vllm, transformers, openai) or from a candidates file (``{"id": ..., "candidates": [text, ...],
"greedy": text?}`` per line). Each candidate is parsed with the core parser and judged with the BFCL
matcher. For N = 1, 2, 4, ... up to the maximum (the first N candidates of each question), accuracy of:

- ``greedy``: the temperature-0 output: the file's ``greedy`` text, or one separate greedy sample
  when a policy is sampled; without one, candidate 0 (so it is then the same at every N).
- ``reward``: the candidate the scorer rates highest (ties: the earliest; unparsable candidates are
  never picked unless all are, then candidate 0).
- ``oracle``: pass@N, any of the N is correct.
- ``majority``: the most frequent canonical call list (BFCL string normalisation, 1 == 1.0, key and call
  order ignored) among parsed candidates; ties: the form seen first.
- ``first_valid``: the first candidate that parses to at least one call and passes the schema check
  (none: candidate 0).
- ``random``: a uniformly random candidate, as its exact expectation (the share of correct candidates).

Scores do not depend on N: every candidate is scored once and the strategies read prefixes.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from toolrm_rl.config import option as _f
from toolrm_rl.core.bfcl_types import language_of_category
from toolrm_rl.core.calls import ToolCatalog
from toolrm_rl.core.match import GroundTruth, canonical_calls, normalize_answer
from toolrm_rl.core.parse import parse, strip_thinking
from toolrm_rl.core.render import RMExample
from toolrm_rl.core.schema import check_calls
from toolrm_rl.data.records import iter_jsonl, iter_rows
from toolrm_rl.scoring import Scorer, get_scorer

log = logging.getLogger(__name__)

__all__ = ["STRATEGIES", "BestOfNConfig", "Question", "BestOfNResult", "make_scorer",
           "questions_from_bfcl", "questions_from_file", "load_candidates", "sample_candidates", "n_values",
           "best_of_n", "markdown", "run_best_of_n"]

STRATEGIES = ("greedy", "reward", "oracle", "majority", "first_valid", "random")


@dataclass
class BestOfNConfig:
    data: str = _f("bfcl", "'bfcl' (bfcl-eval's single-turn questions) or a JSONL/JSON file of examples with possible answers.")
    categories: list = _f(["simple_python", "multiple", "parallel", "parallel_multiple"], "BFCL categories (data=bfcl).")
    limit: int | None = _f(None, "Use a seeded sample of this many questions (None: all); with a candidates "
                                 "file, sampled from the questions that have candidates.")
    candidates: str | None = _f(None, "Pre-generated candidates JSONL ({id, candidates, greedy?}); set: no sampling.")
    policy: str | None = _f(None, "Generator backend to sample from: vllm, transformers or openai (toolrm_rl.data.generate).")
    policy_options: dict = _f({}, "Options for get_generator (model path, endpoint, dtype, ...).")
    n: int = _f(8, "Maximum N: candidates sampled (or read) per question; curves use N = 1, 2, 4, ... up to it. "
                   "A candidates file with fewer per question lowers it to what the file holds, with a warning.")
    temperature: float = _f(0.7, "Sampling temperature of the N candidates.")
    max_tokens: int = _f(512, "Maximum new tokens per candidate.")
    greedy_sample: bool = _f(True, "With a policy, also draw one temperature-0 output as the greedy baseline.")
    batch_size: int = _f(32, "Questions per generation call (candidates are saved after each, so runs resume).")
    scorer: str = _f("rules", "Scorer that picks the reward-selected candidate: rules, rm, hybrid, ...")
    model: str | None = _f(None, "Checkpoint for rm/hybrid scorers.")
    scorer_options: dict = _f({}, "Extra scorer constructor options.")
    out: str = _f("runs/eval/best_of_n", "Output directory: candidates.jsonl, report.json, report.md, best_of_n.png.")
    seed: int = _f(0, "Seed for question sampling and generation.")



def make_scorer(name: str, model: str | None = None, **options: Any) -> Scorer:
    """A scorer by name (:func:`toolrm_rl.scoring.get_scorer`). ``model`` is the ToolRM checkpoint of
    ``rm`` / ``hybrid`` and ignored by other backends, which take their settings from ``options``."""
    if name in ("rm", "hybrid") and "path" not in options and "model" not in options and "rm" not in options:
        if not model:
            raise ValueError(f"scorer {name!r} needs a model checkpoint (--model / model=PATH)")
        options["path"] = model
    return get_scorer(name, **options)


@dataclass
class Question:
    """A question with ground truth: catalog, conversation, BFCL possible answer and category."""

    id: str
    category: str
    conversation: list[dict[str, Any]]
    catalog: ToolCatalog
    answer: list[dict]

    @property
    def language(self) -> str:
        """Checker language from the category."""
        return language_of_category(self.category)


def _sample(items: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(items):
        return items
    keep = set(random.Random(seed).sample(range(len(items)), limit))
    return [x for i, x in enumerate(items) if i in keep]


def questions_from_bfcl(categories: Iterable[str], *, limit: int | None = None, seed: int = 0,
                        data_dir: str | Path | None = None) -> list[Question]:
    """BFCL single-turn questions (evaluation data) of ``categories``, optionally a seeded sample."""
    from toolrm_rl.data.bfcl import load_bfcl

    records = load_bfcl(list(categories), data_dir)
    return _sample([Question(r.id, r.category, r.conversation, r.catalog, r.answer) for r in records], limit, seed)


def questions_from_file(path: str | Path, *, limit: int | None = None, seed: int = 0) -> list[Question]:
    """Examples with possible answers from JSON lines (or a JSON list): ``id``, ``tools`` (or BFCL
    ``function``), ``conversation`` (or BFCL ``question``), ``possible_answer`` (or ``ground_truth``),
    optional ``category`` (default ``parallel``: calls matched in any order, equal counts)."""
    out = []
    for label, index, row in iter_rows(path):
        where = f"{label}: row {index}"
        try:
            catalog = ToolCatalog.load(row.get("tools", row.get("function")))
            turns = row.get("conversation", row.get("question"))
            turns = json.loads(turns) if isinstance(turns, str) and turns.strip().startswith("[") else turns
            conversation = ([{"role": "user", "content": turns}] if isinstance(turns, str) else
                            [m for t in turns for m in (t if isinstance(t, list) else [t])])
            answer = normalize_answer(row.get("possible_answer", row.get("ground_truth")), catalog)
        except (ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"{where}: {err}") from None
        if not conversation or not answer:
            raise ValueError(f"{where}: needs a conversation/question and a non-empty possible_answer/ground_truth")
        out.append(Question(str(row.get("id", f"{Path(label).name}#{index}")), str(row.get("category", "parallel")),
                            conversation, catalog, answer))
    return _sample(out, limit, seed)


def load_candidates(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{id: {"candidates": [text, ...], "greedy": text or None}}`` from a candidates JSONL file."""
    out: dict[str, dict[str, Any]] = {}
    for line_no, row in iter_jsonl(path):
        if "id" not in row or not isinstance(row.get("candidates"), list):
            raise ValueError(f"{path}: line {line_no}: expected {{\"id\": ..., \"candidates\": [text, ...]}}")
        out[str(row["id"])] = {"candidates": row["candidates"], "greedy": row.get("greedy")}
    return out


def sample_candidates(generator: Any, questions: Sequence[Question], *, n: int, temperature: float = 0.7,
                      max_tokens: int = 512, seed: int = 0, greedy_sample: bool = True, batch_size: int = 32,
                      save_to: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Sample ``n`` candidates per question from a generator (``generate(requests, *, n, temperature,
    max_tokens, seed) -> list[list[str]]``), plus one temperature-0 output when ``greedy_sample``.

    With ``save_to``, each batch is appended to that candidates JSONL file, and questions already in it
    are not sampled again (a stopped run resumes).
    """
    from tqdm import tqdm

    from toolrm_rl.data.generate import GenerationRequest

    done = load_candidates(save_to) if save_to and Path(save_to).exists() else {}
    todo = [q for q in questions if q.id not in done or len(done[q.id]["candidates"]) < n]
    for start in tqdm(range(0, len(todo), batch_size), desc="sampling", disable=not todo):
        batch = todo[start:start + batch_size]
        requests = [GenerationRequest(messages=q.conversation, tools=q.catalog.to_openai(), id=q.id) for q in batch]
        samples = generator.generate(requests, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed + start)
        greedy = (generator.generate(requests, n=1, temperature=0.0, max_tokens=max_tokens, seed=seed)
                  if greedy_sample else [[None]] * len(batch))
        if len(samples) != len(batch) or len(greedy) != len(batch):
            raise RuntimeError(f"generator returned {len(samples)} outputs for {len(batch)} requests")
        rows = [{"id": q.id, "candidates": list(s), "greedy": g[0] if g else None} for q, s, g in zip(batch, samples, greedy)]
        for row in rows:
            done[row["id"]] = {"candidates": row["candidates"], "greedy": row["greedy"]}
        if save_to:
            Path(save_to).parent.mkdir(parents=True, exist_ok=True)
            with open(save_to, "a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return done


def n_values(max_n: int) -> list[int]:
    """1, 2, 4, ... up to ``max_n`` (``max_n`` itself included).

    >>> n_values(6)
    [1, 2, 4, 6]
    """
    if max_n < 1:
        raise ValueError("max N must be >= 1")
    ns = [1 << k for k in range(max_n.bit_length()) if 1 << k <= max_n]
    return ns if ns[-1] == max_n else ns + [max_n]


@dataclass
class BestOfNResult:
    """Accuracy per strategy and N, and what each strategy picked.

    ``selections[question_id][strategy][str(N)]`` is the index of the picked candidate (``-1``: the
    separate greedy output; absent for ``oracle`` and ``random``, which pick nothing). ``coverage``
    (set by :func:`run_best_of_n`) counts the questions loaded, those with and without candidates,
    candidate ids matching no question, and the N asked for.
    """

    scorer: str
    ns: list[int]
    n_questions: int
    accuracy: dict[str, list[float]]
    selections: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    candidate_stats: dict[str, float] = field(default_factory=dict)
    coverage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def _argmax(values: Sequence[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def best_of_n(questions: Sequence[Question], candidates: dict[str, dict[str, Any]], scorer: Scorer, *,
              max_n: int | None = None) -> BestOfNResult:
    """Evaluate every strategy of the module doc over N = 1, 2, 4, ... (see :func:`n_values`).

    Every question needs at least ``max_n`` candidates (default: the smallest count over questions).
    """
    missing = [q.id for q in questions if q.id not in candidates]
    if missing:
        raise ValueError(f"no candidates for {len(missing)} questions (first: {missing[0]!r})")
    if not questions:
        raise ValueError("no questions")
    have = min(len(candidates[q.id]["candidates"]) for q in questions)
    max_n = have if max_n is None else max_n
    if have < max_n or max_n < 1:
        short = next(q.id for q in questions if len(candidates[q.id]["candidates"]) < max(max_n, 1))
        raise ValueError(f"question {short!r} has fewer than N={max_n} candidates")
    ns = n_values(max_n)

    # Parse and judge every candidate once; score the parsed ones in one batch.
    judged: list[dict[str, Any]] = []
    to_score: list[RMExample] = []
    where: list[tuple[int, int]] = []
    parsed_ok = correct_total = 0
    for qi, q in enumerate(questions):
        truth = GroundTruth(q.catalog, q.answer, q.category, q.language)
        texts = list(candidates[q.id]["candidates"][:max_n])
        greedy_text = candidates[q.id].get("greedy")
        info = {"parsed": [], "correct": [], "canon": [], "valid": [], "greedy_correct": None}
        for ci, text in enumerate(texts):
            result = parse(text)
            ok = result.ok
            info["parsed"].append(ok)
            info["correct"].append(ok and truth.check(result.calls).valid)
            info["canon"].append(canonical_calls(result.calls) if ok else None)
            info["valid"].append(ok and bool(result.calls) and check_calls(result.calls, q.catalog, language=q.language).ok)
            parsed_ok += ok
            correct_total += info["correct"][-1]
            if ok:
                answer_text = None if result.calls else strip_thinking(text if isinstance(text, str) else "").strip()
                to_score.append(RMExample(q.catalog, q.conversation, result.calls, answer_text or None))
                where.append((qi, ci))
        if greedy_text is not None:
            g = parse(greedy_text)
            info["greedy_correct"] = g.ok and truth.check(g.calls).valid
        info["scores"] = [-math.inf] * len(texts)
        judged.append(info)
    for (qi, ci), s in zip(where, scorer.score(to_score) if to_score else []):
        judged[qi]["scores"][ci] = float(s)

    accuracy: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    selections: dict[str, dict[str, dict[str, int]]] = {q.id: {s: {} for s in ("greedy", "reward", "majority", "first_valid")}
                                                        for q in questions}
    for n in ns:
        hits = Counter()
        expected_random = 0.0
        for q, info in zip(questions, judged):
            correct = info["correct"][:n]
            picks = {}
            if info["greedy_correct"] is not None:
                picks["greedy"] = -1
                hits["greedy"] += info["greedy_correct"]
            else:
                picks["greedy"] = 0
            picks["reward"] = _argmax(info["scores"][:n])
            forms = [(c, i) for i, c in enumerate(info["canon"][:n]) if c is not None]
            if forms:
                counts = Counter(c for c, _ in forms)
                top = max(counts.values())
                picks["majority"] = next(i for c, i in forms if counts[c] == top)
            else:
                picks["majority"] = 0
            picks["first_valid"] = next((i for i, v in enumerate(info["valid"][:n]) if v), 0)
            for strategy, idx in picks.items():
                selections[q.id][strategy][str(n)] = idx
                if idx >= 0:
                    hits[strategy] += correct[idx]
            hits["oracle"] += any(correct)
            expected_random += sum(correct) / n
        total = len(questions)
        for strategy in STRATEGIES:
            accuracy[strategy].append(expected_random / total if strategy == "random" else hits[strategy] / total)
    n_cands = len(questions) * max_n
    return BestOfNResult(scorer=getattr(scorer, "name", type(scorer).__name__), ns=ns, n_questions=len(questions),
                         accuracy=accuracy, selections=selections,
                         candidate_stats={"candidates": n_cands, "parsed": parsed_ok / n_cands,
                                          "correct": correct_total / n_cands})


def markdown(result: BestOfNResult) -> str:
    """A markdown table: one row per N, one column per strategy."""
    from toolrm_rl.eval.plots import md_table

    rows = [[n] + [result.accuracy[s][i] for s in STRATEGIES] for i, n in enumerate(result.ns)]
    head = (f"Best-of-N on {result.n_questions} questions, reward = `{result.scorer}` "
            f"(candidates parsed: {result.candidate_stats.get('parsed', float('nan')):.3f}, "
            f"correct: {result.candidate_stats.get('correct', float('nan')):.3f})\n\n")
    cov = result.coverage
    if cov.get("without_candidates"):
        head += (f"**{cov['without_candidates']} of {cov['questions']} questions had no candidates and are not "
                 f"counted.**\n\n")
    return head + md_table(["N"] + list(STRATEGIES), rows)


def run_best_of_n(cfg: BestOfNConfig, *, generator: Any = None, scorer: Scorer | None = None,
                  progress: Callable[[str], None] = log.info) -> BestOfNResult:
    """The whole recipe: questions, candidates (file, or sampled and saved to ``out/candidates.jsonl``),
    evaluation, then ``report.json``, ``report.md`` and ``best_of_n.png`` in ``cfg.out``."""
    from toolrm_rl.eval.plots import atomic_write_text, line_chart

    def warn(message: str) -> None:
        log.warning(message)
        if progress is not log.info:
            progress(f"WARNING: {message}")

    out = Path(cfg.out)
    # With a candidates file, the limit samples among the questions that have candidates (sampling
    # first would drop most of a file that covers only part of the data, silently).
    limit = None if cfg.candidates else cfg.limit
    questions = (questions_from_bfcl(cfg.categories, limit=limit, seed=cfg.seed) if cfg.data == "bfcl"
                 else questions_from_file(cfg.data, limit=limit, seed=cfg.seed))
    progress(f"{len(questions)} questions from {cfg.data}")
    coverage: dict[str, Any] = {"questions": len(questions), "n_requested": cfg.n}
    max_n = cfg.n
    if cfg.candidates:
        candidates = load_candidates(cfg.candidates)
        ids = {q.id for q in questions}
        with_candidates = [q for q in questions if q.id in candidates]
        unknown = sorted(set(candidates) - ids)
        coverage.update(with_candidates=len(with_candidates), without_candidates=len(questions) - len(with_candidates),
                        candidates_without_question=len(unknown))
        if not with_candidates:
            raise ValueError(f"no question of {cfg.data} has candidates in {cfg.candidates} (question ids look like "
                             f"{next(iter(ids), None)!r}, candidate ids like {next(iter(candidates), None)!r})")
        if len(with_candidates) < len(questions):
            warn(f"{len(questions) - len(with_candidates)} of {len(questions)} questions of {cfg.data} have no "
                 f"candidates in {cfg.candidates}: they are left out of every accuracy")
        if unknown:
            warn(f"{len(unknown)} candidate rows of {cfg.candidates} match no question of {cfg.data} "
                 f"(first: {unknown[0]!r}): ignored")
        questions = _sample(with_candidates, cfg.limit, cfg.seed)
        progress(f"{len(questions)} questions with candidates"
                 + (f" (a seeded sample, limit={cfg.limit})" if len(questions) < len(with_candidates) else ""))
        counts = {q.id: len(candidates[q.id]["candidates"]) for q in questions}
        fewest = min(counts.values())
        if fewest < 1:
            raise ValueError(f"question {min(counts, key=counts.get)!r} has an empty candidates list in {cfg.candidates}")
        if fewest < max_n:
            short = sum(c < max_n for c in counts.values())
            warn(f"n={max_n} but {short} of {len(questions)} questions have fewer candidates in {cfg.candidates} "
                 f"(fewest: {fewest}): evaluating N up to {fewest}")
            max_n = fewest
    else:
        if generator is None:
            if not cfg.policy:
                raise ValueError("set candidates=FILE or policy=vllm|transformers|openai")
            from toolrm_rl.data.generate import get_generator

            generator = get_generator(cfg.policy, **cfg.policy_options)
        candidates = sample_candidates(generator, questions, n=cfg.n, temperature=cfg.temperature,
                                       max_tokens=cfg.max_tokens, seed=cfg.seed, greedy_sample=cfg.greedy_sample,
                                       batch_size=cfg.batch_size, save_to=out / "candidates.jsonl")
    scorer = scorer or make_scorer(cfg.scorer, cfg.model, **cfg.scorer_options)
    result = best_of_n(questions, candidates, scorer, max_n=max_n)
    result.coverage = coverage
    atomic_write_text(out / "report.json", json.dumps(result.to_dict(), indent=1))
    atomic_write_text(out / "report.md", markdown(result))
    line_chart(result.ns, result.accuracy, out / "best_of_n.png", title=f"Best-of-N ({result.n_questions} questions, "
               f"reward: {result.scorer})", xlabel="N (candidates per question)", logx=True, ylim=(0.0, 1.0))
    return result
