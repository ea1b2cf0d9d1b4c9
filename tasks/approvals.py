"""Approval gates: the run pauses until enough allowed approvers decide, or the gate times out.

The flow side is `wait_for_gate` (pausing is a flow-level act in Prefect, so it is not a task);
the approver side is `decide_gate`, used by `golive approve` / `golive reject` and the demo.
Each pause is keyed `gate-<occurrence>-<attempt>` (Prefect takes lowercase letters, digits and
dashes only), and the gate it belongs to is the one the run store says opened last. The
occurrence matters: Prefect hands a pause any input already stored under its key, so a gate
guarding a second wave under the first wave's keys would be "decided" at once by the first
wave's decisions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prefect import get_client, get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound, Pause
from prefect.flow_runs import pause_flow_run, resume_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.settings import PREFECT_UI_URL
from prefect.states import Running, Scheduled
from pydantic import Field

from golive.errors import GateRejected, GateTimedOut, GoLiveError
from golive.journal import Entry, RunJournal
from golive.plan import Gate, Plan
from golive.progress import ui_link
from golive.record import summarize
from golive.registry import Rules, environment, rules_of
from golive.rehearsal import latest_rehearsal
from golive.report import render_gate_brief
from golive.signing import Decision, same_key, sign, verifies
from tasks.notifications import notify

# How often a paused run looks for a decision. Prefect's default of 10 s is too slow for a
# person waiting on the other side of `golive approve`.
POLL_SECONDS = 1
# How far the clocks of the approver's machine and the run's may differ.
SKEW_SECONDS = 120
# How long after a suspended gate's deadline Prefect keeps it, and the run its environment,
# should its timer not come (no worker on the pool): then the run shows as crashed, for
# `golive rollback`.
SUSPEND_GRACE_SECONDS = 300
# The deployment whose runs wake a suspended gate at its deadline (prefect.yaml).
TIMER_DEPLOYMENT = "gate-deadline/gate-deadline"


class GateDecision(RunInput):
    decision: Literal["approve", "reject", "timeout"] = Field(
        description="Let the release go on, or stop it. (golive's timer sends `timeout` at a "
        "suspended gate's deadline; before it, a timeout does not count.)"
    )
    approver: str = Field(description="Who decides; must be one of the gate's approvers.")
    comment: str = Field("", description="Why: shown in the run record and the report.")
    signed_at: str = Field("", description="When it was signed (set by `golive approve`).")
    signature: str = Field(
        "",
        description="Ed25519 signature by `golive approve --key`; required unless the gate "
        "allows unsigned decisions (never in production).",
    )

    def covers(self, run_id: str, gate: str, plan_sha256: str, opened_at: str) -> Decision:
        """What a valid signature on this decision would have to cover, here and now."""
        return Decision(
            run_id,
            gate,
            plan_sha256,
            self.decision,
            self.approver,
            self.comment,
            self.signed_at,
            opened_at,
        )


def signed_decision(
    journal: RunJournal,
    gate: str,
    verdict: str,
    approver: str,
    comment: str,
    key: Ed25519PrivateKey | None,
) -> GateDecision:
    """A decision for the gate a run waits at, signed for exactly that run, gate and plan."""
    started = next(journal.of_kind("run.started"))
    decision = GateDecision(
        decision=verdict,
        approver=approver,
        comment=comment,
        signed_at=datetime.now(UTC).isoformat(),
    )
    if key is None:
        return decision
    covered = decision.covers(
        journal.run_id, gate, started["plan_sha256"], opened_at(journal, gate)
    )
    return decision.model_copy(update={"signature": sign(covered, key)})


def opened_at(journal: RunJournal, gate: str) -> str:
    """When the gate's current occurrence opened: what a decision for it is bound to."""
    return str([e["at"] for e in journal.of_kind("gate.opened") if e["gate"] == gate][-1])


