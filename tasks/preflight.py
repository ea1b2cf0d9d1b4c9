"""Preflight: is everything ready before anything changes?"""

from __future__ import annotations

import tarfile

from golive.errors import HostCommandError, HostUnreachable, PreflightError
from golive.journal import RunJournal
from golive.manifest import UnsafeArtifact, manifest_of
from golive.plan import Host, Plan
from golive.transport import connect, resolve_blocks
from tasks.backups import backup_paths, fetch_backup
from tasks.hosts import on_every_host

# A release needs room for itself unpacked, plus the backup taken of the one it replaces.
DISK_HEADROOM = 2


def preflight(plan: Plan, journal: RunJournal) -> Plan:
    """Check the artifact and every host, and back up each host as soon as it passes; change
    nothing (the freeze calendar was checked before the run started). Raises PreflightError
    listing every problem (a failed backup is one). Returns the plan with hosts named by
    block filled in from their blocks."""
    with journal.step("preflight") as result:
        plan, failures = resolve_blocks(plan)
        unpacked, artifact_problem = _artifact_size(plan)
        failures += [artifact_problem] if artifact_problem else []
        checks, errors = on_every_host(
            "prepare",
            prepare_host,
            plan,
            plan.host_names(),
            needed_bytes=unpacked * DISK_HEADROOM,
            back_up=not failures,
            journal=journal,
        )
        failures += [str(error) for error in errors.values()]
        failures += [f"host {name!r}: {problem}" for name, ps in checks.items() for problem in ps]
        if failures:
            result["problems"] = failures  # all of them, however many the message shows
            raise PreflightError(failures)
        result |= {"hosts": len(checks), "artifact_bytes": unpacked}
    return plan


def hosts_of(plan: Plan) -> Plan:
    """The plan with hosts named by block filled in, for a run that did its preflight before
    it was suspended: a block removed since is a preflight error."""
    plan, problems = resolve_blocks(plan)
    if problems:
        raise PreflightError(problems)
    return plan


def prepare_host(
    plan: Plan, host: Host, needed_bytes: int, back_up: bool, journal: RunJournal
) -> list[str]:
    """Reach the host and look at its deploy directory (exists, writable, room enough); if all
    is well, back it up and verify the backup. Returns the host's problems."""
    paths = backup_paths(plan) if back_up else None
    try:
        releases = connect(plan, host, journal.run_id)
        keep = plan.targets.keep_releases
        problems = releases.check(needed_bytes, paths, keep_as=journal.run_id, keep=keep).problems
    except (HostUnreachable, HostCommandError) as error:
        return [str(error).removeprefix(f"on host {host.name!r}, ")]
    if paths and not problems:
        fetch_backup(host, releases, journal)
    return problems


def _artifact_size(plan: Plan) -> tuple[int, str | None]:
    artifact = plan.release.artifact
    try:
        return sum(entry.size for entry in manifest_of(artifact).files.values()), None
    except FileNotFoundError:
        return 0, f"release artifact {artifact} does not exist; build it or fix release.artifact"
    except UnsafeArtifact as error:
        return 0, f"release artifact {artifact} is refused: {error}"
    except (OSError, tarfile.TarError) as error:
        return 0, f"release artifact {artifact} is not a readable tarball: {error}"
