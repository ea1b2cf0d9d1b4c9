"""A fault at each step of a go-live ends with every host on its release from before the run
and answering, its files and databases as they were, and a record of each undo step.

Host faults are injected by a shell wrapper, here in the tests: the production code paths run
as they are, and meet the failure where a real one would hit them (a full disk on upload, a
failed unpack, a connection lost right after the switch, a restart that fails). Other faults
are what a real run meets: a failing statement or check, a failing smoke check, a rejection,
a soak over its limits; a dump that does not verify is the one hook into golive's code."""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flows.golive import go_live
from golive import postgres, transport
from golive.demo.fleet import DemoFleet
from golive.errors import HostCommandError, RunFailed
from golive.plan import Host, Plan
from golive.postgres import Database, DatabaseError
from golive.shell import Shell
from tests.conftest import decision
from tests.flows.test_golive import only_run, serving
from tests.pg import contents


@dataclass
class Fault:
    host: str
    step: str  # "upload", "unpack", "switch" or "restart"
    after: bool = False  # the step is done, then fails (the answer is lost)
    times: int = 1  # then the host is healthy again: the rollback's own steps meet it so
    fired: bool = False

    def hits(self, host: str, step: str) -> bool:
        if self.times == 0 or (host, step) != (self.host, self.step):
            return False
        self.times -= 1
        self.fired = True
        return True


def steps_of(command: str) -> set[str]:
    """The deploy steps a host command takes (a release is unpacked, switched to and restarted
    in one command, a rollback's switch back and restart in another)."""
    steps = {"backup"} if "| $compress >" in command else set()
    steps |= {"unpack"} if "tar xzf ../" in command else set()
    steps |= {"switch"} if "mv -T" in command else set()
    return steps | ({"restart"} if "app.py restart" in command else set())


def restart_failing(command: str) -> str:
    """The command with its restart failing, as a real one would, with the switch done."""
    return "\n".join("false" if "app.py restart" in line else line for line in command.split("\n"))


class FaultyShell:
    def __init__(self, inner: Shell, host: str, fault: Fault) -> None:
        self.inner, self.host, self.fault = inner, host, fault

    def run(self, command: str, timeout: float) -> str:
        step = self.fault.step
        if step not in steps_of(command) or not self.fault.hits(self.host, step):
            return self.inner.run(command, timeout)
        if step == "unpack":
            raise HostCommandError(self.host, command, 2, "tar: unexpected end of file")
        if step == "restart" and not self.fault.after:
            return self.inner.run(restart_failing(command), timeout)
        if self.fault.after:
            self.inner.run(command, timeout)
        raise HostCommandError(self.host, command, 255, "", reason="lost the connection")

    def put(self, local: Path, remote: str) -> None:
        if ".upload" in remote and self.fault.hits(self.host, "upload"):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.inner.put(local, remote)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


FAULTS = [
    Fault("web1", "upload"),
    Fault("web3", "upload"),
    Fault("web2", "unpack"),
    Fault("web1", "switch", after=True),
    Fault("web3", "switch", after=True),
    Fault("web1", "restart"),
    Fault("web3", "restart", after=True),
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f"{f.step}-{f.host}")
def test_a_fault_at_any_deploy_step_puts_every_host_back_and_records_each_undo(
    make_fleet: Callable[..., DemoFleet], monkeypatch: pytest.MonkeyPatch, fault: Fault
) -> None:
    fleet = make_fleet(hosts=3, configured=3)
    opened = transport._open

    def faulty(plan: Plan, host: Host) -> Shell:
        return FaultyShell(opened(plan, host), host.name, fault)

    monkeypatch.setattr(transport, "_open", faulty)
    waves = [{"name": "canary", "hosts": 1}, {"name": "rest", "hosts": "100%"}]
    plan = fleet.write_plan("2.0.0", gates={}, soak=None, waves=waves)

    with pytest.raises(RunFailed):
        go_live(str(plan))

    assert fault.fired
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    journal, record = only_run()
    abandoned = {e["host"] for e in journal.of_kind("host.switch_abandoned")}
    moved = {e["host"] for e in journal.of_kind("host.switching")} - abandoned
    restored = {e["host"]: e["ok"] for e in journal.of_kind("host.restored")}
    assert moved <= restored.keys() and all(restored.values()), restored
    assert record["state"] == "failed"
    assert record["rollback"] is None if not moved else record["rollback"]["complete"] is True


