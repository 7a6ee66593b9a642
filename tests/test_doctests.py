"""Every docstring example in the package runs and holds (modules found by scanning for ``>>>``)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "toolrm_rl"
MODULES = sorted(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
                 for p in PACKAGE.rglob("*.py") if ">>>" in p.read_text(encoding="utf-8"))


def test_modules_with_examples_are_found():
    assert {"toolrm_rl.config", "toolrm_rl.core.match", "toolrm_rl.scoring.rules"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, f"{name}: {result}"
