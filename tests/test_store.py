"""The database: identity by content, one transaction per batch, readers beside the writer."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import select

from birdtrap import store
from birdtrap.errors import StoreError


@pytest.fixture
def sessions(tmp_path):
    return store.open_store(f"sqlite:///{tmp_path / 'b.db'}")


def register(session, path, sha="a" * 64):
    return store.register_photo(session, path, sha, 10, 1.0, "cam")


def test_the_same_content_under_another_name_is_a_duplicate_of_the_first(sessions):
    with sessions.begin() as session:
        first = register(session, "/in/a.jpg")
        second = register(session, "/in/b.jpg")
        again = register(session, "/in/a.jpg")
    assert first.outcome == "pending" or first.outcome == "new"
    assert second.outcome == "duplicate"
    assert again.outcome == "pending"
    with sessions() as session:
        duplicate = session.get(store.ImageRecord, second.image_id)
        assert duplicate.duplicate_of == first.image_id and duplicate.status == "duplicate"


def test_a_failed_file_retried_is_one_row_not_two(sessions):
    with sessions.begin() as session:
        store.record_failure(session, "/in/x.jpg", "truncated", "cam")
    with sessions.begin() as session:
        store.record_failure(session, "/in/x.jpg", "still truncated", "cam")
    with sessions.begin() as session:
        registration = register(session, "/in/x.jpg", "b" * 64)
    with sessions() as session:
        assert store.counts_by_status(session) == {"pending": 1}
        assert store.pending_photos(session)[0].id == registration.image_id


def test_a_transaction_that_fails_leaves_nothing_behind(sessions):
    with pytest.raises(RuntimeError):
        with sessions.begin() as session:
            register(session, "/in/a.jpg")
            raise RuntimeError("power cut")
    with sessions() as session:
        assert store.counts_by_status(session) == {}


def test_sqlite_runs_in_wal_with_foreign_keys_and_full_sync(tmp_path, sessions):
    with sessions() as session:
        connection = session.connection()
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000


def test_a_database_from_a_newer_birdtrap_is_refused_by_the_daemon_and_the_queries(tmp_path, sessions):
    with sqlite3.connect(tmp_path / "b.db") as connection:
        connection.execute("update alembic_version set version_num = '0099'")
    for create in (True, False):
        with pytest.raises(StoreError, match="schema revision 0099, newer than this birdtrap knows"):
            store.open_store(f"sqlite:///{tmp_path / 'b.db'}", create=create)


def test_an_older_database_is_backed_up_then_upgraded_and_queries_ask_for_the_upgrade(tmp_path):
    from alembic import command
    from sqlalchemy import create_engine

    path = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        command.upgrade(store._alembic(connection), "0001")
        connection.exec_driver_sql(
            "insert into images (path, sha256, camera_id, status, discovered_at) values ('/a.jpg', 'x', 'cam', 'done', '2024-01-01')"
        )
    engine.dispose()
    head = store.head_revision()
    if head == "0001":
        pytest.skip("only one schema revision exists; nothing to upgrade from")
    with pytest.raises(StoreError, match="older than .*; run `birdtrap db upgrade`"):
        store.open_store(f"sqlite:///{path}", create=False)
    sessions = store.open_store(f"sqlite:///{path}")
    backup = tmp_path / f"old.db.before-{head}.bak"
    assert backup.exists()
    with sqlite3.connect(backup) as connection:
        assert connection.execute("select version_num from alembic_version").fetchone() == ("0001",)
    with sessions() as session:
        assert store.revision_state(session.connection()).current == store.HEAD_REVISION == head
        assert store.counts_by_status(session) == {"done": 1}


def test_the_migrations_create_exactly_the_schema_the_models_describe(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    sessions = store.open_store(f"sqlite:///{tmp_path / 'fresh.db'}")
    with sessions() as session:
        differences = compare_metadata(MigrationContext.configure(session.connection()), store.Base.metadata)
    assert differences == []


def test_a_bad_url_names_the_url(tmp_path):
    with pytest.raises(StoreError, match="database.url 'nosuchdb://x'"):
        store.open_store("nosuchdb://x")


def test_the_head_revision_constant_is_the_migrations_head_and_opening_needs_no_alembic(tmp_path):
    # HEAD_REVISION lets every start skip Alembic; a new migration must move it too.
    import subprocess
    import sys

    assert store.HEAD_REVISION == store.migrations_head()
    url = f"sqlite:///{tmp_path / 'b.db'}"
    code = f"import sys; from birdtrap import store; store.open_store({url!r}); print(any(m.startswith('alembic') for m in sys.modules))"
    for _ in ("a new database", "the same one again"):
        assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    # Made without Alembic, it is what the migrations make: same tables and columns, at head.
    from alembic import command
    from sqlalchemy import create_engine, inspect

    migrated = tmp_path / "migrated.db"
    engine = create_engine(f"sqlite:///{migrated}")
    with engine.begin() as connection:
        command.upgrade(store._alembic(connection), "head")

    def schema(path):
        inspector = inspect(create_engine(f"sqlite:///{path}"))
        return {
            table: (
                sorted((c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)),
                sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)),
                sorted(tuple(f["constrained_columns"]) for f in inspector.get_foreign_keys(table)),
            )
            for table in inspector.get_table_names()
        }

    assert schema(tmp_path / "b.db") == schema(migrated)
    with sqlite3.connect(tmp_path / "b.db") as connection:
        assert connection.execute("select version_num from alembic_version").fetchall() == [(store.HEAD_REVISION,)]


def test_a_device_that_synced_under_two_urls_keeps_the_most_used_source_as_its_id(tmp_path):
    """Migration 0006: the runtime sync_state of older releases becomes the device's identity."""
    from alembic import command
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(store._alembic(connection), "0003")
        connection.execute(
            text(
                "create table sync_state (target varchar(300) primary key, source varchar(36), processed_at datetime, "
                "image_id integer, pushed integer, updated_at datetime)"
            )
        )
        connection.execute(
            text(
                "insert into sync_state values ('postgresql://a@127.0.0.1/c', 'first-source', null, 0, 40, '2026-01-01'), "
                "('postgresql://a@localhost/c', 'second-source', null, 0, 12, '2026-02-01')"
            )
        )
        connection.execute(
            text("insert into images (path, sha256, camera_id, status, discovered_at) values ('/a.jpg', 'a', 'cam', 'done', '2026-01-01')")
        )
    engine.dispose()
    sessions = store.open_store(url)
    with sessions() as session:
        assert store.fleet.device_id(session) == "first-source"
        assert store.fleet.legacy_sources(session) == ["second-source"]
        assert store.fleet.sync_states(session) == []  # progress by sequence starts again: one full, idempotent push
        assert session.scalar(select(store.ImageRecord.sync_seq)) == 1


