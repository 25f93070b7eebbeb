"""Provider kinds for the shared contract suite: transport x engine (Optuna's StorageSupplier).

A kind is ``"TRANSPORT-ENGINE"``; ``provide(kind)`` yields a ready StateProvider of that kind and
cleans it up afterwards. The contract suite runs against every kind in :data:`PROVIDER_KINDS`.

Transports:

* ``local``: the semantics in this process (``LocalProvider``, i.e. ``EngineProvider``).
* ``store``: a real gRPC store server on ``127.0.0.1:0`` serving that provider, and a
  ``SessionStoreProvider`` connected to it (like Optuna's gRPC proxy over RDB).
* ``cached``: the same store read through the watch-coherent ``CachedProvider`` that
  ``SessionContext.connect`` gives workers.

Engines (:class:`support.engines.EngineMaker`): ``memory``; ``sqlite`` (a fresh data
directory); ``redis`` (the test session's real redis-server, under a key prefix of its own).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dspex.state import LocalProvider, StateProvider
from support.engines import ENGINE_KINDS, EngineMaker

TRANSPORTS = ("local", "store", "cached")

PROVIDER_KINDS: list[str] = [
    *(f"{transport}-{engine}" for transport in ("local", "store") for engine in ENGINE_KINDS),
    "cached-memory",
]
"""Every engine directly and through the store; the cache, which only ever talks to the store
client, on memory."""

_ENGINE_OPTIONS = ("history_size", "log_size")


def engine_of(kind: str) -> str:
    """The engine part of a kind (``"store-redis"`` -> ``"redis"``)."""
    return kind.partition("-")[2]


@contextmanager
def provide(kind: str, *, redis_url: str | None = None, **options: Any) -> Iterator[StateProvider]:
    """Yield a fresh provider of ``kind``.

    Args:
        kind: ``"TRANSPORT-ENGINE"``, e.g. ``"store-sqlite"``.
        redis_url: the redis-server of the ``redis`` engine (the ``redis_server`` fixture).
        options: ``LocalProvider`` options; ``history_size`` and ``log_size`` size the engine.
    """
    transport, _, engine = kind.partition("-")
    if transport not in TRANSPORTS or engine not in ENGINE_KINDS:
        raise ValueError(
            f"unknown provider kind {kind!r}; use TRANSPORT-ENGINE, e.g. local-sqlite"
        )
    sizes = {key: options.pop(key) for key in _ENGINE_OPTIONS if key in options}
    with tempfile.TemporaryDirectory(prefix="dspex-provider-") as directory:
        engines = EngineMaker(engine, Path(directory), redis_url)
        try:
            provider = LocalProvider(engines.new(**sizes), **options)
            try:
                if transport == "local":
                    yield provider
                else:
                    with served_client(provider, cached=transport == "cached") as client:
                        yield client
            finally:
                provider.close()
        finally:
            engines.close_all()


@contextmanager
def served_client(provider: StateProvider, *, cached: bool = False) -> Iterator[StateProvider]:
    """A real store server around ``provider`` and a client connected to it; both are stopped
    afterwards (``provider`` itself stays open)."""
    from dspex.state.store import CachedProvider, SessionStoreProvider, StoreServer

    server = StoreServer.start(provider, "127.0.0.1:0")
    client: StateProvider | None = None
    try:
        remote = SessionStoreProvider(server.address, timeout=20.0)
        remote.wait_ready(timeout=10.0)
        client = CachedProvider(remote) if cached else remote
        yield client
    finally:
        if client is not None:
            client.close()
        server.stop(grace=0.5)
