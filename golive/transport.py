"""How golive reaches a host. Every transport offers the same few steps.

A host's deploy directory holds `releases/<version>/` and a `current` symlink to one of them.
A release is unpacked beside its final name and renamed into place, and `current` is replaced
with rename(2), so neither is ever seen half-written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from golive.plan import Host, Plan


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


class Transport(Protocol):
    host: Host

    def check(self, needed_bytes: int) -> HostCheck: ...

    def current_release(self) -> str | None: ...

    def put_release(self, artifact: Path, version: str) -> int:
        """Unpack `artifact` as releases/<version>; returns the bytes sent to the host."""
        ...

    def switch(self, version: str | None) -> None:
        """Point `current` at releases/<version> atomically (None: remove it)."""
        ...

    def run(self, command: str, timeout: float) -> str:
        """Run a command in the deploy directory; raise HostCommandError unless it exits 0."""
        ...

    def archive(self, paths: list[str], destination: Path) -> Archive: ...

    def prune(self, keep: int) -> list[str]:
        """Remove all but the newest `keep` releases (never the current one)."""
        ...


def connect(plan: Plan, host: Host) -> Transport:
    from golive.local import LocalTransport

    return LocalTransport(host, plan.targets.path / host.name)
