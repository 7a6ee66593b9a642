"""Reward-guided data filtering: score a tool-calling SFT dataset, keep its best rows.

    toolrm filter --data sft.jsonl --scorer rm --model runs/toolrm-minilm/final --keep-top 0.5 --out kept.jsonl

The scored candidate of each row is the dataset's own assistant answer, in its context:

- OpenAI chat rows ``{"messages": [...], "tools": [...]}``: the last assistant message (its
  ``tool_calls``, or calls written in its content; none: an abstention scored with its text), with the
  messages before it as the conversation.
- xlam / APIGen rows ``{"query", "tools", "answers"}`` (JSON strings or values): the ``answers`` calls
  for the single user query; xlam parameter dicts become JSON-schema parameters
  (:func:`toolrm_rl.data.sources.xlam_tool_to_spec`).

The sources' example adapters are not used for rows: filtering needs exactly one candidate per row,
and a call to a function missing from ``tools`` must be scored (low), not refused.

Rows are kept when among the top ``keep_top`` fraction (ties at the cut: the earlier row) or when
``score >= threshold``. The filtered dataset keeps the input's rows unchanged, in input order and in
the input's format (JSON lines, or a JSON list), written atomically. Next to it (``report_dir``):
``scores.jsonl`` (one line per input row: index, id, score, kept), ``score_hist.png`` (the cut marked)
and ``report.json``. Scores are saved in chunks to ``scores.partial.jsonl`` as they come, so a stopped
run resumes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from toolrm_rl.config import option as _f
from toolrm_rl.core.calls import (
    CatalogError,
    ToolCatalog,
    calls_from_bfcl,
    load_json_field,
)
from toolrm_rl.core.io import atomic_write, write_json, write_jsonl
from toolrm_rl.core.parse import parse_openai_message, strip_thinking
from toolrm_rl.core.render import RMExample
from toolrm_rl.data.sources import xlam_tool_to_spec
from toolrm_rl.scoring import Scorer

__all__ = ["FilterConfig", "FilterResult", "read_sft_rows", "row_example", "select_rows", "filter_dataset"]


@dataclass
class FilterConfig:
    data: str | None = _f(None, "Input SFT dataset: JSON lines or a JSON list of OpenAI chat rows or xlam rows.")
    out: str | None = _f(None, "Filtered dataset path (same format as the input).")
    scorer: str = _f("rules", "Scorer: rules, rm, hybrid, ...")
    model: str | None = _f(None, "Checkpoint for rm/hybrid scorers.")
    scorer_options: dict = _f({}, "Options by scorer name (toolrm_rl.scoring.factory), e.g. {rm: {device: cuda}}.")
    keep_top: float | None = _f(None, "Keep this top fraction of rows by score (0 < f <= 1); exclusive with threshold.")
    threshold: float | None = _f(None, "Keep rows with score >= threshold; exclusive with keep_top.")
    report_dir: str | None = _f(None, "Where scores.jsonl, score_hist.png and report.json go (default: <out without "
                                      "its last suffix>_filter/).")
    chunk_size: int = _f(512, "Rows scored per chunk (each chunk is saved, so a stopped run resumes).")


@dataclass
class FilterResult:
    """What :func:`filter_dataset` kept."""

    n: int
    kept: int
    cut: float | None
    scores: list[float]
    keep: list[bool]
    out: str = ""
    report_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no per-row data)."""
        finite = [s for s in self.scores if math.isfinite(s)]
        return {"n": self.n, "kept": self.kept, "cut": self.cut, "out": self.out,
                "mean_score_all": sum(finite) / len(finite) if finite else None,
                "mean_score_kept": (sum(s for s, k in zip(self.scores, self.keep) if k) / self.kept) if self.kept else None}


# -- reading ------------------------------------------------------------------------------------------