def test_a_host_that_fails_within_the_budget_and_cannot_be_put_back_fails_the_run(
    make_fleet: Callable[..., DemoFleet], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = make_fleet(hosts=3, configured=3)
    fault = Fault("web3", "restart", after=True, times=2)  # the deploy's restart, the put-back's
    opened = transport._open
    monkeypatch.setattr(
        transport, "_open", lambda plan, host: FaultyShell(opened(plan, host), host.name, fault)
    )
    waves = [{"name": "canary", "hosts": 1}, {"name": "rest", "hosts": "100%", "max_fail": 1}]
    plan = fleet.write_plan("2.0.0", gates={}, soak=None, waves=waves)

    with pytest.raises(RunFailed, match="put it back after it failed within the budget"):
        go_live(str(plan))

    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    journal, record = only_run()
    assert [e["ok"] for e in journal.of_kind("host.restored") if e["host"] == "web3"][:1] == [False]
    assert record["state"] == "failed" and record["rollback"]["complete"] is True


MIGRATIONS = {
    "0042_refunds.sql": (  # a referenced table, a standalone table, a column, and writes
        "CREATE TABLE refunds (id serial PRIMARY KEY, order_id int REFERENCES orders(id));\n"
        "CREATE TABLE notes (id serial PRIMARY KEY, body text);\n"
        "ALTER TABLE orders ADD COLUMN total_cents bigint;\n"
        "INSERT INTO refunds (order_id) SELECT id FROM orders LIMIT 10;\n"
        "UPDATE orders SET total_cents = (total * 100)::bigint, total = total + 1;\n"
        "DELETE FROM orders WHERE id % 50 = 0 AND id NOT IN (SELECT order_id FROM refunds);\n"
    ),
    "0043_channel.sql": "ALTER TABLE customers ADD COLUMN channel text DEFAULT 'web';\n",
}
CHANNEL_CHECK = {
    "name": "every customer has a channel",
    "query": ("SELECT count(*) FROM customers WHERE channel IS NULL"),
}
HOST_FAULTS = {
    "files backup": Fault("web2", "backup"),
    "upload": Fault("web2", "upload"),
    "switch": Fault("web3", "switch", after=True),
    "restart": Fault("web1", "restart"),
}
STAGES = {  # where the fault is, and what the run's failure says
    "files backup": "web2",
    "database backup": "499 restored",
    "migration": "division by zero",
    "migration check": "every customer has a channel",
    "upload": "the disk holding .* is full",
    "switch": "web3",
    "restart": "web1",
    "smoke": "smoke check 'health' failed on host 'web3'",
    "gate": "rejected by demo-approver",
    "soak": "soak failed",
}


def fault_plan(
    fleet: DemoFleet, targets: dict[str, Any], db: Database, tmp_path: Path, stage: str
) -> str:
    """Files and a database backed up, two migrations, a canary behind a gate, then the rest;
    with the fault of `stage` where the plan itself can carry it."""
    for name, statements in MIGRATIONS.items():
        failing = stage == "migration" and name == "0043_channel.sql"
        (tmp_path / name).write_text(statements + ("SELECT 1 / 0;\n" if failing else ""))
    check = CHANNEL_CHECK | {"equals": 1 if stage == "migration check" else 0}
    where = {"host": db.host, "port": db.port, "dbname": db.dbname, "user": db.user}
    sections: dict[str, Any] = {
        "targets": targets,
        "databases": {"shop": where},
        "backups": [
            {"kind": "files", "paths": ["shared"]},
            {"kind": "postgres", "database": "shop"},
        ],
        "backup_storage": {"directory": str(tmp_path / "backups")},
        "migrations": [
            {"sql": str(tmp_path / "0042_refunds.sql")},
            {"sql": str(tmp_path / "0043_channel.sql"), "checks": [check]},
        ],
        "soak": {"duration": "1s", "interval": "0.2s", "max_p95_ms": 0.001}
        if stage == "soak"
        else None,
    }
    version = "3.0.0" if stage == "smoke" else "2.0.0"  # 3.0.0 fails its smoke check on web3
    return str(fleet.write_plan(version, **sections))


def files(fleet: DemoFleet) -> dict[str, bytes]:
    """Every file of every host's shared folder, with its content."""
    found = {}
    for host in fleet.hosts:
        shared = fleet.host_dir(host.name) / "shared"
        for path in sorted(shared.rglob("*")):
            if path.is_file():
                found[f"{host.name}/{path.relative_to(shared)}"] = path.read_bytes()
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_a_fault_at_any_stage_over_ssh_leaves_hosts_files_and_data_as_before_the_run(
    make_ssh_fleet: Callable[..., tuple[DemoFleet, dict[str, Any]]],
    shop_db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    approver: Callable[..., None],
    stage: str,
) -> None:
    fleet, targets = make_ssh_fleet(hosts=3, configured=2)
    hosts_before, files_before, data_before = serving(fleet), files(fleet), contents(shop_db)
    fault = HOST_FAULTS.get(stage, Fault("nobody", "nothing"))
    opened = transport._open
    monkeypatch.setattr(
        transport, "_open", lambda plan, host: FaultyShell(opened(plan, host), host.name, fault)
    )
    if stage == "database backup":
        monkeypatch.setattr(postgres, "verify", dump_that_does_not_verify)
    approver(decision("reject" if stage == "gate" else "approve", comment="fault matrix"))

    with pytest.raises(RunFailed, match=STAGES[stage]):
        go_live(fault_plan(fleet, targets, shop_db, tmp_path, stage))

    assert fault.fired or stage not in HOST_FAULTS
    assert serving(fleet) == hosts_before
    assert files(fleet) == files_before
    assert contents(shop_db) == data_before
    journal, record = only_run()
    moved = {e["host"] for e in journal.of_kind("host.switching")} - {
        e["host"] for e in journal.of_kind("host.switch_abandoned")
    }
    restored = {e["host"]: e["ok"] for e in journal.of_kind("host.restored")}
    assert moved <= restored.keys() and all(restored.values()), restored
    migrated = {e["database"] for e in journal.of_kind("migration.applying")}
    assert {e["database"]: e["ok"] for e in journal.of_kind("database.restored")} == dict.fromkeys(
        migrated, True
    )
    assert record["state"] == "failed"
    if moved or migrated:
        assert record["rollback"]["complete"] is True
    if stage == "database backup":  # a dump that never verified is not kept
        assert not list((tmp_path / "backups").rglob("*.dump"))


def dump_that_does_not_verify(db: Database, backup: Any) -> None:
    raise DatabaseError(db.name, "verify", "orders: 500 rows in the dump, 499 restored")
