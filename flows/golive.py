"""The go-live, as the runbook reads:

preflight and host backups ─► database backups (verified) ─► migrations
    ─► for each wave: deploy ─► smoke ─► [soak] ─► [gate] ─► [pause] ─► soak ─► close-out
any failure ─► rollback of every host the run switched, and of the data ─► close-out ─► Failed
Ctrl-C, SIGTERM, a Cancel ─► the same rollback; a crash Prefect sees ─► a rollback run (on_crashed)
a deployment run at a gate ─► suspended (no process) ─► a decision, or the gate's deadline,
    resumes it ─► the same flow run again, skipping every stage its store says is done
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import Flow, State, flow
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.exceptions import Pause, TerminationSignal
from prefect.logging.handlers import APILogWorker
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed

from flows.rollback import restore_hosts, rollback
from golive.cancel import rolled_back_when_cancelled
from golive.errors import (
    DeployError,
    Frozen,
    GoLiveError,
    Interrupted,
    NoRehearsal,
    RollbackIncomplete,
    RollbackStopped,
    RunFailed,
    UnknownEnvironment,
    UnprovenReleaser,
    WaveFailed,
)
from golive.home import runs_dir
from golive.hostlist import in_short
from golive.inputs import INPUTS, drop_inputs, pin_inputs
from golive.journal import RunJournal
from golive.lease import environment_lease, lease_seconds
from golive.plan import Migration, Plan, PostgresBackup, Soak
from golive.planfile import PlanFile, load_plan
from golive.record import (
    hosts_to_restore,
    left_undone,
    live_hosts,
    migrated_databases,
    plan_to_store,
    stored_plan,
)
from golive.rehearsal import missing_evidence, rehearsal_of, rehearsal_record
from golive.rehearsal import result as rehearsal_result
from golive.runbook import Runbook, come_back, suspended_run
from golive.transport import close_run
from golive.trigger import Releaser, golive_version, proven_releaser, trigger, whoami
from golive.waves import ResolvedWave
from tasks.approvals import SUSPEND_GRACE_SECONDS, wait_for_gate
from tasks.backups import backup_paths
from tasks.hosts import deploy_host, on_every_host, settle
from tasks.notifications import notify
from tasks.preflight import hosts_of, preflight
from tasks.reports import progress_bar, publish_record, story_in_prefect_logs
from tasks.smoke import smoke_check_host
from tasks.soak import soak

logger = logging.getLogger("golive.crash")


def _run_name() -> str:
    try:
        release = load_plan(flow_run.parameters["plan_path"]).plan.release
    except GoLiveError:
        return "go-live (plan not valid)"
    return f"{release.name}-{release.version}"


def roll_back_crashed(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:
    """Prefect found the go-live's process dead (a worker's flow process killed, say, or
    cancelled and killed by its worker): roll back what it changed, as `golive rollback`
    would, once the dead run's lease runs out. Never a run that ended, nor one whose plan
    turns automatic rollback off."""
    try:
        run = RunJournal.find(str(flow_run.id))
        entries = run.entries()
        if any(e["kind"] == "run.finished" for e in entries):
            return  # it ended (completed, failed, rolled back) before its process did
        if not stored_plan(entries).rollback.automatic:
            logger.error("run %s died; its plan turns automatic rollback off", flow_run.id)
            return
        reason = f"Prefect marked the run {state.name}: {state.message or 'its process died'}"
        rollback(run.run_id, reason=reason, wait_seconds=2 * lease_seconds())
    except GoLiveError as error:  # not in the store, nothing to undo, or needs a person
        logger.error("run %s died and was not rolled back: %s", flow_run.id, error)


def send_logs(flow: Flow[Any, Any], flow_run: FlowRun, state: State) -> None:
    """The failure's own logs, sent before the process ends: left to Prefect's drain at
    exit, a worker's run that failed at once sometimes lost them (and with them the reason
    its Logs tab gives)."""
    APILogWorker.drain_all(timeout=5)


@flow(
    name="go-live",
    flow_run_name=_run_name,
    on_failure=[send_logs],
    on_crashed=[roll_back_crashed],
    on_cancellation=[roll_back_crashed],
)
def go_live(
    plan_path: str,
    triggered_by: str = "",
    wait_seconds: float = 0,
    start_signature: str = "",
    signed_at: str = "",
    rehearsal: bool = False,
    freeze_override: str = "",
) -> dict[str, Any] | State:
    """Release the plan's version to its hosts in waves; roll back on any failure. While
    another run holds the environment, wait up to `wait_seconds` for it, or be refused. A
    production run's start is signed by its releaser's registered key (`golive run --key`).
    A rehearsal runs the plan on its rehearsal environment and ends with a rollback drill.

    Args:
        plan_path: The plan file (YAML), as a path on the worker's machine (~ is its home;
            the default is the demo's plan, once `make demo` has run there).
        triggered_by: Who triggers the run: recorded as a claim (default: the OS user).
        wait_seconds: While another run holds the environment, wait this long for it.
        start_signature: The releaser's signature of this start (`golive run --key` makes it).
        signed_at: When the start was signed (`golive run --key` sets it).
        rehearsal: Rehearse the plan on its rehearsal environment (its own hosts and
            databases; gates answered by its policy), ending with a rollback drill.
        freeze_override: Why the run goes ahead inside a change freeze; the start's signature
            covers it (`golive run --key KEYFILE --override-freeze WHY`).
    """
    signed = StartRequest(triggered_by, start_signature, signed_at, freeze_override)
    resumed = suspended_run(str(flow_run.id))  # back from a gate that suspended it
    plan_file, journal = resumed or begin(plan_path, rehearsal, signed)
    environment = plan_file.plan.environment
    with (
        story_in_prefect_logs(journal.run_id),
        environment_lease(journal, environment, "go-live", wait=wait_seconds) as lease,
        rolled_back_when_cancelled(journal.run_id) as watch,
    ):
        suspended = False
        try:
            if resumed:
                come_back(plan_file, journal)
            plan = release(plan_file, journal)
            if rehearsal:
                rollback_drill(plan, journal)
        except Pause:
            # A gate suspended the run: this process ends, the run keeps its environment and
            # its copies of the plan's files, and a worker takes it up again when it is decided.
            suspended = True
            watch.stand_down()
            lease.keep_until(kept_until(journal))
            raise
        except Exception as failure:
            watch.stand_down()  # a Cancel now would stop the rollback
            return fail(plan_file, journal, failure)
        except (KeyboardInterrupt, TerminationSignal) as signal:
            # Ctrl-C, SIGTERM (a stopped worker, `kill`) or a Cancel in Prefect: roll back
            # what changed, then stop.
            watch.stand_down()
            return fail(plan_file, journal, Interrupted(signal, watch.cancelled.is_set()))
        finally:
            close_run(journal.run_id)
            if not suspended:
                drop_inputs(journal)  # a rollback needs none of them
        watch.stand_down()  # live everywhere: a Cancel now has nothing to stop
        if rehearsal:
            journal.write("rehearsal.finished", **rehearsal_result(journal.entries(), True))
        journal.write("run.finished", state="completed")
        return publish_record(journal)


def begin(plan_path: str, rehearsal: bool, signed: StartRequest) -> tuple[PlanFile, RunJournal]:
    """A new run: its plan checked and pinned, admitted, and its first entries written."""
    plan_file, rehearsing = plan_to_run(plan_path, rehearsal)
    releaser, frozen = admitted(plan_file, signed, rehearsing)
    journal = start_run(plan_file, signed.claimed or whoami(), releaser, rehearsing)
    if frozen and releaser:
        journal.write(
            "freeze.overridden",
            windows=frozen,
            reason=signed.override,
            by=releaser.name,
            key=releaser.public_key,
            signature=releaser.signature,
        )
    return plan_file, journal


def kept_until(journal: RunJournal) -> float:
    """How long a suspended run keeps its environment: past its gate's deadline, by which
    its timer has woken it; if nothing does, its lease then runs out and it shows crashed."""
    deadline = list(journal.of_kind("gate.suspended"))[-1]["deadline"]
    return datetime.fromisoformat(deadline).timestamp() + SUSPEND_GRACE_SECONDS


def plan_to_run(plan_path: str, rehearsal: bool) -> tuple[PlanFile, dict[str, str] | None]:
    """The plan (as its rehearsal runs it, for a rehearsal), its files copied aside and
    hashed; and for a rehearsal, what it records of what it rehearses."""
    loaded = load_plan(plan_path)
    rehearsed = loaded.plan.environment
    loaded = rehearsal_of(loaded) if rehearsal else loaded
    plan_file = pin_inputs(loaded, runs_dir() / str(flow_run.id) / INPUTS)
    return plan_file, rehearsal_record(plan_file, rehearsed) if rehearsal else None


@dataclass(frozen=True)
class StartRequest:
    """What came with the start: who claims it, its signature, and an override's reason."""

    claimed: str
    signature: str
    signed_at: str
    override: str


