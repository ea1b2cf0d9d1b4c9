"""Change freezes: date ranges and recurring windows, each in its own time zone; a run inside
one is refused, naming it, unless an override is signed with its reason."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flows.golive import go_live
from golive import journal
from golive.demo.fleet import DemoFleet
from golive.errors import Frozen, RunFailed
from golive.journal import Entry, RunJournal
from golive.plan import WEEKDAYS, Freeze, RecurringFreeze
from golive.private import write_private
from tasks.approvals import decide_gate
from tests.flows.test_golive import serving
from tests.golive.test_cli import golive
from tests.registry import public, register
from tests.runstore import runs

ZONES = ["UTC", "Asia/Tokyo", "America/New_York", "Europe/Berlin"]
ALWAYS = {"every": list(WEEKDAYS), "after": "00:00", "timezone": "Pacific/Chatham"}
UNGATED = {"soak": None, "backups": [], "gates": {}, "waves": [{"name": "all", "hosts": "100%"}]}


def test_a_run_inside_a_date_freeze_is_refused_at_its_start_naming_the_window(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    freeze = [{"from": "2000-01-01", "to": "2999-12-31", "reason": "test freeze"}]

    with pytest.raises(Frozen, match=r"freeze\[0\] 2000-01-01..2999-12-31 UTC \(test freeze\)"):
        go_live(str(fleet.write_plan("2.0.0", freeze=freeze, **UNGATED)))

    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    [run] = runs()
    assert [e["state"] for e in run.of_kind("run.finished")] == ["refused"]


def test_a_recurring_freeze_refuses_a_run_and_a_signed_override_lets_it_through_recorded(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    fleet = make_fleet(hosts=2)
    alice = Ed25519PrivateKey.generate()
    register("demo", releasers={"alice": public(alice)})
    key = tmp_path / "alice.key"
    write_private(key, _pem(alice))
    freeze = [ALWAYS | {"reason": "every day, for the test"}]
    plan = str(fleet.write_plan("2.0.0", freeze=freeze, **UNGATED))

    refused = golive("run", plan, "--as", "alice")
    unsigned = golive("run", plan, "--override-freeze", "hotfix for INC-42")
    overridden = golive("run", plan, "--key", str(key), "--override-freeze", "hotfix for INC-42")

    assert refused.returncode == 1
    said = refused.stdout + refused.stderr
    assert "inside the change freeze freeze[0] every monday" in said
    assert "Pacific/Chatham (every day, for the test)" in said
    assert "--key KEYFILE --override-freeze 'why'" in said
    assert unsigned.returncode == 2 and "needs a reason" in unsigned.stderr
    assert overridden.returncode == 0, overridden.stdout + overridden.stderr
    assert set(serving(fleet).values()) == {"2.0.0/2.0.0/ok"}
    first, last = runs()
    assert [e["state"] for e in first.of_kind("run.finished")] == ["refused"]
    [override] = list(last.of_kind("freeze.overridden"))
    assert (override["reason"], override["by"]) == ("hotfix for INC-42", "alice")
    assert override["windows"][0].startswith("freeze[0] every monday")


def _pem(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    "window, inside, outside",
    [
        (
            {"every": "friday", "after": "15:00", "timezone": "Europe/Berlin"},
            "2026-12-04T14:30:00+00:00",  # 15:30 in Berlin, a Friday
            "2026-12-04T13:30:00+00:00",  # 14:30 in Berlin
        ),
        (
            {"every": "month-end", "days": 2, "timezone": "America/New_York"},
            "2026-12-31T04:00:00+00:00",  # Dec 30, 23:00 in New York
            "2026-12-30T04:00:00+00:00",  # Dec 29, 23:00 in New York
        ),
        (
            {"from": "2026-12-24", "to": "2026-12-26", "timezone": "Asia/Tokyo"},
            "2026-12-23T16:00:00+00:00",  # Dec 24, 01:00 in Tokyo
            "2026-12-26T15:00:00+00:00",  # Dec 27, 00:00 in Tokyo
        ),
    ],
    ids=["friday-afternoon", "month-end", "dates"],
)
def test_a_window_covers_the_times_its_time_zone_says(
    window: dict[str, object], inside: str, outside: str
) -> None:
    kind = RecurringFreeze if "every" in window else Freeze
    freeze = kind.model_validate(window | {"reason": "r"})
    assert freeze.covers(datetime.fromisoformat(inside))
    assert not freeze.covers(datetime.fromisoformat(outside))
    assert not freeze.covers(datetime(2026, 12, 2, 12, tzinfo=UTC))  # a Wednesday


def test_a_freeze_that_begins_while_the_run_waits_at_its_gate_stops_it_and_rolls_it_back(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    # A window that begins at the next minute, in a zone where that is still today.
    zone = next(z for z in ZONES if 1 <= datetime.now(ZoneInfo(z)).hour <= 21)
    begins = (datetime.now(ZoneInfo(zone)) + timedelta(minutes=1)).replace(second=0)
    window = {"every": list(WEEKDAYS), "after": f"{begins:%H:%M}", "timezone": zone}
    fleet = make_fleet(hosts=2)
    plan = fleet.write_plan("2.0.0", freeze=[window | {"reason": "from now on"}], soak=None)

    def approve_once_frozen(entry: Entry) -> None:
        if entry["kind"] == "gate.opened":
            wait = (begins - datetime.now(ZoneInfo(zone))).total_seconds() + 1
            run = RunJournal.find(entry["run_id"])
            context = contextvars.copy_context()
            threading.Thread(target=context.run, args=(approve, run, wait), daemon=True).start()

    def approve(run: RunJournal, wait: float) -> None:
        time.sleep(max(0.0, wait))
        decide_gate(run, "approve", "demo-approver", "", None, wait_seconds=60)

    unsubscribe = journal.subscribe(approve_once_frozen)
    try:
        with pytest.raises(RunFailed, match=r"inside the change freeze freeze\[0\] every monday"):
            go_live(str(plan))
    finally:
        unsubscribe()

    [run] = runs()
    assert [w["wave"] for w in run.of_kind("wave.started")] == ["canary"]  # not the rest
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}  # the canary rolled back
