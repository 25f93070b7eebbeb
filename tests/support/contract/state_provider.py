"""The shared StateProvider contract: one class every backend kind must pass.

``StateProviderContract`` uses only the methods of :class:`dspex.state.StateProvider`, never a
backend's internals, so it runs unchanged against the in-process provider and the session store.
A concrete test class supplies two fixtures: ``provider`` (a fresh provider of one kind) and
``make_provider`` (``make_provider(**options)`` is a context manager yielding a fresh provider of
the same kind built with ``history_size``/``log_size``/``watch_queue_size`` options).

Waits are ``watch.poll(timeout=5)``: generous enough for a loaded machine and a real server,
never a timing assertion. Each error test also checks that stored state did not change.
"""

from __future__ import annotations

import contextlib
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dspex import errors
from dspex._model import Choice, VariableRecord, VariableSpec, VariableUpdate, make_spec
from dspex.state import StateProvider, VariableWatch

WAIT = 5.0
"""Seconds to wait for an expected watch update (a bound, not a speed requirement)."""

QUIET = 0.3
"""Seconds to wait before concluding that nothing more is delivered."""

MakeProvider = Callable[..., AbstractContextManager[StateProvider]]

FLOAT = make_spec(float, min=0.0, max=2.0)
TEXT = make_spec(str)


class TypeCase(NamedTuple):
    """One variable type: a spec, two good values with their canonical forms, two bad ones."""

    spec: VariableSpec
    initial: Any
    new: Any
    canonical_new: Any
    bad_value: Any  # breaks a constraint -> VariableValueError
    wrong_type: Any  # wrong kind of value -> VariableTypeError


TYPE_CASES: dict[str, TypeCase] = {
    "float": TypeCase(FLOAT, 0.7, 1, 1.0, 2.5, "0.7"),
    "integer": TypeCase(make_spec(int, min=0, max=10), 3, 4.0, 4, 11, "3"),
    "string": TypeCase(
        make_spec(str, min_length=1, max_length=8, pattern="[a-z]+"),
        "abc",
        "xyz",
        "xyz",
        "ABC",
        5,
    ),
    "boolean": TypeCase(make_spec(bool), True, False, False, None, 1),
    "choice": TypeCase(make_spec(Choice("a", "b")), "a", "b", "b", "c", ["a"]),
    "module": TypeCase(
        make_spec("module", choices=["Predict", "ChainOfThought"]),
        "Predict",
        "ChainOfThought",
        "ChainOfThought",
        "ReAct",
        "",
    ),
    "embedding": TypeCase(
        make_spec("embedding", dimensions=3),
        [0.1, 0.2, 0.3],
        np.array([1, 2, 3], dtype=np.float32),
        (1.0, 2.0, 3.0),
        [0.1, 0.2],
        "abc",
    ),
    "tensor": TypeCase(
        make_spec("tensor", shape=[2, None], dtype="float32"),
        np.zeros((2, 3), np.float32),
        [[1.5, 2.5], [3.5, 4.5]],
        np.array([[1.5, 2.5], [3.5, 4.5]], np.float32),
        np.zeros((3, 3), np.float32),
        "abc",
    ),
    "json": TypeCase(
        make_spec(dict, max_length=200),
        {"demos": [{"q": "a", "a": "b"}]},
        ({"k": (1, 2)}, None),
        [{"k": [1, 2]}, None],
        {"x": "y" * 300},
        {1, 2},
    ),
}
# `None` for boolean's bad_value: booleans have no value rules, so the bad value is a type error.


def same_value(left: Any, right: Any) -> bool:
    """Value equality that also works for numpy arrays (dtype, shape and bytes)."""
    if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
        return (
            isinstance(left, np.ndarray)
            and isinstance(right, np.ndarray)
            and left.dtype == right.dtype
            and left.shape == right.shape
            and left.tobytes() == right.tobytes()
        )
    return (bool(left == right) and type(left) is type(right)) or _same_container(left, right)


def _same_container(left: Any, right: Any) -> bool:
    # A JSON value may come back as dict/list or as read-only subclasses of them.
    if isinstance(left, dict) and isinstance(right, dict):
        return left == right
    if isinstance(left, list) and isinstance(right, list):
        return left == right
    return False


def value_key(value: Any) -> Any:
    """A hashable, comparable form of a value (tensors as dtype/shape/bytes)."""
    if isinstance(value, np.ndarray):
        return ("tensor", str(value.dtype), value.shape, value.tobytes())
    return ("value", repr(value))


def state_of(provider: StateProvider, session_id: str) -> tuple[Any, ...]:
    """Everything observable about a session: revision, records and histories."""
    info = provider.get_session(session_id)
    records = []
    for record in provider.list_variables(session_id):
        history = provider.get_history(session_id, record.name)
        records.append(
            (
                record.name,
                record.spec,
                record.version,
                record.revision,
                value_key(record.value),
                [(kept.version, value_key(kept.value)) for kept in history],
            )
        )
    return (info.revision, info.variable_count, records)


def next_update(watch: VariableWatch) -> VariableUpdate:
    """The next update, failing the test if none arrives within WAIT seconds."""
    update = watch.poll(timeout=WAIT)
    assert update is not None, f"no watch update within {WAIT}s"
    return update


def take(watch: VariableWatch, count: int) -> list[VariableUpdate]:
    """The next ``count`` updates."""
    return [next_update(watch) for _ in range(count)]


def assert_quiet(watch: VariableWatch) -> None:
    """Nothing more is delivered."""
    assert watch.poll(timeout=QUIET) is None


@contextlib.contextmanager
def unchanged(provider: StateProvider, session_id: str) -> Iterator[None]:
    """Assert that the block leaves the session exactly as it found it."""
    before = state_of(provider, session_id)
    yield
    assert state_of(provider, session_id) == before, "a failed call changed stored state"