def admitted(
    plan_file: PlanFile, signed: StartRequest, rehearsing: dict[str, str] | None
) -> tuple[Releaser | None, list[str]]:
    """Whether the run may start: its environment registered, its releaser proven where the
    rules ask, no change freeze (or a signed override), the rehearsal evidence the plan asks
    for. The proven releaser and the freezes overridden; a refusal is recorded as a run."""
    try:
        if not plan_file.environment.registered:
            raise UnknownEnvironment(plan_file.plan.environment)
        releaser = proven_releaser(
            plan_file, signed.claimed, signed.signature, signed.signed_at, signed.override
        )
        frozen = [] if rehearsing else plan_file.plan.freezes_at(datetime.now(UTC))
        if frozen and not (signed.override and releaser):
            raise Frozen(frozen, str(plan_file.path), bool(signed.override))
        missing = None if rehearsing else missing_evidence(plan_file)
        if missing:
            raise NoRehearsal(missing)
    except (UnknownEnvironment, UnprovenReleaser, Frozen, NoRehearsal) as refused:
        journal = start_run(plan_file, signed.claimed or whoami(), rehearsal=rehearsing)
        journal.write("run.finished", state="refused", reason=str(refused))
        drop_inputs(journal)
        raise
    return releaser, frozen


def release(plan_file: PlanFile, journal: RunJournal) -> Plan:
    """Everything between the lease and the close-out; any failure rolls back. Returns the
    plan as it ran (hosts named by block filled in). A run back from a suspended gate skips
    the stages it has done."""
    runbook = Runbook(journal)
    not_frozen(plan_file.plan, journal)  # a freeze may have begun while it waited
    # Every host checked, and backed up (the backup verified); once, before any gate.
    checked = runbook.once("preflight", preflight, plan_file.plan, journal)
    plan = checked or hosts_of(plan_file.plan)
    runbook.once("database backups", back_up_databases, plan, journal)
    for number, migration in enumerate(plan.migrations, start=1):
        stage = f"migration {number} ({migration.sql.name})"  # two files may share a name
        runbook.once(stage, migrate, plan, migration, journal)
    progress = progress_bar("hosts on the new release")
    for wave in plan_file.waves:
        not_frozen(plan, journal)  # or at a gate, or between waves
        runbook.once(f"wave {wave.name}", deploy_wave, plan, wave, journal)
        live = live_hosts(journal.entries())
        progress(100 * len(live) / len(plan.targets.hosts))
        if wave.wave.soak:
            limits = _limits(plan, wave.wave.soak)
            runbook.once(f"soak {wave.name}", soak, plan, live, limits, wave.name, journal)
        if wave.wave.gate:
            gate = plan.gates[wave.wave.gate]
            runbook.once(f"gate {wave.name}", wait_for_gate, wave.wave.gate, gate, plan, journal)
        if wave.wave.pause and wave is not plan_file.waves[-1]:
            runbook.once(f"pause {wave.name}", pause_between_waves, wave, journal)
    if plan.soak:
        runbook.once(
            "soak", soak, plan, live_hosts(journal.entries()), plan.soak, "all hosts", journal
        )
    return plan


