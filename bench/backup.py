"""Benchmark: golive's database backup, verification and restore beside bare pg_dump/pg_restore.

    .venv/bin/python bench/backup.py [--scale 70] [--jobs N]   (scale 70 is about 1 GB)

Baselines: a bare single-job `pg_dump --format=custom` of the same database, and a bare
`pg_restore` of that dump into an empty database. golive dumps by N jobs (default: this
machine's cores) into a directory and checksums it (aim: faster than the bare dump); verifies
it (checksum re-read, pg_restore --list, scratch restore by N jobs, row counts; aim: at most
1.5x its dump); and restores it as a rollback does (fresh database by N jobs, row counts,
swap; shown beside the bare restore). Needs a PostgreSQL server; uses the one on
127.0.0.1:5432 or starts one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with postgres_server() as (host, port, user), tempfile.TemporaryDirectory() as work:
        db = Database("bench", host, port, NAME, user)
        create(db, args.scale)
        try:
            run(db, Path(work), args.jobs)
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


def run(db: Database, work: Path, jobs: int) -> None:
    bare_dump = timed(
        lambda: bare(db, ["pg_dump", "--format=custom", f"--file={work / 'bare.dump'}", NAME])
    )
    bare_restore = timed(lambda: bare_restore_of(db, work / "bare.dump"))
    backup = postgres.dump(db, work / "golive.dump", jobs=jobs)  # snapshot, counts, dump, sha256
    verify = timed(lambda: postgres.verify(db, backup))
    restore = timed(lambda: postgres.restore(db, backup, keep_as=f"{NAME}_kept"))
    drop(db, f"{NAME}_kept")

    bare_mib = (work / "bare.dump").stat().st_size / 2**20
    print(f"  bare pg_dump --format=custom       {bare_dump:7.1f} s   {bare_mib:.0f} MiB")
    print(
        f"  golive dump + checksums, {jobs} jobs   {backup.seconds:7.1f} s   "
        f"{backup.size / 2**20:.0f} MiB   {backup.seconds / bare_dump:.2f}x the bare dump "
        "(aim: under 1x)"
    )
    print(
        f"  golive verification                {verify:7.1f} s   {verify / backup.seconds:.2f}x "
        "its dump (aim: at most 1.5x; checksums, pg_restore --list, scratch restore, row counts)"
    )
    print(f"  bare pg_restore, 1 job              {bare_restore:7.1f} s")
    print(
        f"  golive restore (data rollback)     {restore:7.1f} s   {restore / bare_restore:.2f}x "
        "the bare restore (fresh database, row counts, swap)"
    )


def timed(step: Callable[[], object]) -> float:
    started = time.monotonic()
    step()
    return time.monotonic() - started


def bare(db: Database, command: list[str]) -> None:
    subprocess.run(command, env=db.env(), check=True)


def bare_restore_of(db: Database, dump: Path) -> None:
    with psycopg.connect(
        host=db.host, port=db.port, user=db.user, dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(f"CREATE DATABASE {NAME}_bare".encode())
    try:
        bare(db, ["pg_restore", "--no-owner", f"--dbname={NAME}_bare", str(dump)])
    finally:
        drop(db, f"{NAME}_bare")


def drop(db: Database, name: str) -> None:
    with psycopg.connect(
        host=db.host, port=db.port, user=db.user, dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


if __name__ == "__main__":
    main()
