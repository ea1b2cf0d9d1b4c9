"""A suspended gate's deadline: the run waiting there has no process to notice it, so a run
of this flow, scheduled for the deadline when the gate suspended, wakes it.

If the run still waits at that opening of the gate, it is resumed with a `timeout`, and the
gate then fails (the run rolls back) or passes, as the plan's `on_timeout` says; the run
checks the deadline against its own store, so an early `timeout` does not count. If Prefect
ended the run while it was suspended (a Cancel: it had no process to roll back in), what it
changed is rolled back here.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from uuid import UUID

from prefect import flow, get_client, get_run_logger

from flows.rollback import rollback
from golive.errors import GoLiveError
from golive.journal import RunJournal
from golive.lease import lease_seconds
from golive.record import stored_plan
from tasks.approvals import DecisionNotSubmitted, GateDecision, reopened, submit


@flow(name="gate-deadline", flow_run_name="deadline of gate {gate} in run {run_id}")
def gate_deadline(run_id: str, gate: str, opened_at: str) -> str:
    """Wake run `run_id` if it still waits, suspended, at gate `gate` as opened at `opened_at`.

    Args:
        run_id: The go-live run suspended at the gate.
        gate: The gate's name.
        opened_at: When the gate opened (a later opening has a timer of its own).
    """
    journal = RunJournal.find(run_id)
    if not _still_waits(journal, gate, opened_at):
        return _told(f"gate {gate} of run {run_id} was decided: nothing to do")
    opening = reopened(journal, gate)
    assert opening is not None
    # A worker starts a scheduled run up to its prefetch early.
    time.sleep(max(0.0, (opening.deadline - datetime.now(UTC)).total_seconds()))
    if not _still_waits(journal, gate, opened_at):
        return _told(f"gate {gate} of run {run_id} was decided: nothing to do")
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(run_id)).state
    if state is not None and state.is_paused():
        return _wake(journal, gate)
    if state is not None and state.is_final():
        return _roll_back_ended(journal, gate, state.name)
    return _told(f"run {run_id} is under way again: nothing to do")


def _still_waits(journal: RunJournal, gate: str, opened_at: str) -> bool:
    """Whether the run, unfinished, still waits at that opening of the gate."""
    opening = reopened(journal, gate)
    return opening is not None and opening.opened_at == opened_at


def _wake(journal: RunJournal, gate: str) -> str:
    decision = GateDecision(decision="timeout", approver="golive", comment="its time is up")
    try:
        submit(journal, decision)
    except DecisionNotSubmitted as error:  # decided, or ended, this very moment
        return _told(f"gate {gate} of run {journal.run_id} was not woken: {error}")
    return _told(f"gate {gate} of run {journal.run_id} timed out: the run is resumed to act on it")


def _roll_back_ended(journal: RunJournal, gate: str, state: str | None) -> str:
    """Prefect ended the run while it was suspended (a Cancel): roll back what it changed,
    as its crash hook would have, where its plan rolls back on its own."""
    reason = f"Prefect ended the run ({state}) while it was suspended at gate {gate}"
    if not stored_plan(journal.entries()).rollback.automatic:
        return _told(f"{reason}; its plan turns automatic rollback off: `golive rollback`")
    try:
        rollback(journal.run_id, reason=reason, wait_seconds=2 * lease_seconds())
    except GoLiveError as error:
        return _told(f"{reason}; it was not rolled back: {error}")
    return _told(f"{reason}: rolled back")


def _told(what: str) -> str:
    get_run_logger().info(what)
    return what
