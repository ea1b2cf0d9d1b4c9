"""`golive audit` and the run store as its users meet them: real go-lives on real hosts, read
back by `golive` processes, including one standing for another machine (its own empty
GOLIVE_HOME, only the store's URL and the Prefect API), and exports read by Chromium."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from flows.golive import go_live
from golive.audit import read_jsonl
from golive.demo.fleet import DemoFleet
from golive.journal import run_store
from tests.flows.test_golive import serving
from tests.runstore import go_live_in_background, runs, wait_for_gate, write_run
from tests.unavailable import unavailable

GOLIVE = str(Path(sys.executable).parent / "golive")
ROOT = Path(__file__).parents[2]
ONE_WAVE = {"gates": {}, "soak": None, "waves": [{"name": "all", "hosts": "100%"}]}


def golive(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = os.environ | {"COLUMNS": "200"} | env
    done = subprocess.run(
        [GOLIVE, *args], capture_output=True, text=True, env=environment, timeout=300
    )
    assert "Traceback" not in done.stdout + done.stderr
    return done


def other_machine(tmp_path: Path) -> dict[str, str]:
    """The environment of a process on another machine: nothing of this one's GOLIVE_HOME,
    only the store's URL (set by the any_store fixture) and, where asked, the Prefect API."""
    home = tmp_path / "other-machine"
    home.mkdir()
    return {"GOLIVE_HOME": str(home), "GOLIVE_STORE_URL": os.environ["GOLIVE_STORE_URL"]}


