"""Go-lives that change data: real PostgreSQL, real hosts, real Prefect API."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from blocks.postgres import BackupStorage, PostgresDatabase
from flows.golive import go_live
from golive.demo.fleet import DemoFleet
from golive.errors import RunFailed
from golive.home import golive_home
from golive.postgres import Database
from golive.progress import LiveProgress
from tests.conftest import PG_PASSWORD, decision
from tests.flows.test_golive import kinds, only_run, serving
from tests.pg import database, fingerprint, throwaway_server
from tests.runstore import runs

MIGRATION = """
ALTER TABLE orders ADD COLUMN total_cents bigint;
UPDATE orders SET total_cents = (total * 100)::bigint;
"""
CHECKS = [
    {"name": "orders kept", "query": "SELECT count(*) FROM orders", "unchanged": True},
    {
        "name": "every order priced",
        "query": "SELECT count(*) FROM orders WHERE total_cents IS NULL",
        "equals": 0,
    },
]
WAVES = [{"name": "canary", "hosts": 1}, {"name": "rest", "hosts": "100%"}]


def data_plan(
    fleet: DemoFleet,
    db: Database,
    tmp_path: Path,
    version: str,
    waves: Any = WAVES,
    password_env: str | None = None,
    **migration: Any,
) -> str:
    (tmp_path / "0042_cents.sql").write_text(MIGRATION)
    where = {"host": db.host, "port": db.port, "dbname": db.dbname, "user": db.user}
    sections = {
        "databases": {"shop": where | ({"password_env": password_env} if password_env else {})},
        "backups": [
            {"kind": "files", "paths": ["shared"]},
            {"kind": "postgres", "database": "shop"},
        ],
        "backup_storage": {"directory": str(tmp_path / "backups"), "keep": 1},
        "migrations": [{"sql": str(tmp_path / "0042_cents.sql"), "checks": CHECKS, **migration}],
        "gates": {"data-approval": {"approvers": ["dba"], "timeout": "2m", "allow_unsigned": True}},
        "waves": waves,
        "soak": None,
    }
    return str(fleet.write_plan(version, **sections))


def columns(db: Database) -> list[str]:
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE "
            "table_name = 'orders' ORDER BY ordinal_position"
        ).fetchall()
    return [row[0] for row in rows]


def test_a_go_live_that_fails_after_migrating_restores_the_database_exactly(
    make_fleet: Callable[..., DemoFleet], shop_db: Database, tmp_path: Path
) -> None:
    fleet = make_fleet(hosts=3)
    before = fingerprint(shop_db)

    with pytest.raises(RunFailed, match="smoke check 'health' failed") as failed:
        go_live(data_plan(fleet, shop_db, tmp_path, "3.0.0"))

    assert "database shop" in str(failed.value)
    assert fingerprint(shop_db) == before
    assert "total_cents" not in columns(shop_db)
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    journal, record = only_run()
    assert record["databases"]["shop"]["migrations"] == ["0042_cents.sql"]
    assert record["databases"]["shop"]["restored"] is True
    assert record["databases"]["shop"]["backup"]["verified"] is True
    assert kinds(journal).index("database.backed_up") < kinds(journal).index("migration.applying")


def test_a_rollback_leaves_nothing_a_migration_created_even_tables_that_reference_others(
    make_fleet: Callable[..., DemoFleet], shop_db: Database, tmp_path: Path
) -> None:
    fleet = make_fleet(hosts=2)
    before = fingerprint(shop_db)
    plan = data_plan(fleet, shop_db, tmp_path, "3.0.0", checks=[])
    (tmp_path / "0042_cents.sql").write_text(
        "CREATE TABLE refunds (id serial PRIMARY KEY, order_id int REFERENCES orders(id));\n"
        "CREATE TABLE notes (id serial PRIMARY KEY, body text);\n"
        "ALTER TABLE orders ADD COLUMN total_cents bigint;\n"
        "INSERT INTO refunds (order_id) SELECT id FROM orders LIMIT 10;\n"
        "UPDATE orders SET total = total + 1;\n"  # writes after the backup
    )

    with pytest.raises(RunFailed, match="smoke check 'health' failed"):
        go_live(plan)

    assert fingerprint(shop_db) == before
    with shop_db.connect() as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables")}
    assert {"refunds", "notes"}.isdisjoint(tables) and "total_cents" not in columns(shop_db)
    _, record = only_run()
    kept = record["databases"]["shop"]["kept_as"]
    with shop_db.connect(kept) as conn:  # the writes since the backup are not thrown away
        assert conn.execute("SELECT count(*) FROM refunds").fetchone() == (10,)
    with shop_db.connect("postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{kept}" WITH (FORCE)')


def test_a_database_that_demands_a_password_is_backed_up_and_restored_without_revealing_it(
    make_fleet: Callable[..., DemoFleet],
    guarded_db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    golive_home: Path,
) -> None:
    monkeypatch.setenv("SHOP_PW", PG_PASSWORD)
    fleet = make_fleet(hosts=2)
    before = fingerprint(guarded_db)

    with pytest.raises(RunFailed, match="smoke check 'health' failed"):
        go_live(data_plan(fleet, guarded_db, tmp_path, "3.0.0", password_env="SHOP_PW"))

    assert fingerprint(guarded_db) == before
    _, record = only_run()
    assert record["databases"]["shop"]["restored"] is True
    [dump] = (tmp_path / "backups").rglob("*.dump")
    assert stat.S_IMODE(dump.stat().st_mode) == 0o700
    assert stat.S_IMODE(dump.parent.stat().st_mode) == 0o700
    assert {stat.S_IMODE(file.stat().st_mode) for file in dump.iterdir()} == {0o600}
    secret = PG_PASSWORD.encode()
    for written in [*golive_home.rglob("*"), *(tmp_path / "backups").rglob("*")]:
        assert not written.is_file() or secret not in written.read_bytes(), written
    for host in fleet.hosts:
        pid = (fleet.host_dir(host.name) / "run" / "app.pid").read_text()
        assert secret not in Path(f"/proc/{pid}/environ").read_bytes()


def test_a_wrong_password_stops_the_run_before_any_change_and_says_where(
    make_fleet: Callable[..., DemoFleet],
    guarded_db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_PW", "not-the-password")
    fleet = make_fleet(hosts=2)

    with pytest.raises(RunFailed, match=r"database 'shop', connect: .*password authentication"):
        go_live(data_plan(fleet, guarded_db, tmp_path, "2.0.0", password_env="SHOP_PW"))

    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}


def test_after_a_point_of_no_return_hosts_roll_back_but_the_data_rolls_forward(
    make_fleet: Callable[..., DemoFleet],
    shop_db: Database,
    tmp_path: Path,
    approver: Callable[..., None],
) -> None:
    fleet = make_fleet(hosts=3)
    approver(decision("approve", approver="dba", comment="irreversible, accepted"))

    with pytest.raises(
        RunFailed, match=r"The data was NOT restored: irreversible migration 0042_cents\.sql ran"
    ):
        go_live(
            data_plan(fleet, shop_db, tmp_path, "3.0.0", reversible=False, gate="data-approval")
        )

    assert "total_cents" in columns(shop_db)
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    journal, record = only_run()
    assert record["point_of_no_return"] == "0042_cents.sql"
    assert record["roll_forward"].startswith("irreversible migration 0042_cents.sql ran")
    assert "database.restored" not in kinds(journal)
    report = (journal.run_dir / "report.md").read_text()
    assert "**The data was not rolled back:**" in report


def test_an_irreversible_migration_waits_for_its_gate_and_a_reject_changes_nothing(
    make_fleet: Callable[..., DemoFleet],
    shop_db: Database,
    tmp_path: Path,
    approver: Callable[..., None],
) -> None:
    fleet = make_fleet(hosts=2)
    before = fingerprint(shop_db)
    approver(decision("reject", approver="dba", comment="not this week"))

    with pytest.raises(RunFailed, match="gate 'data-approval' was rejected by dba"):
        go_live(
            data_plan(fleet, shop_db, tmp_path, "2.0.0", reversible=False, gate="data-approval")
        )

    assert fingerprint(shop_db) == before and "total_cents" not in columns(shop_db)
    journal, _ = only_run()
    assert "migration.applying" not in kinds(journal)


def test_only_the_newest_verified_backups_are_kept_and_the_pruning_is_recorded(
    make_fleet: Callable[..., DemoFleet], shop_db: Database, tmp_path: Path
) -> None:
    fleet = make_fleet(hosts=1)
    (tmp_path / "noop.sql").write_text("SELECT 1;")
    killed_while_verifying = tmp_path / "backups" / "demo" / "shop" / "0killed.dump"
    killed_while_verifying.mkdir(parents=True)
    (killed_while_verifying / "toc.dat").write_bytes(b"never verified")
    for version in ("2.0.0", "2.1.0"):
        go_live(
            data_plan(
                fleet,
                shop_db,
                tmp_path,
                version,
                waves=[{"name": "all", "hosts": 1}],
                sql=str(tmp_path / "noop.sql"),
                checks=[],
            )
        )

    dumps = list((tmp_path / "backups" / "demo" / "shop").glob("*.dump"))
    assert len(dumps) == 1
    pruned = [e for journal in runs() for e in journal.of_kind("backup.pruned")]
    assert [e["database"] for e in pruned] == ["shop", "shop"]
    assert pruned[0]["removed"] == ["0killed"] and not killed_while_verifying.exists()


def test_a_database_that_cannot_be_backed_up_stops_the_run_before_any_change(
    make_fleet: Callable[..., DemoFleet], shop_db: Database, tmp_path: Path
) -> None:
    fleet = make_fleet(hosts=2)
    plan = data_plan(fleet, shop_db, tmp_path, "2.0.0")
    Path(plan).write_text(
        Path(plan).read_text().replace(f"user: {shop_db.user}", "user: no_such_role")
    )

    with pytest.raises(RunFailed, match=r"database 'shop', connect: .*no_such_role"):
        go_live(plan)

    journal, _ = only_run()
    assert "migration.applying" not in kinds(journal) and "host.switching" not in kinds(journal)
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}


def test_a_full_backup_storage_stops_the_run_before_any_change_and_leaves_no_partial_dump(
    make_fleet: Callable[..., DemoFleet], shop_db: Database, tmp_path: Path, full_disk: Path
) -> None:
    fleet = make_fleet(hosts=2)
    plan = Path(data_plan(fleet, shop_db, tmp_path, "2.0.0"))
    sections = yaml.safe_load(plan.read_text())
    sections["backup_storage"]["directory"] = str(full_disk)
    plan.write_text(yaml.safe_dump(sections))

    with pytest.raises(RunFailed, match=r"the backup storage is full .*partial dump was removed"):
        go_live(str(plan))

    journal, _ = only_run()
    assert "migration.applying" not in kinds(journal) and "host.switching" not in kinds(journal)
    assert any("the backup storage is full" in json.dumps(e) for e in journal.entries())
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    assert [file.name for file in full_disk.rglob("*") if file.is_file()] == ["filler"]


def test_more_backup_jobs_than_the_server_has_connections_for_run_as_many_as_it_has_and_say_so(
    make_fleet: Callable[..., DemoFleet], tmp_path: Path
) -> None:
    fleet = make_fleet(hosts=1)
    (tmp_path / "noop.sql").write_text("SELECT 1;")
    with throwaway_server("-c max_connections=8") as server, database(server) as db:
        plan = Path(
            data_plan(
                fleet,
                db,
                tmp_path,
                "2.0.0",
                waves=[{"name": "all", "hosts": 1}],
                sql=str(tmp_path / "noop.sql"),
                checks=[],
            )
        )
        sections = yaml.safe_load(plan.read_text())
        sections["backups"][1]["jobs"] = 8
        plan.write_text(yaml.safe_dump(sections))
        terminal = Console(file=io.StringIO(), width=400)

        with LiveProgress(terminal, ui_url=None):
            go_live(str(plan))

    journal, _ = only_run()
    [backed_up] = journal.of_kind("database.backed_up")
    assert 1 <= backed_up["jobs"] < 8 and backed_up["verified"] is True
    assert "8 jobs asked for, but" in backed_up["jobs_note"]
    assert "free under max_connections" in backed_up["jobs_note"]
    assert f"{backed_up['jobs']} job(s) ran" in backed_up["jobs_note"]
    assert backed_up["jobs_note"] in terminal.file.getvalue()  # type: ignore[attr-defined]


def test_a_database_and_its_backup_storage_can_come_from_blocks(
    make_fleet: Callable[..., DemoFleet], shop_db: Database, tmp_path: Path
) -> None:
    fleet = make_fleet(hosts=1)
    PostgresDatabase(
        host=shop_db.host,
        port=shop_db.port,
        database=shop_db.dbname,
        user=shop_db.user,
        password="unused-with-trust-auth",
    ).save("shop-db", overwrite=True)
    BackupStorage(directory=str(tmp_path / "vault"), keep=3).save("vault", overwrite=True)
    plan = Path(data_plan(fleet, shop_db, tmp_path, "2.0.0", waves=[{"name": "all", "hosts": 1}]))
    sections = yaml.safe_load(plan.read_text())
    sections |= {"databases": {"shop": {"block": "shop-db"}}, "backup_storage": {"block": "vault"}}
    plan.write_text(yaml.safe_dump(sections))

    record = go_live(str(plan))

    assert record["databases"]["shop"]["migrations"] == ["0042_cents.sql"]
    assert len(list((tmp_path / "vault" / "demo" / "shop").glob("*.dump"))) == 1
    journal, _ = only_run()
    assert "unused-with-trust-auth" not in json.dumps(journal.entries())
    assert b"unused-with-trust-auth" not in (golive_home() / "store.db").read_bytes()
    assert "unused-with-trust-auth" not in (journal.run_dir / "record.json").read_text()


def test_an_emergency_rollback_of_a_finished_run_restores_data_only_when_asked(
    make_fleet: Callable[..., DemoFleet], shop_db: Database, tmp_path: Path, golive_home: Path
) -> None:
    fleet = make_fleet(hosts=2)
    before = fingerprint(shop_db)
    go_live(data_plan(fleet, shop_db, tmp_path, "2.0.0"))
    with shop_db.connect() as conn:  # the application writes after the go-live
        conn.execute(
            "INSERT INTO customers (name) SELECT 'late ' || i FROM generate_series(1, 5) i"
        )
        conn.commit()
    [run] = runs()
    rollback = [str(Path(sys.executable).parent / "golive"), "rollback", run.run_id, "--yes"]
    environment = os.environ | {"GOLIVE_HOME": str(golive_home), "COLUMNS": "200"}

    unchosen = subprocess.run(rollback, env=environment, capture_output=True, text=True)
    restored = subprocess.run(
        [*rollback, "--data", "restore"], env=environment, capture_output=True, text=True
    )

    assert unchosen.returncode == 2 and "Choose --data restore, or --hosts-only" in unchosen.stderr
    assert "public.customers" in unchosen.stdout and "+5" in unchosen.stdout
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert fingerprint(shop_db) == before and "total_cents" not in columns(shop_db)
    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
