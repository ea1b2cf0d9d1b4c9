"""Rollback: put every host the run switched back on the release it had, last wave first.

What to undo, and the plan it was done by, come from the run store, never from memory or the
plan file, so the same flow serves a failing run and, later, an operator rolling back a run
whose process died, from any machine that reaches the store and the hosts.
"""

from __future__ import annotations

from uuid import UUID

from prefect import State, flow, get_client, get_run_logger
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from prefect.states import Crashed, Failed

from golive.errors import NothingToRollBack, RollbackIncomplete
from golive.journal import RollbackJournal, RunJournal
from golive.lease import environment_lease, holder
from golive.plan import Plan
from golive.record import (
    hosts_to_restore,
    migrated_databases,
    point_of_no_return,
    since_last_rollback,
    stored_plan,
)
from golive.transport import resolve_blocks
from golive.trigger import golive_version, trigger, whoami
from golive.undo import (
    Undo,
    abandoned_rollbacks,
    undone_run,
    what_to_undo,
)
from tasks.hosts import on_every_host, restore_host
from tasks.reports import story_in_prefect_logs
from tasks.smoke import smoke_check_host


@flow(name="rollback", flow_run_name="rollback {run_id}")
def rollback(
    run_id: str,
    reason: str = "manual rollback",
    restore_data: bool = True,
    triggered_by: str = "",
    within_run: bool = False,
    wait_seconds: float = 0,
) -> dict[str, str | None] | State:
    """Put back what run `run_id` changed, as the run store records it; with `restore_data`
    false, the hosts only (the data rolls forward). A failing go-live calls it `within_run`:
    the steps join that run's record. Otherwise (`golive rollback`, the rollback deployment)
    it is a run of its own, linked both ways to the run it undoes, holding the environment.
    One that cannot finish ends in a Prefect state named RollbackFailed. While another process
    holds the environment, it waits up to `wait_seconds` for it.

    Args:
        run_id: The go-live run to roll back (its id, or a unique start of it).
        reason: Why: kept in the run store and the report.
        restore_data: Restore the databases the run migrated from its verified backups.
        triggered_by: Who asks for the rollback (default: the OS user).
        within_run: Set by a failing go-live for its own rollback; leave it off.
        wait_seconds: While another run holds the environment, wait this long for it.
    """
    run = undone_run(RunJournal.find(run_id)).verified()
    if within_run:
        return undo(run, reason, restore_data)
    undoing = what_to_undo(run)
    free_if_ended(run)
    stopped = abandoned_rollbacks(run)  # before this one is a run, "running" without a lease
    own = open_rollback_run(run, triggered_by or whoami())
    takes_over = [run.run_id, *stopped]
    lease = environment_lease(own, undoing.environment, "rollback", takes_over, wait=wait_seconds)
    with story_in_prefect_logs(own.run_id), lease:
        try:  # again: another rollback may have held the environment meanwhile
            undoing = what_to_undo(run)
        except NothingToRollBack as nothing:
            own.write("run.finished", state="refused", reason=str(nothing))
            raise
        if not undoing.finished:
            run.write("run.crashed", lease_expired_at=None, found_by=holder())
        take_over(stopped, own)
        failure: BaseException | None = None
        try:
            outcome = undo(RollbackJournal(run, own), reason, restore_data)
        except BaseException as error:
            failure = error
            raise
        finally:  # even when stopped: the store says how far it got, and why it stopped
            close_rollback_run(run, own, undoing, reason, failure)
    if not undoing.finished:
        crashed_in_prefect(run.run_id)
    return outcome


def undo(journal: RunJournal, reason: str, restore_data: bool) -> dict[str, str | None] | State:
    """Every host back, last wave first, each smoke-checked; then the data, as allowed."""
    plan, _ = resolve_blocks(stored_plan(journal.entries()))
    changed = hosts_to_restore(since_last_rollback(journal.entries()))
    journal.write("rollback.started", reason=reason, hosts=[host for _, host, _ in changed])
    last_wave_first = sorted(changed, key=lambda change: -change[0])
    releases = {host: before for _, host, before in last_wave_first}
    limit = plan.rollback.concurrency(len(releases))
    failures = restore_hosts(plan, releases, journal, limit)
    failures |= restore_databases(plan, journal) if restore_data else keep_data(journal)
    journal.write("rollback.finished", complete=not failures, failed=sorted(failures))
    if failures:
        incomplete = RollbackIncomplete(failures, f"golive audit show {journal.run_id}")
        return Failed(name="RollbackFailed", message=str(incomplete), data=incomplete)
    return {host: before for _, host, before in changed}