def wait_for_gate(name: str, gate: Gate, plan: Plan, journal: RunJournal) -> list[str]:
    """Wait until `gate.quorum` distinct allowed approvers approve; return who approved.
    A reject ends the gate at once; a decision that is unsigned (where signatures are
    required), forged, replayed or not allowed is refused and recorded, and the gate keeps
    waiting for the rest of its time. A rehearsal's gates are answered by its policy.
    A deployment run waits suspended (its process ends; a decision or the gate's deadline
    brings it back, and it takes the gate up again here, from the store)."""
    policy = (next(journal.of_kind("run.started")).get("rehearsal") or {}).get("gates")
    if policy:
        return _answer_by_policy(name, gate, policy, journal)
    opening = reopened(journal, name) or _open(name, gate, plan, journal)
    how = f"\n\n**To decide:** `{opening.command}` (or `golive reject ... --comment WHY`)." + (
        ""
        if gate.allow_unsigned
        else " A resume from this page carries no signature: it "
        "is recorded as refused and does not count."
    )
    brief = str(opening.entry["brief"])
    try:
        return _decided(name, gate, plan, journal, opening, brief + how)
    except Pause:
        raise  # the run comes back to this gate: its timer stays
    except BaseException:
        drop_timer(opening.timer)
        raise


def _decided(
    name: str, gate: Gate, plan: Plan, journal: RunJournal, opening: Opening, about: str
) -> list[str]:
    """Decisions taken until the gate passes (returning who approved) or ends (raising)."""
    form = GateDecision.with_initial_data(description=about)
    approvals = opening.approvals
    while len(approvals) < gate.quorum:
        opening.attempts += 1
        decision = _await(name, form, opening, gate, plan, journal)
        if decision is None:  # timed out, and the plan says an undecided gate passes
            break
        refusal = _refusal(name, opening.opened_at, gate, journal, decision, approvals)
        if refusal:
            note = _refuse(name, decision, refusal, journal, opening.command)
            form = GateDecision.with_initial_data(description=note + about)
            continue
        _record(name, plan, journal, decision)
        get_run_logger().info(
            "Gate %s: %s by %r counted (%d of %d approvals so far).",
            name,
            decision.decision,
            decision.approver,
            len(approvals) + (decision.decision == "approve"),
            gate.quorum,
        )
        if decision.decision == "reject":
            raise GateRejected(name, decision.approver, decision.comment)
        approvals.append(decision.approver)
    passed_by = "approvals" if len(approvals) >= gate.quorum else "timeout"
    journal.write("gate.passed", gate=name, approvers=approvals, by=passed_by)
    drop_timer(opening.timer)
    return approvals


@dataclass
class Opening:
    """A gate's current opening, as the store has it: an approver's decision is bound to its
    time; its pauses are keyed by its occurrence (in the run) and attempt; the approvals
    counted so far; the deadline timer of a suspended gate."""

    entry: Entry
    occurrence: int
    attempts: int = 0
    approvals: list[str] = field(default_factory=list)
    timer: str | None = None

    @property
    def opened_at(self) -> str:
        return str(self.entry["at"])

    @property
    def command(self) -> str:
        return str(self.entry["approve_command"])

    @property
    def deadline(self) -> datetime:
        opened = datetime.fromisoformat(self.opened_at)
        return opened + timedelta(seconds=float(self.entry["timeout_seconds"]))

    @property
    def key(self) -> str:
        return f"gate-{self.occurrence}-{self.attempts}"


def _open(name: str, gate: Gate, plan: Plan, journal: RunJournal) -> Opening:
    key = "" if gate.allow_unsigned else " --key KEYFILE"
    opened = {
        "approvers": gate.approvers,
        "quorum": gate.quorum,
        "brief": gate_brief(name, gate, plan, journal),
        "timeout_seconds": gate.timeout,
        "approve_command": f"golive approve {journal.run_id} --gate {name} --as NAME{key}",
    }
    entry = journal.write("gate.opened", gate=name, **opened)
    _tell(plan, journal, "gate.opened", name, **opened)
    return Opening(entry, occurrence=sum(1 for _ in journal.of_kind("gate.opened")))


def reopened(journal: RunJournal, name: str) -> Opening | None:
    """The gate's opening that the run was suspended at, when it comes back to it: its
    attempts so far (the next one takes the decision that woke it), the approvals counted."""
    entries = journal.entries()
    openings = [i for i, e in enumerate(entries) if e["kind"] == "gate.opened"]
    if not openings or entries[openings[-1]]["gate"] != name:
        return None
    since = entries[openings[-1] :]
    suspended = [e for e in since if e["kind"] == "gate.suspended"]
    rejected = any(e["kind"] == "gate.decision" and e["decision"] == "reject" for e in since)
    ended = any(e["kind"] in ("gate.passed", "gate.timed_out", "run.finished") for e in since)
    if not suspended or rejected or ended:
        return None
    return Opening(
        since[0],
        occurrence=len(openings),
        attempts=len(suspended) - 1,
        approvals=[
            e["approver"]
            for e in since
            if e["kind"] == "gate.decision" and e["decision"] == "approve"
        ],
        timer=suspended[-1]["timer"],
    )


