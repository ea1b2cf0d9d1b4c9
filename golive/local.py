"""The local transport: a host is a directory on this machine (the embedded default)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from golive.errors import DeployError, HostCommandError
from golive.plan import Host
from golive.transport import Archive, HostCheck


class LocalTransport:
    def __init__(self, host: Host, directory: Path) -> None:
        self.host = host
        self.directory = directory
        self.releases = directory / "releases"
        self.current = directory / "current"

    def check(self, needed_bytes: int) -> HostCheck:
        if not self.directory.is_dir():
            return HostCheck(self.host.name, [f"host directory {self.directory} does not exist"], 0)
        problems = []
        if not os.access(self.directory, os.W_OK):
            problems.append(f"host directory {self.directory} is not writable")
        free = shutil.disk_usage(self.directory).free
        if free < needed_bytes:
            problems.append(
                f"{free // 2**20} MiB free in {self.directory}, {needed_bytes // 2**20} MiB needed"
            )
        return HostCheck(self.host.name, problems, free)

    def current_release(self) -> str | None:
        try:
            return Path(os.readlink(self.current)).name
        except FileNotFoundError:
            return None

    def put_release(self, artifact: Path, version: str) -> int:
        partial = self.releases / f".{version}.partial"
        final = self.releases / version
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            with tarfile.open(artifact) as tar:
                tar.extractall(partial, filter="data")
        except (OSError, tarfile.TarError) as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise DeployError(self.host.name, f"unpack {artifact.name}", str(error)) from error
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        os.utime(final)  # prune() keeps the newest releases by this time
        return artifact.stat().st_size

    def switch(self, version: str | None) -> None:
        if version is None:
            self.current.unlink(missing_ok=True)
            return
        if not (self.releases / version).is_dir():
            raise DeployError(self.host.name, f"switch to {version}", "that release is not there")
        link = self.directory / f".current.{os.getpid()}.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(Path("releases") / version)
        os.replace(link, self.current)

    def run(self, command: str, timeout: float) -> str:
        env = os.environ | {"GOLIVE_HOST": self.host.name, "GOLIVE_DEPLOY_DIR": str(self.directory)}
        try:
            done = subprocess.run(
                command,
                shell=True,
                cwd=self.directory,
                env=env,
                timeout=timeout,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        except subprocess.TimeoutExpired as expired:
            output = expired.output if isinstance(expired.output, str) else ""
            raise HostCommandError(
                self.host.name, command, None, output, reason=f"did not finish within {timeout:g}s"
            ) from None
        if done.returncode != 0:
            raise HostCommandError(self.host.name, command, done.returncode, done.stdout)
        return done.stdout

    def archive(self, paths: list[str], destination: Path) -> Archive:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(destination, "w:gz") as tar:
            for path in paths:
                source = self.directory / path
                if source.exists():
                    tar.add(source.resolve(), arcname=path)
        return Archive(destination, sha256_of(destination), destination.stat().st_size)

    def prune(self, keep: int) -> list[str]:
        current = self.current_release()
        releases = sorted(
            (p for p in self.releases.iterdir() if not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        doomed = [p for p in releases[keep:] if p.name != current]
        for path in doomed:
            shutil.rmtree(path)
        return [p.name for p in doomed]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
