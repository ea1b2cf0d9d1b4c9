"""The go-live plan: what is released, where, in which waves, behind which checks and gates.

Plain pydantic, no Prefect: `golive validate` must answer in well under a second.
Loading a plan file (and reporting every problem in it at once) lives in `planfile.py`.
"""

from __future__ import annotations

import calendar
import math
import re
import string
from collections import Counter
from datetime import date, datetime, time
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Strict,
    Tag,
    model_validator,
)

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# \Z, not $: a `$` also matches before a final newline, and "2.4.0\n" is no release name.
SAFE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
_PLACEHOLDER = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_ENV_VAR = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
_ADDRESS = re.compile(r"\A[A-Za-z0-9_.:\[\]%][A-Za-z0-9_.:\[\]%-]{0,252}\Z")
_DATE = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
BUILT_IN_PLACEHOLDERS = ("name", "address")
LONGEST = 30 * 86400.0  # no wait, timeout or soak in a go-live is longer than 30 days
# Names on a host that golive itself owns: a backup path naming them would let a rollback
# delete the releases, the `current` link or golive's staging files.
RESERVED_ON_HOST = ("releases", "current")


def parse_duration(value: Any) -> float:
    """'90s', '10m', '1h30m', '250ms' or a number of seconds -> seconds."""
    text = value.replace(" ", "") if isinstance(value, str) else ""
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e12:
        seconds = float(value)
    elif text and _DURATION.sub("", text) == "":
        pairs = _DURATION.findall(text)
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in pairs)
    else:
        raise ValueError(
            f"{value!r} is not a duration; accepted: a number of seconds or text like "
            "'250ms', '30s', '10m', '4h', '1h30m'"
        )
    if not math.isfinite(seconds) or seconds <= 0 or seconds > LONGEST:
        raise ValueError(f"{value!r} is not accepted; accepted: longer than zero, at most 30d")
    return seconds


def parse_fraction(value: Any) -> float:
    """'1%' or 0.01 -> 0.01."""
    text = str(value).strip() if isinstance(value, str | int | float) else "?"
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?%?", text):
        raise ValueError(f"{value!r} is not a rate; accepted: a percentage like '1%'")
    fraction = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not text.endswith("%") and fraction >= 1:
        # A bare 1 could mean 1% or 100%: golive does not guess which.
        raise ValueError(f"{value!r} is ambiguous; accepted: a percentage like '1%' or '100%'")
    if isinstance(value, bool) or not 0 <= fraction <= 1:
        raise ValueError(f"{value!r} is outside 0%..100%")
    return fraction


def _placeholder_name(value: str) -> str:
    if not _PLACEHOLDER.match(value):
        raise ValueError(
            f"{value!r} cannot be a placeholder; accepted: letters, digits and '_', like http_port"
        )
    if value in BUILT_IN_PLACEHOLDERS:
        raise ValueError(f"{{{value}}} is golive's own (the host's {value}); choose another name")
    return value


def _iso_date(value: Any) -> Any:
    """A date as written in a plan: 2026-12-24. Not a number (seconds since 1970?), and not a
    time of day, whose time zone a date would silently drop."""
    if isinstance(value, date) or (isinstance(value, str) and _DATE.match(value)):
        return value
    raise ValueError(f"{value!r} is not a date; accepted: a date like 2026-12-24")


def _safe_name(value: str) -> str:
    if not SAFE_NAME.match(value):
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


def _template(value: str) -> str:
    """Placeholders are plain {names}: no positions, attributes, indexes or conversions, which
    str.format would otherwise evaluate against golive's own objects."""
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError:
        raise ValueError(
            f"{value!r} has an unbalanced brace; write {{{{ and }}}} for literal braces"
        ) from None
    for _, field, spec, conversion in parts:
        if field is not None and (not _PLACEHOLDER.match(field) or spec or conversion):
            raise ValueError(
                f"{{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
                " is not a placeholder; accepted: {name}, {address} or a host var like "
                "{http_port}"
            )
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty; accepted: a non-empty text")
    return value


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"{value!r} is not a URL golive can check; accepted: http://host[:port]/path "
            "or https://..., with {placeholders}"
        )
    if "@" in parts.netloc:
        # A plan is kept in the run store and shown in reports: no place for a password.
        raise ValueError(
            "a URL with a user or password in it is not accepted: plans are kept in the run "
            "store and shown in reports; accepted: http://host[:port]/path"
        )
    return value


