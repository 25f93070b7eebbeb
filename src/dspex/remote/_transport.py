"""Layer 3: the gRPC transport of a spawned fleet's processes, chosen before gRPC loads.

gRPC's default (EventEngine) transport reads every socket on a poller thread of its own and
hands each message to the thread waiting for it. A hundred workers on two cores, each receiving
one update per ``session.set``, and a driver whose embedded store writes that update down a
hundred streams, then pay several thread wake-ups per message. gRPC's older transport, chosen
with its documented ``GRPC_EXPERIMENTS`` switch, lets the thread that waits poll the socket
itself:

- a spawned worker (:data:`READER_POLLS`): its watch stream wakes the one thread reading it
  (4.5 -> 1.3 voluntary context switches per update);
- the driver of a spawned fleet, when creating the Remote is what first loads gRPC
  (:data:`STORE_POLLS`): its embedded store's server sockets too (with 12 workers, per set,
  gRPC's EventEngine threads in the driver woke 19-20 times, under 1 with the setting; all its
  threads 33-38 times, 13-28 with it).

gRPC reads the setting once, when it initializes, and keeps it for the whole process; the
variable is set only while that happens (:func:`grpc_transport`), so no process started later
inherits it. A process that has loaded gRPC already (a Ray actor, a driver that opened a store
before) keeps gRPC's default, as does one whose environment sets ``GRPC_EXPERIMENTS`` itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Final

__all__ = [
    "GRPC_EXPERIMENTS_ENV",
    "POLLING_GRPC",
    "READER_POLLS",
    "STORE_POLLS",
    "grpc_transport",
]

GRPC_EXPERIMENTS_ENV: Final = "GRPC_EXPERIMENTS"
"""gRPC's documented switch for its experiments (``-name`` turns one off), read when gRPC loads."""

READER_POLLS: Final = "-event_engine_client"
"""Client sockets polled by the thread waiting on the call (a spawned worker's setting)."""

STORE_POLLS: Final = (
    "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"
)
"""Client and server sockets polled by the threads waiting on them (the setting of a driver
whose embedded store serves a spawned fleet)."""

POLLING_GRPC: Final = ((1, 85),)
"""grpcio versions (major, minor) measured with these experiments: a newer gRPC may have dropped
them (and would log an error naming each unknown one), so no other version gets the setting."""


@contextmanager
def grpc_transport(experiments: str) -> Iterator[bool]:
    """Load gRPC inside this block with ``GRPC_EXPERIMENTS=experiments``; yields True if set.

    Only before gRPC is loaded, only when the environment does not set ``GRPC_EXPERIMENTS``
    itself, and only on a grpcio of :data:`POLLING_GRPC`. gRPC reads the variable when it
    initializes, which the block must cause (open a channel or start a server); the variable
    is removed again after the block, so processes started later (spawned workers, a Ray
    instance with a gRPC of its own) never see it.
    """
    chosen = _may_choose()
    if chosen:
        os.environ[GRPC_EXPERIMENTS_ENV] = experiments
    try:
        yield chosen
    finally:
        if chosen:
            os.environ.pop(GRPC_EXPERIMENTS_ENV, None)


def _may_choose() -> bool:
    if "grpc" in sys.modules or GRPC_EXPERIMENTS_ENV in os.environ:
        return False
    try:
        version = tuple(int(part) for part in metadata.version("grpcio").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return version in POLLING_GRPC
