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

Scores do not depend on N: every candidate is scored once and the strategies read prefixes. With
``scorers`` (e.g. ``[rules, rm, hybrid]``) each scorer is its own reward-selected column over the same
candidates. Accuracies come with 95% percentile-bootstrap intervals over questions, per category too.

Sampled candidates are cached in ``out/candidates.jsonl`` (rewritten atomically after every batch, so a
stopped run resumes and a finished one is never sampled again: other scorers cost no generation) with
``candidates.meta.json`` beside it recording the policy, its prompt format (prefill) and sampling settings;
a rerun whose sampling settings differ is refused instead of mixing samples.
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
from toolrm_rl.core.example import ToolExample
from toolrm_rl.core.io import atomic_write, write_json, write_jsonl
from toolrm_rl.core.match import GroundTruth, canonical_calls, normalize_answer
from toolrm_rl.core.parse import parse, strip_thinking
from toolrm_rl.core.render import RMExample
from toolrm_rl.core.schema import check_calls
from toolrm_rl.core.subset import seeded_subset
from toolrm_rl.data.bfcl import concrete_calls, load_bfcl
from toolrm_rl.data.records import iter_jsonl, iter_rows
from toolrm_rl.scoring import Scorer, build_scorers

log = logging.getLogger(__name__)

__all__ = ["STRATEGIES", "BestOfNConfig", "BestOfNResult", "questions_from_bfcl", "questions_from_file",
           "load_candidates", "candidates_meta", "sample_candidates", "n_values", "best_of_n", "markdown", "run_best_of_n"]

STRATEGIES = ("greedy", "reward", "oracle", "majority", "first_valid", "random")


@dataclass
class BestOfNConfig:
    data: str = _f("bfcl", "'bfcl' (bfcl-eval's single-turn questions) or a JSONL/JSON file of examples with possible answers.")
    categories: list = _f(["simple_python", "multiple", "parallel", "parallel_multiple"], "BFCL categories (data=bfcl).")
    limit: int | None = _f(None, "Use a seeded sample of this many questions (None: all); with a candidates "
                                 "file, sampled from the questions that have candidates.")
    per_category: int | None = _f(None, "Use a seeded sample of this many questions of each category instead "
                                        "(None: limit decides); with a candidates file, among those with candidates.")
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
    scorers: list = _f([], "Several scorers over the same candidates, each its own column: names (rules, rm, hybrid) "
                           "or {name, label?, model?, options?}; rm and hybrid share one model. Empty: `scorer` "
                           "alone, as the `reward` column.")
    model: str | None = _f(None, "Checkpoint for rm/hybrid scorers.")
    scorer_options: dict = _f({}, "Options by scorer name (toolrm_rl.scoring.factory), e.g. {rm: {quantize: int8}}.")
    out: str = _f("runs/eval/best_of_n", "Output directory: candidates.jsonl, report.json, report.md, best_of_n.png.")
    seed: int = _f(0, "Seed for question sampling and generation.")
    bootstrap: int = _f(1000, "Bootstrap resamplings of the questions for the 95% intervals.")



def _sample_per_category(items: list, per_category: int | None, seed: int) -> list:
    """A seeded sample of ``per_category`` questions of each category, in the input order (None: all)."""
    if per_category is None:
        return items
    keep = set()
    for category in dict.fromkeys(q.category for q in items):
        # seeded per category: the same seed alone would pick the same positions in equal-sized categories
        keep.update(q.id for q in seeded_subset([q for q in items if q.category == category], per_category,
                                                f"{seed}:{category}"))
    return [q for q in items if q.id in keep]


def questions_from_bfcl(categories: Iterable[str], *, limit: int | None = None, seed: int = 0,
                        data_dir: str | Path | None = None, per_category: int | None = None) -> list[ToolExample]:
    """BFCL single-turn questions (evaluation data) of ``categories``, optionally a seeded sample
    (``per_category`` of each category, else ``limit`` in all)."""
    questions = load_bfcl(list(categories), data_dir)
    if per_category is not None:
        return _sample_per_category(questions, per_category, seed)
    return seeded_subset(questions, limit, seed)


