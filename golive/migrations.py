"""Data migrations: each SQL file in its own transaction, between checks that must hold.

A check is a query returning one value, compared with what the plan expects: a value
(`equals`), a bound (`at_least`, `at_most`), or its own value from before the migration
(`unchanged`). If a statement or an after-check fails, the file's transaction is rolled back.
"""

from __future__ import annotations

from typing import Any

import psycopg

from golive.plan import Migration, MigrationCheck
from golive.postgres import Database, DatabaseError, first_line


class MigrationFailed(DatabaseError):
    pass


def apply(db: Database, migration: Migration) -> dict[str, Any]:
    """Run one migration file with its checks; commit only if every check holds."""
    script = migration.sql.read_text()
    name = migration.sql.name
    with db.connect() as conn:
        before = {
            c.name: _value(db, conn, c)
            for c in migration.checks
            if c.when in ("before", "both") or c.unchanged
        }
        _judge(db, name, "before", migration.checks, before, {})
        try:
            conn.execute(script.encode())
        except psycopg.Error as error:
            conn.rollback()
            raise MigrationFailed(
                db.name, f"migration {name}", f"{first_line(error)}; its changes were rolled back"
            ) from None
        after = {
            c.name: _value(db, conn, c)
            for c in migration.checks
            if c.when in ("after", "both") or c.unchanged
        }
        try:
            _judge(db, name, "after", migration.checks, after, before)
        except MigrationFailed:
            conn.rollback()
            raise
        conn.commit()
    return {"file": str(migration.sql), "before": before, "after": after}


def _value(db: Database, conn: psycopg.Connection[Any], check: MigrationCheck) -> Any:
    try:
        row = conn.execute(check.query.encode()).fetchone()
    except psycopg.Error as error:
        raise MigrationFailed(db.name, f"check {check.name!r}", first_line(error)) from None
    return row[0] if row else None


def _judge(
    db: Database,
    file: str,
    when: str,
    checks: list[MigrationCheck],
    values: dict[str, Any],
    before: dict[str, Any],
) -> None:
    for check in checks:
        if check.name not in values or (when == "before" and check.when == "after"):
            continue
        problem = _problem(check, values[check.name], before.get(check.name), when)
        if problem:
            undone = "; its changes were rolled back" if when == "after" else "; nothing was run"
            raise MigrationFailed(
                db.name, f"migration {file}", f"check {check.name!r} {when} it: {problem}{undone}"
            )


def _problem(check: MigrationCheck, value: Any, before: Any, when: str) -> str | None:
    if check.unchanged and when == "after" and value != before:
        return f"was {before!r} before and is {value!r} after; expected unchanged"
    if check.equals is not None and _number(value) != _number(check.equals):
        return f"is {value!r}, expected {check.equals!r}"
    if check.at_least is not None and _number(value) < check.at_least:
        return f"is {value!r}, expected at least {check.at_least:g}"
    if check.at_most is not None and _number(value) > check.at_most:
        return f"is {value!r}, expected at most {check.at_most:g}"
    return None


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
