"""Benchmark: golive's database backup, verification and restore beside bare pg_dump/pg_restore.

    .venv/bin/python bench/backup.py [--scale 70] [--jobs N] [--repeat 3]   (scale 70: ~1 GB)

Baselines: a bare single-job `pg_dump --format=custom` of the same database, and a bare
`pg_restore` of that dump into an empty database. golive dumps by N jobs (default: this
machine's cores) into a directory and checksums it (aim: faster than the bare dump); verifies
it (checksum re-read, pg_restore --list, scratch restore by N jobs, row counts; aim: at most
1.5x its dump); and restores it as a rollback does (fresh database by N jobs, row counts,
swap; shown beside the bare restore). Two databases of the same rows: as pgbench makes it
(one table holds nearly all the data, so jobs, a table each, have little to share) and with
that table split into four. Needs a PostgreSQL server; uses the one on 127.0.0.1:5432 or
starts one.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians shown")
    parser.add_argument(
        "--tables",
        type=int,
        action="append",
        help="the accounts spread over this many tables (default: 1, as pgbench makes them, "
        "then 4)",
    )
    args = parser.parse_args()
    with postgres_server() as (host, port, user), tempfile.TemporaryDirectory() as work:
        db = Database("bench", host, port, NAME, user)
        try:
            for tables in args.tables or [1, 4]:
                create(db, args.scale, tables)
                run(db, Path(work) / f"{tables}-tables", args.jobs, args.repeat)
        finally:
            drop(db, NAME)


def create(db: Database, scale: int, tables: int) -> None:
    drop(db, NAME)
    with psycopg.connect(
        host=db.host, port=db.port, user=db.user, dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(f"CREATE DATABASE {NAME}".encode())
    started = time.monotonic()
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(scale), NAME],
        env=db.env(),
        check=True,
        capture_output=True,
    )
    if tables > 1:
        spread(db, tables)
    with db.connect() as conn:
        size = conn.execute(f"SELECT pg_database_size('{NAME}')".encode()).fetchone()
    assert size is not None
    print(
        f"database {NAME}: {size[0] / 2**30:.2f} GiB (pgbench scale {scale}, accounts in "
        f"{tables} table(s), built in {time.monotonic() - started:.0f} s)"
    )


def spread(db: Database, tables: int) -> None:
    """pgbench_accounts, which holds nearly all the data, split into `tables` equal tables:
    a database whose dump and restore jobs have a table each to work on."""
    with db.connect(autocommit=True) as conn:
        for n in range(tables):
            conn.execute(
                f"CREATE TABLE accounts_{n} AS SELECT * FROM pgbench_accounts "
                f"WHERE aid % {tables} = {n}".encode()
            )
            conn.execute(f"ALTER TABLE accounts_{n} ADD PRIMARY KEY (aid)".encode())
        conn.execute(b"DROP TABLE pgbench_accounts")
        conn.execute(b"VACUUM ANALYZE")


def run(db: Database, work: Path, jobs: int, repeat: int) -> None:
    work.mkdir()
    rounds = [one_round(db, work / f"round{n}", jobs) for n in range(repeat)]
    took = {step: statistics.median(r[step] for r in rounds) for step in rounds[0]}
    dumped, bare_dump, bare_restore = took["golive dump"], took["bare dump"], took["bare restore"]
    print(f"medians of {repeat} rounds")
    print(f"  bare pg_dump --format=custom       {bare_dump:7.1f} s   {took['bare MiB']:.0f} MiB")
    print(
        f"  golive dump + checksums, {jobs} jobs   {dumped:7.1f} s   {took['golive MiB']:.0f} MiB"
        f"   {dumped / bare_dump:.2f}x the bare dump (aim: under 1x)"
    )
    print(
        f"  golive verification                {took['verify']:7.1f} s   "
        f"{took['verify'] / dumped:.2f}x its dump (aim: at most 1.5x; checksums, "
        "pg_restore --list, scratch restore, row counts)"
    )
    print(f"  bare pg_restore, 1 job              {bare_restore:7.1f} s")
    print(
        f"  golive restore (data rollback)     {took['restore']:7.1f} s   "
        f"{took['restore'] / bare_restore:.2f}x the bare restore (fresh database, row counts, swap)"
    )
    print()


def one_round(db: Database, work: Path, jobs: int) -> dict[str, float]:
    """Each step once, baselines first; the seconds of each and the dumps' sizes."""
    work.mkdir()
    bare_file = work / "bare.dump"
    took = {"bare dump": timed(lambda: bare(db, ["pg_dump", "-Fc", f"--file={bare_file}", NAME]))}
    took["bare restore"] = timed(lambda: bare_restore_of(db, bare_file))
    backup = postgres.dump(db, work / "golive.dump", jobs=jobs)  # snapshot, counts, dump, sha256
    took["golive dump"] = backup.seconds
    took["verify"] = timed(lambda: postgres.verify(db, backup))
    took["restore"] = timed(lambda: postgres.restore(db, backup, keep_as=f"{NAME}_kept"))
    drop(db, f"{NAME}_kept")
    took["bare MiB"] = bare_file.stat().st_size / 2**20
    took["golive MiB"] = backup.size / 2**20
    return took


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
