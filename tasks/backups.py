"""Backups taken before anything changes, and verified before anything is deployed."""

from __future__ import annotations

import subprocess

from golive.errors import BackupError, describe_os_error
from golive.journal import RunJournal
from golive.plan import FilesBackup, Host, Plan
from golive.releases import Archive, HostReleases


def backup_paths(plan: Plan) -> list[str]:
    """What each host's backup holds: its current release and the plan's backup paths."""
    files = [b for b in plan.backups if isinstance(b, FilesBackup)]
    return ["current", *(path for backup in files for path in backup.paths)]


def fetch_backup(host: Host, releases: HostReleases, journal: RunJournal) -> dict[str, object]:
    """Bring the backup the host packed during its check here, and verify it; the host keeps
    its copy, for a rollback from another machine."""
    with journal.step("backup", host=host.name) as result:
        stem = journal.run_dir / "backups" / host.name
        try:
            archive = releases.fetch_backup(stem, keep_as=journal.run_id)
        except OSError as error:
            reason = describe_os_error(error, f"fetching the backup into {stem.parent}")
            raise BackupError(host.name, reason) from error
        verify(host.name, archive)
        result |= {
            "archive": str(archive.path),
            "sha256": archive.sha256,
            "bytes": archive.size,
            "verified": True,
        }
    return result


def verify(host: str, archive: Archive) -> None:
    """A backup counts only if it reads back whole: every member listed by `tar`, which
    checks gzip's CRC or zstd's checksum. Its sha256, taken as it arrived, is checked again
    before a rollback uses it. (Listed in a process of its own: Python's gzip and tarfile
    hold the GIL, and made verifying 200 hosts' backups at once the slowest part of their
    preflight.)"""
    listed = subprocess.run(
        ["tar", "-tf", str(archive.path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if listed.returncode != 0:
        said = listed.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise BackupError(host, f"{archive.path} does not read back: {' '.join(said)}")
