"""Whatever a plan or a journal says, golive touches nothing outside a host's deploy root, and
its secrets reach neither the deployed application nor what the run leaves behind."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from flows.golive import go_live
from flows.rollback import rollback
from golive.demo.fleet import DemoFleet
from golive.errors import PreflightError, RollbackIncomplete, RunFailed
from golive.journal import RunJournal
from tests.flows.test_golive import only_run
from tests.runstore import forge, rechain_heads

NO_GATES = {"gates": {}, "soak": None, "waves": [{"name": "all", "hosts": "100%"}]}


def outside_the_fleet(fleet: DemoFleet) -> Path:
    """A folder beside the hosts, holding something that must survive every rollback."""
    outside = fleet.root / "hosts" / "precious"
    outside.mkdir(parents=True)
    (outside / "keep.txt").write_text("do not touch")
    return outside


def rewrite_journal(journal: RunJournal, **started: object) -> None:
    """Edit the run's first entry, as someone with write access to the store could, and
    rewrite every hash after it so the store still verifies: only the host's own
    confinement stands between the edit and the files outside the deploy root."""
    forge(journal.run_id, 1, rehash=True, **started)
    rechain_heads()


def test_a_rollback_refuses_a_journal_that_names_a_path_outside_the_deploy_root(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    outside = outside_the_fleet(fleet)
    plan = fleet.write_plan("2.0.0", **NO_GATES)
    go_live(str(plan))
    journal, _ = only_run()
    rewrite_journal(journal, backup_paths=["current", "../precious"])

    with pytest.raises(RollbackIncomplete, match=r"'\.\./precious' is not inside the deploy root"):
        rollback(journal.run_id, reason="test")

    assert (outside / "keep.txt").read_text() == "do not touch"


def test_a_backed_up_path_turned_into_a_link_leading_out_is_not_deleted_through(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=1)
    outside = outside_the_fleet(fleet)
    plan = fleet.write_plan("2.0.0", **NO_GATES)
    go_live(str(plan))
    journal, _ = only_run()
    shared = fleet.host_dir("web1") / "shared"
    shared.rename(shared.with_name("shared.moved"))
    (fleet.host_dir("web1") / "shared").symlink_to(outside / "sub", target_is_directory=True)
    (outside / "sub").mkdir()
    rewrite_journal(journal, backup_paths=["current", "shared/settings.json"])

    with pytest.raises(RollbackIncomplete, match="outside the deploy root"):
        rollback(journal.run_id, reason="test")

    assert (outside / "keep.txt").read_text() == "do not touch"
    assert list((outside / "sub").iterdir()) == []


def test_a_backup_path_that_is_a_link_leading_out_is_refused_at_preflight(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)
    outside = outside_the_fleet(fleet)
    web2 = fleet.host_dir("web2")
    (web2 / "shared").rename(web2 / "shared.real")
    (web2 / "shared").symlink_to(outside, target_is_directory=True)

    with pytest.raises(RunFailed, match=r"refused shared: it leads to .*precious") as failed:
        go_live(str(fleet.write_plan("2.0.0", **NO_GATES)))

    assert isinstance(failed.value.cause, PreflightError)
    assert not any(".tar." in p.name for p in outside.iterdir())


def test_secrets_in_golive_environment_never_reach_the_deployed_application(
    make_fleet: Callable[..., DemoFleet], monkeypatch: pytest.MonkeyPatch, golive_home: Path
) -> None:
    planted = {"PGPASSWORD": "planted-pg-secret", "SHOP_PW": "planted-plan-secret"}
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    fleet = make_fleet(hosts=2)

    go_live(str(fleet.write_plan("2.0.0", **NO_GATES)))

    for host in fleet.hosts:
        pid = int((fleet.host_dir(host.name) / "run" / "app.pid").read_text())
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"PATH=" in environ  # what a program needs still reaches it
        for value in planted.values():
            assert value.encode() not in environ
    for written in golive_home.rglob("*"):
        if written.is_file():
            for value in planted.values():
                assert value.encode() not in written.read_bytes()


def test_a_run_keeps_its_backups_where_only_its_owner_can_read_them(
    make_fleet: Callable[..., DemoFleet],
) -> None:
    fleet = make_fleet(hosts=2)

    go_live(str(fleet.write_plan("2.0.0", **NO_GATES)))

    journal, _ = only_run()
    backups = journal.run_dir / "backups"
    assert stat.S_IMODE(journal.run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(backups.stat().st_mode) == 0o700
    archives = list(backups.glob("*.tar.zst"))  # this machine and the hosts have zstd
    assert len(archives) == 2
    assert {stat.S_IMODE(a.stat().st_mode) for a in archives} == {0o600}
