"""``dspex bench``: benchmark suites, each figure measured beside a baseline in the same run.

A suite is a module in this package exposing ``run() -> dict[str, float | int | str | None]``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SUITES", "run_suites"]

SUITES: dict[str, str] = {
    "local": "dspex.bench._local",
    "dspy": "dspex.bench._dspy",
    "bridge": "dspex.bench._bridge",
    "engines": "dspex.bench._engines",
    "remote": "dspex.bench._remote",
    "tune": "dspex.bench._tune",
}
"""Suite name -> module implementing it."""


def run_suites(names: list[str]) -> dict[str, Any]:
    """Run the named suites (all when empty) and merge their figures into one dict."""
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise ValueError(f"unknown bench suite(s) {unknown}; choose from {sorted(SUITES)}")
    results: dict[str, Any] = {}
    for name in names or list(SUITES):
        results.update(importlib.import_module(SUITES[name]).run())
    return results
