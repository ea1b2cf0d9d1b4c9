"""The go-live plan: what is released, where, in which waves, behind which checks and gates.

Plain pydantic, no Prefect: `golive validate` must answer in well under a second.
Loading a plan file (and reporting every problem in it at once) lives in `planfile.py`.
"""

from __future__ import annotations

import math
import re
import string
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_duration(value: Any) -> float:
    """'90s', '10m', '1h30m', '250ms' or a number of seconds -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value and _DURATION.sub("", value.replace(" ", "")) == "":
        pairs = _DURATION.findall(value.replace(" ", ""))
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in pairs)
    else:
        raise ValueError(
            f"{value!r} is not a duration; accepted: a number of seconds or text like "
            "'250ms', '30s', '10m', '4h', '1h30m'"
        )
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return seconds


def parse_fraction(value: Any) -> float:
    """'1%' or 0.01 -> 0.01."""
    text = str(value).strip()
    try:
        fraction = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate; accepted: a percentage like '1%'") from None
    if not 0 <= fraction <= 1:
        raise ValueError(f"{value!r} is outside 0%..100%")
    return fraction


def _safe_name(value: str) -> str:
    if not _SAFE_NAME.match(value):
        raise ValueError(
            f"{value!r} cannot be used as a name on disk; accepted: letters, digits, '.', '_', '-'"
        )
    return value


def placeholders(template: str) -> set[str]:
    """The {names} a URL or command template needs."""
    try:
        return {field for _, field, _, _ in string.Formatter().parse(template) if field}
    except ValueError:
        return {"<unbalanced braces>"}


def _gate_name(value: str) -> str:
    # Prefect pause keys, which carry the gate's name, accept only these characters.
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", value):
        raise ValueError(
            f"{value!r} is not a gate name; accepted: lowercase letters, digits "
            "and single dashes, like 'prod-approval'"
        )
    return value


def _share_or_count(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = value.strip() if isinstance(value, str) else ""
    if re.fullmatch(r"\d+(\.\d+)?%", text) and float(text[:-1]) <= 100:
        return text
    raise ValueError(f"{value!r} is not accepted; accepted: a count (2) or a share ('25%')")


def share_of(value: int | str, size: int, at_least: int) -> int:
    """A count, or a share of `size` rounded down (a budget never rounds in your favour)."""
    count = value if isinstance(value, int) else math.floor(size * float(value[:-1]) / 100)
    return max(at_least, min(count, size))


def _wave_size(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | str | list):
        raise ValueError(
            f"{value!r} is not a wave size; accepted: a count (1), a share of the fleet ('50%') "
            "or a list of host names"
        )
    return value


Seconds = Annotated[float, BeforeValidator(parse_duration)]
Fraction = Annotated[float, BeforeValidator(parse_fraction)]
SafeName = Annotated[str, AfterValidator(_safe_name)]
GateName = Annotated[str, AfterValidator(_gate_name)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Release(Section):
    name: SafeName = Field(description="What is released, e.g. 'shop-web'.")
    version: SafeName = Field(description="The version this run puts live.")
    artifact: Path = Field(description="The release tarball; relative paths are to the plan file.")
    owner: str | None = Field(None, description="Who answers for this release.")


class Host(Section):
    name: SafeName = Field(description="The host's name in waves, records and reports.")
    address: str = Field("127.0.0.1", description="Where SSH and smoke checks reach the host.")
    vars: dict[str, str | int] = Field(
        default_factory=dict, description="Values for {placeholders} in URLs and commands."
    )
    path: str | None = Field(None, description="This host's deploy directory, if not targets.path.")
    block: str | None = Field(None, description="SSH: the golive-ssh-host block holding its key.")
    port: int = Field(22, ge=1, le=65535, description="SSH: the port sshd listens on.")
    user: str | None = Field(None, description="SSH: who logs in (default: you).")
    identity_file: Path | None = Field(None, description="SSH: private key file.")
    known_hosts: Path = Field(Path("~/.ssh/known_hosts"), description="SSH: known host keys.")
    host_key_policy: Literal["strict", "accept-new"] = Field(
        "strict", description="SSH: strict refuses unknown keys; accept-new trusts the first."
    )
    connect_timeout: Seconds = Field(10, description="SSH: how long to wait for the host.")

    def fill(self, template: str) -> str:
        """A URL or command with this host's {placeholders} filled in."""
        return template.format(**self.template_values())

    def template_values(self) -> dict[str, str]:
        return {"name": self.name, "address": self.address} | {
            k: str(v) for k, v in self.vars.items()
        }


