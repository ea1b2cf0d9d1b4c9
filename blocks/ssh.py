"""A host reached over SSH, stored as a Prefect Block so its key never sits in a plan file.

Register the block type once, then one block per host:

    prefect block register -m blocks.ssh
    python -c "from blocks.ssh import SshHost; SshHost(address='10.0.0.11', user='deploy',
        private_key=open('deploy_key').read(), known_hosts=open('known_hosts').read()
        ).save('web1')"

A plan with `transport: ssh` names it by block name: `hosts: [web1, web2]`.
"""

from __future__ import annotations

from typing import Literal, cast

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class SshHost(Block):
    _block_type_name = "golive SSH host"
    _block_type_slug = "golive-ssh-host"
    _description = "A host golive deploys to over SSH: where it is, who logs in, and with what key."

    address: str = Field(description="DNS name or IP address of the host.")
    port: int = Field(22, description="TCP port sshd listens on.")
    user: str = Field(description="User golive logs in as; it must own the deploy directory.")
    private_key: SecretStr = Field(description="Private key (OpenSSH or PEM text) to log in with.")
    passphrase: SecretStr | None = Field(None, description="Passphrase of the private key, if any.")
    connect_timeout: float = Field(10, description="Seconds to wait for the host to answer.")
    host_key_policy: Literal["strict", "accept-new"] = Field(
        "strict",
        description="strict: the host's key must be known already. accept-new: trust the first "
        "key seen and remember it. A changed key is refused either way.",
    )
    known_hosts: str | None = Field(
        None, description="Known host keys, in known_hosts format; ~/.ssh/known_hosts is also read."
    )


def load_ssh_host(name: str) -> SshHost:
    """The block saved under `name`; ValueError if there is none."""
    # Block.load returns the block itself when called from synchronous code.
    return cast(SshHost, SshHost.load(name))
