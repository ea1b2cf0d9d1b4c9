"""The local golive server of the embedded default: started by the first run, reused by the
next, shown and stopped by `golive server`, stopped by itself once idle, and passed over (with
a word, and a record) when stale or another user's. Every command runs as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from golive.demo.fleet import DemoFleet
from golive.entries import checked
from golive.store import SERVERS, NewEntry, open_store
from tests.flows.test_golive import serving
from tests.golive.test_cli import GOLIVE, golive
from tests.runstore import runs, wait_for_gate


def embedded(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """golive on the embedded default: no Prefect API configured; Prefect's own files here."""
    return golive(
        *args, api=False, PREFECT_API_URL="", PREFECT_HOME=str(tmp_path / "prefect"), **env
    )


def one_host_plan(make_fleet: Callable[..., DemoFleet]) -> str:
    fleet = make_fleet(hosts=1)
    waves = [{"name": "all", "hosts": 1}]
    return str(fleet.write_plan("2.0.0", gates={}, waves=waves, soak=None, backups=[]))


def server_entries() -> list[tuple[str, dict[str, Any]]]:
    return [(entry.kind, entry.fields()) for entry in open_store().entries(SERVERS)]


def api_urls() -> list[str]:
    return [run.entries()[0]["api_url"].rstrip("/") for run in reversed(runs())]


def ended(pid: int, seconds: float = 90) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def killed_server() -> dict[str, Any]:
    """The one recorded server, killed (as by the OOM killer) and gone: its record."""
    [(_, server)] = server_entries()
    os.kill(server["pid"], signal.SIGKILL)
    assert ended(server["pid"])
    return server


