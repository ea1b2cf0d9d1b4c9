"""How golive reaches a host: one shell per host per run, reused by each step, closed at the end."""

from __future__ import annotations

import getpass
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from golive.local import LocalShell
from golive.plan import Host, Plan
from golive.releases import HostReleases
from golive.shell import Shell

if TYPE_CHECKING:
    from golive.ssh import SshSettings

_shells: dict[tuple[str, str], Shell] = {}
_lock = threading.Lock()


def connect(plan: Plan, host: Host, run_id: str = "") -> HostReleases:
    """The host's deploy directory, through the run's shell to that host (opened on first use)."""
    with _lock:
        shell = _shells.get((run_id, host.name))
        if shell is None:
            shell = _open(plan, host)
            _shells[(run_id, host.name)] = shell
    return HostReleases(host, shell, plan.targets.deploy_dir(host))


def close_run(run_id: str) -> None:
    with _lock:
        doomed = [key for key in _shells if key[0] == run_id]
        shells = [_shells.pop(key) for key in doomed]
    for shell in shells:
        shell.close()


def _open(plan: Plan, host: Host) -> Shell:
    if plan.targets.transport == "local":
        return LocalShell(host.name)
    from golive.ssh import SshShell  # paramiko: only plans over SSH pay for it

    return SshShell(host.name, ssh_settings(host))


def ssh_settings(host: Host) -> SshSettings:
    from golive.ssh import SshSettings

    settings = SshSettings(
        address=host.address,
        port=host.port,
        user=host.user or getpass.getuser(),
        private_key=None,
        key_file=host.identity_file.expanduser()
        if host.identity_file
        else Path("~/.ssh/id_ed25519").expanduser(),
        passphrase=None,
        connect_timeout=host.connect_timeout,
        host_key_policy=host.host_key_policy,
        known_hosts=host.known_hosts.expanduser(),
    )
    if host.block is None:
        return settings
    from blocks.ssh import load_ssh_host

    block = load_ssh_host(host.block)
    return SshSettings(
        address=block.address,
        port=block.port,
        user=block.user,
        private_key=block.private_key,
        key_file=None,
        passphrase=block.passphrase,
        connect_timeout=block.connect_timeout,
        host_key_policy=block.host_key_policy,
        known_hosts=settings.known_hosts,
        known_hosts_text=block.known_hosts,
    )


def resolve_blocks(plan: Plan) -> tuple[Plan, list[str]]:
    if not any(h.block for h in plan.targets.hosts):
        return plan, []
    from blocks.ssh import load_ssh_host

    hosts, problems = [], []  # hosts named by a block take their address from it
    for host in plan.targets.hosts:
        if host.block:
            try:
                block = load_ssh_host(host.block)
            except ValueError:
                problems.append(
                    f"host {host.name!r}: no golive-ssh-host block named "
                    f"{host.block!r}; `prefect block ls` lists the blocks there are"
                )
                continue
            host = host.model_copy(
                update={"address": block.address, "port": block.port, "user": block.user}
            )
        hosts.append(host)
    return plan.model_copy(
        update={"targets": plan.targets.model_copy(update={"hosts": hosts})}
    ), problems