def _refuse(
    name: str, decision: GateDecision, refusal: str, journal: RunJournal, command: str
) -> str:
    """Record and log a refused decision; what the next resume form shows first: what was
    refused, why, and the command that would count."""
    journal.write(
        "gate.refused",
        gate=name,
        claimed=decision.approver,
        decision=decision.decision,
        reason=refusal,
        signed_at=decision.signed_at,
    )
    # The claimed name is anyone's text: shown only when it is a registered approver's.
    registered = decision.approver in rules_of(next(journal.of_kind("run.started"))).approvers
    counts = command.replace("--as NAME", f"--as {decision.approver}") if registered else command
    get_run_logger().warning(
        "Gate %s: the %s claimed by %r did NOT count: %s. The gate keeps waiting; this would "
        "count: %s",
        name,
        decision.decision,
        decision.approver,
        refusal,
        counts,
    )
    claimed = decision.approver if registered else "someone not registered"
    return (
        f"**The last decision did NOT count**: the {decision.decision} claimed by "
        f"{claimed!r}: {refusal}. This would count: `{counts}`\n\n"
    )


def _answer_by_policy(name: str, gate: Gate, policy: str, journal: RunJournal) -> list[str]:
    """A rehearsal's gate: opened and answered at once by the plan's rehearsal policy, and
    recorded as that policy, never as a person."""
    journal.write(
        "gate.opened",
        gate=name,
        approvers=gate.approvers,
        quorum=gate.quorum,
        brief=f"rehearsal: this gate is answered by the plan's rehearsal policy ({policy})",
        timeout_seconds=gate.timeout,
        approve_command="",
    )
    if policy == "reject":
        raise GateRejected(name, "the rehearsal policy", "rehearsal.gates: reject")
    journal.write("gate.passed", gate=name, approvers=[], by="rehearsal policy")
    return []


def _record(name: str, plan: Plan, journal: RunJournal, decision: GateDecision) -> None:
    journal.write(
        "gate.decision",
        gate=name,
        approver=decision.approver,
        decision=decision.decision,
        comment=decision.comment,
        signed_at=decision.signed_at,
        signature=decision.signature,
    )
    _tell(
        plan,
        journal,
        "gate.decided",
        name,
        decision=decision.decision,
        approver=decision.approver,
        comment=decision.comment,
        signed=bool(decision.signature),
    )


def _tell(plan: Plan, journal: RunJournal, event: str, gate: str, **about: Any) -> None:
    started = next(journal.of_kind("run.started"))
    notify(
        plan,
        journal,
        {
            "event": event,
            "run_id": journal.run_id,
            "gate": gate,
            "release": started["release"],
            "version": started["version"],
            "environment": started["environment"],
            "ui": ui_link(journal.run_id, PREFECT_UI_URL.value()),
            **about,
        },
    )


def gate_brief(name: str, gate: Gate, plan: Plan, journal: RunJournal) -> str:
    entries = journal.entries()
    record = summarize(entries)
    finished = {e["wave"] for e in entries if e["kind"] == "wave.finished"}
    waves = record.get("waves", [])
    applied = {e["file"] for e in entries if e["kind"] == "migration.applied"}
    files = [m.sql.name for m in plan.migrations]
    irreversible = next(
        (
            m.sql.name
            for m in plan.migrations
            if m.gate == name and not m.reversible and m.sql.name not in applied
        ),
        None,
    )
    smoke = [s for s in record["steps"] if s["stage"] == "smoke"]
    return render_gate_brief(
        record,
        name,
        quorum=gate.quorum,
        approvers=gate.approvers,
        timeout=gate.timeout,
        done=[w for w in waves if w["name"] in finished],
        to_come=[w for w in waves if w["name"] not in finished],
        backups=sum(
            1
            for s in record["steps"]
            if s["stage"] == "backup"
            and s.get("host", "")
            and not s["host"].startswith("database ")
            and s["outcome"] == "ok"
        ),
        applied=[f for f in files if f in applied],
        pending=[f for f in files if f not in applied],
        irreversible=irreversible,
        smoke_ok=sum(1 for s in smoke if s["outcome"] == "ok"),
        smoke_failed=sum(1 for s in smoke if s["outcome"] == "failed"),
        rehearsal=_latest_rehearsal(plan, record),
    )


