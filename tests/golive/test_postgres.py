"""Dumps proven by a scratch restore, migrations between checks, restores: on real PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr

from golive import migrations, postgres
from golive.migrations import MigrationFailed
from golive.plan import Migration
from golive.postgres import Database, DatabaseError
from tasks.databases import from_dsn
from tests.disks import small_filesystem
from tests.pg import database, fingerprint, throwaway_server


def test_a_dump_records_its_checksum_and_the_row_counts_it_holds(
    shop_db: Database, tmp_path: Path
) -> None:
    backup = postgres.dump(shop_db, tmp_path / "shop.dump", jobs=2)

    assert backup.row_counts == {"public.customers": 50, "public.orders": 500}
    files = list((tmp_path / "shop.dump").iterdir())
    assert len(backup.sha256) == 64 and backup.size == sum(f.stat().st_size for f in files)
    assert backup.jobs == 2 and backup.jobs_note is None
    assert postgres.verify(shop_db, backup) == backup.row_counts


def data_file(backup: postgres.Dump) -> Path:
    """One table's data in a directory dump."""
    return max(backup.path.glob("*.dat*"), key=lambda file: file.stat().st_size)


def test_more_jobs_than_the_server_has_connections_for_run_as_many_as_it_has(
    shop_db: Database,
) -> None:
    with shop_db.connect() as conn:
        jobs, note = postgres.jobs_with_room(conn, 10_000)

    assert 1 <= jobs < 10_000
    assert note is not None and "10000 jobs asked for" in note and "max_connections" in note


def test_a_role_with_a_connection_limit_dumps_and_verifies_by_as_many_jobs_as_it_may_open(
    shop_db: Database, tmp_path: Path
) -> None:
    grants = ["ALL TABLES IN SCHEMA public", "ALL SEQUENCES IN SCHEMA public"]
    with role(shop_db, "golive_limited", grants, "CONNECTION LIMIT 3") as limited:
        backup = postgres.dump(limited, tmp_path / "shop.dump", jobs=8)
        verified = postgres.verify(shop_db, backup)

    assert backup.jobs == 1  # its counting session, pg_dump's own and one job: its 3
    assert backup.jobs_note is not None and "under the role's CONNECTION LIMIT" in backup.jobs_note
    assert verified == backup.row_counts


def test_a_dump_that_fails_midway_leaves_no_partial_dump_behind(
    shop_db: Database, tmp_path: Path
) -> None:
    with (
        role(shop_db, "golive_half_reader", ["customers"]) as half_reader,  # not orders
        pytest.raises(DatabaseError, match=r"database 'shop', (count rows|pg_dump)"),
    ):
        postgres.dump(half_reader, tmp_path / "shop.dump", jobs=2)

    assert list(tmp_path.iterdir()) == []


