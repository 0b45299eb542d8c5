"""Alembic's environment: always run by tkr_embed.migrations on a connection it hands over (never by the CLI
`alembic` with a URL), so that the lock it holds and the transaction it opened cover the whole upgrade."""

from __future__ import annotations

from alembic import context

from tkr_embed.db import Base, import_table_modules

import_table_modules()
connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters a table by copying it
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
