"""Layer 2: the session-store bridge, the one module Layer 3 imports to serve or reach a store.

Importing it loads ``grpc`` (``import dspex`` and ``import dspex.state`` never do), so import it
only where a store is needed: promoting a session, ``dspex serve``, workers, the CLI.

* :class:`StoreServer` runs a store in a background thread (``StoreServer.start(provider)``);
  :func:`serve` runs one in the foreground until SIGTERM/SIGINT. Both take ``auth=``
  (an :class:`AccessPolicy`) and ``tls=`` (a :class:`ServerTls`).
* :class:`SessionStoreProvider` is the sync client (a StateProvider); :class:`CachedProvider`
  wraps it with a watch-coherent read cache. ``SessionContext.connect(address, session_id)``
  combines both for worker processes.
"""

from __future__ import annotations

from dspex.state.client.cache import CachedProvider
from dspex.state.client.client import SessionStoreProvider
from dspex.state.core.access import AccessPolicy
from dspex.state.server.server import SERVICE_NAME, StoreServer, serve
from dspex.state.server.servicer import StoreLimits
from dspex.state.wire.tls import ClientTls, ServerTls, read_pem

__all__ = [
    "SERVICE_NAME",
    "AccessPolicy",
    "CachedProvider",
    "ClientTls",
    "ServerTls",
    "SessionStoreProvider",
    "StoreLimits",
    "StoreServer",
    "read_pem",
    "serve",
]
