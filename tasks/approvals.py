"""Approval gates: the run pauses until enough allowed approvers decide, or the gate times out.

The flow side is `wait_for_gate` (pausing is a flow-level act in Prefect, so it is not a task);
the approver side is `submit_decision`, used by `golive approve` / `golive reject` and the demo.
Each pause is keyed `<gate>-<attempt>`, so an approver can be told which gate a run waits at.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal
from uuid import UUID

from prefect import get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from pydantic import Field

from golive.errors import GateRejected, GateTimedOut, GoLiveError
from golive.journal import RunJournal
from golive.plan import Gate

# How often a paused run looks for a decision. Prefect's default of 10 s is too slow for a
# person waiting on the other side of `golive approve`.
POLL_SECONDS = 1


class GateDecision(RunInput):
    decision: Literal["approve", "reject"] = Field(description="Let the release go on, or stop it.")
    approver: str = Field(description="Who decides; must be one of the gate's approvers.")
    comment: str = Field("", description="Why: shown in the run record and the report.")


def wait_for_gate(name: str, gate: Gate, journal: RunJournal) -> list[str]:
    """Pause until `gate.quorum` distinct allowed approvers approve; return who approved.
    A reject ends the gate at once; a decision from someone not allowed is refused and
    recorded, and the gate keeps waiting for the rest of its time."""
    journal.write(
        "gate.opened",
        gate=name,
        approvers=gate.approvers,
        quorum=gate.quorum,
        timeout_seconds=gate.timeout,
        approve_command=f"golive approve {journal.run_id} --gate {name} --as NAME",
    )
    deadline = time.monotonic() + gate.timeout
    approvals: list[str] = []
    attempt = 0
    while len(approvals) < gate.quorum:
        attempt += 1
        decision = _pause(name, attempt, deadline, gate, journal, approvals)
        refusal = _refusal(gate, decision, approvals)
        if refusal:
            journal.write(
                "gate.refused",
                gate=name,
                claimed=decision.approver,
                decision=decision.decision,
                reason=refusal,
            )
            continue
        journal.write(
            "gate.decision",
            gate=name,
            approver=decision.approver,
            decision=decision.decision,
            comment=decision.comment,
        )
        if decision.decision == "reject":
            raise GateRejected(name, decision.approver, decision.comment)
        approvals.append(decision.approver)
    journal.write("gate.passed", gate=name, approvers=approvals)
    return approvals


def _pause(
    name: str, attempt: int, deadline: float, gate: Gate, journal: RunJournal, approvals: list[str]
) -> GateDecision:
    remaining = math.ceil(deadline - time.monotonic())
    try:
        if remaining <= 0:
            raise FlowPauseTimeout
        return pause_flow_run(
            wait_for_input=GateDecision,
            timeout=remaining,
            poll_interval=POLL_SECONDS,
            key=f"{name}-{attempt}",
        )
    except FlowPauseTimeout:
        journal.write("gate.timed_out", gate=name, approvers=approvals, outcome=gate.on_timeout)
        raise GateTimedOut(name, gate.timeout, approvals) from None


def _refusal(gate: Gate, decision: GateDecision, approvals: list[str]) -> str | None:
    if decision.approver not in gate.approvers:
        return (
            f"{decision.approver!r} is not an approver of this gate ({', '.join(gate.approvers)})"
        )
    if decision.approver in approvals:
        return f"{decision.approver!r} has already approved; the quorum needs distinct approvers"
    return None


class DecisionNotSubmitted(GoLiveError):
    pass


def submit_decision(
    run_id: str, decision: GateDecision, gate: str | None = None, wait_seconds: float = 0
) -> str:
    """Resume a run paused at a gate with a decision; return the gate's name.
    Waits up to `wait_seconds` for the run to reach a gate."""
    flow_run_id = UUID(run_id)
    give_up = time.monotonic() + wait_seconds
    while True:
        paused_at = _paused_gate(flow_run_id)
        if paused_at is not None or time.monotonic() >= give_up:
            break
        time.sleep(0.2)
    if paused_at is None:
        raise DecisionNotSubmitted(
            f"run {run_id} is not waiting at a gate; `golive status {run_id}` shows where it is"
        )
    if gate is not None and gate != paused_at:
        raise DecisionNotSubmitted(f"run {run_id} waits at gate {paused_at!r}, not {gate!r}")
    _resume(flow_run_id, decision.model_dump())
    return paused_at


def _paused_gate(flow_run_id: UUID) -> str | None:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    if state is None or not state.is_paused() or not state.state_details.pause_key:
        return None
    return state.state_details.pause_key.rsplit("-", 1)[0]


def _resume(flow_run_id: UUID, run_input: dict[str, Any]) -> None:
    # The run stores its input form just after it pauses; a resume in between is refused.
    for attempt in range(50):
        try:
            resume_flow_run(flow_run_id, run_input=run_input)
            return
        except RuntimeError as refused:
            if attempt == 49 or "schema" not in str(refused).lower():
                raise DecisionNotSubmitted(f"Prefect refused the decision: {refused}") from None
            time.sleep(0.1)
