"""Baselines for ``dspex bench bridge``: a bare ``grpc.aio`` server with no dspex code in it.

It runs in a spawned process on loopback TCP, like the store server the bridge figures use, and
speaks raw bytes (no protobuf, no auth, no semantics) through grpc's generic handlers:

* ``/bench.Raw/Echo`` (unary): returns the request, the floor of any unary call (get, set);
* ``/bench.Raw/Subscribe`` (server stream) and ``/bench.Raw/Poke`` (unary): a poke pushes its
  payload to every open subscription, the floor of a watch delivery (a set that reaches
  watchers).

:func:`subscribers_main` is the watcher side of the fan-out floor: a process of raw
subscriptions, each read by its own thread, laid out as the store's watcher processes are.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final, TypeVar

__all__ = [
    "ECHO",
    "POKE",
    "SUBSCRIBE",
    "raw_server",
    "report_arrivals",
    "spawned_server",
    "subscribe",
    "subscribers_main",
    "unary",
]

ECHO: Final = "/bench.Raw/Echo"
POKE: Final = "/bench.Raw/Poke"
SUBSCRIBE: Final = "/bench.Raw/Subscribe"

T = TypeVar("T")


def _identity(data: bytes) -> bytes:
    return data


def _serve_main(conn: Any) -> None:
    """Child process: serve the raw methods until the parent says stop (or goes away)."""
    asyncio.run(_serve(conn))


async def _serve(conn: Any) -> None:
    import grpc

    subscribers: set[asyncio.Queue[bytes]] = set()

    async def echo(request: bytes, _context: Any) -> bytes:
        return request

    async def poke(request: bytes, _context: Any) -> bytes:
        for queue in subscribers:
            queue.put_nowait(request)
        return b""

    async def subscribe(request: bytes, _context: Any) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        subscribers.add(queue)
        try:
            yield b"started"
            while True:
                yield await queue.get()
        finally:
            subscribers.discard(queue)

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo, _identity, _identity),
        "Poke": grpc.unary_unary_rpc_method_handler(poke, _identity, _identity),
        "Subscribe": grpc.unary_stream_rpc_method_handler(subscribe, _identity, _identity),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Raw", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    conn.send(f"127.0.0.1:{port}")
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, conn.recv)
    except EOFError:
        pass
    await server.stop(0.2)


def raw_server() -> AbstractContextManager[str]:
    """The bare server in a spawned process; yields its ``HOST:PORT``."""
    return spawned_server(_serve_main, "bench raw gRPC server")


@contextmanager
def spawned_server(main: Callable[[Any], None], what: str) -> Iterator[str]:
    """Run ``main(conn)`` in a spawned process; yield the address it sends on ``conn``, and
    tell it to stop (``conn`` receives) when done."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=main, args=(child,), daemon=True)
    process.start()
    try:
        if not parent.poll(30):
            raise RuntimeError(f"{what} did not start within 30 s")
        yield str(parent.recv())
    finally:
        parent.send("stop")
        process.join(10)
        if process.is_alive():
            process.terminate()


def unary(channel: Any, method: str) -> Callable[[bytes], bytes]:
    """A sync callable for a raw unary ``method`` on ``channel``."""
    call: Callable[[bytes], bytes] = channel.unary_unary(
        method, request_serializer=_identity, response_deserializer=_identity
    )
    return call


def subscribe(channel: Any) -> Iterator[bytes]:
    """A raw subscription; its first message (``b"started"``) is already consumed."""
    stream: Iterator[bytes] = channel.unary_stream(
        SUBSCRIBE, request_serializer=_identity, response_deserializer=_identity
    )(b"")
    if next(stream) != b"started":
        raise RuntimeError("raw subscription did not start")
    return stream


def subscribers_main(address: str, count: int, wait: float, conn: Any) -> None:
    """Child process: ``count`` raw subscriptions on one channel, each read by its own thread
    (see :func:`report_arrivals`). Pokes carry their step as decimal text.

    This is the layout of the store's fan-out watcher processes (a thread per stream), with no
    dspex code on either side.
    """
    import grpc

    channel = grpc.insecure_channel(address)

    def steps(stream: Iterator[bytes]) -> Iterator[int]:
        with contextlib.suppress(grpc.RpcError):  # cancelled at the end
            for message in stream:
                yield int(message)

    def cancel(stream: Any) -> None:
        stream.cancel()

    report_arrivals(conn, [subscribe(channel) for _ in range(count)], steps, cancel, wait)
    channel.close()


def report_arrivals(
    conn: Any,
    receivers: list[T],
    steps: Callable[[T], Iterable[int]],
    cancel: Callable[[T], object],
    wait: float,
) -> None:
    """Read each receiver's ``steps`` on its own thread, noting when each step arrived; say
    "ready" on ``conn``; once ``conn`` names the last step sent, wait (at most ``wait``
    seconds) until every receiver has it, cancel them, and send back the (step, arrival ns)
    of each receiver."""
    arrivals: list[list[tuple[int, int]]] = [[] for _ in receivers]

    def consume(receiver: T, out: list[tuple[int, int]]) -> None:
        for step in steps(receiver):
            out.append((step, time.perf_counter_ns()))

    threads = [
        threading.Thread(target=consume, args=(receiver, out), daemon=True)
        for receiver, out in zip(receivers, arrivals, strict=True)
    ]
    for thread in threads:
        thread.start()
    conn.send("ready")
    last = conn.recv()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not all(out and out[-1][0] == last for out in arrivals):
        time.sleep(0.05)
    for receiver in receivers:
        cancel(receiver)
    for thread in threads:
        thread.join(5)
    conn.send(arrivals)
