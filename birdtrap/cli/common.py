"""What every `birdtrap` command shares: the --config option, loading the config, and the one
place where errors become messages (`BirdtrapGroup`).

Kept apart from main.py so the command modules (export, health, ...) can use it without
importing main.py, which imports them.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from birdtrap import config as config_module
from birdtrap.errors import BirdtrapError
from birdtrap.logs import setup_logging


def config_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--config PATH` (else $BIRDTRAP_CONFIG, ./config.yaml, /etc/birdtrap/config.yaml)."""

    @click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Configuration file [default: $BIRDTRAP_CONFIG, ./config.yaml, /etc/birdtrap/config.yaml]",
    )
    @functools.wraps(command)
    def wrapper(*args: Any, config_path: Path | None, **kwargs: Any) -> Any:
        return command(*args, config_path=config_path, **kwargs)

    return wrapper


# The optional features and the extra that brings each one's packages (setup.cfg).
EXTRAS = {
    "fastapi": "web", "uvicorn": "web", "jinja2": "web", "multipart": "web", "prometheus_client": "web", "starlette": "web",
    "dask": "scale", "distributed": "scale", "psycopg": "scale",
    "matplotlib": "plot", "paho": "notify", "apprise": "notify", "cv2": "opencv", "tensorflow": "train",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when one is run or listed (`--help`).

    `birdtrap run` is what systemd keeps alive for months: importing every other command's module
    (exports, plots, sync, their imports) cost the daemon ~2 MB it never uses (issue 22 item 5).
    `lazy` maps a command's name to "module:attribute" of the command object.
    """

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attribute = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


class BirdtrapGroup(LazyGroup):
    """The one place where a library error becomes a message: a BirdtrapError is printed as it is
    (it already names the thing and the fix), and a missing optional package names its extra."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BirdtrapError as e:
            raise click.ClickException(str(e)) from e
        except ModuleNotFoundError as e:
            extra = EXTRAS.get((e.name or "").split(".")[0])
            if extra is None:
                raise
            raise click.ClickException(
                f"`birdtrap {ctx.invoked_subcommand}` needs {e.name}, which this install lacks: pip install 'birdtrap[{extra}]'"
            ) from e


def load_config(config_path: Path | None) -> config_module.Config:
    config = config_module.load(config_path)
    setup_logging(config.logging.level)
    return config


def package_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every Camtrap DP export takes (one deployment or the whole network)."""
    for option in reversed(
        (
            click.option("--data-license", help="License of the data: an SPDX id (CC0-1.0) or a URL; needs --media-license too."),
            click.option("--media-license", help="License of the photos: an SPDX id (CC-BY-4.0) or a URL; needs --data-license too."),
            click.option("--exclude-people", is_flag=True, help="Leave out photos and events of people (their privacy)."),
            click.option("--overwrite", is_flag=True, help="Replace a package already in OUT_DIR."),
        )
    ):
        command = option(command)
    return command


def echo_package_summary(summary: Any) -> None:
    """What a Camtrap DP export wrote, the same lines for one deployment and for the network."""
    click.echo(f"wrote {summary.out_dir}: {', '.join(path.name for path in summary.files)}")
    deployments = getattr(summary, "deployments", None)
    if deployments is not None:
        click.echo(f"deployments {len(deployments)}: {', '.join(deployments)}")
    click.echo(f"photos {summary.media}, event observations {summary.event_observations}, photo observations {summary.media_observations}")
    click.echo(f"taxa: {', '.join(summary.taxa) or 'none'}")
    if getattr(summary, "people_hidden", 0):
        hidden = f"{summary.people_hidden} photos hold people: copies with them hidden are in {summary.out_dir}/media"
        click.echo(f"{hidden} (privacy.redact_people)")
    if getattr(summary, "empty_deployments", None):
        click.echo(f"left out deployments without processed photos: {', '.join(summary.empty_deployments)}")
    if summary.people_left_out:
        click.echo(f"left out {summary.people_left_out} photos of people (--exclude-people)")
    if summary.undated_left_out:
        click.echo(f"left out {summary.undated_left_out} photos without a capture time")
