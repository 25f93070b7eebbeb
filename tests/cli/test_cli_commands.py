"""``dspex bench --json local`` and ``dspex demo`` as real subprocesses: structure, not speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LOCAL_FIGURES = (
    "dict_get_ns",
    "dict_set_ns",
    "local_get_ns_p50",
    "local_get_ns_p99",
    "local_set_ns_p50",
    "local_set_ns_p99",
    "local_watch_delivery_ns_p50",
)


def dspex_command(*args: str) -> list[str]:
    """The installed ``dspex`` console script, or the same entry point through Python."""
    script = Path(sys.executable).with_name("dspex")
    if script.exists():
        return [str(script), *args]
    return [
        sys.executable,
        "-c",
        "import sys; from dspex.cli import main; sys.exit(main())",
        *args,
    ]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}
    return subprocess.run(
        dspex_command(*args), capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def test_bench_json_local_prints_one_json_object_with_every_figure() -> None:
    completed = run("bench", "--json", "local")
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)  # exactly one JSON document on stdout
    assert result["suites"] == ["local"]
    assert result["machine"]["python"].count(".") == 2
    assert isinstance(result["machine"]["cpu_count"], int)
    for figure in LOCAL_FIGURES:
        assert isinstance(result[figure], int | float), figure
        assert result[figure] > 0, figure
    assert result["local_get_ns_p50"] <= result["local_get_ns_p99"]
    assert result["local_set_ns_p50"] <= result["local_set_ns_p99"]
    assert "session.get" in result["local_get_path"]
    assert set(result["targets"]) == {"local_get_ns_p50", "local_set_ns_p50"}
    assert all(isinstance(v["met"], bool) for v in result["targets"].values())


def test_bench_unknown_suite_fails_with_a_clear_message() -> None:
    completed = run("bench", "--json", "no-such-suite")
    assert completed.returncode == 2
    assert "unknown suite" in completed.stderr
    assert "local" in completed.stderr
    assert completed.stdout == ""


def test_demo_runs_every_step_and_shows_real_work() -> None:
    completed = run("demo")
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    for expected in (
        "Register typed variables",
        "watcher thread",
        "refused VariableValueError: variable 'temperature': value 3.5 breaks rule max=2.0",
        "nothing was half applied",
        "conflict B: VersionConflictError: variable 'temperature' is at version 4",
        "history of temperature",
        "rollback to version 1 wrote 0.7 as a new version",
        "in order, none missing",
    ):
        assert expected in out, f"missing {expected!r} in demo output:\n{out}"
    assert completed.stderr == ""


def test_demo_lists_its_steps() -> None:
    completed = run("demo", "--list")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[0] == "1. Register typed variables"
