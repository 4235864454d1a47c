"""`create_app(config)`: the FastAPI application behind `birdtrap serve`.

The app reads the daemon's database (WAL lets both run at once), loads the same models as the
daemon in the background, and adds two tables of its own (corrections, classify cache) through
`store.open_store`. Nothing here is global: several apps can live in one process (tests, or
`birdtrap run --serve`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from birdtrap import __version__, store
from birdtrap.config import Config
from birdtrap.daemon.wiring import build_identifier
from birdtrap.web import api, pages, problems
from birdtrap.web.classify import ClassifyService, Loader
from birdtrap.web.context import WebContext
from birdtrap.web.metrics import Metrics
from birdtrap.web.problems import problem_body, problem_response
from birdtrap.web.settings import ServeSettings
from birdtrap.web.thumbnails import Thumbnails

log = logging.getLogger(__name__)

SMALL_BODY = 256 * 1024  # every request but POST /classify: a review is a few hundred bytes
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


def create_app(config: Config, settings: ServeSettings | None = None, loader: Loader | None = None) -> FastAPI:
    """Build the app for this configuration; the models start loading when the server starts.

    `loader` builds the identifier (default: `birdtrap.daemon.wiring.build_identifier`, as the daemon).
    Raises StoreError when the database cannot be opened.
    """
    settings = settings or ServeSettings()
    sessions = store.open_store(config.database.url, config.database.busy_timeout_seconds)
    classifier = ClassifyService(config, settings, sessions, loader=loader or build_identifier)
    metrics = Metrics(sessions, classifier.info)
    classifier.metrics = metrics
    thumbnails = Thumbnails(config, settings, classifier.upload_folder)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        classifier.start()
        if settings.token is None:
            log.warning("no serve.token: review and classify with record=true are refused; set one to enable them")
        yield

    app = FastAPI(
        title="birdtrap",
        version=__version__,
        summary="Camera-trap birds: sightings, events, review and classification",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # Swagger UI loads from a CDN; a field device is often offline
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.web = WebContext(config, settings, sessions, classifier, thumbnails, metrics)
    problems.install(app)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = api.document_limits(FastAPI.openapi(app), settings.max_files)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(Guard, upload_limit=settings.upload_limit_bytes)
    return app


class _TooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit.

    An HTTPException, so FastAPI's body parsing re-raises it as it is (any other exception there
    becomes a 400) and the problem handler answers 413.
    """

    kind = "too-large"

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


class Guard:
    """Refuses bodies over the limit (413) before or while they arrive; adds security headers.

    A declared Content-Length over the limit is refused before the app reads a byte; a chunked
    body is counted as it streams and cut off at the limit, so a client can never fill the disk.
    """

    def __init__(self, app: ASGIApp, upload_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if scope["path"] == "/api/v1/classify" else SMALL_BODY
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        detail = _too_large(scope["path"], limit)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            # uvicorn discards the rest of a body once the answer is sent, so the client can
            # read the 413; an absurd declared size gets the connection closed instead.
            await self._refuse(scope, send_with_headers, detail, close=declared > max(8 * limit, 64 * 1024 * 1024))
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(detail)
            return message

        try:
            await self.app(scope, counted, send_with_headers)
        except _TooLarge:
            if not started:
                await self._refuse(scope, send_with_headers, detail)

    async def _refuse(self, scope: Scope, send: Send, detail: str, close: bool = False) -> None:
        response = problem_response(problem_body(413, detail, "too-large", scope["path"]), {"Connection": "close"} if close else None)
        await response(scope, _nothing, send)


def _too_large(path: str, limit: int) -> str:
    if path == "/api/v1/classify":
        return f"the photos exceed {limit / 1024 / 1024:.1f} MB (serve.upload_limit_mb); send fewer or smaller photos per request."
    return f"the request body exceeds {limit // 1024} KB."


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BackgroundServer:
    """uvicorn serving an app from a thread: `birdtrap run --serve`, the tests and the load bench.

    The socket is bound before the thread starts, so `url` is right at once (port 0 picks a free
    port) and nothing races for the port.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import socket

        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.host, self.port = host, self.socket.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=False, server_header=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, name="web", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        """Start serving; returns once the server accepts connections. Raises RuntimeError if it cannot."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the web server did not start on {self.url}; see the log above.")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.socket.close()


__all__ = ["create_app", "Guard", "BackgroundServer"]
