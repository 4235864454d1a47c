"""`birdtrap serve`: REST API, web pages, review and Prometheus metrics over the daemon's database.

Needs the `web` extra (FastAPI, uvicorn, Jinja2, python-multipart, prometheus_client). Importing
this package (or `birdtrap.web.settings`, which config.py may use) needs none of them: the app is
imported only when `create_app` is first asked for, so the edge install stays without FastAPI.
"""

from __future__ import annotations

from typing import Any

from birdtrap.web.settings import ServeSettings

__all__ = ["create_app", "ServeSettings"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from birdtrap.web.app import create_app

        return create_app
    raise AttributeError(f"module 'birdtrap.web' has no attribute {name!r}")