def read_sft_rows(path: str | Path) -> tuple[list[dict[str, Any]], str]:
    """The rows of a JSON-lines file or a JSON list, and the container format (``"jsonl"`` or ``"json"``)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        kind = "json"
    else:
        rows, kind = [], "jsonl"
        for line_no, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {line_no}: not valid JSON ({err.msg})") from None
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {i}: expected an object, got {type(row).__name__}")
    return rows, kind


def row_example(row: dict[str, Any], where: str = "row") -> RMExample:
    """The reward-model input of one SFT row (see the module doc). Raises ``ValueError`` naming ``where``
    and the field."""
    try:
        if "messages" in row:
            messages = load_json_field(row["messages"], "messages")
            if not isinstance(messages, list) or not messages:
                raise ValueError("field 'messages': expected a non-empty list of messages")
            last = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
                       default=None)
            if last is None:
                raise ValueError("field 'messages': no assistant message to score")
            result = parse_openai_message(messages[last])
            content = messages[last].get("content")
            text = strip_thinking(content).strip() if isinstance(content, str) else None
            calls = result.calls if result.ok else []
            return RMExample(ToolCatalog.load(row.get("tools")), messages[:last], calls, None if calls else (text or None))
        if "query" in row and "answers" in row:
            tools = load_json_field(row.get("tools"), "tools") or []
            if not isinstance(tools, list):
                raise ValueError("field 'tools': expected a list")
            catalog = ToolCatalog.load([xlam_tool_to_spec(t) for t in tools])
            return RMExample(catalog, [{"role": "user", "content": str(row["query"])}], calls_from_bfcl(row["answers"]))
    except (CatalogError, TypeError, AttributeError) as err:
        raise ValueError(f"{where}: {err}") from None
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    raise ValueError(f"{where}: neither an OpenAI chat row (messages) nor an xlam row (query, tools, answers); "
                     f"keys: {sorted(row)[:10]}")


# -- selection ----------------------------------------------------------------------------------------

def select_rows(scores: Sequence[float], *, keep_top: float | None = None,
                threshold: float | None = None) -> tuple[list[bool], float | None]:
    """Which rows to keep, and the cut score (the lowest kept score under ``keep_top``, else the threshold).

    >>> select_rows([0.1, 0.9, 0.5, 0.5], keep_top=0.5)
    ([False, True, True, False], 0.5)
    >>> select_rows([0.1, 0.9, 0.5], threshold=0.5)
    ([False, True, True], 0.5)
    """
    if (keep_top is None) == (threshold is None):
        raise ValueError("give exactly one of keep_top and threshold")
    if threshold is not None:
        return [s >= threshold for s in scores], threshold
    if not 0 < keep_top <= 1:
        raise ValueError(f"keep_top must be in (0, 1], got {keep_top}")
    k = math.ceil(keep_top * len(scores) - 1e-9)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))  # stable: earlier rows win ties
    keep = [False] * len(scores)
    for i in order[:k]:
        keep[i] = True
    return keep, (scores[order[k - 1]] if k else None)


def _score_resumable(scorer: Scorer, examples: list[RMExample], partial: Path, key: dict[str, Any],
                     chunk_size: int) -> list[float]:
    from tqdm import tqdm

    scores: dict[int, float] = {}
    if partial.exists():
        lines = partial.read_text(encoding="utf-8").splitlines()
        if lines and json.loads(lines[0]) == key:
            for line in lines[1:]:
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut by the stop: rescore from there
                scores[item["index"]] = item["score"]
        else:
            partial.unlink()
    if not partial.exists():
        atomic_write(partial, json.dumps(key) + "\n")  # whole: a cut first line would stop every resume
    todo = [i for i in range(len(examples)) if i not in scores]
    with partial.open("a", encoding="utf-8") as fh, tqdm(total=len(todo), desc="scoring", disable=not todo) as bar:
        for start in range(0, len(todo), chunk_size):
            idx = todo[start:start + chunk_size]
            for i, s in zip(idx, scorer.score([examples[i] for i in idx])):
                scores[i] = float(s)
                fh.write(json.dumps({"index": i, "score": float(s)}) + "\n")
            fh.flush()
            bar.update(len(idx))
    return [scores[i] for i in range(len(examples))]


def filter_dataset(data: str | Path, out: str | Path, scorer: Scorer, *, keep_top: float | None = None,
                   threshold: float | None = None, report_dir: str | Path | None = None,
                   chunk_size: int = 512) -> FilterResult:
    """Score every row of ``data``, keep the best (``keep_top`` or ``threshold``), write ``out`` in the
    input's format and ``scores.jsonl``, ``score_hist.png``, ``report.json`` in ``report_dir``."""
    from toolrm_rl.eval.plots import histogram

    if (keep_top is None) == (threshold is None):
        raise ValueError("give exactly one of keep_top and threshold")
    data, out = Path(data), Path(out)
    report = Path(report_dir) if report_dir else out.with_name((out.name[:-len(out.suffix)] if out.suffix else out.name)
                                                                + "_filter")
    rows, kind = read_sft_rows(data)
    examples = [row_example(row, f"{data}: row {i}" + (f" (line {i + 1})" if kind == "jsonl" else "")) for i, row in enumerate(rows)]
    stat = data.stat()
    key = {"data": str(data.resolve()), "size": stat.st_size, "mtime": stat.st_mtime, "scorer": getattr(scorer, "name", "?")}
    scores = _score_resumable(scorer, examples, report / "scores.partial.jsonl", key, chunk_size)
    keep, cut = select_rows(scores, keep_top=keep_top, threshold=threshold)
    kept_rows = [row for row, k in zip(rows, keep) if k]
    if kind == "jsonl":
        write_jsonl(out, kept_rows)
    else:
        write_json(out, kept_rows, ensure_ascii=False)
    write_jsonl(report / "scores.jsonl", ({"index": i, "id": row.get("id", row.get("uuid", i)), "score": s, "kept": k}
                                          for i, (row, s, k) in enumerate(zip(rows, scores, keep))))
    result = FilterResult(n=len(rows), kept=sum(keep), cut=cut, scores=scores, keep=keep, out=str(out), report_dir=str(report))
    label = f"keep top {keep_top:g}" if keep_top is not None else f"threshold {threshold:g}"
    histogram(scores, report / "score_hist.png", title=f"{data.name}: {getattr(scorer, 'name', '?')} scores "
              f"({result.kept}/{result.n} kept)", threshold=cut, threshold_label=f"cut ({label})")
    write_json(report / "report.json", {**result.to_dict(), "data": str(data), "keep_top": keep_top,
                                        "threshold": threshold})
    (report / "scores.partial.jsonl").unlink(missing_ok=True)
    return result
