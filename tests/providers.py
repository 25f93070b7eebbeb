"""Provider kinds for the shared contract suite (Optuna's StorageSupplier, adapted).

``provide(kind)`` yields a ready StateProvider of that kind and cleans it up afterwards. Every
backend and every wrapper is one more kind here; the contract suite runs against all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dspex.state import LocalProvider, StateProvider

PROVIDER_KINDS: list[str] = ["local"]


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
    raise ValueError(f"unknown provider kind {kind!r}")
