"""The `golive` command as users type it: real subprocesses against the session's Prefect API."""

from __future__ import annotations

import contextvars
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from prefect.settings import PREFECT_API_URL

from flows.golive import go_live
from golive import journal
from golive.demo.fleet import DemoFleet
from golive.journal import Entry
from tests.conftest import free_port
from tests.flows.test_golive import logs_of
from tests.pg import empty_database
from tests.redis_server import redis_server
from tests.registry import register
from tests.runstore import runs, wait_for_gate

GOLIVE = str(Path(sys.executable).parent / "golive")
DEMO_PLAN = Path(__file__).parents[2] / "configs" / "demo.yaml"


def golive(*args: str, api: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    environment = os.environ | env | {"COLUMNS": "200"}
    if api:
        environment["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    return subprocess.run(
        [GOLIVE, *args], capture_output=True, text=True, env=environment, timeout=300
    )


def test_validate_accepts_the_demo_plan_and_shows_its_waves(tmp_path: Path) -> None:
    register("demo", approvers={"demo-approver": None}, allow_unsigned=True)
    plan = DemoFleet(tmp_path).write_plan("2.0.0")  # beside the artifact it names
    done = golive("validate", str(plan), api=False)
    assert done.returncode == 0, done.stderr
    assert (
        "shop-web 2.0.0 → demo, 3 hosts in 2 waves: canary [web1] → rest [web2, web3]"
        in done.stdout
    )


def test_validate_prints_every_problem_with_its_path_and_exits_2(tmp_path: Path) -> None:
    register("demo", approvers={"demo-approver": None}, allow_unsigned=True)
    plan = yaml.safe_load(DemoFleet(tmp_path).write_plan("2.0.0", rehearsal=None).read_text())
    plan["waves"][1]["hosts"] = "150%"
    plan["gates"]["go-ahead"]["timeout"] = "forever"
    plan["targets"]["transport"] = "carrier-pigeon"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(plan))

    done = golive("validate", str(tmp_path / "bad.yaml"), api=False)

    assert done.returncode == 2
    assert "4 problems, nothing was run" in done.stderr
    # A bad transport hides nothing: the waves are still checked against the hosts' names.
    for path in ("targets.transport:", "gates.go-ahead.timeout:", "waves[1].hosts: '150%'"):
        assert path in done.stderr


