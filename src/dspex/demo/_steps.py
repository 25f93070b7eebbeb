"""Layer 3 demo: the shared pieces of ``dspex demo``, its run context and live watcher.

A demo is a list of small step functions, each taking a :class:`DemoRun`; later capabilities
(DSPy programs, worker pools) add their own step modules beside the local ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from dspex._model import VariableRecord, VariableUpdate
from dspex.session import Session
from dspex.state import VariableWatch

__all__ = ["DemoRun", "DemoStep", "LiveWatcher", "show_value"]


def show_value(value: Any, width: int = 60) -> str:
    """A short, readable rendering of a variable value."""
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        text = f"array(shape={tuple(value.shape)}, dtype={value.dtype}) {value.tolist()}"
    else:
        text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


class LiveWatcher:
    """A thread that prints every update of a watch as it arrives.

    Steps call :meth:`wait_for` after a change so the live line appears next to the step that
    caused it, which keeps the demo output in a readable order.
    """

    def __init__(self, console: Console, watch: VariableWatch) -> None:
        self.console = console
        self.watch = watch
        self.received: list[VariableUpdate] = []
        self._seen = 0
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="dspex-demo-watcher", daemon=True)

    def start(self) -> None:
        """Start the watcher thread."""
        self._thread.start()

    def _run(self) -> None:
        for update in self.watch:
            record = update.record
            self.console.print(
                f"    [magenta]watcher thread[/magenta] <- revision {update.revision:>2}  "
                f"{update.kind:<8} [bold]{update.name}[/bold] = {show_value(record.value, 50)}"
                f"  (version {record.version})"
            )
            with self._changed:
                self.received.append(update)
                self._seen = update.revision
                self._changed.notify_all()

    def wait_for(self, revision: int, timeout: float = 5.0) -> bool:
        """Block until the watcher has printed ``revision`` (or ``timeout`` passes)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._seen >= revision, timeout)

    def stop(self) -> None:
        """Cancel the watch and wait for the thread to end."""
        self.watch.cancel()
        self._thread.join(5.0)


@dataclass
class DemoRun:
    """What every step shares: where to print, the session, and the live watcher if started."""

    console: Console
    session: Session
    watcher: LiveWatcher | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def changed(self, record: VariableRecord) -> VariableRecord:
        """Wait until the watcher (if any) has shown ``record``'s revision; return the record."""
        if self.watcher is not None:
            self.watcher.wait_for(record.revision)
        return record

    def say(self, text: str) -> None:
        """Print one line of narration."""
        self.console.print(f"  {text}")


@dataclass(frozen=True)
class DemoStep:
    """One titled step of the demo."""

    title: str
    run: Callable[[DemoRun], None]