def not_frozen(plan: Plan, journal: RunJournal) -> None:
    """A change freeze that began after the run started (while it waited for its lease, at a
    gate, between waves) stops it before it changes more, and what it changed is rolled back;
    unless it started with a signed override. A rehearsal is not held by the plan's freezes."""
    started = next(journal.of_kind("run.started"))
    if started.get("rehearsal") or next(journal.of_kind("freeze.overridden"), None):
        return
    frozen = plan.freezes_at(datetime.now(UTC))
    if frozen:
        raise Frozen(frozen, started["plan_path"], overridden=False, under_way=True)


def rollback_drill(plan: Plan, journal: RunJournal) -> None:
    """A rehearsal ends as a failed go-live would: its environment rolled back, then checked
    (every host back on its release, and answering its smoke checks). The time it took is in
    the rehearsal's result."""
    outcome = rollback(journal.run_id, reason="rehearsal: the rollback drill", within_run=True)
    if isinstance(outcome, State) and isinstance(outcome.data, RollbackIncomplete):
        raise outcome.data
    if plan.smoke:
        _, failed = on_every_host(
            "smoke", smoke_check_host, plan, plan.host_names(), journal=journal
        )
        if failed:
            raise RollbackIncomplete(
                {host: f"rolled back, but {error}" for host, error in failed.items()},
                f"golive audit show {journal.run_id}",
            )


