"""The storage-engine contract, run against every engine kind (memory, SQLite, Redis).

Engines store and compare-and-set; they hold no semantics. So these tests build ``Write``s by
hand, the way the store semantics will, and check what every engine must do the same way.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
from support.engines import FLOAT, Collector, EngineMaker, change, register

from dspex._model import (
    EMPTY,
    Choice,
    FrozenDict,
    VariableRecord,
    VariableSpec,
    freeze,
    make_spec,
)
from dspex._model import validate as check
from dspex.state.engines import (
    Engine,
    EngineConflict,
    LogCompacted,
    UnknownSession,
    Write,
)

INT = make_spec(int)


def put(engine: Engine, sid: str, name: str, value: Any) -> VariableRecord:
    record = engine.get(sid, name)
    assert record is not None
    return engine.commit(sid, [change(record, value)])[0].record


def snapshot(engine: Engine, sid: str) -> str:
    """Everything an engine keeps about a session, as comparable text."""
    records = sorted(engine.records(sid))
    history = {r.name: engine.history(sid, r.name) for r in records}
    meta = engine.session(sid)
    try:
        changes = engine.changes(sid, 0)
    except LogCompacted as compacted:
        changes = engine.changes(sid, compacted.args[0] - 1)
    return repr((meta, records, history, changes, engine.edges(sid)))


class TestEngineContract:
    """What every engine does identically."""

    def test_sessions_are_created_touched_listed_and_dropped(self, engine: Engine) -> None:
        assert engine.create_session("s", ttl=30.0, owner="alice") is True
        assert engine.create_session("s", ttl=None, owner="bob") is False  # left unchanged
        meta = engine.session("s")
        assert meta is not None
        assert (meta.session_id, meta.ttl, meta.owner, meta.revision) == ("s", 30.0, "alice", 0)
        assert (meta.variable_count, meta.created_at) == (0, meta.last_heartbeat)
        assert engine.touch("s", meta.created_at + 5) is True
        assert engine.session("s").last_heartbeat == meta.created_at + 5  # type: ignore[union-attr]
        engine.create_session("t", ttl=None, owner="")
        assert sorted(m.session_id for m in engine.sessions()) == ["s", "t"]

        assert engine.drop_session("s") is True
        assert engine.drop_session("s") is False
        assert engine.session("s") is None
        assert engine.touch("s", 1.0) is False
        assert [m.session_id for m in engine.sessions()] == ["t"]
        for call in (
            lambda: engine.get("s", "x"),
            lambda: engine.records("s"),
            lambda: engine.history("s", "x"),
            lambda: engine.commit("s", [register("x", 1.0)]),
            lambda: engine.changes("s", 0),
            lambda: engine.edges("s"),
            lambda: engine.put_edges("s", [], [("a", "b")]),
        ):
            with pytest.raises(UnknownSession):
                call()

    def test_commit_assigns_consecutive_revisions(self, engine: Engine) -> None:
        engine.create_session("s", ttl=None, owner="")
        updates = engine.commit("s", [register("a", 1.0, source="x"), register("b", 2.0)])
        assert [(u.revision, u.kind, u.name) for u in updates] == [
            (1, "register", "a"),
            (2, "register", "b"),
        ]
        a = engine.get("s", "a")
        assert a == updates[0].record
        assert (a.value, a.version, a.revision, a.writer) == (1.0, 1, 1, "tester")  # type: ignore[union-attr]
        assert dict(a.metadata) == {"source": "x"}  # type: ignore[union-attr]
        b = put(engine, "s", "b", 3.0)
        assert (b.version, b.revision, b.value) == (2, 3, 3.0)
        assert engine.session("s").revision == 3  # type: ignore[union-attr]
        assert engine.session("s").variable_count == 2  # type: ignore[union-attr]
        assert engine.get("s", "missing") is None
        assert engine.commit("s", []) == []

    def test_stale_expectations_conflict_and_change_nothing(self, engine: Engine) -> None:
        engine.create_session("s", ttl=None, owner="")
        first = engine.commit("s", [register("a", 1.0)])[0].record
        put(engine, "s", "a", 2.0)
        before = snapshot(engine, "s")
        refused = [
            change(first, 5.0),  # read revision 1, but it is 2 now
            register("a", 1.0),  # expects absent, but present
            Write("b", 7, "set", FLOAT, 1.0, 2, "tester", EMPTY),  # expects present, absent
            Write("b", None, "delete", FLOAT, None, 1, "tester", EMPTY),  # delete of absent
        ]
        for write in refused:
            with pytest.raises(EngineConflict):
                engine.commit("s", [write])
        assert snapshot(engine, "s") == before

    def test_multi_write_commit_is_all_or_nothing(self, engine: Engine) -> None:
        engine.create_session("s", ttl=None, owner="")
        a, b = (u.record for u in engine.commit("s", [register("a", 1.0), register("b", 1.0)]))
        put(engine, "s", "b", 2.0)  # b's revision moves on
        before = snapshot(engine, "s")
        with pytest.raises(EngineConflict):
            engine.commit("s", [change(a, 5.0), register("c", 1.0), change(b, 5.0)])
        assert snapshot(engine, "s") == before
        b = engine.get("s", "b")  # type: ignore[assignment]
        updates = engine.commit("s", [change(a, 5.0), register("c", 1.0), change(b, 6.0)])
        assert [u.revision for u in updates] == [4, 5, 6]
        assert [r.value for r in sorted(engine.records("s"))] == [5.0, 6.0, 1.0]
        with pytest.raises(ValueError):
            engine.commit("s", [change(updates[0].record, 1.0), change(updates[0].record, 2.0)])

    def test_delete_removes_the_variable_and_its_history(self, engine: Engine) -> None:
        engine.create_session("s", ttl=None, owner="")
        engine.commit("s", [register("a", 1.0)])
        last = put(engine, "s", "a", 2.0)
        (update,) = engine.commit("s", [change(last, 2.0, kind="delete")])
        assert (update.revision, update.kind, update.record) == (3, "delete", last)
        assert engine.get("s", "a") is None
        assert engine.history("s", "a") == []
        assert engine.session("s").variable_count == 0  # type: ignore[union-attr]
        (again,) = engine.commit("s", [register("a", 9.0)])
        assert (again.revision, again.record.version) == (4, 1)
        assert [r.value for r in engine.history("s", "a")] == [9.0]

    def test_history_is_bounded_and_annotations_keep_the_version(
        self, engines: EngineMaker
    ) -> None:
        engine = engines.new(history_size=3)
        engine.create_session("s", ttl=None, owner="")
        engine.commit("s", [register("a", 0.0)])
        for value in (1.0, 2.0, 3.0, 4.0):
            put(engine, "s", "a", value)
        assert [(r.version, r.value) for r in engine.history("s", "a")] == [
            (3, 2.0),
            (4, 3.0),
            (5, 4.0),
        ]
        current = engine.get("s", "a")
        assert current is not None
        # A stale mark and a lock annotate the current version instead of adding one.
        (stale,) = engine.commit("s", [change(current, 4.0, "stale", version=5, stale=True)])
        lock = {"owner": "opt-1", "expires_at": 99.5}
        (locked,) = engine.commit(
            "s", [change(stale.record, 4.0, "lock", version=5, stale=True, lock=lock)]
        )
        history = engine.history("s", "a")
        assert [r.version for r in history] == [3, 4, 5]
        assert history[-1] == locked.record == engine.get("s", "a")
        assert (history[-1].stale, dict(history[-1].lock or {})) == (True, lock)
        assert history[-1].revision == 7
        # Registering again starts the history over.
        (fresh,) = engine.commit("s", [Write("a", 7, "register", FLOAT, 0.5, 1, "t", EMPTY)])
        assert engine.history("s", "a") == [fresh.record]

    def test_change_log_is_bounded_and_says_when_compacted(self, engines: EngineMaker) -> None:
        engine = engines.new(log_size=5)
        engine.create_session("s", ttl=None, owner="")
        engine.commit("s", [register("a", 0.0)])
        for value in range(1, 8):
            put(engine, "s", "a", float(value))
        changes = engine.changes("s", 3)
        assert [(u.revision, u.record.value) for u in changes] == [
            (rev, rev - 1.0) for rev in range(4, 9)
        ]
        assert [u.revision for u in engine.changes("s", 6)] == [7, 8]
        assert engine.changes("s", 8) == [] == engine.changes("s", 100)
        with pytest.raises(LogCompacted) as compacted:
            engine.changes("s", 2)
        assert compacted.value.args[0] == 4

    def test_edges_are_compare_and_set(self, engine: Engine) -> None:
        engine.create_session("s", ttl=None, owner="")
        assert engine.edges("s") == []
        engine.put_edges("s", [], [("a", "b"), ("b", "c")])
        assert engine.edges("s") == [("a", "b"), ("b", "c")]
        with pytest.raises(EngineConflict):
            engine.put_edges("s", [], [("x", "y")])
        assert engine.edges("s") == [("a", "b"), ("b", "c")]
        engine.put_edges("s", [("a", "b"), ("b", "c")], [])
        assert engine.edges("s") == []

    def test_listeners_get_every_commit_in_order_and_the_close(self, engine: Engine) -> None:
        engine.create_session("s", ttl=None, owner="")
        engine.create_session("other", ttl=None, owner="")
        seen = Collector()
        engine.listen(seen)
        engine.commit("s", [register("a", 1.0), register("b", 2.0)])
        engine.commit("other", [register("z", 1.0)])
        put(engine, "s", "a", 3.0)
        engine.drop_session("s")
        seen.wait_for(lambda: seen.closed("s") == 1)
        assert [(sid, [(u.revision, u.name) for u in ups], closed)
                for sid, ups, closed in seen.calls if sid == "s"] == [
            ("s", [(1, "a"), (2, "b")], False),
            ("s", [(3, "a")], False),
            ("s", [], True),
        ]  # fmt: skip
        assert seen.revisions("other") == [1]
        assert [u.record.value for _, ups, _ in seen.calls for u in ups][:3] == [1.0, 2.0, 1.0]
        # The same id can be created again and starts from revision 1.
        engine.create_session("s", ttl=None, owner="")
        engine.commit("s", [register("a", 4.0)])
        seen.wait_for(lambda: seen.revisions("s") == [1, 2, 3, 1])

    def test_concurrent_compare_and_set_loses_no_increment(self, engine: Engine) -> None:
        engine.create_session("s", ttl=None, owner="")
        engine.commit("s", [register("n", 0, INT)])
        errors: list[BaseException] = []

        def increment(times: int) -> None:
            try:
                for _ in range(times):
                    while True:
                        record = engine.get("s", "n")
                        assert record is not None
                        try:
                            engine.commit("s", [change(record, record.value + 1)])
                            break
                        except EngineConflict:
                            continue
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=increment, args=(25,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors
        final = engine.get("s", "n")
        assert final is not None
        assert (final.value, final.version, final.revision) == (100, 101, 101)
        assert [(u.revision, u.record.value) for u in engine.changes("s", 0)] == [
            (rev, rev - 1) for rev in range(1, 102)
        ]

    def test_records_never_show_half_a_commit(self, engine: Engine) -> None:
        """``records()`` reads one revision: a commit of two writes is seen whole or not at all
        while another thread commits (the memory engine read its records without the session's
        lock, so a reader saw one write of a batch without the other: in-process
        ``get_variables``, and the values a bound call reads, mixed two versions)."""
        engine.create_session("s", ttl=None, owner="")
        engine.commit("s", [register("a", 0, INT), register("b", 0, INT)])
        done = threading.Event()

        def write() -> None:
            value = 0
            while not done.is_set():
                value += 1
                a, b = engine.get("s", "a"), engine.get("s", "b")
                assert a is not None and b is not None
                engine.commit("s", [change(a, value), change(b, value)])

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        torn = reads = 0
        deadline = time.monotonic() + 1.5
        try:
            while time.monotonic() < deadline:
                values = {r.name: r.value for r in engine.records("s")}
                torn += values["a"] != values["b"]
                reads += 1
        finally:
            done.set()
            writer.join(30)
        assert torn == 0, f"{torn} of {reads} reads saw half a commit"

    def test_every_type_round_trips(self, engines: EngineMaker) -> None:
        engine = engines.new()
        engine.create_session("s", ttl=None, owner="")
        seen = Collector()
        engine.listen(seen)
        writes = [register(name, value, spec, note="é ✓") for name, spec, value in _ALL_TYPES]
        engine.commit("s", writes)
        lock = freeze({"owner": "opt", "expires_at": 1.5, "tags": ["a", "b"]})
        current = engine.get("s", "instructions")
        assert current is not None
        engine.commit("s", [change(current, current.value, "lock", version=1, lock=lock)])
        seen.wait_for(lambda: len(seen.revisions("s")) == len(writes) + 1)
        view = engines.reopen(engine)
        for record in [*view.records("s"), *(u.record for _, ups, _ in seen.calls for u in ups)]:
            _, spec, value = next(item for item in _ALL_TYPES if item[0] == record.name)
            assert record.spec == spec
            assert_same_value(spec, record.value, check(spec, value, record.name))
            assert dict(record.metadata) == {"note": "é ✓"}
            assert isinstance(record.metadata, FrozenDict)
        locked = view.get("s", "instructions")
        assert locked is not None
        assert locked.lock == lock and isinstance(locked.lock, FrozenDict)
        assert [u.name for u in view.changes("s", 0)] == [w.name for w in writes] + [
            "instructions"
        ]

    def test_a_reopened_engine_keeps_everything(self, engines: EngineMaker) -> None:
        if not engines.durable:
            pytest.skip("the memory engine keeps nothing once closed")
        engine = engines.new(history_size=3, log_size=6)
        engine.create_session("s", ttl=12.5, owner="alice")
        engine.create_session("empty", ttl=None, owner="bob")
        engine.commit("s", [register("a", 0.0), register("b", 1.0)])
        for value in range(1, 6):
            put(engine, "s", "a", float(value))
        current = engine.get("s", "b")
        assert current is not None
        engine.commit("s", [change(current, 1.0, "stale", version=1, stale=True)])
        engine.put_edges("s", [], [("a", "b")])
        engine.touch("s", 1234.5)
        before = [snapshot(engine, sid) for sid in ("s", "empty")]
        view = engines.reopen(engine)
        assert [snapshot(view, sid) for sid in ("s", "empty")] == before
        assert sorted(m.session_id for m in view.sessions()) == ["empty", "s"]
        assert put(view, "s", "a", 9.0).revision == 9


_ALL_TYPES: list[tuple[str, VariableSpec, Any]] = [
    ("temperature", make_spec(float, min=0.0, max=2.0), 0.1 + 0.2),
    ("count", make_spec(int, min=-5), 2**53 + 1),
    ("instructions", make_spec(str, max_length=200), 'quote " back \\ é ✓\nnew line'),
    ("flag", make_spec(bool), True),
    ("mode", make_spec(Choice("a", 1, 2.5, True)), 2.5),
    ("module", make_spec("module", choices=["dspy.Predict", "dspy.ChainOfThought"]),
     "dspy.ChainOfThought"),
    ("embedding", make_spec("embedding", dimensions=3), [0.1, -2.0, 1e-300]),
    ("tensor", make_spec("tensor", dtype="float32", shape=[2, None]),
     np.arange(6, dtype=np.float32).reshape(2, 3) / 7),
    ("complex", make_spec("tensor"), np.array([[1 + 2j, -0.5j]], dtype=np.complex128)),
    ("mask", make_spec("tensor"), np.array([True, False, True])),
    ("scalar", make_spec("tensor"), np.array(3, dtype=np.int16)),
    ("empty", make_spec("tensor"), np.zeros((0, 4), dtype=np.uint8)),
    ("demos", make_spec(dict), {"demos": [{"q": "a", "a": 1.5, "none": None}], "n": [1, True]}),
]  # fmt: skip


def assert_same_value(spec: VariableSpec, got: Any, want: Any) -> None:
    if spec.type == "tensor":
        assert isinstance(got, np.ndarray)
        assert (got.dtype, got.shape) == (want.dtype, want.shape)
        assert np.array_equal(got, want) and not got.flags.writeable
    else:
        assert got == want and type(got) is type(want)
        if spec.type == "json":
            assert isinstance(got, FrozenDict) and isinstance(got["demos"][0], FrozenDict)
