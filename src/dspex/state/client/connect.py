"""The one store factory: a provider from ``None``, a store address or a provider.

``Session(store=...)``, ``SessionContext.connect``, the CLI and ``Remote`` all open their store
here. Only the top of this module is loaded by ``import dspex``: the store client (and grpc) is
imported when an address is opened, so local sessions never load it.
"""

from __future__ import annotations

from typing import Any

from dspex.state.core.context import require_owner
from dspex.state.core.contract import StateProvider
from dspex.state.core.semantics import EngineProvider
from dspex.state.core.tools import ToolLink

__all__ = ["open_store", "tool_link"]


def open_store(
    store: str | StateProvider | None = None,
    *,
    token: str | None = None,
    follow: str | None = None,
    owner: str | None = None,
    **client_options: Any,
) -> StateProvider:
    """Open the provider a session lives in.

    Args:
        store: None for a new in-process provider (memory engine); a provider, returned as
            is; or a store address (``grpc://HOST:PORT``, ``grpcs://...``, ``unix:///PATH``,
            ``HOST:PORT``) for a :class:`~dspex.state.store.SessionStoreProvider`.
        token: the bearer token for a store address.
        follow: a session id: wrap the store client in a
            :class:`~dspex.state.store.CachedProvider` that follows that session (reads served
            from a watch-coherent cache; what worker processes use).
        owner: with ``follow``: refuse (``PermissionDeniedError``) before following unless
            this principal created the session.
        client_options: more ``SessionStoreProvider`` options (``timeout``, ``root_cert``,
            ``client_cert``, ``client_key``...).

    Raises:
        StoreError: the address is not understood.
        SessionNotFoundError, SessionClosedError: ``follow`` names no open session there.
        StoreUnavailableError: the store cannot be reached (only with ``follow``; otherwise
            the client connects on its first call).
    """
    if store is None:
        return EngineProvider()
    if not isinstance(store, str):
        return store
    # Imported here so `import dspex` and local sessions never load grpc.
    from dspex.state.client.client import SessionStoreProvider

    client = SessionStoreProvider(store, token=token, **client_options)
    if follow is None:
        return client
    from dspex.state.client.cache import CachedProvider

    cached = CachedProvider(client)
    try:
        require_owner(client, follow, owner)
        cached.follow(follow)
    except BaseException:
        cached.close()
        raise
    return cached


def tool_link(
    provider: StateProvider, address: str, token: str | None, root_cert: bytes | None = None
) -> ToolLink:
    """The way to the tool service of the store at ``address`` for a session of ``provider``.

    Shares the provider's channel when it is (or wraps) a store client, so a worker keeps one
    connection to the store; otherwise connects, trusting ``root_cert`` (PEM) for a
    ``grpcs://`` address (default ``$DSPEX_TLS_CA``, else the system roots).
    """
    from dspex.state.client.tools import ToolStoreClient

    return ToolStoreClient.for_session(provider, address, token, root_cert)
