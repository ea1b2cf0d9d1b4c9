"""PostgreSQL: dumps that are proven restorable, migrations with checks, and restores.

A dump counts the rows of every table inside the same snapshot that pg_dump reads, so
"the backup holds what the database held" is a comparison of numbers, not a hope. Dumps are
directories (`pg_dump --format=directory`, gzip level 1), written, checksummed and restored by
several jobs at once: a table a job. Passwords reach pg_dump and pg_restore through PGPASSWORD,
never the command line.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from golive.errors import GoLiveError
from golive.manifest import sha256_of
from golive.private import private_dir

RowCounts = dict[str, int]
NO_SPACE = "No space left on device"  # how pg_dump and the server say a disk is full


class DatabaseError(GoLiveError):
    def __init__(self, database: str, step: str, reason: str) -> None:
        self.database = database
        self.step = step
        super().__init__(f"database {database!r}, {step}: {reason}")


@dataclass(frozen=True)
class Database:
    name: str  # the plan's name for it
    host: str  # or several, "db1,db2", as libpq takes them
    port: int | str
    dbname: str
    user: str
    password: SecretStr | None = None
    # Other libpq connection options from a DSN (sslmode, sslrootcert, target_session_attrs,
    # ...): kept, and passed to every connection and every pg_dump/pg_restore.
    options: dict[str, str] = field(default_factory=dict)

    def connect(
        self, dbname: str | None = None, autocommit: bool = False
    ) -> psycopg.Connection[Any]:
        secret = self.password.get_secret_value() if self.password else None
        try:
            return psycopg.connect(
                self.conninfo(dbname),
                password=secret,
                autocommit=autocommit,
                connect_timeout=self.options.get("connect_timeout", 10),
            )
        except psycopg.OperationalError as error:
            raise DatabaseError(self.name, "connect", first_line(error)) from None

    def conninfo(self, dbname: str | None = None) -> str:
        """Where and who, with every connection option, and never the password."""
        return make_conninfo(
            "",
            host=self.host,
            port=str(self.port),
            dbname=dbname or self.dbname,
            user=self.user,
            **{k: v for k, v in self.options.items() if k != "connect_timeout"},
        )

    def env(self) -> dict[str, str]:
        """Environment for pg_dump/pg_restore: where and who, and the password out of sight."""
        env = os.environ | {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user}
        if self.password:
            env["PGPASSWORD"] = self.password.get_secret_value()
        return env

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"


@dataclass(frozen=True)
class Dump:
    path: Path  # a directory (pg_dump --format=directory); a file for older dumps
    sha256: str  # of the dump's files, each by name (see `sha256_of_dump`)
    size: int
    seconds: float
    row_counts: RowCounts = field(default_factory=dict)
    jobs: int = 1
    jobs_note: str | None = None  # why fewer jobs ran than were asked for


def dump(db: Database, destination: Path, jobs: int = 1) -> Dump:
    """pg_dump --format=directory by `jobs` at once (fewer if the server has no room for
    their connections), and the row count of every table in the same snapshot. A dump that
    fails leaves nothing behind."""
    _require("pg_dump")
    private_dir(destination.parent)
    if destination.exists():
        raise DatabaseError(db.name, "pg_dump", f"{destination} exists already; nothing written")
    started = time.monotonic()
    try:
        with db.connect() as conn:
            counts, jobs, note = _dump_in_snapshot(db, conn, destination, jobs)
        digest, size = sha256_of_dump(destination, jobs)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)  # no half a dump left to mistake
        raise
    return Dump(destination, digest, size, time.monotonic() - started, counts, jobs, note)


def _dump_in_snapshot(
    db: Database, conn: psycopg.Connection[Any], destination: Path, jobs: int
) -> tuple[RowCounts, int, str | None]:
    """pg_dump reads an exported snapshot while this session counts its rows: the same data,
    at the same time."""
    try:
        jobs, note = jobs_with_room(conn, jobs)
        conn.rollback()  # the snapshot's transaction begins below, with its own isolation
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
    except psycopg.Error as error:
        raise DatabaseError(db.name, "export a snapshot", first_line(error)) from None
    with subprocess.Popen(
        [
            "pg_dump",
            "--format=directory",
            "--compress=1",  # half the CPU of the default level, for a slightly larger dump
            f"--jobs={jobs}",
            f"--snapshot={snapshot}",
            f"--file={destination}",
            f"--dbname={db.conninfo()}",
        ],
        env=db.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        umask=0o077,  # the dump is owner-only from its first byte
    ) as dumping:
        try:
            counts = row_counts(conn)
        except psycopg.Error as error:
            dumping.kill()
            raise DatabaseError(db.name, "count rows", first_line(error)) from None
        finally:
            _, errors = dumping.communicate()
        conn.rollback()
    if dumping.returncode != 0:
        raise DatabaseError(db.name, "pg_dump", _dump_failed(dumping.returncode, errors))
    return counts, jobs, note


def _dump_failed(code: int, errors: str) -> str:
    if NO_SPACE in errors:
        return (
            f"the backup storage is full ({_tail(errors)}); nothing was changed and the partial "
            "dump was removed: free space there, or set backup_storage to a larger place"
        )
    return f"pg_dump exited with code {code}: {_tail(errors)}"


# Connections free under each limit PostgreSQL enforces on a new connection (NULL: none; a
# superuser is held only by max_connections), for the role and database of this session.
FREE_CONNECTIONS = """
SELECT current_setting('max_connections')::int
         - current_setting('superuser_reserved_connections')::int
         - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       (SELECT rolconnlimit - (SELECT count(*) FROM pg_stat_activity
                               WHERE usename = current_user AND backend_type = 'client backend')
          FROM pg_roles WHERE rolname = current_user AND rolconnlimit >= 0 AND NOT rolsuper),
       (SELECT datconnlimit - (SELECT count(*) FROM pg_stat_activity
                               WHERE datname = current_database()
                                 AND backend_type = 'client backend')
          FROM pg_database WHERE datname = current_database() AND datconnlimit >= 0
           AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user))
