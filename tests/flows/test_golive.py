"""The go-live flow against a real Prefect API, real host directories and real HTTP services."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, LogFilter
from prefect.client.schemas.objects import FlowRun

from flows.golive import go_live
from flows.rollback import rollback
from golive import journal
from golive.demo.fleet import DemoFleet
from golive.errors import PlanError, RollbackIncomplete, RunFailed
from golive.journal import RunJournal
from tasks.approvals import decide_gate
from tests.conftest import decision
from tests.runstore import go_live_in_background, record_of, runs, wait_for_gate

ALL = {"name": "all", "hosts": "100%"}

GATED_WAVES = [
    {"name": "canary", "hosts": 1, "gate": "go-ahead"},
    {"name": "rest", "hosts": "100%"},
]
THREE_WAVES = [
    {"name": "canary", "hosts": 1},
    {"name": "half", "hosts": "50%"},
    {"name": "rest", "hosts": "100%"},
]
NO_SOAK = {"soak": None}


def serving(fleet: DemoFleet) -> dict[str, str]:
    """What each host's `current` link points at, and the version its service answers with."""
    seen = {}
    for host in fleet.hosts:
        linked = (fleet.host_dir(host.name) / "current").resolve().name
        answered = httpx.get(host.fill("http://{address}:{http_port}/health"), timeout=5).json()
        seen[host.name] = f"{linked}/{answered['version']}/{answered['status']}"
    return seen


def only_run() -> tuple[RunJournal, dict[str, Any]]:
    [journal] = runs()
    return journal, record_of(journal)


def prefect_state(run_id: str) -> tuple[str, str]:
    """How Prefect's API shows a flow run's state: its type and its name."""
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(run_id)).state
    assert state is not None
    return state.type.value, state.name


def flow_runs_named(name: str) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )


def logs_of(run_id: str, until: str, seconds: float = 30) -> str:
    """The run's logs in Prefect's API (what its Logs tab shows), once `until` is among them:
    Prefect sends logs in batches, a moment after they are written."""
    deadline = time.monotonic() + seconds
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id={"any_": [UUID(run_id)]}))
        said = "\n".join(log.message for log in logs)
        if until in said or time.monotonic() > deadline:
            return said
        time.sleep(0.5)


def kinds(journal: RunJournal) -> list[str]:
    return [e["kind"] for e in journal.entries()]


def test_a_clean_go_live_puts_every_host_on_the_new_release(
    make_fleet: Callable[..., DemoFleet], approver: Callable[..., None]
) -> None:
    fleet = make_fleet(hosts=3)
    approver(decision("approve", comment="canary looks fine"))

    record = go_live(str(fleet.write_plan("2.0.0")), triggered_by="alice")

    assert set(serving(fleet).values()) == {"2.0.0/2.0.0/ok"}
    assert record["state"] == "completed"
    assert record["triggered_by"] == "alice"
    assert record["hosts"]["web2"]["before"] == "1.0.0"
    assert record["hosts"]["web2"]["after"] == "2.0.0"
    assert record["hosts"]["web2"]["bytes_sent"] < record["hosts"]["web2"]["artifact_bytes"]
    assert [g["kind"] for g in record["gates"]] == ["gate.opened", "gate.decision", "gate.passed"]
    assert record["gates"][1]["comment"] == "canary looks fine"
    journal, on_disk = only_run()
    assert on_disk == record
    assert "shop-web 2.0.0 → demo: COMPLETED" in (journal.run_dir / "report.md").read_text()
    backups = [s for s in record["steps"] if s["stage"] == "backup"]
    assert len(backups) == 3 and all(s["result"]["verified"] for s in backups)


