"""compose.yaml's set-up, run on this machine without Docker: a Prefect server on a throwaway
PostgreSQL database with Redis for its messaging, golive's run store on PostgreSQL, and two
process workers (two machines: each a GOLIVE_HOME of its own) on the golive pool of a fresh
checkout. The settings are compose.yaml's own, its host names swapped for this machine's
services; the same load runs on the embedded default (SQLite) for comparison."""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from golive.demo.fleet import DemoFleet
from golive.journal import RunJournal, run_store
from tests.conftest import free_port
from tests.flows.test_golive import logs_of, serving
from tests.pg import empty_database, postgres_server
from tests.prefect_server import (
    ROOT,
    Pool,
    finished,
    fresh_checkout,
    golive,
    server_started,
    started_run,
    triggered,
)
from tests.redis_server import empty_databases, redis_server
from tests.registry import register
from tests.runstore import runs

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
WAVES = [{"name": "canary", "hosts": 1}, {"name": "rest", "hosts": "100%"}]
EMBEDDED_RUNS_PER_WORKER = 4  # README, "Many machines"
EMBEDDED_CLIENT_TRIES = "12"  # the same: Prefect's client tries 5 times by default
ONE_WAVE = [{"name": "all", "hosts": "100%"}]


@dataclass
class Cluster:
    """A Prefect server, the run store, and the workers of a deployed checkout."""

    pool: Pool
    api_url: str
    store_url: str

    def machine(self, home: Path) -> dict[str, str]:
        """What another machine that runs golive sets."""
        return self.pool.environment | {"GOLIVE_HOME": str(home)}

    def trigger(self, plan: Path) -> UUID:
        return triggered("go-live/go-live", plan_path=str(plan))


def base_environment() -> dict[str, str]:
    unset = {"PYTHONPATH", "GOLIVE_HOME", "GOLIVE_STORE_URL", "PREFECT_API_URL"}
    return {k: v for k, v in os.environ.items() if k not in unset}


def server_settings(database_url: str, redis: tuple[str, int], dbs: list[int]) -> dict[str, str]:
    """compose.yaml's settings of the Prefect server, for this machine's services."""
    settings = dict(COMPOSE["x-prefect-server-settings"])
    (host, port), (messaging, docket) = redis, dbs
    here = {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url.replace(
            "postgresql://", "postgresql+asyncpg://", 1
        ),
        "PREFECT_REDIS_MESSAGING_HOST": host,
        "PREFECT_REDIS_MESSAGING_PORT": str(port),
        "PREFECT_REDIS_MESSAGING_DB": str(messaging),
        "PREFECT_SERVER_DOCKET_URL": f"redis://{host}:{port}/{docket}",
    }
    assert here.keys() <= settings.keys(), "compose.yaml no longer sets these"
    return settings | here


def golive_settings(api_url: str, store_url: str) -> dict[str, str]:
    """compose.yaml's settings of every machine that runs golive, for this machine."""
    here = {"PREFECT_API_URL": api_url, "GOLIVE_STORE_URL": store_url}
    assert COMPOSE["x-golive-settings"].keys() == here.keys()
    return here


@contextmanager
def cluster_of(
    folder: Path, server: dict[str, str], store_url: str, *worker_options: str, **workers: str
) -> Iterator[Cluster]:
    """`prefect server start` with these settings, a fresh checkout deployed there, and two
    workers with these options and settings, machines of their own that share only the
    Prefect API and the run store."""
    environment = base_environment() | {"PREFECT_HOME": str(folder / "server-home")}
    checked(environment | server | {"GOLIVE_HOME": str(folder / "server-golive")})
    with server_started(environment | server, folder / "server.log") as url:
        machines = base_environment() | golive_settings(url, store_url)
        pool = Pool(
            fresh_checkout(folder / "checkout"),
            machines
            | {
                "PREFECT_HOME": str(folder / "prefect-home"),
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "GOLIVE_LEASE_SECONDS": "5",  # a killed run's lease runs out soon
            },
        )
        try:
            pool("work-pool", "create", "golive", "--type", "process", "--overwrite")
            pool("deploy", "--all")
            checked(pool.environment)  # as compose.yaml does before each worker
            for number in (1, 2):
                home = str(folder / f"worker-{number}")
                pool.start_worker(*worker_options, **workers, GOLIVE_HOME=home)
            with temporary_settings({PREFECT_API_URL: url}):
                yield Cluster(pool, url, store_url)
        finally:
            pool.stop()


