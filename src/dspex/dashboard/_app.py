"""The dashboard's web application (Starlette): one page, its local assets, and a small JSON API.

Routes:

* ``GET /``: the page. ``GET /static/...``: its script and style, and ``plotly.min.js`` read
  from the installed ``plotly`` package; nothing comes from anywhere else (the
  Content-Security-Policy header says so to the browser too).
* ``GET /api/sessions``: the sessions the token may read, plus those named on the command line.
* ``GET /api/sessions/{id}/events``: server-sent events from the store's watch stream
  (see :mod:`dspex.dashboard._feed`), live until the page goes away. A page that reads too
  slowly gets ``restart`` (and follows again from the current state) rather than a gap.
* ``POST /api/sessions/{id}/variables/{name}/rollback`` with ``{"version": N}``: writes that
  version's value as a new version. Refused on a read-only dashboard; the store refuses it
  when the token may not write. The page must send the ``X-Dspex-Dashboard`` header with the
  key it was served, so another web site cannot make a visitor's browser roll back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import importlib.resources
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import suppress
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from dspex.dashboard._feed import Message, SessionFeed, page_record
from dspex.dashboard._values import json_text
from dspex.errors import AccessError, DspexError
from dspex.state import SessionContext, StateProvider

__all__ = ["KEY_HEADER", "Dashboard"]

KEY_HEADER = "X-Dspex-Dashboard"
"""Header a rollback request must carry, holding the key the page was served with."""
_KEEPALIVE_SECONDS = 15.0
_MAX_PENDING = 10_000
"""Messages queued for one page; beyond that it is told to ``restart`` from the current state."""
_STATIC = importlib.resources.files("dspex.dashboard") / "static"
_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'"
)


class Dashboard:
    """The dashboard of one store client: its Starlette app and the live feeds it serves.

    Args:
        provider: the store client (with the dashboard's token); the caller closes it.
        read_only: never roll back, even when the token may write.
        sessions: session ids listed even when the store does not list them (a token that
            may observe but not read a session is not shown it by ``list_sessions``).
    """

    def __init__(
        self, provider: StateProvider, *, read_only: bool = False, sessions: Iterable[str] = ()
    ) -> None:
        self.provider = provider
        self.read_only = read_only
        self.sessions = tuple(sessions)
        self.key = secrets.token_urlsafe(24)
        self._feeds: set[SessionFeed] = set()
        self.app = Starlette(
            routes=[
                Route("/", self._page),
                Route("/static/plotly.min.js", self._plotly),
                Mount("/static", StaticFiles(directory=str(_STATIC)), name="static"),
                Route("/api/sessions", self._sessions),
                Route("/api/sessions/{session_id}/events", self._events),
                Route(
                    "/api/sessions/{session_id}/variables/{name}/rollback",
                    self._rollback,
                    methods=["POST"],
                ),
            ],
            middleware=[Middleware(_SecurityHeaders)],
        )

    def close_feeds(self) -> None:
        """End every live event stream (before the web server stops, so it stops at once)."""
        for feed in list(self._feeds):
            feed.stop()

    async def _page(self, request: Request) -> Response:
        page = (_STATIC / "index.html").read_text(encoding="utf-8")
        page = page.replace("{{key}}", html.escape(self.key))
        page = page.replace("{{read_only}}", "true" if self.read_only else "false")
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def _plotly(self, request: Request) -> Response:
        return FileResponse(_plotly_path(), media_type="text/javascript")

    async def _sessions(self, request: Request) -> Response:
        try:
            infos = await run_in_threadpool(self.provider.list_sessions)
        except DspexError as exc:
            return _error(exc)
        listed = [dataclasses.asdict(info) for info in infos]
        known = {info["session_id"] for info in listed}
        listed += [{"session_id": sid} for sid in self.sessions if sid not in known]
        return _json(listed)

    async def _events(self, request: Request) -> Response:
        view = SessionContext(self.provider, request.path_params["session_id"])
        loop = asyncio.get_running_loop()
        messages: asyncio.Queue[Message] = asyncio.Queue()

        def deliver(message: Message) -> None:  # on the event loop
            if messages.qsize() < _MAX_PENDING:
                messages.put_nowait(message)
            elif not feed.stopped:  # the page reads too slowly: it starts afresh, no gap
                feed.stop()
                messages.put_nowait({"type": "restart", "reason": "the page fell behind"})

        def emit(message: Message) -> None:  # on the feed's thread
            with suppress(RuntimeError):  # the loop has closed: nobody is listening
                loop.call_soon_threadsafe(deliver, message)

        feed = SessionFeed(view, emit, read_only=self.read_only)
        try:
            await run_in_threadpool(feed.open)
        except DspexError as exc:
            return _error(exc)
        self._feeds.add(feed)
        feed.start()
        return StreamingResponse(
            self._stream(feed, messages),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _stream(
        self, feed: SessionFeed, messages: asyncio.Queue[Message]
    ) -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    message = await asyncio.wait_for(messages.get(), _KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                yield f"event: {message['type']}\ndata: {json_text(message)}\n\n"
                if message["type"] in ("end", "restart"):
                    return
        finally:
            feed.stop()
            self._feeds.discard(feed)

    async def _rollback(self, request: Request) -> Response:
        if not secrets.compare_digest(request.headers.get(KEY_HEADER, ""), self.key):
            return _refused(403, f"missing or wrong {KEY_HEADER} header: reload the page")
        if self.read_only:
            return _refused(403, "this dashboard is read-only (started with --read-only)")
        try:
            body = await request.json()
        except ValueError:
            body = None
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            return _refused(400, 'send a JSON body {"version": N} with a kept version N >= 1')
        view = SessionContext(self.provider, request.path_params["session_id"])
        try:
            record = await run_in_threadpool(view.rollback, request.path_params["name"], version)
        except DspexError as exc:
            return _error(exc)
        return _json(page_record(record))


class _SecurityHeaders:
    """ASGI middleware adding the Content-Security-Policy (local assets only) to every answer.

    Plain ASGI rather than ``BaseHTTPMiddleware``, which would buffer the event streams.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: AsgiMessage) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = _CSP
                headers["X-Content-Type-Options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def _plotly_path() -> str:
    """The plotly.js bundle that the installed ``plotly`` package ships."""
    return str(importlib.resources.files("plotly") / "package_data" / "plotly.min.js")


def _error(exc: DspexError) -> Response:
    status = 403 if isinstance(exc, AccessError) else 404 if isinstance(exc, LookupError) else 409
    return _refused(status, str(exc), code=exc.code)


def _refused(status: int, message: str, *, code: str = "dashboard") -> Response:
    body: dict[str, Any] = {"error": message, "code": code}
    return _json(body, status)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json_text(body), status_code=status, media_type="application/json")
