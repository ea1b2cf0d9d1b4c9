"""The local shell: a host is a directory on this machine (the embedded default)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from golive.errors import HostCommandError
from golive.shell import unreadable_link

# What a host command inherits from golive's environment: enough to find programs and speak
# the user's language, and nothing else. golive's own secrets (PGPASSWORD, a plan's
# password_env, Prefect's API key) never reach a restart command or the application it starts.
_PASSED_ON = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR")


def host_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name in _PASSED_ON or name.startswith("LC_")
    }


class LocalShell:
    def __init__(self, host: str) -> None:
        self.host = host

    def run(self, command: str, timeout: float) -> str:
        # Its own process group, so a command past its time is stopped with everything it
        # started, not just the shell.
        with subprocess.Popen(
            command,
            shell=True,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=host_environment(),
            start_new_session=True,
        ) as process:
            try:
                output, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                output, _ = process.communicate()
                raise HostCommandError(
                    self.host, command, None, output, reason=f"did not finish within {timeout:g}s"
                ) from None
        if process.returncode != 0:
            raise HostCommandError(self.host, command, process.returncode, output)
        return output

    def put(self, local: Path, remote: str) -> None:
        shutil.copyfile(local, remote)

    def get(self, remote: str, local: Path) -> None:
        shutil.copyfile(remote, local)

    def readlink(self, remote: str) -> str | None:
        try:
            return os.readlink(remote)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise unreadable_link(self.host, remote, error) from None

    def remove(self, remote: str) -> None:
        Path(remote).unlink(missing_ok=True)

    def close(self) -> None:
        pass
