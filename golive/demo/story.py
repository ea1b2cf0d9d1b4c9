"""`golive demo`: two go-lives on local hosts, told as they happen.

1. shop-web 1.0.0 → 2.0.0 goes live through the `go-ahead` gate, which the demo approves itself.
2. shop-web 2.0.0 → 3.0.0 passes on the canary, fails its smoke checks in wave 2 and is rolled
   back automatically: every host ends on 2.0.0 and answering.

Then the hosts go back to 1.0.0, stopped, so that the demo's plans can be run again by hand or
by the go-live deployment, whose default plan is the demo's plan-2.0.0.yaml.
"""

from __future__ import annotations

import contextvars
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from golive import journal, registry
from golive.errors import GoLiveError
from golive.home import golive_home, runs_dir
from golive.journal import Entry
from golive.registry import Approver, Rules
from golive.signing import load_private_key, new_key_pair, public_key_text

from .fleet import BROKEN_VERSION, DemoFleet

APPROVER = "demo-approver"


@dataclass
class Story:
    title: str
    version: str
    expect_success: bool
    run_id: str = ""
    succeeded: bool = False


def run_demo(console: Console) -> bool:
    from prefect.settings import PREFECT_UI_URL

    from golive.progress import LiveProgress, ui_link

    started = time.monotonic()
    fleet = DemoFleet(golive_home() / "demo")
    stories = [
        Story("a good release, through an approval gate", "2.0.0", expect_success=True),
        Story("a broken release, rolled back", BROKEN_VERSION, expect_success=False),
    ]
    console.print(
        f"[bold]golive demo[/]: 3 local hosts under {fleet.root / 'hosts'}, "
        "each serving shop-web 1.0.0 on a loopback port"
    )
    stage = fleet.rehearsal_fleet()  # for `golive run PLAN --rehearsal` afterwards
    try:
        fleet.set_up("1.0.0")
        stage.set_up("1.0.0")
        key_file, signed_gates = _register_environment(fleet)
        with LiveProgress(console, PREFECT_UI_URL.value()):
            unsubscribe = journal.subscribe(lambda e: _approve_as_demo(e, key_file, console))
            for number, story in enumerate(stories, 1):
                console.rule(f"Run {number}: {story.title}")
                _tell(story, fleet, signed_gates)
            unsubscribe()
        hosts_now = _versions_answering(fleet)
        # Back to where the demo began, so that its plans can be released again by hand or
        # by the go-live deployment (whose default plan is plan-2.0.0.yaml).
        fleet.set_up("1.0.0")
    except GoLiveError as error:
        console.print(f"[red]The demo could not run: {escape(str(error))}[/]", highlight=False)
        return False
    finally:
        fleet.stop()
        stage.stop()
    _summarize(console, stories, hosts_now, time.monotonic() - started)
    console.print(
        f"See a run in the Prefect UI: {ui_link(stories[0].run_id, PREFECT_UI_URL.value())}"
    )
    console.print(f"Try the plans yourself: golive validate {fleet.root / 'plan-3.0.0.yaml'}")
    console.print(
        f"The hosts are back on 1.0.0 (stopped): release 2.0.0 yourself with golive run "
        f"{fleet.root / 'plan-2.0.0.yaml'}"
    )
    console.print(
        f"Rehearse one, with its rollback drill: golive run {fleet.root / 'plan-2.0.0.yaml'} "
        "--rehearsal"
    )
    expected = all(s.succeeded == s.expect_success for s in stories)
    return expected and set(hosts_now.values()) == {"2.0.0"}


