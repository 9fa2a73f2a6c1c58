"""Alembic environment: always run with a connection handed in by trainyard.store.engine.

Trainyard applies its migrations itself at start (see `migrate`), so there is no
alembic.ini and no offline mode; `alembic` the command is not needed to run the service.
"""

from __future__ import annotations

from alembic import context

from trainyard.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things; batch mode recreates tables when a later
    # migration needs it.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
