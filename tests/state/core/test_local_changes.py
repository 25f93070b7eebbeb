"""``LocalProvider.changes``: the updates after a revision, as a resuming watch replays them.

On the memory and SQLite engines (the engines a local session or a ``dspex serve --data`` holds
in process); a ``dspex.Remote`` sends them with its calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.bridge import FLOAT

import dspex.errors as errors
from dspex.state import LocalProvider


@pytest.fixture(name="provider", params=["memory", "sqlite"])
def _provider(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalProvider]:
    engine = "memory" if request.param == "memory" else f"sqlite:///{tmp_path}"
    provider = LocalProvider(engine, log_size=5)
    yield provider
    provider.close()


def test_changes_are_the_updates_a_resuming_watch_replays(provider: LocalProvider) -> None:
    session_id = provider.create_session()
    provider.register_variable(session_id, "a", FLOAT, 0.0)
    provider.register_variable(session_id, "b", FLOAT, 0.0)
    provider.set_variable(session_id, "a", 0.5)
    provider.delete_variable(session_id, "b")
    changes = provider.changes(session_id, 1)
    assert [(c.name, c.kind, c.revision) for c in changes] == [
        ("b", "register", 2),
        ("a", "set", 3),
        ("b", "delete", 4),
    ]
    assert changes[1].record.value == 0.5
    with provider.watch_variables(session_id, after_revision=1) as watch:
        replayed = [watch.poll(timeout=5) for _ in changes]
    assert [(u.name, u.kind, u.revision) for u in replayed if u] == [
        (c.name, c.kind, c.revision) for c in changes
    ]
    assert provider.changes(session_id, 4) == []


def test_changes_past_the_kept_log_raise_lagged_with_where_to_resume(
    provider: LocalProvider,
) -> None:
    session_id = provider.create_session()
    provider.register_variable(session_id, "a", FLOAT, 0.0)
    for step in range(1, 10):
        provider.set_variable(session_id, "a", step / 10)
    with pytest.raises(errors.WatchLaggedError, match="include_initial") as raised:
        provider.changes(session_id, 2)
    assert raised.value.resume_from == 5
    assert [c.revision for c in provider.changes(session_id, 5)] == [6, 7, 8, 9, 10]
    with pytest.raises(errors.SessionError, match="no-such"):
        provider.changes("no-such", 0)
