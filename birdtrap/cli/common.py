"""What every `birdtrap` command shares: the --config option, loading the config, error handling.

Kept apart from cli.py so command groups in other modules (cli_export, cli_health) can use it
without importing cli.py, which imports them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
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
        try:
            return command(*args, config_path=config_path, **kwargs)
        except BirdtrapError as e:
            raise click.ClickException(str(e)) from e

    return wrapper


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
