"""Rollback: put every host the run switched back on the release it had, last wave first.

What to undo, and the plan it was done by, come from the run store, never from memory or the
plan file, so the same flow serves a failing run and, later, an operator rolling back a run
whose process died, from any machine that reaches the store and the hosts.
"""

from __future__ import annotations

from prefect import State, flow
from prefect.states import Failed

from golive.errors import RollbackIncomplete
from golive.journal import RunJournal
from golive.plan import Plan
from golive.record import hosts_to_restore, migrated_databases, point_of_no_return, stored_plan
from golive.transport import resolve_blocks
from golive.undo import since_last_rollback
from tasks.databases import restore_database
from tasks.hosts import on_every_host, restore_host
from tasks.smoke import smoke_check_host


@flow(name="rollback", flow_run_name="rollback {run_id}")
def rollback(run_id: str, reason: str, restore_data: bool = True) -> dict[str, str | None] | State:
    """Put back what run `run_id` changed, as the run store records it; with `restore_data`
    false, the hosts only (the data rolls forward). One that cannot finish ends in a Prefect
    state named RollbackFailed."""
    journal = RunJournal.find(run_id).verified()
    plan, _ = resolve_blocks(stored_plan(journal.entries()))
    changed = hosts_to_restore(since_last_rollback(journal.entries()))
    journal.write("rollback.started", reason=reason, hosts=[host for _, host, _ in changed])
    failures: dict[str, str] = {}
    for wave in sorted({wave for wave, _, _ in changed}, reverse=True):
        releases = {host: before for w, host, before in changed if w == wave}
        failures |= restore_wave(plan, releases, journal)
    failures |= restore_databases(plan, journal) if restore_data else keep_data(journal)
    journal.write("rollback.finished", complete=not failures, failed=sorted(failures))
    if failures:
        incomplete = RollbackIncomplete(failures, f"golive audit show {journal.run_id}")
        return Failed(name="RollbackFailed", message=str(incomplete), data=incomplete)
    return {host: before for _, host, before in changed}


def keep_data(journal: RunJournal) -> dict[str, str]:
    """The operator chose hosts only: the data stays as it is, and the record says so."""
    migrated = [
        name.removeprefix("database ")
        for name in migrated_databases(since_last_rollback(journal.entries()))
    ]
    if migrated:
        journal.write(
            "database.roll_forward",
            databases=migrated,
            reason="the rollback was asked for hosts only (--hosts-only); the data stays as it "
            "is, with every write since the backup, and must be fixed forward",
        )
    return {}


def restore_databases(plan: Plan, journal: RunJournal) -> dict[str, str]:
    """Every migrated database back as its verified backup holds it; unless the run passed a
    point of no return, after which the data rolls forward and only hosts go back."""
    migrated = [
        name.removeprefix("database ")
        for name in migrated_databases(since_last_rollback(journal.entries()))
    ]
    beyond = point_of_no_return(journal.entries())
    if migrated and beyond is not None:
        journal.write(
            "database.roll_forward",
            databases=migrated,
            reason=f"irreversible migration {beyond['file']} ran; the data stays as "
            "it is and must be fixed forward",
        )
        return {}
    failures = {}
    for name in migrated:
        try:
            restore_database(plan, name, journal)
            journal.write("database.restored", database=name, ok=True)
        except Exception as error:
            journal.write("database.restored", database=name, ok=False, error=str(error))
            failures[f"database {name}"] = str(error)
    return failures


def restore_wave(
    plan: Plan, releases: dict[str, str | None], journal: RunJournal
) -> dict[str, str]:
    """Restore a wave's hosts at once, then smoke-check the ones that have a release again."""
    failures: dict[str, str] = {}
    restored, errors = on_every_host(
        restore_host, plan, list(releases), releases=releases, journal=journal
    )
    failures |= {host: str(error) for host, error in errors.items()}
    answering = [host for host in restored if releases[host] is not None]
    _, errors = on_every_host(smoke_check_host, plan, answering, journal=journal)
    failures |= {host: f"restored, but {error}" for host, error in errors.items()}
    for host, release in releases.items():
        journal.write(
            "host.restored",
            host=host,
            to=release,
            ok=host not in failures,
            error=failures.get(host),
        )
    return failures
