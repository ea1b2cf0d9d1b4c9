"""The SSH shell: one fabric Connection per host per run, with strict host-key checking.

Host keys are checked against a known_hosts file (or text from a host block) and nothing else:
fabric's default of accepting any key, and ~/.ssh/config, are both switched off. An unknown or
changed key is refused with the command that would accept it.
"""

from __future__ import annotations

import contextlib
import io
import shlex
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut
from pydantic import SecretStr

from golive.errors import HostCommandError, HostUnreachable
from golive.shell import unreadable_link

HostKeyPolicy = Literal["strict", "accept-new"]


@dataclass(frozen=True)
class SshSettings:
    address: str
    port: int
    user: str
    private_key: SecretStr | None  # key text, from a host block
    key_file: Path | None  # or a key file, from an inline host
    passphrase: SecretStr | None
    connect_timeout: float
    host_key_policy: HostKeyPolicy
    known_hosts: Path
    known_hosts_text: str | None = None  # from a host block, checked before the file

    @property
    def where(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    def key_name(self) -> str:
        return str(self.key_file) if self.key_file else "the host block's private_key"


_GRACE = 5  # seconds between TERM and KILL for a command past its time
_TIMED_OUT = (124, 137)  # coreutils `timeout`: TERM did it, or KILL had to


def within(seconds: float, command: str) -> str:
    """The command as the host runs it: under coreutils `timeout`, in the login shell, so
    that past its time the host stops it with every process it started (its process group),
    not only the channel golive was listening on.

    The login shell waits for `timeout` (`; exit $?`) rather than turning into it: the shell
    under it then knows it is not the top one (SHLVL 2), and bash does not read ~/.bashrc a
    second time, which it does for a top shell run by sshd. On a host whose ~/.bashrc does
    real work (pyenv's, here: 0.1 s) that was half of every command's cost."""
    return (
        f'timeout --kill-after={_GRACE} {seconds:g} "${{SHELL:-/bin/sh}}" -c '
        f"{shlex.quote(command)}; exit $?"
    )


class SshShell:
    def __init__(self, host: str, settings: SshSettings) -> None:
        self.host = host
        self.settings = settings
        self.connection = Connection(
            settings.address,
            user=settings.user,
            port=settings.port,
            connect_timeout=settings.connect_timeout,
            config=Config(ssh_config=paramiko.SSHConfig()),
            connect_kwargs={
                "pkey": _load_key(host, settings),
                "look_for_keys": False,
                "allow_agent": False,
                "banner_timeout": settings.connect_timeout,
                "auth_timeout": settings.connect_timeout,
            },
        )
        self.connection.client.set_missing_host_key_policy(_policy(host, settings))
        self._trust(settings)

    def _trust(self, settings: SshSettings) -> None:
        keys = self.connection.client.get_host_keys()
        if settings.known_hosts_text:
            for line in settings.known_hosts_text.splitlines():
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
                if entry is not None and entry.key is not None:
                    for name in entry.hostnames:
                        keys.add(name, entry.key.get_name(), entry.key)
        if settings.known_hosts.exists():
            keys.load(str(settings.known_hosts))

    def open(self) -> None:
        """Connect now, turning every way a connection fails into HostUnreachable."""
        try:
            self.connection.open()
        except paramiko.BadHostKeyException as error:
            raise HostUnreachable(
                self.host,
                self.settings.where,
                f"its host key CHANGED: it offered {_fingerprint(error.key)}, known_hosts has "
                f"{_fingerprint(error.expected_key)}. This may be an attack; do not go on unless "
                "you know the host was rebuilt",
                f"if it was: ssh-keygen -f {self.settings.known_hosts} -R "
                f"'{_known_name(self.settings)}', then accept the new key",
            ) from None
        except paramiko.AuthenticationException:
            raise HostUnreachable(
                self.host,
                self.settings.where,
                f"it refused the key {self.settings.key_name()} for user {self.settings.user}",
                "add the key's public half to that user's ~/.ssh/authorized_keys",
            ) from None
        except UnknownHostKey as error:
            raise HostUnreachable(self.host, self.settings.where, str(error), error.fix) from None
        except (OSError, paramiko.SSHException) as error:
            raise HostUnreachable(self.host, self.settings.where, _describe(error)) from None

    def run(self, command: str, timeout: float) -> str:
        self.open()
        late = f"did not finish within {timeout:g}s"
        started = time.monotonic()
        try:
            result = self.connection.run(
                within(timeout, command),
                hide=True,
                warn=True,
                timeout=timeout + _GRACE + 5,  # should the host's own `timeout` not act
                in_stream=False,
                pty=False,
            )
        except CommandTimedOut as timed_out:
            output = timed_out.result.stdout + timed_out.result.stderr
            raise HostCommandError(self.host, command, None, output, reason=late) from None
        except (OSError, paramiko.SSHException) as error:
            raise HostUnreachable(self.host, self.settings.where, _describe(error)) from None
        output = str(result.stdout) + str(result.stderr)
        if result.exited in _TIMED_OUT and time.monotonic() - started >= timeout:
            raise HostCommandError(self.host, command, None, output, reason=late)
        if result.exited != 0:
            raise HostCommandError(self.host, command, result.exited, output)
        return str(result.stdout)

    def put(self, local: Path, remote: str) -> None:
        self.open()
        with self._connection_kept(f"sending {local.name} to {remote}"):
            self.connection.put(str(local), remote)

    def get(self, remote: str, local: Path) -> None:
        self.open()
        with self._connection_kept(f"fetching {remote}"):
            self.connection.get(remote, str(local))

    @contextlib.contextmanager
    def _connection_kept(self, doing: str) -> Iterator[None]:
        """A transfer whose connection drops is HostUnreachable, not an SFTP error."""
        try:
            yield
        except (TimeoutError, EOFError, paramiko.SSHException, ConnectionError) as error:
            raise HostUnreachable(
                self.host,
                self.settings.where,
                f"lost the connection while {doing}: {_describe(error)}",
            ) from None

    def readlink(self, remote: str) -> str | None:
        self.open()
        try:
            return str(self.connection.sftp().readlink(remote))
        except FileNotFoundError:
            return None
        except OSError as error:
            raise unreadable_link(self.host, remote, error) from None

    def remove(self, remote: str) -> None:
        self.open()
        with contextlib.suppress(FileNotFoundError):
            self.connection.sftp().remove(remote)

    def close(self) -> None:
        self.connection.close()


class UnknownHostKey(paramiko.SSHException):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


class _Strict(paramiko.MissingHostKeyPolicy):
    def __init__(self, host: str, settings: SshSettings) -> None:
        self.host, self.settings = host, settings

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        s = self.settings
        raise UnknownHostKey(
            f"its host key {_fingerprint(key)} is not in {s.known_hosts}, and host_key_policy "
            "is strict",
            f"check the fingerprint with the host's owner, then: ssh-keyscan -p {s.port} "
            f"{s.address} >> {s.known_hosts}   (or set host_key_policy: accept-new)",
        )


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Trust a host's first key and remember it; a later change is still refused."""

    def __init__(self, settings: SshSettings) -> None:
        self.settings = settings

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.settings.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with self.settings.known_hosts.open("a") as known:
            known.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def _policy(host: str, settings: SshSettings) -> paramiko.MissingHostKeyPolicy:
    return (
        _AcceptNew(settings)
        if settings.host_key_policy == "accept-new"
        else _Strict(host, settings)
    )


def _load_key(host: str, settings: SshSettings) -> paramiko.PKey:
    passphrase = settings.passphrase.get_secret_value() if settings.passphrase else None
    try:
        if settings.private_key is not None:
            return _key_from_text(settings.private_key.get_secret_value(), passphrase)
        assert settings.key_file is not None
        return paramiko.PKey.from_path(settings.key_file, password=passphrase)
    except FileNotFoundError:
        reason = f"key file {settings.key_file} does not exist"
    except paramiko.PasswordRequiredException:
        reason = f"{settings.key_name()} is encrypted and no passphrase was given"
    except (paramiko.SSHException, ValueError) as error:
        reason = f"{settings.key_name()} cannot be read ({error}); a wrong passphrase?"
    raise HostUnreachable(host, settings.where, reason)


def _key_from_text(text: str, passphrase: str | None) -> paramiko.PKey:
    last: Exception = ValueError("not a private key")
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException:
            raise
        except paramiko.SSHException as error:
            last = error
    raise last


def _known_name(settings: SshSettings) -> str:
    return settings.address if settings.port == 22 else f"[{settings.address}]:{settings.port}"


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def _describe(error: BaseException) -> str:
    if isinstance(error, socket.timeout | TimeoutError):
        return "it did not answer in time"
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused (is sshd running, and is the port right?)"
    return f"{type(error).__name__}: {error}"
