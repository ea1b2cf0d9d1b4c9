"""Backups taken before anything changes, and verified before anything is deployed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from subprocess import DEVNULL, PIPE

from golive.errors import BackupError, describe_os_error
from golive.journal import RunJournal
from golive.plan import FilesBackup, Host, Plan
from golive.releases import GZIP, Archive, HostReleases, suffix_of


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
    problem = _unreadable(archive.path)
    if problem:
        said = problem.strip().splitlines()[-3:]
        raise BackupError(host, f"{archive.path} does not read back: {' '.join(said)}")


def _unreadable(path: Path) -> str:
    """What `tar` (and, for a zstd backup, `zstd`, which checks the checksum at its end) said
    if the archive does not read back whole; "" if it does. zstd is run by name, not left to
    tar to find: tars older than 1.31 cannot."""
    if suffix_of(path) == GZIP:
        listed = subprocess.run(["tar", "-tzf", path], stdout=DEVNULL, stderr=PIPE, text=True)
        return (listed.stderr or f"tar exited {listed.returncode}") if listed.returncode else ""
    with (
        subprocess.Popen(["zstd", "-dcq", "--", path], stdout=PIPE, stderr=PIPE) as unzstd,
        subprocess.Popen(
            ["tar", "-tf", "-"], stdin=unzstd.stdout, stdout=DEVNULL, stderr=PIPE, text=True
        ) as tar,
    ):
        assert unzstd.stdout is not None and unzstd.stderr is not None
        unzstd.stdout.close()  # tar's alone: if tar stops early, zstd is stopped too
        tar_said = tar.communicate()[1]
        zstd_said = unzstd.stderr.read().decode(errors="replace")
    if unzstd.returncode and zstd_said:
        return zstd_said
    if tar.returncode:
        return tar_said or f"tar exited {tar.returncode}"
    return f"zstd exited {unzstd.returncode}" if unzstd.returncode else ""