class Targets(Section):
    transport: Literal["local", "ssh"] = Field(
        "local",
        description="How hosts are reached. local: each host is the directory path/<host name>. "
        "ssh: each host is a machine reached with fabric.",
    )
    hosts: list[Host] = Field(min_length=1)
    path: Path = Field(description="Where releases live on each host.")
    restart: str = Field(description="Command run on a host after its `current` link switches.")
    keep_releases: int = Field(5, ge=2, description="Releases kept on each host after success.")
    command_timeout: Seconds = Field(120, description="Longest a host command may run.")

    @model_validator(mode="before")
    @classmethod
    def _hosts_by_name(cls, data: Any) -> Any:
        """A bare name is a host block under ssh, and a local directory otherwise; an inline SSH
        host without an address is reached by its name."""
        if not isinstance(data, dict) or not isinstance(data.get("hosts"), list):
            return data
        ssh = data.get("transport") == "ssh"
        hosts = []
        for host in data["hosts"]:
            if isinstance(host, str):
                host = {"name": host, "block": host} if ssh else {"name": host}
            elif ssh and isinstance(host, dict) and "name" in host and not host.get("block"):
                host = {"address": host["name"]} | host
            hosts.append(host)
        return data | {"hosts": hosts}

    def deploy_dir(self, host: Host) -> str:
        if host.path:
            return host.path
        return str(self.path / host.name) if self.transport == "local" else str(self.path)


class Wave(Section):
    name: SafeName
    hosts: Annotated[int | str | list[str], BeforeValidator(_wave_size)] = Field(
        description="A count, a percentage of the fleet covered by the end of this wave, or names."
    )
    parallel: Annotated[int | str, BeforeValidator(_share_or_count)] | None = Field(
        None, description="Most hosts deploying at once: a count or a share of the wave."
    )
    max_fail: Annotated[int | str, BeforeValidator(_share_or_count)] = Field(
        0,
        description="Failure budget: hosts that may fail (count or share of the wave) and be "
        "taken out while the rollout goes on. One more, and everything rolls back.",
    )
    gate: str | None = Field(None, description="A gate (from `gates`) to pass after this wave.")
    soak: Seconds | None = Field(None, description="Watch this wave alone for so long first.")
    pause: Seconds | None = Field(None, description="Wait this long before the next wave.")

    def failure_budget(self, size: int) -> int:
        return share_of(self.max_fail, size, at_least=0)

    def concurrency(self, size: int) -> int:
        return size if self.parallel is None else share_of(self.parallel, size, at_least=1)


class SmokeCheck(Section):
    name: SafeName
    url: str = Field(description="Templated per host: {name}, {address} and the host's vars.")
    expect_status: int = Field(200, ge=100, le=599)
    expect_body: str | None = Field(None, description="Text the response body must contain.")
    max_latency_ms: float | None = Field(None, gt=0)
    retries: int = Field(3, ge=0, description="Extra attempts before the check fails.")
    retry_delay: Seconds = 1.0
    timeout: Seconds = 5.0


def _public_key(value: str) -> str:
    from golive.signing import load_public_key  # cryptography only when a key is there

    load_public_key(value)
    return value


class Approver(Section):
    public_key: Annotated[str, AfterValidator(_public_key)] = Field(
        description="Ed25519 public key as `golive keygen` prints it (ed25519:...)."
    )
    groups: list[str] = Field(default_factory=list, description="Groups gates may name.")


