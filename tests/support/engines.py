"""Helpers for the engine tests: open engines of one kind, and a listener to wait on."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from dspex._model import VariableRecord, VariableSpec, VariableUpdate, freeze, make_spec
from dspex._model import validate as check
from dspex.state.engines import Engine, MemoryEngine, Write
from dspex.state.engines.redis import RedisEngine
from dspex.state.engines.sqlite import SQLiteEngine

ENGINE_KINDS = ["memory", "sqlite", "redis"]

FLOAT = make_spec(float, min=0.0, max=10.0)


def register(name: str, value: Any, spec: VariableSpec = FLOAT, **metadata: Any) -> Write:
    """The write that registers ``name`` (the store semantics build such writes)."""
    value = check(spec, value, name)
    return Write(name, None, "register", spec, value, 1, "tester", freeze(metadata))


def change(record: VariableRecord, value: Any, kind: str = "set", **fields: Any) -> Write:
    """The write that sets ``record``'s variable to ``value`` as its next version."""
    version = fields.pop("version", record.version + 1)
    value = check(record.spec, value, record.name)
    metadata = fields.pop("metadata", record.metadata)
    return Write(record.name, record.revision, kind, record.spec, value, version, "tester",
                 metadata, **fields)  # fmt: skip


class EngineMaker:
    """Opens engines of one kind, each on its own storage, and closes them all at the end."""

    def __init__(self, kind: str, tmp_path: Path, redis_url: str | None) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.redis_url = redis_url
        self.opened: list[Engine] = []
        self.places: dict[int, tuple[str, dict[str, Any]]] = {}  # id(engine) -> storage, options

    @property
    def durable(self) -> bool:
        """Whether a reopened engine sees the data (memory keeps nothing)."""
        return self.kind != "memory"

    def new(self, **options: Any) -> Engine:
        """A fresh engine on fresh storage; ``options`` = history_size/log_size."""
        return self._open(uuid.uuid4().hex[:12], options)

    def reopen(self, engine: Engine) -> Engine:
        """Close ``engine`` and open its storage again (memory: the same engine)."""
        if self.kind == "memory":
            return engine
        place, options = self.places[id(engine)]
        engine.close()
        return self._open(place, options)

    def second(self, engine: Engine) -> Engine:
        """Another engine on the same storage at the same time (Redis: another server)."""
        assert self.kind == "redis", "only Redis is shared by several engines"
        place, options = self.places[id(engine)]
        return self._open(place, options)

    def _open(self, place: str, options: dict[str, Any]) -> Engine:
        engine: Engine
        if self.kind == "memory":
            engine = MemoryEngine(**options)
        elif self.kind == "sqlite":
            engine = SQLiteEngine(self.tmp_path / place, **options)
        else:
            assert self.redis_url is not None
            engine = RedisEngine(self.redis_url, prefix=f"t{place}", **options)
        self.opened.append(engine)
        self.places[id(engine)] = (place, options)
        return engine

    def close_all(self) -> None:
        for engine in self.opened:
            engine.close()
        if self.redis_url is not None:
            client = redis.Redis.from_url(self.redis_url)
            for place in {place for place, _ in self.places.values()}:
                keys = list(client.scan_iter(match=f"t{place}:*", count=1000))
                if keys:
                    client.delete(*keys)
            client.close()


class Collector:
    """An engine listener that records its calls and lets a test wait for them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[VariableUpdate], bool]] = []
        self._cond = threading.Condition()

    def __call__(self, session_id: str, updates: Any, closed: bool) -> None:
        with self._cond:
            self.calls.append((session_id, list(updates), closed))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait until ``predicate()`` holds (Redis delivers from a thread), or fail."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout=timeout):
                pytest.fail(f"listener did not get the expected calls; got {self.summary()}")

    def revisions(self, session_id: str) -> list[int]:
        with self._cond:
            return [
                update.revision
                for sid, updates, _ in self.calls
                if sid == session_id
                for update in updates
            ]

    def closed(self, session_id: str) -> int:
        with self._cond:
            return sum(1 for sid, _, closed in self.calls if sid == session_id and closed)

    def summary(self) -> list[tuple[str, list[int], bool]]:
        return [
            (sid, [u.revision for u in updates], closed) for sid, updates, closed in self.calls
        ]