"""
LIMITS = ("max_connections", "the role's CONNECTION LIMIT", "the database's CONNECTION LIMIT")


def jobs_with_room(conn: psycopg.Connection[Any], wanted: int) -> tuple[int, str | None]:
    """As many jobs as asked for, if the server, the role and the database each have a
    connection free for each (and for pg_dump's or pg_restore's own); otherwise as many as
    the tightest of them has, and why."""
    row = conn.execute(FREE_CONNECTIONS).fetchone() or (0, None, None)
    free, limit = min((int(n), name) for n, name in zip(row, LIMITS, strict=True) if n is not None)
    if wanted + 1 <= free:
        return wanted, None
    room = max(1, free - 1)
    return room, (
        f"{wanted} jobs asked for, but {max(free, 0)} connection(s) are free under {limit}: "
        f"{room} job(s) ran"
    )


def restore_jobs(db: Database, wanted: int) -> int:
    """As many pg_restore jobs as the dump was written with, if the server has room for them
    now: a rollback's restore must not fail for want of connections."""
    with db.connect("postgres") as admin:
        return jobs_with_room(admin, wanted)[0]


def sha256_of_dump(path: Path, jobs: int = 1) -> tuple[str, int]:
    """The dump's checksum and size in bytes. A directory's checksum covers each file's name
    and sha256 (computed by `jobs` threads at once), so a file added, removed, renamed or
    changed changes it."""
    if path.is_file():
        return sha256_of(path), path.stat().st_size
    files = sorted(file for file in path.iterdir() if file.is_file())
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as hashing:
        digests = list(hashing.map(sha256_of, files))
    listing = "".join(
        f"{file.name}\t{digest}\n" for file, digest in zip(files, digests, strict=True)
    )
    size = sum(file.stat().st_size for file in files)
    return hashlib.sha256(listing.encode()).hexdigest(), size


