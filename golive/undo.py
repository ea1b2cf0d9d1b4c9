"""What `golive rollback RUN` would undo, read from the run store, and why it may refuse.

A rollback after the fact serves two cases: a run whose process died mid-run (crashed: it
never finished, and its lease expired), and a run that finished but turned out bad hours
later (an emergency rollback). Either way golive puts back the releases the run replaced, and
the data only as the run's state and the operator's choice allow.
"""

from __future__ import annotations

from dataclasses import dataclass

from golive.errors import NothingToRollBack
from golive.journal import Entry, RunJournal
from golive.lease import with_crashes
from golive.plan import Plan
from golive.record import (
    hosts_to_restore,
    migrated_databases,
    point_of_no_return,
    since_last_rollback,
    stored_plan,
)
from golive.store import RunStore


@dataclass(frozen=True)
class Undo:
    run_id: str
    environment: str
    finished: bool  # the run ended (completed, partial or failed); else it crashed
    hosts: dict[str, str | None]  # host -> the release it goes back to
    databases: list[str]  # migrated, restorable from this run's verified backups
    beyond_return: str | None  # an irreversible migration ran: the data rolls forward
    plan: Plan  # as the run carried it out
    row_counts: dict[str, dict[str, int]]  # per database, per table, at the backup


def what_to_undo(journal: RunJournal) -> Undo:
    """What a rollback of the run would put back; refuses a run with nothing to undo, one
    already rolled back, and one whose hosts a later run changed."""
    own = journal.entries()
    started = next((e for e in own if e["kind"] == "run.started"), None)
    if started is None:
        raise NothingToRollBack(f"run {journal.run_id} never started: nothing to roll back")
    entries = journal.with_rollbacks(journal.rollback_runs())  # what they put back counts
    since = since_last_rollback(entries)
    hosts = {host: before for _, host, before in hosts_to_restore(since)}
    databases = [name.removeprefix("database ") for name in migrated_databases(since)]
    if not hosts and not databases:
        raise NothingToRollBack(_nothing(journal.run_id, entries))
    _refuse_later_changes(journal.store, journal.run_id, started["environment"], set(hosts))
    beyond = point_of_no_return(entries)
    return Undo(
        journal.run_id,
        started["environment"],
        finished=any(e["kind"] == "run.finished" for e in own),
        hosts=hosts,
        databases=databases,
        beyond_return=beyond["file"] if beyond else None,
        plan=stored_plan(entries),
        row_counts={
            e["database"]: e["row_counts"] for e in entries if e["kind"] == "database.backed_up"
        },
    )


def undone_run(journal: RunJournal) -> RunJournal:
    """The run to roll back when asked to roll back `journal`'s: a rollback run (one that was
    stopped, say) stands for the run it was undoing."""
    started = next(journal.of_kind("run.started"), {})
    return RunJournal.find(started["rolls_back"]) if started.get("rolls_back") else journal


def abandoned_rollbacks(journal: RunJournal) -> list[str]:
    """Rollback runs of `journal`'s run whose process died before they finished: they held
    the environment once, and hold it no more (one still waiting for it is alive)."""
    store = journal.store
    crashed = {
        row.run_id for row in with_crashes(store, store.run_rows()) if row.state == "crashed"
    }
    return [
        run_id
        for run_id in journal.rollback_runs()
        if run_id in crashed and any(e.kind == "lease.taken" for e in store.entries(run_id))
    ]


def _nothing(run_id: str, entries: list[Entry]) -> str:
    undone = [e for e in entries if e["kind"] == "rollback.finished" and e["complete"]]
    if undone:
        return (
            f"run {run_id} was already rolled back (at {undone[-1]['at'][:19]}); nothing it "
            f"changed is left to undo. `golive audit show {run_id[:8]}` shows how"
        )
    return f"run {run_id} changed no host and no database: nothing to roll back"


def _refuse_later_changes(store: RunStore, run_id: str, environment: str, hosts: set[str]) -> None:
    """A later run that switched the same hosts must be rolled back first: undoing this one
    over it would put back releases that are no longer the ones this run replaced."""
    rows = store.run_rows()  # newest first
    mine = next(row for row in rows if row.run_id == run_id)
    for row in rows:
        if row.environment != environment or row.started_at <= mine.started_at:
            continue
        later = since_last_rollback(RunJournal(row.run_id, store).entries())
        touched = {host for _, host, _ in hosts_to_restore(later)} & hosts
        if touched:
            raise NothingToRollBack(
                f"run {row.run_id} (started {row.started_at[:19]}) has since changed "
                f"{', '.join(sorted(touched))}: roll it back first "
                f"(`golive rollback {row.run_id[:8]}`), then this one"
            )
