"""A go-live whose process is killed, two go-lives at once on one environment, and rollbacks
after the fact: real `golive` processes against the session's Prefect API, the run store
shared through its URL, each process in its own working folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import get_client
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelling, Crashed

from flows.golive import go_live, roll_back_crashed
from golive.demo.fleet import DemoFleet
from golive.errors import StoreError
from golive.postgres import Database
from tests.flows.test_golive import flow_runs_named, serving
from tests.runstore import runs, wait_for_entry, wait_for_gate

GOLIVE = str(Path(sys.executable).parent / "golive")
GATED = {"soak": None, "backups": []}  # canary, gate go-ahead (2 min), then the rest


def environment(tmp_path: Path, name: str, **extra: str) -> dict[str, str]:
    """A process of its own: its own GOLIVE_HOME, the shared store, the Prefect API."""
    home = tmp_path / name
    home.mkdir(exist_ok=True)
    return os.environ | {
        "GOLIVE_HOME": str(home),
        "GOLIVE_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "COLUMNS": "200",
        **extra,
    }


def golive(tmp_path: Path, name: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [GOLIVE, *args],
        cwd=tmp_path / name if (tmp_path / name).exists() else tmp_path,
        env=environment(tmp_path, name, **extra),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in done.stdout + done.stderr
    return done


def slow_restarts(fleet: DemoFleet) -> dict[str, Any]:
    """The fleet's targets, with a restart that takes 3 s more: time to act mid-step."""
    targets: dict[str, Any] = fleet.template["targets"]
    return targets | {"restart": targets["restart"] + " && sleep 3"}