def test_a_full_go_live_leaves_a_chain_that_verifies_and_a_timeline_to_read(
    any_store: str, make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    fleet = make_fleet(hosts=2)
    heads = tmp_path / "elsewhere" / "heads.log"
    heads.parent.mkdir()
    audit = {"audit": {"head_file": str(heads)}}
    go_live(str(fleet.write_plan("2.0.0", **ONE_WAVE, **audit)), triggered_by="alice")
    [run] = runs()
    published = heads.read_text().split()[3]

    verified = golive("audit", "verify", "--head", published)
    shown = golive("audit", "show", run.run_id[:8])

    assert verified.returncode == 0, verified.stderr
    assert "1 runs, " in verified.stdout and "links verify; latest head: link " in verified.stdout
    assert shown.returncode == 0, shown.stderr
    for step in ("✓ preflight", "✓ backup web1", "✓ deploy web2", "✓ smoke web1", "completed"):
        assert step in shown.stdout
    started = next(run.of_kind("run.started"))
    assert started["trigger"]["claimed"] == "alice" and started["trigger"]["machine"]
    assert started["plan"]["targets"]["hosts"][0]["name"] == "web1"
    assert started["golive_version"]
    [found_web1] = [e for e in run.of_kind("host.found") if e["host"] == "web1"]
    assert found_web1["release"] == "1.0.0"
    head = run_store().heads()[-1].hash
    assert head == published and head in (run.run_dir / "report.md").read_text()


def test_another_machine_follows_approves_and_rolls_back_a_run_from_the_store_alone(
    any_store: str, make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0", soak=None, backups=[])
    thread, finished = go_live_in_background(plan)
    run_id = wait_for_gate()
    elsewhere = other_machine(tmp_path)

    status = golive("status", run_id[:8], **elsewhere)
    approved = golive("approve", run_id[:8], "--as", "demo-approver", **elsewhere)
    thread.join(timeout=120)

    assert status.returncode == 0 and "To decide:" in status.stdout, status.stderr
    assert approved.returncode == 0, approved.stderr
    assert finished["state"] == "completed"
    assert set(serving(fleet).values()) == {"2.0.0/2.0.0/ok"}

    rolled_back = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from flows.rollback import rollback; "
            "rollback(run_id=sys.argv[1], reason='found a problem later')",
            run_id,
        ],
        cwd=tmp_path,
        env=os.environ
        | elsewhere
        | {"PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert rolled_back.returncode == 0, rolled_back.stderr
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    assert not list(Path(elsewhere["GOLIVE_HOME"]).glob("store.db"))
    assert golive("audit", "verify", **elsewhere).returncode == 0
    by_id = {r.run_id: r for r in runs()}  # the rollback is a run of its own
    original = by_id.pop(run_id)
    [rollback_run] = by_id.values()
    assert rollback_run.entries()[0]["rolls_back"] == run_id
    kinds = [e["kind"] for e in rollback_run.entries()]
    assert kinds[-2:] == ["rollback.finished", "run.finished"] and "host.restored" in kinds
    assert original.entries()[-1]["state"] == "rolled back"


def test_audit_list_filters_runs_newest_first(golive_home: Path) -> None:
    write_run("aaaa0000-0000-0000-0000-000000000001", environment="staging")
    write_run("bbbb0000-0000-0000-0000-000000000002", state="failed", version="3.0.0")
    write_run("cccc0000-0000-0000-0000-000000000003", triggered_by="bob@ci")

    everything = golive("audit", "list")
    failed = golive("audit", "list", "--state", "failed")
    staging = golive("audit", "list", "--environment", "staging")
    bobs = golive("audit", "list", "--who", "bob", "--release", "2.0.0")
    today = golive("audit", "list", "--since", time.strftime("%Y-%m-%d"))
    none = golive("audit", "list", "--until", "2001-01-01")

    order = [line[2:6] for line in everything.stdout.splitlines() if line[2:6] in "aaaabbbbcccc"]
    assert order == ["cccc", "bbbb", "aaaa"]
    assert "bbbb" in failed.stdout and "aaaa" not in failed.stdout
    assert "aaaa" in staging.stdout and "cccc" not in staging.stdout
    assert "cccc" in bobs.stdout and "aaaa" not in bobs.stdout
    assert all(run in today.stdout for run in ("aaaa", "bbbb", "cccc"))
    assert none.returncode == 1 and "no runs match: until 2001-01-01" in none.stdout


def test_a_jsonl_export_reads_back_to_the_same_entries_and_verifies_offline(
    golive_home: Path, tmp_path: Path
) -> None:
    write_run("aaaa0000-0000-0000-0000-000000000001")
    write_run("bbbb0000-0000-0000-0000-000000000002")
    export = tmp_path / "runs.jsonl"

    done = golive("audit", "export", "--format", "jsonl", "--run", "aaaa", "--out", str(export))
    read = read_jsonl(export.read_text().splitlines())

    assert done.returncode == 0, done.stderr
    assert read.runs == ["aaaa0000-0000-0000-0000-000000000001"]
    assert read.entries == list(run_store().all_entries(read.runs))
    assert read.links == run_store().heads()
    offline = golive("audit", "verify", "--file", str(export), "--head", read.links[-1].hash)
    assert offline.returncode == 0, offline.stderr
    assert "1 runs, 12 entries and 24 links verify" in offline.stdout

    edited = export.read_text().replace('\\"seconds\\":3', '\\"seconds\\":0')
    assert edited != export.read_text()
    export.with_name("edited.jsonl").write_text(edited)
    refused = golive("audit", "verify", "--file", str(export.with_name("edited.jsonl")))
    assert refused.returncode == 1
    assert "entry 9 (step.finished): its contents do not match its hash" in refused.stderr

    header, *lines = export.read_text().splitlines(keepends=True)
    cut = [line for line in lines if '"type": "entry"' not in line]  # the run's entries left out
    export.with_name("cut.jsonl").write_text(header + "".join(cut))
    missing = golive("audit", "verify", "--file", str(export.with_name("cut.jsonl")))
    assert missing.returncode == 1 and "aaaa0000" in missing.stderr and "deleted" in missing.stderr


@pytest.mark.parametrize(
    "content, says",
    [
        ("", "it is empty: not a golive export"),
        ('{"type": "head"}\n', "line 1 is not part of a golive export"),
        ("[" * 100_000 + "\n", "line 1 is not part of a golive export"),
        (
            '{"type": "export", "runs": ["a"]}\n{"type": "entry", "run_id": "a", "seq": 1, '
            '"at": "x", "kind": "run.started", "v": 1, "body": {}, "prev": "", "hash": ""}\n',
            "line 2 is not part of a golive export: body is not str",
        ),
    ],
    ids=["empty", "no-header", "deep", "body-not-text"],
)
def test_a_file_that_is_not_an_export_is_named_not_verified(
    tmp_path: Path, content: str, says: str
) -> None:
    (tmp_path / "bad.jsonl").write_text(content)
    done = golive("audit", "verify", "--file", str(tmp_path / "bad.jsonl"))
    assert done.returncode == 2 and says in done.stderr


def test_the_readmes_procedure_verifies_an_export_without_golive(
    golive_home: Path, tmp_path: Path
) -> None:
    write_run("aaaa0000-0000-0000-0000-000000000001")
    export = tmp_path / "runs.jsonl"
    golive("audit", "export", "--out", str(export))
    readme = (ROOT / "README.md").read_text()
    [procedure] = re.findall(r"```python\n(# Verify a golive export.*?)```", readme, re.S)
    script = tmp_path / "verify_export.py"
    script.write_text(procedure)

    # Plain Python, no golive: another machine, another interpreter.
    checked = subprocess.run(
        [shutil.which("python3") or sys.executable, "-I", str(script), str(export)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert "every entry and link verifies" in checked.stdout
    tampered = export.read_text().replace("alice@laptop", "mallory@laptop")
    export.write_text(tampered)
    broken = subprocess.run(
        [sys.executable, "-I", str(script), str(export)], capture_output=True, text=True
    )
    assert broken.returncode == 1 and "aaaa0000" in broken.stdout + broken.stderr


def test_a_csv_export_has_a_row_per_entry(golive_home: Path) -> None:
    write_run("aaaa0000-0000-0000-0000-000000000001", steps=3)
    done = golive("audit", "export", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 8
    assert [r["kind"] for r in rows][:2] == ["run.started", "step.started"]
    assert json.loads(rows[0]["body"])["release"] == "shop-web"


def test_export_refuses_an_unsupported_format_a_taken_file_and_an_empty_range(
    golive_home: Path, tmp_path: Path
) -> None:
    write_run("aaaa0000-0000-0000-0000-000000000001")
    (tmp_path / "taken.html").write_text("someone's report")

    pdf = golive("audit", "export", "--format", "pdf")
    taken = golive("audit", "export", "--format", "html", "--out", str(tmp_path / "taken.html"))
    empty = golive("audit", "export", "--since", "2001-01-01", "--until", "2001-12-31")

    assert pdf.returncode == 2 and "'pdf' is not one of 'jsonl', 'csv', 'html'" in pdf.stderr
    assert taken.returncode == 2 and "exists already" in taken.stderr
    assert (tmp_path / "taken.html").read_text() == "someone's report"
    assert empty.returncode == 1 and "no runs match" in empty.stdout


def test_the_html_export_shows_the_timeline_and_approvals_in_a_real_browser(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path, approver: Callable[..., None]
) -> None:
    from tests.conftest import decision

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        unavailable("no chromium to render the HTML export (`make test` installs it)")
    fleet = make_fleet(hosts=2)
    approver(decision("approve", comment="canary looks fine"))
    go_live(str(fleet.write_plan("2.0.0", soak=None)))
    page = tmp_path / "audit.html"

    exported = golive("audit", "export", "--format", "html", "--out", str(page))
    rendered = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert exported.returncode == 0, exported.stderr
    dom = rendered.stdout
    assert rendered.returncode == 0 and "<svg" in dom, rendered.stderr[-2000:]
    bars = re.findall(r'<g class="bar (\w+)">', dom)
    assert len(bars) == 7 and set(bars) == {"ok"}  # preflight, 2 backups, 2 deploys, 2 smoke
    assert re.search(r"<title>deploy web2 1: ok, [\d.]+ s</title>", dom)
    approvals = dom[dom.index('class="approvals"') :]
    assert "demo-approver" in approvals and "canary looks fine" in approvals
    assert "How to verify" in dom and "<script" not in page.read_text()


def test_runs_an_older_golive_journaled_are_imported_once_and_verifiably(
    golive_home: Path,
) -> None:
    run_id = "0ld00000-0000-0000-0000-000000000001".replace("l", "1")
    journal = golive_home / "runs" / run_id / "journal.jsonl"
    journal.parent.mkdir(parents=True)
    lines = [
        {"at": "2026-11-20T10:00:00+00:00", "kind": "run.started", "run_id": run_id,
         "flow_run_name": "shop-web-1.9.0", "triggered_by": "carol@old", "plan_path": "/p.yaml",
         "plan_sha256": "cd" * 32, "release": "shop-web", "version": "1.9.0",
         "environment": "production", "fleet": ["web1"], "waves": [], "gate_names": [],
         "backup_paths": ["current"], "approvers_sha256": None, "api_url": None},
        {"at": "2026-11-20T10:00:01+00:00", "kind": "host.switching", "host": "web1",
         "wave": 0, "from": "1.8.0", "to": "1.9.0"},
        {"at": "2026-11-20T10:00:02+00:00", "kind": "run.finished", "state": "completed"},
    ]  # fmt: skip
    journal.write_text("".join(json.dumps(line) + "\n" for line in lines))

    listed = golive("audit", "list")
    again = golive("audit", "list")

    assert listed.returncode == 0 and run_id[:8] in listed.stdout, listed.stderr
    assert again.stdout == listed.stdout
    [run] = runs()
    entries = run.entries()
    assert [e["kind"] for e in entries] == [
        "run.started",
        "host.switching",
        "run.finished",
        "store.imported",
    ]
    assert entries[0]["at"] == "2026-11-20T10:00:00+00:00"
    assert entries[1]["from"] == "1.8.0"
    assert entries[-1]["sha256"] == hashlib.sha256(journal.read_bytes()).hexdigest()
    assert golive("audit", "verify").returncode == 0
    assert journal.exists()  # the original is left where it was


@pytest.mark.parametrize("command", [["status"], ["audit", "list"]])
def test_reading_commands_answer_without_prefect(golive_home: Path, command: list[str]) -> None:
    write_run("aaaa0000-0000-0000-0000-000000000001")
    probe = (
        "import sys\nfrom golive.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "assert 'prefect' not in sys.modules, 'prefect was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *command], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
