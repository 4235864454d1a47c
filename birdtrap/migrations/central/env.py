"""Alembic's environment for the central database's own tables (issue 21).

A second, independent history with its own version table (`central_version`), run on the
connection birdtrap hands over (store.central.upgrade_central), after the device schema, which the
central database shares, is current.
"""

from __future__ import annotations

from alembic import context

from birdtrap.store.central import CentralBase

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=CentralBase.metadata, version_table="central_version", compare_type=True)
with context.begin_transaction():
    context.run_migrations()