def checked(machine: dict[str, str]) -> None:
    """`golive check` with a machine's settings, as compose.yaml runs it before starting."""
    done = golive("check", env=machine, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def distributed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """compose.yaml's set-up: PostgreSQL for the Prefect server and the run store, Redis."""
    folder = tmp_path_factory.mktemp("distributed")
    with (
        postgres_server() as postgres,
        empty_database(postgres) as prefect_database,
        empty_database(postgres) as store_url,
        redis_server() as redis,
        empty_databases(redis, 2) as numbers,
    ):
        settings = server_settings(prefect_database, redis, numbers)
        with cluster_of(folder, settings, store_url) as cluster:
            yield cluster


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The default: a Prefect server on its SQLite database, the run store on SQLite. Its
    workers take at most 4 runs each: with more at once, Prefect's own SQLite database stays
    locked until its server answers 503 and a worker reports a run Crashed before it began."""
    folder = tmp_path_factory.mktemp("embedded")
    store = f"sqlite:///{folder / 'store.db'}"
    limit = ("--limit", str(EMBEDDED_RUNS_PER_WORKER))
    tries = {"PREFECT_CLIENT_MAX_RETRIES": EMBEDDED_CLIENT_TRIES}
    with cluster_of(folder, {}, store, *limit, **tries) as cluster:
        yield cluster


@pytest.fixture
def fleets(tmp_path: Path) -> Iterator[Callable[..., DemoFleet]]:
    """fleets(environment, hosts=2): that environment registered in the run store, and its
    hosts serving shop-web 1.0.0."""
    made: list[DemoFleet] = []

    def fleet(environment: str, hosts: int = 2) -> DemoFleet:
        register(environment, approvers={"demo-approver": None}, allow_unsigned=True)
        ports = {f"web{n}": free_port() for n in range(1, hosts + 1)}
        made.append(DemoFleet(tmp_path / environment, ports))
        made[-1].set_up("1.0.0")
        return made[-1]

    yield fleet
    for each in made:
        each.stop()


def plan_of(fleet: DemoFleet, environment: str, waves: list[dict[str, Any]] = WAVES) -> Path:
    return fleet.write_plan(
        "2.0.0", environment=environment, soak=None, backups=[], gates={}, waves=waves
    )


def test_two_environments_go_live_at_once_and_a_third_run_on_a_busy_one_is_refused(
    distributed: Cluster, fleets: Callable[..., DemoFleet], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOLIVE_STORE_URL", distributed.store_url)
    blue, green = fleets("blue"), fleets("green")
    waves = [{"name": "canary", "hosts": 1, "pause": "10s"}, {"name": "rest", "hosts": "100%"}]
    plans = [plan_of(blue, "blue", waves), plan_of(green, "green", waves)]
    flow_runs = [distributed.trigger(plan) for plan in [*plans, plans[1]]]
    ended = [finished(flow_run, seconds=300) for flow_run in flow_runs]
    journal = {run.run_id: run.entries() for run in runs()}
    blue_run, *green_runs = (journal[str(flow_run)] for flow_run in flow_runs)
    [went_live] = [e for e in green_runs if e[-1]["state"] == "completed"]
    [refused] = [e for e in green_runs if e[-1]["state"] == "refused"]
    verified = golive("audit", "verify", env=distributed.pool.environment, timeout=120)

    assert blue_run[-1]["state"] == "completed"
    assert blue_run[0]["at"] < went_live[-1]["at"] and went_live[0]["at"] < blue_run[-1]["at"]
    assert went_live[0]["run_id"] in refused[-1]["reason"]  # names the run that holds green
    assert [run.state_name for run in ended].count("Completed") == 2
    assert set(serving(blue).values()) == set(serving(green).values()) == {"2.0.0/2.0.0/ok"}
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_run_whose_worker_is_killed_mid_run_is_rolled_back_by_the_other_worker(
    distributed: Cluster,
    fleets: Callable[..., DemoFleet],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("GOLIVE_STORE_URL", distributed.store_url)
    fleet = fleets("amber")
    waves = [{"name": "canary", "hosts": 1, "pause": "5m"}, {"name": "rest", "hosts": "100%"}]
    run_id = str(distributed.trigger(plan_of(fleet, "amber", waves)))
    wait_for(lambda: any(RunJournal(run_id, run_store()).of_kind("wave.pause")))
    mixed = serving(fleet)
    [victim] = [w for w in distributed.pool.workers if child_pids(w.pid)]
    for pid in [*child_pids(victim.pid), victim.pid]:  # the machine dies with its run
        os.kill(pid, signal.SIGKILL)
    victim.wait(timeout=30)
    try:
        distributed.pool("deployment", "run", "rollback/rollback", "--param", f"run_id={run_id}")
        undone = finished(started_run(f"rollback {run_id}").id, seconds=300)
    finally:
        distributed.pool.start_worker(GOLIVE_HOME=str(tmp_path / "replacement"))
    status = golive("status", run_id, env=distributed.machine(tmp_path / "auditor"), timeout=120)

    assert mixed == {"web1": "2.0.0/2.0.0/ok", "web2": "1.0.0/1.0.0/ok"}
    assert undone.state_name == "Completed", story_of(undone)
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    assert "rolled back" in status.stdout, status.stdout + status.stderr


def story_of(run: FlowRun) -> str:
    """How a flow run ended and its logs: what a failed assertion about it should show (a
    rollback here once failed under load, and CI kept only the assertion)."""
    said = logs_of(str(run.id), until="Finished in state", seconds=30)
    return f"{run.state_name}: {run.state.message if run.state else ''}\n{said}"


@pytest.mark.parametrize("setup", ["distributed", "embedded"])
def test_twenty_go_lives_triggered_at_once_all_complete_with_every_entry_once(
    setup: str,
    request: pytest.FixtureRequest,
    fleets: Callable[..., DemoFleet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster: Cluster = request.getfixturevalue(setup)
    monkeypatch.setenv("GOLIVE_STORE_URL", cluster.store_url)
    environments = [f"load-{setup}-{n:02d}" for n in range(1, 21)]
    plans = [
        plan_of(fleets(name, hosts=1), name, [{"name": "all", "hosts": "100%"}])
        for name in environments
    ]
    triggered = time.time()
    flow_runs = [cluster.trigger(plan) for plan in plans]
    ended = [finished(flow_run, seconds=900) for flow_run in flow_runs]
    ours = {str(flow_run) for flow_run in flow_runs}
    stored = [row for row in run_store().run_rows() if row.environment in environments]
    journals = [RunJournal(row.run_id, run_store()).entries() for row in stored]
    verified = golive("audit", "verify", env=cluster.pool.environment, timeout=300)
    print(throughput(setup, triggered, journals))

    assert [run.state_name for run in ended] == ["Completed"] * 20
    assert sorted(row.run_id for row in stored) == sorted(ours)  # each run once, none lost
    assert [e[-1]["state"] for e in journals] == ["completed"] * 20
    assert len({tuple(entry["kind"] for entry in e) for e in journals}) == 1  # all alike
    assert verified.returncode == 0, verified.stdout + verified.stderr


def throughput(setup: str, triggered: float, journals: list[list[dict[str, Any]]]) -> str:
    """Runs per minute, and golive's own time per run (p50, p95): the run's time in the store
    less its hosts' deploy and smoke steps."""
    ends = [at(e[-1]) for e in journals]
    overheads = [at(e[-1]) - at(e[0]) - host_seconds(e) for e in journals]
    cuts = statistics.quantiles(overheads, n=20)
    per_minute = len(journals) / (max(ends) - triggered) * 60
    return (
        f"{setup}: {len(journals)} go-lives at once, {per_minute:.1f} per minute; overhead per "
        f"run p50 {statistics.median(overheads):.2f} s, p95 {cuts[-1]:.2f} s"
    )


def host_seconds(entries: list[dict[str, Any]]) -> float:
    started: dict[tuple[str, str], float] = {}
    total = 0.0
    for entry in entries:
        step = (entry.get("stage"), entry.get("host"))
        if entry["kind"] == "step.started" and step[0] in {"deploy", "smoke"}:
            started[step] = at(entry)
        elif entry["kind"] == "step.finished" and step in started:
            total += at(entry) - started.pop(step)
    return total


def at(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["at"]).timestamp()


def wait_for(condition: Callable[[], bool], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still not so after {seconds} s"
        time.sleep(0.5)


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid`: a worker's flow runs."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found