def test_run_refuses_a_prefect_api_url_that_is_not_a_prefect_api_and_runs_nothing(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    plan = str(make_fleet(hosts=2).write_plan("2.0.0", soak=None))
    not_prefect = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    threading.Thread(target=not_prefect.serve_forever, daemon=True).start()
    nothing_there = f"http://127.0.0.1:{free_port()}/api"
    elsewhere = f"http://127.0.0.1:{not_prefect.server_port}/api"

    refused = golive("run", plan, api=False, PREFECT_API_URL=nothing_there)
    wrong = golive("run", plan, api=False, PREFECT_API_URL=elsewhere)
    not_prefect.shutdown()

    assert refused.returncode == 1 and wrong.returncode == 1
    assert f"the Prefect API at {nothing_there} (PREFECT_API_URL) cannot be used" in refused.stderr
    assert "Connection refused" in refused.stderr
    assert "/api/health answered HTTP 404" in wrong.stderr
    assert "Traceback" not in refused.stderr + wrong.stderr
    assert runs() == []  # nothing was run


def test_validate_does_not_load_prefect() -> None:
    code = (
        "import sys; from golive.cli import main\n"
        f"try: main(['validate', {str(DEMO_PLAN)!r}])\n"
        "except SystemExit: pass\n"
        "print('prefect loaded' if 'prefect' in sys.modules else 'prefect not loaded')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().endswith("prefect not loaded"), done.stdout + done.stderr


def test_validate_names_a_plan_file_that_does_not_exist(tmp_path: Path) -> None:
    done = golive("validate", str(tmp_path / "nope.yaml"), api=False)
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_run_exits_1_and_says_what_was_rolled_back(make_fleet: Callable[..., DemoFleet]) -> None:
    fleet = make_fleet(hosts=2)
    waves = [{"name": "canary", "hosts": 1}, {"name": "rest", "hosts": "100%"}]
    plan = fleet.write_plan("3.0.0", gates={}, waves=waves, soak=None)

    done = golive("run", str(plan), "--as", "alice", GOLIVE_HOME=os.environ["GOLIVE_HOME"])

    assert done.returncode == 1, done.stdout + done.stderr
    assert "smoke check 'health' failed on host 'web2'" in done.stdout
    assert "Rolled back, last wave first: web2, web1." in done.stdout
    assert "Prefect UI:" in done.stdout and "record:" in done.stdout


def test_run_exits_0_when_the_release_goes_live(make_fleet: Callable[..., DemoFleet]) -> None:
    fleet = make_fleet(hosts=2)
    done = golive(
        "run",
        str(
            fleet.write_plan("2.0.0", gates={}, waves=[{"name": "all", "hosts": "100%"}], soak=None)
        ),
        GOLIVE_HOME=os.environ["GOLIVE_HOME"],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "■ completed" in done.stdout


def test_approve_from_another_process_lets_a_paused_run_go_on(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    run, flow = run_in_background(fleet.write_plan("2.0.0", soak=None))

    done = golive(
        "approve",
        run["id"][:8],
        "--as",
        "demo-approver",
        "--comment",
        "ship it",
        api=False,
        GOLIVE_HOME=os.environ["GOLIVE_HOME"],
    )
    flow.join(timeout=120)

    assert done.returncode == 0, done.stderr
    assert f"approved gate 'go-ahead' of run {run['id']} as demo-approver" in done.stdout
    assert run["record"]["state"] == "completed"
    decision = next(g for g in run["record"]["gates"] if g["kind"] == "gate.decision")
    assert (decision["approver"], decision["comment"]) == ("demo-approver", "ship it")


def test_approve_names_an_unknown_run_or_gate_and_submits_nothing(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=1)
    go_live(
        str(fleet.write_plan("2.0.0", gates={}, waves=[{"name": "all", "hosts": 1}], soak=None))
    )
    [run_dir] = list((Path(os.environ["GOLIVE_HOME"]) / "runs").iterdir())
    home = {"GOLIVE_HOME": os.environ["GOLIVE_HOME"]}

    unknown = golive("approve", "feedface", "--as", "bob", **home)
    wrong_gate = golive("approve", run_dir.name, "--as", "bob", "--gate", "qa", **home)
    finished = golive("approve", run_dir.name, "--as", "bob", **home)

    assert unknown.returncode == 2 and "no run 'feedface'" in unknown.stderr
    assert wrong_gate.returncode == 2
    assert f"run {run_dir.name} has no gate 'qa'; its gates: none" in wrong_gate.stderr
    assert finished.returncode == 2 and "is not waiting at a gate" in finished.stderr


def test_status_lists_runs_and_shows_one(make_fleet: Callable[..., DemoFleet]) -> None:
    fleet = make_fleet(hosts=1)
    go_live(
        str(fleet.write_plan("2.0.0", gates={}, waves=[{"name": "all", "hosts": 1}], soak=None))
    )
    [run_dir] = list((Path(os.environ["GOLIVE_HOME"]) / "runs").iterdir())
    home = {"GOLIVE_HOME": os.environ["GOLIVE_HOME"]}

    listing = golive("status", api=False, **home)
    shown = golive("status", run_dir.name[:6], api=False, **home)

    assert run_dir.name[:8] in listing.stdout and "completed" in listing.stdout
    assert "shop-web 2.0.0 → demo: COMPLETED" in shown.stdout


def test_the_demo_tells_both_stories_and_then_puts_its_hosts_back_on_the_first_release(
    tmp_path: Path,
) -> None:
    done = golive(
        "demo",
        api=False,
        GOLIVE_HOME=str(tmp_path / "home"),
        PREFECT_HOME=str(tmp_path / "prefect"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "went live" in done.stdout
    assert "failed in wave 2, rolled back automatically" in done.stdout
    assert "demo: approving gate go-ahead as demo-approver" in done.stdout
    assert "Hosts now serve: web1 2.0.0, web2 2.0.0, web3 2.0.0" in done.stdout
    fleet = DemoFleet(tmp_path / "home" / "demo")  # ready for its plans to be run by hand
    linked = {(fleet.host_dir(h.name) / "current").resolve().name for h in fleet.hosts}
    assert linked == {"1.0.0"}
    assert "The hosts are back on 1.0.0 (stopped)" in done.stdout


def test_run_exits_3_when_hosts_were_taken_out_within_the_failure_budget(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=3, configured=3)
    (fleet.host_dir("web3") / "shared" / "settings.json").write_text("{}")  # 3.0.0 fails there
    waves = [{"name": "canary", "hosts": 1}, {"name": "rest", "hosts": "100%", "max_fail": 1}]

    done = golive(
        "run",
        str(fleet.write_plan("3.0.0", gates={}, waves=waves, soak=None)),
        GOLIVE_HOME=os.environ["GOLIVE_HOME"],
    )

    assert done.returncode == 3, done.stdout + done.stderr
    assert "web3 taken out of the rollout" in done.stdout
    assert "Live, but not on web3" in done.stdout


def test_keygen_then_a_signed_run_and_a_signed_approve_from_other_processes_pass_production(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    secret = {"BOB_PASSPHRASE": "correct horse"}
    key = ("--key", str(tmp_path / "bob.key"), "--passphrase-env", "BOB_PASSPHRASE")
    made = golive("keygen", "bob", "--out", key[1], "--passphrase-env", key[3], api=False, **secret)
    alice = golive("keygen", "alice", "--out", str(tmp_path / "alice.key"), "--no-passphrase")
    assert made.returncode == 0 and alice.returncode == 0, made.stderr + alice.stderr
    public = made.stdout.split('public_key: "')[1].split('"')[0]
    alice_public = alice.stdout.split('public_key: "')[1].split('"')[0]
    fleet = make_fleet(hosts=2)
    approvers = {"bob": {"public_key": public}, "alice": {"public_key": alice_public}}
    register("production", production=True, approvers=approvers)
    gates = {"go-ahead": {"approvers": ["bob"], "timeout": "2m"}}
    plan = fleet.write_plan("2.0.0", environment="production", gates=gates, soak=None)
    unsigned = golive("run", str(plan), "--as", "alice")
    running = subprocess.Popen(
        [GOLIVE, "run", str(plan), "--as", "alice", "--key", str(tmp_path / "alice.key")],
        env=os.environ | {"PREFECT_API_URL": str(PREFECT_API_URL.value())},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run_id = wait_for_gate(seconds=120)

    waiting = golive("status", run_id, api=False)
    bad = golive("approve", run_id, "--as", "bob", "--key", str(plan), api=False)
    done = golive("approve", run_id, "--as", "bob", *key, "--comment", "canary fine", **secret)
    said = running.communicate(timeout=120)[0]

    assert unsigned.returncode == 1 and "must be started by a proven releaser" in unsigned.stdout
    assert "Gate go-ahead: shop-web 2.0.0 → production" in waiting.stdout
    assert "Waves to come: rest [web2]" in waiting.stdout and "--key KEYFILE" in waiting.stdout
    assert bad.returncode == 2 and "is not a golive key" in bad.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    assert running.returncode == 0, said
    refused, run = runs()
    assert [e["state"] for e in refused.of_kind("run.finished")] == ["refused"]
    started, *_, ended = run.entries()
    assert started["trigger"]["proven"] == "alice" and ended["state"] == "completed"
    [decided] = list(run.of_kind("gate.decision"))
    assert decided["approver"] == "bob" and decided["signature"]


def run_in_background(plan: Path) -> tuple[dict[str, Any], threading.Thread]:
    """Start a go-live in a thread; return once it waits at its gate."""
    opened = threading.Event()
    run: dict[str, Any] = {}

    def on_entry(entry: Entry) -> None:
        if entry["kind"] == "gate.opened":
            run["id"] = entry["run_id"]
            opened.set()

    unsubscribe = journal.subscribe(on_entry)
    context = contextvars.copy_context()
    flow = threading.Thread(
        target=lambda: run.update(record=context.run(go_live, str(plan), triggered_by="alice"))
    )
    flow.start()
    assert opened.wait(timeout=120)
    unsubscribe()
    return run, flow


def test_a_run_of_forty_hosts_by_range_is_shown_by_wave_with_failures_first(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)  # the demo environment, and its artifacts
    for number in range(1, 41):
        (fleet.root / "many" / f"web{number:02}").mkdir(parents=True)
    targets = fleet.template["targets"] | {
        "path": "many",
        "hosts": ["web[01:40]"],
        # One host of forty fails to start the new release (and starts the old one again).
        "restart": '[ {name} != web07 ] || [ "$(basename "$(readlink current)")" != 2.0.0 ]',
    }
    waves = [{"name": "canary", "hosts": 1}, {"name": "rest", "hosts": "100%", "max_fail": 1}]
    plan = fleet.write_plan(
        "2.0.0", targets=targets, waves=waves, gates={}, smoke=[], soak=None, backups=[]
    )
    checked = golive("validate", str(plan), api=False)
    done = golive("run", str(plan), GOLIVE_HOME=os.environ["GOLIVE_HOME"])
    lines = done.stdout.splitlines()
    [run] = runs()
    logged = logs_of(run.run_id, until="■ completed").splitlines()  # the run's Logs tab

    assert "rest [web02, web03, web04, … web40: 39 hosts]" in checked.stdout, checked.stdout
    assert done.returncode == 3, done.stdout + done.stderr  # live, one host taken out
    assert "✓ wave canary: 1 host(s) live" in lines
    assert "── wave rest: 39 hosts" in lines
    assert "✓ wave rest: 38 host(s) live; taken out: web07" in lines
    assert any("✗ deploy web07" in line for line in lines)  # the failure, as it happened
    assert not any("✓ deploy web2" in line for line in lines)  # no line per host that went well
    assert len(lines) < 60, done.stdout
    assert "✓ wave rest: 38 host(s) live; taken out: web07" in logged
    assert "── wave rest: 39 hosts" in logged
    assert not any("web2" in line for line in logged), logged  # nothing per host that went well
    report = (run.run_dir / "report.md").read_text()  # hosts by outcome, the odd one first
    outcomes = report.split("by what happened to them:", 1)[1].split("|---|---|---|---|\n")[1]
    assert outcomes.startswith("| none | taken out | none | 1: web07 |"), report
    assert "deploy \N{MULTIPLICATION SIGN}39" in report and "| deploy | web07 | failed" in report


def test_check_names_each_setting_that_does_not_answer_and_exits_1(tmp_path: Path) -> None:
    closed = free_port()
    server_machine = {
        "GOLIVE_HOME": str(tmp_path / "home"),
        "GOLIVE_STORE_URL": f"postgresql://golive@127.0.0.1:{closed}/golive?password=planted-pw",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": (
            f"postgresql+asyncpg://prefect:planted-db-password@127.0.0.1:{closed}/prefect"
        ),
        "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1",
        "PREFECT_REDIS_MESSAGING_PORT": str(closed),
    }

    done = golive("check", api=False, **server_machine)

    assert done.returncode == 1, done.stdout + done.stderr
    assert f"✗ GOLIVE_STORE_URL = postgresql://golive@127.0.0.1:{closed}/golive:" in done.stdout
    database = "✗ PREFECT_SERVER_DATABASE_CONNECTION_URL = postgresql+asyncpg://prefect:***@"
    assert database in done.stdout
    assert f"✗ PREFECT_REDIS_MESSAGING_HOST/_PORT/_DB = redis://127.0.0.1:{closed}/0" in done.stdout
    assert "Nothing was started" in done.stdout
    assert "planted-db-password" not in done.stdout + done.stderr
    assert "planted-pw" not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_check_passes_on_the_machines_postgresql_and_redis_with_a_store_yet_to_be_made(
    pg_server: tuple[str, int, str], tmp_path: Path
) -> None:
    host, port, user = pg_server
    with redis_server() as (redis_host, redis_port), empty_database(pg_server) as store:
        done = golive(
            "check",
            GOLIVE_HOME=str(tmp_path / "home"),
            GOLIVE_STORE_URL=store,
            PREFECT_SERVER_DATABASE_CONNECTION_URL=(
                f"postgresql+asyncpg://{user}@{host}:{port}/postgres"
            ),
            PREFECT_REDIS_MESSAGING_HOST=redis_host,
            PREFECT_REDIS_MESSAGING_PORT=str(redis_port),
            PREFECT_SERVER_DOCKET_URL=f"redis://{redis_host}:{redis_port}/1",
        )

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("✓") == 5  # the store, the API, the database, Redis twice
    assert "(empty: the first run creates the store)" in done.stdout
