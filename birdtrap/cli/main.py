"""The `birdtrap` command: parse arguments, call the library, print. No logic of its own."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from birdtrap import __version__
from birdtrap.cli.common import BirdtrapGroup, config_option, load_config

log = logging.getLogger(__name__)

# Every command but `run`, imported when it is run or listed (cli.common.LazyGroup): the daemon
# does not carry the other commands' modules (issue 22 item 5).
COMMANDS = {
    "classify": "birdtrap.cli.photos:classify",
    "evaluate": "birdtrap.cli.photos:evaluate",
    "sightings": "birdtrap.cli.queries:sightings",
    "events": "birdtrap.cli.queries:events",
    "failed": "birdtrap.cli.queries:failed",
    "stats": "birdtrap.cli.queries:stats",
    "model": "birdtrap.cli.models:model",
    "db": "birdtrap.cli.database:db",
    "export": "birdtrap.cli.export:export",
    "plot": "birdtrap.cli.health:plot",
    "doctor": "birdtrap.cli.health:doctor",
    "install": "birdtrap.cli.install:install",
    "uninstall": "birdtrap.cli.install:uninstall",
    "serve": "birdtrap.cli.web:serve",
    "learn": "birdtrap.cli.learn:learn",
    "archive": "birdtrap.cli.scale:archive",
    "sync": "birdtrap.cli.scale:sync",
    "fleet": "birdtrap.cli.scale:fleet",
}


@click.group(cls=BirdtrapGroup, lazy=COMMANDS)
@click.version_option(__version__, prog_name="birdtrap")
def cli() -> None:
    """birdtrap: find and name the birds in camera-trap photos.

    \b
        birdtrap model fetch inat-birds     # install the default model
        birdtrap run                        # watch the folder in config.yaml
        birdtrap sightings --since 2024-05-01
    """


@cli.command()
@click.option("--serve", "with_server", is_flag=True, help="Also serve the web pages and API (serve: section) from this process.")
@config_option
def run(with_server: bool, config_path: Path | None) -> None:
    """Watch the folder and record every photo's sightings (what systemd starts).

    Runs in the foreground until SIGTERM or Ctrl-C; the batch in flight is finished first.

    \b
        birdtrap run --config /etc/birdtrap/config.yaml
        birdtrap run --serve
    """
    from birdtrap.daemon import loop

    config = load_config(config_path)
    if not with_server:
        loop.run(config)
        return
    from birdtrap.web.app import BackgroundServer, create_app
    # The server loads its own models: TFLite interpreters are not shared between threads.
    server = BackgroundServer(create_app(config, config.serve), config.serve.host, config.serve.port).start()
    click.echo(f"serving on {server.url}/", err=True)
    try:
        loop.run(config)
    finally:
        server.stop()


def main() -> None:
    cli(prog_name="birdtrap")


if __name__ == "__main__":
    main()
