"""Start ``tune_process.py`` runs as child processes and follow what they print."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SCRIPT = str(Path(__file__).parent / "tune_process.py")


class Tuner:
    """One tuning child process; its stdout lines are collected by a thread."""

    def __init__(self, address: str, session_id: str, variable: str, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, SCRIPT, address, session_id, variable, *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._ended = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._ended.set()

    def wait_for(self, prefix: str, count: int = 1, timeout: float = 120.0) -> list[str]:
        """Block until ``count`` lines starting with ``prefix`` were printed; return them."""
        deadline = time.monotonic() + timeout
        while sum(1 for line in self.lines if line.startswith(prefix)) < count:
            left = deadline - time.monotonic()
            if left <= 0 or (self.process.poll() is not None and self._queue.empty()):
                raise AssertionError(f"no {count} {prefix!r} lines: {self.lines}\n{self.stderr()}")
            try:
                self.lines.append(self._queue.get(timeout=min(left, 0.2)))
            except queue.Empty:
                continue
        return [line for line in self.lines if line.startswith(prefix)]

    def finish(self, timeout: float = 90.0) -> tuple[int, dict[str, Any] | None]:
        """Wait for the exit; return the exit code and the final JSON line (if any)."""
        code = self.process.wait(timeout)
        self._ended.wait(5)
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        last = next((line for line in reversed(self.lines) if line.startswith("{")), None)
        return code, None if last is None else json.loads(last)

    def stderr(self) -> str:
        """What the child wrote to stderr (after it ended)."""
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read()

    def kill(self) -> None:
        """SIGKILL the child (no cleanup runs) and reap it."""
        self.process.kill()
        self.process.wait(30)
