"""The block modules register with Prefect as the README says, and keep their secrets secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from pydantic import SecretStr

from blocks.postgres import PostgresDatabase
from blocks.ssh import SshHost
from blocks.webhook import Webhook
from tasks.databases import from_dsn

PREFECT = str(Path(sys.executable).parent / "prefect")


@pytest.mark.parametrize("module", ["blocks.ssh", "blocks.postgres", "blocks.webhook"])
def test_a_block_module_registers_with_prefect_block_register(module: str) -> None:
    env = os.environ | {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
    done = subprocess.run(
        [PREFECT, "block", "register", "-m", module],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully registered" in done.stdout


def test_every_block_field_is_described_and_keys_and_passwords_are_secret() -> None:
    for block in (SshHost, PostgresDatabase, Webhook):
        for name, field in block.model_fields.items():
            assert field.description, f"{block.__name__}.{name} has no description"
    assert SshHost.model_fields["private_key"].annotation is SecretStr
    assert "SecretStr" in str(PostgresDatabase.model_fields["password"].annotation)
    assert "SecretStr" in str(PostgresDatabase.model_fields["dsn"].annotation)
    assert Webhook.model_fields["url"].annotation is SecretStr


def test_a_dsn_gives_every_part_of_the_connection_and_hides_the_password() -> None:
    db = from_dsn("shop", SecretStr("postgresql://golive:s3cret@db1:6432/shop_prod"))
    # The port stays text: a DSN may name several hosts, each with its port ("5432,5433").
    assert (db.host, db.port, db.dbname, db.user) == ("db1", "6432", "shop_prod", "golive")
    assert db.password is not None and db.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(db)