def test_a_smoke_failure_in_the_last_wave_rolls_every_host_back_and_they_answer(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=4, configured=3)  # 3.0.0 fails only on web4, in the last wave
    plan = fleet.write_plan("3.0.0", waves=THREE_WAVES, gates={}, **NO_SOAK)

    with pytest.raises(RunFailed, match="smoke check 'health' failed on host 'web4'") as failed:
        go_live(str(plan))

    assert "Rolled back, last wave first: web3, web4, web2, web1" in str(failed.value)
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    journal, record = only_run()
    restored = [e["host"] for e in journal.of_kind("host.restored") if e["ok"]]
    assert set(restored[:2]) == {"web3", "web4"} and restored[2:] == ["web2", "web1"]
    assert record["state"] == "failed"
    assert record["rollback"]["complete"] is True
    assert {h["rolled_back_to"] for h in record["hosts"].values()} == {"1.0.0"}


def test_a_rejected_gate_stops_the_run_and_rolls_back_the_canary(
    make_fleet: Callable[..., DemoFleet], approver: Callable[..., None]
) -> None:
    fleet = make_fleet(hosts=3)
    approver(decision("reject", comment="error budget is spent this week"))

    with pytest.raises(RunFailed, match="rejected by demo-approver"):
        go_live(str(fleet.write_plan("2.0.0", **NO_SOAK)))

    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    journal, record = only_run()
    assert "wave.started" in kinds(journal)
    assert [w["wave"] for w in journal.of_kind("wave.started")] == ["canary"]
    assert record["rollback"]["hosts"] == {"web1": {"to": "1.0.0", "ok": True, "error": None}}


def test_a_gate_nobody_decides_times_out_and_rolls_back(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    gates = {"go-ahead": {"approvers": ["bob"], "timeout": "2s", "allow_unsigned": True}}

    with pytest.raises(RunFailed, match="gate 'go-ahead' timed out after 2s"):
        go_live(str(fleet.write_plan("2.0.0", gates=gates, **NO_SOAK)))

    journal, _ = only_run()
    assert "gate.timed_out" in kinds(journal)
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}


def test_a_decision_from_someone_not_allowed_is_refused_and_the_gate_keeps_waiting(
    make_fleet: Callable[..., DemoFleet], approver: Callable[..., None]
) -> None:
    fleet = make_fleet(hosts=2)
    approver(decision("approve", approver="mallory"), decision("approve"))

    go_live(str(fleet.write_plan("2.0.0", **NO_SOAK)))

    journal, record = only_run()
    [refused] = list(journal.of_kind("gate.refused"))
    assert refused["claimed"] == "mallory" and "may not decide this gate" in refused["reason"]
    assert record["state"] == "completed"


def test_a_restart_that_fails_during_rollback_is_reported_and_the_other_hosts_are_restored(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=3)
    restart = fleet.template["targets"]["restart"] + ' && test "{name}" != web3'
    targets = fleet.template["targets"] | {"restart": restart}
    plan = fleet.write_plan("2.0.0", targets=targets, waves=THREE_WAVES, gates={}, **NO_SOAK)

    with pytest.raises(RollbackIncomplete, match="web3") as incomplete:
        go_live(str(plan))

    assert set(incomplete.value.failures) == {"web3"}
    assert "exited with code 1" in incomplete.value.failures["web3"]
    assert serving(fleet)["web1"] == serving(fleet)["web2"] == "1.0.0/1.0.0/ok"
    journal, record = only_run()
    assert record["rollback"]["complete"] is False
    assert (fleet.host_dir("web3") / "current").resolve().name == "1.0.0"
    assert prefect_state(journal.run_id) == ("FAILED", "RollbackFailed")
    [undo] = flow_runs_named(f"rollback {journal.run_id}")
    assert (undo.state_type.value, undo.state_name) == ("FAILED", "RollbackFailed")


def test_a_missing_artifact_stops_the_run_before_anything_changes(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0")
    (fleet.root / "artifacts" / "shop-web-2.0.0.tar.gz").unlink()

    # Found when the plan is read, before a run exists.
    with pytest.raises(
        PlanError, match=r"release.artifact: .*shop-web-2\.0\.0\.tar\.gz does not exist"
    ):
        go_live(str(plan))

    assert runs() == []
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}


