"""Shared report helpers for evaluation recipes: PNG charts (matplotlib, Agg) and markdown tables.

Charts are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas (never pyplot), so
they work headless, in threads and under pytest without touching global matplotlib state. They are
written with :func:`toolrm_rl.core.io.atomic_write`: a reader never sees half a file.

>>> md_table(["scorer", "accuracy"], [["rules", 0.5], ["rm", 0.75]])
'| scorer | accuracy |\\n|---|---:|\\n| rules | 0.500 |\\n| rm | 0.750 |\\n'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from toolrm_rl.core.io import atomic_write

__all__ = ["md_table", "bar_chart", "line_chart", "histogram"]


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, digits: int = 3) -> str:
    """A markdown table; floats with ``digits`` decimals, numeric columns right-aligned (the first
    column is always left-aligned)."""
    numeric = [i > 0 and all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows if i < len(r))
               for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(_cell(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _save(fig: Any, path: str | Path) -> Path:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return atomic_write(path, buf.getvalue())


def bar_chart(groups: Sequence[str], series: Mapping[str, Sequence[float]], path: str | Path, *,
              title: str = "", ylabel: str = "accuracy", reference: float | None = None,
              reference_label: str = "random", counts: Sequence[int] | None = None,
              ylim: tuple[float, float] | None = (0.0, 1.0)) -> Path:
    """Grouped bars: one group per entry of ``groups`` (x axis), one bar per series (e.g. scorers side
    by side); ``series[name][i]`` is the value for ``groups[i]`` (NaN: no bar). ``reference`` draws a
    dashed horizontal line (e.g. 0.5 for random pairwise choice); ``counts`` adds ``n=`` under each
    group label. Returns the PNG path."""
    from matplotlib.figure import Figure

    names = list(series)
    for name in names:
        if len(series[name]) != len(groups):
            raise ValueError(f"bar_chart: series {name!r} has {len(series[name])} values for {len(groups)} groups")
    width = 0.8 / max(1, len(names))
    fig = Figure(figsize=(max(6.0, 0.5 + len(groups) * (0.35 + 0.25 * len(names))), 4.2))
    ax = fig.add_subplot()
    for k, name in enumerate(names):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(groups))]
        ax.bar(xs, [float(v) for v in series[name]], width=width, label=name)
    labels = [f"{g}\nn={c}" for g, c in zip(groups, counts)] if counts is not None else list(groups)
    ax.set_xticks(range(len(groups)), labels, rotation=30 if len(groups) > 5 else 0, ha="right" if len(groups) > 5 else "center",
                  fontsize=8)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1, label=reference_label)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: bars reach 1.0
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def line_chart(x: Sequence[float], series: Mapping[str, Sequence[float]], path: str | Path, *, title: str = "",
               xlabel: str = "", ylabel: str = "accuracy", logx: bool = False, reference: float | None = None,
               reference_label: str = "random", ylim: tuple[float, float] | None = None) -> Path:
    """Curves over a shared x axis (e.g. Best-of-N over N, accuracy over noise level), one per series;
    ``logx`` uses a base-2 log axis (N = 1, 2, 4, ...). Returns the PNG path."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for name, ys in series.items():
        if len(ys) != len(x):
            raise ValueError(f"line_chart: series {name!r} has {len(ys)} values for {len(x)} x values")
        ax.plot(list(x), [float(v) for v in ys], marker="o", label=name)
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(x), [str(v) for v in x])
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1, label=reference_label)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def histogram(values: Sequence[float], path: str | Path, *, bins: int = 50, title: str = "", xlabel: str = "score",
              threshold: float | None = None, threshold_label: str = "threshold") -> Path:
    """A histogram of values (e.g. scores of a dataset), with an optional vertical threshold line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    finite = [float(v) for v in values if not math.isnan(float(v))]
    ax.hist(finite, bins=bins)
    if threshold is not None:
        ax.axvline(threshold, color="red", linestyle="--", linewidth=1, label=threshold_label)
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    return _save(fig, path)