def questions_from_file(path: str | Path, *, limit: int | None = None, seed: int = 0) -> list[ToolExample]:
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
            if not conversation or not answer:
                raise ValueError("needs a conversation/question and a non-empty possible_answer/ground_truth")
            category = str(row.get("category", "parallel"))
            gold = concrete_calls(answer, catalog, language_of_category(category))
        except (ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"{where}: {err}") from None
        out.append(ToolExample(str(row.get("id", f"{Path(label).name}#{index}")), Path(label).name, conversation,
                               catalog, gold, answer, category))
    return seeded_subset(out, limit, seed)


def load_candidates(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{id: {"candidates": [text, ...], "greedy": text or None, "seconds": float?}}`` from a candidates
    JSONL file (``seconds``: the generation time a sampled row cost, when recorded)."""
    out: dict[str, dict[str, Any]] = {}
    for line_no, row in iter_jsonl(path):
        if "id" not in row or not isinstance(row.get("candidates"), list):
            raise ValueError(f"{path}: line {line_no}: expected {{\"id\": ..., \"candidates\": [text, ...]}}")
        out[str(row["id"])] = {"candidates": row["candidates"], "greedy": row.get("greedy")}
        if isinstance(row.get("seconds"), (int, float)):
            out[str(row["id"])]["seconds"] = float(row["seconds"])
    return out


def _meta_path(candidates_path: str | Path) -> Path:
    path = Path(candidates_path)
    return path.with_name(path.stem + ".meta.json")


def candidates_meta(candidates_path: str | Path) -> dict[str, Any] | None:
    """The sampling record beside a candidates file (``candidates.meta.json``), or None when there is none."""
    path = _meta_path(candidates_path)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _write_candidates(path: Path, done: dict[str, dict[str, Any]]) -> None:
    write_jsonl(path, ({"id": qid, **row} for qid, row in done.items()))


def sample_candidates(generator: Any, questions: Sequence[ToolExample], *, n: int, temperature: float = 0.7,
                      max_tokens: int = 512, seed: int = 0, greedy_sample: bool = True, batch_size: int = 32,
                      save_to: str | Path | None = None, meta: dict[str, Any] | None = None,
                      progress: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Sample ``n`` candidates per question from a generator (``generate(requests, *, n, temperature,
    max_tokens, seed) -> list[list[str]]``), plus one temperature-0 output when ``greedy_sample``.

    With ``save_to``, the candidates file is rewritten atomically after each batch (with each row's
    generation ``seconds``), and questions already in it with ``n`` candidates are not sampled again (a
    stopped run resumes; a finished one generates nothing). ``meta`` (the sampling settings, see
    :func:`run_best_of_n`) is written beside it as ``<name>.meta.json``; a file sampled with other
    settings is a ``ValueError`` naming them (``n`` may grow: questions with fewer are sampled again).
    """
    import time

    from tqdm import tqdm

    from toolrm_rl.data.generate import GenerationRequest

    done = load_candidates(save_to) if save_to and Path(save_to).exists() else {}
    if save_to and meta is not None:
        old = candidates_meta(save_to)
        if done and old is not None:
            changed = sorted(k for k in set(old) | set(meta) if k != "n" and old.get(k) != meta.get(k))
            if changed:
                what = ", ".join(f"{k}: {old.get(k)!r} -> {meta.get(k)!r}" for k in changed)
                raise ValueError(f"{save_to} was sampled with other settings ({what}): use another `out`, "
                                 "or delete it to sample again")
        write_json(_meta_path(save_to), {**meta, "n": max(n, (old or {}).get("n", 0))})
    todo = [q for q in questions if q.id not in done or len(done[q.id]["candidates"]) < n]
    if progress and todo:
        progress(f"sampling {len(todo)} questions x {n} (+ greedy: {greedy_sample}); "
                 f"{len(questions) - len(todo)} read from {save_to}")
    for start in tqdm(range(0, len(todo), batch_size), desc="sampling", disable=not todo):
        batch = todo[start:start + batch_size]
        requests = [GenerationRequest(messages=q.conversation, tools=q.tools.to_openai(), id=q.id) for q in batch]
        began = time.perf_counter()
        samples = generator.generate(requests, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed)
        greedy = (generator.generate(requests, n=1, temperature=0.0, max_tokens=max_tokens, seed=seed)
                  if greedy_sample else [[None]] * len(batch))
        seconds = (time.perf_counter() - began) / len(batch)
        if len(samples) != len(batch) or len(greedy) != len(batch):
            raise RuntimeError(f"generator returned {len(samples)} outputs for {len(batch)} requests")
        for q, sampled, g in zip(batch, samples, greedy):
            done[q.id] = {"candidates": list(sampled), "greedy": g[0] if g else None, "seconds": round(seconds, 3)}
        if save_to:
            _write_candidates(Path(save_to), done)
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

    ``accuracy[strategy]`` has one value per N in ``ns``; the reward-selected strategy is ``reward``
    for one scorer, or one column per scorer label with ``scorers``. ``intervals[strategy]`` holds
    the 95% percentile-bootstrap ``[low, high]`` per N (questions resampled), ``by_category[category]
    [strategy]`` the accuracy per N of that category's questions. ``selections[question_id][strategy]
    [str(N)]`` is the index of the picked candidate (``-1``: the separate greedy output; absent for
    ``oracle`` and ``random``, which pick nothing). ``pick_differences[scorer]`` compares a scorer's
    picks with ``first_valid``'s at the largest N: questions where they differ, where only the scorer's
    pick is right, and where only first_valid's is. ``coverage`` (set by :func:`run_best_of_n`) counts
    the questions loaded, those with and without candidates, candidate ids matching no question, and the
    N asked for; ``sampling`` (idem) what the candidates cost and how they were sampled.
    """

    scorer: str
    ns: list[int]
    n_questions: int
    accuracy: dict[str, list[float]]
    selections: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    candidate_stats: dict[str, float] = field(default_factory=dict)
    coverage: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, list[list[float]]] = field(default_factory=dict)
    by_category: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    category_counts: dict[str, int] = field(default_factory=dict)
    pick_differences: dict[str, dict[str, int]] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)

    @property
    def strategies(self) -> list[str]:
        """The strategy columns, in table order."""
        return list(self.accuracy)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def _argmax(values: Sequence[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def _bootstrap_interval(values: Sequence[float], samples: int, seed: int) -> list[float]:
    """95% percentile-bootstrap interval of the mean of per-question values (0/1, or the expected
    accuracy of ``random``, which is why :func:`toolrm_rl.eval.fc_rewardbench.bootstrap_ci` does not fit)."""
    n = len(values)
    if n == 0 or samples < 1:
        return [float("nan"), float("nan")]
    rng = random.Random(seed)
    stats = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    return [stats[int(0.025 * samples)], stats[min(samples - 1, int(0.975 * samples))]]


def best_of_n(questions: Sequence[ToolExample], candidates: dict[str, dict[str, Any]],
              scorer: Scorer | dict[str, Scorer], *, max_n: int | None = None, bootstrap: int = 1000,
              seed: int = 0) -> BestOfNResult:
    """Evaluate every strategy of the module doc over N = 1, 2, 4, ... (see :func:`n_values`).

    ``scorer``: one scorer (the ``reward`` column) or ``{label: scorer}`` (one column each). Every
    question needs at least ``max_n`` candidates (default: the smallest count over questions).
    ``bootstrap`` resamplings (seeded with ``seed``) give the 95% intervals.
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
    scorers = dict(scorer) if isinstance(scorer, dict) else {"reward": scorer}
    taken = [label for label in scorers if label != "reward" and label in STRATEGIES]
    if taken:
        raise ValueError(f"scorer labels {taken} are strategy names")

    # Parse and judge every candidate once; score the parsed ones in one batch per scorer.
    judged: list[dict[str, Any]] = []
    to_score: list[RMExample] = []
    where: list[tuple[int, int]] = []
    parsed_ok = correct_total = 0
    for qi, q in enumerate(questions):
        truth = GroundTruth(q.tools, q.answer, q.category, q.language)
        texts = list(candidates[q.id]["candidates"][:max_n])
        greedy_text = candidates[q.id].get("greedy")
        info = {"parsed": [], "correct": [], "canon": [], "valid": [], "greedy_correct": None}
        for ci, text in enumerate(texts):
            result = parse(text)
            ok = result.ok
            info["parsed"].append(ok)
            info["correct"].append(ok and truth.check(result.calls).valid)
            info["canon"].append(canonical_calls(result.calls) if ok else None)
            info["valid"].append(ok and bool(result.calls) and check_calls(result.calls, q.tools, language=q.language).ok)
            parsed_ok += ok
            correct_total += info["correct"][-1]
            if ok:
                answer_text = None if result.calls else strip_thinking(text if isinstance(text, str) else "").strip()
                to_score.append(RMExample(q.tools, q.conversation, result.calls, answer_text or None))
                where.append((qi, ci))
        if greedy_text is not None:
            g = parse(greedy_text)
            info["greedy_correct"] = g.ok and truth.check(g.calls).valid
        info["scores"] = {label: [-math.inf] * len(texts) for label in scorers}
        judged.append(info)
    for label, sc in scorers.items():
        for (qi, ci), value in zip(where, sc.score(to_score) if to_score else []):
            judged[qi]["scores"][label][ci] = float(value)

    base = ["greedy", *scorers, "oracle", "majority", "first_valid", "random"]
    picking = ["greedy", *scorers, "majority", "first_valid"]
    # outcome[strategy][n index][question index]: 1/0 (the expected share for random)
    outcome: dict[str, list[list[float]]] = {s: [] for s in base}
    selections: dict[str, dict[str, dict[str, int]]] = {q.id: {s: {} for s in picking} for q in questions}
    for n in ns:
        per: dict[str, list[float]] = {s: [] for s in base}
        for q, info in zip(questions, judged):
            correct = info["correct"][:n]
            picks = {}
            if info["greedy_correct"] is not None:
                picks["greedy"] = -1
            else:
                picks["greedy"] = 0
            for label in scorers:
                picks[label] = _argmax(info["scores"][label][:n])
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
                per[strategy].append(float(info["greedy_correct"] if idx < 0 else correct[idx]))
            per["oracle"].append(float(any(correct)))
            per["random"].append(sum(correct) / n)
        for strategy in base:
            outcome[strategy].append(per[strategy])

    total = len(questions)
    accuracy = {s: [sum(v) / total for v in outcome[s]] for s in base}
    intervals = {s: [_bootstrap_interval(v, bootstrap, seed) for v in outcome[s]] for s in base}
    categories = list(dict.fromkeys(q.category for q in questions))
    rows_of = {c: [i for i, q in enumerate(questions) if q.category == c] for c in categories}
    by_category = {c: {s: [sum(v[i] for i in rows) / len(rows) for v in outcome[s]] for s in base}
                   for c, rows in rows_of.items()}
    last = str(ns[-1])
    differences = {}
    for label in scorers:
        diff = [(qi, selections[q.id][label][last], selections[q.id]["first_valid"][last])
                for qi, q in enumerate(questions) if selections[q.id][label][last] != selections[q.id]["first_valid"][last]]
        right = [(judged[qi]["correct"][a], judged[qi]["correct"][b]) for qi, a, b in diff]
        differences[label] = {"differ": len(diff), "only_scorer_right": sum(a and not b for a, b in right),
                              "only_first_valid_right": sum(b and not a for a, b in right)}
    n_cands = total * max_n
    name = ", ".join(getattr(sc, "name", type(sc).__name__) if label == "reward" else label
                     for label, sc in scorers.items())
    return BestOfNResult(scorer=name, ns=ns, n_questions=total, accuracy=accuracy, selections=selections,
                         candidate_stats={"candidates": n_cands, "parsed": parsed_ok / n_cands,
                                          "correct": correct_total / n_cands},
                         intervals=intervals, by_category=by_category,
                         category_counts={c: len(rows) for c, rows in rows_of.items()},
                         pick_differences=differences)


def markdown(result: BestOfNResult) -> str:
    """Markdown tables: accuracy per N and strategy, the same with 95% intervals, pass@N and each
    strategy at the largest N per category, and where the scorers' picks differ from first_valid's."""
    from toolrm_rl.eval.plots import md_table

    strategies = result.strategies
    rows = [[n] + [result.accuracy[s][i] for s in strategies] for i, n in enumerate(result.ns)]
    head = (f"Best-of-N on {result.n_questions} questions, reward = `{result.scorer}` "
            f"(candidates parsed: {result.candidate_stats.get('parsed', float('nan')):.3f}, "
            f"correct: {result.candidate_stats.get('correct', float('nan')):.3f})\n\n")
    cov = result.coverage
    if cov.get("without_candidates"):
        head += (f"**{cov['without_candidates']} of {cov['questions']} questions had no candidates and are not "
                 f"counted.**\n\n")
    text = head + md_table(["N"] + strategies, rows)
    if result.intervals:
        cells = [[n] + [f"{result.accuracy[s][i]:.3f} [{result.intervals[s][i][0]:.2f}, {result.intervals[s][i][1]:.2f}]"
                        for s in strategies] for i, n in enumerate(result.ns)]
        text += "\n\nWith 95% bootstrap intervals (questions resampled):\n\n" + md_table(["N"] + strategies, cells)
    if result.by_category:
        cats = list(result.by_category)
        text += "\n\noracle (pass@N) per category:\n\n" + md_table(
            ["N"] + [f"{c} ({result.category_counts.get(c, '?')})" for c in cats],
            [[n] + [result.by_category[c]["oracle"][i] for c in cats] for i, n in enumerate(result.ns)])
        text += f"\n\nEvery strategy at N={result.ns[-1]} per category:\n\n" + md_table(
            ["category", "questions"] + strategies,
            [[c, result.category_counts.get(c, 0)] + [result.by_category[c][s][-1] for s in strategies] for c in cats])
    if result.pick_differences:
        text += (f"\n\nPicks that differ from first_valid's at N={result.ns[-1]} (questions):\n\n"
                 + md_table(["scorer", "differ", "only the scorer's pick right", "only first_valid's right"],
                            [[k, v["differ"], v["only_scorer_right"], v["only_first_valid_right"]]
                             for k, v in result.pick_differences.items()]))
    if result.sampling.get("samples"):
        smp = result.sampling
        text += (f"\n\nCandidates: {smp['samples']} generated outputs in {smp['seconds']:.0f} s "
                 f"({smp['seconds_per_output']:.2f} s each)" + (f", policy {smp['generator']}" if smp.get("generator") else "")
                 + (f", prefill {smp['prompt']['prefill']!r}" if (smp.get("prompt") or {}).get("prefill") else "") + ".")
    return text + "\n"


def run_best_of_n(cfg: BestOfNConfig, *, generator: Any = None, scorer: Scorer | dict[str, Scorer] | None = None,
                  progress: Callable[[str], None] = log.info) -> BestOfNResult:
    """The whole recipe: questions, candidates (file, or sampled and cached in ``out/candidates.jsonl``),
    evaluation, then ``report.json``, ``report.md`` and ``best_of_n.png`` in ``cfg.out``. ``scorer``
    replaces the configured one(s) (one scorer, or ``{label: scorer}``)."""
    from toolrm_rl.eval.plots import line_chart

    def warn(message: str) -> None:
        log.warning(message)
        if progress is not log.info:
            progress(f"WARNING: {message}")

    out = Path(cfg.out)
    # With a candidates file, the limit samples among the questions that have candidates (sampling
    # first would drop most of a file that covers only part of the data, silently).
    limit = None if cfg.candidates else cfg.limit
    per_category = None if cfg.candidates else cfg.per_category
    questions = (questions_from_bfcl(cfg.categories, limit=limit, seed=cfg.seed, per_category=per_category)
                 if cfg.data == "bfcl" else questions_from_file(cfg.data, limit=limit, seed=cfg.seed))
    if cfg.data != "bfcl" and per_category is not None:
        questions = _sample_per_category(questions, per_category, cfg.seed)
    progress(f"{len(questions)} questions from {cfg.data}")
    coverage: dict[str, Any] = {"questions": len(questions), "n_requested": cfg.n}
    max_n = cfg.n
    meta: dict[str, Any] | None = None
    if cfg.candidates:
        candidates = load_candidates(cfg.candidates)
        meta = candidates_meta(cfg.candidates)
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
        questions = (_sample_per_category(with_candidates, cfg.per_category, cfg.seed) if cfg.per_category is not None
                     else seeded_subset(with_candidates, cfg.limit, cfg.seed))
        progress(f"{len(questions)} questions with candidates"
                 + (f" (a seeded sample, limit={cfg.limit}, per_category={cfg.per_category})"
                    if len(questions) < len(with_candidates) else ""))
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
        prompt = getattr(generator, "prompt", None)
        meta = {"policy": cfg.policy, "model": (cfg.policy_options or {}).get("model"),
                "generator": getattr(generator, "name", type(generator).__name__),
                "prompt": prompt.describe() if hasattr(prompt, "describe") else None,
                "temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "seed": cfg.seed,
                "greedy_sample": cfg.greedy_sample}
        candidates = sample_candidates(generator, questions, n=cfg.n, temperature=cfg.temperature,
                                       max_tokens=cfg.max_tokens, seed=cfg.seed, greedy_sample=cfg.greedy_sample,
                                       batch_size=cfg.batch_size, save_to=out / "candidates.jsonl", meta=meta,
                                       progress=progress)
    if scorer is None:
        scorer = (build_scorers(cfg.scorers, cfg.model, cfg.scorer_options) if cfg.scorers
                  else build_scorers([cfg.scorer], cfg.model, cfg.scorer_options)[cfg.scorer])
    result = best_of_n(questions, candidates, scorer, max_n=max_n, bootstrap=cfg.bootstrap, seed=cfg.seed)
    result.coverage = coverage
    timed = [candidates[q.id]["seconds"] for q in questions if "seconds" in candidates[q.id]]
    outputs_per_question = (meta or {}).get("n", max_n) + bool((meta or {}).get("greedy_sample"))
    if timed:
        result.sampling = {"questions_timed": len(timed), "seconds": round(sum(timed), 1),
                           "samples": len(timed) * outputs_per_question,
                           "seconds_per_output": sum(timed) / (len(timed) * outputs_per_question)}
    result.sampling.update({k: v for k, v in (meta or {}).items() if k in ("generator", "prompt", "temperature", "n")})
    write_json(out / "report.json", result.to_dict())
    atomic_write(out / "report.md", markdown(result))
    line_chart(result.ns, result.accuracy, out / "best_of_n.png", title=f"Best-of-N ({result.n_questions} questions, "
               f"reward: {result.scorer})", xlabel="N (candidates per question)", logx=True, ylim=(0.0, 1.0))
    return result