@contextmanager
def role(db: Database, name: str, readable: list[str], options: str = "") -> Iterator[Database]:
    """`db` as a login role of its own that may read only `readable`; dropped afterwards."""
    with db.connect("postgres", autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {name}".encode())
        admin.execute(f"CREATE ROLE {name} LOGIN {options}".encode())
    with db.connect(autocommit=True) as conn:
        for what in readable:
            conn.execute(f"GRANT SELECT ON {what} TO {name}".encode())
    try:
        yield Database(db.name, db.host, db.port, db.dbname, name)
    finally:
        with db.connect(autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {name}".encode())
        with db.connect("postgres", autocommit=True) as admin:
            admin.execute(f"DROP ROLE {name}".encode())


def test_a_single_file_dump_of_an_earlier_golive_still_restores(
    shop_db: Database, tmp_path: Path
) -> None:
    before = fingerprint(shop_db)
    file = tmp_path / "old.dump"
    subprocess.run(
        ["pg_dump", "--format=custom", f"--file={file}", f"--dbname={shop_db.conninfo()}"],
        env=shop_db.env(),
        check=True,
    )
    with shop_db.connect() as conn:
        counts = postgres.row_counts(conn)
        conn.execute("DELETE FROM orders")
    old = postgres.Dump(file, *postgres.sha256_of_dump(file), 1.0, counts)

    postgres.restore(shop_db, old, keep_as=postgres.kept_name(shop_db.dbname, "old-run"))

    assert fingerprint(shop_db) == before


def test_verification_leaves_no_scratch_database_behind(shop_db: Database, tmp_path: Path) -> None:
    postgres.verify(shop_db, postgres.dump(shop_db, tmp_path / "shop.dump"))
    with shop_db.connect("postgres") as conn:
        scratch = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'golive_verify_%'"
        ).fetchone()
    assert scratch == (0,)


KEYS_AND_VIEWS = """
CREATE SCHEMA "Sales Q4";
CREATE TABLE "Sales Q4".regions (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text);
INSERT INTO "Sales Q4".regions (name) VALUES ('north'), ('south');
CREATE TABLE "Sales Q4".sales (region int REFERENCES "Sales Q4".regions, amount int);
INSERT INTO "Sales Q4".sales SELECT 1 + i % 2, i FROM generate_series(1, 300) i;
CREATE MATERIALIZED VIEW "Sales Q4".totals AS
    SELECT region, sum(amount) FROM "Sales Q4".sales GROUP BY region;
"""

PARTITIONS = """
CREATE TABLE days (day date PRIMARY KEY);
INSERT INTO days SELECT date '2026-10-01' + i FROM generate_series(0, 60) i;
CREATE TABLE visits (day date REFERENCES days, n int) PARTITION BY RANGE (day);
CREATE TABLE visits_oct PARTITION OF visits FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
CREATE TABLE visits_nov PARTITION OF visits FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
INSERT INTO visits SELECT day, 1 FROM days WHERE day < '2026-12-01';
"""


@pytest.mark.parametrize("schema", [KEYS_AND_VIEWS, PARTITIONS], ids=["keys", "partitions"])
def test_foreign_keys_identities_views_and_partitions_restore_in_verification(
    shop_db: Database, tmp_path: Path, schema: str
) -> None:
    with shop_db.connect() as conn:
        conn.execute(schema.encode())
    backup = postgres.dump(shop_db, tmp_path / "shop.dump", jobs=2)

    assert postgres.verify(shop_db, backup) == backup.row_counts
    assert sum(backup.row_counts.values()) > 550  # customers and orders, and the new rows


def test_a_backup_changed_after_it_was_written_is_caught(shop_db: Database, tmp_path: Path) -> None:
    backup = postgres.dump(shop_db, tmp_path / "shop.dump")
    data = bytearray(data_file(backup).read_bytes())
    data[len(data) // 2] ^= 0xFF
    data_file(backup).write_bytes(bytes(data))

    with pytest.raises(DatabaseError, match=r"changed since it was written \(sha256 differs\)"):
        postgres.verify(shop_db, backup)


def test_a_corrupt_backup_that_still_matches_its_checksum_fails_the_scratch_restore(
    shop_db: Database, tmp_path: Path
) -> None:
    backup = postgres.dump(shop_db, tmp_path / "shop.dump")
    data = data_file(backup)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    digest, size = postgres.sha256_of_dump(backup.path)
    truncated = type(backup)(backup.path, digest, size, backup.seconds, backup.row_counts)

    with pytest.raises(
        DatabaseError, match=r"database 'shop', (pg_restore --list|scratch restore)"
    ):
        postgres.verify(shop_db, truncated)


def test_a_server_with_no_room_for_the_scratch_copy_fails_verification_and_says_so(
    tmp_path: Path,
) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="golive-room-") as room,  # the server's user reaches
        small_filesystem(Path(room) / "disk", kib=24 * 1024) as disk,
        throwaway_server() as server,
        database(server) as db,
    ):
        Path(room).chmod(0o755)
        with db.connect() as conn:  # about 30 MB
            conn.execute(
                "CREATE TABLE notes AS SELECT i, repeat('x', 100) AS note "
                "FROM generate_series(1, 200000) i"
            )
        backup = postgres.dump(db, tmp_path / "shop.dump")
        scratch_space_on(db, disk)  # 24 MB, in which an empty database takes 7.5

        with pytest.raises(
            DatabaseError,
            match=r"the database server's disk is full \(.*No space left on device.*"
            r"what was restored was dropped",
        ):
            postgres.verify(db, backup)

        assert databases_named(db, "golive_verify_%") == 0


def scratch_space_on(db: Database, disk: Path) -> None:
    """New databases (the scratch one among them) are made on `disk` from now on."""
    shutil.chown(disk, "postgres")
    with db.connect("postgres", autocommit=True) as admin:
        admin.execute(f"CREATE TABLESPACE small LOCATION '{disk}'".encode())
        admin.execute("ALTER DATABASE template1 SET TABLESPACE small")


def databases_named(db: Database, pattern: str) -> int:
    with db.connect("postgres") as conn:
        row = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s", [pattern])
        return int(row.fetchone()[0])  # type: ignore[index]


def test_a_restore_puts_the_data_back_and_proves_it(shop_db: Database, tmp_path: Path) -> None:
    before = fingerprint(shop_db)
    backup = postgres.dump(shop_db, tmp_path / "shop.dump")
    with shop_db.connect() as conn:
        conn.execute("DELETE FROM orders WHERE id % 2 = 0; UPDATE customers SET name = 'x'")

    kept = postgres.kept_name(shop_db.dbname, "0123abcd-run")
    assert postgres.restore(shop_db, backup, keep_as=kept) == backup.row_counts
    assert fingerprint(shop_db) == before
    with shop_db.connect(kept) as conn:  # the database it replaced, with the changes since
        assert conn.execute("SELECT DISTINCT name FROM customers").fetchall() == [("x",)]


