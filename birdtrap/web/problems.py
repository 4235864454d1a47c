"""Every error as RFC 9457 problem details (`application/problem+json`).

Clients (and the page's own scripts) then handle one shape: `type`, `title`, `status`, `detail`
and, where useful, extension members such as `errors` (bad parameters) or `items` (a batch).
A browser asking for a page (not under /api/) gets the same words as a small HTML page instead of
raw JSON (issue 18).
"""

from __future__ import annotations

import html
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:birdtrap:problem:"


class ProblemDetails(BaseModel):
    """The body of every error response (RFC 9457); extension members are allowed."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class Problem(Exception):
    """Raised by a route to answer with problem details; `kind` becomes the `type` URN."""

    def __init__(self, status: int, kind: str, detail: str, headers: dict[str, str] | None = None, **extensions: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        return problem_body(self.status, self.detail, self.kind, instance, **self.extensions)


def problem_body(status: int, detail: str | None, kind: str | None = None, instance: str | None = None, **extensions: Any) -> dict:
    body: dict[str, Any] = {
        "type": TYPE_BASE + kind if kind else "about:blank",
        "title": _title(status),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return body


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], media_type=MEDIA_TYPE, headers=headers)


ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · birdtrap</title><link rel="stylesheet" href="/static/style.css"></head>
<body><header><a class="brand" href="/">birdtrap</a><nav><a href="/">Latest</a> <a href="/today">Today</a>
<a href="/review">Review</a> <a href="/gallery">Gallery</a> <a href="/stats">Stats</a> <a href="/failed">Failed</a></nav></header>
<main><h1>{status} {title}</h1><p class="problem-detail">{detail}</p>{errors}</main></body></html>
"""


def wants_page(request: Request) -> bool:
    """A browser asking for one of the pages (not the API): it gets the error as a page."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def answer(request: Request, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """The problem as problem+json, or as a small HTML page for a browser on a page."""
    if not wants_page(request):
        return problem_response(body, headers)
    errors = "".join(f"<li>{html.escape(e['location'])}: {html.escape(e['message'])}</li>" for e in body.get("errors", []))
    page = ERROR_PAGE.format(
        status=body["status"],
        title=html.escape(body["title"]),
        detail=html.escape(body.get("detail") or ""),
        errors=f"<ul>{errors}</ul>" if errors else "",
    )
    return HTMLResponse(page, status_code=body["status"], headers=headers)


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _bad_parameters(request: Request, error: RequestValidationError) -> Response:
    errors = [
        {"location": ".".join(str(part) for part in e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")}
        for e in error.errors()
    ]
    first = errors[0] if errors else {"location": "request", "message": "invalid"}
    detail = f"{first['location']}: {first['message']}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
    return answer(request, problem_body(422, detail, "bad-parameters", request.url.path, errors=errors))


def install(app: FastAPI) -> None:
    """Route every error the app can produce through problem details."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, problem: Problem) -> Response:
        return answer(request, problem.body(request.url.path), problem.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> Response:
        return _bad_parameters(request, error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> Response:
        detail = error.detail if isinstance(error.detail, str) and error.detail != _title(error.status_code) else None
        if error.status_code == 404 and detail is None:
            if wants_page(request):
                detail = f"there is no page at {request.url.path}; the links above lead to the pages there are."
            else:
                detail = f"nothing at {request.url.path}; the API lives under /api/v1 (see /api/v1/openapi.json)."
        kind = getattr(error, "kind", None)  # raised below the routes with a type of its own (413 while streaming)
        return answer(request, problem_body(error.status_code, detail, kind, request.url.path), dict(error.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        # The traceback goes to the journal once, here; the client gets no internals.
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return answer(
            request, problem_body(500, "an unexpected error occurred; the server log has the details.", "internal", request.url.path)
        )
