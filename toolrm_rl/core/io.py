"""Atomic file writes: the one writer every output of the package goes through.

A write goes to a temporary file beside the target, ``.<name>.<pid>.<hex8>.tmp``, is flushed to disk and
then ``os.replace``-d onto the target: a reader sees the old file or the whole new one, never half of it,
and a failure (an exception, ``KeyboardInterrupt``) leaves the old file untouched and no temporary file
behind. A killed process cannot clean up; its temporary name carries its process id, so
:func:`remove_stale_tmp` removes what a dead writer left and nothing of a live one.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> write_jsonl(folder / "rows.jsonl", [{"a": 1}, {"b": "é"}]).read_text(encoding="utf-8")
'{"a": 1}\\n{"b": "é"}\\n'
>>> write_json(folder / "r.json", {"n": 2}).read_text()
'{\\n "n": 2\\n}\\n'
>>> sorted(p.name for p in folder.iterdir())
['r.json', 'rows.jsonl']
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["atomic_write", "cache_root", "write_json", "write_jsonl", "remove_stale_tmp"]

# ".<name>.<pid>.<hex8>.tmp"; also the older ".<name>.<pid>.tmp[.png]" that earlier writers left.
_TMP_NAME = re.compile(r"^\..+\.(\d+)(?:\.[0-9a-f]{8})?\.tmp(?:\.png)?$")


def cache_root(name: str) -> Path:
    """Where the package caches what it builds once per machine (dequantised weights, converted models):
    ``$TOOLRM_CACHE/<name>`` when ``TOOLRM_CACHE`` is set, else ``$XDG_CACHE_HOME/toolrm_rl/<name>``
    (``~/.cache/toolrm_rl/<name>``)."""
    root = os.environ.get("TOOLRM_CACHE")
    if root:
        return Path(root).expanduser() / name
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "toolrm_rl" / name


def atomic_write(path: str | Path, content: str | bytes | Callable[[Path], Any]) -> Path:
    """Replace ``path`` atomically with ``content``; returns ``path`` (its parent folders are created).

    :param content: text (written as UTF-8), bytes, or a function ``write(tmp)`` that creates the file
        ``tmp`` itself (a parquet writer, ``figure.savefig(tmp, format="png")``, a streaming loop).
        The temporary name ends in ``.tmp``: a writer that picks the format by suffix must be told it.
    :raises: whatever writing raises, after removing the temporary file; the old ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if callable(content):
            content(tmp)
            if not tmp.is_file():
                raise FileNotFoundError(f"{path}: the writer created no file at {tmp}")
        else:
            # "x": a plain new file (mode 0666 less the umask, as open() gives), never someone else's
            with open(tmp, "xb") as fh:
                fh.write(content.encode("utf-8") if isinstance(content, str) else content)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any, *, indent: int | None = 1, **dumps: Any) -> Path:
    """``obj`` as JSON (``json.dumps(obj, indent=indent, **dumps)``) and a final newline, atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent, **dumps) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Any], *, ensure_ascii: bool = False, **dumps: Any) -> Path:
    """One JSON object per line, atomically; ``rows`` are streamed (a generator is consumed once)."""
    def write(tmp: Path) -> None:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row, ensure_ascii=ensure_ascii, **dumps) + "\n" for row in rows)

    return atomic_write(path, write)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has nothing half-written yet when it starts
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def remove_stale_tmp(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder`` (their process is gone); returns
    what was removed. Files of a live writer are left alone; call it before this process writes there."""
    folder = Path(folder)
    removed = []
    for path in folder.iterdir() if folder.is_dir() else ():
        match = _TMP_NAME.match(path.name)
        if match and path.is_file() and not _pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.warning("%s: removed %d temporary file(s) left by an interrupted run (%s)", folder, len(removed),
                    ", ".join(p.name for p in removed[:3]) + (", ..." if len(removed) > 3 else ""))
    return removed
