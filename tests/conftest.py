"""Shared fixtures: a real Prefect API for the session, and a demo fleet of real local hosts
serving real HTTP for each test that needs one."""

from __future__ import annotations

import contextvars
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Some task tests run a task on its own, outside any flow run: nothing to send logs to.
# Prefect reads its settings when first imported, so this comes first.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# A local golive server a test's command starts outlives the test by a minute at most.
os.environ.setdefault("GOLIVE_SERVER_IDLE_SECONDS", "60")

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prefect.testing.utilities import prefect_test_harness

from golive import journal
from golive.demo.fleet import DemoFleet
from golive.journal import Entry, RunJournal
from golive.postgres import Database
from golive.registry import environment
from golive.store import open_store
from tasks.approvals import decide_gate
from tests.disks import small_filesystem
from tests.pg import database, empty_database, password_server, postgres_server
from tests.registry import register
from tests.sshd import SshdFleet, require_sshd

# Prefect's lease on a deployment's concurrency slot, shortened so that a test can outlast it.
DEPLOYMENT_LEASE_SECONDS = 30  # the least Prefect allows


@pytest.fixture(scope="session", autouse=True)
def prefect_api() -> Iterator[None]:
    os.environ["PREFECT_SERVER_CONCURRENCY_INITIAL_DEPLOYMENT_LEASE_DURATION"] = str(
        DEPLOYMENT_LEASE_SECONDS
    )
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def golive_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test's GOLIVE_HOME; after the test, any local golive server its commands started
    (under this home or another of the test's) is stopped, as a user would stop it."""
    home = tmp_path / "golive-home"
    monkeypatch.setenv("GOLIVE_HOME", str(home))
    yield home
    for lock in tmp_path.rglob("server/start.lock"):
        stop_servers(lock.parent.parent)


def stop_servers(home: Path) -> None:
    environment = os.environ | {"GOLIVE_HOME": str(home)}
    golive = Path(sys.executable).parent / "golive"
    subprocess.run([golive, "server", "stop"], env=environment, capture_output=True, timeout=120)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def make_fleet(tmp_path: Path) -> Iterator[Callable[..., DemoFleet]]:
    """make_fleet(hosts=4, configured=1, folder="hosts"): hosts web1..webN serving shop-web
    1.0.0; the first `configured` hosts have the setting that the broken 3.0.0 needs. Fleets
    in other folders (of the same root) stand for rehearsal environments. The demo plan's
    environment is registered in the run store as it is then (not production; unsigned and
    timeout decisions allowed; demo-approver, bob and dba may approve, without keys), and so
    is its rehearsal environment, demo-rehearsal."""
    fleets: list[DemoFleet] = []

    def make(hosts: int = 3, configured: int = 1, folder: str = "hosts") -> DemoFleet:
        if not environment("demo", open_store(create=True)).registered:
            register(
                "demo",
                approvers=dict.fromkeys(("demo-approver", "bob", "dba")),
                allow_unsigned=True,
                allow_timeout_approve=True,
            )
            register("demo-rehearsal")
        ports = {f"web{i}": free_port() for i in range(1, hosts + 1)}
        fleet = DemoFleet(tmp_path / "fleet", ports=ports, folder=folder)
        fleets.append(fleet)
        fleet.set_up("1.0.0", configured=configured)
        return fleet

    yield make
    for fleet in fleets:
        fleet.stop()


@dataclass(frozen=True)
class Verdict:
    verdict: str
    approver: str
    comment: str
    key: Ed25519PrivateKey | None


@pytest.fixture
def approver() -> Iterator[Callable[..., None]]:
    """approver(decision(...), ...): answer the gates a flow opens with these decisions, in
    turn, the way `golive approve` does from another terminal."""
    unsubscribers: list[Callable[[], None]] = []

    def decide(*decisions: Verdict) -> None:
        queue = list(decisions)

        def on_entry(entry: Entry) -> None:
            if entry["kind"] in ("gate.opened", "gate.refused", "gate.decision") and queue:
                v = queue.pop(0)
                args = (RunJournal.find(entry["run_id"]), v.verdict, v.approver, v.comment, v.key)
                context = contextvars.copy_context()
                threading.Thread(
                    target=context.run,
                    args=(decide_gate, *args),
                    kwargs={"wait_seconds": 60},
                    daemon=True,
                ).start()

        unsubscribers.append(journal.subscribe(on_entry))

    yield decide
    for unsubscribe in unsubscribers:
        unsubscribe()


def decision(
    verdict: str,
    approver: str = "demo-approver",
    comment: str = "",
    key: Ed25519PrivateKey | None = None,
) -> Verdict:
    return Verdict(verdict, approver, comment, key)


@pytest.fixture
def sshd_fleet(tmp_path: Path) -> Iterator[SshdFleet]:
    require_sshd()
    fleet = SshdFleet(tmp_path / "ssh")
    yield fleet
    fleet.stop()


@pytest.fixture
def make_ssh_fleet(
    make_fleet: Callable[..., DemoFleet], sshd_fleet: SshdFleet
) -> Callable[..., tuple[DemoFleet, dict[str, Any]]]:
    """make_ssh_fleet(hosts=5): a demo fleet whose hosts are reached through their own sshd;
    returns the fleet and the plan's `targets` section for it."""

    def make(hosts: int = 5, configured: int = 1) -> tuple[DemoFleet, dict[str, Any]]:
        fleet = make_fleet(hosts=hosts, configured=configured)
        inline = []
        for host in fleet.hosts:
            sshd_fleet.start(host.name)
            inline.append(
                sshd_fleet.inline_host(
                    host.name, path=str(fleet.host_dir(host.name)), vars=host.vars
                )
            )
        targets = fleet.template["targets"] | {
            "transport": "ssh",
            "path": "/srv/unused",
            "hosts": inline,
        }
        return fleet, targets

    return make


@pytest.fixture(scope="session")
def pg_server() -> Iterator[tuple[str, int, str]]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a filesystem of its own with 8 KiB left: a full disk, for real."""
    with small_filesystem(tmp_path / "full-disk", kib=256) as folder:
        (folder / "filler").write_bytes(bytes(248 * 1024))
        yield folder


PG_PASSWORD = "planted-pg-password-8f3a"  # also searched for in everything a run leaves


@pytest.fixture(scope="session")
def pg_password_server() -> Iterator[tuple[str, int, str]]:
    with password_server(PG_PASSWORD) as server:
        yield server


@pytest.fixture
def guarded_db(pg_password_server: tuple[str, int, str]) -> Iterator[Database]:
    """Like shop_db, on a server that lets nobody in without the password."""
    with database(pg_password_server, password=PG_PASSWORD) as db:
        yield db


@pytest.fixture
def shop_db(pg_server: tuple[str, int, str]) -> Iterator[Database]:
    """A fresh database with customers and orders, named `shop` in plans."""
    with database(pg_server) as db:
        yield db


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(
    request: pytest.FixtureRequest, golive_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The run store's URL, set in GOLIVE_STORE_URL: SQLite under GOLIVE_HOME, or a fresh
    PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{golive_home / 'store.db'}"
        monkeypatch.setenv("GOLIVE_STORE_URL", url)
        yield url
        return
    with empty_database(request.getfixturevalue("pg_server")) as url:
        monkeypatch.setenv("GOLIVE_STORE_URL", url)
        yield url
