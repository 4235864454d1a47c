"""What every route needs, built once by `create_app` and kept on `app.state.web`."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from birdtrap.config import Config
from birdtrap.errors import StoreError, first_line
from birdtrap.web.classify import ClassifyService
from birdtrap.web.metrics import Metrics
from birdtrap.web.problems import Problem
from birdtrap.web.settings import ServeSettings
from birdtrap.web.thumbnails import Thumbnails

T = TypeVar("T")


@dataclass
class WebContext:
    config: Config
    settings: ServeSettings
    sessions: sessionmaker[Session]
    classifier: ClassifyService
    thumbnails: Thumbnails
    metrics: Metrics

    def read(self, work: Callable[[Session], T]) -> T:
        """Run `work` in a read session; a locked or missing database answers 503, not 500."""
        try:
            with self.sessions() as session:
                return work(session)
        except (SQLAlchemyError, StoreError) as e:
            raise Problem(
                503, "database-unavailable", f"the database cannot be read right now ({first_line(e)}); try again.", {"Retry-After": "5"}
            ) from None

    def check_writer(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        """Let a write through only with the configured bearer token.

        401 when no token was sent, 403 when it is wrong, and 403 when the server has no token
        at all: writes are never open by accident.
        """
        expected = self.settings.token_value()
        if expected is None:
            raise Problem(
                403, "writes-disabled", "writing is switched off: this server has no token. Restart it with --token (serve.token)."
            )
        if credentials is None or not credentials.credentials:
            raise Problem(
                401,
                "token-missing",
                "this request changes data and needs the header 'Authorization: Bearer <serve.token>'.",
                {"WWW-Authenticate": 'Bearer realm="birdtrap"'},
            )
        if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
            raise Problem(403, "token-wrong", "the bearer token is not this server's serve.token; check it and send it again.")


def web(request: Request) -> WebContext:
    return request.app.state.web


Context = Annotated[WebContext, Depends(web)]
