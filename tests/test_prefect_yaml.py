"""prefect.yaml as a Prefect user meets it: deployed from a fresh copy of the checkout by
`prefect deploy --all` in a process of its own, run by a real `prefect worker`, against the
session's Prefect API. Nothing here imports the flows into the test process first."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling

from golive.demo.fleet import DemoFleet
from golive.journal import run_store
from tests.conftest import DEPLOYMENT_LEASE_SECONDS, free_port
from tests.flows.test_golive import logs_of, serving
from tests.prefect_server import (
    Pool,
    finished,
    fresh_checkout,
    golive,
    prefect,
    server_started,
    started_run,
    triggered,
)
from tests.runstore import runs, wait_for_entry, wait_for_gate


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    return fresh_checkout(tmp_path / "checkout")


@pytest.fixture
def worker_environment(tmp_path: Path) -> Iterator[dict[str, str]]:
    """What a worker's machine sets: the Prefect API and the shared run store."""
    store = f"sqlite:///{tmp_path / 'store.db'}"
    os.environ["GOLIVE_STORE_URL"] = store  # for this process's own reading of the store
    yield {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "GOLIVE_STORE_URL": store,
        "GOLIVE_HOME": str(tmp_path / "worker-home"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "GOLIVE_LEASE_SECONDS": "5",  # a killed run's lease runs out soon
    }
    del os.environ["GOLIVE_STORE_URL"]


@pytest.fixture
def worker(checkout: Path, worker_environment: dict[str, str]) -> Iterator[Pool]:
    """`prefect deploy --all` from a fresh checkout, and a worker on its pool."""
    pool = Pool(checkout, worker_environment)
    pool("work-pool", "create", "golive", "--type", "process", "--overwrite")
    pool("deploy", "--all")
    pool.start_worker()
    yield pool
    pool.stop()


def test_a_fresh_checkout_deploys_and_a_worker_runs_a_gated_go_live_and_its_rollback(
    make_fleet: Callable[..., DemoFleet],
    worker: Callable[..., None],
    worker_environment: dict[str, str],
) -> None:
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0", soak=None, backups=[])  # canary, gate go-ahead, the rest

    worker("deployment", "run", "go-live/go-live", "--param", f"plan_path={plan}")
    run_id = wait_for_gate(seconds=180)
    time.sleep(DEPLOYMENT_LEASE_SECONDS + 10)  # paused past Prefect's deployment lease
    approved = golive(
        "approve", run_id, "--as", "demo-approver", env=worker_environment, timeout=120
    )
    released = finished(UUID(run_id))
    worker("deployment", "run", "rollback/rollback", "--param", f"run_id={run_id}")
    undo = started_run(f"rollback {run_id}")
    undone = finished(undo.id)
    stored = {r.run_id: r.entries() for r in runs()}

    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert released.state_name == "Completed"
    with get_client(sync_client=True) as client:  # the UI's run form describes each field
        form = client.read_deployment_by_name("go-live/go-live").parameter_openapi_schema
    assert form["properties"]["plan_path"]["description"].startswith("The plan file (YAML)")
    said = logs_of(run_id, until="■ completed")  # the run's Logs tab
    for line in ("✓ deploy web1", "✓ smoke web2", "gate go-ahead", "completed"):
        assert line in said, said
    started = stored[run_id][0]
    assert started["trigger"]["deployment"] == "go-live/go-live"
    assert stored[run_id][-1]["state"] == "rolled back"
    assert undone.state_name == "Completed"
    assert stored[str(undo.id)][0]["trigger"]["deployment"] == "rollback/rollback"
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}


