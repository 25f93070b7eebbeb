"""Provider kinds for the shared contract suite (Optuna's StorageSupplier, adapted).

``provide(kind)`` yields a ready StateProvider of that kind and cleans it up afterwards. Every
backend and every wrapper is one more kind here; the contract suite runs against all of them.

* ``local``: a LocalProvider.
* ``session_store``: a real gRPC store server on ``127.0.0.1:0`` wrapping a LocalProvider, and a
  SessionStoreProvider connected to it.
* ``session_store_cached``: the same, read through the watch-coherent CachedProvider that
  ``SessionContext.connect`` gives workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dspex.state import LocalProvider, StateProvider

PROVIDER_KINDS: list[str] = ["local", "session_store", "session_store_cached"]


@contextmanager
def provide(kind: str, **options: int) -> Iterator[StateProvider]:
    """Yield a fresh provider of ``kind``; ``options`` go to the underlying LocalProvider."""
    if kind == "local":
        provider = LocalProvider(**options)
        try:
            yield provider
        finally:
            provider.close()
        return
    if kind in ("session_store", "session_store_cached"):
        with _served(LocalProvider(**options), cached=kind.endswith("_cached")) as client:
            yield client
        return
    raise ValueError(f"unknown provider kind {kind!r}")


@contextmanager
def _served(local: LocalProvider, *, cached: bool) -> Iterator[StateProvider]:
    """A real store server around ``local`` and a client connected to it."""
    from dspex.state.store import CachedProvider, SessionStoreProvider, StoreServer

    server = StoreServer.start(local, "127.0.0.1:0")
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
        local.close()
