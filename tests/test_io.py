"""The one atomic writer (toolrm_rl.core.io): whole content after success, the old file after a failure,
no temporary file left either way; the stale-temporary sweep removes only what dead writers left."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from toolrm_rl.core.io import atomic_write, remove_stale_tmp, write_json, write_jsonl


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("content", ["héllo\nwörld\n", b"\x00\xffbytes", lambda tmp: tmp.write_bytes(b"by callback")])
def test_write_gives_the_whole_content_and_leaves_nothing_else(tmp_path, content):
    path = atomic_write(tmp_path / "a" / "b" / "out.bin", content)  # parent folders are created
    expected = (content.encode("utf-8") if isinstance(content, str) else content if isinstance(content, bytes)
                else b"by callback")
    assert path == tmp_path / "a" / "b" / "out.bin" and path.read_bytes() == expected
    assert os.listdir(path.parent) == ["out.bin"]
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # what a plain open() gives, readable by others


def test_json_and_jsonl_round_trip(tmp_path):
    rows = [{"id": "ü", "n": 1}, {"id": "b", "xs": [1, 2]}]
    lines = write_jsonl(tmp_path / "r.jsonl", iter(rows)).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows and "ü" in lines[0]  # readable UTF-8, not \\u escapes
    text = write_json(tmp_path / "r.json", rows, indent=2).read_text(encoding="utf-8")
    assert json.loads(text) == rows and text.endswith("]\n")
    assert write_jsonl(tmp_path / "empty.jsonl", []).read_bytes() == b""


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_a_write_that_fails_midway_leaves_the_old_file_untouched(tmp_path, error):
    path = atomic_write(tmp_path / "out.jsonl", "old\n")

    def rows():
        yield {"n": 1}
        yield {"n": 2}
        raise error("stop")  # after two lines reached the temporary file

    with pytest.raises(error):
        write_jsonl(path, rows())
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["out.jsonl"]


def test_a_writer_that_creates_no_file_is_an_error_naming_the_target(tmp_path):
    with pytest.raises(FileNotFoundError, match="out.png"):
        atomic_write(tmp_path / "out.png", lambda tmp: None)
    assert os.listdir(tmp_path) == []


def test_remove_stale_tmp_removes_only_what_dead_writers_left(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has exited
    left = [tmp_path / f".shard-00001.jsonl.{dead_pid}.0a1b2c3d.tmp", tmp_path / f".summary.png.{dead_pid}.tmp.png"]
    live = tmp_path / f".summary.json.{os.getppid()}.0a1b2c3d.tmp"  # a writer still running keeps its file
    keep = [live, tmp_path / "shard-00001.jsonl", tmp_path / ".hidden"]
    for p in left + keep:
        p.write_text("")
    assert sorted(remove_stale_tmp(tmp_path)) == sorted(left)
    assert sorted(tmp_path.iterdir()) == sorted(keep)
    assert remove_stale_tmp(tmp_path / "missing") == []
