"""Approval gates that can't be forged, skipped or self-approved: real Prefect API, real keys."""

from __future__ import annotations

import contextvars
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prefect.input.actions import read_flow_run_input

from blocks.webhook import Webhook
from flows.golive import go_live
from golive import journal
from golive.demo.fleet import DemoFleet
from golive.errors import RunFailed, UnprovenReleaser
from golive.home import golive_home
from golive.inputs import run_digest
from golive.journal import Entry, RunJournal
from golive.planfile import load_plan
from golive.signing import Decision, Start, sign
from tasks.approvals import GateDecision, opened_at, submit, waiting_gate
from tests.conftest import decision
from tests.flows.test_golive import logs_of, only_run, serving
from tests.golive.test_audit import golive
from tests.registry import register
from tests.runstore import go_live_in_background, runs, wait_for_gate

WAVES = [{"name": "canary", "hosts": 1, "gate": "go-ahead"}, {"name": "rest", "hosts": "100%"}]


@dataclass
class Approvers:
    keys: dict[str, Ed25519PrivateKey]


@pytest.fixture
def people() -> Approvers:
    """alice, bob and carol, registered with their keys as approvers of production."""
    keys = {name: Ed25519PrivateKey.generate() for name in ("alice", "bob", "carol")}
    register("production", production=True, approvers=keys)
    return Approvers(keys)


def production_plan(fleet: DemoFleet, people: Approvers, quorum: int = 2) -> str:
    gates = {"go-ahead": {"approvers": ["bob", "carol"], "quorum": quorum, "timeout": "2m"}}
    return str(
        fleet.write_plan(
            "2.0.0",
            environment="production",
            gates=gates,
            soak=None,
            waves=WAVES,
        )
    )


def released(plan: str, people: Approvers, releaser: str) -> Any:
    """The go-live of a production plan, started the way `golive run --as NAME --key` starts
    it: signed by the releaser's registered key."""
    return go_live(
        plan,
        triggered_by=releaser,
        **signed_start(plan, people.keys[releaser.split("@")[0]], releaser),
    )


def signed_start(plan: str, key: Ed25519PrivateKey, claimed: str) -> dict[str, str]:
    """What `golive run --key` hands the flow: the start, signed."""
    plan_file = load_plan(plan)
    at = datetime.now(UTC).isoformat()
    start = Start(run_digest(plan_file), plan_file.plan.environment, claimed, at)
    return {"start_signature": sign(start, key), "signed_at": at}


def decisions(run: RunJournal) -> tuple[list[Entry], list[Entry]]:
    return list(run.of_kind("gate.decision")), list(run.of_kind("gate.refused"))


def test_two_signed_approvals_meet_a_quorum_of_two(
    make_fleet: Callable[..., DemoFleet], people: Approvers, approver: Callable[..., None]
) -> None:
    fleet = make_fleet(hosts=2)
    approver(
        decision("approve", "bob", "canary fine", people.keys["bob"]),
        decision("approve", "carol", "agreed", people.keys["carol"]),
    )

    record = released(production_plan(fleet, people), people, "alice")

    assert record["state"] == "completed"
    accepted, refused = decisions(only_run()[0])
    assert [(d["approver"], d["comment"]) for d in accepted] == [
        ("bob", "canary fine"),
        ("carol", "agreed"),
    ]
    assert refused == [] and all(d["signature"] for d in accepted)


def test_whoever_triggered_the_run_cannot_approve_it(
    make_fleet: Callable[..., DemoFleet], people: Approvers, approver: Callable[..., None]
) -> None:
    fleet = make_fleet(hosts=2)
    approver(
        decision("approve", "bob", "", people.keys["bob"]),
        decision("approve", "carol", "", people.keys["carol"]),
    )

    released(production_plan(fleet, people, quorum=1), people, "bob@laptop")

    accepted, refused = decisions(only_run()[0])
    assert refused[0]["reason"] == (
        "it is signed with the key that started this run (bob's): no self-approval"
    )
    assert [d["approver"] for d in accepted] == ["carol"]


