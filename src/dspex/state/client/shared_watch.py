"""Client side: one shared WatchVariables stream per session, fanned out to the live watches.

Like etcd's clientv3 multiplexing watchers over one gRPC watch stream: every live watch (no
``after_revision``, no ``include_initial``) a client opens on a session joins one server stream
subscribed to every name, and each update is offered to each watch's own
:class:`~dspex.state.core.fanout.Watcher` (own bounded queue, own name filter, own lag error). A
watch joining an open stream starts at ``max(head, delivered)``: the session's head revision,
read after the call began, and the last revision the stream delivered; so it sees every update
committed after ``watch_variables`` returned and none from before. The stream is opened by the
first watch and cancelled with the last; when it ends, every watch on it ends the same way, each
with its own ``resume_from``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from dspex.errors import DspexError, StoreUnavailableError, WatchLaggedError
from dspex.state.client import convert
from dspex.state.client.streams import StreamLoop, resumable
from dspex.state.core.fanout import Watcher
from dspex.state.core.watch import END, VariableWatch

__all__ = ["SharedWatchStream"]

_DEFAULT_QUEUE = 1024
_RESUME = re.compile(r"after_revision=\d+")


class SharedWatchStream:
    """One WatchVariables stream (all names) of a session, feeding many local watchers."""

    def __init__(
        self,
        loop: StreamLoop,
        session_id: str,
        *,
        address: str,
        metadata: tuple[tuple[str, str], ...],
        release: Callable[[SharedWatchStream], None],
    ) -> None:
        self.address = address
        self._release = release
        self.session_id = session_id
        self._lock = threading.Lock()
        self._watchers: list[Watcher] = []
        self.pending = 0  # joins in progress (guarded by the owner's lock)
        self.delivered = 0
        self.queue_size = _DEFAULT_QUEUE
        self.ended = False
        self._cancelled = False
        self._failure: DspexError | None = None
        self._started = threading.Event()
        request = convert.watch_variables_request(session_id, (), None, False)
        self._stop = loop.follow(request, metadata, self._handle, self._end)

    @property
    def idle(self) -> bool:
        """True when no watch uses the stream and none is joining."""
        with self._lock:
            return not self._watchers and not self.pending

    def wait_started(self, timeout: float) -> None:
        """Block until the store confirmed the stream.

        Raises:
            DspexError: the store refused the watch (unknown session, no permission ...).
            StoreUnavailableError: no confirmation within ``timeout`` seconds.
        """
        if not self._started.wait(timeout):
            raise StoreUnavailableError.stream_timeout(self.address, "confirm the watch", timeout)
        if self._failure is not None:
            raise _copy(self._failure)

    def join(self, names: frozenset[str], head: int) -> VariableWatch | None:
        """A new local watch live from ``max(head, delivered)``; None if the stream ended."""
        with self._lock:
            if self.ended:
                return None
            watcher = Watcher.live(names, self.queue_size, max(head, self.delivered))
            self._watchers.append(watcher)
        return VariableWatch(watcher.items, lambda: self._leave(watcher), watcher.last_put)

    def _leave(self, watcher: Watcher) -> None:
        with self._lock:
            if watcher in self._watchers:
                self._watchers.remove(watcher)
        self._release(self)

    def close(self) -> None:
        """The client is closing: every local watch ends normally (as a watch of a closing
        local provider does), then the server stream is cancelled."""
        with self._lock:
            self.ended = True
            watchers, self._watchers = tuple(self._watchers), []
        for watcher in watchers:
            if not watcher.lagged:
                watcher.end(END)
        self.stop()

    def stop(self) -> None:
        """Cancel the server stream; local watches get nothing more (idempotent)."""
        self._cancelled = True
        self._stop()

    def _handle(self, kind: str, payload: Any) -> bool:
        """Apply one stream event (on the stream loop)."""
        if kind == "update":
            with self._lock:
                self.delivered = payload.revision
                watchers = tuple(self._watchers)
            for watcher in watchers:
                watcher.offer(payload)
        elif kind == "started":
            revision, _head, queue_size, _backlog = payload
            self.delivered = revision
            self.queue_size = queue_size or _DEFAULT_QUEUE
            self._started.set()
        return True

    def _end(self, error: DspexError | None) -> None:
        """The stream is over (on the stream loop): end every local watch the same way."""
        with self._lock:
            self.ended = True
            watchers, self._watchers = tuple(self._watchers), []
        try:
            if not self._started.is_set():
                self._failure = error or StoreUnavailableError(
                    "watch stream ended before it started", address=self.address
                )
            elif not self._cancelled:
                for watcher in watchers:
                    if not watcher.lagged:
                        watcher.end(END if error is None else self._rebase(error, watcher))
        finally:
            self._started.set()
            self._release(self)

    def _rebase(self, error: DspexError, watcher: Watcher) -> DspexError:
        """``error`` as this watcher's own, resuming from its own last revision."""
        own = watcher.last_put
        if isinstance(error, WatchLaggedError):
            return WatchLaggedError(
                "the shared watch stream fell behind at the store; resume with "
                f"after_revision={own}",
                resume_from=own,
            )
        if "resume_from" in error.details:
            details = {**error.details, "resume_from": own}
            return _copy(error, _RESUME.sub(f"after_revision={own}", error.message), details)
        resumed = resumable(error, own, self.address)
        return _copy(error) if resumed is error else resumed


def _copy(
    error: DspexError, message: str | None = None, details: dict[str, Any] | None = None
) -> DspexError:
    """A fresh instance (each watch raises its own, with its own traceback), with the same
    ``__cause__``."""
    copy = type(error)(error.message if message is None else message, **(details or error.details))
    copy.__cause__ = error.__cause__
    return copy
