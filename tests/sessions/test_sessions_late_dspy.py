"""A session entered before ``import dspy`` reaches ``dspy.Parallel`` and ``Evaluate`` threads.

Runs in a fresh interpreter (this test process has long imported dspy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TARGET = Path(__file__).with_name("late_dspy_target.py")


@pytest.mark.slow
def test_session_entered_before_import_dspy_reaches_thread_pools() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, str(TARGET)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["parallel"]["answers"] == 8
    for run in ("parallel", "evaluate"):
        calls = report[run]["calls"]
        assert len(calls) == 8, (run, calls)
        assert all(in_session for _, in_session, _ in calls), (run, calls)
        assert {temperature for _, _, temperature in calls} == {0.6}, (run, calls)
        assert report["main_thread"] not in {thread for thread, _, _ in calls}, "no pool used"
