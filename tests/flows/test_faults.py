"""A fault at each step of a host's deploy, on a host of the first wave or the last, ends with
every host on its release from before the run and answering, and a record of each undo step.

The faults are injected by a shell wrapper, here in the tests: the production code paths run
as they are, and meet the failure where a real one would hit them (a full disk on upload, a
failed unpack, a connection lost right after the switch, a restart that fails)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flows.golive import go_live
from golive import transport
from golive.demo.fleet import DemoFleet
from golive.errors import HostCommandError, RunFailed
from golive.plan import Host, Plan
from golive.shell import Shell
from tests.flows.test_golive import only_run, serving


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


def step_of(command: str) -> str | None:
    if "tar xzf ../" in command:
        return "switch" if "golive: current switched" in command else "unpack"
    return "restart" if "app.py restart" in command else None


class FaultyShell:
    def __init__(self, inner: Shell, host: str, fault: Fault) -> None:
        self.inner, self.host, self.fault = inner, host, fault

    def run(self, command: str, timeout: float) -> str:
        step = step_of(command)
        if step == "switch" and self.fault.hits(self.host, "unpack"):
            raise HostCommandError(self.host, command, 2, "tar: unexpected end of file")
        if step is None or not self.fault.hits(self.host, step):
            return self.inner.run(command, timeout)
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
