"""Databases: verified backups before anything changes, migrations, and restores on rollback."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from golive import migrations, postgres
from golive.journal import RunJournal
from golive.plan import Migration, Plan, PostgresBackup
from golive.postgres import Database, DatabaseError, Dump
from golive.private import write_private


def database(plan: Plan, name: str) -> Database:
    """The plan's database `name`, with its password from its block or environment."""
    ref = plan.databases[name]
    if ref.block:
        from blocks.postgres import load_postgres

        try:
            block = load_postgres(ref.block)
        except ValueError:
            raise DatabaseError(
                name,
                "load block",
                f"no golive-postgres block named {ref.block!r}; `prefect block ls` lists them",
            ) from None
        if block.dsn is not None:
            return from_dsn(name, block.dsn)
        return Database(name, block.host, block.port, block.database, block.user, block.password)
    secret = os.environ.get(ref.password_env) if ref.password_env else None
    if ref.password_env and not secret:
        raise DatabaseError(
            name,
            "read password",
            f"the plan takes its password from ${ref.password_env}, which is not set here; "
            "set it in the environment of the process that runs golive",
        )
    return Database(
        name,
        ref.host,
        ref.port,
        ref.dbname or name,
        ref.user,
        SecretStr(secret) if secret else None,
    )


def backup_storage(plan: Plan) -> tuple[Path, int]:
    """The directory backups go to, and how many verified ones to keep."""
    if plan.backup_storage.block is None:
        return plan.backup_storage.directory, plan.backup_storage.keep
    from blocks.postgres import load_backup_storage

    block = load_backup_storage(plan.backup_storage.block)
    return Path(block.directory).expanduser(), block.keep


def from_dsn(name: str, dsn: SecretStr) -> Database:
    try:
        parts = conninfo_to_dict(dsn.get_secret_value())
    except psycopg.ProgrammingError:
        raise DatabaseError(
            name,
            "read DSN",
            "the block's dsn is not a libpq connection string or postgresql:// URI",
        ) from None
    password = parts.pop("password", None)
    where = {key: str(parts.pop(key)) for key in ("host", "port", "dbname", "user") if key in parts}
    return Database(
        name,
        where.get("host", "127.0.0.1"),
        where.get("port", "5432"),
        where.get("dbname", name),
        where.get("user", "postgres"),
        SecretStr(str(password)) if password else None,
        options={key: str(value) for key, value in parts.items()},
    )


@task(name="back up database", task_run_name="back up database {name}", cache_policy=NO_CACHE)
def back_up_database(plan: Plan, name: str, journal: RunJournal) -> dict[str, Any]:
    """pg_dump into backup storage, verify it by a scratch restore, and keep the newest
    `keep` verified backups of this environment's database."""
    db = database(plan, name)
    directory, keep = backup_storage(plan)
    storage = directory / plan.environment / name
    with journal.step("backup", host=f"database {name}") as result:
        backup = postgres.dump(db, storage / f"{journal.run_id}.dump", jobs=dump_jobs(plan, name))
        if backup.jobs_note:
            get_run_logger().warning("Backup of database %s: %s", name, backup.jobs_note)
        try:
            postgres.verify(db, backup)
        except BaseException:  # failed or interrupted: a dump that never verified is no backup
            _remove_dump(backup.path)
            raise
        sidecar = backup.path.with_suffix(".json")
        sidecar_text = json.dumps(asdict(backup) | {"path": str(backup.path)}, indent=2)
        write_private(sidecar, sidecar_text.encode())
        journal.write(
            "database.backed_up",
            database=name,
            where=db.where,
            **asdict(backup) | {"path": str(backup.path)},
            verified=True,
        )
        result |= {
            "sha256": backup.sha256,
            "bytes": backup.size,
            "verified": True,
            "seconds": round(backup.seconds, 2),
            "tables": len(backup.row_counts),
            "jobs": backup.jobs,
        } | ({"jobs_note": backup.jobs_note} if backup.jobs_note else {})
        pruned = _prune(storage, keep, journal.run_id)
        if pruned:
            journal.write("backup.pruned", database=name, removed=pruned)
    return result


def dump_jobs(plan: Plan, name: str) -> int:
    """The plan's jobs for this database's backup, or this machine's cores."""
    asked = next(
        (b.jobs for b in plan.backups if isinstance(b, PostgresBackup) and b.database == name),
        None,
    )
    return asked or os.cpu_count() or 1


def _prune(storage: Path, keep: int, run_id: str) -> list[str]:
    """Only verified backups (those with a sidecar) count; the oldest beyond `keep` go, and
    so do dumps that never verified (a run killed while verifying one): no rollback may use
    them. The environment's lease keeps other runs from writing here meanwhile."""
    verified = sorted(storage.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    unverified = [
        dump.with_suffix(".json")
        for dump in storage.glob("*.dump")
        if dump.stem != run_id and not dump.with_suffix(".json").exists()
    ]
    for sidecar in [*verified[keep:], *unverified]:
        _remove_dump(sidecar.with_suffix(".dump"))
        sidecar.unlink(missing_ok=True)
    return sorted(sidecar.stem for sidecar in [*verified[keep:], *unverified])


def _remove_dump(dump: Path) -> None:
    if dump.is_dir():
        shutil.rmtree(dump)
    else:  # an older dump: one file
        dump.unlink(missing_ok=True)


@task(name="migrate", task_run_name="migrate {migration.sql.name}", cache_policy=NO_CACHE)
def apply_migration(plan: Plan, migration: Migration, journal: RunJournal) -> dict[str, Any]:
    name = plan.database_of(migration)
    about = {"database": name, "file": migration.sql.name, "reversible": migration.reversible}
    with journal.step("migrate", host=f"database {name}") as result:
        journal.write("migration.applying", **about)
        result |= migrations.apply(database(plan, name), migration)
        journal.write("migration.applied", **about)
    return result


@task(name="restore database", task_run_name="restore database {name}", cache_policy=NO_CACHE)
def restore_database(plan: Plan, name: str, journal: RunJournal) -> dict[str, int]:
    """Restore the database from this run's verified backup, and check its row counts."""
    entry = next(e for e in journal.of_kind("database.backed_up") if e["database"] == name)
    backup = Dump(
        Path(entry["path"]),
        entry["sha256"],
        entry["size"],
        entry["seconds"],
        entry["row_counts"],
        entry["jobs"],
    )
    db = database(plan, name)
    with journal.step("restore", host=f"database {name}") as result:
        kept = postgres.kept_name(db.dbname, journal.run_id)
        result["row_counts"] = postgres.restore(db, backup, keep_as=kept)
        result["kept_as"] = kept
    return dict(result["row_counts"])
