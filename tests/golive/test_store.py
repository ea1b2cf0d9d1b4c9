"""The run store: every entry chained and committed, many writers at once, any tampering
caught by `golive audit verify` (run as users run it, in its own process), bad stores named."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import event

from golive.journal import RunJournal, run_store
from golive.store import NewEntry, RunStore, link_hash
from tests.runstore import forge, rechain_heads, sql, write_run

GOLIVE = str(Path(sys.executable).parent / "golive")


def golive(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = os.environ | {"COLUMNS": "200"} | env
    done = subprocess.run(
        [GOLIVE, *args], capture_output=True, text=True, env=environment, timeout=120
    )
    assert "Traceback" not in done.stdout + done.stderr
    return done


def contents(store: Path) -> list[str]:
    """A SQLite store's contents as SQL (its bytes move when SQLite checkpoints its WAL)."""
    with sqlite3.connect(store) as connection:
        return list(connection.iterdump())


def two_runs() -> tuple[str, str]:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    write_run(first, steps=4)
    write_run(second, steps=4, state="failed")
    return first, second


def caught(says: str) -> str:
    done = golive("audit", "verify")
    assert done.returncode == 1, done.stdout + done.stderr
    assert says in done.stderr, done.stderr
    return done.stderr


def test_every_entry_is_chained_to_the_one_before_it_and_sealed(any_store: str) -> None:
    first, _ = two_runs()

    entries = run_store().entries(first)
    heads = run_store().heads()

    assert [e.seq for e in entries] == list(range(1, 11))
    assert all(e.prev == before.hash for before, e in itertools.pairwise(entries))
    mine = [h for h in heads if h.run_id == first]
    assert [h.event for h in mine] == ["opened", *["appended"] * 8, "sealed"]
    assert [h.entries for h in mine] == list(range(1, 11))
    assert mine[-1].run_head == entries[-1].hash and mine[-1].state == "completed"
    verified = golive("audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "2 runs, 20 entries and 20 links verify" in verified.stdout


def test_an_entry_of_a_kind_golive_never_writes_is_refused_before_it_is_stored(
    any_store: str,
) -> None:
    journal = RunJournal.create(str(uuid.uuid4()))
    with pytest.raises(Exception, match="is not one golive writes"):
        journal.write("host.hacked", host="web1")
    with pytest.raises(Exception, match="does not have its shape"):
        journal.write("host.found", host="web1", wave=0, release="1.0", password="hunter2")
    assert journal.entries() == []


def test_an_edited_entry_is_named(any_store: str) -> None:
    first, _ = two_runs()
    forge(first, 5, result={"seconds": 0})
    caught(f"run {first}, entry 5 (step.finished): its contents do not match its hash")
    shown = golive("audit", "show", first[:8])
    assert "What follows may have been altered" in shown.stdout
    assert "entries in the run store do not verify" in shown.stderr


def test_a_deleted_entry_is_named(any_store: str) -> None:
    first, _ = two_runs()
    sql("DELETE FROM golive_entries WHERE run_id = :r AND seq = 5", r=first)
    caught(f"run {first}, entry 6 (step.started): found where entry 5 should be")


def test_reordered_entries_are_named(any_store: str) -> None:
    first, _ = two_runs()
    for old, new in ((4, 100), (5, 4), (100, 5)):
        sql(
            "UPDATE golive_entries SET seq = :n WHERE run_id = :r AND seq = :o",
            n=new,
            o=old,
            r=first,
        )
    caught(f"run {first}, entry 4 (step.finished): it does not follow the entry before it")


def test_an_entry_inserted_after_the_seal_is_named(any_store: str) -> None:
    first, _ = two_runs()
    [last] = sql("SELECT * FROM golive_entries WHERE run_id = :r AND seq = 10", r=first)
    sql(
        "INSERT INTO golive_entries VALUES (:r, 11, :at, 'run.finished', 1, :b, :p, :h)",
        r=first,
        at=last.at,
        b='{"state":"completed"}',
        p=last.hash,
        h="f" * 64,
    )
    caught(f"run {first}: its newest link holds entry 10, but it has 11")


def test_a_truncated_run_is_named(any_store: str) -> None:
    first, _ = two_runs()
    sql("DELETE FROM golive_entries WHERE run_id = :r AND seq > 7", r=first)
    caught("but the run has only 7: the entries after 7 were cut off (truncated)")


def test_a_run_deleted_whole_is_named(any_store: str) -> None:
    _, second = two_runs()
    sql("DELETE FROM golive_entries WHERE run_id = :r", r=second)
    sql("DELETE FROM golive_runs WHERE run_id = :r", r=second)
    caught(f"run {second} is in the chain of run heads (link 11) but has no entries")


def test_a_run_inserted_whole_is_named(any_store: str) -> None:
    first, _ = two_runs()
    sql(
        "INSERT INTO golive_entries SELECT 'feedface', seq, at, kind, v, body, prev, hash "
        "FROM golive_entries WHERE run_id = :r",
        r=first,
    )
    caught("run feedface has entries, but the chain of run heads never opened it")


def test_a_run_still_going_cannot_be_rewritten_or_cut_short_either(any_store: str) -> None:
    run_id = str(uuid.uuid4())
    write_run(run_id, steps=4, state=None)  # running, or crashed: never sealed
    forge(run_id, 5, rehash=True, result={"seconds": 999})
    caught(f"run {run_id}, link 5: entry 5 is not the one it holds: the run was rewritten")


def test_a_link_appended_to_turn_a_failed_run_into_a_completed_one_is_named(
    any_store: str,
) -> None:
    _, second = two_runs()
    [last] = sql("SELECT * FROM golive_heads ORDER BY pos DESC LIMIT 1")
    forged = (last.prev, last.pos + 1, second, "sealed", "completed", 10, last.run_head, last.at)
    sql(
        "INSERT INTO golive_heads VALUES (:pos, :r, 'sealed', 'completed', 10, :h, :at, :p, :x)",
        pos=last.pos + 1,
        r=second,
        h=last.run_head,
        at=last.at,
        p=last.hash,
        x=link_hash(last.hash, *forged[1:]),
    )
    caught(f"run {second}, link {last.pos + 1}: it holds entry 10 after link {last.pos} held 10")


def test_a_run_hidden_from_the_list_of_runs_is_named(any_store: str) -> None:
    first, _ = two_runs()
    sql("DELETE FROM golive_runs WHERE run_id = :r", r=first)
    caught(f"run {first} has entries but is missing from the list of runs: it was hidden")


def test_a_store_rewritten_consistently_is_caught_by_a_head_published_before(
    any_store: str,
) -> None:
    first, _ = two_runs()
    published = run_store().heads()[-1].hash
    forge(first, 1, rehash=True, triggered_by="mallory")
    sql("UPDATE golive_runs SET triggered_by = 'mallory' WHERE run_id = :r", r=first)
    rechain_heads()

    assert golive("audit", "verify").returncode == 0  # consistent: only the head tells
    done = golive("audit", "verify", "--head", published)

    assert done.returncode == 1
    assert f"the published head {published} is not in this chain of run heads" in done.stderr


def test_twenty_processes_writing_runs_at_once_lose_nothing(any_store: str) -> None:
    writer = "import sys\nfrom tests.runstore import write_run\nwrite_run(sys.argv[1], steps=20)\n"
    run_ids = [str(uuid.uuid4()) for _ in range(20)]
    cwd = Path(__file__).parents[2]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", writer, run_id],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for run_id in run_ids
    ]
    errors = [p.communicate(timeout=300)[0] for p in processes]

    assert [p.returncode for p in processes] == [0] * 20, errors
    assert not any("locked" in e for e in errors)
    verified = golive("audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "20 runs, 840 entries and 840 links verify" in verified.stdout
    assert {row.run_id for row in run_store().run_rows()} == set(run_ids)


def host_found(host: str) -> NewEntry:
    return NewEntry("host.found", 1, {"host": host, "wave": 0, "release": None})


def appending_at_once(store: RunStore, appends: list[tuple[str, NewEntry]]) -> list[object]:
    """Each append from a thread of its own, all queued while a commit is under way (the
    store's batch lock held), then let go: what each thread got back, or raised."""
    outcomes: list[object] = [None] * len(appends)

    def append(index: int, run_id: str, entry: NewEntry) -> None:
        try:
            outcomes[index] = store.append(run_id, [entry])
        except Exception as error:
            outcomes[index] = error

    threads = [
        threading.Thread(target=append, args=(index, *one)) for index, one in enumerate(appends)
    ]
    with store._batch_lock:
        for thread in threads:
            thread.start()
        while len(store._queued) < len(appends):
            time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_appends_from_many_threads_at_once_share_a_commit_and_lose_nothing(
    any_store: str,
) -> None:
    store = run_store(create=True)
    commits = itertools.count()
    event.listen(store.engine, "commit", lambda _connection: next(commits))
    run_ids = [str(uuid.uuid4()) for _ in range(4)]
    appends = [(run_ids[n % 4], host_found(f"web{n}")) for n in range(50)]

    outcomes = appending_at_once(store, appends)

    assert all(isinstance(outcome, list) for outcome in outcomes), outcomes
    assert next(commits) == 1  # fifty appends, one transaction
    assert sorted(len(store.entries(run_id)) for run_id in run_ids) == [12, 12, 13, 13]
    verified = golive("audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "4 runs, 50 entries and 50 links verify" in verified.stdout


def test_an_append_that_fails_fails_alone_and_the_ones_queued_with_it_are_written(
    any_store: str,
) -> None:
    store = run_store(create=True)
    run_id = str(uuid.uuid4())
    unwritable = NewEntry("host.found", 1, {"host": object()})  # no JSON for it
    appends = [(run_id, host_found(f"web{n}")) for n in range(10)]
    appends.insert(5, (run_id, unwritable))

    outcomes = appending_at_once(store, appends)

    assert isinstance(outcomes.pop(5), TypeError)
    assert all(isinstance(outcome, list) for outcome in outcomes), outcomes
    assert len(store.entries(run_id)) == 10
    assert golive("audit", "verify").returncode == 0


# Bad stores: a clear message naming the store or setting, non-zero, nothing written.


def test_a_missing_store_is_named_and_not_created(tmp_path: Path) -> None:
    home = tmp_path / "empty-home"
    done = golive("audit", "list", GOLIVE_HOME=str(home))
    assert done.returncode == 1
    assert f"run store sqlite:///{home}/store.db: there is no run store there yet" in done.stderr
    assert "GOLIVE_STORE_URL" in done.stderr
    assert not home.exists()
    status = golive("status", GOLIVE_HOME=str(home))
    assert status.returncode == 0 and "no runs yet" in status.stdout


def test_a_corrupt_store_file_is_named_and_left_as_it_is(golive_home: Path) -> None:
    golive_home.mkdir()
    store = golive_home / "store.db"
    store.write_bytes(b"this is not a database, but it is someone's evidence" * 100)
    before = store.read_bytes()

    done = golive("audit", "list")

    assert done.returncode == 1
    assert f"run store sqlite:///{store}: file is not a database" in done.stderr
    assert "keep it for whoever investigates" in done.stderr
    assert store.read_bytes() == before


def test_a_store_from_a_newer_golive_is_refused_unchanged(golive_home: Path) -> None:
    two_runs()
    sql("UPDATE golive_store_version SET version_num = '9001'")
    before = contents(golive_home / "store.db")

    done = golive("audit", "list")

    assert done.returncode == 1
    assert "written by a newer golive (schema revision 9001)" in done.stderr
    assert contents(golive_home / "store.db") == before
    assert sql("SELECT version_num FROM golive_store_version") == [("9001",)]


def test_a_locked_store_lets_readers_read_and_tells_a_writer_which_setting_to_raise(
    golive_home: Path,
) -> None:
    first, _ = two_runs()
    holder = sqlite3.connect(golive_home / "store.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        listing = golive("audit", "list")
        writer = subprocess.run(
            [sys.executable, "-c", "from tests.runstore import write_run; write_run('abc')"],
            cwd=Path(__file__).parents[2],
            env=os.environ | {"GOLIVE_STORE_TIMEOUT": "1"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert listing.returncode == 0 and first[:8] in listing.stdout
    assert writer.returncode != 0
    assert "database is locked; another process held it for more than 1 s" in writer.stderr
    assert "GOLIVE_STORE_TIMEOUT" in writer.stderr


def test_an_unreachable_postgresql_store_is_named_without_its_password() -> None:
    url = "postgresql://golive:planted-store-password@127.0.0.1:1/runs"
    done = golive("audit", "list", GOLIVE_STORE_URL=url)
    assert done.returncode == 1
    assert "run store postgresql://golive:***@127.0.0.1:1/runs" in done.stderr
    assert "check GOLIVE_STORE_URL (or GOLIVE_STORE_BLOCK)" in done.stderr
    assert "planted-store-password" not in done.stdout + done.stderr


def test_an_unknown_or_ambiguous_run_is_named(golive_home: Path) -> None:
    write_run("abc11111-0000-0000-0000-000000000000")
    write_run("abc22222-0000-0000-0000-000000000000")
    unknown = golive("audit", "show", "feedface")
    ambiguous = golive("audit", "show", "abc")
    assert unknown.returncode == 2 and "no run 'feedface' in the run store" in unknown.stderr
    assert ambiguous.returncode == 2 and "'abc' could be any of 2 runs" in ambiguous.stderr


def test_a_database_that_is_no_run_store_is_named_and_given_no_schema(golive_home: Path) -> None:
    golive_home.mkdir()
    (golive_home / "store.db").touch()
    done = golive("audit", "verify")
    assert done.returncode == 1
    assert "it is not a run store (there are no golive tables in it)" in done.stderr
    assert (golive_home / "store.db").stat().st_size == 0


def test_a_store_that_lost_its_schema_version_is_named_and_left_alone(golive_home: Path) -> None:
    two_runs()
    sql("DROP TABLE golive_store_version")
    for command in (["audit", "list"], ["status"]):
        done = golive(*command)
        assert done.returncode == 1
        assert "it has golive's tables but no schema version" in done.stderr


def test_text_from_the_store_cannot_restyle_or_hide_what_a_terminal_shows(
    golive_home: Path,
) -> None:
    write_run("aaaa0000-0000-0000-0000-000000000001", triggered_by="mallory [/] \x1b]8;;x\x1b\\")
    write_run("bbbb0000-0000-0000-0000-000000000002", environment="prod[link=http://x]uction")
    listing = golive("audit", "list")
    shown = golive("audit", "show", "aaaa")
    assert listing.returncode == 0 and shown.returncode == 0, listing.stderr + shown.stderr
    assert "mallory [/]" in listing.stdout and "prod[link=http://x]uction" in listing.stdout
    assert "\x1b]8" not in listing.stdout + shown.stdout


def test_a_lock_timeout_that_is_no_number_is_named(golive_home: Path) -> None:
    two_runs()
    done = golive("audit", "list", GOLIVE_STORE_TIMEOUT="soon")
    assert done.returncode == 1 and "GOLIVE_STORE_TIMEOUT='soon' is not a number" in done.stderr


def test_a_store_of_an_earlier_schema_is_upgraded_by_alembic_and_keeps_its_runs(
    golive_home: Path,
) -> None:
    first, second = two_runs()
    sql("DROP TABLE golive_leases")  # as revision 0001 made it
    sql("UPDATE golive_store_version SET version_num = '0001'")

    listed = golive("audit", "list")

    assert listed.returncode == 0 and first[:8] in listed.stdout and second[:8] in listed.stdout
    assert sql("SELECT version_num FROM golive_store_version") == [("0002",)]
    assert sql("SELECT count(*) FROM golive_leases") == [(0,)]
    assert golive("audit", "verify").returncode == 0
