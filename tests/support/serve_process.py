"""A real ``dspex serve`` process for tests: start, SIGKILL, restart on the same address.

``ServeProcess(*flags).start()`` runs ``dspex serve --address 127.0.0.1:PORT FLAGS`` as a child
process and returns once it prints its address; ``kill()`` sends SIGKILL (no shutdown code runs),
``stop()`` SIGTERM (graceful), and ``start()`` again restarts it on the same port.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from support.redis_server import free_port

DSPEX = str(Path(sys.executable).parent / "dspex")
START_TIMEOUT = 30.0
"""Seconds a server may take to listen (generous: the machine may be loaded)."""


def run_dspex(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``dspex ARGS`` to completion and return what it printed."""
    return subprocess.run(
        [DSPEX, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


class ServeProcess:
    """One ``dspex serve`` child process on a fixed loopback port."""

    def __init__(self, *flags: str, port: int | None = None) -> None:
        self.flags = flags
        self.port = port or free_port()
        self.address = f"grpc://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[str] | None = None
        self.stderr_lines: list[str] = []
        self._pumping = False

    def start(self, timeout: float = START_TIMEOUT) -> ServeProcess:
        """Start (or restart) the server and wait until it listens.

        Raises:
            RuntimeError: it exited or did not listen within ``timeout`` (with its stderr).
        """
        deadline = time.monotonic() + timeout
        while True:
            self._pumping = False
            self.process = subprocess.Popen(
                [DSPEX, "serve", "--address", f"127.0.0.1:{self.port}", *self.flags],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            line = self._first_line(deadline)
            if line.startswith("dspex session store listening on"):
                assert line.split()[-1] == self.address, line
                self._drain_stderr()
                return self
            errors = self._end()
            # The port of a just-killed server can take a moment to be free again.
            if "cannot listen" not in errors or time.monotonic() > deadline:
                raise RuntimeError(f"dspex serve {' '.join(self.flags)} failed: {errors}")
            time.sleep(0.1)

    def _first_line(self, deadline: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        found: list[str] = []
        reader = threading.Thread(
            target=lambda: found.append(self.process.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(max(0.1, deadline - time.monotonic()))
        return found[0] if found else ""

    def _drain_stderr(self) -> None:
        """Keep reading stderr so the child never blocks on a full pipe."""
        process = self.process
        assert process is not None and process.stderr is not None
        stream = process.stderr
        self._pumping = True

        def pump() -> None:
            with contextlib.suppress(ValueError, OSError):
                for line in stream:
                    self.stderr_lines.append(line)

        threading.Thread(target=pump, daemon=True).start()

    @property
    def alive(self) -> bool:
        """Whether the child is running."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server: no shutdown code runs, nothing is flushed by it."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self._end()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM the server (graceful shutdown); returns its exit code."""
        if self.process is None:
            return 0
        self.process.terminate()
        code = self.process.wait(timeout)
        self._end()
        return code

    def _end(self) -> str:
        """Reap the child (killing it if needed); returns its remaining stderr."""
        process, self.process = self.process, None
        if process is None:
            return ""
        if process.poll() is None:
            process.kill()
        process.wait(30)
        text = ""
        if not self._pumping and process.stderr is not None:
            text = process.stderr.read()
        # A pumped stderr is left to its thread, which ends at EOF (closing it could block).
        for stream in (process.stdout, None if self._pumping else process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return text

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