def test_a_releaser_who_claims_another_name_still_cannot_approve_with_her_own_key(
    make_fleet: Callable[..., DemoFleet], people: Approvers, approver: Callable[..., None]
) -> None:
    fleet = make_fleet(hosts=2)
    plan = production_plan(fleet, people, quorum=1)
    approver(
        decision("approve", "bob", "", people.keys["bob"]),
        decision("approve", "carol", "", people.keys["carol"]),
    )

    # bob starts the run `--as release-bot`, signing it with his own key
    start = signed_start(plan, people.keys["bob"], "release-bot")
    go_live(plan, triggered_by="release-bot", **start)
    with pytest.raises(UnprovenReleaser, match="its signature started a run already"):
        go_live(plan, triggered_by="release-bot", **start)  # the same start, replayed

    run, replayed = runs()
    accepted, refused = decisions(run)
    assert (
        refused[0]["reason"]
        == "it is signed with the key that started this run (bob's): no self-approval"
    )
    assert [d["approver"] for d in accepted] == ["carol"]
    trigger = next(run.of_kind("run.started"))["trigger"]
    assert (trigger["claimed"], trigger["proven"]) == ("release-bot", "bob")
    assert [e["state"] for e in replayed.of_kind("run.finished")] == ["refused"]


def test_a_production_run_starts_only_when_a_registered_key_signed_its_start_just_now(
    make_fleet: Callable[..., DemoFleet], people: Approvers
) -> None:
    fleet = make_fleet(hosts=2)
    plan = production_plan(fleet, people)
    stranger = Ed25519PrivateKey.generate()
    old = signed_start(plan, people.keys["alice"], "alice") | {
        "signed_at": "2026-01-01T00:00:00+00:00"
    }

    for start, why in [
        ({}, "its start is not signed"),
        (signed_start(plan, stranger, "alice"), "its signature is by no registered key"),
        (signed_start(plan, people.keys["alice"], "bob"), "its signature is by no registered key"),
        (old, "it was signed at 2026-01-01T00:00:00+00:00, not just now"),
    ]:
        with pytest.raises(UnprovenReleaser, match=re.escape(why)):
            go_live(plan, triggered_by="alice", **start)

    assert serving(fleet) == {"web1": "1.0.0/1.0.0/ok", "web2": "1.0.0/1.0.0/ok"}
    for run in runs():  # each attempt is in the store, refused, with its reason
        [finished] = list(run.of_kind("run.finished"))
        assert finished["state"] == "refused" and "proven releaser" in finished["reason"]
        assert [e["kind"] for e in run.entries()] == ["run.started", "run.finished"]


def test_keys_that_are_not_registered_for_the_approver_are_refused(
    make_fleet: Callable[..., DemoFleet], people: Approvers, approver: Callable[..., None]
) -> None:
    fleet = make_fleet(hosts=2)
    stranger = Ed25519PrivateKey.generate()
    approver(
        decision("approve", "dave", "", stranger),
        decision("approve", "bob", "", stranger),
        decision("approve", "bob", "", people.keys["bob"]),
    )

    released(production_plan(fleet, people, quorum=1), people, "alice")

    accepted, refused = decisions(only_run()[0])
    assert refused[0]["reason"] == (
        "'dave' has no key registered for environment 'production'; registered: alice, bob, carol"
    )
    assert refused[1]["reason"].startswith("the signature does not verify with bob's registered")
    assert [d["approver"] for d in accepted] == ["bob"]


def test_a_key_revoked_while_its_gate_is_open_no_longer_counts(
    make_fleet: Callable[..., DemoFleet], people: Approvers, approver: Callable[..., None]
) -> None:
    fleet = make_fleet(hosts=2)
    plan = production_plan(fleet, people, quorum=1)
    remaining = {name: people.keys[name] for name in ("alice", "carol")}

    def revoke_bob(entry: Entry) -> None:  # an admin acts while the gate is open
        if entry["kind"] == "gate.opened":
            register("production", production=True, approvers=remaining)

    unsubscribe = journal.subscribe(revoke_bob)  # before the approver: bob decides after it
    approver(
        decision("approve", "bob", "", people.keys["bob"]),
        decision("approve", "carol", "", people.keys["carol"]),
    )
    try:
        released(plan, people, "alice")
    finally:
        unsubscribe()

    accepted, refused = decisions(only_run()[0])
    assert refused[0]["reason"] == (
        "bob's key is no longer registered for environment 'production' (it was revoked or "
        "replaced since the run started)"
    )
    assert [d["approver"] for d in accepted] == ["carol"]


