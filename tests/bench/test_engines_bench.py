"""``dspex bench --json engines`` as a real subprocess: structure, not speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.redis_server import require_redis_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SET_FIGURES = ("memory_engine_set_us_p50", "sqlite_engine_set_us_p50", "redis_engine_set_us_p50")
CONCURRENT_FIGURES = (
    "concurrent8_memory_set_us_p50",
    "concurrent8_sqlite_fsync_set_us_p50",
    "sqlite_fsync_vs_memory_set_ratio",
    "concurrent8_memory_sets_per_s",
    "concurrent8_sqlite_fsync_sets_per_s",
    "disk_flush_us_p50",
)
DSPEX = str(Path(sys.executable).with_name("dspex"))


def _bench(path: str) -> dict[str, object]:
    completed = subprocess.run(
        [DSPEX, "bench", "--json", "engines"], capture_output=True, text=True, timeout=240,
        env={**os.environ, "PATH": path}, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result: dict[str, object] = json.loads(completed.stdout)  # exactly one JSON document
    assert result["suites"] == ["engines"]
    targets = {"sqlite_engine_set_us_p50", "sqlite_fsync_vs_memory_set_ratio"}
    assert set(result["targets"]) == targets  # type: ignore[arg-type]
    for figure in CONCURRENT_FIGURES:  # 8 concurrent writers, memory vs SQLite with --fsync
        value = result[figure]
        assert isinstance(value, float) and value > 0, (figure, value)
    # Read from the --fsync server's data directory: every change was flushed, some together.
    flushes = result["concurrent8_sqlite_fsync_flushes_per_change"]
    commits = result["concurrent8_sqlite_fsync_commits_per_change"]
    assert isinstance(flushes, float) and 0 < flushes < 1, flushes
    assert isinstance(commits, float) and 0 < commits <= 1, commits
    return result


def test_engines_bench_measures_a_set_on_every_engine_and_a_raw_redis_get() -> None:
    require_redis_server()
    result = _bench(os.environ.get("PATH", ""))
    for figure in (*SET_FIGURES, "redis_get_us_p50"):
        value = result[figure]
        assert isinstance(value, float) and value > 0, (figure, value)
    assert "engines_note" not in result
    assert "dspex serve" in str(result["engines_channel"])


def test_engines_bench_without_redis_server_reports_null_with_a_note() -> None:
    # A PATH holding only this venv: redis-server cannot be found.
    result = _bench(str(Path(sys.executable).parent))
    assert result["redis_engine_set_us_p50"] is None and result["redis_get_us_p50"] is None
    assert "redis-server not found" in str(result["engines_note"])
    assert isinstance(result["sqlite_engine_set_us_p50"], float)
