"""Layer 1: programs whose main module a spawned worker cannot re-import get a clear error.

Each program is a real Python process that creates a WorkerPool with real ``spawn`` workers;
the assertions read the WorkerSetupError message it prints.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

HERE = Path(__file__).resolve().parent

PROGRAM = f"""\
import sys
sys.path.insert(0, {str(HERE)!r})
import pool_targets
from dspex.errors import WorkerSetupError
from dspex.runtime import WorkerPool

try:
    WorkerPool(pool_targets.echo_setup, workers=1, setup_attempts=2).close()
    outcome = "STARTED"
except WorkerSetupError as exc:
    if __name__ != "__main__":
        raise  # a worker re-importing this module: let it fail as an unguarded program does
    outcome = f"ERROR {{exc}}"
if __name__ == "__main__":
    print(outcome)
"""
"""Creates a pool at import time (no ``__main__`` guard around the creation itself)."""


def _run(args: list[str], program: str | None) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        input=program,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert "ERROR" in done.stdout, (done.stdout, done.stderr)
    return done.stdout


def test_a_pool_created_at_import_time_says_to_guard_it(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(PROGRAM)
    message = _run([str(script)], None)
    assert "exited with code 1 before its dspex code ran" in message  # one space
    assert 'if __name__ == "__main__":' in message
    assert "failed 2 times in a row" in message


def test_a_program_read_from_stdin_is_refused_before_spawning() -> None:
    message = _run(["-"], PROGRAM)
    assert "'<stdin>' is not a file" in message
    assert "Save the program to a file" in message


def test_the_same_pool_created_under_the_guard_starts(tmp_path: Path) -> None:
    script = tmp_path / "guarded.py"
    creation = "WorkerPool(pool_targets.echo_setup, workers=1, setup_attempts=2).close()"
    script.write_text(
        PROGRAM.replace(f"    {creation}", f"    if __name__ == '__main__':\n        {creation}")
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=100, check=False
    )
    assert done.stdout.strip() == "STARTED", (done.stdout, done.stderr)