def start_run(
    plan_file: PlanFile,
    triggered_by: str,
    releaser: Releaser | None = None,
    rehearsal: dict[str, str] | None = None,
) -> RunJournal:
    """The run's first entry holds all a rollback or an auditor needs: who and what
    triggered it, the plan itself (it holds no secret values), the fleet and the waves."""
    plan = plan_file.plan
    context = FlowRunContext.get()
    journal = RunJournal.create(str(flow_run.id))
    journal.write(
        "run.started",
        run_id=journal.run_id,
        flow_run_name=flow_run.name,
        triggered_by=triggered_by,
        trigger=trigger(triggered_by, releaser),
        golive_version=golive_version(),
        plan_path=str(plan_file.path),
        plan_sha256=plan_file.digest,  # the plan, its environment's rules and its files
        inputs=plan_file.inputs,
        release_sha256=plan_file.release_digest,
        plan=plan_to_store(plan),
        release=plan.release.name,
        version=plan.release.version,
        owner=plan.release.owner,
        environment=plan.environment,
        fleet=plan.host_names(),
        waves=[
            {"name": w.name, "hosts": list(w.hosts), "gate": w.wave.gate} for w in plan_file.waves
        ],
        gate_names=list(plan.gates),
        backup_paths=backup_paths(plan),
        registry=plan_file.environment.recorded(),
        rehearsal=rehearsal,
        api_url=str(context.client.api_url) if context else None,
    )
    return journal


def back_up_databases(plan: Plan, journal: RunJournal) -> None:
    """Every database backed up and proven restorable, or nothing changes."""
    names = sorted({b.database for b in plan.backups if isinstance(b, PostgresBackup)})
    if not names:
        return
    from tasks.databases import back_up_database  # psycopg: only plans with databases pay

    futures = [back_up_database.submit(plan, name, journal) for name in names]
    for future in futures:
        future.result()


def migrate(plan: Plan, migration: Migration, journal: RunJournal) -> None:
    """A migration; an irreversible one only after its own gate approves it."""
    if not migration.reversible:
        assert migration.gate is not None
        wait_for_gate(migration.gate, plan.gates[migration.gate], plan, journal)
        journal.write(
            "migration.point_of_no_return",
            database=plan.database_of(migration),
            file=migration.sql.name,
        )
    from tasks.databases import apply_migration

    apply_migration(plan, migration, journal)


def deploy_wave(plan: Plan, wave: ResolvedWave, journal: RunJournal) -> list[str]:
    """Deploy to the wave's hosts (at most `parallel` at once), then smoke-check them. Hosts
    that fail within the wave's failure budget are put back and taken out of the rollout;
    one failure more fails the wave. Returns the hosts now live on the new release."""
    size = len(wave.hosts)
    budget = wave.wave.failure_budget(size)
    journal.write("wave.started", wave=wave.name, hosts=list(wave.hosts), max_fail=budget)
    deployed, errors = on_every_host(
        "deploy",
        deploy_host,
        plan,
        wave.hosts,
        limit=wave.wave.concurrency(size),
        stop_after_failures=budget,
        wave=wave.index,
        journal=journal,
    )
    healthy, failed_checks = deployed, dict[str, BaseException]()
    if plan.smoke:
        healthy, failed_checks = on_every_host(
            "smoke", smoke_check_host, plan, list(deployed), journal=journal
        )
    errors |= failed_checks
    if len(errors) > budget:
        raise WaveFailed(wave.name, errors, succeeded=list(healthy))
    if errors:
        take_out(plan, wave, errors, journal)
    live = [host for host in wave.hosts if host in healthy]
    journal.write("wave.finished", wave=wave.name, hosts=live, taken_out=sorted(errors))
    return live


def take_out(
    plan: Plan, wave: ResolvedWave, errors: dict[str, BaseException], journal: RunJournal
) -> None:
    """Put failed hosts back on the release they had, and leave them out of the rest of the
    run. A host that cannot be put back is not "taken out": its state is unknown, so the
    wave fails and the whole run rolls back."""
    for host, error in errors.items():
        journal.write("host.taken_out", host=host, reason=str(error))
    before = {host: release for _, host, release in hosts_to_restore(journal.entries())}
    stuck = restore_hosts(plan, {host: before[host] for host in errors if host in before}, journal)
    if stuck:
        raise WaveFailed(
            wave.name,
            {
                host: DeployError(host, "put it back after it failed within the budget", why)
                for host, why in stuck.items()
            },
            succeeded=[],
        )


def pause_between_waves(wave: ResolvedWave, journal: RunJournal) -> None:
    assert wave.wave.pause is not None
    journal.write("wave.pause", wave=wave.name, seconds=wave.wave.pause)
    time.sleep(wave.wave.pause)


