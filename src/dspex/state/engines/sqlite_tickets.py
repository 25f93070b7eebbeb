"""Engines: the tickets of the SQLite engine's group commit (see ``SQLiteEngine._write``).

A :class:`Ticket` is one writer's change waiting in the queue, woken when its batch ended or
when the lead of the next one is handed to it. A :class:`Later` is a change queued by
``SQLiteEngine.commit_later`` from an event loop: no thread waits on it; whoever committed it
installs it and resolves its future on its loop (:func:`resolve_later`, one loop callback per
batch).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import dspex.errors as errors
from dspex._model import VariableUpdate
from dspex.state.engines.memory import _Space

if TYPE_CHECKING:
    import asyncio

__all__ = ["Later", "Statement", "Ticket", "finish", "resolve_later"]

Statement = tuple[str, tuple[Any, ...]]
"""One SQL statement and its parameters."""


class Ticket:
    """One writer's change waiting for a group commit, and how it ended."""

    __slots__ = ("_waiting", "changes", "done", "error", "statements")

    def __init__(
        self, statements: Sequence[Statement], changes: int, *, waits: bool = True
    ) -> None:
        self.statements = statements
        self.changes = changes
        self.done = False
        self.error: errors.StoreDataError | None = None
        self._waiting = threading.Lock()
        if waits:
            self._waiting.acquire()  # released by wake()

    def wait(self) -> None:
        """Block until :meth:`wake` (the batch ended, or this writer leads the next one)."""
        self._waiting.acquire()

    def wake(self) -> None:
        self._waiting.release()

    def fail(self, error: errors.StoreDataError) -> None:
        self.done, self.error = True, error


class Later(Ticket):
    """A change queued by :meth:`SQLiteEngine.commit_later`: its session stays locked until
    the change is installed (or failed), then its future is resolved on its event loop."""

    __slots__ = ("future", "loop", "session_id", "sizes", "space", "updates")

    def __init__(
        self,
        statements: Sequence[Statement],
        session_id: str,
        space: _Space,
        updates: list[VariableUpdate],
        sizes: list[int],
        *,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(statements, len(updates), waits=False)
        self.session_id, self.space, self.updates, self.sizes = session_id, space, updates, sizes
        self.loop = loop
        self.future: asyncio.Future[list[VariableUpdate]] = loop.create_future()


_Outcome = tuple[
    "asyncio.Future[list[VariableUpdate]]", list[VariableUpdate] | None, BaseException | None
]


def resolve_later(
    tickets: Sequence[Later],
    apply: Callable[[str, _Space, Sequence[VariableUpdate], Sequence[int]], None],
) -> None:
    """Install each committed change (``apply``), unlock its session, and resolve the futures:
    one ``call_soon_threadsafe`` per event loop for the whole batch."""
    outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for ticket in tickets:
        error: BaseException | None = ticket.error
        try:
            if error is None:
                apply(ticket.session_id, ticket.space, ticket.updates, ticket.sizes)
        except Exception as exc:  # a defect: fail the call rather than leave it waiting
            error = exc
        finally:
            ticket.space.lock.release()
        result = ticket.updates if error is None else None
        outcomes.setdefault(ticket.loop, []).append((ticket.future, result, error))
    for loop, batch in outcomes.items():
        with contextlib.suppress(RuntimeError):  # the loop was closed: no one awaits
            loop.call_soon_threadsafe(_set_outcomes, batch)


def _set_outcomes(batch: Sequence[_Outcome]) -> None:
    """On the event loop: resolve each future not cancelled meanwhile."""
    for future, result, error in batch:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]


def finish(tickets: Sequence[Ticket], error: errors.StoreDataError | None) -> None:
    """Mark ``tickets`` committed (``error`` None) or failed with ``error``."""
    for ticket in tickets:
        ticket.done, ticket.error = True, error
