"""`birdtrap archive`, `birdtrap sync` and `birdtrap export network`: beyond one device.

Thin like the rest of the CLI: parse, call birdtrap.scale.archive / birdtrap.scale.sync / birdtrap.export.network,
print. Dask and psycopg come with the `scale` extra, so each command imports its module only when
it runs and says how to install what is missing. Registered by name in cli/main.py's COMMANDS
(archive, sync, fleet) and in cli/export.py's group (`export network`).
"""

from __future__ import annotations

from pathlib import Path

import click

from birdtrap.cli.common import config_option, echo_package_summary, load_config, package_options
from birdtrap.cli.output import output_options, print_rows


@click.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--scheduler",
    default="local",
    show_default=True,
    help="'local' (a Dask LocalCluster on this machine) or a Dask scheduler address, e.g. tcp://10.0.0.5:8786.",
)
@click.option("--workers", type=click.IntRange(1), help="With --scheduler local: worker processes [default: one per CPU core].")
@click.option("--batch", "batch_size", type=click.IntRange(1, 1024), default=32, show_default=True, help="Photos per task and transaction.")
@click.option("--no-progress", is_flag=True, help="No progress bar (log lines instead).")
@click.option(
    "--camera-from-folders",
    is_flag=True,
    help="The first folder under each given folder is the camera id (<root>/<camera>/...) [default: camera.id of the config].",
)
@click.option(
    "--cameras",
    "camera_map",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV of folder,camera_id[,deployment_id] rows; a folder is absolute or relative to the given folders.",
)
@config_option
def archive(
    folders: tuple[Path, ...],
    scheduler: str,
    workers: int | None,
    batch_size: int,
    no_progress: bool,
    camera_from_folders: bool,
    camera_map: Path | None,
    config_path: Path | None,
) -> None:
    """Classify archived photo folders of any size on Dask, into database.url.

    The same models and rules as `birdtrap run`; photos already on record are skipped, so
    running the same command again resumes a stopped run. With a real cluster the workers must
    see the photos at the same paths and reach the database (use PostgreSQL).

    Each photo's camera (events never span two) is the config's camera.id, the folder under the
    given one with --camera-from-folders, or the mapping of --cameras.

    \b
        birdtrap archive /mnt/sdcards/2023/ --workers 4 --camera-from-folders
        birdtrap archive /data/traps/ --scheduler tcp://10.0.0.5:8786 --cameras cameras.csv -c archive.yaml
    """
    from birdtrap.scale import archive as module
    config = load_config(config_path)
    if camera_from_folders and camera_map:
        raise click.UsageError("--camera-from-folders and --cameras both say where the camera comes from; give one.")
    default = (config.camera.id, config.camera.deployment_id)
    cameras = module.Cameras(default, by_folder=camera_from_folders, mapping=module.load_camera_map(camera_map) if camera_map else ())
    try:
        summary = module.run_archive(
            config, list(folders), scheduler, workers=workers, batch_size=batch_size, progress=not no_progress, cameras=cameras
        )
    except KeyboardInterrupt:
        raise click.ClickException("stopped; run the same command again to resume (finished photos are not done again).") from None
    click.echo(
        f"done {summary.done} (birds {summary.birds}), failed {summary.failed}, duplicates {summary.duplicate}, "
        f"already on record {summary.skipped}, in {summary.seconds:.0f} s ({summary.photos_per_second:.1f} photos/s "
        f"on {summary.workers} workers)"
    )
    if summary.unfinished:
        raise click.ClickException(f"{summary.unfinished} photos were not processed (see the log); run the same command again.")


