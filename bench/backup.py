"""Benchmark: golive's database backup beside a bare pg_dump of the same database.

    .venv/bin/python bench/backup.py [--scale 70]   (pgbench scale 70 is about 1 GB)

Prints golive's dump + checksum time as a ratio to `pg_dump --format=custom` alone (aim:
at most 1.1x), and the verification (checksum re-read, pg_restore --list, scratch restore,
row counts) separately. Needs a PostgreSQL server; uses the one on 127.0.0.1:5432 or starts one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.pg, the server the tests use

import psycopg  # noqa: E402

from golive import postgres  # noqa: E402
from golive.postgres import Database  # noqa: E402
from tests.pg import postgres_server  # noqa: E402

NAME = "golive_bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70: ~1 GB)")
    args = parser.parse_args()
    with postgres_server() as (host, port, user), tempfile.TemporaryDirectory() as work:
        db = Database("bench", host, port, NAME, user)
        create(db, args.scale)
        try:
            run(db, Path(work))
        finally:
            with psycopg.connect(
                host=host, port=port, user=user, dbname="postgres", autocommit=True
            ) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {NAME} WITH (FORCE)".encode())


def create(db: Database, scale: int) -> None:
    with psycopg.connect(
        host=db.host, port=db.port, user=db.user, dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {NAME} WITH (FORCE)".encode())
        admin.execute(f"CREATE DATABASE {NAME}".encode())
    started = time.monotonic()
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(scale), NAME],
        env=db.env(),
        check=True,
        capture_output=True,
    )
    with db.connect() as conn:
        size = conn.execute(f"SELECT pg_database_size('{NAME}')".encode()).fetchone()
    assert size is not None
    print(
        f"database {NAME}: {size[0] / 2**30:.2f} GiB (pgbench scale {scale}, "
        f"built in {time.monotonic() - started:.0f} s)\n"
    )


def run(db: Database, work: Path) -> None:
    started = time.monotonic()
    subprocess.run(
        ["pg_dump", "--format=custom", f"--file={work / 'bare.dump'}", NAME],
        env=db.env(),
        check=True,
    )
    bare = time.monotonic() - started

    started = time.monotonic()
    backup = postgres.dump(db, work / "golive.dump")  # snapshot, row counts, dump, sha256
    golive = time.monotonic() - started

    started = time.monotonic()
    postgres.verify(db, backup)
    verify = time.monotonic() - started

    bare_mib = (work / "bare.dump").stat().st_size / 2**20
    print(f"  bare pg_dump --format=custom   {bare:7.1f} s   {bare_mib:.0f} MiB")
    print(f"  golive dump + checksum         {golive:7.1f} s   {backup.size / 2**20:.0f} MiB")
    print(
        f"  golive verification            {verify:7.1f} s   (checksum, pg_restore --list, "
        "scratch restore, row counts)"
    )
    print(f"\n  golive / bare pg_dump          {golive / bare:.2f}x   (aim: <= 1.1x)")


if __name__ == "__main__":
    main()
