"""Benchmark: the run store against what it replaces and against bare sqlite3 + hashlib.

    .venv/bin/python bench/store.py [--entries 500] [--verify 100000] [--runs 10000]

1. Writing an entry: golive's journal (typed, hash-chained, committed to SQLite with
   synchronous=FULL) beside the JSONL journal it replaces (a line appended and fsynced).
   Aim: within 1.5x.
2. `golive audit verify` over 100,000 entries beside bare sqlite3 + hashlib recomputing the
   same hashes. Aim: under 2 s.
3. `golive audit list` over 10,000 runs (newest first, with their states) beside one bare
   sqlite3 query. Aim: under 1 s.

Each is timed three times, side by side in the same run; the medians and ratios are printed.
The stores live in a temporary folder on the same disk as the JSONL baseline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from golive import audit  # noqa: E402
from golive.journal import RunJournal  # noqa: E402
from golive.store import NewEntry, RunStore, forget_stores, open_store  # noqa: E402

RESULT = {"seconds": 0.4, "transfer": {"mode": "incremental", "bytes_sent": 1024}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=500)
    parser.add_argument("--verify", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="golive-bench-", dir=Path.home()) as work:
        writes(Path(work), args.entries)
        verifying(Path(work), args.verify)
        listing(Path(work), args.runs)


def writes(work: Path, count: int) -> None:
    def golive() -> float:
        home(work / f"w-{uuid.uuid4().hex}")
        journal = RunJournal.create(str(uuid.uuid4()))
        journal.write("step.started", stage="warm-up")  # opens the store: not timed
        started = time.perf_counter()
        for number in range(count):
            journal.write("step.finished", stage="deploy", host=f"web{number}", result=RESULT)
        return (time.perf_counter() - started) / count

    def jsonl() -> float:
        path = work / f"{uuid.uuid4().hex}.jsonl"
        started = time.perf_counter()
        for number in range(count):
            entry = {"at": "2026-12-02T00:00:00+00:00", "kind": "step.finished", "stage": "deploy"}
            line = json.dumps(entry | {"host": f"web{number}", "result": RESULT})
            with path.open("a", encoding="utf-8") as file:
                file.write(line + "\n")
                file.flush()
                os.fsync(file.fileno())
        return (time.perf_counter() - started) / count

    def bare_sqlite() -> float:
        """The same chained append (an entry and its link) with sqlite3 alone: the floor for
        a durable SQL store on this disk."""
        home(work / f"b-{uuid.uuid4().hex}")
        RunJournal.create("bare").write("step.started", stage="warm-up")
        forget_stores()
        connection = sqlite3.connect(work / os.environ["GOLIVE_HOME"] / "store.db")
        connection.isolation_level = None
        connection.execute("PRAGMA synchronous=FULL")
        started = time.perf_counter()
        for number in range(count):
            connection.execute("BEGIN IMMEDIATE")
            seq, prev = connection.execute(
                "SELECT seq, hash FROM golive_entries WHERE run_id = 'bare' "
                "ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            pos, head = connection.execute(
                "SELECT pos, hash FROM golive_heads ORDER BY pos DESC LIMIT 1"
            ).fetchone()
            body = json.dumps({"stage": "deploy", "host": f"web{number}", "result": RESULT})
            digest = hashlib.sha256(f"{prev}{seq}{body}".encode()).hexdigest()
            connection.execute(
                "INSERT INTO golive_entries VALUES ('bare', ?, '', 'step.finished', 1, ?, ?, ?)",
                (seq + 1, body, prev, digest),
            )
            link = hashlib.sha256(f"{head}{pos}{digest}".encode()).hexdigest()
            connection.execute(
                "INSERT INTO golive_heads VALUES "
                "(?, 'bare', 'appended', 'running', ?, ?, '', ?, ?)",
                (pos + 1, seq + 1, digest, head, link),
            )
            connection.execute("COMMIT")
        connection.close()
        return (time.perf_counter() - started) / count

    ours, theirs = side_by_side(golive, jsonl)
    report(f"write one entry ({count} in a row)", ours, "JSONL append + fsync", theirs, "1.5x")
    ours, theirs = side_by_side(golive, bare_sqlite)
    report("  the same", ours, "bare sqlite3, same append and link", theirs, "for reference")


def verifying(work: Path, entries: int) -> None:
    home(work / "verify")
    store = open_store(create=True)
    fill(store, runs=entries // 100, entries_per_run=100)
    path = work / "verify" / "store.db"

    def golive() -> float:
        started = time.perf_counter()
        verdict = audit.verify(
            store.all_entries(), store.heads(), {r.run_id: r for r in store.run_rows()}
        )
        assert verdict.ok and verdict.entries == entries, verdict.problems[:3]
        return time.perf_counter() - started

    def bare() -> float:
        started = time.perf_counter()
        with sqlite3.connect(path) as connection:
            prev, run = "", None
            rows = connection.execute(
                "SELECT run_id, seq, at, kind, v, body, prev, hash FROM golive_entries "
                "ORDER BY run_id, seq"
            )
            for run_id, seq, at, kind, v, body, before, digest in rows:
                if run_id != run:
                    run, prev = run_id, "0" * 64
                text = "\x1f".join([prev, run_id, str(seq), at, kind, str(v), body])
                assert before == prev and hashlib.sha256(text.encode()).hexdigest() == digest
                prev = digest
        return time.perf_counter() - started

    ours, theirs = side_by_side(golive, bare)
    report(f"verify {entries:,} entries", ours, "bare sqlite3 + hashlib", theirs, "under 2 s")
    cli("audit", "verify")


def listing(work: Path, runs: int) -> None:
    home(work / "list")
    store = open_store(create=True)
    fill(store, runs=runs, entries_per_run=3)
    path = work / "list" / "store.db"

    def golive() -> float:
        started = time.perf_counter()
        rows = audit.select_runs(store.run_rows(), state="completed")
        assert len(rows) == runs
        return time.perf_counter() - started

    def bare() -> float:
        started = time.perf_counter()
        with sqlite3.connect(path) as connection:
            rows = connection.execute(
                "SELECT r.*, (SELECT state FROM golive_heads h WHERE h.run_id = r.run_id "
                "ORDER BY pos DESC LIMIT 1) FROM golive_runs r ORDER BY started_at DESC"
            ).fetchall()
        assert len(rows) == runs
        return time.perf_counter() - started

    ours, theirs = side_by_side(golive, bare)
    report(f"list {runs:,} runs", ours, "one bare sqlite3 query", theirs, "under 1 s")
    cli("audit", "list", "--limit", "20")


def fill(store: RunStore, runs: int, entries_per_run: int) -> None:
    """Runs as golive writes them, each in one transaction (import_run) to build quickly."""
    for number in range(runs):
        run_id = str(uuid.UUID(int=number + 1))
        started = {
            "run_id": run_id,
            "flow_run_name": f"bench-{number}",
            "triggered_by": "bench@machine",
            "plan_path": "/plans/shop.yaml",
            "plan_sha256": "ab" * 32,
            "release": "shop-web",
            "version": f"2.{number}.0",
            "environment": "production",
            "fleet": ["web1"],
            "waves": [],
        }
        new = [NewEntry("run.started", 1, started)]
        new += [
            NewEntry("step.finished", 1, {"stage": "deploy", "host": "web1", "result": RESULT})
            for _ in range(entries_per_run - 2)
        ]
        new.append(NewEntry("run.finished", 1, {"state": "completed"}))
        store.import_run(run_id, new, seal="completed")


def side_by_side(ours: Callable[[], float], theirs: Callable[[], float]) -> tuple[float, float]:
    timings: dict[str, list[float]] = {"ours": [], "theirs": []}
    for _ in range(3):
        timings["ours"].append(ours())
        timings["theirs"].append(theirs())
    return statistics.median(timings["ours"]), statistics.median(timings["theirs"])


def report(what: str, ours: float, baseline: str, theirs: float, aim: str) -> None:
    unit, scale = ("ms", 1000) if ours < 0.1 else ("s", 1)
    print(
        f"{what}: golive {ours * scale:.3f} {unit}, {baseline} {theirs * scale:.3f} {unit}: "
        f"{ours / theirs:.2f}x (aim: {aim}; median of 3)"
    )


def cli(*args: str) -> None:
    """The same through the command a person types, start-up included, for reference."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "golive"), *args], capture_output=True, text=True
    )
    print(f"  `golive {' '.join(args)}` end to end: {time.perf_counter() - started:.2f} s "
          f"(exit {done.returncode})")  # fmt: skip


def home(path: Path) -> None:
    forget_stores()
    os.environ["GOLIVE_HOME"] = str(path)
    os.environ.pop("GOLIVE_STORE_URL", None)


if __name__ == "__main__":
    main()
