"""Name the screenshots the dashboard tests saved at the end of the run (CI logs show them)."""

from __future__ import annotations

from typing import Any

from support.dashboard import SAVED_ARTIFACTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for path in SAVED_ARTIFACTS:
        terminalreporter.write_line(f"dashboard test artifact: {path}")