class Forger:
    """Resumes the run itself, the way anyone who reaches Prefect's API can."""

    def __init__(self, people: Approvers) -> None:
        self.people = people
        self.forgeries: list[Callable[[RunJournal, str], GateDecision]] = []
        self.after = ("gate.opened", "gate.refused", "gate.decision")

    def on_entry(self, entry: Entry) -> None:
        if entry["kind"] in self.after and self.forgeries:
            forge = self.forgeries.pop(0)
            run = RunJournal.find(entry["run_id"])
            context = contextvars.copy_context()
            threading.Thread(target=context.run, args=(self._send, run, forge), daemon=True).start()

    def _send(self, run: RunJournal, forge: Callable[[RunJournal, str], GateDecision]) -> None:
        submit(run, forge(run, waiting_gate(run, wait_seconds=60)))

    def signed(
        self, who: str, run: RunJournal, gate: str, run_id: str = "", digest: str = "", at: str = ""
    ) -> GateDecision:
        """bob's or carol's approval, signed with their key, for this run, gate occurrence and
        plan, now; or for whatever run, plan or time is given instead."""
        at = at or datetime.now(UTC).isoformat()
        digest = digest or next(run.of_kind("run.started"))["plan_sha256"]
        opened = opened_at(run, gate)
        covered = Decision(run_id or run.run_id, gate, digest, "approve", who, "", at, opened)
        return GateDecision(
            decision="approve",
            approver=who,
            comment="",
            signed_at=at,
            signature=sign(covered, self.people.keys[who]),
        )


@pytest.fixture
def forger(people: Approvers) -> Iterator[Forger]:
    forger = Forger(people)
    unsubscribe = journal.subscribe(forger.on_entry)
    yield forger
    unsubscribe()


def test_replayed_misdirected_and_unsigned_decisions_never_count(
    make_fleet: Callable[..., DemoFleet], people: Approvers, forger: Forger
) -> None:
    fleet = make_fleet(hosts=2)
    forger.forgeries = [
        lambda run, gate: forger.signed("bob", run, gate, run_id="another-run-id"),  # replay
        lambda run, gate: forger.signed("bob", run, gate, digest="0" * 64),  # another plan
        lambda run, gate: GateDecision(decision="approve", approver="bob"),  # a UI resume
        lambda run, gate: forger.signed("bob", run, gate),
        lambda run, gate: forger.signed("carol", run, gate),
    ]

    record = released(production_plan(fleet, people), people, "alice")

    accepted, refused = decisions(only_run()[0])
    assert [r["reason"].split(" (")[0] for r in refused] == [
        "the signature does not verify with bob's registered key for this run, gate and plan",
        "the signature does not verify with bob's registered key for this run, gate and plan",
        "unsigned: this gate takes only decisions signed with `golive approve --key`",
    ]
    assert [d["approver"] for d in accepted] == ["bob", "carol"]
    assert record["state"] == "completed"
    # the resume form after the UI's unsigned resume says so first, with what would count
    run_id = UUID(only_run()[0].run_id)
    form = read_flow_run_input("paused-gate-1-4-description", flow_run_id=run_id)
    assert form.startswith(
        "**The last decision did NOT count**: the approve claimed by 'bob': unsigned: this gate "
        "takes only decisions signed with `golive approve --key`"
    )
    assert "This would count: `golive approve " in form and "--as bob --key KEYFILE`" in form
    assert "A resume from this page carries no signature: it is recorded as refused" in form


def test_a_decision_counts_only_for_the_gate_occurrence_it_was_signed_for_and_in_its_time(
    make_fleet: Callable[..., DemoFleet], people: Approvers, forger: Forger
) -> None:
    fleet = make_fleet(hosts=3)
    waves = [  # one gate, guarding two waves
        {"name": "canary", "hosts": 1, "gate": "go-ahead"},
        {"name": "half", "hosts": 1, "gate": "go-ahead"},
        {"name": "rest", "hosts": "100%"},
    ]
    gates = {"go-ahead": {"approvers": ["bob", "carol"], "quorum": 1, "timeout": "2m"}}
    plan = fleet.write_plan("2.0.0", environment="production", gates=gates, soak=None, waves=waves)
    first: list[GateDecision] = []
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    forger.after = ("gate.opened", "gate.refused")
    forger.forgeries = [
        lambda run, gate: first.append(forger.signed("bob", run, gate)) or first[0],
        lambda run, gate: first[0],  # bob's approval of the canary, again for the next wave
        lambda run, gate: forger.signed("bob", run, gate, at=an_hour_ago),
        lambda run, gate: forger.signed("bob", run, gate, at=tomorrow),
        lambda run, gate: forger.signed("carol", run, gate),
    ]

    record = released(str(plan), people, "alice")

    accepted, refused = decisions(only_run()[0])
    assert [d["approver"] for d in accepted] == ["bob", "carol"]
    expected = [
        "the signature does not verify with bob's registered key for this run, gate and plan",
        f"it was signed at {an_hour_ago}, before this gate opened",
        f"it was signed at {tomorrow}, in the future",
    ]
    assert len(refused) == len(expected)
    for refusal, reason in zip(refused, expected, strict=True):
        assert refusal["reason"].startswith(reason), refusal["reason"]
    assert record["state"] == "completed"


