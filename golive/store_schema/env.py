"""Alembic's entry point for the run store: golive hands it a connection that already holds
the store's write lock, inside a transaction, so migrations never race."""

from alembic import context

from golive.store import VERSION_TABLE

context.configure(
    connection=context.config.attributes["connection"],
    version_table=VERSION_TABLE,
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
