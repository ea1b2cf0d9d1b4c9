"""Rehearsals: the plan run on its own rehearsal environment, gates answered by its policy,
ending with a timed rollback drill; and the evidence a plan may demand before it runs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from flows.golive import go_live
from golive.demo.fleet import BROKEN_VERSION, DemoFleet
from golive.errors import NoRehearsal, RunFailed
from tests.conftest import decision
from tests.flows.test_golive import serving
from tests.golive.test_cli import golive
from tests.runstore import runs

NO_SOAK = {"soak": None, "backups": []}


def fleets(make_fleet: Callable[..., DemoFleet]) -> tuple[DemoFleet, DemoFleet]:
    """The plan's hosts, and a rehearsal environment's hosts of its own."""
    return make_fleet(hosts=2), make_fleet(hosts=2, folder="rehearsal-hosts")


def test_a_rehearsal_runs_on_its_own_hosts_passes_gates_by_policy_and_ends_with_a_rollback_drill(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet, stage = fleets(make_fleet)
    plan = fleet.write_plan("2.0.0", rehearsal=fleet.rehearsal_on(stage), **NO_SOAK)

    done = golive("run", str(plan), "--rehearsal", "--as", "nightly")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Rehearsal passed" in done.stdout and "rollback drill" in done.stdout
    assert set(serving(stage).values()) == {"1.0.0/1.0.0/ok"}  # deployed, then rolled back
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}  # never touched
    [run] = runs()
    entries = run.entries()
    started = entries[0]
    assert started["environment"] == "demo-rehearsal" and started["rehearsal"]["of"] == "demo"
    assert started["fleet"] == ["web1", "web2"]
    deployed = {e["host"] for e in entries if e["kind"] == "host.switched"}
    assert deployed == {"web1", "web2"}
    [passed] = [e for e in entries if e["kind"] == "gate.passed"]
    assert (passed["by"], passed["approvers"]) == ("rehearsal policy", [])
    assert not [e for e in entries if e["kind"] == "gate.decision"]  # no person decided
    [result] = [e for e in entries if e["kind"] == "rehearsal.finished"]
    assert result["passed"] and result["rollback_complete"]
    assert result["rollback_seconds"] > 0 and result["digest"] == started["release_sha256"]
    assert {"preflight", "deploy", "smoke"} <= set(result["stages"])
    assert entries[-1]["state"] == "completed"


def test_a_rehearsal_that_fails_is_rolled_back_and_recorded_as_failed(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet, stage = fleets(make_fleet)
    plan = fleet.write_plan(BROKEN_VERSION, rehearsal=fleet.rehearsal_on(stage), **NO_SOAK)

    done = golive("run", str(plan), "--rehearsal")

    assert done.returncode == 1
    assert set(serving(stage).values()) == {"1.0.0/1.0.0/ok"}
    [run] = runs()
    [result] = list(run.of_kind("rehearsal.finished"))
    assert not result["passed"] and result["rollback_complete"] and result["rollback_seconds"]
    assert "smoke" in result["reason"] or "failed" in result["reason"]


def test_a_run_that_demands_rehearsal_evidence_is_refused_without_it_and_goes_on_with_it(
    make_fleet: Callable[..., DemoFleet], approver: Callable[..., None]
) -> None:
    fleet, stage = fleets(make_fleet)
    rehearsal = fleet.rehearsal_on(stage) | {"required_within": "7d"}
    plan = str(fleet.write_plan("2.0.0", rehearsal=rehearsal, **NO_SOAK))

    with pytest.raises(NoRehearsal, match=f"Rehearse it first: golive run {plan} --rehearsal"):
        go_live(plan)
    failed_rehearsal = fleet.write_plan(BROKEN_VERSION, rehearsal=rehearsal, **NO_SOAK)
    with pytest.raises(RunFailed):
        go_live(str(failed_rehearsal), rehearsal=True)
    with pytest.raises(NoRehearsal):  # a failed rehearsal of another release proves nothing
        go_live(plan)
    go_live(plan, rehearsal=True)
    approver(decision("approve"))
    record = go_live(plan)

    assert isinstance(record, dict) and record["state"] == "completed"
    refused, _, refused_again, rehearsed, released = runs()
    for run in (refused, refused_again):
        [finished] = list(run.of_kind("run.finished"))
        assert finished["state"] == "refused" and "passing rehearsal" in finished["reason"]
    [opened] = list(released.of_kind("gate.opened"))
    assert "**Latest rehearsal of this plan:** passed" in opened["brief"]
    assert f"(run {rehearsed.run_id[:8]})" in opened["brief"]
    assert set(serving(fleet).values()) == {"2.0.0/2.0.0/ok"}


def test_a_rehearsal_of_a_plan_without_a_rehearsal_section_is_refused(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    plan = make_fleet(hosts=2).write_plan("2.0.0", rehearsal=None, **NO_SOAK)
    done = golive("run", str(plan), "--rehearsal")
    assert done.returncode == 2 and "the plan has no `rehearsal:` section" in done.stderr
    assert runs() == []