def _latest_rehearsal(plan: Plan, record: dict[str, Any]) -> str:
    if plan.rehearsal is None:
        return "the plan has no rehearsal section"
    found = latest_rehearsal(record.get("release_sha256") or "", plan.rehearsal.environment)
    if found is None:
        return f"none recorded (`golive run {record['plan_path']} --rehearsal`)"
    return found.told()


def _await(
    name: str,
    form: type[GateDecision],
    opening: Opening,
    gate: Gate,
    plan: Plan,
    journal: RunJournal,
) -> GateDecision | None:
    """The next decision for the gate; None when its time ran out and it passes on timeout."""
    remaining = math.ceil((opening.deadline - datetime.now(UTC)).total_seconds())
    try:
        decision = _woken_by(form, opening, journal)
        if decision is None:
            if remaining <= 0:
                raise FlowPauseTimeout
            decision = _suspend(form, opening, journal, remaining) or pause_flow_run(
                wait_for_input=form,
                timeout=remaining,
                poll_interval=POLL_SECONDS,
                key=opening.key,
            )
        if decision.decision == "timeout":
            return _time_up(decision, opening)
        return decision
    except FlowPauseTimeout:
        journal.write(
            "gate.timed_out", gate=name, approvers=opening.approvals, outcome=gate.on_timeout
        )
        _tell(
            plan,
            journal,
            "gate.timed_out",
            name,
            approvals=opening.approvals,
            outcome=gate.on_timeout,
        )
        if gate.on_timeout == "approve":
            _carry_on()
            return None
        raise GateTimedOut(name, gate.timeout, opening.approvals) from None


def _time_up(decision: GateDecision, opening: Opening) -> GateDecision:
    """The deadline timer woke the run: the gate has timed out, once the store's clock says so
    (anyone can send "timeout"; before the deadline it is refused like any bad decision)."""
    if datetime.now(UTC) >= opening.deadline - timedelta(seconds=1):
        raise FlowPauseTimeout
    return decision


def _woken_by(
    form: type[GateDecision], opening: Opening, journal: RunJournal
) -> GateDecision | None:
    """The decision that resumed this run, when it comes back to a gate it was suspended at
    (Prefect hands it back for the key it was suspended under), whatever the time now: a
    worker may take it up after the deadline. None when it was not suspended there."""
    if opening.attempts > len(_suspensions(journal, opening)):
        return None
    return suspend_flow_run(wait_for_input=form, key=opening.key)


def _suspend(
    form: type[GateDecision], opening: Opening, journal: RunJournal, remaining: int
) -> GateDecision | None:
    """In a deployment run, wait for the decision suspended: the run's process ends and a
    worker starts it again once a decision (or the timer, at the deadline) resumes it. The
    store says where it waits first. None where a run cannot be suspended: it pauses."""
    timer = opening.timer if _scheduled(opening.timer) else schedule_timer(journal.run_id, opening)
    if timer is None:
        return None
    opening.timer = timer
    journal.write(
        "gate.suspended",
        gate=opening.entry["gate"],
        key=opening.key,
        deadline=opening.deadline.isoformat(),
        timer=timer,
    )
    return suspend_flow_run(
        wait_for_input=form, key=opening.key, timeout=remaining + SUSPEND_GRACE_SECONDS
    )


def _suspensions(journal: RunJournal, opening: Opening) -> list[Entry]:
    return [
        e
        for e in journal.of_kind("gate.suspended")
        if str(e["at"]) >= opening.opened_at and e["gate"] == opening.entry["gate"]
    ]


