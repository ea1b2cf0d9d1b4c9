"""prefect.yaml as a Prefect user meets it: deployed from a fresh copy of the checkout by
`prefect deploy --all` in a process of its own, run by a real `prefect worker`, against the
session's Prefect API. Nothing here imports the flows into the test process first."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelling

from golive.demo.fleet import DemoFleet
from golive.journal import run_store
from tests.conftest import DEPLOYMENT_LEASE_SECONDS
from tests.flows.test_golive import flow_runs_named, logs_of, serving
from tests.runstore import runs, wait_for_gate

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
NOT_COPIED = shutil.ignore_patterns(".venv", ".git", "*cache*", "__pycache__", "*.egg-info")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A fresh copy of the project, as a clone would have it."""
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT, copy, ignore=NOT_COPIED)
    return copy


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


def prefect(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def finished(flow_run_id: UUID, seconds: float = 180) -> FlowRun:
    """The flow run, once it has reached a final state."""
    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(0.5)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {seconds} s")


@pytest.fixture
def worker(checkout: Path, worker_environment: dict[str, str]) -> Iterator[Callable[..., None]]:
    """The deployments of a fresh checkout, and a real process worker on their pool; yields
    the `prefect` command, run in the checkout."""

    def cli(*args: str) -> None:
        prefect(*args, cwd=checkout, env=worker_environment)

    cli("work-pool", "create", "golive", "--type", "process", "--overwrite")
    cli("deploy", "--all")
    started = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "golive"],
        cwd=checkout,
        env=worker_environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield cli
    started.terminate()
    started.wait(timeout=60)


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
    approved = subprocess.run(
        [str(BIN / "golive"), "approve", run_id, "--as", "demo-approver"],
        env=worker_environment,
        capture_output=True,
        text=True,
        timeout=120,
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


def canary_live(fleet: DemoFleet, worker: Callable[..., None]) -> str:
    """A go-live of the fleet, from the deployment, waiting at its gate with the canary on
    the new release (a mixed fleet); its run id."""
    plan = fleet.write_plan("2.0.0", soak=None, backups=[])
    worker("deployment", "run", "go-live/go-live", "--param", f"plan_path={plan}")
    run_id = wait_for_gate(seconds=180)
    assert serving(fleet)["web1"] == "2.0.0/2.0.0/ok"
    return run_id


def started_run(name: str, seconds: float = 180) -> FlowRun:
    """The flow run of that name, once Prefect has it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = flow_runs_named(name)
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no flow run {name!r} within {seconds} s")


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