def test_after_golive_demo_the_go_live_deployment_releases_its_default_plan(
    checkout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"  # a user's: no GOLIVE_HOME, no GOLIVE_STORE_URL, only HOME
    users_machine = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "GOLIVE_HOME", "GOLIVE_STORE_URL"}
    } | {
        "HOME": str(home),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    demo = golive("demo", env=users_machine, timeout=300)
    monkeypatch.setenv("GOLIVE_HOME", str(home / ".golive"))  # this process reads that store
    demo_runs = {r.run_id for r in runs()}
    fleet = DemoFleet(home / ".golive" / "demo")
    pool = Pool(checkout, users_machine)
    try:
        pool("work-pool", "create", "golive", "--type", "process", "--overwrite")
        pool("deploy", "--all")
        pool.start_worker()
        pool("deployment", "run", "go-live/go-live")  # no parameters: the defaults
        run_id = new_run_at("gate.suspended", besides=demo_runs)
        key = str(home / ".golive" / "demo" / "demo-approver.key")
        approved = golive(
            "approve", run_id, "--as", "demo-approver", "--key", key, env=users_machine, timeout=400
        )
        released = finished(UUID(run_id))
        hosts = serving(fleet)
    finally:
        pool.stop()
        fleet.stop()

    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "back on 1.0.0" in demo.stdout
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert released.state_name == "Completed"
    assert set(hosts.values()) == {"2.0.0/2.0.0/ok"}


def new_run_at(kind: str, besides: set[str], seconds: float = 180) -> str:
    """The id of a run in the store, not among `besides`, once it has written an entry of
    this kind."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for run in runs():
            if run.run_id not in besides and any(run.of_kind(kind)):
                return run.run_id
        time.sleep(0.5)
    raise AssertionError(f"no new run wrote {kind} in {seconds} s")


def test_a_go_live_whose_process_a_worker_finds_killed_is_rolled_back_by_its_crash_hook(
    make_fleet: Callable[..., DemoFleet], worker: Callable[..., None]
) -> None:
    fleet = make_fleet(hosts=2)
    run_id = canary_live(fleet, worker)
    [run] = runs()
    holder = run_store().lease("demo")
    assert holder is not None and holder.run_id == run_id
    os.kill(int(holder.holder.rsplit("pid ", 1)[1].rstrip(")")), signal.SIGKILL)
    undo = started_run(f"rollback {run_id}")
    undone = finished(undo.id)
    entries = run.entries()

    assert finished(UUID(run_id)).state_name == "Crashed"
    assert undone.state_name == "Completed"
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    assert "run.crashed" in [e["kind"] for e in entries]
    assert (
        entries[-1]["state"] == "failed"
        and "Prefect marked the run Crashed" in entries[-1]["reason"]
    )


def test_a_worker_that_cannot_reach_the_run_store_fails_the_run_naming_the_setting(
    make_fleet: Callable[..., DemoFleet],
    checkout: Path,
    worker_environment: dict[str, str],
    tmp_path: Path,
) -> None:
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0", soak=None, backups=[])
    worker_home = tmp_path / "worker"
    unreachable = f"postgresql://golive@127.0.0.1:{free_port()}/golive"
    pool = Pool(
        checkout,
        worker_environment | {"GOLIVE_STORE_URL": unreachable, "GOLIVE_HOME": str(worker_home)},
    )
    try:
        pool("work-pool", "create", "golive", "--type", "process", "--overwrite")
        pool("deploy", "--all")
        pool.start_worker()
        run_id = triggered("go-live/go-live", plan_path=str(plan))
        ended = finished(run_id)
    finally:
        pool.stop()
    said = logs_of(str(run_id), until="GOLIVE_STORE_URL", seconds=180)

    assert ended.state_name == "Failed"
    assert f"run store {unreachable}: connection failed" in said
    assert "check GOLIVE_STORE_URL" in said
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    assert list(worker_home.rglob("inputs")) == []  # nothing half-started


def canary_live(fleet: DemoFleet, worker: Callable[..., None]) -> str:
    """A go-live of the fleet, from the deployment, its process pausing between waves with
    the canary on the new release (a mixed fleet); its run id."""
    waves = [{"name": "canary", "hosts": 1, "pause": "5m"}, {"name": "rest", "hosts": "100%"}]
    plan = fleet.write_plan("2.0.0", soak=None, backups=[], waves=waves)
    worker("deployment", "run", "go-live/go-live", "--param", f"plan_path={plan}")
    run_id = wait_for_entry("wave.pause", seconds=180)
    assert serving(fleet)["web1"] == "2.0.0/2.0.0/ok"
    return run_id


def test_a_cancel_of_a_go_live_a_worker_runs_rolls_it_back(
    make_fleet: Callable[..., DemoFleet], worker: Callable[..., None]
) -> None:
    fleet = make_fleet(hosts=2)
    run_id = canary_live(fleet, worker)
    with get_client(sync_client=True) as client:  # what the UI's Cancel button does
        client.set_flow_run_state(UUID(run_id), Cancelling(message="wrong day"))
    cancelled = finished(UUID(run_id))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and set(serving(fleet).values()) != {"1.0.0/1.0.0/ok"}:
        time.sleep(0.5)

    assert cancelled.state_name == "Cancelled"
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    [run] = [r for r in runs() if r.run_id == run_id]
    assert any(e["kind"] == "rollback.finished" and e["complete"] for e in run.entries())


def test_the_nightly_rehearsal_is_scheduled_and_a_worker_runs_it_with_its_rollback_drill(
    make_fleet: Callable[..., DemoFleet],
    worker: Callable[..., None],
    checkout: Path,
    worker_environment: dict[str, str],
) -> None:
    fleet, stage = make_fleet(hosts=2), make_fleet(hosts=2, folder="rehearsal-hosts")
    plan = fleet.write_plan("2.0.0", soak=None, backups=[], rehearsal=fleet.rehearsal_on(stage))
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("go-live/rehearsal")
    said = prefect(
        "deployment", "run", "go-live/rehearsal", "--param", f"plan_path={plan}",
        cwd=checkout, env=worker_environment | {"COLUMNS": "200"},
    )  # fmt: skip
    rehearsed = finished(UUID(said.stdout.split("UUID: ")[1].split()[0]))
    [run] = runs()
    started, result = next(run.of_kind("run.started")), next(run.of_kind("rehearsal.finished"))

    [nightly] = deployment.schedules
    assert (nightly.schedule.cron, nightly.schedule.timezone) == ("30 2 * * *", "Europe/London")  # type: ignore[union-attr]
    assert deployment.parameters["rehearsal"] is True
    assert rehearsed.state_name == "Completed"
    assert started["trigger"]["deployment"] == "go-live/rehearsal"
    assert started["triggered_by"] == "nightly rehearsal"
    assert result["passed"] and result["rollback_seconds"] > 0
    assert set(serving(stage).values()) == {"1.0.0/1.0.0/ok"}
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}


def test_a_go_live_waits_at_its_gate_suspended_and_comes_back_after_the_worker_restarts(
    make_fleet: Callable[..., DemoFleet],
    worker: Pool,
    worker_environment: dict[str, str],
    tmp_path: Path,
) -> None:
    fleet = make_fleet(hosts=2)
    run_id = suspended_at_gate(fleet, worker)
    suspended = state_of(UUID(run_id), "Suspended")
    [first] = worker.workers
    held_while_suspended = run_store().lease("demo")
    flow_processes_while_suspended = children_after(first.pid, seconds=60)
    first.kill()  # the worker dies while the run waits: a new one takes over
    first.wait(timeout=30)
    worker.start_worker()
    another_machine = worker_environment | {"GOLIVE_HOME": str(tmp_path / "approver-home")}
    status = golive("status", run_id, env=another_machine | {"COLUMNS": "200"}, timeout=120)
    approved = golive("approve", run_id, "--as", "demo-approver", env=another_machine, timeout=400)
    released = finished(UUID(run_id))
    [run] = runs()
    entries = run.entries()
    kinds = [e["kind"] for e in entries]
    [resumed] = run.of_kind("run.resumed")

    assert suspended.state_details.pause_reschedule  # suspended, not paused in a process
    assert flow_processes_while_suspended == []
    assert held_while_suspended is not None and held_while_suspended.run_id == run_id
    assert "suspended here: no process runs it" in status.stdout, status.stdout + status.stderr
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "was suspended at gate 'go-ahead'" in approved.stdout
    assert "Counted" in approved.stdout
    assert released.state_name == "Completed"
    assert set(serving(fleet).values()) == {"2.0.0/2.0.0/ok"}
    assert resumed["gate"] == "go-ahead"
    assert resumed["done"] == ["preflight", "database backups", "wave canary"]
    # Done once, not again after the run came back.
    assert [e["stage"] for e in entries if e["kind"] == "step.started"].count("preflight") == 1
    switched = [e["host"] for e in entries if e["kind"] == "host.switched"]
    assert sorted(switched) == ["web1", "web2"]
    assert kinds.count("gate.opened") == 1 and kinds[-1] == "run.finished"
    assert entries[-1]["state"] == "completed"
    assert run_store().lease("demo") is None


def test_a_suspended_gate_that_times_out_is_woken_by_its_timer_and_rolls_back(
    make_fleet: Callable[..., DemoFleet], worker: Pool
) -> None:
    fleet = make_fleet(hosts=2)
    gates = {"go-ahead": {"approvers": ["demo-approver"], "allow_unsigned": True, "timeout": "15s"}}
    plan = fleet.write_plan("2.0.0", soak=None, backups=[], gates=gates)
    worker("deployment", "run", "go-live/go-live", "--param", f"plan_path={plan}")
    run_id = wait_for_entry("gate.suspended", seconds=180)
    ended = finished(UUID(run_id), seconds=240)
    timer = started_run(f"deadline of gate go-ahead in run {run_id}")
    [run] = runs()
    kinds = [e["kind"] for e in run.entries()]

    assert ended.state_name == "Failed"
    assert finished(timer.id).state_name == "Completed"
    assert "gate.timed_out" in kinds and "rollback.finished" in kinds
    assert run.entries()[-1]["state"] == "failed"
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}


def test_an_early_timeout_sent_to_a_suspended_gate_does_not_count(
    make_fleet: Callable[..., DemoFleet], worker: Pool
) -> None:
    fleet = make_fleet(hosts=2)
    run_id = suspended_at_gate(fleet, worker)
    forged = {"decision": "timeout", "approver": "golive", "comment": "", "signed_at": ""}
    resume_flow_run(UUID(run_id), run_input=forged)  # what anyone with the API can send
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(list(runs()[0].of_kind("gate.suspended"))) < 2:
        time.sleep(0.5)
    [run] = runs()
    [refused] = run.of_kind("gate.refused")

    assert "before the gate's deadline" in refused["reason"]
    assert len(list(run.of_kind("gate.suspended"))) == 2  # waiting again, for a real decision
    assert serving(fleet)["web1"] == "2.0.0/2.0.0/ok"
    state_of(UUID(run_id), "Suspended")


def suspended_at_gate(fleet: DemoFleet, worker: Pool) -> str:
    """A go-live of the fleet from the deployment, suspended at its gate (canary live, gate
    go-ahead, the rest to come); its run id."""
    plan = fleet.write_plan("2.0.0", soak=None, backups=[])
    worker("deployment", "run", "go-live/go-live", "--param", f"plan_path={plan}")
    run_id = wait_for_entry("gate.suspended", seconds=180)
    state_of(UUID(run_id), "Suspended")
    return run_id


def state_of(flow_run_id: UUID, name: str, seconds: float = 120) -> State:
    """The flow run's state, once it has that name."""
    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(flow_run_id).state
            if state is not None and state.name == name:
                return state
            time.sleep(0.5)
    raise AssertionError(f"flow run {flow_run_id} was not {name} within {seconds} s")


def children_after(pid: int, seconds: float) -> list[str]:
    """The command lines of the processes whose parent is `pid` (a worker's flow runs), once
    there are none, or as they are after `seconds`."""
    deadline = time.monotonic() + seconds
    while (found := _children(pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def _children(pid: int) -> list[str]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if parent == pid:
            found.append(command)
    return found


def test_a_go_live_cancelled_while_suspended_is_rolled_back_by_golive_rollback(
    make_fleet: Callable[..., DemoFleet],
    worker: Pool,
    worker_environment: dict[str, str],
    tmp_path: Path,
) -> None:
    fleet = make_fleet(hosts=2)
    run_id = suspended_at_gate(fleet, worker)
    with get_client(sync_client=True) as client:  # the UI's Cancel: no process to tell
        client.set_flow_run_state(UUID(run_id), Cancelling(message="wrong day"))
    cancelled = finished(UUID(run_id))
    another_machine = worker_environment | {"GOLIVE_HOME": str(tmp_path / "operator-home")}
    undone = golive("rollback", run_id, "--yes", env=another_machine, timeout=300)

    assert cancelled.state_name == "Cancelled"
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    assert run_store().lease("demo") is None


@pytest.fixture
def scheduling_server(
    checkout: Path, worker_environment: dict[str, str], tmp_path: Path
) -> Iterator[Pool]:
    """A Prefect server as `prefect server start` runs it, with its scheduler (the test
    harness's temporary server runs none), the checkout deployed there, and a worker."""
    environment = worker_environment | {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
    }
    with server_started(environment, tmp_path / "server.log") as url:
        pool = Pool(checkout, environment | {"PREFECT_API_URL": url})
        try:
            with temporary_settings({PREFECT_API_URL: url}):
                pool("work-pool", "create", "golive", "--type", "process", "--overwrite")
                pool("deploy", "--all")
                pool.start_worker()
                yield pool
        finally:
            pool.stop()


def test_golive_schedule_puts_a_plans_rehearsal_on_prefects_scheduler_which_fires_it(
    make_fleet: Callable[..., DemoFleet], scheduling_server: Pool, tmp_path: Path
) -> None:
    fleet, stage = make_fleet(hosts=2), make_fleet(hosts=2, folder="rehearsal-hosts")
    rehearsal = fleet.rehearsal_on(stage) | {"schedule": {"cron": "* * * * *", "timezone": "UTC"}}
    plan = fleet.write_plan("2.0.0", soak=None, backups=[], rehearsal=rehearsal)
    bad = fleet.write_plan(
        "2.0.1", soak=None, backups=[], rehearsal=rehearsal | {"schedule": {"cron": "61 * * * *"}}
    )
    operator = scheduling_server.environment | {
        "GOLIVE_HOME": str(tmp_path / "operator-home"),
        "COLUMNS": "250",
    }
    no_api = {k: v for k, v in operator.items() if k != "PREFECT_API_URL"}

    refused = golive("schedule", str(bad), env=operator, timeout=120)
    no_server = golive("schedule", str(plan), env=no_api, timeout=120)
    scheduled = golive("schedule", str(plan), env=operator, timeout=120)
    again = golive("schedule", str(plan), env=operator, timeout=120)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("go-live/rehearsal")
        schedules = client.read_deployment_schedules(deployment.id)
    fired = auto_scheduled_run("go-live/rehearsal", seconds=240)
    rehearsed = finished(fired.id, seconds=240)
    [run] = [r for r in runs() if r.run_id == str(fired.id)]
    started, result = next(run.of_kind("run.started")), next(run.of_kind("rehearsal.finished"))

    assert refused.returncode == 2 and "rehearsal.schedule.cron" in refused.stderr
    assert no_server.returncode == 2 and "PREFECT_API_URL is not set" in no_server.stderr
    assert scheduled.returncode == 0 and "Scheduled:" in scheduled.stdout, scheduled.stderr
    assert again.returncode == 0 and "Rescheduled:" in again.stdout, again.stderr
    crons = sorted(s.schedule.cron for s in schedules)  # type: ignore[union-attr]
    assert crons == ["* * * * *", "30 2 * * *"]  # the plan's, once; the nightly default
    assert fired.parameters["plan_path"] == str(plan)
    assert rehearsed.state_name == "Completed"
    assert started["trigger"]["schedule"]  # the time the schedule set it for
    assert started["trigger"]["deployment"] == "go-live/rehearsal"
    assert result["passed"] and result["rollback_seconds"] > 0
    assert set(serving(stage).values()) == {"1.0.0/1.0.0/ok"}
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}


def auto_scheduled_run(deployment: str, seconds: float) -> FlowRun:
    """The first flow run of the deployment that its schedule made, once it has started; the
    schedule is then paused, its later runs deleted."""
    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(deployment).id
        # Not the schedule's runs still to come: a minute's schedule makes a hundred of them.
        begun = FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED])),
        )
        while time.monotonic() < deadline:
            for run in client.read_flow_runs(flow_run_filter=begun, limit=50):
                if run.auto_scheduled:
                    client.pause_deployment(deployment_id)  # one is enough: no more after it
                    for later in client.read_flow_runs(limit=200):
                        if later.deployment_id == deployment_id and later.id != run.id:
                            client.delete_flow_run(later.id)
                    return run
            time.sleep(1)
    raise AssertionError(f"Prefect's scheduler started no run of {deployment} in {seconds} s")
