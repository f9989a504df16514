"""Alembic environment: runs on the connection Graft hands it, inside Graft's own transaction."""

from alembic import context

from service.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
