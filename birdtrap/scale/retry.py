"""One retry loop and one rule for what is worth retrying, for sync and the archive.

A lost or refused connection, a locked database or a connection the pool had to drop is
transient: waiting and trying again can help. A batch the database rejects (a constraint, a
type) is not: retrying only delays the error. The archive adds one case of its own, the race
of two workers registering the same photo at once, where the retry sees the winner.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError, SQLAlchemyError

from birdtrap.errors import first_line

log = logging.getLogger(__name__)


def is_transient(error: BaseException) -> bool:
    """A lost or refused connection, or a locked database: worth retrying."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def is_transient_or_race(error: BaseException) -> bool:
    """`is_transient`, or two writers inserting the same row at once (the retry sees the winner)."""
    return is_transient(error) or isinstance(error, IntegrityError)


def with_retries(
    action: Callable[[], Any],
    what: str,
    retries: int,
    backoff: float,
    on_retry: Callable[[], None] | None = None,
    transient: Callable[[BaseException], bool] = is_transient,
) -> Any:
    """Run `action`; on a transient database error wait backoff x 2^n (+-25 %, at most 5 min) and retry.

    Raises the last error when `retries` retries did not help, and at once for any other error.
    """
    attempt = 0
    while True:
        try:
            return action()
        except SQLAlchemyError as e:
            if not transient(e) or attempt >= retries:
                raise
            delay = min(300.0, backoff * 2**attempt) * random.uniform(0.75, 1.25)
            attempt += 1
            log.warning("%s failed (%s); retry %d of %d in %.1f s", what, first_line(e), attempt, retries, delay)
            if on_retry is not None:
                on_retry()
            time.sleep(delay)
