"""Pure hardening structures: dependency DAG, lock table and access policy."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dspex import errors
from dspex.state.core import locks as _locks
from dspex.state.core.access import AccessPolicy
from dspex.state.core.dependencies import DependencyGraph

NAMES = st.sampled_from(list("abcdefg"))


@given(st.lists(st.tuples(NAMES, NAMES), max_size=30))
def test_graph_stays_acyclic_and_orders_dependents(edges: list[tuple[str, str]]) -> None:
    graph = DependencyGraph()
    for up, down in edges:
        try:
            graph.add(up, down)
        except errors.CycleError as exc:
            cycle = exc.cycle
            # The refused edge closes the cycle; every other step is an existing edge.
            assert cycle[0] == cycle[-1] == up
            assert cycle[1] == down
            existing = set(graph.edges())
            assert all(step in existing for step in itertools.pairwise(cycle[1:]))
    for name in "abcdefg":
        order = graph.dependents(name)
        assert name not in order
        position = {n: i for i, n in enumerate(order)}
        for up, down in graph.edges():
            if up in position and down in position:
                assert position[up] < position[down]


def test_cycle_error_names_the_cycle() -> None:
    graph = DependencyGraph()
    graph.add("a", "b")
    graph.add("b", "c")
    with pytest.raises(errors.CycleError, match="c -> a -> b -> c") as info:
        graph.add("c", "a")
    assert info.value.cycle == ["c", "a", "b", "c"]
    assert graph.edges() == [("a", "b"), ("b", "c")]


def test_dependents_are_topological() -> None:
    graph = DependencyGraph()
    for up, down in [("a", "b"), ("b", "c"), ("a", "d"), ("d", "c"), ("x", "a")]:
        graph.add(up, down)
    assert graph.dependents("a") == ["b", "d", "c"]
    graph.remove("d")
    assert graph.dependents("a") == ["b", "c"]


def test_lock_owner_only_and_lease_expiry() -> None:
    lock = _locks.acquire(None, "t", owner="o1", optimizer_id="grid", lease=10, now=0)
    assert lock["owner"] == _locks.owner_digest("o1") and "o1" not in lock.values()
    with pytest.raises(errors.LockedError, match="grid"):
        _locks.check_write(lock, "t", "o2", now=1)
    with pytest.raises(errors.LockedError, match="grid"):
        _locks.check_write(lock, "t", None, now=1)
    with pytest.raises(errors.LockedError, match="only its holder"):
        _locks.release(lock, "t", "o2", now=1)
    with pytest.raises(errors.LockedError):
        _locks.acquire(lock, "t", owner="o2", optimizer_id="rand", lease=10, now=2)
    _locks.check_write(lock, "t", "o1", now=2)
    _locks.check_write(lock, "t", "o2", now=11)  # lease ran out
    assert _locks.holder(lock, now=11) is None
    with pytest.raises(errors.LockedError, match="not locked"):
        _locks.renew(lock, "t", "o1", now=11, progress=None)


def test_lock_preempt_renew_and_progress() -> None:
    lock = _locks.acquire(None, "t", owner="o1", optimizer_id="grid", lease=10, now=0)
    lock = _locks.renew(lock, "t", "o1", now=5, progress={"iteration": 3, "best_score": 0.5})
    assert lock["expires_at"] == 15 and lock["progress"]["iteration"] == 3
    again = _locks.acquire(lock, "t", owner="o1", optimizer_id="grid", lease=10, now=6)
    assert again["progress"]["best_score"] == 0.5 and again["acquired_at"] == 0
    taken = _locks.acquire(
        lock, "t", owner="o2", optimizer_id="rand", lease=10, now=7, preempt=True
    )
    assert taken["optimizer_id"] == "rand" and taken["progress"] == {}
    with pytest.raises(errors.VariableValueError, match="positive"):
        _locks.acquire(None, "t", owner="o1", optimizer_id="grid", lease=0, now=0)


def _policy(tmp_path: Path) -> AccessPolicy:
    path = tmp_path / "auth.json"
    path.write_text(
        json.dumps(
            {
                "principals": {
                    "opt": {"token": "opt-secret"},
                    "worker": {"token_sha256": hashlib.sha256(b"w-secret").hexdigest()},
                },
                "rules": [
                    {"principal": "opt", "sessions": "@own", "allow": ["read", "write"]},
                    {
                        "principal": "worker",
                        "sessions": "s-*",
                        "variables": "temp*",
                        "allow": ["read"],
                    },
                ],
            }
        )
    )
    return AccessPolicy.from_file(path)


def test_policy_authenticates_and_denies_by_default(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    assert policy.authenticate("opt-secret") == "opt"
    assert policy.authenticate("w-secret") == "worker"
    with pytest.raises(errors.UnauthenticatedError):
        policy.authenticate("nope")
    with pytest.raises(errors.UnauthenticatedError):
        policy.authenticate(None)
    policy.check("opt", "write", "mine", owned=True, variable="x")
    with pytest.raises(errors.PermissionDeniedError):
        policy.check("opt", "write", "theirs", owned=False, variable="x")
    policy.check("worker", "read", "s-1", owned=False, variable="temperature")
    for permission, variable in [("write", "temperature"), ("read", "model")]:
        with pytest.raises(errors.PermissionDeniedError):
            policy.check("worker", permission, "s-1", owned=False, variable=variable)


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"principals": {"a": {}}}', '{"principals": {}, "rules": [{}]}'],
)
def test_policy_file_errors_are_clear(tmp_path: Path, content: str) -> None:
    path = tmp_path / "auth.json"
    path.write_text(content)
    with pytest.raises(errors.ConstraintError, match="auth file"):
        AccessPolicy.from_file(path)
