"""Helpers for the fault tests: acknowledged writes to a real ``dspex serve``, byte surgery on
data files, a stalled in-process server loop, and the figures each fault test records for
docs/reliability.md.

A write counts as acknowledged only when the call returned its record.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dspex._model import VariableRecord, make_spec
from dspex.state.store import SessionStoreProvider
from support.serve_process import ServeProcess

TEXT = make_spec(str)
WAIT = 20.0
"""Upper bound for anything that should happen "soon" (the machine may be loaded)."""

FIGURES = os.environ.get("DSPEX_FAULT_FIGURES")
"""When set, a JSON-lines file each fault test appends its figures to (docs/reliability.md)."""


def record_figures(test: str, **figures: Any) -> None:
    """Append ``figures`` for ``test`` to ``$DSPEX_FAULT_FIGURES`` (no-op when unset)."""
    if FIGURES:
        with open(FIGURES, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": test, **figures}) + "\n")


def acknowledged_writes(
    address: str, count: int, session_id: str = "kept"
) -> list[VariableRecord]:
    """Create ``session_id`` with variable ``v`` and set it ``count`` times; the records."""
    client = SessionStoreProvider(address, timeout=10.0)
    try:
        client.create_session(session_id)
        acked = [client.register_variable(session_id, "v", TEXT, "value-0000")]
        acked += [client.set_variable(session_id, "v", f"value-{i:04d}") for i in range(1, count)]
        return acked
    finally:
        client.close()


def killed_with_writes(directory: Path, count: int) -> list[VariableRecord]:
    """Run ``dspex serve --data directory``, make ``count`` acknowledged writes, SIGKILL it
    (the WAL is left as it was: no checkpoint on a clean close)."""
    server = ServeProcess("--data", str(directory)).start()
    try:
        return acknowledged_writes(server.address, count)
    finally:
        server.kill()


def flip_byte(path: Path, offset: int, mask: int = 0x01) -> None:
    """Flip the ``mask`` bits of the byte at ``offset`` of ``path`` (one bit by default, so
    text stays valid text: the silent kind of damage)."""
    with open(path, "r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ mask]))


def faketime_library() -> str | None:
    """Where Debian's ``libfaketime`` package put its library on this architecture (it lives
    under the multiarch folder, e.g. ``/usr/lib/aarch64-linux-gnu/``), or None."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    return str(found[0]) if found else None


def skewed_clock(seconds: int) -> dict[str, str]:
    """Environment that runs a process with its clocks ``seconds`` off (libfaketime), or skip
    the test with the way to install it."""
    library = faketime_library()
    if library is None:
        pytest.skip("libfaketime is not installed (make test-deps, or apt-get install it)")
    return {"LD_PRELOAD": library, "FAKETIME": f"{seconds:+d}s", "DSPEX_TOKEN": ""}


@contextmanager
def stalled_loop(loop: asyncio.AbstractEventLoop, seconds: float) -> Iterator[list[int]]:
    """Hold an in-process server's event loop for ``seconds`` (a blocking callback on it, as a
    stalled server would be): nothing it serves answers or streams meanwhile.

    Yields a list that gets the ``time.monotonic_ns()`` at which the loop was released; on
    exit, waits for the release.
    """
    held, released = threading.Event(), []

    def hold() -> None:
        held.set()
        time.sleep(seconds)
        released.append(time.monotonic_ns())

    loop.call_soon_threadsafe(hold)
    assert held.wait(WAIT), "the loop never ran the stall"
    try:
        yield released
    finally:
        deadline = time.monotonic() + seconds + WAIT
        while not released and time.monotonic() < deadline:
            time.sleep(0.02)
