"""Alembic's environment: run on the connection birdtrap hands over (store.migrate), never from a .ini."""

from __future__ import annotations

from alembic import context

from birdtrap.store import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place: batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