def test_the_first_run_starts_a_server_that_the_next_reuses_until_it_is_stopped(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    plan = one_host_plan(make_fleet)

    first = embedded(tmp_path, "run", plan)
    second = embedded(tmp_path, "run", plan)
    status = embedded(tmp_path, "server", "status")
    [(kind, started)] = server_entries()
    stopped = embedded(tmp_path, "server", "stop")
    after = embedded(tmp_path, "server", "status")

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert kind == "server.started" and api_urls() == [started["url"]] * 2
    assert started["url"].removesuffix("/api") in status.stdout and "answering" in status.stdout
    assert f"Stopped the golive server at {started['url'].removesuffix('/api')}" in stopped.stdout
    assert ended(started["pid"])
    assert server_entries()[-1] == (
        "server.stopped",
        {key: started[key] for key in ("url", "pid", "machine")}
        | {"reason": "told to stop (SIGTERM)"},
    )
    assert "No golive server is running on this machine" in after.stdout


def test_an_idle_server_stops_itself_and_records_why(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    done = embedded(tmp_path, "run", one_host_plan(make_fleet), GOLIVE_SERVER_IDLE_SECONDS="15")
    [(_, started)] = server_entries()

    assert done.returncode == 0, done.stderr
    assert ended(started["pid"])
    assert server_entries()[-1][1]["reason"] == "idle for 15 s (GOLIVE_SERVER_IDLE_SECONDS)"


def test_a_server_killed_while_a_run_waits_at_its_gate_is_started_again_and_the_run_goes_on(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0", soak=None, backups=[])  # canary, gate go-ahead, the rest
    environment = os.environ | {"PREFECT_API_URL": "", "PREFECT_HOME": str(tmp_path / "prefect")}
    running = subprocess.Popen(
        [GOLIVE, "run", str(plan)],
        env=environment | {"COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        run_id = wait_for_gate(seconds=120)
        killed = killed_server()
        wait_until_answering(killed["url"].removesuffix("/api"), seconds=60)
        approved = embedded(tmp_path, "approve", run_id, "--as", "demo-approver")
        said = running.communicate(timeout=300)[0]
    finally:
        running.kill()

    assert approved.returncode == 0, approved.stdout + approved.stderr + said
    assert running.returncode == 0, said
    assert "stopped answering under this command: started again there" in said
    assert set(serving(fleet).values()) == {"2.0.0/2.0.0/ok"}
    assert [kind for kind, _ in server_entries()] == ["server.started", "server.started"]


def test_an_idle_limit_that_is_no_number_of_seconds_starts_no_server_and_runs_nothing(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    plan = one_host_plan(make_fleet)

    refused = [
        embedded(tmp_path, "run", plan, GOLIVE_SERVER_IDLE_SECONDS=v) for v in ("nan", "inf")
    ]

    for done in refused:
        assert done.returncode != 0 and "Traceback" not in done.stdout + done.stderr
        assert "is not accepted; accepted: a number of seconds above 0" in done.stderr
    assert server_entries() == [] and runs() == []


def test_a_rollback_quieter_than_the_idle_limit_keeps_its_server_until_it_ends(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    fleet = make_fleet(hosts=1)
    targets = fleet.template["targets"]
    slow = targets | {"restart": targets["restart"] + " && sleep 6"}  # no request meanwhile
    waves = [{"name": "all", "hosts": 1}]
    plan = fleet.write_plan("2.0.0", gates={}, waves=waves, soak=None, backups=[], targets=slow)
    live = embedded(tmp_path, "run", str(plan), GOLIVE_SERVER_IDLE_SECONDS="2")
    [run] = runs()

    back = embedded(tmp_path, "rollback", run.run_id, "--yes", GOLIVE_SERVER_IDLE_SECONDS="2")

    assert live.returncode == 0, live.stdout + live.stderr
    assert back.returncode == 0, back.stdout + back.stderr
    assert serving(fleet) == {"web1": "1.0.0/1.0.0/ok"}


def test_a_stale_server_is_passed_over_with_a_word_and_a_fresh_one_started(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    plan = one_host_plan(make_fleet)
    embedded(tmp_path, "run", plan)
    stale = killed_server()

    again = embedded(tmp_path, "run", plan)
    kinds = [kind for kind, _ in server_entries()]

    assert again.returncode == 0, again.stderr
    assert (
        f"golive server {stale['url'].removesuffix('/api')} (pid {stale['pid']}) not used: "
        "it does not answer: stale" in again.stderr
    )
    assert kinds == ["server.started", "server.passed_over", "server.started"]
    assert stale["url"] in api_urls() and len(set(api_urls())) == 2
    assert "Traceback" not in again.stderr


# A process that answers as a golive server would, naming the dead server's pid, without its key.
IMPOSTOR = """
import http.server, json, sys
port, pid = int(sys.argv[1]), int(sys.argv[2])
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"pid": pid, "uid": 0, "idle": 0, "proof": "0" * 64}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Answer).serve_forever()
"""


def test_a_process_that_takes_a_dead_servers_port_cannot_pass_for_it(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    plan = one_host_plan(make_fleet)
    embedded(tmp_path, "run", plan)
    dead = killed_server()
    port = dead["url"].removesuffix("/api").rsplit(":", 1)[1]
    impostor = subprocess.Popen([sys.executable, "-c", IMPOSTOR, port, str(dead["pid"])])
    try:
        wait_until_answering(dead["url"].removesuffix("/api"))
        again = embedded(tmp_path, "run", plan)
        status = embedded(tmp_path, "server", "status")
    finally:
        impostor.kill()

    assert again.returncode == 0, again.stderr
    assert "does not hold its key: not the server it started" in again.stderr
    assert api_urls()[0] != dead["url"]  # the newest run's
    assert status.stdout.count("answering") == 1


def wait_until_answering(address: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(address + "/golive-server", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answers at {address}")


def test_another_users_server_is_left_to_them_and_one_of_your_own_started(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    plan = one_host_plan(make_fleet)
    theirs = {"url": "http://127.0.0.1:9/api", "pid": os.getppid(), "machine": os.uname()[1]}
    fields = theirs | {"uid": os.getuid() + 1, "user": "mallory", "started_at": "", "log": ""}
    open_store(create=True).append(
        SERVERS, [NewEntry("server.started", *checked("server.started", fields))]
    )

    done = embedded(tmp_path, "run", plan)
    again = embedded(tmp_path, "run", plan)
    status = embedded(tmp_path, "server", "status")

    assert (done.returncode, again.returncode) == (0, 0), done.stderr + again.stderr
    assert f"belongs to mallory (uid {os.getuid() + 1}), not to you" in done.stderr
    assert "not used" not in again.stderr  # yours is found first from then on
    assert "mallory" in status.stdout and "answering" in status.stdout
    assert [kind for kind, _ in server_entries()] == [
        "server.started",
        "server.passed_over",
        "server.started",
    ]


def test_a_server_that_cannot_start_is_named_with_its_output_and_nothing_runs(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    plan = one_host_plan(make_fleet)
    nowhere = "postgresql+asyncpg://nobody@127.0.0.1:9/prefect"

    done = embedded(tmp_path, "run", plan, PREFECT_API_DATABASE_CONNECTION_URL=nowhere)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "the local golive server exited with code 3 while starting" in done.stderr
    assert "Traceback (most recent call last)" not in done.stderr.split("Its output")[0]
    assert runs() == [] and server_entries() == []
