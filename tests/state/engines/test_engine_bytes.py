"""Byte bounds and byte budgets, run against every engine kind (memory, SQLite, Redis).

History and the change log are bounded in bytes as well as versions, and per-session and
whole-store budgets refuse a write that would keep more bytes of values, applying none of it.
Each engine must keep exactly what a plain model of those rules keeps, through values that
take no bytes (numbers, empty strings) and values that do, and after a reopen.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.engines import EngineMaker, change, register

from dspex import errors
from dspex._model import VariableRecord, make_spec
from dspex.state.engines import Engine, LogCompacted, MemoryEngine

TEXT = make_spec(str)
HISTORY_SIZE, LOG_SIZE = 6, 9
HISTORY_BYTES, LOG_BYTES = 1000, 1500
VALUES = [
    "", "", "a" * 300, "", "b" * 400, "c" * 500, "", "", "d" * 900, "e" * 1200, "",
    "f" * 10, "g" * 20, "", "", "", "", "", "", "", "h" * 999, "i" * 1,
]  # fmt: skip


def _trim(kept: list[tuple[Any, int]], count: int, limit: int) -> None:
    """Drop the oldest entries beyond ``count`` or ``limit`` bytes (the newest stays)."""
    while len(kept) > count or (len(kept) > 1 and sum(size for _, size in kept) > limit):
        kept.pop(0)


class Model:
    """What an engine keeps of one text variable's history and of the session's change log."""

    def __init__(self, value: str) -> None:
        self.history: list[tuple[Any, int]] = []
        self.log: list[tuple[Any, int]] = []  # (revision, bytes)
        self.revision = 0
        self.add("s", value)

    def add(self, name: str, value: Any) -> None:
        size = len(value.encode()) if isinstance(value, str) else 0
        self.revision += 1
        self.log.append((self.revision, size))
        _trim(self.log, LOG_SIZE, LOG_BYTES)
        if name == "s":
            self.history.append((value, size))
            _trim(self.history, HISTORY_SIZE, HISTORY_BYTES)


def _bounded(engines: EngineMaker) -> Engine:
    return engines.new(
        history_size=HISTORY_SIZE,
        log_size=LOG_SIZE,
        history_bytes=HISTORY_BYTES,
        log_bytes=LOG_BYTES,
    )


def _set(engine: Engine, sid: str, name: str, value: Any, index: int) -> VariableRecord:
    """Set ``name`` to ``value``; the memory engine alternates its two write paths."""
    old = engine.get(sid, name)
    assert old is not None
    if isinstance(engine, MemoryEngine) and index % 2:
        return engine.commit_set(sid, old, value, "tester").record
    return engine.commit(sid, [change(old, value)])[0].record


def _oldest_logged(engine: Engine, sid: str) -> int:
    try:
        return engine.changes(sid, 0)[0].revision
    except LogCompacted as compacted:
        return int(compacted.args[0])


def _check(engine: Engine, sid: str, model: Model) -> None:
    assert [r.value for r in engine.history(sid, "s")] == [v for v, _ in model.history]
    assert _oldest_logged(engine, sid) == model.log[0][0]


def test_history_and_log_keep_what_the_byte_and_version_bounds_allow(
    engines: EngineMaker,
) -> None:
    engine = _bounded(engines)
    engine.create_session("b", ttl=None, owner="o")
    engine.commit("b", [register("s", VALUES[0], TEXT)])
    model = Model(VALUES[0])
    engine.commit("b", [register("x", 0.5)])
    model.add("x", 0.5)
    for index, value in enumerate(VALUES[1:] * 2):
        _set(engine, "b", "s", value, index)
        model.add("s", value)
        _check(engine, "b", model)
        if index % 3 == 0:  # numbers take no bytes, but count as versions and log entries
            _set(engine, "b", "x", index / 100, index)
            model.add("x", index / 100)
            _check(engine, "b", model)
        if index == len(VALUES) // 2:  # durable engines reload what they kept
            engine = engines.reopen(engine)
            _check(engine, "b", model)


def test_annotating_a_version_recounts_its_bytes(engines: EngineMaker) -> None:
    engine = _bounded(engines)
    engine.create_session("a", ttl=None, owner="o")
    engine.commit("a", [register("s", "a" * 400, TEXT)])
    old = engine.get("a", "s")
    assert old is not None
    old = engine.commit("a", [change(old, "b" * 500)])[0].record
    stale = engine.commit("a", [change(old, "c" * 600, version=old.version, stale=True)])
    assert stale[0].record.stale
    # 400 + 600 bytes: the annotated version replaced the 500 it annotated, so both stay.
    assert [r.value for r in engine.history("a", "s")] == ["a" * 400, "c" * 600]
    old = engine.get("a", "s")
    assert old is not None
    engine.commit("a", [change(old, "d" * 1)])
    assert [r.value for r in engine.history("a", "s")] == ["c" * 600, "d"]


def test_budgets_refuse_writes_naming_the_limit_and_apply_nothing(engines: EngineMaker) -> None:
    engine = engines.new(max_session_bytes=1000, max_store_bytes=1400)
    engine.create_session("one", ttl=None, owner="o")
    engine.create_session("two", ttl=None, owner="o")
    engine.commit("one", [register("s", "", TEXT)])
    before = _state(engine, "one")
    with pytest.raises(errors.LimitExceededError, match="bytes kept in session 'one'") as hit:
        _set(engine, "one", "s", "x" * 2000, 0)
    assert "limit 1000" in str(hit.value)
    assert _state(engine, "one") == before  # nothing applied
    _set(engine, "one", "s", "", 1)  # the refused write left no count behind
    _set(engine, "one", "s", "y" * 500, 2)
    with pytest.raises(errors.LimitExceededError, match="bytes kept in session"):
        _set(engine, "one", "s", "z" * 600, 3)  # every kept version counts: 500 + 600
    engine.commit("two", [register("u", "w" * 700, TEXT)])  # the store holds 1,200 bytes
    before = _state(engine, "two")
    u = engine.get("two", "u")
    assert u is not None
    batch = [change(u, "q" * 100), register("v", "p" * 150, TEXT)]  # 950 in the session
    with pytest.raises(errors.LimitExceededError, match="whole store") as hit:
        engine.commit("two", batch)
    assert "limit 1400" in str(hit.value)
    assert _state(engine, "two") == before  # nothing of the batch applied
    old = engine.get("one", "s")
    assert old is not None
    engine.commit("one", [change(old, "", kind="delete")])  # frees 500 bytes
    assert [u.kind for u in engine.commit("two", batch)] == ["set", "register"]


def _state(engine: Engine, sid: str) -> Any:
    meta = engine.session(sid)
    assert meta is not None
    records = sorted(engine.records(sid))
    history = {r.name: engine.history(sid, r.name) for r in records}
    return meta.revision, records, history, engine.changes(sid, 0)


def test_budgets_count_what_trimming_and_annotating_leave(engines: EngineMaker) -> None:
    engine = engines.new(history_bytes=1000, max_session_bytes=1500)
    engine.create_session("t", ttl=None, owner="o")
    engine.commit("t", [register("s", "a" * 800, TEXT)])
    _set(engine, "t", "s", "b" * 900, 0)  # 1,700 before trimming: 900 after, within budget
    old = engine.get("t", "s")
    assert old is not None
    engine.commit("t", [change(old, "c" * 1400, version=old.version, stale=True)])  # 900 -> 1400
    assert [r.value for r in engine.history("t", "s")] == ["c" * 1400]
    engine.commit("t", [register("u", "d" * 100, TEXT)])  # 1,500: the budget is full
    with pytest.raises(errors.LimitExceededError, match="limit 1500"):
        engine.commit("t", [register("v", "e", TEXT)])
    _set(engine, "t", "s", "f" * 1300, 1)  # replaces the 1,400 kept: frees bytes, allowed
    assert [r.value for r in engine.history("t", "s")] == ["f" * 1300]
