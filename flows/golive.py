"""The go-live, as the runbook reads:

preflight ─► backups (verified) ─► for each wave: deploy ─► smoke ─► [soak] ─► [gate]
          ─► soak ─► close-out
any failure ─► rollback of every host the run switched ─► close-out ─► Failed
"""

from __future__ import annotations

import getpass
import socket
from typing import Any, NoReturn

from prefect import flow
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from flows.rollback import rollback
from golive.errors import GoLiveError, RunFailed, WaveFailed
from golive.journal import RunJournal
from golive.plan import Plan, Soak
from golive.planfile import PlanFile, load_plan
from golive.record import hosts_to_restore
from golive.waves import ResolvedWave
from tasks.approvals import wait_for_gate
from tasks.backups import back_up_host
from tasks.hosts import deploy_host, on_every_host, prune_host
from tasks.preflight import preflight
from tasks.reports import progress_bar, publish_record
from tasks.smoke import smoke_check_host
from tasks.soak import soak


def _run_name() -> str:
    try:
        release = load_plan(flow_run.parameters["plan_path"]).plan.release
    except GoLiveError:
        return "go-live (plan not valid)"
    return f"{release.name}-{release.version}"


@flow(name="go-live", flow_run_name=_run_name)
def go_live(plan_path: str, triggered_by: str = "") -> dict[str, Any]:
    """Release the plan's version to its hosts in waves; roll back on any failure."""
    plan_file = load_plan(plan_path)
    plan = plan_file.plan
    journal = start_run(plan_file, triggered_by or whoami())
    try:
        preflight(plan, journal)
        take_backups(plan, journal)
        progress = progress_bar("hosts on the new release")
        for wave in plan_file.waves:
            deploy_wave(plan, wave, journal)
            progress(_share_deployed(plan_file, wave))
            if wave.wave.soak:
                soak_wave(plan_file, wave, journal)
            if wave.wave.gate:
                wait_for_gate(wave.wave.gate, plan.gates[wave.wave.gate], journal)
        if plan.soak:
            soak(plan, plan.host_names(), plan.soak, label="all hosts", journal=journal)
        on_every_host(prune_host, plan, plan.host_names(), journal=journal)
    except Exception as failure:
        fail(plan_file, journal, failure)
    journal.write("run.finished", state="completed")
    return publish_record(journal)


def start_run(plan_file: PlanFile, triggered_by: str) -> RunJournal:
    plan = plan_file.plan
    context = FlowRunContext.get()
    journal = RunJournal.create(str(flow_run.id))
    journal.write(
        "run.started",
        run_id=journal.run_id,
        flow_run_name=flow_run.name,
        triggered_by=triggered_by,
        plan_path=str(plan_file.path),
        plan_sha256=plan_file.digest,
        release=plan.release.name,
        version=plan.release.version,
        owner=plan.release.owner,
        environment=plan.environment,
        fleet=plan.host_names(),
        waves=[
            {"name": w.name, "hosts": list(w.hosts), "gate": w.wave.gate} for w in plan_file.waves
        ],
        api_url=str(context.client.api_url) if context else None,
    )
    return journal


def take_backups(plan: Plan, journal: RunJournal) -> None:
    """Every host backed up and verified, or nothing is deployed."""
    _, errors = on_every_host(back_up_host, plan, plan.host_names(), journal=journal)
    if errors:
        raise next(iter(errors.values()))


def deploy_wave(plan: Plan, wave: ResolvedWave, journal: RunJournal) -> None:
    """Deploy to the wave's hosts at once, then smoke-check them; any failure fails the wave."""
    journal.write("wave.started", wave=wave.name, hosts=list(wave.hosts))
    deployed, errors = on_every_host(
        deploy_host, plan, wave.hosts, wave=wave.index, journal=journal
    )
    if not errors:
        deployed, errors = on_every_host(smoke_check_host, plan, wave.hosts, journal=journal)
    if errors:
        raise WaveFailed(wave.name, errors, succeeded=list(deployed))
    journal.write("wave.finished", wave=wave.name, hosts=list(wave.hosts))


def soak_wave(plan_file: PlanFile, wave: ResolvedWave, journal: RunJournal) -> None:
    """Watch every host deployed so far for the wave's own soak time (a canary soak)."""
    assert wave.wave.soak is not None
    plan = plan_file.plan
    limits = (plan.soak or Soak(duration=wave.wave.soak)).model_copy(
        update={"duration": wave.wave.soak}
    )
    soak(plan, _hosts_up_to(plan_file, wave), limits, label=wave.name, journal=journal)


def fail(plan_file: PlanFile, journal: RunJournal, failure: Exception) -> NoReturn:
    """Undo what the journal says changed, record how the run ended, and fail the run."""
    fleet = plan_file.plan.host_names()
    last_wave_first = sorted(
        hosts_to_restore(journal.entries()), key=lambda change: (-change[0], fleet.index(change[1]))
    )
    changed = [host for _, host, _ in last_wave_first]
    what = f"{plan_file.plan.release.name} {plan_file.plan.release.version}"
    try:
        if changed and plan_file.plan.rollback.automatic:
            rollback(str(plan_file.path), journal.run_id, reason=str(failure))
            undone = f"Rolled back, last wave first: {', '.join(changed)}."
        elif changed:
            undone = f"Automatic rollback is off: {', '.join(changed)} stay as they are."
        else:
            undone = "Nothing had been changed, so nothing was rolled back."
    except GoLiveError as rollback_failure:
        journal.write("run.finished", state="failed", reason=f"{failure}; {rollback_failure}")
        publish_record(journal)
        raise rollback_failure from failure
    journal.write("run.finished", state="failed", reason=str(failure), rolled_back=changed)
    publish_record(journal)
    raise RunFailed(what, failure, undone, str(journal.run_dir / "record.json")) from failure


def whoami() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _hosts_up_to(plan_file: PlanFile, wave: ResolvedWave) -> list[str]:
    return [host for w in plan_file.waves[: wave.index + 1] for host in w.hosts]


def _share_deployed(plan_file: PlanFile, wave: ResolvedWave) -> float:
    return 100 * len(_hosts_up_to(plan_file, wave)) / len(plan_file.plan.targets.hosts)
