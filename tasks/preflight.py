"""Preflight: is everything ready before anything changes?"""

from __future__ import annotations

import tarfile
from datetime import date

from prefect import task
from prefect.cache_policies import NO_CACHE

from golive.errors import PreflightError
from golive.journal import RunJournal
from golive.plan import Plan
from golive.transport import connect

# A release needs room for itself unpacked, plus the backup taken of the one it replaces.
DISK_HEADROOM = 2


@task(name="preflight", cache_policy=NO_CACHE)
def preflight(plan: Plan, journal: RunJournal) -> dict[str, object]:
    """Check the artifact, every host and the freeze calendar; change nothing."""
    with journal.step("preflight") as result:
        failures = _freeze_problems(plan, date.today())
        unpacked, artifact_problem = _artifact_size(plan)
        failures += [artifact_problem] if artifact_problem else []
        checks = [
            connect(plan, host).check(unpacked * DISK_HEADROOM) for host in plan.targets.hosts
        ]
        failures += [f"host {c.host!r}: {p}" for c in checks for p in c.problems]
        if failures:
            raise PreflightError(failures)
        result |= {"hosts": len(checks), "artifact_bytes": unpacked}
    return result


def _artifact_size(plan: Plan) -> tuple[int, str | None]:
    artifact = plan.release.artifact
    try:
        with tarfile.open(artifact) as tar:
            return sum(member.size for member in tar.getmembers()), None
    except FileNotFoundError:
        return 0, f"release artifact {artifact} does not exist; build it or fix release.artifact"
    except (OSError, tarfile.TarError) as error:
        return 0, f"release artifact {artifact} is not a readable tarball: {error}"


def _freeze_problems(plan: Plan, today: date) -> list[str]:
    return [
        f"{today} is inside the change freeze {f.starts}..{f.ends} ({f.reason})"
        for f in plan.freeze
        if f.starts <= today <= f.ends
    ]
