"""Core: SessionHeartbeat, the background thread that keeps a session with a TTL alive.

A store expires a session that goes ``ttl`` seconds without a heartbeat (its data is removed,
its watchers end with ``SessionExpiredError``). A client that created such a session beats
every ``ttl / 3`` seconds until it closes the session, so only a client that is gone (crashed,
killed, cut off) lets its session expire.
"""

from __future__ import annotations

import logging
import threading

from dspex.errors import DspexError, SessionError
from dspex.state.core.contract import StateProvider

__all__ = ["SessionHeartbeat"]

_log = logging.getLogger("dspex.session")


class SessionHeartbeat:
    """Calls ``provider.heartbeat(session_id)`` every ``interval`` seconds in a daemon thread.

    It stops by itself once the session is gone (expired or closed); a store that cannot be
    reached is tried again at the next beat.
    """

    def __init__(self, provider: StateProvider, session_id: str, interval: float) -> None:
        self._provider = provider
        self._session_id = session_id
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"dspex-heartbeat-{session_id[:12]}", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        """True while the thread beats."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop beating (idempotent)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._provider.heartbeat(self._session_id)
            except SessionError as exc:
                _log.warning("session %s: heartbeat stopped: %s", self._session_id, exc)
                return
            except DspexError as exc:  # store unreachable for now: try again next beat
                _log.debug("session %s: heartbeat failed: %s", self._session_id, exc)
