"""``dspex bench --json dspy`` as a real subprocess: the remote figures are measured (structure,
not speed; the speed targets are verdicts in the JSON, never test assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(300)


def test_bench_dspy_reports_the_remote_figures_and_their_target() -> None:
    command = [sys.executable, "-c", "import sys; from dspex.cli import main; sys.exit(main())"]
    completed = subprocess.run(
        [*command, "bench", "--json", "dspy"],
        capture_output=True, text=True, timeout=280, check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    for figure in (
        "remote_call_ms_p50",
        "remote_local_call_ms_p50",
        "remote_speedup_2w",
        "pool_speedup_2w",
        "remote_throughput_1w_per_s",
        "remote_throughput_2w_per_s",
    ):
        assert isinstance(result[figure], float) and result[figure] > 0, figure
    assert "dspex.Remote" in result["remote_path"]
    assert set(result["targets"]) == {"bound_predict_us_p50", "remote_speedup_2w"}
    assert result["targets"]["remote_speedup_2w"]["target"] == ">= 1.6"
    assert isinstance(result["targets"]["remote_speedup_2w"]["met"], bool)