def test_a_signed_reject_stops_the_run_and_rolls_back(
    make_fleet: Callable[..., DemoFleet], people: Approvers, approver: Callable[..., None]
) -> None:
    fleet = make_fleet(hosts=2)
    approver(decision("reject", "carol", "error budget spent", people.keys["carol"]))

    with pytest.raises(RunFailed, match="gate 'go-ahead' was rejected by carol"):
        released(production_plan(fleet, people), people, "alice")

    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}


class Receiver:
    """A real HTTP server standing in for a chat webhook; answers `status` to every POST."""

    def __init__(self, status: int = 200) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/s3cr3t-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def wait_for(condition: Callable[[], bool]) -> bool:
    """Notifications are sent in the background: wait (boundedly) until they are recorded."""
    give_up = time.monotonic() + 30
    while not condition() and time.monotonic() < give_up:
        time.sleep(0.1)
    return condition()


def test_webhooks_hear_of_a_gate_opening_and_its_decision(
    make_fleet: Callable[..., DemoFleet], people: Approvers, approver: Callable[..., None]
) -> None:
    fleet = make_fleet(hosts=2)
    receiver = Receiver()
    Webhook(url=receiver.url).save("ops-chat", overwrite=True)
    approver(decision("approve", "bob", "ship it", people.keys["bob"]))
    plan = Path(production_plan(fleet, people, quorum=1))
    plan.write_text(plan.read_text() + "notify:\n- {webhook: ops-chat}\n")

    released(str(plan), people, "alice")

    run, _ = only_run()
    assert wait_for(lambda: len(list(run.of_kind("notify.sent"))) == 2)
    opened, decided = sorted(receiver.received, key=lambda e: e["event"] != "gate.opened")
    assert opened["event"] == "gate.opened" and opened["run_id"] == run.run_id
    assert opened["approve_command"] == (
        f"golive approve {run.run_id} --gate go-ahead --as NAME --key KEYFILE"
    )
    assert "**Waves done:** canary [web1]" in opened["brief"]
    assert "**Waves to come:** rest [web2]" in opened["brief"]
    assert "web1 1.0.0 → 2.0.0" in opened["brief"]
    assert (decided["event"], decided["approver"], decided["signed"]) == (
        "gate.decided",
        "bob",
        True,
    )


def test_a_failing_webhook_is_recorded_and_never_stops_the_go_live(
    make_fleet: Callable[..., DemoFleet], people: Approvers, approver: Callable[..., None]
) -> None:
    fleet = make_fleet(hosts=2)
    broken = Receiver(status=500)
    Webhook(url=broken.url, attempts=2).save("broken-chat", overwrite=True)
    approver(decision("approve", "bob", "", people.keys["bob"]))
    plan = Path(production_plan(fleet, people, quorum=1))
    plan.write_text(plan.read_text() + "notify:\n- {webhook: broken-chat}\n")

    record = released(str(plan), people, "alice")

    assert record["state"] == "completed"
    run, _ = only_run()
    assert wait_for(lambda: len(list(run.of_kind("notify.failed"))) == 2)
    failed = next(run.of_kind("notify.failed"))
    assert (failed["error"], failed["attempts"]) == ("HTTPStatusError 500", 2)
    assert len(broken.received) == 4  # two events, two attempts each
    assert "s3cr3t-token" not in json.dumps(run.entries())
    assert b"s3cr3t-token" not in (golive_home() / "store.db").read_bytes()


def test_an_approver_is_told_whether_the_decision_counted_and_the_ui_logs_say_so_too(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    thread, finished = go_live_in_background(fleet.write_plan("2.0.0", soak=None, backups=[]))
    run_id = wait_for_gate()

    refused = golive("approve", run_id, "--as", "mallory")
    counted = golive("approve", run_id, "--as", "demo-approver", "--comment", "canary is fine")
    thread.join(timeout=120)

    assert refused.returncode == 1
    assert "did NOT count: 'mallory' may not decide this gate" in refused.stderr
    assert "The gate keeps waiting" in refused.stderr
    assert counted.returncode == 0, counted.stdout + counted.stderr
    assert f"Counted: approved gate 'go-ahead' of run {run_id}" in counted.stdout
    assert finished["state"] == "completed"
    said = logs_of(run_id, until="counted (1 of 1 approvals so far)")
    assert "the approve claimed by 'mallory' did NOT count" in said
    assert "approve by 'demo-approver' counted (1 of 1 approvals so far)" in said