def row_counts(conn: psycopg.Connection[Any]) -> RowCounts:
    tables = conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', "
        "'information_schema') ORDER BY 1, 2"
    ).fetchall()
    counts = {}
    for schema, table in tables:
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        counts[f"{schema}.{table}"] = conn.execute(query).fetchone()[0]  # type: ignore[index]
    return counts


def verify(db: Database, backup: Dump) -> RowCounts:
    """A dump counts only when it reads back: the same checksum, a table of contents
    pg_restore can list, and a scratch restore (by as many jobs as wrote it) whose row
    counts equal the source's."""
    if sha256_of_dump(backup.path, backup.jobs)[0] != backup.sha256:
        raise DatabaseError(
            db.name, "verify backup", f"{backup.path} changed since it was written (sha256 differs)"
        )
    _run(db, "pg_restore --list", ["pg_restore", "--list", str(backup.path)])
    with scratch_database(db) as scratch:
        _restore_into_scratch(db, backup, scratch)
        with db.connect(scratch) as conn:
            restored = row_counts(conn)
    _compare(db, "verify backup", backup.row_counts, restored)
    return restored


def _restore_into_scratch(db: Database, backup: Dump, scratch: str) -> None:
    """The whole dump, schema, data, indexes and constraints, into the scratch database. It
    is dropped once counted, so its tables are made unlogged between schema and data: their
    rows and indexes write no WAL, which only crash safety and replicas need."""
    restoring = ["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={db.conninfo(scratch)}"]
    _run(db, "scratch restore", [*restoring, "--section=pre-data", str(backup.path)])
    _make_unlogged(db, scratch)
    jobs = f"--jobs={restore_jobs(db, backup.jobs)}"
    rest = [*restoring, jobs, "--section=data", "--section=post-data", str(backup.path)]
    _run(db, "scratch restore", rest, options="-c synchronous_commit=off")


def _make_unlogged(db: Database, scratch: str) -> None:
    """Every table of the scratch database, or none: a logged table may not reference an
    unlogged one, so if PostgreSQL refuses one, or there is a partitioned table (which stays
    logged, and whose foreign keys are not known before post-data), all stay logged, which
    only costs time."""
    with db.connect(scratch) as conn:
        tables = conn.execute(
            "SELECT nspname, relname, relkind FROM pg_class "
            "JOIN pg_namespace n ON n.oid = relnamespace WHERE relkind IN ('r', 'p') "
            "AND nspname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        if any(kind == "p" for _, _, kind in tables):
            return
        try:
            for schema, table, _ in tables:
                name = sql.Identifier(schema, table)
                conn.execute(sql.SQL("ALTER TABLE {} SET UNLOGGED").format(name))
        except psycopg.Error:
            conn.rollback()


def restore(db: Database, backup: Dump, keep_as: str) -> RowCounts:
    """Put the database back exactly as the dump holds it, or not at all. The dump (its
    checksum re-read first) is restored into a fresh database and its row counts checked
    there; then, in one transaction, the database is renamed `keep_as` (kept, with every
    write made since the backup, for whoever needs them) and the fresh one takes its name.
    Nothing a migration created survives, and a failure before the swap changes nothing
    (the fresh database is dropped), so the restore needs no single transaction of its own
    and runs by as many jobs as the dump was written with."""
    if sha256_of_dump(backup.path, backup.jobs)[0] != backup.sha256:
        raise DatabaseError(
            db.name, "restore", f"{backup.path} changed since it was verified (sha256 differs)"
        )
    fresh = f"golive_restore_{uuid.uuid4().hex[:12]}"
    _create_like(db, fresh)
    try:
        _run(
            db,
            "restore into a fresh database",
            [
                "pg_restore",
                "--no-owner",
                f"--jobs={restore_jobs(db, backup.jobs)}",
                "--exit-on-error",
                f"--dbname={db.conninfo(fresh)}",
                str(backup.path),
            ],
        )
        with db.connect(fresh) as conn:
            restored = row_counts(conn)
        _compare(db, "verify restore", backup.row_counts, restored)
        _swap(db, fresh, keep_as)
    except BaseException:
        _drop(db, fresh)
        raise
    return restored


def kept_name(dbname: str, run_id: str) -> str:
    """What a database replaced by a rollback is called: its name, the run, within 63 bytes."""
    return f"{dbname[:36]}_before_rollback_{run_id[:8]}"


def _create_like(db: Database, name: str) -> None:
    """A new database owned as the one it will replace (where golive may do that)."""
    with db.connect("postgres", autocommit=True) as admin:
        found = admin.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [db.dbname]
        ).fetchone()
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        try:
            owner = sql.SQL(" OWNER {}").format(sql.Identifier(found[0])) if found else sql.SQL("")
            admin.execute(create + owner)
        except psycopg.errors.InsufficientPrivilege:
            admin.execute(create)


