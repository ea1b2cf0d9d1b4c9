"""A host's deploy directory, driven through a Shell:

    <deploy dir>/releases/<version>/   one directory per release, with its manifest
    <deploy dir>/current               symlink to releases/<version>

A release is assembled in releases/.<version>.partial and renamed into place, and `current`
is replaced by rename(2) (`mv -T`), so neither is ever seen half-written. The host needs a
POSIX shell, GNU coreutils and tar.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from shlex import quote

from golive.errors import DeployError, HostCommandError
from golive.manifest import MANIFEST_NAME, Manifest, parse_sums, sha256_of, write_changes
from golive.plan import Host
from golive.shell import Shell

QUICK = 60.0  # seconds allowed for golive's own bookkeeping commands
_HASH_FILES = f"find . -type f ! -name {MANIFEST_NAME} -print0 | xargs -0 -r sha256sum"


@dataclass(frozen=True)
class HostCheck:
    host: str
    problems: list[str]
    free_bytes: int


@dataclass(frozen=True)
class Archive:
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class Transfer:
    """How a release reached a host: bytes sent against the artifact's size, and why."""

    mode: str  # "full" or "incremental"
    bytes_sent: int
    artifact_bytes: int
    reason: str


class HostReleases:
    def __init__(self, host: Host, shell: Shell, directory: str) -> None:
        self.host = host
        self.shell = shell
        self.directory = directory
        self.releases = f"{directory}/releases"

    def check(self, needed_bytes: int) -> HostCheck:
        d = quote(self.directory)
        output = self.shell.run(
            f"if [ ! -d {d} ]; then echo missing; elif [ ! -w {d} ]; then echo readonly; "
            f"else df -Pk {d} | awk 'NR==2 {{print $4}}'; fi",
            QUICK,
        ).strip()
        if output == "missing":
            return HostCheck(
                self.host.name, [f"deploy directory {self.directory} does not exist"], 0
            )
        if output == "readonly":
            return HostCheck(
                self.host.name, [f"deploy directory {self.directory} is not writable"], 0
            )
        free = int(output) * 1024
        problems = []
        if free < needed_bytes:
            problems.append(
                f"{free // 2**20} MiB free in {self.directory}, {needed_bytes // 2**20} MiB needed"
            )
        return HostCheck(self.host.name, problems, free)

    def current_release(self) -> str | None:
        link = quote(f"{self.directory}/current")
        target = self.shell.run(f"readlink {link} || true", QUICK).strip()
        return target.rsplit("/", 1)[-1] if target else None

    def put_release(self, manifest: Manifest, version: str) -> Transfer:
        """Assemble releases/<version> from what the host has and what it lacks, and check
        every file of it against the artifact."""
        current = self.current_release()
        on_host, reason = self._inventory(current, manifest)
        with tempfile.TemporaryDirectory(prefix="golive-") as scratch:
            upload, stale = manifest.artifact, Path(scratch) / "stale"
            if on_host is None:
                stale.write_bytes(b"")
            else:
                changed = manifest.changed_from(on_host)
                upload = Path(scratch) / "changes.tar.gz"
                write_changes(manifest, changed, upload)
                gone = [p for p in on_host if p not in manifest.files or p in changed]
                stale.write_bytes(b"".join(p.encode() + b"\0" for p in gone))
            staging = f"{self.releases}/.{version}"
            self.shell.run(f"mkdir -p {quote(self.releases)}", QUICK)
            self.shell.put(upload, f"{staging}.upload.tar.gz")
            self.shell.put(stale, f"{staging}.stale")
            sent = upload.stat().st_size + stale.stat().st_size
        linked_from = current if on_host is not None else None
        self._verify(version, manifest, self._assemble(version, linked_from))
        mode = "full" if on_host is None else "incremental"
        return Transfer(mode, sent, manifest.artifact_bytes, reason)

    def _inventory(
        self, current: str | None, manifest: Manifest
    ) -> tuple[dict[str, str] | None, str]:
        """What the current release holds (path -> sha256), or None when a full copy is due."""
        if not current:
            return None, "no release on the host yet"
        release = quote(f"{self.releases}/{current}")
        output = self.shell.run(
            f"cd {release} && {_HASH_FILES} && echo --recorded-- && "
            f"(cat {MANIFEST_NAME} 2>/dev/null || true)",
            QUICK,
        )
        actual_sums, _, recorded_sums = output.partition("--recorded--\n")
        actual, recorded = parse_sums(actual_sums), parse_sums(recorded_sums)
        if not recorded:
            return None, f"release {current} on the host has no manifest"
        damaged = sorted(set(recorded.items()) ^ set(actual.items()))
        if damaged:
            return None, (
                f"release {current} on the host does not match its manifest "
                f"({len({p for p, _ in damaged})} file(s) differ, e.g. {damaged[0][0]})"
            )
        changed = len(manifest.changed_from(actual))
        return actual, f"{changed} of {len(manifest.files)} files changed"

    def _assemble(self, version: str, linked_from: str | None) -> dict[str, str]:
        """Build .<version>.partial, hash it on the host, rename it into place."""
        v, staging = quote(version), quote(f".{version}")
        link_step = f"cp -al {quote(linked_from)}/. {staging}.partial/ && " if linked_from else ""
        script = (
            f"cd {quote(self.releases)} && rm -rf {staging}.partial && mkdir {staging}.partial && "
            f"{link_step}"
            f"cd {staging}.partial && xargs -0 -r rm -f -- < ../{staging}.stale && "
            f"tar xzf ../{staging}.upload.tar.gz && rm -f {MANIFEST_NAME} && "
            f"{_HASH_FILES} > ../{staging}.sums && mv ../{staging}.sums {MANIFEST_NAME} && "
            f"cd .. && rm -f {staging}.upload.tar.gz {staging}.stale && "
            f"rm -rf {v} && mv {staging}.partial {v} && touch {v} && cat {v}/{MANIFEST_NAME}"
        )
        try:
            return parse_sums(self.shell.run(script, QUICK * 5))
        except HostCommandError as error:
            self.shell.run(f"rm -rf {quote(self.releases)}/{staging}.*", QUICK)
            raise DeployError(self.host.name, f"unpack release {version}", str(error)) from error

    def _verify(self, version: str, manifest: Manifest, on_host: dict[str, str]) -> None:
        expected = {path: entry.sha256 for path, entry in manifest.files.items()}
        wrong = sorted(set(expected.items()) ^ set(on_host.items()))
        if wrong:
            self.shell.run(f"rm -rf {quote(f'{self.releases}/{version}')}", QUICK)
            raise DeployError(
                self.host.name,
                f"verify release {version}",
                f"{len({p for p, _ in wrong})} file(s) differ from the artifact, "
                f"e.g. {wrong[0][0]}; the release was removed",
            )

    def switch(self, version: str | None) -> None:
        d = quote(self.directory)
        if version is None:
            self.shell.run(f"rm -f {d}/current", QUICK)
            return
        target = quote(f"releases/{version}")
        temp = quote(f".current.{version}.tmp")
        try:
            self.shell.run(
                f"cd {d} && test -d {target} && ln -sfn {target} {temp} && mv -T {temp} current",
                QUICK,
            )
        except HostCommandError as error:
            raise DeployError(
                self.host.name,
                f"switch to {version}",
                "that release is not there" if error.exit_code == 1 else str(error),
            ) from error

    def run(self, command: str, timeout: float) -> str:
        """Run a plan's command in the deploy directory, with the host's name in its env."""
        exports = (
            f"export GOLIVE_HOST={quote(self.host.name)} GOLIVE_DEPLOY_DIR={quote(self.directory)}"
        )
        try:
            return self.shell.run(f"cd {quote(self.directory)} && {exports} && {command}", timeout)
        except HostCommandError as error:  # name the plan's command, not golive's wrapping
            raise HostCommandError(
                self.host.name, command, error.exit_code, "\n".join(error.output_tail), error.reason
            ) from None

    def archive(self, paths: list[str], destination: Path) -> Archive:
        """Pack the given paths (those that exist) on the host and bring the archive here."""
        remote = f"{self.directory}/.golive-backup-{destination.stem}.tar.gz"
        names = " ".join(quote(p) for p in paths)
        self.shell.run(
            f"cd {quote(self.directory)} && existing=$(for p in {names}; do "
            f'[ -e "$p" ] && echo "$p"; done; true) && '
            f"tar czhf {quote(remote)} -T /dev/null $existing",
            QUICK * 5,
        )
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.shell.get(remote, destination)
        finally:
            self.shell.run(f"rm -f {quote(remote)}", QUICK)
        return Archive(destination, sha256_of(destination), destination.stat().st_size)

    def prune(self, keep: int) -> list[str]:
        """Remove all but the newest `keep` releases, never the current one."""
        current = self.current_release() or ""
        listing = self.shell.run(f"cd {quote(self.releases)} && ls -1t", QUICK).split()
        doomed = [name for name in listing[keep:] if name != current]
        if doomed:
            names = " ".join(quote(n) for n in doomed)
            self.shell.run(f"cd {quote(self.releases)} && rm -rf -- {names}", QUICK)
        return doomed
