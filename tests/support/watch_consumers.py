"""Watch consumers on threads of their own, joined with a bound: how a watch ends for them.

Each way of consuming a watch a program uses: iterating it (a dedicated stream is then read by
the consumer itself), polling it with a timeout (read on the stream's own thread), and
``deliver_to`` (updates on the stream's own thread, only the end through iteration).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from dspex._model import VariableUpdate
from dspex.state import StateProvider, VariableWatch
from support import wait_until

__all__ = [
    "CONSUMERS",
    "ENDS",
    "Consume",
    "WATCHES",
    "Consumer",
    "iterate",
    "poll",
    "receiving",
    "take_delivery",
]

ENDS = 5.0
"""Seconds a consumer may take to return once its watch ended (promptly; a loaded machine)."""

Consume = Callable[[VariableWatch, list[VariableUpdate]], None]
"""``consume(watch, got)``: consume the watch, appending each update it hands out to ``got``."""


def iterate(watch: VariableWatch, got: list[VariableUpdate]) -> None:
    got.extend(watch)


def poll(watch: VariableWatch, got: list[VariableUpdate]) -> None:
    while not watch.closed:  # a poll with a timeout: the stream is read on its own thread
        update = watch.poll(0.1)
        if update is not None:
            got.append(update)


def take_delivery(watch: VariableWatch, got: list[VariableUpdate]) -> None:
    # As a read cache does: updates on the stream's own thread where the watch can (a
    # dedicated one), and only the end through iteration; else iterate as usual.
    watch.deliver_to(got.append)
    got.extend(watch)


CONSUMERS: dict[str, Consume] = {
    "iterate": iterate,
    "poll with a timeout": poll,
    "deliver_to": take_delivery,
}

WATCHES: dict[str, dict[str, Any]] = {
    "dedicated": {"include_initial": True},  # its own stream, read by its consumer
    "shared": {},  # a live watch on the session's shared stream (the client's stream loop)
}
"""``watch_variables`` options for each kind of store watch."""


class Consumer:
    """Consume ``watch`` on a thread of its own; what it got and how it ended."""

    def __init__(self, watch: VariableWatch, consume: Consume) -> None:
        self.watch = watch
        self.got: list[VariableUpdate] = []
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(consume,), daemon=True)
        self.thread.start()

    def _run(self, consume: Consume) -> None:
        try:
            consume(self.watch, self.got)
        except BaseException as exc:  # reported by ended() and raised()
            self.failure = exc

    def ended(self) -> bool:
        """Whether the consumer returned within :data:`ENDS` seconds, with the watch closed
        normally."""
        self.thread.join(ENDS)
        assert self.failure is None, self.failure
        return not self.thread.is_alive() and self.watch.closed

    def raised(self) -> BaseException:
        """What the consumer raised within :data:`ENDS` seconds (it must not stay blocked)."""
        self.thread.join(ENDS)
        assert not self.thread.is_alive(), "the consumer is still blocked: the watch went silent"
        assert self.failure is not None, f"the watch ended normally after {self.got}"
        return self.failure


def receiving(consumer: Consumer, writer: StateProvider, session_id: str) -> None:
    """Set ``t`` until the consumer got an update: it is now blocked waiting for the next."""
    for step in range(1, 100):
        writer.set_variable(session_id, "t", step / 100)
        if wait_until(lambda: consumer.got, 0.2):
            return
    raise AssertionError("the watch delivered nothing")