def _swap(db: Database, fresh: str, keep_as: str, attempts: int = 5) -> None:
    """Rename in one transaction; the application's sessions are ended first (it is being
    rolled back), and again if one reconnects in between."""
    for attempt in range(1, attempts + 1):
        try:
            with db.connect("postgres") as admin, admin.transaction():
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    [db.dbname],
                )
                rename = sql.SQL("ALTER DATABASE {} RENAME TO {}")
                admin.execute(rename.format(sql.Identifier(db.dbname), sql.Identifier(keep_as)))
                admin.execute(rename.format(sql.Identifier(fresh), sql.Identifier(db.dbname)))
            return
        except psycopg.errors.ObjectInUse:
            if attempt == attempts:
                raise DatabaseError(
                    db.name, "swap in the restored database", "sessions kept reconnecting to it"
                ) from None
            time.sleep(0.2 * attempt)


def _drop(db: Database, name: str) -> None:
    with db.connect("postgres", autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def scratch_database(db: Database) -> Iterator[str]:
    name = f"golive_verify_{uuid.uuid4().hex[:12]}"
    with db.connect("postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with db.connect("postgres", autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _compare(db: Database, step: str, expected: RowCounts, found: RowCounts) -> None:
    if expected != found:
        differ = sorted(
            t for t in expected.keys() | found.keys() if expected.get(t) != found.get(t)
        )
        detail = ", ".join(
            f"{t}: {expected.get(t)} expected, {found.get(t)} found" for t in differ[:5]
        )
        raise DatabaseError(db.name, step, f"row counts differ: {detail}")


def _run(db: Database, step: str, command: list[str], options: str = "") -> str:
    """`options` are server settings for the tool's sessions, added to the user's PGOPTIONS."""
    env = db.env()
    if options:
        env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} {options}".strip()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        reason = f"{command[0]} exited with code {done.returncode}: {_tail(done.stderr)}"
        if NO_SPACE in done.stderr:
            reason = (
                f"the database server's disk is full ({_tail(done.stderr)}): it needs room for "
                "another copy of the database while golive restores into it; what was restored "
                f"was dropped and nothing was changed. Free space on {db.host}'s disk, then try "
                "again"
            )
        raise DatabaseError(db.name, step, reason)
    return done.stdout


def _tail(errors: str) -> str:
    """The last lines a tool wrote to stderr, and the one saying the disk is full."""
    lines = errors.strip().splitlines()
    full = [line for line in lines[:-3] if NO_SPACE in line][:1]
    return " | ".join(full + lines[-3:])


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        raise DatabaseError(
            "-",
            tool,
            f"{tool} is not installed here; install the PostgreSQL "
            "client (apt-get install postgresql-client)",
        )


def first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
