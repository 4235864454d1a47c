"""`birdtrap db`: the schema (current, upgrade) and the file (backup, restore, move-aside)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from birdtrap import config as config_module
from birdtrap.cli.common import config_option, load_config

log = logging.getLogger(__name__)


@click.group()
def db() -> None:
    """The database: its schema, its backups, a damaged file.

    \b
        birdtrap db upgrade
        birdtrap db backup
        birdtrap db restore /var/lib/birdtrap/birdtrap.db.backup-20240501T030000Z
    """


@db.command("upgrade")
@config_option
def db_upgrade(config_path: Path | None) -> None:
    """Upgrade the database to this birdtrap's schema (a SQLite file is backed up first).

    The daemon does this by itself at start; run it by hand for a central PostgreSQL or before
    pointing queries at an old database.

    \b
        birdtrap db upgrade --config /etc/birdtrap/config.yaml
    """
    from birdtrap import store

    config = load_config(config_path)
    engine = store.make_engine(config.database.url, config.database.busy_timeout_seconds)
    backup = store.migrate(engine, config.database.url)
    if backup is not None:
        click.echo(f"backed up the old database to {backup}")
    click.echo(f"schema revision {store.head_revision()} (current)")


@db.command("current")
@config_option
def db_current(config_path: Path | None) -> None:
    """Show the database's schema revision and this birdtrap's.

    \b
        birdtrap db current
    """
    from birdtrap import store

    config = load_config(config_path)
    engine = store.make_engine(config.database.url, config.database.busy_timeout_seconds)
    with engine.connect() as connection:
        revision = store.revision_state(connection)
    state = {"current": "current", "older": "run `birdtrap db upgrade`", "newer": "newer than this birdtrap", "empty": "no schema yet"}
    click.echo(f"database {revision.current or 'none'}, birdtrap {revision.head}: {state[revision.state]}")


@db.command("backup")
@config_option
def db_backup(config_path: Path | None) -> None:
    """Back up the SQLite database now, beside it (the daemon also does, every database.backup_every_hours).

    Safe while the daemon runs. The copy is checked before it replaces the oldest of the
    database.backup_keep backups kept.

    \b
        birdtrap db backup
    """
    from birdtrap.store import backup

    config = load_config(config_path)
    database = _sqlite_database(config, "back up")
    written = backup.write_backup(database, config.database.backup_keep, config.database.busy_timeout_seconds)
    click.echo(f"backed up {database} to {written}")


@db.command("restore")
@click.argument("backup_file", metavar="BACKUP", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
def db_restore(backup_file: Path, config_path: Path | None) -> None:
    """Put a backup in place of the SQLite database; the old file is set aside, never deleted.

    Refused while a daemon runs on the database: stop it first.

    \b
        systemctl stop birdtrap
        birdtrap db restore /var/lib/birdtrap/birdtrap.db.backup-20240501T030000Z
        systemctl start birdtrap
    """
    from birdtrap.store import backup
    from birdtrap.store.lock import DaemonLock

    config = load_config(config_path)
    database = _sqlite_database(config, "restore")
    lock = DaemonLock.acquire(database, doing=f"restore {backup_file}")
    try:
        set_aside = backup.restore(backup_file, database)
    finally:
        lock.release()
    if set_aside is not None:
        click.echo(f"set the old database aside as {set_aside}")
    click.echo(f"restored {database} from {backup_file}")


@db.command("move-aside")
@config_option
def db_move_aside(config_path: Path | None) -> None:
    """Rename a damaged SQLite database (and its -wal, -shm) so `birdtrap run` starts a new one.

    Nothing is deleted. Refused while a daemon runs on the database: stop it first.

    \b
        systemctl stop birdtrap
        birdtrap db move-aside
        systemctl start birdtrap
    """
    from birdtrap.store import backup
    from birdtrap.store.lock import DaemonLock

    config = load_config(config_path)
    database = _sqlite_database(config, "move aside")
    if not database.exists():
        raise click.ClickException(f"no database at {database}; nothing to move aside (database.url).")
    lock = DaemonLock.acquire(database, doing=f"move {database} aside")
    try:
        set_aside = backup.move_aside(database)
    finally:
        lock.release()
    click.echo(f"moved {database} aside to {set_aside}; `birdtrap run` starts a new, empty database")


def _sqlite_database(config: config_module.Config, doing: str) -> Path:
    from birdtrap import store

    database = store.sqlite_path(config.database.url)
    if database is None:
        raise click.ClickException(
            f"birdtrap can only {doing} a SQLite database; database.url is a server database: use its own tools (pg_dump, pg_restore)."
        )
    return database
