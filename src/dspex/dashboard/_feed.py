"""One page's live view of one session: the store's watch stream turned into page messages.

A :class:`SessionFeed` runs in a thread of its own (store calls block). It opens one watch with
the current records first (``initial=True``), then for every update emits a ``variable``
message; the first time it sees a variable it also emits that variable's kept ``history`` and
whether this dashboard may roll it back; after changes it emits the session's dependency
edges (``deps``) when they differ from the last ones sent. While the store is unreachable it
says so (``status``) and watches again, from the last revision it handed on, once the store
is back. Everything goes through the store's
access control with the dashboard's token: a variable the token may not observe never
arrives, and history or edges it may not read are simply left out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from dspex._jsonable import record_json
from dspex._model import VariableRecord, VariableUpdate
from dspex.dashboard._values import display
from dspex.errors import AccessError, DspexError, StoreUnavailableError, WatchLaggedError
from dspex.state import SessionContext, VariableWatch

__all__ = ["Message", "SessionFeed"]

Message = dict[str, Any]
"""One message for the page (sent as one server-sent event, ``type`` names the event)."""

# Kinds after which the dependency edges are read again; lock renewals and progress reports
# (the most frequent updates while an optimizer runs) never change them.
_GRAPH_KINDS = frozenset({"initial", "register", "set", "rollback", "delete", "stale"})
# Updates handled before the dependency edges are read again, while updates keep coming.
_BATCH = 64
_QUIET_SECONDS = 0.05
_RETRY_FIRST_SECONDS = 0.2
_RETRY_MAX_SECONDS = 5.0


def page_record(record: VariableRecord) -> Message:
    """A record as the page shows it: the JSON record plus its short text and plot value."""
    message = record_json(record)
    message.update(display(record.type, message["value"]))
    return message


class SessionFeed:
    """The messages one page needs about one session, read from the store as they happen.

    Args:
        view: the session, through the dashboard's store client.
        emit: called (from the feed's thread) with each message, in order.
        read_only: never offer rollback, whatever the token may do.
    """

    def __init__(
        self, view: SessionContext, emit: Callable[[Message], None], *, read_only: bool
    ) -> None:
        self.view = view
        self._emit = emit
        self._read_only = read_only
        self._seen: set[str] = set()
        self._edges: list[list[str]] | None = None
        self._deps_readable = True
        self._watch: VariableWatch | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        """Open the watch (current records first); call before :meth:`start`.

        Raises:
            SessionNotFoundError, SessionClosedError: no such open session.
            PermissionDeniedError: the token may observe nothing in the session.
            StoreUnavailableError: the store cannot be reached.
        """
        self._watch = self.view.watch(initial=True)

    def start(self) -> None:
        """Deliver messages from a background thread until :meth:`stop` or the watch ends."""
        self._thread = threading.Thread(
            target=self._run, name=f"dspex-dashboard-{self.view.session_id}", daemon=True
        )
        self._thread.start()

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopped.is_set()

    def stop(self) -> None:
        """End the watch; the thread then emits only ``end``. Safe to call more than once."""
        self._stopped.set()
        if self._watch is not None:
            self._watch.cancel()

    def _run(self) -> None:
        try:
            self._follow()
        except DspexError as exc:
            if not self._stopped.is_set():
                self._emit({"type": "failure", "message": str(exc), "code": exc.code})
        finally:
            if self._watch is not None:
                self._watch.cancel()  # one reopened while stop() ran is not left open
            self._emit({"type": "end"})  # also after stop(): the page's event stream ends now

    def _follow(self) -> None:
        """Hand every update on, resuming from the last revision handed on after a lag or
        after the store was unreachable for a while (restarted, network cut)."""
        while self._watch is not None and not self._stopped.is_set():
            watch = self._watch
            try:
                self._drain(watch)
                return  # cancelled, or the session closed: the watch ended normally
            except WatchLaggedError as lagged:
                self._watch = self._reopen(lagged.details.get("resume_from"))
            except StoreUnavailableError as lost:
                self._emit({"type": "status", "state": "reconnecting", "message": str(lost)})
                self._watch = self._reconnect(watch.last_revision)
                if self._watch is not None:
                    self._emit({"type": "status", "state": "live"})

    def _reconnect(self, resume_from: int) -> VariableWatch | None:
        """Watch again once the store answers (None if stopped first), retrying with backoff.

        Raises:
            SessionNotFoundError, SessionClosedError: the store is back without the session.
        """
        delay = _RETRY_FIRST_SECONDS
        while not self._stopped.wait(delay):
            try:
                watch = self._reopen(resume_from)
            except StoreUnavailableError:
                delay = min(delay * 2, _RETRY_MAX_SECONDS)
                continue
            if self._stopped.is_set():
                watch.cancel()
                return None
            return watch
        return None

    def _reopen(self, resume_from: int | None) -> VariableWatch:
        if resume_from is not None:
            try:
                return self.view.watch(after_revision=resume_from)
            except WatchLaggedError:
                pass  # older than the kept change log: start again from the current records
        return self.view.watch(initial=True)

    def _drain(self, watch: VariableWatch) -> None:
        dirty = False
        handled = 0
        while True:
            update = watch.poll(_QUIET_SECONDS if dirty else None)
            if update is None:
                if watch.closed:
                    return
                self._send_edges()  # quiet for a moment: the edges settle
                dirty, handled = False, 0
                continue
            self._handle(update)
            dirty = dirty or update.kind in _GRAPH_KINDS
            handled += 1
            if dirty and handled >= _BATCH:
                self._send_edges()
                dirty, handled = False, 0

    def _handle(self, update: VariableUpdate) -> None:
        name = update.name
        message: Message = {
            "type": "variable",
            "kind": update.kind,
            "revision": update.revision,
            "record": page_record(update.record),
        }
        if update.kind == "delete":
            self._seen.discard(name)
            self._emit(message)
            return
        first = name not in self._seen
        if first:
            self._seen.add(name)
            message["writable"] = self._may_roll_back(name)
        self._emit(message)
        if first:
            self._send_history(name)

    def _send_history(self, name: str) -> None:
        try:
            records = self.view.history(name)
        except AccessError:
            return  # observable but not readable: the page plots what it sees from now on
        self._emit({"type": "history", "name": name, "records": [page_record(r) for r in records]})

    def _send_edges(self) -> None:
        if not self._deps_readable:
            return
        try:
            pairs = self.view.provider.get_dependencies(self.view.session_id)
        except AccessError:
            self._deps_readable = False
            return
        edges = [[up, down] for up, down in pairs]
        if edges != self._edges:
            self._edges = edges
            self._emit({"type": "deps", "edges": edges})

    def _may_roll_back(self, name: str) -> bool:
        """Whether the token may write ``name``, asked without changing anything.

        Rolling back to version 0, which never exists, changes nothing: the store checks the
        ``write`` permission first (``PermissionDeniedError``) and then answers that the version
        is not kept (or that an optimizer holds the lock): both mean a write is allowed.
        """
        if self._read_only:
            return False
        try:
            self.view.rollback(name, 0)
        except AccessError:
            return False
        except DspexError:
            return True
        return True  # unreachable in practice: version 0 is never kept