def _register_environment(fleet: DemoFleet) -> tuple[Path, dict[str, Any]]:
    """The demo's own environments in the registry, its own and its rehearsal's (as their
    admin, with a key kept under the demo's folder), its approver's key, and gates that take
    only signed decisions, as a production gate does."""
    admin, approver = _key(fleet, "demo-admin"), _key(fleet, APPROVER)
    rules = Rules(
        production=False,
        admins={"demo-admin": _public(admin)},
        approvers={APPROVER: Approver(public_key=_public(approver))},
        allow_unsigned=True,
    )
    key = load_private_key(admin, passphrase=None)
    rehearsing = Rules(production=False, admins=rules.admins)
    for environment, wanted in (
        (fleet.template["environment"], rules),
        (fleet.template["rehearsal"]["environment"], rehearsing),
    ):
        if registry.environment(environment).rules != wanted:
            registry.set_environment(environment, wanted, key)
    gates = {
        name: gate | {"allow_unsigned": False} for name, gate in fleet.template["gates"].items()
    }
    return approver, {"gates": gates}


def _key(fleet: DemoFleet, name: str) -> Path:
    key_file = fleet.root / f"{name}.key"
    if not key_file.exists():
        fleet.root.mkdir(parents=True, exist_ok=True)
        new_key_pair(key_file, passphrase=None)
    return key_file


def _public(key_file: Path) -> str:
    return public_key_text(load_private_key(key_file, passphrase=None).public_key())


def _tell(story: Story, fleet: DemoFleet, signed_gates: dict[str, Any]) -> None:
    from flows.golive import go_live

    plan = fleet.write_plan(story.version, **signed_gates)
    unsubscribe = journal.subscribe(lambda e: _note_run_id(e, story))
    try:
        go_live(plan_path=str(plan), triggered_by="golive-demo")
        story.succeeded = True
    except GoLiveError:
        story.succeeded = False
    finally:
        unsubscribe()


def _note_run_id(entry: Entry, story: Story) -> None:
    if entry["kind"] == "run.started":
        story.run_id = entry["run_id"]


def _approve_as_demo(entry: Entry, key_file: Path, console: Console) -> None:
    """Play the approver: what a person does with `golive approve --key` in another terminal."""
    if entry["kind"] != "gate.opened":
        return
    from tasks.approvals import decide_gate

    console.print(
        f"  [magenta]demo: approving gate {entry['gate']} as {APPROVER}, signed with "
        f"{key_file.name}; the canary is healthy. In a real run the approver does this with "
        "the command above.[/]"
    )
    run = journal.RunJournal.find(entry["run_id"])
    key = load_private_key(key_file, passphrase=None)
    # The copied context carries Prefect's settings (which API) into the approver's thread.
    context = contextvars.copy_context()
    threading.Thread(
        target=context.run,
        args=(
            decide_gate,
            run,
            "approve",
            APPROVER,
            "canary healthy; approved by golive demo itself",
            key,
        ),
        kwargs={"gate": entry["gate"], "wait_seconds": 60},
        daemon=True,
    ).start()


def _versions_answering(fleet: DemoFleet) -> dict[str, str]:
    """Which version each host actually serves now, asked over HTTP."""
    versions = {}
    for host in fleet.hosts:
        try:
            versions[host.name] = httpx.get(
                host.fill("http://{address}:{http_port}/"), timeout=5
            ).json()["version"]
        except (httpx.HTTPError, ValueError, KeyError):
            versions[host.name] = "not answering"
    return versions


def _summarize(
    console: Console, stories: list[Story], hosts_now: dict[str, str], seconds: float
) -> None:
    table = Table(title=f"golive demo: done in {seconds:.0f} s", title_justify="left")
    for column in ("run", "release", "what happened"):
        table.add_column(column)
    for story in stories:
        outcome = (
            "[green]went live[/]"
            if story.succeeded
            else "[yellow]failed in wave 2, rolled back automatically[/]"
        )
        table.add_row(story.run_id[:8], f"shop-web {story.version}", outcome)
    console.print(table)
    for story in stories:
        console.print(
            f"Report of {story.run_id[:8]}: {runs_dir() / story.run_id / 'report.md'}"
            f"  (or `golive status {story.run_id[:8]}`)",
            highlight=False,
        )
    now = ", ".join(f"{host} {version}" for host, version in hosts_now.items())
    console.print(f"Hosts now serve: {now}")
