"""Backups taken before anything changes, and verified before anything is deployed."""

from __future__ import annotations

import tarfile

from prefect import task
from prefect.cache_policies import NO_CACHE

from golive.errors import BackupError
from golive.journal import RunJournal
from golive.manifest import sha256_of
from golive.plan import Host, Plan
from golive.releases import Archive
from golive.transport import connect


@task(name="back up host", task_run_name="back up {host.name}", cache_policy=NO_CACHE)
def back_up_host(plan: Plan, host: Host, journal: RunJournal) -> dict[str, object]:
    """Archive the host's current release and the plan's backup paths, then verify the archive."""
    paths = ["current", *(path for backup in plan.backups for path in backup.paths)]
    with journal.step("backup", host=host.name) as result:
        destination = journal.run_dir / "backups" / f"{host.name}.tar.gz"
        try:
            archive = connect(plan, host, journal.run_id).archive(paths, destination)
        except (OSError, tarfile.TarError) as error:
            raise BackupError(host.name, f"could not write {destination}: {error}") from error
        verify(host.name, archive)
        result |= {
            "archive": str(archive.path),
            "sha256": archive.sha256,
            "bytes": archive.size,
            "paths": paths,
            "verified": True,
        }
    return result


def verify(host: str, archive: Archive) -> None:
    """A backup counts only if it reads back whole: same checksum, every member listable."""
    if sha256_of(archive.path) != archive.sha256:
        raise BackupError(host, f"{archive.path} changed after it was written (sha256 mismatch)")
    try:
        with tarfile.open(archive.path) as tar:
            tar.getmembers()
    except (OSError, tarfile.TarError) as error:
        raise BackupError(host, f"{archive.path} does not read back: {error}") from error
