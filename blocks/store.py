"""Where golive keeps its run store, stored as a Prefect Block: a PostgreSQL URL carries a
password, so it is a secret.

    prefect block register -m blocks.store
    python -c "from blocks.store import RunStoreBlock; RunStoreBlock(url='postgresql://golive:pw@db/golive').save('team-store')"

Then every machine that runs, approves or audits sets `GOLIVE_STORE_BLOCK=team-store` (or the
URL itself in `GOLIVE_STORE_URL`). Without either, the store is SQLite under `GOLIVE_HOME`.
"""

from __future__ import annotations

from typing import cast

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from golive.errors import StoreError


class RunStoreBlock(Block):
    _block_type_name = "golive run store"
    _block_type_slug = "golive-run-store"
    _description = "The database golive keeps every run's hash-chained entries in."

    url: SecretStr = Field(
        description="SQLAlchemy URL: postgresql://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH."
    )


def load_run_store(name: str) -> str:
    """The URL in the block saved under `name`."""
    try:
        block = cast(RunStoreBlock, RunStoreBlock.load(name))
    except ValueError:
        raise StoreError(
            f"block {name!r}",
            "GOLIVE_STORE_BLOCK names no golive-run-store block of that name",
            "`prefect block ls` lists the blocks there are",
        ) from None
    return block.url.get_secret_value()
