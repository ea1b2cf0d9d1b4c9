"""What a release artifact holds, file by file, and what a host lacks of it.

A manifest lists every regular file of an artifact with its size and sha256. Deploying to a
host that already runs a release sends only the files whose hash differs from what is on the
host; the rest are hard-linked from the host's current release. Once assembled, the host hashes
the new release itself, and golive compares that with the artifact before switching to it.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import shutil
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

# Each release on a host keeps `sha256sum` output for its files, written by the host itself.
MANIFEST_NAME = ".golive-sha256sums"


class UnsafeArtifact(ValueError):
    pass


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    artifact: Path
    files: dict[str, FileEntry]
    artifact_bytes: int

    def changed_from(self, on_host: dict[str, str]) -> list[str]:
        """Files whose content on the host (path -> sha256) differs from this release's."""
        return [path for path, entry in self.files.items() if on_host.get(path) != entry.sha256]

    def worth_sending_whole(self, changed: list[str]) -> bool:
        """When most of the content changed, the artifact as built is the cheaper thing to send."""
        changed_bytes = sum(self.files[path].size for path in changed)
        return changed_bytes > 0.5 * sum(entry.size for entry in self.files.values())


def manifest_of(artifact: Path) -> Manifest:
    stat = artifact.stat()
    return _manifest(artifact.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _manifest(artifact: Path, mtime_ns: int, size: int) -> Manifest:
    files = {}
    with tarfile.open(artifact) as tar:
        for member in tar:
            path = member_path(member)
            if member.isfile():
                content = tar.extractfile(member)
                assert content is not None
                files[path] = FileEntry(member.size, _digest(content))
    return Manifest(artifact, files, size)


def member_path(member: tarfile.TarInfo) -> str:
    """A member's path inside the release, refusing any that would land outside it."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        raise UnsafeArtifact(f"member {member.name!r} would land outside the release directory")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        if target.is_absolute() or ".." in target.parts:
            raise UnsafeArtifact(f"link {member.name!r} points outside the release: {target}")
    return str(path)


def sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return _digest(file)


def _digest(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def parse_sums(output: str) -> dict[str, str]:
    """path -> sha256 from `sha256sum` output over ./-relative paths."""
    sums = {}
    for line in output.splitlines():
        digest, _, path = line.partition("  ")
        if path:
            sums[path.removeprefix("./")] = digest
    return sums


def changes_tarball(manifest: Manifest, changed: list[str]) -> Path:
    """A tarball of the changed files, plus every directory and link (they cost nothing).
    Hosts on the same release lack the same files, so each distinct set is built once."""
    key = hashlib.sha256("\0".join([str(manifest.artifact), *sorted(changed)]).encode())
    with _building:
        destination = _scratch() / f"changes-{key.hexdigest()[:24]}.tar.gz"
        if (
            not destination.exists()
            or destination.stat().st_mtime < manifest.artifact.stat().st_mtime
        ):
            _write_changes(manifest, set(changed), destination)
    return destination


_building = threading.Lock()
_scratch_dir: list[Path] = []


def _scratch() -> Path:
    """This process's own folder for built tarballs (mkdtemp: 0700, an unpredictable name),
    removed when it exits. A shared /tmp name could be planted by anyone on the machine."""
    if not _scratch_dir:
        _scratch_dir.append(Path(tempfile.mkdtemp(prefix="golive-changes-")))
        atexit.register(shutil.rmtree, _scratch_dir[0], ignore_errors=True)
    return _scratch_dir[0]


def _write_changes(manifest: Manifest, wanted: set[str], destination: Path) -> None:
    partial = destination.with_suffix(".partial")
    # Level 1: most of an artifact is compressed already, and hosts wait for this.
    with (
        tarfile.open(manifest.artifact) as source,
        tarfile.open(partial, "w:gz", compresslevel=1) as out,
    ):
        for member in source:
            if member.isfile() and member_path(member) not in wanted:
                continue
            out.addfile(member, source.extractfile(member) if member.isfile() else None)
    partial.rename(destination)
