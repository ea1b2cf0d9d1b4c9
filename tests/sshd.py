"""Real sshd processes on loopback ports, each with its own host key, for the SSH tests.

Every host shares one authorized client key that the tests generate, and a known_hosts file
lists each host's key under [127.0.0.1]:<port>. A missing sshd fails the tests under CI=true
(the Makefile installs openssh-server) and skips them elsewhere.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.unavailable import unavailable

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def require_sshd() -> None:
    if not Path(SSHD).exists():
        unavailable("sshd is not installed: `apt-get install openssh-server` (make test does it)")


def write_key_pair(private: Path) -> str:
    """An ed25519 key pair in OpenSSH format; returns the public key line."""
    key = Ed25519PrivateKey.generate()
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    private.with_suffix(".pub").write_text(public + "\n")
    return public


@dataclass
class Sshd:
    name: str
    port: int
    directory: Path
    host_key: str  # "ssh-ed25519 AAAA..."
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        return self.directory / "sshd.log"

    def logins(self) -> int:
        return self.log.read_text().count("Accepted publickey") if self.log.exists() else 0

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class SshdFleet:
    """sshd per host name; `client_key`, `known_hosts` and `authorized_keys` under `base`."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.client_key = base / "client_key"
        self.authorized_keys = base / "authorized_keys"
        self.authorized_keys.write_text(write_key_pair(self.client_key) + "\n")
        self.known_hosts = base / "known_hosts"
        self.known_hosts.write_text("")
        self.hosts: dict[str, Sshd] = {}
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir

    def start(self, name: str) -> Sshd:
        directory = self.base / name
        directory.mkdir(exist_ok=True)
        host_key = write_key_pair(directory / "host_key")
        port = _free_port()
        config = directory / "sshd_config"
        config.write_text(_config(port, directory, self.authorized_keys))
        process = subprocess.Popen(
            [SSHD, "-D", "-f", str(config), "-E", str(directory / "sshd.log")]
        )
        sshd = Sshd(name, port, directory, " ".join(host_key.split()[:2]), process)
        _wait_for_banner(sshd)
        with self.known_hosts.open("a") as known:
            known.write(f"[127.0.0.1]:{port} {sshd.host_key}\n")
        self.hosts[name] = sshd
        return sshd

    def inline_host(self, name: str, **fields: object) -> dict[str, object]:
        """A plan's inline SSH host for this sshd."""
        sshd = self.hosts[name]
        return {
            "name": name,
            "address": "127.0.0.1",
            "port": sshd.port,
            "user": getpass.getuser(),
            "identity_file": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            "connect_timeout": "5s",
            **fields,
        }

    def stop(self) -> None:
        for sshd in self.hosts.values():
            sshd.stop()


def _config(port: int, directory: Path, authorized_keys: Path) -> str:
    return f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {directory / "host_key"}
PidFile {directory / "sshd.pid"}
AuthorizedKeysFile {authorized_keys}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel INFO
MaxStartups 200
MaxSessions 50
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_banner(sshd: Sshd) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sshd.process.poll() is not None:
            raise RuntimeError(f"sshd for {sshd.name} exited: {sshd.log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", sshd.port), timeout=1) as conn:
                if conn.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd for {sshd.name} did not answer on port {sshd.port}")