def fail(plan_file: PlanFile, journal: RunJournal, failure: Exception) -> State:
    """Undo what the journal says changed, record how the run ended, and fail the run (or,
    when a person cancelled it, end it Cancelled). A rollback that cannot finish ends the run
    apart, in a Prefect state named RollbackFailed."""
    busy = settle_hosts(plan_file.plan, journal)
    fleet = plan_file.plan.host_names()
    last_wave_first = sorted(
        hosts_to_restore(journal.entries()), key=lambda change: (-change[0], fleet.index(change[1]))
    )
    changed = [host for _, host, _ in last_wave_first] + migrated_databases(journal.entries())
    what = f"{plan_file.plan.release.name} {plan_file.plan.release.version}"
    try:
        undone = undo(plan_file.plan, journal, changed, failure)
        if busy:  # their steps may change them after the rollback: a person must look
            raise RollbackIncomplete(
                dict.fromkeys(busy, "its deploy step was still running after the rollback"),
                f"golive audit show {journal.run_id}",
            )
    except GoLiveError as rollback_failure:
        return rollback_failed(plan_file.plan, journal, failure, rollback_failure)
    cancelled = isinstance(failure, Interrupted) and failure.cancelled
    ended = "cancelled" if cancelled else "failed"
    if next(journal.of_kind("run.started")).get("rehearsal"):
        result = rehearsal_result(journal.entries(), passed=False, reason=str(failure))
        journal.write("rehearsal.finished", **result)
    journal.write("run.finished", state=ended, reason=str(failure), rolled_back=changed)
    publish_record(journal)
    failed = RunFailed(what, failure, undone, str(journal.run_dir / "record.json"))
    if cancelled:  # Prefect shows what the person asked for: Cancelled, and why it is safe
        return Cancelled(message=f"cancelled; {undone}", data=failed)
    raise failed from failure


def undo(plan: Plan, journal: RunJournal, changed: list[str], failure: Exception) -> str:
    """Roll back what changed, if the plan says so; what was done, in a sentence. A second
    Ctrl-C (or SIGTERM) stops the rollback itself, which then names what it left undone."""
    if changed and plan.rollback.automatic:
        try:
            rollback(journal.run_id, reason=str(failure), within_run=True)
        except (KeyboardInterrupt, TerminationSignal) as signal:
            settle_hosts(plan, journal)  # restores under way end first: then what is left is known
            left = left_undone(journal.entries())
            raise RollbackStopped(Interrupted(signal), left, journal.run_id) from None
        undone = f"Rolled back, last wave first: {in_short(changed)}."
        forward = next(journal.of_kind("database.roll_forward"), None)
        if forward is not None:
            undone += f" The data was NOT restored: {forward['reason']}."
        return undone
    if changed:
        return f"Automatic rollback is off: {', '.join(changed)} stay as they are."
    return "Nothing had been changed, so nothing was rolled back."


def settle_hosts(plan: Plan, journal: RunJournal) -> list[str]:
    """Host steps under way when the run stopped end first (their commands are bounded by
    `command_timeout`), so that the rollback sees every host they changed; the hosts whose
    steps are still running after that."""
    try:
        busy = settle(4 * plan.targets.command_timeout)
    except (KeyboardInterrupt, TerminationSignal):  # asked again: roll back now
        busy = settle(0)
    if busy:
        journal.write("hosts.still_busy", hosts=busy)
    return busy


def rollback_failed(
    plan: Plan, journal: RunJournal, failure: Exception, rollback_failure: GoLiveError
) -> State:
    """The run ends apart: recorded, every webhook told, and Prefect shows RollbackFailed."""
    journal.write("run.finished", state="rollback failed", reason=f"{failure}; {rollback_failure}")
    tell_rollback_failed(plan, journal, rollback_failure)
    publish_record(journal)
    return Failed(name="RollbackFailed", message=str(rollback_failure), data=rollback_failure)


def tell_rollback_failed(plan: Plan, journal: RunJournal, failure: GoLiveError) -> None:
    """A rollback that could not finish needs a person now: every webhook of the plan says so."""
    hosts = sorted(getattr(failure, "failures", {}))
    notify(
        plan,
        journal,
        {
            "event": "rollback.failed",
            "run_id": journal.run_id,
            "release": plan.release.name,
            "version": plan.release.version,
            "environment": plan.environment,
            "not_restored": hosts,
            "what_to_do": f"see `golive status {journal.run_id}`; fix the hosts named, then "
            f"`golive rollback {journal.run_id}`",
        },
    )


def _limits(plan: Plan, duration: float) -> Soak:
    """A wave's own soak: the plan's soak limits, for the wave's duration."""
    return (plan.soak or Soak(duration=duration)).model_copy(update={"duration": duration})
