"""A real PostgreSQL for the tests: the machine's server on 127.0.0.1:5432 when it answers,
otherwise a throwaway cluster started with initdb/pg_ctl in a temporary directory. Neither
available fails the tests under CI=true and skips them elsewhere.

`password_server()` is always a throwaway cluster that trusts nobody: every connection needs
the password (scram-sha-256), so golive's PGPASSWORD path is exercised for real."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from golive.postgres import Database
from tests.unavailable import unavailable

ORDERS = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers(id),
                     total numeric(10, 2));
INSERT INTO customers (name) SELECT 'customer ' || i FROM generate_series(1, 50) AS i;
INSERT INTO orders (customer_id, total)
    SELECT 1 + i % 50, (i * 7 % 1000) / 10.0 FROM generate_series(1, 500) AS i;
"""


@contextmanager
def postgres_server() -> Iterator[tuple[str, int, str]]:
    """(host, port, superuser) of a server that accepts connections without a password."""
    if _answers("127.0.0.1", 5432):
        yield "127.0.0.1", 5432, "postgres"
        return
    with _throwaway_cluster(_server_binaries()) as port:
        yield "127.0.0.1", port, "postgres"


@contextmanager
def password_server(password: str) -> Iterator[tuple[str, int, str]]:
    """(host, port, superuser) of a throwaway server that demands `password` of everyone."""
    with _throwaway_cluster(_server_binaries(), password) as port:
        yield "127.0.0.1", port, "postgres"


@contextmanager
def throwaway_server(settings: str = "") -> Iterator[tuple[str, int, str]]:
    """(host, port, superuser) of a cluster of the test's own, to change as it likes, started
    with `settings` (`-c name=value ...`)."""
    with _throwaway_cluster(_server_binaries(), settings=settings) as port:
        yield "127.0.0.1", port, "postgres"


def _server_binaries() -> Path:
    initdb = shutil.which("initdb") or next(
        iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None
    )
    if initdb is None:
        unavailable("no initdb to start a PostgreSQL cluster (`make test` installs postgresql)")
    return Path(initdb).parent


def _answers(host: str, port: int) -> bool:
    try:
        with psycopg.connect(
            host=host, port=port, user="postgres", dbname="postgres", connect_timeout=3
        ):
            return True
    except psycopg.Error:
        return False


@contextmanager
def _throwaway_cluster(
    bin_dir: Path, password: str | None = None, settings: str = ""
) -> Iterator[int]:
    data = Path(tempfile.mkdtemp(prefix="golive-pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(data, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])

    def run(*args: str) -> None:
        subprocess.run([*as_postgres, *args], check=True, capture_output=True)

    auth = ["--auth=trust"]
    if password is not None:
        (data / "pw").write_text(password)
        if as_postgres:
            shutil.chown(data / "pw", "postgres")
        auth = ["--auth=scram-sha-256", f"--pwfile={data / 'pw'}"]
    run(str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "postgres", *auth)
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data / "db"),
        "-w",
        "-l",
        str(data / "log"),
        "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1 {settings}",
        "start",
    )
    try:
        yield port
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "stop")
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def database(
    server: tuple[str, int, str], name: str = "shop", password: str | None = None
) -> Iterator[Database]:
    """A fresh database holding customers and orders, dropped afterwards."""
    host, port, user = server
    dbname = f"golive_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(
        host=host, port=port, user=user, dbname="postgres", autocommit=True, password=password
    ) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    db = Database(name, host, port, dbname, user, SecretStr(password) if password else None)
    with db.connect() as conn:
        conn.execute(ORDERS.encode())
    try:
        yield db
    finally:
        with psycopg.connect(
            host=host, port=port, user=user, dbname="postgres", autocommit=True, password=password
        ) as admin:
            kept = admin.execute(  # what rollbacks replaced it with, and kept
                "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"{dbname}_before_%"]
            ).fetchall()
            for name in [dbname, *(row[0] for row in kept)]:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def fingerprint(db: Database) -> tuple[int, int, str]:
    """Row counts and a checksum of the orders' content: equal means the data is the same."""
    with db.connect() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM customers), count(*), "
            "md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), str(row[2])


def contents(db: Database) -> dict[str, tuple[str, str]]:
    """Every table of the database: its columns and a checksum of all its rows. Equal means
    the same schema and the same data: nothing added, dropped or changed anywhere."""
    with db.connect() as conn:
        tables = conn.execute(
            "SELECT table_name, string_agg(column_name || ' ' || data_type, ', ' "
            "ORDER BY ordinal_position) FROM information_schema.columns "
            "WHERE table_schema = 'public' GROUP BY table_name"
        ).fetchall()
        found = {}
        for table, columns in tables:
            query = sql.SQL(
                "SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {} t"
            )
            [(checksum,)] = conn.execute(query.format(sql.Identifier(table))).fetchall()
            found[table] = (columns, checksum)
    return found


@contextmanager
def empty_database(server: tuple[str, int, str], password: str | None = None) -> Iterator[str]:
    """A fresh, empty database on `server`, as a URL (with the password, if any); dropped
    afterwards."""
    host, port, user = server
    dbname = f"golive_store_{uuid.uuid4().hex[:10]}"
    with admin_connection(server, password) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    login = f"{user}:{password}" if password else user
    try:
        yield f"postgresql://{login}@{host}:{port}/{dbname}"
    finally:
        with admin_connection(server, password) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )


def admin_connection(
    server: tuple[str, int, str], password: str | None = None
) -> psycopg.Connection[Any]:
    host, port, user = server
    return psycopg.connect(
        host=host, port=port, user=user, dbname="postgres", autocommit=True, password=password
    )
