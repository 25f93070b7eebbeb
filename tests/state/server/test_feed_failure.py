"""A session feed whose pump fails ends its streams loudly, never leaving them silent (issue 12).

The server reads each watched session's changes once, on a pump thread, and encodes them for
every stream. An embedded store holds what its own process put there, such as a writer id that
is not valid UTF-8 (a lone surrogate), which the pump cannot encode. Before, that exception
ended the pump thread and nothing else: every stream of the session stayed open, heartbeats and
all, but got no update again, and so did every stream opened later. Now the failure is logged
and each stream ends with an internal ``StoreError`` saying where to resume; a new watch gets a
new feed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from support import wait_until
from support.bridge import WAIT
from support.watch_consumers import WATCHES, Consumer, iterate, receiving

from dspex._model import make_spec
from dspex.errors import StoreError
from dspex.state import LocalProvider
from dspex.state.core.identity import current_writer
from dspex.state.store import SessionStoreProvider, StoreServer


@contextmanager
def unencodable_writer() -> Iterator[None]:
    """Writes made meanwhile name a writer the wire cannot encode (protobuf strings are UTF-8)."""
    token = current_writer.set("writer-\udc80")
    try:
        yield
    finally:
        current_writer.reset(token)


def _register_unencodable(local: LocalProvider, session_id: str) -> None:
    with unencodable_writer():
        local.register_variable(session_id, "when", make_spec(float), 0.0)


@pytest.mark.parametrize("kind", WATCHES, ids=list(WATCHES))
def test_a_change_the_feed_cannot_encode_ends_every_stream_with_a_store_error(
    server: StoreServer, client: SessionStoreProvider, local: LocalProvider, session_id: str,
    kind: str,
) -> None:  # fmt: skip
    consumers = [
        Consumer(client.watch_variables(session_id, **WATCHES[kind]), iterate) for _ in range(2)
    ]
    for consumer in consumers:
        receiving(consumer, local, session_id)
    _register_unencodable(local, session_id)
    for consumer in consumers:
        failure = consumer.raised()  # before the fix: still blocked
        assert isinstance(failure, StoreError), repr(failure)
        assert "internal error in the session store (UnicodeEncodeError" in str(failure)
        last = consumer.got[-1].revision
        assert failure.details["resume_from"] == last
        assert f"after_revision={last}" in str(failure)
    # a new watch gets a new feed (before the fix it joined the dead one and heard nothing)
    with client.watch_variables(session_id) as watch:
        revision = local.set_variable(session_id, "t", 0.5).revision
        update = watch.poll(WAIT)
    assert update is not None and update.revision == revision
    assert wait_until(lambda: server.watch_count == 0, WAIT)


def test_a_backlog_the_server_cannot_encode_is_refused_as_an_internal_error(
    client: SessionStoreProvider, local: LocalProvider, session_id: str
) -> None:
    _register_unencodable(local, session_id)
    for options in ({"include_initial": True}, {"after_revision": 0}):
        with pytest.raises(StoreError) as refused:
            client.watch_variables(session_id, **options)  # type: ignore[arg-type]
        # before: StoreProtocolError, "client and server versions may differ"
        assert type(refused.value) is StoreError, repr(refused.value)
        assert "internal error in the session store (UnicodeEncodeError" in str(refused.value)
