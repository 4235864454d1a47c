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
