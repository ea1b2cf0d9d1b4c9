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
from golive.journal import RunJournal
from golive.lease import lease_seconds
from tasks.approvals import GateDecision, reopened, submit


@flow(name="gate-deadline", flow_run_name="deadline of gate {gate} in run {run_id}")
def gate_deadline(run_id: str, gate: str, opened_at: str) -> str:
    """Wake run `run_id` if it still waits, suspended, at gate `gate` as opened at `opened_at`.

    Args:
        run_id: The go-live run suspended at the gate.
        gate: The gate's name.
        opened_at: When the gate opened (a later opening has a timer of its own).
    """
    journal = RunJournal.find(run_id)
    opening = reopened(journal, gate)
    if opening is None or opening.opened_at != opened_at:
        return _told(f"gate {gate} of run {run_id} was decided: nothing to do")
    # A worker starts a scheduled run up to its prefetch early.
    time.sleep(max(0.0, (opening.deadline - datetime.now(UTC)).total_seconds()))
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(run_id)).state
    if state is not None and state.is_paused():
        decision = GateDecision(decision="timeout", approver="golive", comment="its time is up")
        submit(journal, decision)
        return _told(f"gate {gate} of run {run_id} timed out: the run is resumed to act on it")
    if state is not None and state.is_final():
        reason = f"Prefect ended the run ({state.name}) while it was suspended at gate {gate}"
        rollback(run_id, reason=reason, wait_seconds=2 * lease_seconds())
        return _told(f"{reason}: rolled back")
    return _told(f"run {run_id} is under way again: nothing to do")


def _told(what: str) -> str:
    get_run_logger().info(what)
    return what
