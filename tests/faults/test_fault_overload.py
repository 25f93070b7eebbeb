"""Overload and TLS mismatches through a real ``dspex serve`` (issue 12, item 8): a store at
its concurrent-call limit answers RESOURCE_EXHAUSTED, which the client reports as an overloaded
store (not as an unreachable one), and a TLS mismatch is reported as TLS.
"""

from __future__ import annotations

import pytest
from support.faults import TEXT
from support.serve_process import ServeProcess

from dspex import errors
from dspex.state.store import SessionStoreProvider

STREAMS = 3


def test_a_store_at_its_call_limit_is_reported_as_overloaded() -> None:
    with ServeProcess("--max-concurrent-calls", str(STREAMS)) as server:
        client = SessionStoreProvider(server.address, timeout=10.0)
        try:
            session_id = client.create_session()
            record = client.register_variable(session_id, "x", TEXT, "a")
            watches = [
                client.watch_variables(session_id, after_revision=record.revision)
                for _ in range(STREAMS)
            ]  # each dedicated stream is a call in progress
            with pytest.raises(errors.StoreUnavailableError) as refused:
                client.get_variable(session_id, "x")
            assert "is overloaded: too many calls and streams at once" in str(refused.value)
            assert refused.value.details.get("overloaded") is True
            assert "unreachable" not in str(refused.value)
            for watch in watches:
                watch.cancel()
        finally:
            client.close()


def test_tls_to_a_plaintext_store_is_reported_as_tls() -> None:
    with ServeProcess() as server:
        client = SessionStoreProvider(server.address.replace("grpc://", "grpcs://"), timeout=5.0)
        try:
            with pytest.raises(errors.StoreUnavailableError) as failed:
                client.ping()
        finally:
            client.close()
    assert str(failed.value).startswith("TLS with session store"), failed.value
    assert "check that client and server agree on TLS" in str(failed.value)


def test_an_answer_too_large_for_the_client_is_not_called_a_refused_request() -> None:
    with ServeProcess() as server:
        writer = SessionStoreProvider(server.address, timeout=10.0)
        reader = SessionStoreProvider(server.address, timeout=10.0, max_message_bytes=50_000)
        try:
            session_id = writer.create_session()
            writer.register_variable(session_id, "x", TEXT, "a" * 90_000)
            with pytest.raises(errors.LimitExceededError) as too_big:
                reader.get_variable(session_id, "x")
        finally:
            writer.close()
            reader.close()
    assert str(too_big.value).startswith("the answer of session store"), too_big.value
    assert "refused the request" not in str(too_big.value)
    assert too_big.value.details.get("response") is True