def _address(value: str) -> str:
    if not _ADDRESS.match(value):
        raise ValueError(
            f"{value!r} is not a host address; accepted: a host name or an IP address "
            "(no spaces, not starting with '-')"
        )
    return value


def _env_var(value: str) -> str:
    if not _ENV_VAR.match(value):
        raise ValueError(f"{value!r} is not an environment variable name; accepted: like SHOP_PW")
    return value


def host_relative(value: str) -> str:
    """A path inside a host's deploy root: relative, with no '..', and not golive's own."""
    path = PurePosixPath(value)
    if (
        not value.strip()
        or "\n" in value
        or path.is_absolute()
        or ".." in path.parts
        or str(path) == "."
    ):
        raise ValueError(
            f"{value!r} is not inside the deploy root; accepted: a relative path below it, "
            "like 'shared' or 'shared/uploads' (no '..', not absolute)"
        )
    if path.parts[0] in RESERVED_ON_HOST or path.parts[0].startswith(".golive"):
        raise ValueError(
            f"{value!r} is golive's own ({path.parts[0]}); accepted: your application's paths"
        )
    return str(path)


def deploy_root(value: Path) -> Path:
    """A host's deploy root: no '..' and not the file system's root."""
    if ".." in value.parts or not str(value).strip("/ ") or "\n" in str(value):
        raise ValueError(
            f"{str(value)!r} cannot be a deploy root; accepted: a directory of its own, "
            "like /srv/shop-web, without '..'"
        )
    return value


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


def _at_least_one(value: Any) -> Any:
    if value == 0 or (isinstance(value, str) and float(value.rstrip("%")) == 0):
        raise ValueError(f"{value!r} would deploy nothing; accepted: at least 1, or over 0%")
    return value


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
    if isinstance(value, list) and not value:
        raise ValueError("a wave with no hosts; accepted: at least one host name")
    if isinstance(value, list) and len(set(map(str, value))) != len(value):
        raise ValueError(f"{value!r} names a host twice; accepted: each host once")
    return value


def unique(values: list[Any]) -> list[Any]:
    twice = sorted(str(v) for v, n in Counter(values).items() if n > 1)
    if twice:
        raise ValueError(f"{', '.join(twice)} given twice; accepted: each once")
    return values