def test_a_restore_from_a_dump_changed_since_its_verification_changes_nothing(
    shop_db: Database, tmp_path: Path
) -> None:
    backup = postgres.dump(shop_db, tmp_path / "shop.dump")
    with shop_db.connect() as conn:
        conn.execute("UPDATE customers SET name = 'after the backup'")
    with data_file(backup).open("ab") as dump:
        dump.write(b"tampered")

    with pytest.raises(postgres.DatabaseError, match="changed since it was verified"):
        postgres.restore(shop_db, backup, keep_as=postgres.kept_name(shop_db.dbname, "run"))
    with shop_db.connect() as conn:
        assert conn.execute("SELECT DISTINCT name FROM customers").fetchall() == [
            ("after the backup",)
        ]


def migration(tmp_path: Path, script: str, **fields: object) -> Migration:
    (tmp_path / "0042.sql").write_text(script)
    return Migration.model_validate({"sql": tmp_path / "0042.sql", **fields})


def test_a_migration_runs_when_its_checks_hold(shop_db: Database, tmp_path: Path) -> None:
    result = migrations.apply(
        shop_db,
        migration(
            tmp_path,
            "ALTER TABLE orders ADD COLUMN paid boolean NOT NULL DEFAULT false;",
            checks=[
                {"name": "orders kept", "query": "SELECT count(*) FROM orders", "unchanged": True},
                {
                    "name": "none paid",
                    "query": "SELECT count(*) FROM orders WHERE paid",
                    "equals": 0,
                },
            ],
        ),
    )
    assert result["after"] == {"orders kept": 500, "none paid": 0}


def test_a_migration_whose_after_check_fails_is_rolled_back(
    shop_db: Database, tmp_path: Path
) -> None:
    before = fingerprint(shop_db)
    with pytest.raises(MigrationFailed) as failed:
        migrations.apply(
            shop_db,
            migration(
                tmp_path,
                "DELETE FROM orders WHERE id <= 50;",
                checks=[
                    {
                        "name": "orders kept",
                        "query": "SELECT count(*) FROM orders",
                        "unchanged": True,
                    }
                ],
            ),
        )
    assert str(failed.value) == (
        "database 'shop', migration 0042.sql: check 'orders kept' after it: was 500 before and "
        "is 450 after; expected unchanged; its changes were rolled back"
    )
    assert fingerprint(shop_db) == before


def test_a_failing_statement_rolls_back_the_whole_file(shop_db: Database, tmp_path: Path) -> None:
    before = fingerprint(shop_db)
    with pytest.raises(
        MigrationFailed,
        match=r'column "nope" of relation "orders" does not exist; its changes were',
    ):
        migrations.apply(
            shop_db,
            migration(tmp_path, "DELETE FROM orders WHERE id < 10; UPDATE orders SET nope = 1;"),
        )
    assert fingerprint(shop_db) == before


def test_wrong_credentials_name_the_database_and_the_step(shop_db: Database) -> None:
    stranger = Database("shop", shop_db.host, shop_db.port, shop_db.dbname, "no_such_role")
    with pytest.raises(DatabaseError, match=r"database 'shop', connect: .*no_such_role"):
        stranger.connect()


def test_the_password_reaches_pg_tools_by_environment_only() -> None:
    db = Database("shop", "db1", 5432, "shop", "golive", SecretStr("s3cret"))
    assert db.env()["PGPASSWORD"] == "s3cret"
    assert "s3cret" not in repr(db) and "s3cret" not in db.where


def test_connection_options_in_a_dsn_are_kept_for_connections_and_pg_tools(
    guarded_db: Database, tmp_path: Path
) -> None:
    # Two hosts (the first refuses), an application name and sslmode: none may be dropped.
    assert guarded_db.password is not None
    password = guarded_db.password.get_secret_value()
    dsn = (
        f"host=127.0.0.1,{guarded_db.host} port=1,{guarded_db.port} dbname={guarded_db.dbname} "
        f"user={guarded_db.user} password={password} sslmode=disable "
        "application_name=golive-dsn-test"
    )
    db = from_dsn("shop", SecretStr(dsn))

    assert db.options == {"sslmode": "disable", "application_name": "golive-dsn-test"}
    assert password not in db.conninfo() and "application_name=golive-dsn-test" in db.conninfo()
    with db.connect() as conn:
        assert conn.execute("SELECT current_setting('application_name')").fetchone() == (
            "golive-dsn-test",
        )
    backup = postgres.dump(db, tmp_path / "shop.dump")
    assert postgres.verify(db, backup) == backup.row_counts


def test_a_dsn_with_a_wrong_password_names_the_database_and_the_step(guarded_db: Database) -> None:
    dsn = f"host={guarded_db.host} port={guarded_db.port} dbname={guarded_db.dbname} password=no"
    with pytest.raises(DatabaseError, match=r"database 'shop', connect: .*password"):
        from_dsn("shop", SecretStr(dsn)).connect()
