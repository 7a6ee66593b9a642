"""Shared fixtures: BFCL data from the installed bfcl-eval wheel, the shared evaluation folder, bench/ scripts."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# The test command is deterministic: property tests draw the same examples every run, so CI cannot
# fail on a lucky draw. HYPOTHESIS_PROFILE=explore draws fresh examples (and more of them) when hunting.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="session")
def load_bench():
    """Import a ``bench/`` script by name (``bench/`` is not a package): ``load_bench("bench_scoring")``. The
    module stays in ``sys.modules`` under its name for the session (dataclasses look their module up there)."""
    loaded: list[str] = []

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loaded.append(name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures(...)``): on a
    shared 2-core machine small forwards gain nothing from threads and waiting OpenMP threads cost more."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def bfcl_records():
    """All BFCL single-turn records with possible answers (skips when bfcl-eval is missing)."""
    if importlib.util.find_spec("bfcl_eval") is None:
        pytest.skip("bfcl-eval is not installed (scripts/setup.sh installs it)")
    from toolrm_rl.data.bfcl import load_bfcl

    return load_bfcl()


@pytest.fixture(scope="session")
def bfcl_oracle(bfcl_records):
    """bfcl-eval's own ast_checker."""
    from toolrm_rl.data.bfcl import load_bfcl_checker

    return load_bfcl_checker()


@pytest.fixture(scope="session")
def shared_failures_path():
    """../shared/data/bfcl_failures_dev.jsonl, or a skip when the folder is absent."""
    path = SHARED_DATA / "bfcl_failures_dev.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is absent (the product must not need ../shared)")
    return path