Seconds = Annotated[float, BeforeValidator(parse_duration)]
# Kept as a number, which reads back the same; but 1 alone reads as ambiguous, so all is 100%.
Fraction = Annotated[
    float,
    BeforeValidator(parse_fraction),
    PlainSerializer(lambda f: "100%" if f >= 1 else f, when_used="json"),
]
SafeName = Annotated[str, AfterValidator(_safe_name)]
GateName = Annotated[str, AfterValidator(_gate_name)]
Template = Annotated[str, AfterValidator(_not_blank), AfterValidator(_template)]
Text = Annotated[str, AfterValidator(_not_blank)]
Count = Annotated[int, Strict()]  # a YAML `true` is not a number
HostPath = Annotated[str, AfterValidator(host_relative)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Release(Section):
    name: SafeName = Field(description="What is released, e.g. 'shop-web'.")
    version: SafeName = Field(description="The version this run puts live.")
    artifact: Path = Field(description="The release tarball; relative paths are to the plan file.")
    owner: Text | None = Field(None, description="Who answers for this release.")


class Host(Section):
    name: SafeName = Field(description="The host's name in waves, records and reports.")
    address: Annotated[str, AfterValidator(_address)] = Field(
        "127.0.0.1", description="Where SSH and smoke checks reach the host."
    )
    vars: dict[Annotated[str, AfterValidator(_placeholder_name)], str | int] = Field(
        default_factory=dict, description="Values for {placeholders} in URLs and commands."
    )
    path: Annotated[Path, AfterValidator(deploy_root)] | None = Field(
        None, description="This host's deploy directory, if not targets.path."
    )
    block: SafeName | None = Field(
        None, description="SSH: the golive-ssh-host block holding its key."
    )
    port: Count = Field(22, ge=1, le=65535, description="SSH: the port sshd listens on.")
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


def hosts_by_name(data: Any) -> Any:
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


class Targets(Section):
    transport: Literal["local", "ssh"] = Field(
        "local",
        description="How hosts are reached. local: each host is the directory path/<host name>. "
        "ssh: each host is a machine reached with fabric.",
    )
    hosts: list[Host] = Field(
        min_length=1,
        description="The hosts, each by name (`web[01:20]` names twenty), or from `inventory`.",
    )
    inventory: Path | None = Field(
        None, description="An Ansible INI inventory whose `group` are the hosts."
    )
    group: str = Field("all", description="The inventory's group to deploy to.")
    path: Annotated[Path, AfterValidator(deploy_root)] = Field(
        description="Where releases live on each host."
    )
    restart: Template = Field(
        description="Command run on a host after its `current` link switches."
    )
    keep_releases: Count = Field(
        5, ge=2, le=1000, description="Releases kept on each host after success."
    )
    command_timeout: Seconds = Field(120, description="Longest a host command may run.")

    @model_validator(mode="before")
    @classmethod
    def _hosts_by_name(cls, data: Any) -> Any:
        return hosts_by_name(data)

    @model_validator(mode="after")
    def _roots_on_ssh_hosts_are_absolute(self) -> Targets:
        if self.transport == "ssh":
            for root in (self.path, *(h.path for h in self.hosts if h.path)):
                if not root.is_absolute():
                    raise ValueError(
                        f"deploy root {str(root)!r} is relative; over ssh it must be absolute, "
                        "like /srv/shop-web"
                    )
        return self

    def deploy_dir(self, host: Host) -> str:
        if host.path:
            return str(host.path)
        return str(self.path / host.name) if self.transport == "local" else str(self.path)


class Wave(Section):
    name: SafeName
    hosts: Annotated[int | str | list[str], BeforeValidator(_wave_size)] = Field(
        description="A count, a percentage of the fleet covered by the end of this wave, or names."
    )
    parallel: (
        Annotated[int | str, BeforeValidator(_share_or_count), AfterValidator(_at_least_one)] | None
    ) = Field(None, description="Most hosts deploying at once: a count or a share of the wave.")
    max_fail: Annotated[int | str, BeforeValidator(_share_or_count)] = Field(
        0,
        description="Failure budget: hosts that may fail (count or share of the wave) and be "
        "taken out while the rollout goes on. One more, and everything rolls back.",
    )
    gate: GateName | None = Field(
        None, description="A gate (from `gates`) to pass after this wave."
    )
    soak: Seconds | None = Field(None, description="Watch this wave alone for so long first.")
    pause: Seconds | None = Field(None, description="Wait this long before the next wave.")

    def failure_budget(self, size: int) -> int:
        return share_of(self.max_fail, size, at_least=0)

    def concurrency(self, size: int) -> int:
        return size if self.parallel is None else share_of(self.parallel, size, at_least=1)


class SmokeCheck(Section):
    name: SafeName
    url: Annotated[Template, AfterValidator(_url)] = Field(
        description="Templated per host: {name}, {address} and the host's vars."
    )
    expect_status: Count = Field(200, ge=100, le=599)
    expect_body: str | None = Field(None, description="Text the response body must contain.")
    max_latency_ms: float | None = Field(None, gt=0)
    retries: Count = Field(3, ge=0, le=100, description="Extra attempts before the check fails.")
    retry_delay: Seconds = 1.0
    timeout: Seconds = 5.0


class Gate(Section):
    approvers: Annotated[list[SafeName], AfterValidator(unique)] = Field(
        min_length=1,
        description="People or groups, from the environment's registered approvers, who may "
        "decide.",
    )
    allow_unsigned: Annotated[bool, Strict()] = Field(
        False,
        description="Accept decisions without a signature, where the environment allows it.",
    )
    quorum: Count = Field(1, ge=1, le=100, description="Distinct approvals needed to pass.")
    timeout: Seconds = Field(4 * 3600, description="How long the gate stays open.")
    on_timeout: Literal["reject", "approve"] = Field(
        "reject",
        description="What an undecided gate means (approve: where the environment allows it).",
    )
    owner: str | None = None


class Soak(Section):
    duration: Seconds
    interval: Seconds = 5.0
    max_error_rate: Fraction = 0.0
    max_p95_ms: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _interval_fits(self) -> Soak:
        if self.interval > self.duration:
            raise ValueError(
                f"interval {self.interval:g}s is longer than the soak's duration "
                f"{self.duration:g}s; accepted: an interval at most the duration"
            )
        return self


class FilesBackup(Section):
    kind: Literal["files"]
    paths: Annotated[list[HostPath], AfterValidator(unique)] = Field(
        min_length=1, description="Paths under each host's deploy root."
    )


class PostgresBackup(Section):
    kind: Literal["postgres"]
    database: SafeName = Field(description="A database from `databases`.")
    jobs: Count | None = Field(
        None,
        ge=1,
        le=64,
        description="How many pg_dump and pg_restore jobs run at once (a connection each); "
        "default: this machine's cores. Fewer run if the server has no room for them.",
    )


Backup = Annotated[FilesBackup | PostgresBackup, Field(discriminator="kind")]


class DatabaseRef(Section):
    """A PostgreSQL database: a golive-postgres block by name, or inline without a password."""

    block: SafeName | None = Field(
        None, description="A golive-postgres block holding the password."
    )
    host: Annotated[str, AfterValidator(_address)] = "127.0.0.1"
    port: Count = Field(5432, ge=1, le=65535)
    dbname: Text | None = Field(None, description="Database name (inline only).")
    user: Text = "postgres"
    password_env: Annotated[str, AfterValidator(_env_var)] | None = Field(
        None, description="Environment variable with the password."
    )

    @model_validator(mode="before")
    @classmethod
    def _block_or_inline(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("block") and len(data) > 1:
            others = ", ".join(sorted(str(k) for k in data if k != "block"))
            raise ValueError(
                f"names a block and also {others}; accepted: either `block` alone (the block "
                "holds the connection) or the inline fields without it"
            )
        return data


class BackupStorage(Section):
    block: SafeName | None = Field(
        None, description="A golive-backup-storage block to use instead."
    )
    directory: Path = Field(Path("~/.golive/backups"), description="Where database dumps go.")
    keep: Count = Field(
        5, ge=1, le=1000, description="Verified backups kept per environment and database."
    )


class MigrationCheck(Section):
    name: Text
    query: Text = Field(description="SQL returning one value.")
    when: Literal["before", "after", "both"] = "after"
    equals: float | str | None = None
    at_least: float | None = None
    at_most: float | None = None
    unchanged: Annotated[bool, Strict()] = Field(
        False, description="After must equal before (run both times)."
    )

    @model_validator(mode="after")
    def _has_a_condition(self) -> MigrationCheck:
        conditions = (self.equals, self.at_least, self.at_most)
        if all(c is None for c in conditions) and not self.unchanged:
            raise ValueError(
                f"check {self.name!r} has no condition; accepted: one of equals, "
                "at_least, at_most, unchanged: true"
            )
        low, high = self.at_least, self.at_most
        if low is not None and high is not None and low > high:
            raise ValueError(f"at_least {low:g} is above at_most {high:g}: no value could pass")
        exact = self.equals if isinstance(self.equals, float | int) else None
        if exact is not None and (
            (low is not None and exact < low) or (high is not None and exact > high)
        ):
            raise ValueError(f"equals {exact:g} is outside at_least/at_most: no value could pass")
        return self


class Migration(Section):
    sql: Path = Field(description="SQL file, relative to the plan; run in one transaction.")
    database: SafeName | None = Field(None, description="From `databases` (default: the only one).")
    reversible: Annotated[bool, Strict()] = Field(
        True, description="false: a point of no return (needs `gate`)."
    )
    gate: GateName | None = Field(None, description="Gate approving an irreversible migration.")
    checks: list[MigrationCheck] = Field(default_factory=list)


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not a time zone; accepted: an IANA name like Europe/Paris, or UTC"
        ) from None
    return value


def _time_of_day(value: Any) -> Any:
    if isinstance(value, time):
        return value
    if isinstance(value, str) and re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", value):
        return time.fromisoformat(value)
    raise ValueError(f"{value!r} is not a time of day; accepted: 'HH:MM' in quotes, like '15:00'")


TimeZone = Annotated[str, AfterValidator(_time_zone)]
TimeOfDay = Annotated[
    time, BeforeValidator(_time_of_day), PlainSerializer(lambda t: t.strftime("%H:%M"))
]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class Freeze(Section):
    """A change freeze over a range of dates, in a time zone."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )
    starts: Annotated[date, BeforeValidator(_iso_date)] = Field(alias="from")
    ends: Annotated[date, BeforeValidator(_iso_date)] = Field(alias="to")
    reason: Text
    timezone: TimeZone = Field("UTC", description="Where the dates are days.")

    @model_validator(mode="after")
    def _in_order(self) -> Freeze:
        if self.ends < self.starts:
            raise ValueError(
                f"ends ({self.ends}) before it starts ({self.starts}); accepted: from <= to"
            )
        return self

    def covers(self, now: datetime) -> bool:
        return self.starts <= now.astimezone(ZoneInfo(self.timezone)).date() <= self.ends

    def named(self) -> str:
        return f"{self.starts}..{self.ends} {self.timezone} ({self.reason})"


def _days_or_month_end(value: Any) -> Any:
    return [value] if isinstance(value, str) and value != "month-end" else value


class RecurringFreeze(Section):
    """A change freeze that comes back: some days of every week, or the month's last days,
    all day or between two times of day, in a time zone."""

    every: Annotated[list[Weekday] | Literal["month-end"], BeforeValidator(_days_or_month_end)] = (
        Field(description="Weekdays (friday, or [friday, saturday]), or month-end.")
    )
    after: TimeOfDay = Field(time(0), description="From this time of day ('15:00').")
    until: TimeOfDay | None = Field(None, description="To this time of day (default: midnight).")
    days: Count = Field(1, ge=1, le=15, description="month-end: how many last days of it.")
    timezone: TimeZone = Field("UTC", description="Where the times are.")
    reason: Text

    @model_validator(mode="after")
    def _in_order(self) -> RecurringFreeze:
        if self.until is not None and self.until <= self.after:
            raise ValueError(
                f"until {self.until:%H:%M} is not after {self.after:%H:%M}; accepted: a window "
                "within a day (for one past midnight, use two)"
            )
        return self

    def covers(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.timezone))
        if self.every == "month-end":
            last = calendar.monthrange(local.year, local.month)[1]
            on_day = local.day > last - self.days
        else:
            on_day = WEEKDAYS[local.weekday()] in self.every
        in_hours = self.after <= local.time() and (self.until is None or local.time() < self.until)
        return on_day and in_hours

    def named(self) -> str:
        days = (
            f"the last {self.days} day(s) of each month"
            if self.every == "month-end"
            else "every " + ", ".join(self.every)
        )
        until = f"{self.until:%H:%M}" if self.until else "midnight"
        return f"{days}, {self.after:%H:%M} to {until} {self.timezone} ({self.reason})"


def _freeze_kind(value: Any) -> str:
    """A window read from a plan (a mapping) or written back (a model): which kind it is."""
    recurring = isinstance(value, RecurringFreeze) or (isinstance(value, dict) and "every" in value)
    return "recurring" if recurring else "dates"


AnyFreeze = Annotated[
    Annotated[Freeze, Tag("dates")] | Annotated[RecurringFreeze, Tag("recurring")],
    Discriminator(_freeze_kind),
]


class CloseOut(Section):
    """Something left to do once the release is live, and who does it by when."""

    task: Text
    owner: Text
    due: Annotated[date, BeforeValidator(_iso_date)]


class Webhook(Section):
    webhook: SafeName = Field(description="Name of a webhook block to post run events to.")


class RollbackPolicy(Section):
    automatic: Annotated[bool, Strict()] = Field(
        True, description="Roll back every changed host on any failure."
    )
    parallel: (
        Annotated[int | str, BeforeValidator(_share_or_count), AfterValidator(_at_least_one)] | None
    ) = Field(
        None,
        description="Most hosts restored at once (a count or a share of them); by default all "
        "at once, last wave first, so that the fleet is back on a known release soonest.",
    )

    def concurrency(self, size: int) -> int:
        return size if self.parallel is None else share_of(self.parallel, size, at_least=1)


class AuditPolicy(Section):
    head_file: Path | None = Field(
        None,
        description="A file outside the run store (another disk, a synced folder) that each "
        "run appends the store's head to when it ends: time, link, hash, run.",
    )
    head_webhook: SafeName | None = Field(
        None, description="A golive-webhook block each run posts the store's head to."
    )


def _cron(value: str) -> str:
    """A cron expression as Prefect's scheduler takes it (five fields; no random or hashed
    ones). Prefect is imported only for a plan that has a schedule."""
    from prefect._internal.schemas.validators import validate_cron_string

    try:
        return validate_cron_string(value)
    except ValueError as error:
        raise ValueError(
            f"{error}; accepted: five fields, minute hour day-of-month month day-of-week, "
            "like '30 2 * * *' (02:30 every day)"
        ) from None


class RehearsalSchedule(Section):
    """When the plan is rehearsed on its own: `golive schedule PLAN` puts it on the rehearsal
    deployment's schedules."""

    cron: Annotated[str, AfterValidator(_cron)] = Field(
        description="When, as cron: '30 2 * * *' is 02:30 every day."
    )
    timezone: TimeZone = Field("UTC", description="Where the cron's times are.")