def test_a_sync_number_is_taken_under_the_write_lock_so_no_other_writer_can_take_it_too(tmp_path):
    sessions = store.open_store(f"sqlite:///{tmp_path / 'seq.db'}")
    with sessions.begin() as session:
        number = store.fleet.next_sync_seq(session)
        other = sqlite3.connect(tmp_path / "seq.db", timeout=0.1)
        try:
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("insert into meta (key, value) values ('x', 'y')")
        finally:
            other.close()
    assert number == 1


def test_every_write_of_a_processed_photo_takes_the_next_sync_number(tmp_path):
    sessions = store.open_store(f"sqlite:///{tmp_path / 'seq.db'}")
    with sessions.begin() as session:
        ids = [store.register_photo(session, f"/in/{i}.jpg", str(i) * 64, 1, 1.0, "cam").image_id for i in range(3)]
        model = store.record_model(session, "m" * 64, "m", "1", "/m")
    result = store.Result("bird", "x", "A b", None, "species", 0.5, (), None, None, None)
    with sessions.begin() as session:
        for image_id in ids:
            store.record_result(session, image_id, result, model)
    with sessions.begin() as session:  # processed again: the newest number
        store.record_result(session, ids[0], result, model)
    with sessions() as session:
        numbers = dict(session.execute(select(store.ImageRecord.id, store.ImageRecord.sync_seq)).all())
    assert numbers == {ids[1]: 2, ids[2]: 3, ids[0]: 4}