class StateProviderContract:
    """Every documented behaviour and every ``Raises:`` of the StateProvider protocol."""

    # -- helpers ----------------------------------------------------------------------------

    @pytest.fixture(name="session_id")
    def _session_id(self, provider: StateProvider) -> str:
        return provider.create_session()

    @staticmethod
    def closed_session(provider: StateProvider) -> str:
        session_id = provider.create_session()
        provider.register_variable(session_id, "x", FLOAT, 0.5)
        provider.close_session(session_id)
        return session_id

    # -- sessions ---------------------------------------------------------------------------

    def test_create_session_returns_a_new_random_id(self, provider: StateProvider) -> None:
        first, second = provider.create_session(), provider.create_session()
        assert isinstance(first, str) and first
        assert first != second
        assert provider.get_session(first).revision == 0
        assert provider.get_session(first).variable_count == 0

    def test_create_session_with_existing_id_joins_it(self, provider: StateProvider) -> None:
        session_id = provider.create_session("shared-session")
        assert session_id == "shared-session"
        provider.register_variable(session_id, "x", FLOAT, 0.5)
        assert provider.create_session("shared-session") == "shared-session"
        assert provider.get_variable(session_id, "x").value == 0.5
        assert provider.get_session(session_id).revision == 1

    def test_create_session_beyond_max_sessions_raises_limit_exceeded(
        self, make_provider: MakeProvider
    ) -> None:
        with make_provider(max_sessions=2) as provider:
            first = provider.create_session()
            provider.create_session()
            with pytest.raises(errors.LimitExceededError, match="limit 2"):
                provider.create_session()
            assert provider.create_session(first) == first  # joining is not a new session
            assert len(provider.list_sessions()) == 2
            provider.close_session(first)
            provider.create_session()  # closing one frees its place

    def test_close_is_idempotent(self, make_provider: MakeProvider) -> None:
        with make_provider() as provider:
            provider.create_session()
            provider.close()
            provider.close()

    def test_closing_the_provider_ends_its_watches_normally(
        self, make_provider: MakeProvider
    ) -> None:
        with make_provider() as provider:
            session_id = provider.create_session()
            provider.register_variable(session_id, "x", FLOAT, 0.1)
            watches = [
                provider.watch_variables(session_id),
                provider.watch_variables(session_id, include_initial=True),
            ]
            assert next_update(watches[1]).name == "x"
            rest: list[list[VariableUpdate]] = []
            consumers = [
                threading.Thread(target=lambda w=w: rest.append(list(w)), daemon=True)
                for w in watches
            ]
            for consumer in consumers:
                consumer.start()
            time.sleep(QUIET)  # both consumers blocked on their watch
            provider.close()  # from another thread than theirs, not watch.cancel()
            for consumer in consumers:
                consumer.join(WAIT)
            assert not any(consumer.is_alive() for consumer in consumers)
            assert rest == [[], []] and all(watch.closed for watch in watches)

    def test_get_session_reports_revision_and_variable_count(
        self, provider: StateProvider, session_id: str
    ) -> None:
        before = time.time()
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        provider.register_variable(session_id, "b", FLOAT, 0.2)
        provider.set_variable(session_id, "a", 0.3)
        info = provider.get_session(session_id)
        assert info.session_id == session_id
        assert info.revision == 3
        assert info.variable_count == 2
        assert info.created_at <= time.time() + 5
        assert info.last_heartbeat >= info.created_at - 5
        assert before - 60 < info.created_at

    def test_get_session_unknown_raises_session_not_found(self, provider: StateProvider) -> None:
        with pytest.raises(errors.SessionNotFoundError, match="no-such-session") as caught:
            provider.get_session("no-such-session")
        assert isinstance(caught.value, LookupError)
        assert caught.value.session_id == "no-such-session"

    def test_list_sessions_lists_open_sessions_only(self, provider: StateProvider) -> None:
        kept = provider.create_session()
        closed = self.closed_session(provider)
        ids = [info.session_id for info in provider.list_sessions()]
        assert kept in ids
        assert closed not in ids

    def test_heartbeat_moves_last_heartbeat_forward(
        self, provider: StateProvider, session_id: str
    ) -> None:
        first = provider.get_session(session_id).last_heartbeat
        time.sleep(0.02)
        provider.heartbeat(session_id)
        assert provider.get_session(session_id).last_heartbeat > first

    def test_create_session_keeps_ttl(self, provider: StateProvider) -> None:
        session_id = provider.create_session(ttl=600.0)
        assert provider.get_session(session_id).ttl == 600.0

    def test_close_session_removes_variables(self, provider: StateProvider) -> None:
        session_id = self.closed_session(provider)
        other = provider.create_session()
        with pytest.raises(errors.VariableNotFoundError):
            provider.get_variable(other, "x")
        with pytest.raises(errors.SessionClosedError):
            provider.get_variable(session_id, "x")

    def test_close_session_ends_its_watches_normally(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "x", FLOAT, 0.5)
        with provider.watch_variables(session_id) as watch:
            provider.close_session(session_id)
            deadline = time.monotonic() + WAIT
            while not watch.closed and time.monotonic() < deadline:
                assert watch.poll(timeout=0.1) is None
            assert watch.closed

    @pytest.mark.parametrize(
        "call",
        [
            pytest.param(lambda p, s: p.get_session(s), id="get_session"),
            pytest.param(lambda p, s: p.heartbeat(s), id="heartbeat"),
            pytest.param(lambda p, s: p.close_session(s), id="close_session"),
            pytest.param(lambda p, s: p.register_variable(s, "y", FLOAT, 0.1), id="register"),
            pytest.param(lambda p, s: p.get_variable(s, "x"), id="get_variable"),
            pytest.param(lambda p, s: p.get_variables(s, ["x"]), id="get_variables"),
            pytest.param(lambda p, s: p.set_variable(s, "x", 0.1), id="set_variable"),
            pytest.param(lambda p, s: p.update_variables(s, {"x": 0.1}), id="update_variables"),
            pytest.param(lambda p, s: p.list_variables(s), id="list_variables"),
            pytest.param(lambda p, s: p.delete_variable(s, "x"), id="delete_variable"),
            pytest.param(lambda p, s: p.get_history(s, "x"), id="get_history"),
            pytest.param(lambda p, s: p.rollback_variable(s, "x", 1), id="rollback_variable"),
            pytest.param(lambda p, s: p.watch_variables(s), id="watch_variables"),
        ],
    )
    def test_every_verb_on_a_missing_or_closed_session_raises(
        self, provider: StateProvider, call: Callable[[StateProvider, str], Any]
    ) -> None:
        with pytest.raises(errors.SessionNotFoundError, match="never-created"):
            call(provider, "never-created")
        closed = self.closed_session(provider)
        with pytest.raises(errors.SessionClosedError, match=closed) as caught:
            call(provider, closed)
        assert caught.value.session_id == closed

    # -- register ---------------------------------------------------------------------------

    def test_metadata_is_kept_as_a_json_object_and_anything_else_is_refused(
        self, provider: StateProvider, session_id: str
    ) -> None:
        """Every provider keeps what a session store returns: in-process metadata too."""
        record = provider.register_variable(
            session_id, "m", FLOAT, 0.5, metadata={"shape": np.arange(2), 3: "three"}
        )
        assert dict(record.metadata) == {"shape": [0, 1], "3": "three"}
        assert provider.get_variable(session_id, "m").metadata == record.metadata
        with pytest.raises(errors.VariableValueError, match="datetime is not JSON serializable"):
            provider.register_variable(
                session_id, "when", FLOAT, 0.5, metadata={"at": datetime.now(UTC)}
            )
        with pytest.raises(errors.VariableNotFoundError):
            provider.get_variable(session_id, "when")  # nothing half applied
        with pytest.raises(errors.VariableValueError, match="Out of range float"):
            provider.register_variable(session_id, "nan", FLOAT, 0.5, metadata={"x": float("nan")})
        with pytest.raises(errors.VariableValueError, match="must be a mapping"):
            provider.register_variable(session_id, "list", FLOAT, 0.5, metadata=[])  # type: ignore[arg-type]

    def test_register_variable_returns_version_one(
        self, provider: StateProvider, session_id: str
    ) -> None:
        before = time.time()
        record = provider.register_variable(
            session_id, "temperature", FLOAT, 0.7, metadata={"description": "sampling"}
        )
        assert record.name == "temperature"
        assert record.spec == FLOAT
        assert record.type == "float"
        assert dict(record.constraints) == {"min": 0.0, "max": 2.0}
        assert record.value == 0.7
        assert record.version == 1
        assert record.revision == 1
        assert before - 5 <= record.updated_at <= time.time() + 5
        assert isinstance(record.writer, str) and record.writer
        assert dict(record.metadata) == {"description": "sampling"}
        assert record.stale is False
        assert provider.get_variable(session_id, "temperature") == record

    def test_register_variable_same_spec_returns_existing(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "t", FLOAT, 0.7)
        current = provider.set_variable(session_id, "t", 0.9)
        with unchanged(provider, session_id):
            again = provider.register_variable(
                session_id, "t", make_spec(float, max=2.0, min=0.0), 0.1
            )
        assert again == current
        assert again.value == 0.9

    def test_register_variable_again_still_checks_the_initial_value(
        self, provider: StateProvider, session_id: str
    ) -> None:
        """An equal spec returns the record, but a bad initial value is refused on every kind
        (a session-store client cannot even send ``{1, 2}``; the local provider returned the
        record for it)."""
        provider.register_variable(session_id, "t", FLOAT, 0.7)
        with unchanged(provider, session_id):
            with pytest.raises(errors.VariableTypeError) as caught:
                provider.register_variable(session_id, "t", FLOAT, {1, 2})
            assert caught.value.details == {"name": "t", "value": "{1, 2}"}
            with pytest.raises(errors.VariableValueError, match=r"3\.5.*max=2\.0"):
                provider.register_variable(session_id, "t", FLOAT, 3.5)

    def test_register_variable_checks_metadata_before_the_value_and_the_session(
        self, provider: StateProvider, session_id: str
    ) -> None:
        """Metadata no store can keep is the error named first, wherever the session lives (a
        client refuses it before sending; the local provider named the value or the session)."""
        bad = {"tags": {1, 2}}
        with unchanged(provider, session_id):
            with pytest.raises(errors.VariableValueError, match="metadata") as caught:
                provider.register_variable(session_id, "t", FLOAT, "hot", metadata=bad)
            assert not isinstance(caught.value, errors.VariableTypeError)
        closed = self.closed_session(provider)
        with pytest.raises(errors.VariableValueError, match="metadata"):
            provider.register_variable(closed, "t", FLOAT, 0.5, metadata=bad)

    @pytest.mark.parametrize(
        "other_spec",
        [make_spec(float, min=0.0, max=3.0), make_spec(int), make_spec(str)],
        ids=["other-constraints", "other-type", "string"],
    )
    def test_register_variable_different_spec_raises_exists(
        self, provider: StateProvider, session_id: str, other_spec: VariableSpec
    ) -> None:
        provider.register_variable(session_id, "t", FLOAT, 0.7)
        with unchanged(provider, session_id), pytest.raises(errors.VariableExistsError) as caught:
            provider.register_variable(session_id, "t", other_spec, 1)
        assert "'t'" in str(caught.value)
        assert caught.value.name == "t"

    def test_register_variable_bad_value_raises_and_registers_nothing(
        self, provider: StateProvider, session_id: str
    ) -> None:
        with unchanged(provider, session_id):
            with pytest.raises(errors.VariableValueError, match=r"'t'.*3\.5.*max=2\.0") as caught:
                provider.register_variable(session_id, "t", FLOAT, 3.5)
            assert isinstance(caught.value, ValueError)
            assert not isinstance(caught.value, errors.VariableTypeError)
        with pytest.raises(errors.VariableNotFoundError):
            provider.get_variable(session_id, "t")

    def test_register_variable_wrong_type_raises_type_error(
        self, provider: StateProvider, session_id: str
    ) -> None:
        with (
            unchanged(provider, session_id),
            pytest.raises(errors.VariableTypeError, match=r"'t'.*'hot'.*float") as caught,
        ):
            provider.register_variable(session_id, "t", FLOAT, "hot")
        assert isinstance(caught.value, TypeError)
        assert isinstance(caught.value, errors.VariableValueError)

    @pytest.mark.parametrize(
        "spec",
        [
            VariableSpec("float", {"min": 2.0, "max": 1.0}),
            VariableSpec("float", {"choices": ("a",)}),
            VariableSpec("no-such-type", {}),
            VariableSpec("choice", {}),
            VariableSpec("embedding", {"dimensions": -1}),
            VariableSpec("tensor", {"dtype": "not-a-dtype"}),
        ],
        ids=["min>max", "foreign-key", "unknown-type", "no-choices", "bad-dims", "bad-dtype"],
    )
    def test_register_variable_invalid_constraint_spec_raises(
        self, provider: StateProvider, session_id: str, spec: VariableSpec
    ) -> None:
        with unchanged(provider, session_id), pytest.raises(errors.ConstraintError) as caught:
            provider.register_variable(session_id, "v", spec, 1.0)
        assert isinstance(caught.value, ValueError)

    def test_register_variable_invalid_pattern_raises_pattern_error(
        self, provider: StateProvider, session_id: str
    ) -> None:
        spec = VariableSpec("string", {"pattern": "([a-z"})
        with unchanged(provider, session_id), pytest.raises(errors.PatternError, match=r"\(\[a-z"):
            provider.register_variable(session_id, "v", spec, "abc")

    @pytest.mark.parametrize("name", ["", "tab\tname", "x" * 257])
    def test_register_variable_bad_name_raises(
        self, provider: StateProvider, session_id: str, name: str
    ) -> None:
        with unchanged(provider, session_id), pytest.raises(errors.VariableValueError):
            provider.register_variable(session_id, name, FLOAT, 0.5)

    # -- get --------------------------------------------------------------------------------

    def test_get_variable_unknown_raises_not_found(
        self, provider: StateProvider, session_id: str
    ) -> None:
        with pytest.raises(errors.VariableNotFoundError, match="'missing'") as caught:
            provider.get_variable(session_id, "missing")
        assert isinstance(caught.value, LookupError)
        assert caught.value.name == "missing"

    def test_get_variables_reads_all_names(self, provider: StateProvider, session_id: str) -> None:
        for index, name in enumerate("abc"):
            provider.register_variable(session_id, name, FLOAT, index / 10)
        records = provider.get_variables(session_id, ["c", "a"])
        assert set(records) == {"a", "c"}
        assert records["a"].value == 0.0
        assert records["c"].value == 0.2
        assert provider.get_variables(session_id, []) == {}

    def test_get_variables_unknown_name_raises_not_found(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        with pytest.raises(errors.VariableNotFoundError, match="'b'"):
            provider.get_variables(session_id, ["a", "b"])

    def test_sessions_are_isolated(self, provider: StateProvider) -> None:
        first, second = provider.create_session(), provider.create_session()
        provider.register_variable(first, "x", FLOAT, 0.1)
        provider.register_variable(second, "x", FLOAT, 0.2)
        provider.set_variable(first, "x", 0.3)
        assert provider.get_variable(first, "x").value == 0.3
        assert provider.get_variable(second, "x").value == 0.2
        assert provider.get_session(second).revision == 1

    # -- set --------------------------------------------------------------------------------

    def test_set_variable_bumps_version_and_session_revision(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        provider.register_variable(session_id, "b", FLOAT, 0.1)
        first = provider.set_variable(session_id, "a", 0.2)
        second = provider.set_variable(session_id, "b", 0.3)
        third = provider.set_variable(session_id, "a", 0.4)
        assert (first.version, first.revision) == (2, 3)
        assert (second.version, second.revision) == (2, 4)
        assert (third.version, third.revision) == (3, 5)
        assert provider.get_variable(session_id, "a") == third
        assert provider.get_session(session_id).revision == 5

    def test_set_variable_same_value_is_still_a_new_version(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        assert provider.set_variable(session_id, "a", 0.1).version == 2

    def test_set_variable_with_current_expected_version_succeeds(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        record = provider.set_variable(session_id, "a", 0.2, expected_version=1)
        assert record.version == 2

    def test_set_variable_stale_expected_version_raises_conflict(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        provider.set_variable(session_id, "a", 0.2)
        with (
            unchanged(provider, session_id),
            pytest.raises(errors.VersionConflictError, match=r"'a'.*version 2.*1") as caught,
        ):
            provider.set_variable(session_id, "a", 0.3, expected_version=1)
        assert caught.value.name == "a"
        assert caught.value.version == 2
        assert caught.value.expected_version == 1

    def test_set_variable_unknown_raises_not_found(
        self, provider: StateProvider, session_id: str
    ) -> None:
        with unchanged(provider, session_id), pytest.raises(errors.VariableNotFoundError):
            provider.set_variable(session_id, "missing", 0.1)

    @pytest.mark.parametrize("value", [2.5, -0.1, float("nan"), float("inf")])
    def test_set_variable_out_of_rule_raises_and_changes_nothing(
        self, provider: StateProvider, session_id: str, value: float
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        with provider.watch_variables(session_id) as watch:
            with (
                unchanged(provider, session_id),
                pytest.raises(errors.VariableValueError) as caught,
            ):
                provider.set_variable(session_id, "a", value)
            assert_quiet(watch)
        assert "'a'" in str(caught.value)
        assert repr(value) in str(caught.value)

    @pytest.mark.parametrize("value", ["0.5", True, None, [0.5]])
    def test_set_variable_wrong_type_raises_type_error(
        self, provider: StateProvider, session_id: str, value: Any
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        with unchanged(provider, session_id), pytest.raises(errors.VariableTypeError, match="'a'"):
            provider.set_variable(session_id, "a", value)

    # -- update -----------------------------------------------------------------------------

    def _three(self, provider: StateProvider, session_id: str) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        provider.register_variable(session_id, "b", FLOAT, 0.2)
        provider.register_variable(session_id, "c", TEXT, "c")

    @pytest.mark.parametrize("atomic", [True, False])
    def test_update_variables_applies_every_name(
        self, provider: StateProvider, session_id: str, atomic: bool
    ) -> None:
        self._three(provider, session_id)
        results = provider.update_variables(
            session_id, {"c": "new", "a": 1, "b": 0.5}, atomic=atomic
        )
        assert list(results) == ["c", "a", "b"]
        records = {name: result for name, result in results.items()}
        assert all(isinstance(r, VariableRecord) for r in records.values())
        assert provider.get_variable(session_id, "a").value == 1.0
        assert provider.get_variable(session_id, "c").value == "new"
        assert sorted(r.revision for r in records.values()) == [4, 5, 6]  # type: ignore[union-attr]
        assert provider.get_session(session_id).revision == 6

    def test_update_variables_atomic_failure_applies_nothing(
        self, provider: StateProvider, session_id: str
    ) -> None:
        self._three(provider, session_id)
        values = {"a": 0.5, "b": 9.0, "c": 7, "missing": 1.0}
        with unchanged(provider, session_id):
            results = provider.update_variables(session_id, values, atomic=True)
        assert list(results) == ["a", "b", "c", "missing"]
        assert isinstance(results["a"], errors.BatchUpdateError)
        assert "not applied" in str(results["a"])
        assert isinstance(results["b"], errors.VariableValueError)
        assert isinstance(results["c"], errors.VariableTypeError)
        assert isinstance(results["missing"], errors.VariableNotFoundError)

    def test_update_variables_atomic_version_conflict_applies_nothing(
        self, provider: StateProvider, session_id: str
    ) -> None:
        self._three(provider, session_id)
        provider.set_variable(session_id, "b", 0.3)
        with unchanged(provider, session_id):
            results = provider.update_variables(
                session_id, {"a": 0.5, "b": 0.6}, atomic=True, expected_versions={"a": 1, "b": 1}
            )
        assert isinstance(results["a"], errors.BatchUpdateError)
        assert isinstance(results["b"], errors.VersionConflictError)

    def test_update_variables_non_atomic_applies_the_valid_names(
        self, provider: StateProvider, session_id: str
    ) -> None:
        self._three(provider, session_id)
        results = provider.update_variables(
            session_id, {"a": 0.5, "b": 9.0, "c": "ok"}, atomic=False, expected_versions={"c": 1}
        )
        assert isinstance(results["a"], VariableRecord) and results["a"].version == 2
        assert isinstance(results["b"], errors.VariableValueError)
        assert isinstance(results["c"], VariableRecord) and results["c"].value == "ok"
        assert provider.get_variable(session_id, "a").value == 0.5
        assert provider.get_variable(session_id, "b").value == 0.2
        assert provider.get_session(session_id).revision == 5

    def test_update_variables_refuses_a_value_no_store_can_carry_per_name(
        self, provider: StateProvider, session_id: str
    ) -> None:
        """A value that cannot be encoded fails its own name, as a bad value does; through a
        store the whole call raised, so the other names of a non-atomic batch were lost."""
        self._three(provider, session_id)
        results = provider.update_variables(session_id, {"a": 0.5, "b": {1, 2}}, atomic=False)
        assert isinstance(results["a"], VariableRecord) and results["a"].version == 2
        assert isinstance(results["b"], errors.VariableTypeError)
        assert results["b"].details == {"name": "b", "value": "{1, 2}"}
        assert provider.get_variable(session_id, "a").value == 0.5
        with unchanged(provider, session_id):
            results = provider.update_variables(session_id, {"a": 0.7, "b": {1, 2}}, atomic=True)
        assert list(results) == ["a", "b"]
        assert isinstance(results["a"], errors.BatchUpdateError)
        assert isinstance(results["b"], errors.VariableTypeError)
        closed = self.closed_session(provider)
        with pytest.raises(errors.SessionClosedError):
            provider.update_variables(closed, {"x": {1, 2}}, atomic=True)

    def test_update_variables_empty_batch_changes_nothing(
        self, provider: StateProvider, session_id: str
    ) -> None:
        self._three(provider, session_id)
        with unchanged(provider, session_id):
            assert provider.update_variables(session_id, {}, atomic=True) == {}

    # -- list and delete --------------------------------------------------------------------

    def test_list_variables_sorted_by_name_and_filtered_by_glob(
        self, provider: StateProvider, session_id: str
    ) -> None:
        for name in ["lm.temperature", "b", "lm.model", "a", "lm2"]:
            provider.register_variable(session_id, name, FLOAT, 0.1)
        names = [r.name for r in provider.list_variables(session_id)]
        assert names == ["a", "b", "lm.model", "lm.temperature", "lm2"]
        assert [r.name for r in provider.list_variables(session_id, "lm.*")] == [
            "lm.model",
            "lm.temperature",
        ]
        assert [r.name for r in provider.list_variables(session_id, "?")] == ["a", "b"]
        assert [r.name for r in provider.list_variables(session_id, "[b-l]*")] == [
            "b",
            "lm.model",
            "lm.temperature",
            "lm2",
        ]
        assert provider.list_variables(session_id, "nothing*") == []

    def test_list_variables_of_empty_session_is_empty(
        self, provider: StateProvider, session_id: str
    ) -> None:
        assert provider.list_variables(session_id) == []

    def test_delete_variable_removes_it_and_its_history(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        provider.set_variable(session_id, "a", 0.2)
        provider.delete_variable(session_id, "a")
        with pytest.raises(errors.VariableNotFoundError):
            provider.get_variable(session_id, "a")
        with pytest.raises(errors.VariableNotFoundError):
            provider.get_history(session_id, "a")
        info = provider.get_session(session_id)
        assert (info.revision, info.variable_count) == (3, 0)
        again = provider.register_variable(session_id, "a", make_spec(int), 5)
        assert (again.version, again.revision, again.value) == (1, 4, 5)

    def test_delete_variable_unknown_raises_not_found(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        with unchanged(provider, session_id), pytest.raises(errors.VariableNotFoundError):
            provider.delete_variable(session_id, "b")

    # -- history and rollback ---------------------------------------------------------------

    def test_get_history_lists_versions_oldest_first(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        for value in (0.2, 0.3, 0.4):
            provider.set_variable(session_id, "a", value)
        history = provider.get_history(session_id, "a")
        assert [(r.version, r.value) for r in history] == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]
        assert [r.version for r in provider.get_history(session_id, "a", limit=2)] == [3, 4]
        assert provider.get_history(session_id, "a", limit=0) == []
        assert history[-1] == provider.get_variable(session_id, "a")

    def test_get_history_is_bounded_by_history_size(self, make_provider: MakeProvider) -> None:
        with make_provider(history_size=3) as provider:
            session_id = provider.create_session()
            provider.register_variable(session_id, "a", FLOAT, 0.0)
            for step in range(1, 10):
                provider.set_variable(session_id, "a", step / 10)
            assert [r.version for r in provider.get_history(session_id, "a")] == [8, 9, 10]
            with pytest.raises(errors.VersionNotFoundError, match="version 2"):
                provider.rollback_variable(session_id, "a", 2)

    def test_get_history_unknown_raises_not_found(
        self, provider: StateProvider, session_id: str
    ) -> None:
        with pytest.raises(errors.VariableNotFoundError):
            provider.get_history(session_id, "a")

    def test_rollback_variable_writes_old_value_as_new_version(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        provider.set_variable(session_id, "a", 0.2)
        provider.set_variable(session_id, "a", 0.3)
        with provider.watch_variables(session_id) as watch:
            record = provider.rollback_variable(session_id, "a", 1)
            update = next_update(watch)
        assert (record.value, record.version, record.revision) == (0.1, 4, 4)
        assert (update.kind, update.name, update.revision) == ("rollback", "a", 4)
        assert update.record == record
        assert [r.value for r in provider.get_history(session_id, "a")] == [0.1, 0.2, 0.3, 0.1]

    def test_rollback_variable_unknown_version_raises(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        provider.set_variable(session_id, "a", 0.2)
        with (
            unchanged(provider, session_id),
            pytest.raises(errors.VersionNotFoundError, match=r"'a'.*version 7") as caught,
        ):
            provider.rollback_variable(session_id, "a", 7)
        assert isinstance(caught.value, LookupError)
        assert caught.value.version == 7

    def test_rollback_variable_unknown_name_raises(
        self, provider: StateProvider, session_id: str
    ) -> None:
        with pytest.raises(errors.VariableNotFoundError):
            provider.rollback_variable(session_id, "a", 1)

    # -- watch ------------------------------------------------------------------------------

    def test_watch_variables_delivers_changes_in_revision_order(
        self, provider: StateProvider, session_id: str
    ) -> None:
        with provider.watch_variables(session_id) as watch:
            provider.register_variable(session_id, "a", FLOAT, 0.1)
            provider.register_variable(session_id, "b", TEXT, "x")
            provider.set_variable(session_id, "a", 0.2)
            provider.delete_variable(session_id, "b")
            updates = take(watch, 4)
            assert_quiet(watch)
        assert [(u.revision, u.kind, u.name) for u in updates] == [
            (1, "register", "a"),
            (2, "register", "b"),
            (3, "set", "a"),
            (4, "delete", "b"),
        ]
        assert updates[2].record.value == 0.2
        assert updates[2].record.version == 2
        assert updates[3].record.value == "x"  # a delete carries the last record
        assert watch.last_revision == 4

    def test_watch_variables_filters_by_names(
        self, provider: StateProvider, session_id: str
    ) -> None:
        for name in "abc":
            provider.register_variable(session_id, name, FLOAT, 0.1)
        with provider.watch_variables(session_id, ["a", "c"]) as watch:
            for name in "abcb":
                provider.set_variable(session_id, name, 0.5)
            updates = take(watch, 2)
            assert_quiet(watch)
        assert [(u.name, u.revision) for u in updates] == [("a", 4), ("c", 6)]

    def test_watch_variables_include_initial_sends_current_records_first(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        provider.register_variable(session_id, "b", FLOAT, 0.2)
        provider.set_variable(session_id, "a", 0.3)
        with provider.watch_variables(session_id, include_initial=True) as watch:
            initial = take(watch, 2)
            provider.set_variable(session_id, "b", 0.4)
            change = next_update(watch)
        assert {(u.kind, u.name, u.record.value) for u in initial} == {
            ("initial", "a", 0.3),
            ("initial", "b", 0.2),
        }
        assert (change.kind, change.name, change.revision) == ("set", "b", 4)

    def test_watch_variables_include_initial_respects_names(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        provider.register_variable(session_id, "b", FLOAT, 0.2)
        with provider.watch_variables(session_id, ["b"], include_initial=True) as watch:
            assert [(u.kind, u.name) for u in take(watch, 1)] == [("initial", "b")]
            assert_quiet(watch)

    def test_watch_variables_after_revision_resumes_without_gap_or_duplicate(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.0)
        provider.register_variable(session_id, "b", FLOAT, 0.0)
        with provider.watch_variables(session_id) as watch:
            for step in range(1, 4):
                provider.set_variable(session_id, "a", step / 10)
            seen = take(watch, 2)  # the reader stops early, as if disconnected
        resume_from = watch.last_revision
        assert resume_from == seen[-1].revision == 4
        for step in range(4, 6):
            provider.set_variable(session_id, "b", step / 10)
        with provider.watch_variables(session_id, after_revision=resume_from) as resumed:
            replayed = take(resumed, 3)
            provider.set_variable(session_id, "a", 1.0)
            live = next_update(resumed)
            assert_quiet(resumed)
        revisions = [u.revision for u in [*seen, *replayed, live]]
        assert revisions == list(range(3, 9))
        assert [(u.kind, u.name) for u in replayed] == [("set", "a"), ("set", "b"), ("set", "b")]

    def test_watch_variables_after_revision_with_names_replays_only_those(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.0)
        provider.register_variable(session_id, "b", FLOAT, 0.0)
        for name in "abab":
            provider.set_variable(session_id, name, 0.5)
        with provider.watch_variables(session_id, ["b"], after_revision=2) as watch:
            assert [(u.name, u.revision) for u in take(watch, 2)] == [("b", 4), ("b", 6)]
            assert_quiet(watch)

    def test_watch_variables_after_current_revision_replays_nothing(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.0)
        with provider.watch_variables(session_id, after_revision=1) as watch:
            assert_quiet(watch)
            provider.set_variable(session_id, "a", 0.1)
            assert next_update(watch).revision == 2

    def test_watch_variables_after_revision_older_than_log_raises_lagged(
        self, make_provider: MakeProvider
    ) -> None:
        with make_provider(log_size=5) as provider:
            session_id = provider.create_session()
            provider.register_variable(session_id, "a", FLOAT, 0.0)
            for step in range(1, 10):
                provider.set_variable(session_id, "a", step / 10)
            with pytest.raises(errors.WatchLaggedError, match="include_initial"):
                provider.watch_variables(session_id, after_revision=2)
            with provider.watch_variables(session_id, after_revision=5) as watch:
                assert [u.revision for u in take(watch, 5)] == [6, 7, 8, 9, 10]

    def test_watch_variables_after_future_revision_raises_lagged(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.0)
        with pytest.raises(errors.WatchLaggedError):
            provider.watch_variables(session_id, after_revision=50)

    def test_watch_variables_ends_on_context_exit(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.0)
        with provider.watch_variables(session_id) as watch:
            provider.set_variable(session_id, "a", 0.1)
            assert next_update(watch).revision == 2
        assert watch.closed
        provider.set_variable(session_id, "a", 0.2)
        assert watch.poll(timeout=QUIET) is None
        assert list(watch) == []

    def test_watch_variables_cancel_wakes_a_blocked_reader(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.0)
        received: list[VariableUpdate] = []
        with provider.watch_variables(session_id) as watch:
            reader = threading.Thread(target=lambda: received.extend(watch), daemon=True)
            reader.start()
            provider.set_variable(session_id, "a", 0.1)
            deadline = time.monotonic() + WAIT
            while not received and time.monotonic() < deadline:
                time.sleep(0.01)
        reader.join(timeout=WAIT)
        assert not reader.is_alive()
        assert [u.revision for u in received] == [2]

    def test_watch_variables_lagged_watcher_resumes_without_loss(
        self, make_provider: MakeProvider
    ) -> None:
        total = 2000
        padding = "p" * 1000  # large enough to fill transport buffers of a remote backend
        with make_provider(watch_queue_size=4) as provider:
            session_id = provider.create_session()
            provider.register_variable(session_id, "a", TEXT, "start")
            seen: list[int] = []
            with provider.watch_variables(session_id, ["a"]) as watch:
                for step in range(total):
                    provider.set_variable(session_id, "a", f"{step:05d}{padding}")
                with pytest.raises(errors.WatchLaggedError) as caught:
                    while (update := watch.poll(timeout=WAIT)) is not None:
                        seen.append(update.revision)
                assert watch.closed
            resume_from = caught.value.resume_from
            assert resume_from == (seen[-1] if seen else 1)
            with provider.watch_variables(session_id, ["a"], after_revision=resume_from) as again:
                while len(seen) < total:
                    seen.append(next_update(again).revision)
                assert_quiet(again)
        assert seen == list(range(2, total + 2))

    def test_watch_variables_delivers_to_a_watcher_thread(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.0)
        received: list[float] = []
        ready = threading.Event()

        def watcher() -> None:
            with provider.watch_variables(session_id, ["a"]) as watch:
                ready.set()
                while len(received) < 3 and (update := watch.poll(timeout=WAIT)) is not None:
                    received.append(update.record.value)

        thread = threading.Thread(target=watcher, daemon=True)
        thread.start()
        assert ready.wait(WAIT)
        for value in (0.1, 0.2, 0.3):
            provider.set_variable(session_id, "a", value)
        thread.join(timeout=WAIT * 2)
        assert received == [0.1, 0.2, 0.3]

    # -- the nine types ---------------------------------------------------------------------

    @pytest.mark.parametrize("type_name", list(TYPE_CASES))
    def test_every_type_round_trips_in_canonical_form(
        self, provider: StateProvider, session_id: str, type_name: str
    ) -> None:
        case = TYPE_CASES[type_name]
        registered = provider.register_variable(session_id, "v", case.spec, case.initial)
        assert registered.type == type_name
        record = provider.set_variable(session_id, "v", case.new)
        assert same_value(record.value, case.canonical_new), (record.value, case.canonical_new)
        got = provider.get_variable(session_id, "v")
        assert same_value(got.value, case.canonical_new)
        assert got.version == 2
        history = provider.get_history(session_id, "v")
        assert same_value(history[-1].value, case.canonical_new)

    @pytest.mark.parametrize("type_name", list(TYPE_CASES))
    def test_every_type_refuses_bad_values_and_changes_nothing(
        self, provider: StateProvider, session_id: str, type_name: str
    ) -> None:
        case = TYPE_CASES[type_name]
        provider.register_variable(session_id, "v", case.spec, case.initial)
        with unchanged(provider, session_id):
            with pytest.raises(errors.VariableValueError, match="'v'"):
                provider.set_variable(session_id, "v", case.bad_value)
            with pytest.raises(errors.VariableTypeError, match="'v'"):
                provider.set_variable(session_id, "v", case.wrong_type)
            with pytest.raises(errors.VariableValueError):
                provider.register_variable(session_id, "w", case.spec, case.bad_value)

    def test_tensor_keeps_dtype_and_shape_and_is_read_only(
        self, provider: StateProvider, session_id: str
    ) -> None:
        spec = make_spec("tensor", shape=[None, 3], dtype="int16")
        value = np.arange(6, dtype=np.int16).reshape(2, 3)
        provider.register_variable(session_id, "t", spec, value)
        got = provider.get_variable(session_id, "t").value
        assert isinstance(got, np.ndarray)
        assert got.dtype == np.int16
        assert got.shape == (2, 3)
        assert got.tolist() == [[0, 1, 2], [3, 4, 5]]
        assert not got.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            got[0, 0] = 9

    def test_tensor_without_constraints_accepts_any_numeric_array(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "t", make_spec("tensor"), np.zeros(2, np.float64))
        for value in (np.ones((2, 2, 2), np.complex64), np.array(True), np.arange(3, dtype="u1")):
            got = provider.set_variable(session_id, "t", value).value
            assert same_value(got, value)
        with pytest.raises(errors.VariableTypeError):
            provider.set_variable(session_id, "t", np.array(["a", "b"]))

    def test_embedding_is_a_tuple_of_floats_with_fixed_dimensions(
        self, provider: StateProvider, session_id: str
    ) -> None:
        spec = make_spec("embedding", dimensions=4, min=-1.0, max=1.0)
        record = provider.register_variable(session_id, "e", spec, [0, 0.5, -0.5, 1])
        assert record.value == (0.0, 0.5, -0.5, 1.0)
        assert all(type(x) is float for x in record.value)
        with pytest.raises(errors.VariableValueError, match=r"max=1\.0"):
            provider.set_variable(session_id, "e", [0, 0, 0, 1.5])

    def test_json_values_canonicalize_like_json(
        self, provider: StateProvider, session_id: str
    ) -> None:
        record = provider.register_variable(
            session_id, "demos", make_spec("json"), {"demos": ({"q": "1+1", "a": 2},), "k": None}
        )
        assert record.value == {"demos": [{"q": "1+1", "a": 2}], "k": None}
        with pytest.raises(errors.VariableTypeError):
            provider.set_variable(session_id, "demos", {"x": float("nan")})
        with pytest.raises(errors.VariableTypeError):
            provider.set_variable(session_id, "demos", {"x": object()})

    # -- snapshots --------------------------------------------------------------------------

    def test_records_are_immutable(self, provider: StateProvider, session_id: str) -> None:
        record = provider.register_variable(session_id, "a", FLOAT, 0.1)
        with pytest.raises(AttributeError):
            record.value = 0.5  # type: ignore[misc]
        with pytest.raises((TypeError, AttributeError)):
            record.constraints["max"] = 5.0  # type: ignore[index]
        assert provider.get_variable(session_id, "a").constraints["max"] == 2.0

    def test_records_do_not_change_after_later_writes(
        self, provider: StateProvider, session_id: str
    ) -> None:
        first = provider.register_variable(session_id, "a", FLOAT, 0.1)
        held = provider.get_variable(session_id, "a")
        provider.set_variable(session_id, "a", 0.2)
        assert (first.value, first.version) == (0.1, 1)
        assert (held.value, held.version) == (0.1, 1)

    def test_mutating_a_value_after_writing_it_changes_nothing(
        self, provider: StateProvider, session_id: str
    ) -> None:
        demos = [{"q": "a"}]
        array = np.zeros(3)
        provider.register_variable(session_id, "demos", make_spec("json"), demos)
        provider.register_variable(session_id, "t", make_spec("tensor"), array)
        demos.append({"q": "b"})
        demos[0]["q"] = "changed"
        array[0] = 7.0
        assert provider.get_variable(session_id, "demos").value == [{"q": "a"}]
        assert provider.get_variable(session_id, "t").value.tolist() == [0.0, 0.0, 0.0]

    def test_mutating_a_returned_value_changes_nothing(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "demos", make_spec("json"), {"d": [1, 2]})
        value = provider.get_variable(session_id, "demos").value
        # A backend may hand out read-only values (refusing the change) or private copies.
        with contextlib.suppress(TypeError):
            value["d"].append(3)
        with contextlib.suppress(TypeError):
            value["new"] = 1
        assert provider.get_variable(session_id, "demos").value == {"d": [1, 2]}
        assert provider.get_history(session_id, "demos")[0].value == {"d": [1, 2]}

    # -- pickling ---------------------------------------------------------------------------

    @pytest.mark.parametrize("type_name", list(TYPE_CASES))
    def test_records_and_updates_pickle(
        self, provider: StateProvider, session_id: str, type_name: str
    ) -> None:
        case = TYPE_CASES[type_name]
        with provider.watch_variables(session_id) as watch:
            record = provider.register_variable(
                session_id, "v", case.spec, case.initial, metadata={"why": "test"}
            )
            update = next_update(watch)
        for original in (record, update.record):
            copy = pickle.loads(pickle.dumps(original))
            assert copy._replace(value=None) == original._replace(value=None)
            assert same_value(copy.value, original.value)
        copy_update = pickle.loads(pickle.dumps(update))
        assert (copy_update.revision, copy_update.kind, copy_update.name) == (1, "register", "v")

    def test_errors_raised_by_the_provider_pickle_with_details(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.1)
        calls: list[Callable[[], Any]] = [
            lambda: provider.get_variable(session_id, "missing"),
            lambda: provider.set_variable(session_id, "a", 5.0),
            lambda: provider.set_variable(session_id, "a", "x"),
            lambda: provider.set_variable(session_id, "a", 0.2, expected_version=9),
            lambda: provider.register_variable(session_id, "a", TEXT, "x"),
            lambda: provider.rollback_variable(session_id, "a", 42),
            lambda: provider.get_session("no-such-session"),
        ]
        for call in calls:
            with pytest.raises(errors.DspexError) as caught:
                call()
            copy = pickle.loads(pickle.dumps(caught.value))
            assert type(copy) is type(caught.value)
            assert str(copy) == str(caught.value)
            assert copy.details == caught.value.details
            assert copy.code == caught.value.code

    # -- concurrency ------------------------------------------------------------------------

    def test_concurrent_writers_get_unique_versions_and_revisions(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "a", FLOAT, 0.0)
        threads, per_thread = 4, 50
        records: list[VariableRecord] = []
        lock = threading.Lock()

        def write(index: int) -> None:
            for step in range(per_thread):
                record = provider.set_variable(session_id, "a", (index * per_thread + step) / 1e4)
                with lock:
                    records.append(record)

        with provider.watch_variables(session_id) as watch:
            run_threads(write, threads)
            delivered = take(watch, threads * per_thread)
        total = threads * per_thread
        assert sorted(r.version for r in records) == list(range(2, total + 2))
        assert sorted(r.revision for r in records) == list(range(2, total + 2))
        assert [u.revision for u in delivered] == list(range(2, total + 2))
        assert [u.record.version for u in delivered] == list(range(2, total + 2))
        assert provider.get_variable(session_id, "a").version == total + 1

    def test_compare_and_set_loses_no_update_under_contention(
        self, provider: StateProvider, session_id: str
    ) -> None:
        provider.register_variable(session_id, "counter", make_spec(int), 0)
        threads, increments = 4, 25

        def increment(_: int) -> None:
            for _step in range(increments):
                while True:
                    current = provider.get_variable(session_id, "counter")
                    try:
                        provider.set_variable(
                            session_id, "counter", current.value + 1,
                            expected_version=current.version,
                        )  # fmt: skip
                        break
                    except errors.VersionConflictError:
                        continue

        run_threads(increment, threads)
        assert provider.get_variable(session_id, "counter").value == threads * increments

    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        plan=st.lists(
            st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=12),
            min_size=1,
            max_size=4,
        )
    )
    def test_versions_and_revisions_stay_monotonic_under_concurrent_writers(
        self, provider: StateProvider, plan: list[list[str]]
    ) -> None:
        session_id = provider.create_session()
        for name in "abc":
            provider.register_variable(session_id, name, make_spec(int), 0)
        results: list[list[VariableRecord]] = [[] for _ in plan]

        def write(index: int) -> None:
            for step, name in enumerate(plan[index]):
                results[index].append(provider.set_variable(session_id, name, step))

        with provider.watch_variables(session_id) as watch:
            run_threads(write, len(plan))
            total = sum(len(names) for names in plan)
            delivered = take(watch, total)
        # Each thread sees its own writes at strictly increasing revisions and versions.
        for records in results:
            revisions = [r.revision for r in records]
            assert revisions == sorted(set(revisions))
        every = [r for records in results for r in records]
        assert sorted(r.revision for r in every) == list(range(4, 4 + total))
        for name in "abc":
            versions = sorted(r.version for r in every if r.name == name)
            assert versions == list(range(2, 2 + len(versions)))
            assert provider.get_variable(session_id, name).version == 1 + len(versions)
            kept = [r.version for r in provider.get_history(session_id, name)]
            assert kept == sorted(set(kept))
        # The watch sees one update per write, in revision order, with versions rising per name.
        assert [u.revision for u in delivered] == list(range(4, 4 + total))
        last_version: dict[str, int] = {}
        for update in delivered:
            assert update.record.version > last_version.get(update.name, 1)
            last_version[update.name] = update.record.version
        provider.close_session(session_id)


def run_threads(target: Callable[[int], None], count: int) -> None:
    """Run ``target(index)`` on ``count`` threads at once; re-raise the first failure."""
    failures: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=WAIT)
            target(index)
        except BaseException as exc:  # reported to the test thread below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "writer threads did not finish"
    if failures:
        raise failures[0]
