"""A go-live's stages as its store records them done, so that a run can come back.

A deployment run suspended at a gate ends its process; when a decision (or the gate's
deadline) resumes it, a worker starts the same flow run again from the top. It finds itself
in the store, takes back its lease, reads its plan from its first entry (and its files from
the copies it made at its start) and goes through the runbook again, skipping every stage the
store says is done, to the gate it waits at.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from golive.errors import PreflightError
from golive.journal import Entry, RunJournal
from golive.lease import holder
from golive.manifest import sha256_of
from golive.planfile import PlanFile
from golive.record import stored_plan
from golive.registry import environment
from golive.waves import resolve_waves

P = ParamSpec("P")
T = TypeVar("T")


class Runbook:
    """The stages of a run done so far: each is done once, however often the run comes back."""

    def __init__(self, journal: RunJournal) -> None:
        self.journal = journal
        self.done = [str(e["stage"]) for e in journal.of_kind("stage.done")]

    def once(self, stage: str, act: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
        """Do the stage, unless the run did it before it was suspended; None when skipped."""
        if stage in self.done:
            return None
        result = act(*args, **kwargs)
        self.journal.write("stage.done", stage=stage)
        self.done.append(stage)
        return result


def suspended_run(run_id: str) -> tuple[PlanFile, RunJournal] | None:
    """The run, when this process takes it up again after a gate suspended it: the plan as it
    started, from the store. None for a run starting now."""
    journal = RunJournal.create(run_id)
    entries = journal.entries()
    kinds = {e["kind"] for e in entries}
    if "gate.suspended" not in kinds or "run.finished" in kinds:
        return None
    return _started_plan(entries), journal


def come_back(plan_file: PlanFile, journal: RunJournal) -> None:
    """Record the run's return, once it holds its environment again; its copies of the plan's
    files must be here, as they were (a worker on another machine does not have them)."""
    started = next(journal.of_kind("run.started"))
    plan = plan_file.plan
    copies = [plan.release.artifact, *(m.sql for m in plan.migrations)]
    if not all(path.is_file() for path in copies) or {sha256_of(path) for path in copies} != set(
        started["inputs"].values()
    ):
        raise PreflightError(
            [
                f"the run's copies of its artifact and SQL files are not on this machine as "
                f"they were at its start ({journal.run_dir}); a suspended run comes back on a "
                f"worker that shares its GOLIVE_HOME"
            ]
        )
    suspended = list(journal.of_kind("gate.suspended"))[-1]
    runbook = Runbook(journal)
    journal.write("run.resumed", gate=suspended["gate"], holder=holder(), done=runbook.done)


def _started_plan(entries: list[Entry]) -> PlanFile:
    started = entries[0]
    plan = stored_plan(entries)
    waves, _ = resolve_waves(plan.waves, plan.host_names())
    return PlanFile(
        plan,
        Path(started["plan_path"]),
        started["plan_sha256"],
        tuple(waves),
        environment(plan.environment),
        inputs=started["inputs"],
        release_digest=started["release_sha256"],
    )