@click.command()
@click.option(
    "--to",
    "to_url",
    envvar="BIRDTRAP_SYNC_URL",
    help="Central PostgreSQL URL, e.g. postgresql+psycopg://pond-cam@db.example.org/birdtrap [env: BIRDTRAP_SYNC_URL]. "
    "Keep the password in ~/.pgpass (or PGPASSFILE), not in the URL.",
)
@click.option("--with-thumbnails", is_flag=True, help="Also push a 320-pixel JPEG of each photo (about 15 KB each).")
@click.option("--batch", "batch_size", type=click.IntRange(1, 10_000), default=500, show_default=True, help="Photos per transaction.")
@click.option(
    "--retries",
    type=click.IntRange(0),
    default=5,
    show_default=True,
    help="Retries of a batch on a lost connection (back-off 2 s, 4 s, ...).",
)
@click.option("--full", is_flag=True, help="Push every processed photo again, not only the new ones (safe: upserts).")
@click.option(
    "--upgrade-central",
    is_flag=True,
    help="Upgrade the central database's schema when it is older than this trap's (otherwise sync refuses and says so).",
)
@click.option(
    "--new-device-id",
    is_flag=True,
    help="Give this database a new device id first (a database copied from another trap); progress starts again.",
)
@click.option("--status", "show_status", is_flag=True, help="Show this device's id and its progress per central database; push nothing.")
@config_option
def sync(
    to_url: str | None,
    with_thumbnails: bool,
    batch_size: int,
    retries: int,
    full: bool,
    upgrade_central: bool,
    new_device_id: bool,
    show_status: bool,
    config_path: Path | None,
) -> None:
    """Push this device's processed photos and reviews to a central PostgreSQL, pull central reviews back.

    Idempotent: photos are upserted by camera and sha256, so a cut link or a second run never
    duplicates anything; progress is kept per central database by the device's own sequence, so
    a wrong clock loses nothing. Photos stay on the device unless --with-thumbnails. systemd's
    birdtrap-sync.timer runs it every 15 minutes.

    \b
        birdtrap sync --to postgresql+psycopg://pond-cam@db.example.org/birdtrap
        birdtrap sync --to postgresql+psycopg://pond-cam@db.example.org/birdtrap --with-thumbnails
        birdtrap sync --status
    """
    from birdtrap.scale import sync as module
    config = load_config(config_path)
    if new_device_id:
        click.echo(f"this database is now device {module.renew_device_id(config)}")
    if show_status:
        status = module.local_status(config)
        click.echo(f"device {status['device']} (camera {status['camera']}), newest sync number {status['newest_sync_number']}")
        for central in status["centrals"]:
            click.echo(
                f"central {central['central']} at {central['url']}: last sync {central['last_sync']:%Y-%m-%d %H:%M:%S} UTC, "
                f"pushed {central['pushed']} photos, {central['waiting']} waiting"
            )
        if not status["centrals"]:
            click.echo("never synced")
        return
    if not to_url:
        raise click.UsageError("Missing option '--to' (or set BIRDTRAP_SYNC_URL).")
    summary = module.push(
        config, to_url, batch_size=batch_size, with_thumbnails=with_thumbnails, retries=retries, full=full, upgrade_central=upgrade_central
    )
    thumbnails = f", {summary.thumbnails} thumbnails" if with_thumbnails else ""
    click.echo(
        f"pushed {summary.images} photos, {summary.predictions} predictions, {summary.events} events{thumbnails} "
        f"to {summary.target} in {summary.seconds:.1f} s ({summary.batches} batches, {summary.retries} retries); "
        f"reviews pushed {summary.reviews_pushed}, pulled {summary.reviews_pulled}"
    )


@click.group()
def fleet() -> None:
    """The traps that sync to a central database."""


@fleet.command("status")
@click.option("--from", "from_url", envvar="BIRDTRAP_SYNC_URL", help="Central database URL [default: database.url in the config].")
@output_options()
@config_option
def fleet_status(from_url: str | None, fmt: str, config_path: Path | None) -> None:
    """Per trap: last sync (central clock, UTC), newest photo, photos, failed, pending, camera health, birdtrap version.

    Oldest sync first: the trap to go and look at is at the top.

    \b
        birdtrap fleet status --from postgresql+psycopg://me@db.example.org/birdtrap
    """
    from birdtrap.scale import sync as module
    url = from_url or load_config(config_path).database.url
    print_rows(module.read_fleet(url), fmt, empty="no trap has synced to this database yet")


@click.command("network")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--from", "from_url", help="Central database URL [default: database.url in the config].")
@click.option(
    "--contributor", "contributors", multiple=True, required=True, help="'Name <email>'; repeat for more. The first is the contact."
)
@click.option("--deployment", "deployments", multiple=True, help="Export only this deployment id; repeat for more [default: all].")
@click.option("--title", help="Package title [default: from the deployments].")
@package_options
@config_option
def export_network(
    out_dir: Path,
    from_url: str | None,
    contributors: tuple[str, ...],
    deployments: tuple[str, ...],
    title: str | None,
    data_license: str | None,
    media_license: str | None,
    exclude_people: bool,
    overwrite: bool,
    config_path: Path | None,
) -> None:
    """Write one Camtrap DP package of every deployment in the central database.

    Each deployment's place, clock offset and camera come from its device's config, pushed by
    `birdtrap sync`.

    \b
        birdtrap export network season-2024/ --from postgresql+psycopg://me@db.example.org/birdtrap \\
            --contributor "Jane Doe <jane@example.org>"
    """
    from birdtrap import store
    from birdtrap.cli.export import _contributor
    from birdtrap.export import camtrapdp, network
    config = load_config(config_path)
    package = camtrapdp.PackageInfo(
        contributors=tuple(_contributor(text, "contact" if i == 0 else "contributor") for i, text in enumerate(contributors)),
        title=title,
        data_license=data_license,
        media_license=media_license,
    )
    sessions = store.open_store(from_url or config.database.url, config.database.busy_timeout_seconds, create=False)
    with sessions() as session:
        summary = network.write_network_package(
            session, out_dir, package, deployments=deployments or None, exclude_people=exclude_people, overwrite=overwrite
        )
    echo_package_summary(summary)


__all__ = ["archive", "sync", "fleet", "export_network"]
