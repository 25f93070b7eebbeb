"""Wire: store addresses, channel options, connecting and waiting for readiness.

Accepted addresses: ``grpc://host:port``, ``host:port`` (IPv6 as ``[::1]:port``),
``grpcs://host:port`` (TLS), ``unix:///absolute/path`` and ``unix:relative/path``. Clients
and the server share one parser, so an address printed by ``dspex serve`` is one every client
accepts.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import grpc
from grpc.experimental import ChannelOptions  # also what grpc needs to read the option

from dspex import _tracing
from dspex._proto.bridge.v1 import store_pb2, store_pb2_grpc
from dspex.errors import StoreError, StoreUnavailableError
from dspex.state.wire.tls import ClientTls

__all__ = [
    "CONNECT_TIMEOUT_MS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "HOLDER_KEY",
    "RECONNECT_POLL",
    "LOCK_OWNER_KEY",
    "WRITER_KEY",
    "StoreAddress",
    "aio_channel",
    "client_options",
    "connect",
    "encoded_unary",
    "parse_address",
    "reconnect_in_background",
    "server_options",
    "wait_ready",
]

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest gRPC message either side accepts unless configured otherwise."""

WRITER_KEY = "dspex-writer"
"""Call metadata naming who writes (recorded as ``writer``); the server uses the peer if absent."""

LOCK_OWNER_KEY = "dspex-lock-owner"
"""Call metadata carrying the writer's optimization-lock token (``current_lock_owner``)."""

HOLDER_KEY = "dspex-lock-holder"
"""Call metadata of AcquireLock naming the client's HoldLocks stream."""

CONNECT_TIMEOUT_MS: Final = 20_000
"""How long one connection attempt may take to finish its handshake (TCP, TLS and the server's
HTTP/2 SETTINGS): gRPC's own default, kept on purpose. gRPC C-core reads it from
``grpc.min_reconnect_backoff_ms`` (its *minimum connect timeout*, not a pause between
attempts): set to 100 ms, a store that was busy, paused or scheduled late for a moment failed
a fresh client's first call with "connection attempt timed out before receiving SETTINGS
frame". A refused connection (a store restarting) fails at once whatever this is, so it does
not slow finding a restarted store again: the backoff below decides that."""