def open_rollback_run(run: RunJournal, triggered_by: str) -> RunJournal:
    """The rollback's own run in the store: the undone run's plan, who asked, from where."""
    started = next(run.of_kind("run.started"))
    own = RunJournal.create(str(flow_run.id))
    context = FlowRunContext.get()
    own.write(
        "run.started",
        **{k: v for k, v in started.items() if k not in ("at", "kind", "seq", "hash")}
        | {
            "run_id": own.run_id,
            "flow_run_name": flow_run.name,
            "triggered_by": triggered_by,
            "trigger": trigger(triggered_by),
            "golive_version": golive_version(),
            "api_url": str(context.client.api_url) if context else None,
            "rolls_back": run.run_id,
        },
    )
    return own


def close_rollback_run(
    run: RunJournal, own: RunJournal, undoing: Undo, reason: str, failure: BaseException | None
) -> None:
    """Both runs end: the undone one points at the rollback that holds the steps."""
    finished = next(own.of_kind("rollback.finished"), {"complete": False, "failed": []})
    complete, failed = finished["complete"] and failure is None, finished["failed"]
    run.write("rollback.finished", complete=complete, failed=failed, by=own.run_id)
    ended = "rolled back" if undoing.finished else "failed"  # a crashed run never completed
    state = ended if complete else "rollback failed"
    why = reason if undoing.finished else f"crashed; rolled back: {reason}"
    if failure is not None:
        why += f"; the rollback stopped: {type(failure).__name__}: {failure}"
    run.write("run.finished", state=state, reason=f"{why} (by run {own.run_id})")
    own.write("run.finished", state="completed" if complete else "failed", reason=why)


def take_over(stopped: list[str], own: RunJournal) -> None:
    """Earlier rollbacks of the same run whose process died end here: this one takes over."""
    for run_id in stopped:
        dead = RunJournal(run_id, own.store)
        dead.write("run.crashed", lease_expired_at=None, found_by=holder())
        dead.write("run.finished", state="failed", reason=f"crashed; run {own.run_id} took over")


def free_if_ended(run: RunJournal) -> None:
    """A run suspended at a gate keeps its environment's lease without a process. Once
    Prefect has ended it while it was suspended (a Cancel), the lease holds nothing, and the
    rollback may take it."""
    started = next(run.of_kind("run.started"))
    held = run.store.lease(started["environment"])
    if held is None or held.run_id != run.run_id or not any(run.of_kind("gate.suspended")):
        return
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(run.run_id)).state
    except Exception:  # Prefect out of reach: the lease stands until it runs out
        return
    if state is not None and state.is_final():
        run.store.drop_lease(held)


def crashed_in_prefect(run_id: str) -> None:
    """Prefect's record of the dead run says Crashed too, where its API can be reached."""
    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(
                UUID(run_id), Crashed(message="its process died; golive rolled it back"), force=True
            )
    except Exception as error:  # e.g. a temporary server that died with the run
        get_run_logger().warning(
            "The Prefect state of run %s could not be set to Crashed (%s); the run store has it.",
            run_id,
            error,
        )


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
    from tasks.databases import restore_database  # psycopg: only plans with databases pay

    failures = {}
    for name in migrated:
        try:
            restore_database(plan, name, journal)
            journal.write("database.restored", database=name, ok=True)
        except Exception as error:
            journal.write("database.restored", database=name, ok=False, error=str(error))
            failures[f"database {name}"] = str(error)
    return failures


def restore_hosts(
    plan: Plan, releases: dict[str, str | None], journal: RunJournal, limit: int | None = None
) -> dict[str, str]:
    """Restore the hosts (at most `limit` at once, in the order given), then smoke-check the
    ones that have a release again."""
    failures: dict[str, str] = {}
    restored, errors = on_every_host(
        "restore",
        restore_host,
        plan,
        list(releases),
        limit=limit,
        releases=releases,
        journal=journal,
    )
    failures |= {host: str(error) for host, error in errors.items()}
    answering = [host for host in restored if releases[host] is not None]
    _, errors = on_every_host("smoke", smoke_check_host, plan, answering, journal=journal)
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