def schedule_timer(run_id: str, opening: Opening) -> str | None:
    """A run of the gate-deadline deployment at the gate's deadline, to wake the suspended run
    then. None where the run is no deployment's (it cannot be suspended) or that deployment
    is missing (`prefect deploy --all` makes it): the run then pauses, holding its worker."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow_run.deployment_id is None:
        return None
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(TIMER_DEPLOYMENT)
        except ObjectNotFound:
            get_run_logger().warning(
                "No %s deployment: this run waits at its gate holding its worker. "
                "`prefect deploy --all` from the checkout deploys it.",
                TIMER_DEPLOYMENT,
            )
            return None
        timer = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "run_id": run_id,
                "gate": opening.entry["gate"],
                "opened_at": opening.opened_at,
            },
            state=Scheduled(scheduled_time=opening.deadline),
        )
    return str(timer.id)


def drop_timer(timer: str | None) -> None:
    """A gate decided, or ended, before its deadline has no more use for its timer (one that
    has fired stays, as the record of it). Best effort: a timer left behind finds the gate
    decided and does nothing."""
    if not _scheduled(timer):
        return
    assert timer is not None
    try:
        with get_client(sync_client=True) as client:
            client.delete_flow_run(UUID(timer))
    except Exception as error:  # the gate's outcome stands whatever Prefect says here
        get_run_logger().warning("The gate's timer run %s stays: %s", timer, error)


def _scheduled(timer: str | None) -> bool:
    """Whether the timer run has yet to fire."""
    if timer is None:
        return False
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(timer)).state
    except Exception:  # gone, or Prefect out of reach: schedule another
        return False
    return state is not None and state.is_scheduled()


def _carry_on() -> None:
    """Prefect leaves a run whose pause timed out paused, and then fails it at the end; a gate
    that passes on timeout puts it back to running first."""
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(context.flow_run.id, Running(), force=True)


def _refusal(
    name: str,
    opened: str,
    gate: Gate,
    journal: RunJournal,
    decision: GateDecision,
    approvals: list[str],
) -> str | None:
    """Why a decision must not count, or None. Every refusal is recorded by the caller."""
    if decision.decision == "timeout":
        return "a timeout sent before the gate's deadline: only its time running out closes it"
    started = next(journal.of_kind("run.started"))
    rules = rules_of(started)
    who = decision.approver
    if not decision.signature:
        if gate.allow_unsigned and rules.allow_unsigned:
            return _policy_refusal(gate, rules, who, _releasers(started), approvals)
        return (
            "unsigned: this gate takes only decisions signed with `golive approve --key` "
            "(a resume from the Prefect UI carries no proof of who decided)"
        )
    registered = rules.approvers.get(who)
    if registered is None or registered.public_key is None:
        keyed = ", ".join(n for n, a in rules.approvers.items() if a.public_key) or "none"
        return (
            f"{who!r} has no key registered for environment {started['environment']!r}; "
            f"registered: {keyed}"
        )
    covered = decision.covers(journal.run_id, name, started["plan_sha256"], opened)
    if not verifies(covered, decision.signature, registered.public_key):
        return (
            f"the signature does not verify with {who}'s registered key for this run, gate "
            "and plan (signed for another run, plan or wave, altered, or another key)"
        )
    now = environment(started["environment"]).rules.approvers.get(who)
    if now is None or not same_key(now.public_key, registered.public_key):
        return (
            f"{who}'s key is no longer registered for environment {started['environment']!r} "
            "(it was revoked or replaced since the run started)"
        )
    if same_key(registered.public_key, (started.get("trigger") or {}).get("key")):
        return f"it is signed with the key that started this run ({who}'s): no self-approval"
    untimely = _untimely(decision.signed_at, opened)
    if untimely:
        return untimely
    return _policy_refusal(gate, rules, who, _releasers(started), approvals)


def _releasers(started: Entry) -> set[str]:
    """Every name the run's releaser goes by: the one claimed, the OS user (alone and as
    user@machine), and the registered name whose key signed the start."""
    trigger = started.get("trigger") or {}
    names = {started["triggered_by"], started["triggered_by"].split("@")[0]}
    names |= {
        trigger.get("claimed") or "",
        trigger.get("os_user") or "",
        trigger.get("proven") or "",
    }
    return names - {""}


def _untimely(signed_at: str, opened: str) -> str | None:
    """A decision is signed while its gate is open: not before it opened, not in the future
    (beyond SKEW_SECONDS, for clocks that differ between machines)."""
    try:
        signed = datetime.fromisoformat(signed_at)
    except ValueError:
        return f"its signing time {signed_at!r} is not a time (golive approve sets it)"
    if signed.tzinfo is None:
        return f"its signing time {signed_at!r} has no time zone"
    skew = timedelta(seconds=SKEW_SECONDS)
    if signed < datetime.fromisoformat(opened) - skew:
        return f"it was signed at {signed_at}, before this gate opened ({opened}): a replay"
    if signed > datetime.now(UTC) + skew:
        return f"it was signed at {signed_at}, in the future: check the approver's clock"
    return None


def _policy_refusal(
    gate: Gate, rules: Rules, who: str, releasers: set[str], approvals: list[str]
) -> str | None:
    allowed = rules.may_decide(gate)
    if who not in allowed:
        return f"{who!r} may not decide this gate; allowed: {', '.join(sorted(allowed))}"
    if who in releasers:
        return f"{who!r} triggered this run and cannot approve it"
    if who in approvals:
        return f"{who!r} has already approved; the quorum needs distinct approvers"
    return None


class DecisionNotSubmitted(GoLiveError):
    pass


@dataclass(frozen=True)
class Submitted:
    """A decision handed to a waiting run: which gate, the time it was signed at, and whether
    the run was suspended there (a worker must take it up before it can say what counted)."""

    gate: str
    signed_at: str
    suspended: bool = False


def decide_gate(
    journal: RunJournal,
    verdict: str,
    approver: str,
    comment: str,
    key: Ed25519PrivateKey | None,
    gate: str | None = None,
    wait_seconds: float = 0,
) -> Submitted:
    """Sign a decision for the gate the run waits at (after up to `wait_seconds` for it to
    reach one) and resume the run with it."""
    paused_at = waiting_gate(journal, gate, wait_seconds)
    decision = signed_decision(journal, paused_at, verdict, approver, comment, key)
    suspended = reopened(journal, paused_at) is not None
    submit(journal, decision)
    return Submitted(paused_at, decision.signed_at, suspended)


def fate(journal: RunJournal, submitted: Submitted, wait_seconds: float = 30) -> Entry | None:
    """What the run made of a submitted decision, as its store records it: the gate.decision
    entry (it counted) or the gate.refused entry (it did not, and why); None if the run has
    not said within `wait_seconds` (its process may be gone)."""
    give_up = time.monotonic() + wait_seconds
    while True:
        for entry in journal.of_kind("gate.decision", "gate.refused"):
            if entry["gate"] == submitted.gate and entry["signed_at"] == submitted.signed_at:
                return entry
        if time.monotonic() >= give_up:
            return None
        time.sleep(0.2)


def waiting_gate(journal: RunJournal, gate: str | None = None, wait_seconds: float = 0) -> str:
    """The gate the run is paused at, waiting up to `wait_seconds` for it to reach one."""
    give_up = time.monotonic() + wait_seconds
    while (paused_at := _paused_gate(journal)) is None:
        if time.monotonic() >= give_up:
            raise DecisionNotSubmitted(
                f"run {journal.run_id} is not waiting at a gate; "
                f"`golive status {journal.run_id}` shows where it is"
            )
        time.sleep(0.2)
    if gate is not None and gate != paused_at:
        raise DecisionNotSubmitted(
            f"run {journal.run_id} waits at gate {paused_at!r}, not {gate!r}"
        )
    return paused_at


def submit(journal: RunJournal, decision: GateDecision) -> None:
    """Resume the paused run with a decision. Prefect does not check who sends it: the gate
    verifies the signature inside."""
    _resume(UUID(journal.run_id), decision.model_dump())


def _paused_gate(journal: RunJournal) -> str | None:
    """The gate the run is paused at: it is paused with a gate's key, and that gate is the
    one it opened last."""
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(journal.run_id)).state
    key = state.state_details.pause_key if state is not None else None
    if state is None or not state.is_paused() or not key or not key.startswith("gate-"):
        return None
    opened = [e["gate"] for e in journal.of_kind("gate.opened")]
    return str(opened[-1]) if opened else None


def _resume(flow_run_id: UUID, run_input: dict[str, Any]) -> None:
    # The run stores its input form just after it pauses; a resume in between is refused.
    for attempt in range(50):
        try:
            resume_flow_run(flow_run_id, run_input=run_input)
            return
        except (NotPausedError, FlowPauseTimeout) as gone:
            raise DecisionNotSubmitted(
                f"run {flow_run_id} no longer waits at a gate ({gone}); "
                f"`golive status {flow_run_id}` shows where it is"
            ) from None
        except RuntimeError as refused:
            if attempt == 49 or "schema" not in str(refused).lower():
                raise DecisionNotSubmitted(f"Prefect refused the decision: {refused}") from None
            time.sleep(0.1)
