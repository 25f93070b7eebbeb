"""Callables the fault tests run in ``dspex.Remote`` workers, in an importable module (shipped
by reference, as real targets are)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import dspex


class SleepsLong:
    """A call that says it runs (a marker file named after its pid in ``markers``), then
    sleeps for ``seconds``."""

    def __call__(self, markers: str, seconds: float = 120.0) -> int:
        (Path(markers) / str(os.getpid())).write_text("running")
        time.sleep(seconds)
        return os.getpid()


class ReadsX:
    """Reads the session variable ``x`` through the worker's session (its watched cache),
    after ``seconds`` of work."""

    def __call__(self, seconds: float = 0.0) -> dict[str, Any]:
        time.sleep(seconds)
        return {"x": dspex.current_session().get("x"), "pid": os.getpid()}
