"""Where a host's commands run and its files land: this machine, or the far end of SSH.

Every transport is a Shell; the release steps (`releases.py`) are shell commands, so local
hosts and SSH hosts run exactly the same steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from golive.errors import HostCommandError, describe_os_error


class Shell(Protocol):
    host: str

    def run(self, command: str, timeout: float) -> str:
        """Run a POSIX shell command; return its output, or raise HostCommandError."""
        ...

    def put(self, local: Path, remote: str) -> None: ...

    def readlink(self, remote: str) -> str | None:
        """Where a symlink points; None only when nothing is there. Anything else (not a
        link, no permission) raises `unreadable_link`: a host whose `current` cannot be read
        is not a host with no release."""
        ...

    def remove(self, remote: str) -> None:
        """Remove a file if it is there."""
        ...

    def get(self, remote: str, local: Path) -> None: ...

    def close(self) -> None: ...


def unreadable_link(host: str, remote: str, error: OSError) -> HostCommandError:
    return HostCommandError(
        host, f"readlink {remote}", None, "", describe_os_error(error, "cannot read it")
    )
