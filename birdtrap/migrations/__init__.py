"""Alembic migrations: they own the schema, for SQLite and PostgreSQL alike (see store.migrate)."""
