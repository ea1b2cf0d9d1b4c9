"""A PostgreSQL database, stored as a Prefect Block so its password never sits in a plan file.

    prefect block register -m blocks.postgres
    python -c "from blocks.postgres import PostgresDatabase; PostgresDatabase(host='db1',
        database='shop', user='golive', password='...').save('pg-prod')"

A plan names it: `databases: {shop: {block: pg-prod}}`.
"""

from __future__ import annotations

from typing import cast

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class PostgresDatabase(Block):
    _block_type_name = "golive PostgreSQL database"
    _block_type_slug = "golive-postgres"
    _description = "A database golive backs up, migrates and, on rollback, restores."

    host: str = Field("", description="Host name or IP address of the server.")
    port: int = Field(5432, description="TCP port the server listens on.")
    database: str = Field("", description="Name of the database.")
    user: str = Field(
        "",
        description="Role golive connects as; it needs to dump, restore and "
        "create scratch databases for verification.",
    )
    password: SecretStr | None = Field(None, description="Password of that role, if any.")
    dsn: SecretStr | None = Field(
        None,
        description="Instead of the fields above: a libpq connection string or URI, e.g. "
        "postgresql://golive:secret@db1:5432/shop. Kept secret: it may hold a password.",
    )


class BackupStorage(Block):
    _block_type_name = "golive backup storage"
    _block_type_slug = "golive-backup-storage"
    _description = "Where golive keeps verified database backups, and how many."

    directory: str = Field(description="Directory the dumps are written to, per environment.")
    keep: int = Field(5, description="Verified backups kept per environment and database.")


def load_backup_storage(name: str) -> BackupStorage:
    return cast(BackupStorage, BackupStorage.load(name))


def load_postgres(name: str) -> PostgresDatabase:
    """The block saved under `name`; ValueError if there is none."""
    # Block.load returns the block itself when called from synchronous code.
    return cast(PostgresDatabase, PostgresDatabase.load(name))