_RECONNECT_OPTIONS: tuple[tuple[str, Any], ...] = (
    # A restarted store is found again within ~0.1-1 s instead of grpc's default 1-120 s.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.min_reconnect_backoff_ms", CONNECT_TIMEOUT_MS),  # the connect timeout, see above
    # Detect a dead peer on an idle watch stream (the server also sends heartbeats).
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


@dataclass(frozen=True, slots=True)
class StoreAddress:
    """A parsed store address.

    Attributes:
        target: the gRPC target string (``host:port`` or ``unix:...``).
        url: the canonical form printed and accepted everywhere (``grpc://host:port``,
            ``grpcs://host:port`` or ``unix:///abs/path``).
        tls: connect with TLS (a ``grpcs://`` address).
    """

    target: str
    url: str
    tls: bool = False

    @property
    def is_unix(self) -> bool:
        """True for a unix-domain socket."""
        return self.target.startswith("unix:")


def parse_address(address: str) -> StoreAddress:
    """Parse a store address; relative unix paths become absolute.

    Raises:
        StoreError: the address is not one of the accepted forms.
    """
    text = address.strip() if isinstance(address, str) else ""
    if text.startswith("unix:"):
        path = text[len("unix://") :] if text.startswith("unix://") else text[len("unix:") :]
        if path:
            absolute = os.path.abspath(path)
            return StoreAddress(f"unix:{absolute}", f"unix://{absolute}")
    else:
        tls = text.startswith("grpcs://")
        scheme = "grpcs://" if tls else "grpc://"
        hostport = text[len(scheme) :] if text.startswith(scheme) else text
        host, sep, port = hostport.rpartition(":")
        if sep and host and port.isdigit() and "/" not in hostport and int(port) < 65536:
            return StoreAddress(hostport, f"{scheme}{hostport}", tls)
    raise StoreError(
        f"store address {address!r} not understood; use 'grpc://HOST:PORT', 'HOST:PORT', "
        "'grpcs://HOST:PORT' (TLS), 'unix:///ABSOLUTE/PATH' or 'unix:RELATIVE/PATH'",
        address=str(address),
    )


def client_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    """Channel options for a store client."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        *_RECONNECT_OPTIONS,
    ]


def server_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Options for the store server; ``max_message_bytes`` bounds every request it accepts."""
    return [
        ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Refuse a port another server already holds instead of silently sharing it.
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
    ]


def connect(
    address: StoreAddress,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    tls: ClientTls | None = None,
) -> tuple[grpc.Channel, Any]:
    """Open a sync channel to the store and return it with a ``SessionStore`` stub.

    The channel connects lazily: an unreachable store is reported by the first call. A
    ``grpcs://`` address uses TLS (``tls`` says what to trust; the system roots by default).
    """
    # A server stream on this channel is read by the thread iterating it, blocked inside gRPC,
    # not through the channel's spin thread (one wake-up per message instead of two).
    options = [
        *client_options(max_message_bytes),
        (ChannelOptions.SingleThreadedUnaryStream, 1),
    ]
    if address.tls:
        credentials = (tls or ClientTls()).credentials()
        channel = grpc.secure_channel(address.target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address.target, options=options)
    if _tracing.enabled():  # a client span per call, its context sent in the metadata
        from dspex.state.wire.tracing import traced_channel

        channel = traced_channel(channel)
    return channel, store_pb2_grpc.SessionStoreStub(channel)


def encoded_unary(channel: grpc.Channel, rpc: str) -> Any:
    """A ``SessionStore`` unary RPC on ``channel`` that sends and returns encoded messages
    (bytes), for a hot call whose caller keeps its encoded requests and decoded answers."""
    return channel.unary_unary(
        f"/{_SESSION_STORE}/{rpc}",
        request_serializer=None,  # bytes are sent as they are
        response_deserializer=None,
        _registered_method=True,
    )


_SESSION_STORE: Final = store_pb2.DESCRIPTOR.services_by_name["SessionStore"].full_name


def aio_channel(
    address: StoreAddress, max_message_bytes: int, tls: ClientTls | None = None
) -> grpc.aio.Channel:
    """Open a ``grpc.aio`` channel to the store (TLS for a ``grpcs://`` address)."""
    options = client_options(max_message_bytes)
    if address.tls:
        credentials = (tls or ClientTls()).credentials()
        return grpc.aio.secure_channel(address.target, credentials, options=options)
    return grpc.aio.insecure_channel(address.target, options=options)


def wait_ready(channel: grpc.Channel, address: StoreAddress, timeout: float) -> None:
    """Block until ``channel`` is connected.

    Raises:
        StoreUnavailableError: not connected within ``timeout`` seconds.
    """
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise StoreUnavailableError(
            f"session store {address.url} is not reachable after {timeout:g} s; "
            "check the address and that `dspex serve` is running",
            address=address.url,
        ) from None


RECONNECT_POLL: Final = 0.5
"""Seconds each background ping waits for a channel that lost its store to connect again."""


def reconnect_in_background(
    stub: Any, current: Callable[[], bool], done: Callable[[], None]
) -> None:
    """Keep a channel that lost its store trying to reach it again; ``done()`` once it did,
    or once ``current()`` says the channel was given up (its client closed).

    Called after a call failed because the store was unreachable. gRPC's poll-based client
    transport, which spawned ``dspex.Remote`` workers use (see :mod:`dspex.remote._transport`),
    moves a reconnection attempt on only while some thread waits on the channel, and calls
    that fail at once while it backs off do not: a restarted store was found again 6-8 s
    after it listened, not within the reconnect backoff's 1 s, and every call in between
    failed. A background thread pings with ``wait_for_ready`` (so it waits on the channel)
    until the store answers. (gRPC's connectivity subscription would poll too, but its thread
    raises when the channel is closed under it.)
    """
    threading.Thread(
        target=_until_reachable, args=(stub, current, done), name="dspex-reconnect", daemon=True
    ).start()


def _until_reachable(stub: Any, current: Callable[[], bool], done: Callable[[], None]) -> None:
    request = store_pb2.PingRequest()
    waiting = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    try:
        while current():
            try:
                stub.Ping(request, timeout=RECONNECT_POLL, wait_for_ready=True)
            except grpc.RpcError as exc:
                if exc.code() in waiting:
                    continue
            except ValueError:  # the channel was closed meanwhile
                pass
            return  # answered (an error status too: the store is there), or closed
    finally:
        done()
