"""Prefect as users run it, in processes of their own: the `prefect` and `golive` commands,
`prefect server start`, and process workers on the golive pool of a deployed checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

from tests.conftest import free_port
from tests.flows.test_golive import flow_runs_named

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[1]
NOT_COPIED = shutil.ignore_patterns(".venv", ".git", "*cache*", "__pycache__", "*.egg-info")


def fresh_checkout(folder: Path) -> Path:
    """A fresh copy of the project in `folder`, as a clone would have it."""
    shutil.copytree(ROOT, folder, ignore=NOT_COPIED)
    return folder


def prefect(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def golive(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """The golive command, run as a user would, in a process of its own."""
    return subprocess.run(
        [str(BIN / "golive"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def finished(flow_run_id: UUID, seconds: float = 180) -> FlowRun:
    """The flow run, once it has reached a final state."""
    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(0.5)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {seconds} s")


class Pool:
    """The deployments of a fresh checkout, and real process workers on their pool. Called,
    it runs the `prefect` command in the checkout."""

    def __init__(self, checkout: Path, environment: dict[str, str]) -> None:
        self.checkout, self.environment = checkout, environment
        self.workers: list[subprocess.Popen[bytes]] = []

    def __call__(self, *args: str) -> None:
        prefect(*args, cwd=self.checkout, env=self.environment)

    def start_worker(self, *options: str, **settings: str) -> subprocess.Popen[bytes]:
        """A worker with these options, the pool's settings and these (another machine's)."""
        started = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "golive", *options],
            cwd=self.checkout,
            env=self.environment | settings,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers.append(started)
        return started

    def stop(self) -> None:
        for started in self.workers:
            started.terminate()
            started.wait(timeout=60)


def started_run(name: str, seconds: float = 180) -> FlowRun:
    """The flow run of that name, once Prefect has it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = flow_runs_named(name)
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no flow run {name!r} within {seconds} s")


def healthy(url: str, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(
        f"prefect server start did not answer at {url} in {seconds} s:\n{log.read_text()[-3000:]}"
    )


@contextmanager
def server_started(environment: dict[str, str], log: Path) -> Iterator[str]:
    """`prefect server start` on a free port with these settings (its scheduler and other
    services run, unlike the test harness's server); its API URL. The server's output goes to
    `log`, shown when it does not come up."""
    port = str(free_port())
    url = f"http://127.0.0.1:{port}/api"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
            env=environment | {"PREFECT_API_URL": url},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        healthy(url, log)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)


def triggered(deployment: str, **parameters: str) -> UUID:
    """A run of the deployment, as the UI's Run button makes one; its flow run id. A server on
    SQLite answers 503 while its database is busy (twenty runs at once on a loaded machine):
    the button would be pressed again, so the client tries more often than its default."""
    with (
        temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 12}),
        get_client(sync_client=True) as client,
    ):
        found = client.read_deployment_by_name(deployment)
        return client.create_flow_run_from_deployment(found.id, parameters=parameters).id
