"""Rehearsals, and the evidence they leave.

A rehearsal (`golive run PLAN --rehearsal`, or the scheduled deployment) runs the plan on the
environment, hosts and databases its `rehearsal:` section names, answers its gates by the
section's policy, and ends with a rollback drill: the rehearsal environment rolled back,
checked, and timed. Its result (`rehearsal.finished`) holds the plan's release digest (the
plan file, the artifact and every SQL file: what the rehearsal proves, wherever it ran),
pass or fail, each stage's duration and the rollback's. A plan whose section says
`required_within: 7d` runs only with a passing rehearsal of that very digest that recent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from golive.errors import PlanError, Problem, StoreError
from golive.journal import Entry, run_store
from golive.planfile import PlanFile
from golive.registry import environment
from golive.waves import resolve_waves


def rehearsal_of(plan_file: PlanFile) -> PlanFile:
    """The plan file as its rehearsal runs it: its environment (and that environment's rules),
    its hosts and databases; the same release, waves and checks."""
    plan = plan_file.plan
    if plan.rehearsal is None:
        raise PlanError(
            str(plan_file.path),
            [
                Problem(
                    "rehearsal",
                    "the plan has no rehearsal section; accepted: `rehearsal:` with its own "
                    "environment, targets and databases",
                )
            ],
        )
    rehearsed = plan.rehearsed()
    waves, _ = resolve_waves(rehearsed.waves, rehearsed.host_names())
    registered = environment(rehearsed.environment)
    return replace(plan_file, plan=rehearsed, waves=tuple(waves), environment=registered)


def rehearsal_record(plan_file: PlanFile, rehearsed: str) -> dict[str, str]:
    """What a rehearsal run records, first: what it proves (the release digest), of which
    environment's plan, and how its gates are answered."""
    assert plan_file.plan.rehearsal is not None
    return {
        "digest": plan_file.release_digest,
        "of": rehearsed,
        "gates": plan_file.plan.rehearsal.gates,
    }


def stage_seconds(entries: list[Entry]) -> dict[str, float]:
    """Each stage's wall time: from its first step's start to its last step's end (the hosts
    of a stage run side by side)."""
    spans: dict[str, list[datetime]] = {}
    for entry in entries:
        if entry["kind"] in ("step.started", "step.finished", "step.failed"):
            spans.setdefault(entry["stage"], []).append(datetime.fromisoformat(entry["at"]))
    return {stage: round((max(at) - min(at)).total_seconds(), 3) for stage, at in spans.items()}


def rollback_seconds(entries: list[Entry]) -> tuple[float | None, bool]:
    """How long the run's last rollback took, and whether it put everything back."""
    started = [e for e in entries if e["kind"] == "rollback.started"]
    finished = [e for e in entries if e["kind"] == "rollback.finished"]
    if not started or not finished:
        return None, False
    took = datetime.fromisoformat(finished[-1]["at"]) - datetime.fromisoformat(started[-1]["at"])
    return round(took.total_seconds(), 3), bool(finished[-1]["complete"])


def result(entries: list[Entry], passed: bool, reason: str | None = None) -> dict[str, Any]:
    """The `rehearsal.finished` entry's fields for a rehearsal run's entries."""
    started = entries[0]
    seconds, complete = rollback_seconds(entries)
    if passed and not complete:
        passed, reason = False, "the rollback drill did not put every host back"
    return {
        "digest": started["rehearsal"]["digest"],
        "of": started["rehearsal"]["of"],
        "passed": passed,
        "stages": stage_seconds(entries),
        "rollback_seconds": seconds,
        "rollback_complete": complete,
        "reason": reason,
    }


@dataclass(frozen=True)
class Evidence:
    """A rehearsal of a plan, as its result recorded it."""

    run_id: str
    at: str
    passed: bool
    rollback_seconds: float | None
    environment: str

    def told(self) -> str:
        outcome = "passed" if self.passed else "FAILED"
        drill = f", rollback drill {self.rollback_seconds:g} s" if self.rollback_seconds else ""
        return (
            f"{outcome} {self.at[:16].replace('T', ' ')} UTC on {self.environment}{drill} "
            f"(run {self.run_id[:8]})"
        )


def latest_rehearsal(
    digest: str, environment_name: str, since: datetime | None = None, passed: bool = False
) -> Evidence | None:
    """The newest rehearsal of this release digest on the environment (since `since`; only
    passing ones with `passed`)."""
    try:
        store = run_store()
    except StoreError as error:
        if error.reason.startswith("there is no run store"):
            return None  # no run yet, so no rehearsal either
        raise
    for row in store.run_rows():  # newest first
        if row.environment != environment_name:
            continue
        if since is not None and datetime.fromisoformat(row.started_at) < since:
            break
        for stored in reversed(store.entries(row.run_id)):
            if stored.kind != "rehearsal.finished":
                continue
            found = stored.fields()
            if found["digest"] == digest and (found["passed"] or not passed):
                return Evidence(
                    row.run_id,
                    stored.at,
                    found["passed"],
                    found["rollback_seconds"],
                    environment_name,
                )
            break
    return None


def missing_evidence(plan_file: PlanFile) -> str | None:
    """Why this run may not start for want of a passing rehearsal of its plan, if it may not."""
    plan = plan_file.plan
    rehearsal = plan.rehearsal
    if rehearsal is None or rehearsal.required_within is None:
        return None
    since = datetime.now(UTC) - timedelta(seconds=rehearsal.required_within)
    found = latest_rehearsal(plan_file.release_digest, rehearsal.environment, since, passed=True)
    if found is not None:
        return None
    days = rehearsal.required_within / 86400
    return (
        f"the plan asks for a passing rehearsal of this very plan, artifact and SQL (release "
        f"digest {plan_file.release_digest[:12]}) on {rehearsal.environment!r} within "
        f"{days:g} day(s), and there is none since {since.isoformat(timespec='minutes')}. "
        f"Rehearse it first: golive run {plan_file.path} --rehearsal"
    )