def start_run(
    tmp_path: Path, plan: Path, name: str, *options: str, **extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [GOLIVE, "run", str(plan), *options],
        cwd=tmp_path,
        env=environment(tmp_path, name, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_a_killed_go_live_is_crashed_refuses_the_next_and_rolls_back_from_another_machine(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOLIVE_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    fleet = make_fleet(hosts=3)
    plan = fleet.write_plan("2.0.0", **GATED)
    running = start_run(tmp_path, plan, "machine-a", GOLIVE_LEASE_SECONDS="3")
    run_id = wait_for_gate(seconds=120)
    assert serving(fleet)["web1"] == "2.0.0/2.0.0/ok"  # the canary is live: a mixed fleet

    alive = golive(tmp_path, "machine-b", "rollback", run_id[:8], "--yes")
    os.kill(running.pid, signal.SIGKILL)
    running.wait(timeout=30)
    time.sleep(4)  # the lease runs out: nobody renews it
    status = golive(tmp_path, "machine-b", "status", run_id[:8])
    refused = golive(tmp_path, "machine-b", "run", str(plan))
    rolled_back = golive(tmp_path, "machine-b", "rollback", run_id[:8], "--yes")
    after = golive(tmp_path, "machine-b", "status")

    assert alive.returncode == 1 and f"is held by run {run_id}" in alive.stderr
    assert "crashed" in status.stdout and f"golive rollback {run_id[:8]}" in status.stdout
    assert refused.returncode == 1
    assert f"has an unfinished run (its process is gone, or its rollback failed): {run_id}" in (
        refused.stdout + refused.stderr
    )
    assert rolled_back.returncode == 0, rolled_back.stdout + rolled_back.stderr
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    states = {r.run_id: r for r in runs()}
    kinds = [e["kind"] for e in states[run_id].entries()]
    assert "run.crashed" in kinds and kinds[-1] == "run.finished"
    assert "crashed" not in after.stdout and "refused" in after.stdout
    assert golive(tmp_path, "machine-b", "audit", "verify").returncode == 0
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(UUID(run_id)).state_name == "Crashed"


def test_a_go_live_killed_before_it_changed_anything_leaves_its_environment_to_the_next(
    make_fleet: Callable[..., DemoFleet],
    shop_db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOLIVE_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    fleet = make_fleet(hosts=2)
    where = {"host": shop_db.host, "port": shop_db.port, "dbname": shop_db.dbname}
    plan = fleet.write_plan(
        "2.0.0",
        gates={},
        soak=None,
        waves=[{"name": "all", "hosts": "100%"}],
        databases={"shop": where | {"user": shop_db.user}},
        backups=[{"kind": "postgres", "database": "shop"}],
        backup_storage={"directory": str(tmp_path / "backups")},
    )
    with shop_db.connect() as holding:  # the dump waits on this lock: killed mid-backup
        holding.execute(b"LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        running = start_run(tmp_path, plan, "machine-a", GOLIVE_LEASE_SECONDS="3")
        run_id = wait_for_entry("step.started", 120, stage="backup", host="database shop")
        os.killpg(running.pid, signal.SIGKILL)  # golive and its pg_dump
        running.wait(timeout=30)
    time.sleep(4)  # the lease runs out: nobody renews it
    status = golive(tmp_path, "machine-b", "status", run_id[:8])
    rolled_back = golive(tmp_path, "machine-b", "rollback", run_id[:8], "--yes")
    next_run = golive(tmp_path, "machine-b", "run", str(plan))

    assert "crashed before it changed any host or database" in status.stdout, status.stdout
    assert rolled_back.returncode == 1
    assert "changed no host and no database: nothing to roll back" in rolled_back.stderr
    assert next_run.returncode == 0, next_run.stdout + next_run.stderr
    assert set(serving(fleet).values()) == {"2.0.0/2.0.0/ok"}


def test_two_go_lives_on_one_environment_at_the_same_moment_one_proceeds(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOLIVE_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0", **GATED)
    first = start_run(tmp_path, plan, "machine-a")
    second = start_run(tmp_path, plan, "machine-b")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None and second.poll() is None:
            time.sleep(0.5)
        loser = first if first.poll() is not None else second
        winner = second if loser is first else first
        said = loser.communicate(timeout=60)[0]
        gated = [r for r in runs() if any(e["kind"] == "gate.opened" for e in r.entries())]
        approved = golive(
            tmp_path, "machine-c", "approve", gated[0].run_id, "--as", "demo-approver"
        )
        winner_said = winner.communicate(timeout=120)[0]
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()

    assert loser.returncode == 1 and "environment 'demo' is held by run" in said, said
    assert approved.returncode == 0, approved.stderr
    assert winner.returncode == 0, winner_said
    assert set(serving(fleet).values()) == {"2.0.0/2.0.0/ok"}


def test_an_emergency_rollback_of_a_successful_run_and_what_it_refuses(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path, golive_home: Path
) -> None:
    fleet = make_fleet(hosts=2)
    go_live(str(fleet.write_plan("2.0.0", gates={}, waves=[{"name": "all", "hosts": "100%"}])))
    [run] = runs()
    home = {"GOLIVE_HOME": str(golive_home)}

    unknown = subprocess.run(
        [GOLIVE, "rollback", "feedface", "--yes"],
        env=os.environ | home,
        capture_output=True,
        text=True,
    )
    undone = golive(tmp_path, "elsewhere", "rollback", run.run_id, "--yes", "--reason", "bug 42",
                    GOLIVE_STORE_URL=f"sqlite:///{golive_home / 'store.db'}")  # fmt: skip
    again = golive(tmp_path, "elsewhere", "rollback", run.run_id, "--yes",
                   GOLIVE_STORE_URL=f"sqlite:///{golive_home / 'store.db'}")  # fmt: skip

    assert unknown.returncode == 2 and "no run 'feedface'" in unknown.stderr
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    assert again.returncode == 1 and "was already rolled back" in again.stderr
    entries = run.entries()
    assert entries[-1]["kind"] == "run.finished" and entries[-1]["state"] == "rolled back"
    # the rollback is a run of its own, linked both ways, with every step in its own record
    by = entries[-2]["by"]
    assert entries[-2]["kind"] == "rollback.finished" and entries[-2]["complete"]
    assert entries[-1]["reason"] == f"bug 42 (by run {by})"
    assert f"The rollback is run {by}" in undone.stdout
    [rollback_run] = [r for r in runs() if r.run_id == by]
    own = rollback_run.entries()
    assert own[0]["rolls_back"] == run.run_id and own[0]["trigger"]["os_user"]
    assert {e["host"] for e in own if e["kind"] == "host.restored" and e["ok"]} == {"web1", "web2"}
    assert own[-1]["kind"] == "run.finished" and own[-1]["state"] == "completed"
    shown = golive(tmp_path, "elsewhere", "status", run.run_id[:8],
                   GOLIVE_STORE_URL=f"sqlite:///{golive_home / 'store.db'}")  # fmt: skip
    assert f"Rolled back by run {by}" in shown.stdout.replace("`", "")


def test_a_killed_rollback_is_taken_over_by_the_next_one_from_another_machine(
    make_fleet: Callable[..., DemoFleet],
    tmp_path: Path,
    golive_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = f"sqlite:///{golive_home / 'store.db'}"
    monkeypatch.setenv("GOLIVE_STORE_URL", store)
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan(
        "2.0.0",
        targets=slow_restarts(fleet),
        gates={},
        waves=[{"name": "all", "hosts": "100%"}],
    )
    go_live(str(plan))
    [run] = runs()
    first = subprocess.Popen(
        [GOLIVE, "rollback", run.run_id, "--yes"],
        cwd=tmp_path,
        env=environment(tmp_path, "machine-a", GOLIVE_STORE_URL=store, GOLIVE_LEASE_SECONDS="3"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    stopped = wait_for_entry("rollback.started", seconds=120)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    time.sleep(4)  # its lease runs out: nobody renews it
    refused = golive(tmp_path, "machine-b", "run", str(plan), GOLIVE_STORE_URL=store)
    second = golive(tmp_path, "machine-b", "rollback", stopped, "--yes", GOLIVE_STORE_URL=store)
    after = golive(tmp_path, "machine-b", "status", GOLIVE_STORE_URL=store)
    ends = {r.run_id: r.entries()[-1] for r in runs()}

    assert refused.returncode == 1 and stopped in refused.stdout + refused.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"Run {stopped} was a rollback of run {run.run_id}; rolling back that" in second.stdout
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    assert ends[stopped]["state"] == "failed" and "took over" in ends[stopped]["reason"]
    assert ends[run.run_id]["state"] == "rolled back"
    assert "crashed" not in after.stdout and "running" not in after.stdout


SIGNALS = ["SIGTERM", "SIGINT", "SIGINT to the process group", "Ctrl-C on the embedded default"]


@pytest.mark.parametrize("how", SIGNALS, ids=["term", "int", "int-group", "int-embedded"])
def test_a_signal_to_a_running_go_live_rolls_it_back_before_it_stops(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOLIVE_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0", **GATED)
    # Ctrl-C in a terminal signals the whole group, including a temporary Prefect server
    embedded = {"PREFECT_API_URL": ""} if how.startswith("Ctrl-C") else {}
    running = start_run(tmp_path, plan, "machine-a", **embedded)
    run_id = wait_for_gate(seconds=120)
    assert serving(fleet)["web1"] == "2.0.0/2.0.0/ok"
    number = signal.SIGTERM if how == "SIGTERM" else signal.SIGINT
    if how.endswith("group") or embedded:
        os.killpg(running.pid, number)
    else:
        os.kill(running.pid, number)
    said = running.communicate(timeout=120)[0]
    [run] = runs()
    entries = run.entries()

    assert running.returncode == 1, said
    assert "Traceback" not in said
    stopped_by = "SIGTERM" if how == "SIGTERM" else "Ctrl-C (SIGINT)"
    assert f"the run was stopped by {stopped_by}" in said
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    assert entries[-1]["kind"] == "run.finished" and entries[-1]["state"] == "failed"
    assert any(e["kind"] == "rollback.finished" and e["complete"] for e in entries)
    assert run.run_id == run_id


def test_a_host_deploying_when_the_run_is_stopped_finishes_its_step_and_is_then_put_back(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOLIVE_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan(
        "2.0.0",
        targets=slow_restarts(fleet),
        gates={},
        soak=None,
        waves=[{"name": "canary", "hosts": 1}, {"name": "rest", "hosts": "100%"}],
    )
    running = start_run(tmp_path, plan, "machine-a")
    deadline = time.monotonic() + 120
    while not deploying("web2") and time.monotonic() < deadline:
        time.sleep(0.05)
    running.send_signal(signal.SIGTERM)
    said = running.communicate(timeout=120)[0]
    [run] = runs()
    kinds = [(e["kind"], e.get("stage"), e.get("host")) for e in run.entries()]

    assert running.returncode == 1, said
    finished = kinds.index(("step.finished", "deploy", "web2"))  # its restart took 3 s more
    assert finished < kinds.index(("rollback.started", None, None))
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}


def deploying(host: str) -> bool:
    try:
        found = runs()
    except StoreError:  # not created yet
        return False
    return any(
        e["kind"] == "step.started" and e["stage"] == "deploy" and e.get("host") == host
        for run in found
        for e in run.entries()
    )


def test_a_cancel_in_prefect_rolls_a_go_live_at_its_gate_back_and_ends_it_cancelled(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOLIVE_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0", **GATED)
    running = start_run(tmp_path, plan, "machine-a")
    run_id = wait_for_gate(seconds=120)
    with get_client(sync_client=True) as client:  # what the UI's Cancel button does
        client.set_flow_run_state(UUID(run_id), Cancelling(message="wrong day"))
    said = running.communicate(timeout=120)[0]
    [run] = runs()
    ended = run.entries()[-1]

    assert running.returncode == 1, said
    assert "Traceback" not in said
    assert "the run was stopped by a Cancel in Prefect (UI or API)" in said
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    assert ended["kind"] == "run.finished" and ended["state"] == "cancelled"
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(UUID(run_id)).state_name == "Cancelled"


def test_a_second_ctrl_c_stops_the_rollback_and_says_what_is_left_and_how_to_finish(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOLIVE_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0", targets=slow_restarts(fleet), **GATED)
    running = start_run(tmp_path, plan, "machine-a", PREFECT_API_URL="")
    run_id = wait_for_gate(seconds=180)
    os.killpg(running.pid, signal.SIGINT)
    wait_for_entry("rollback.started", seconds=60)
    os.killpg(running.pid, signal.SIGINT)
    said = running.communicate(timeout=120)[0]
    [run] = runs()
    ended = run.entries()[-1]
    finished = golive(tmp_path, "machine-b", "rollback", run_id[:8], "--yes")

    assert running.returncode == 4, said
    assert "Traceback" not in said
    assert "Pressing Ctrl-C again stops the rollback too" in said
    assert "a second Ctrl-C (SIGINT) stopped the rollback itself. Not put back yet: web1" in said
    assert f"Finish it: `golive rollback {run_id}`" in said
    assert ended["kind"] == "run.finished" and ended["state"] == "rollback failed"
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}


def test_a_rollback_that_cannot_finish_ends_apart_names_the_hosts_and_holds_the_environment(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path, golive_home: Path
) -> None:
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0", gates={}, waves=[{"name": "all", "hosts": "100%"}])
    go_live(str(plan))
    [run] = runs()
    shutil.rmtree(fleet.host_dir("web2") / "releases" / "1.0.0")  # what web2 would go back to
    store = {"GOLIVE_STORE_URL": f"sqlite:///{golive_home / 'store.db'}"}

    failed = golive(tmp_path, "ops", "rollback", run.run_id, "--yes", **store)
    refused = golive(tmp_path, "ops", "run", str(plan), **store)

    assert failed.returncode == 4, failed.stdout + failed.stderr
    assert "web2: could not switch to 1.0.0" in failed.stderr and "web1" not in failed.stderr
    assert serving(fleet)["web1"] == "1.0.0/1.0.0/ok"
    entries = run.entries()
    assert entries[-1]["kind"] == "run.finished" and entries[-1]["state"] == "rollback failed"
    [undo] = flow_runs_named(f"rollback {run.run_id}")
    assert undo.state_name == "RollbackFailed"
    assert refused.returncode == 1 and f"golive rollback {run.run_id}" in refused.stdout

    # web2 is mended; the next rollback puts back only what the first one could not
    (fleet.host_dir("web2") / "releases" / "1.0.0").mkdir()
    shutil.copytree(
        fleet.host_dir("web1") / "releases" / "1.0.0",
        fleet.host_dir("web2") / "releases" / "1.0.0",
        dirs_exist_ok=True,
    )
    finished = golive(tmp_path, "ops", "rollback", run.run_id, "--yes", **store)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    second = run.entries()[-2]["by"]
    [again] = [r for r in runs() if r.run_id == second]
    assert [e["host"] for e in again.of_kind("host.restored")] == ["web2"]


def test_a_second_go_live_told_to_wait_goes_on_when_the_first_ends(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOLIVE_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0", **GATED)
    first = start_run(tmp_path, plan, "machine-a")
    first_id = wait_for_gate(seconds=120)
    ungated = fleet.write_plan(
        "2.0.0", soak=None, backups=[], gates={}, waves=[{"name": "all", "hosts": "100%"}]
    )  # the same environment; the first run read its own plan already
    second = start_run(tmp_path, ungated, "machine-b", "--wait", "2m")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
        e["kind"] == "lease.waiting" for r in runs() for e in r.entries()
    ):
        time.sleep(0.5)
    golive(tmp_path, "machine-c", "approve", first_id, "--as", "demo-approver")
    first_said = first.communicate(timeout=120)[0]
    second_said = second.communicate(timeout=180)[0]

    assert first.returncode == 0, first_said
    assert "environment demo is held by run" in second_said and "waiting for it" in second_said
    assert second.returncode == 0, second_said


def test_the_crash_hook_never_rolls_back_a_run_that_ended_before_its_process_died(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    go_live(str(fleet.write_plan("2.0.0", gates={}, waves=[{"name": "all", "hosts": "100%"}])))
    [run] = runs()
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(run.run_id))

    # e.g. killed while publishing its record, after `run.finished` was written
    roll_back_crashed(go_live, flow_run, Crashed(message="killed"))

    assert set(serving(fleet).values()) == {"2.0.0/2.0.0/ok"}
    assert [r.run_id for r in runs()] == [run.run_id]
