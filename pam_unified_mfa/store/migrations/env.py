"""Alembic environment: always handed a live connection by `Store.migrate`."""

from __future__ import annotations

from alembic import context

from pam_unified_mfa.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable when alembic is run by hand
    raise SystemExit("run migrations through `unified-mfa init`, which passes the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