def test_releases_beyond_keep_releases_are_pruned_after_success(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    fleet = make_fleet(hosts=1)
    targets = fleet.template["targets"] | {"keep_releases": 2}
    for version in ("2.0.0", "2.1.0"):
        go_live(
            str(
                fleet.write_plan(
                    version,
                    targets=targets,
                    gates={},
                    waves=[{"name": "all", "hosts": "100%"}],
                    **NO_SOAK,
                )
            )
        )

    releases = sorted(p.name for p in (fleet.host_dir("web1") / "releases").iterdir())
    assert releases == ["2.0.0", "2.1.0"]


def test_a_canary_soak_over_its_latency_limit_rolls_the_canary_back(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    soak = {"duration": "1s", "interval": "0.2s", "max_p95_ms": 0.001}  # no answer is that fast
    waves = [{"name": "canary", "hosts": 1, "soak": "0.5s"}, {"name": "rest", "hosts": "100%"}]

    closeout = [{"task": "drop the old column", "owner": "dba", "due": "2026-12-20"}]

    with pytest.raises(RunFailed, match=r"soak failed: p95 latency \d+ ms is over the limit"):
        go_live(str(fleet.write_plan("2.0.0", gates={}, waves=waves, soak=soak, closeout=closeout)))

    journal, record = only_run()
    assert [w["wave"] for w in journal.of_kind("wave.started")] == ["canary"]
    assert list(record["rollback"]["hosts"]) == ["web1"]
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    report = (journal.run_dir / "report.md").read_text()
    [watched] = [line for line in report.splitlines() if line.startswith("| canary | failed")]
    assert "(0.001 ms)" in watched and "█" in watched  # every interval over its limit
    assert "| drop the old column | dba | 2026-12-20 |" in report


def drifting_plan(fleet: DemoFleet) -> Path:
    """A plan of 3.0.0, a broken release that rewrites a shared file as it starts."""
    restart = (
        fleet.template["targets"]["restart"] + " && (! grep -q 3.0.0 current/release.json"
        " || echo drifted > shared/override.conf)"
    )
    targets = fleet.template["targets"] | {"restart": restart}
    return fleet.write_plan("3.0.0", targets=targets, gates={}, soak=None, waves=THREE_WAVES[::2])


def settings_of(fleet: DemoFleet) -> dict[str, str]:
    return {
        host: (fleet.host_dir(host) / "shared" / "settings.json").read_text()
        for host in ("web1", "web2")
    }


def assert_files_back(fleet: DemoFleet, settings: dict[str, str]) -> None:
    for host in ("web1", "web2"):
        shared = fleet.host_dir(host) / "shared"
        assert not (shared / "override.conf").exists()
        assert (shared / "settings.json").read_text() == settings[host]
    _, record = only_run()
    restores = [s for s in record["steps"] if s["stage"] == "restore"]
    assert {tuple(s["result"]["files_restored"]) for s in restores} == {("shared",)}


def test_rollback_puts_backed_up_files_back_as_they_were_before_the_run(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    settings = settings_of(fleet)
    plan = drifting_plan(fleet)

    with pytest.raises(RunFailed):
        go_live(str(plan))

    assert_files_back(fleet, settings)


def test_a_backup_changed_on_this_machine_is_restored_from_the_hosts_own_copy(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    settings = settings_of(fleet)
    plan = drifting_plan(fleet)

    def tamper(entry: journal.Entry) -> None:
        if entry["kind"] == "host.switched":
            for copy in RunJournal.find(entry["run_id"]).run_dir.glob("backups/*.tar.*"):
                copy.write_bytes(b"not the backup")

    unsubscribe = journal.subscribe(tamper)
    try:
        with pytest.raises(RunFailed):
            go_live(str(plan))
    finally:
        unsubscribe()

    assert_files_back(fleet, settings)


def test_a_gate_that_passes_on_timeout_lets_the_run_complete(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    gates = {
        "go-ahead": {
            "approvers": ["bob"],
            "timeout": "2s",
            "allow_unsigned": True,
            "on_timeout": "approve",
        }
    }

    record = go_live(str(fleet.write_plan("2.0.0", gates=gates, **NO_SOAK)))

    assert record["state"] == "completed"
    journal, _ = only_run()
    [passed] = list(journal.of_kind("gate.passed"))
    assert (passed["by"], passed["approvers"]) == ("timeout", [])
    assert set(serving(fleet).values()) == {"2.0.0/2.0.0/ok"}


def test_the_record_shows_what_each_host_had_even_when_nothing_was_switched(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0", gates={}, soak=None, waves=[{"name": "all", "hosts": "100%"}])
    go_live(str(plan))

    record = go_live(str(plan))  # the same release again: every host is already there

    assert {h["before"] for h in record["hosts"].values()} == {"2.0.0"}
    assert {h["after"] for h in record["hosts"].values()} == {"2.0.0 (already there)"}


def test_a_run_can_be_rolled_back_after_the_files_its_plan_names_are_gone(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0", gates={}, soak=None, waves=[{"name": "all", "hosts": "100%"}])
    go_live(str(plan))
    (fleet.root / "artifacts" / "shop-web-2.0.0.tar.gz").unlink()
    journal, _ = only_run()

    rollback(journal.run_id, reason="found a problem later")

    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}


def test_an_artifact_swapped_while_the_run_waits_at_its_gate_changes_nothing_it_deploys(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0", soak=None, backups=[])  # canary, gate go-ahead, the rest
    artifact = fleet.root / "artifacts" / "shop-web-2.0.0.tar.gz"
    approved_bytes = hashlib.sha256(artifact.read_bytes()).hexdigest()
    fleet.write_plan("3.0.0")  # a broken release, to swap in
    thread, finished = go_live_in_background(plan)
    run_id = wait_for_gate()

    shutil.copyfile(fleet.root / "artifacts" / "shop-web-3.0.0.tar.gz", artifact)
    decide_gate(RunJournal.find(run_id), "approve", "demo-approver", "", None)
    thread.join(timeout=120)

    assert finished["state"] == "completed"
    assert set(serving(fleet).values()) == {"2.0.0/2.0.0/ok"}
    [run] = runs()
    started = next(run.of_kind("run.started"))
    assert started["inputs"] == {str(artifact): approved_bytes}
    assert not (run.run_dir / "inputs").exists()  # the run's copies went with its end
    assert started["plan_sha256"] != hashlib.sha256(plan.read_bytes()).hexdigest()


def test_a_preflight_failing_on_many_hosts_shows_ten_and_keeps_every_one_in_the_store(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)  # the demo environment, and its artifacts
    hosts = [{"name": "web[01:15]", "vars": {"http_port": 1}}]
    targets = fleet.template["targets"] | {"path": "nowhere", "hosts": hosts}
    plan = fleet.write_plan("2.0.0", targets=targets, gates={}, soak=None, waves=[ALL])

    with pytest.raises(RunFailed) as failed:
        go_live(str(plan))
    message = str(failed.value)
    [journal] = runs()
    [preflight] = journal.of_kind("step.failed")

    assert "host 'web01': deploy directory" in message  # in host order
    assert "host 'web11'" not in message
    assert "… and 5 more; the run store keeps every one" in message
    assert len(preflight["result"]["problems"]) == 15


def test_a_listener_that_fails_does_not_fail_the_step_it_watched(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)

    def broken_display(entry: dict[str, Any]) -> None:
        if entry["kind"] == "host.switched":
            raise RuntimeError("dictionary changed size during iteration")

    unsubscribe = journal.subscribe(broken_display)
    try:
        record = go_live(str(fleet.write_plan("2.0.0", gates={}, soak=None, waves=[ALL])))
    finally:
        unsubscribe()

    assert record["state"] == "completed"
    assert set(serving(fleet).values()) == {"2.0.0/2.0.0/ok"}
