"""`birdtrap serve`: the REST API, web pages, review and metrics (needs the `web` extra).

Kept apart from cli.py so the edge install (no FastAPI) never imports the web stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from birdtrap.cli.common import config_option, load_config


@click.command()
@click.option("--host", help="Address to listen on [default: serve.host, else 127.0.0.1]; 0.0.0.0 for phones on the network.")
@click.option("--port", type=click.IntRange(1, 65535), help="TCP port [default: serve.port, else 8080].")
@click.option("--token", help="Bearer token for review and classify with record=true (16+ characters) [default: serve.token].")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the token from this file instead (keeps it out of `ps`).",
)
@click.option("--upload-limit-mb", type=click.FloatRange(min=0, min_open=True), help="Largest POST /classify body in MB [default: 50].")
@click.option(
    "--thumbnail-cache", type=click.Path(file_okay=False, path_type=Path), help="Thumbnail cache folder [default: beside the database]."
)
@config_option
def serve(
    host: str | None,
    port: int | None,
    token: str | None,
    token_file: Path | None,
    upload_limit_mb: float | None,
    thumbnail_cache: Path | None,
    config_path: Path | None,
) -> None:
    """Serve the API (/api/v1), the web pages and /metrics; beside the daemon or on its own.

    Reads the daemon's database (both can run at once) and loads the same models for
    POST /api/v1/classify. Without a token, review and recording are refused.

    \b
        birdtrap serve --config /etc/birdtrap/config.yaml
        birdtrap serve --host 0.0.0.0 --token-file /etc/birdtrap/token
    """
    import uvicorn

    from birdtrap.web import create_app
    from birdtrap.web.settings import ServeSettings

    config = load_config(config_path)
    if token_file is not None:
        token = token_file.read_text(encoding="utf-8").strip()
    flags: dict[str, Any] = {"host": host, "port": port, "token": token, "upload_limit_mb": upload_limit_mb}
    flags["thumbnail_cache"] = thumbnail_cache.resolve() if thumbnail_cache else None
    # The `serve:` section of config.yaml; flags given win over it.
    base = config.serve
    try:
        settings = ServeSettings.model_validate({**base.model_dump(), **{k: v for k, v in flags.items() if v is not None}})
    except ValidationError as e:
        problems = "; ".join(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}" for err in e.errors())
        raise click.ClickException(problems) from None
    app = create_app(config, settings)
    click.echo(f"serving on http://{settings.host}:{settings.port}/ (API /api/v1, metrics /metrics); Ctrl-C stops", err=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False, server_header=False)
