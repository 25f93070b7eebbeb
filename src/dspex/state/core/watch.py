"""Core: VariableWatch, the one watch handle every provider returns.

A watch is fed through a queue by its provider (a publisher thread locally; for the gRPC
client, the stream's reader: the consumer's own thread while it waits with no timeout). It
is a context manager and an iterator; leaving the ``with`` block cancels it.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import Any

from dspex._model import VariableUpdate
from dspex.errors import DspexError

__all__ = ["END", "VariableWatch"]

END: Any = object()
"""Queue item that ends a watch normally (cancelled, or the provider closed it)."""


class VariableWatch:
    """A live stream of :class:`VariableUpdate` in session revision order.

    Iterate to block for updates, or call :meth:`poll` with a timeout. The watch ends normally
    (the loop ends, ``poll`` returns None, :attr:`closed` is True) when it is cancelled, its
    session is closed, or the provider that opened it is closed (``provider.close()``, from
    any thread: a consumer blocked on the watch returns). A watch that ends abnormally raises
    its error from the iterator, e.g. :class:`~dspex.errors.WatchLaggedError` carrying
    ``resume_from``. A watch never ends silently: whatever breaks its stream (a lost store,
    an update this process cannot decode, a raising :meth:`deliver_to` callback) reaches the
    consumer as a dspex error, most with ``resume_from``.

    Examples:
        >>> with session.watch("temperature") as updates:   # doctest: +SKIP
        ...     for update in updates:
        ...         print(update.revision, update.record.value)
    """

    def __init__(
        self,
        items: queue.SimpleQueue[Any],
        cancel: Callable[[], None],
        after_revision: int = 0,
        divert: Callable[[Callable[[VariableUpdate], None]], bool] | None = None,
        pull: Callable[[float | None], bool] | None = None,
    ) -> None:
        self._items = items
        self._cancel = cancel
        self._divert = divert
        # pull(timeout), called while the queue is empty: the provider reads its next message
        # on the calling thread, queueing what it carries, and returns True; or returns False
        # (for a timeout, or once its stream is over) when updates reach the queue only from
        # another thread, on which poll() then blocks.
        self._pull = pull
        self._done = False
        self.last_revision = after_revision
        """Revision of the last update handed out; resume from here after an error."""

    def deliver_to(self, apply: Callable[[VariableUpdate], None]) -> bool:
        """Hand every update to ``apply`` on the provider's own delivery thread from now on.

        For a consumer that only applies updates (a read cache): each update then costs no
        queue hand-off and no wake-up of the consumer's thread. Updates already queued are
        applied first, in order; how the watch ends (END or an error) still arrives through
        :meth:`poll` and iteration, which block until then (diverted updates do not advance
        :attr:`last_revision`). ``apply`` must be quick. Returns False, changing nothing,
        when the provider cannot deliver that way (then consume the watch as usual).

        If ``apply`` raises, the watch ends: nothing more is delivered, and :meth:`poll` and
        iteration raise :class:`~dspex.errors.WatchError` with that exception as
        ``__cause__`` and ``resume_from`` the last update ``apply`` took, so watching again
        from there delivers the failed update again. Skipping the update and carrying on
        would leave the consumer silently behind (a read cache would serve a stale value).
        """
        return self._divert is not None and not self._done and self._divert(apply)

    def poll(self, timeout: float | None = None) -> VariableUpdate | None:
        """Return the next update, or None if none arrived within ``timeout`` seconds.

        Also returns None once the watch has ended normally (see :attr:`closed`).

        Raises:
            WatchLaggedError: the watcher fell behind; resume from ``err.resume_from``.
            DspexError: the watch ended for another reason (session closed or expired...).
        """
        if self._done:
            return None
        try:
            item = self._next_item(timeout)
        except queue.Empty:
            return None
        if item is END:
            self._done = True
            return None
        if isinstance(item, DspexError):
            self._done = True
            self._cancel()
            raise item
        self.last_revision = max(self.last_revision, item.revision)
        return item  # type: ignore[no-any-return]

    def _next_item(self, timeout: float | None) -> Any:
        """The next queued item, read by this thread while the provider lets it (``pull``).

        Raises:
            queue.Empty: nothing within ``timeout`` seconds.
        """
        pull = self._pull
        while pull is not None:
            try:
                return self._items.get_nowait()
            except queue.Empty:
                if not pull(timeout):
                    break
        return self._items.get(timeout=None if timeout is None else max(timeout, 0.0))

    @property
    def closed(self) -> bool:
        """True once the watch has ended and will deliver nothing more."""
        return self._done

    def cancel(self) -> None:
        """Stop the watch; a blocked iterator returns. Safe to call more than once.

        Updates still queued are dropped: after ``cancel`` the watch delivers nothing more.
        """
        if not self._done:
            self._done = True
            self._cancel()
            self._items.put(END)  # wakes a thread blocked in poll()/iteration

    def __iter__(self) -> Iterator[VariableUpdate]:
        return self

    def __next__(self) -> VariableUpdate:
        update = self.poll(None)
        if update is None:
            raise StopIteration
        return update

    def __enter__(self) -> VariableWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()