class Gate(Section):
    approvers: list[str] = Field(min_length=1, description="People or groups who may decide.")
    allow_unsigned: bool = Field(
        False, description="Accept decisions without a signature (never in production)."
    )
    quorum: int = Field(1, ge=1, description="Distinct approvals needed to pass.")
    timeout: Seconds = Field(4 * 3600, description="How long the gate stays open.")
    on_timeout: Literal["reject", "approve"] = Field(
        "reject", description="What an undecided gate means (approve: never in production)."
    )
    owner: str | None = None


class Soak(Section):
    duration: Seconds
    interval: Seconds = 5.0
    max_error_rate: Fraction = 0.0
    max_p95_ms: float | None = Field(None, gt=0)


class FilesBackup(Section):
    kind: Literal["files"]
    paths: list[str] = Field(min_length=1, description="Paths under each host's directory.")


class PostgresBackup(Section):
    kind: Literal["postgres"]
    database: str = Field(description="A database from `databases`.")


Backup = Annotated[FilesBackup | PostgresBackup, Field(discriminator="kind")]


class DatabaseRef(Section):
    """A PostgreSQL database: a golive-postgres block by name, or inline without a password."""

    block: str | None = Field(None, description="A golive-postgres block holding the password.")
    host: str = "127.0.0.1"
    port: int = Field(5432, ge=1, le=65535)
    dbname: str | None = Field(None, description="Database name (inline only).")
    user: str = "postgres"
    password_env: str | None = Field(None, description="Environment variable with the password.")


class BackupStorage(Section):
    block: str | None = Field(None, description="A golive-backup-storage block to use instead.")
    directory: Path = Field(Path("~/.golive/backups"), description="Where database dumps go.")
    keep: int = Field(5, ge=1, description="Verified backups kept per environment and database.")


class MigrationCheck(Section):
    name: str
    query: str = Field(description="SQL returning one value.")
    when: Literal["before", "after", "both"] = "after"
    equals: float | str | None = None
    at_least: float | None = None
    at_most: float | None = None
    unchanged: bool = Field(False, description="After must equal before (run both times).")


class Migration(Section):
    sql: Path = Field(description="SQL file, relative to the plan; run in one transaction.")
    database: str | None = Field(None, description="From `databases` (default: the only one).")
    reversible: bool = Field(True, description="false: a point of no return (needs `gate`).")
    gate: GateName | None = Field(None, description="Gate approving an irreversible migration.")
    checks: list[MigrationCheck] = Field(default_factory=list)


class Freeze(Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    starts: date = Field(alias="from")
    ends: date = Field(alias="to")
    reason: str


class Webhook(Section):
    webhook: str = Field(description="Name of a webhook block to post run events to.")


class RollbackPolicy(Section):
    automatic: bool = Field(True, description="Roll back every changed host on any failure.")


class Plan(Section):
    release: Release
    environment: SafeName
    targets: Targets
    waves: list[Wave] = Field(min_length=1)
    smoke: list[SmokeCheck] = Field(default_factory=list)
    gates: dict[GateName, Gate] = Field(default_factory=dict)
    soak: Soak | None = None
    backups: list[Backup] = Field(default_factory=list)
    databases: dict[SafeName, DatabaseRef] = Field(default_factory=dict)
    backup_storage: BackupStorage = Field(default_factory=BackupStorage)
    migrations: list[Migration] = Field(default_factory=list)
    freeze: list[Freeze] = Field(default_factory=list)
    notify: list[Webhook] = Field(default_factory=list)
    rollback: RollbackPolicy = Field(default_factory=RollbackPolicy)
    approvers: dict[str, Approver] = Field(default_factory=dict)

    def host(self, name: str) -> Host:
        return next(h for h in self.targets.hosts if h.name == name)

    def database_of(self, migration: Migration) -> str:
        return migration.database or next(iter(self.databases))

    def may_decide(self, gate: Gate) -> set[str]:
        """The registered people a gate's approvers list names, directly or by group."""
        named = set(gate.approvers)
        return {
            name for name, a in self.approvers.items() if name in named or named & set(a.groups)
        }

    def is_production(self) -> bool:
        return self.environment.lower().startswith("prod")

    def host_names(self) -> list[str]:
        return [h.name for h in self.targets.hosts]