class Rehearsal(Section):
    """The plan rehearsed on an environment of its own: same release, waves, checks and
    migrations; its own hosts and databases; gates answered by a policy, never a person."""

    environment: SafeName = Field(description="A non-production environment of its own.")
    targets: Targets = Field(description="Its own hosts: none of them the plan's.")
    databases: dict[SafeName, DatabaseRef] = Field(
        default_factory=dict,
        description="Its own database for each of the plan's `databases`, by the same name.",
    )
    gates: Literal["approve", "reject"] = Field(
        "approve",
        description="How its gates are answered: recorded as this policy, never as a person.",
    )
    required_within: Seconds | None = Field(
        None,
        description="A run of the plan needs a passing rehearsal of the very same plan, "
        "artifact and SQL this recent (e.g. 7d).",
    )
    schedule: RehearsalSchedule | None = Field(
        None, description="Rehearse it on a schedule (`golive schedule PLAN` sets it up)."
    )


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
    freeze: list[AnyFreeze] = Field(
        default_factory=list,
        description="Change freezes: date ranges, and recurring windows (Fridays after 15:00, "
        "month-end), each with a time zone and a reason.",
    )
    notify: list[Webhook] = Field(default_factory=list)
    rollback: RollbackPolicy = Field(default_factory=RollbackPolicy)
    audit: AuditPolicy = Field(default_factory=AuditPolicy)
    rehearsal: Rehearsal | None = None
    closeout: list[CloseOut] = Field(
        default_factory=list,
        description="What is left to do after the go-live: listed, with owners and due "
        "dates, in the report.",
    )

    def freezes_at(self, now: datetime) -> list[str]:
        """The freeze windows `now` is inside, each named as the plan has it."""
        return [f"freeze[{i}] {f.named()}" for i, f in enumerate(self.freeze) if f.covers(now)]

    def host(self, name: str) -> Host:
        return next(h for h in self.targets.hosts if h.name == name)

    def database_of(self, migration: Migration) -> str:
        return migration.database or next(iter(self.databases))

    def host_names(self) -> list[str]:
        return [h.name for h in self.targets.hosts]

    def rehearsed(self) -> Plan:
        """The plan as its rehearsal runs it: its environment, hosts and databases."""
        assert self.rehearsal is not None
        r = self.rehearsal
        return self.model_copy(
            update={"environment": r.environment, "targets": r.targets, "databases": r.databases}
        )
