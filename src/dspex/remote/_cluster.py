"""Layer 3: the Ray backend of ``dspex.Remote`` (``backend="ray"``), imported only when used.

The actors may run on other machines, so the session must be reachable over the network: an
in-process session is promoted to an embedded store listening on a TCP port of this node's IP
(as the cluster sees it) with a random bearer token; a session already in a TCP store (a
``dspex serve`` address) passes that address and its token on. The token reaches the actors
inside the setup, which travels as a Ray object (see :mod:`dspex.runtime._ray`), never in a
constructor argument, an environment variable or a log line; so does the CA certificate of a
session promoted with TLS (``Session(tls_cert=..., tls_key=...)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dspex.errors import WorkerSetupError
from dspex.remote._worker import RemoteSetup, connect_timeout
from dspex.session import Session

if TYPE_CHECKING:
    from dspex.runtime._calls import ProgressCallback
    from dspex.runtime._ray import RayPool

__all__ = ["start_ray_pool"]


def start_ray_pool(
    session: Session,
    module: bytes,
    settings: bytes | None,
    *,
    workers: int,
    retries: int,
    setup_timeout: float,
    actor_options: Mapping[str, Any] | None,
    name: str,
    progress: ProgressCallback | None,
) -> RayPool:
    """Connect to Ray, make the session reachable by the cluster, and start the actors.

    Raises:
        WorkerSetupError: ray is missing, an actor option is unknown, or the actors cannot
            start or cannot reach the store (the message names the address they tried).
        SessionError: the session is reachable only on this machine (a unix socket).
    """
    from dspex.runtime._ray import RayPool, check_actor_options, connect_ray

    check_actor_options(actor_options)  # before anything starts
    address = session.promote(host=connect_ray())
    setup = RemoteSetup.of(session, module, settings, connect_timeout(setup_timeout))
    try:
        return RayPool(
            setup,
            workers=workers,
            retries=retries,
            setup_timeout=setup_timeout,
            actor_options=actor_options,
            name=name,
            progress=progress,
        )
    except WorkerSetupError as exc:
        raise WorkerSetupError(
            f"the Ray actors could not join session {session.session_id!r} through the store at "
            f"{address}: {exc.message}. Every node of the cluster must reach that address "
            "(promote the session with session.promote(host=...) on an interface the nodes "
            "reach, or open it on a `dspex serve` address they reach).",
            address=address,
        ) from exc
