"""The database: identity by content, one transaction per batch, readers beside the writer."""

from __future__ import annotations

import sqlite3

import pytest

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


def test_a_database_from_a_newer_birdtrap_is_refused(tmp_path, sessions):
    with sqlite3.connect(tmp_path / "b.db") as connection:
        connection.execute("update meta set value = '99' where key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99, newer than this birdtrap knows"):
        store.open_store(f"sqlite:///{tmp_path / 'b.db'}")


def test_a_bad_url_names_the_url(tmp_path):
    with pytest.raises(StoreError, match="database.url 'nosuchdb://x'"):
        store.open_store("nosuchdb://x")
