"""The `birdtrap` command: parse arguments, call the library, print. No logic of its own."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from birdtrap import __version__
from birdtrap.cli.common import BirdtrapGroup, config_option, load_config
from birdtrap.cli.export import export
from birdtrap.cli.health import doctor, plot
from birdtrap.cli.install import install, uninstall
from birdtrap.cli.learn import learn
from birdtrap.cli.scale import archive, export_network, fleet, sync
from birdtrap.cli.web import serve

log = logging.getLogger(__name__)


@click.group(cls=BirdtrapGroup)
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


from birdtrap.cli.database import db  # noqa: E402 - the group above comes first
from birdtrap.cli.models import model  # noqa: E402
from birdtrap.cli.photos import classify, evaluate  # noqa: E402
from birdtrap.cli.queries import events, failed, sightings, stats  # noqa: E402

for command in (classify, evaluate, sightings, events, failed, stats, model, db, export, plot, doctor, install, uninstall, serve,
                learn, archive, sync, fleet):
    cli.add_command(command)
export.add_command(export_network, "network")


def main() -> None:
    cli(prog_name="birdtrap")


if __name__ == "__main__":
    main()
