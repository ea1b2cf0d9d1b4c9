"""Test helpers for the run store: the runs it holds, and edits made behind golive's back,
as someone with write access to the database could make them."""

from __future__ import annotations

import contextvars
import json
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from golive.errors import StoreError
from golive.journal import RunJournal, run_store
from golive.store import GENESIS, canonical, entry_hash, link_hash, store_url


def runs() -> list[RunJournal]:
    """Every run in the store, oldest first."""
    store = run_store()
    return [RunJournal(row.run_id, store) for row in reversed(store.run_rows())]


def record_of(journal: RunJournal) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((journal.run_dir / "record.json").read_text())
    return record


def sql(statement: str, **params: Any) -> list[Any]:
    """Run SQL on the store directly, outside golive."""
    engine = create_engine(store_url().replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def forge(run_id: str, seq: int, rehash: bool = False, **fields: Any) -> None:
    """Change an entry's fields. With `rehash`, recompute the hashes of that entry and every
    later one of the run, so the run's own chain is consistent again (only its seal and the
    chain of run heads can tell)."""
    [(body,)] = sql(
        "SELECT body FROM golive_entries WHERE run_id = :r AND seq = :s", r=run_id, s=seq
    )
    sql(
        "UPDATE golive_entries SET body = :b WHERE run_id = :r AND seq = :s",
        b=canonical(json.loads(body) | fields),
        r=run_id,
        s=seq,
    )
    if rehash:
        rechain(run_id)


def rechain(run_id: str) -> None:
    rows = sql(
        "SELECT seq, at, kind, v, body FROM golive_entries WHERE run_id = :r ORDER BY seq",
        r=run_id,
    )
    prev = GENESIS
    for seq, at, kind, v, body in rows:
        digest = entry_hash(prev, run_id, seq, at, kind, v, body)
        sql(
            "UPDATE golive_entries SET prev = :p, hash = :h WHERE run_id = :r AND seq = :s",
            p=prev,
            h=digest,
            r=run_id,
            s=seq,
        )
        prev = digest


def rechain_heads() -> None:
    """Recompute the whole chain of run heads over the entries as they now are: what a
    forger who rewrites a store consistently does. Only a head published earlier catches it."""
    links = sql("SELECT pos, run_id, event, state, entries, at FROM golive_heads ORDER BY pos")
    prev = GENESIS
    for pos, run_id, event, state, entries, at in links:
        [(run_head,)] = sql(
            "SELECT hash FROM golive_entries WHERE run_id = :r AND seq = :s", r=run_id, s=entries
        )
        digest = link_hash(prev, pos, run_id, event, state, entries, run_head, at)
        sql(
            "UPDATE golive_heads SET prev = :p, hash = :h, run_head = :rh WHERE pos = :pos",
            p=prev,
            h=digest,
            rh=run_head,
            pos=pos,
        )
        prev = digest


def write_run(run_id: str, steps: int = 5, state: str | None = "completed", **started: Any) -> None:
    """A small run written through golive's own journal, as a go-live writes one."""
    journal = RunJournal.create(run_id)
    journal.write(
        "run.started",
        **{
            "run_id": run_id,
            "flow_run_name": f"shop-web-{run_id[:4]}",
            "triggered_by": "alice@laptop",
            "plan_path": "/plans/shop.yaml",
            "plan_sha256": "ab" * 32,
            "release": "shop-web",
            "version": "2.0.0",
            "environment": "production",
            "fleet": ["web1", "web2"],
            "waves": [{"name": "all", "hosts": ["web1", "web2"], "gate": None}],
        }
        | started,
    )
    for number in range(steps):
        with journal.step("deploy", host=f"web{number % 2 + 1}", wave=0) as result:
            result["seconds"] = number
    if state is not None:
        journal.write("run.finished", state=state)


def wait_for_gate(seconds: float = 60) -> str:
    """The id of the one run in the store, once it waits at a gate."""
    return wait_for_entry("gate.opened", seconds)


def wait_for_entry(kind: str, seconds: float = 60, **fields: Any) -> str:
    """The id of the first run in the store to write an entry of this kind (with these
    fields), once it has."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = runs()
        except StoreError:  # not created yet
            found = []
        for run in found:
            if any(e.items() >= fields.items() for e in run.of_kind(kind)):
                return run.run_id
        time.sleep(0.2)
    raise AssertionError(f"the run never wrote {kind} {fields or ''}")


def go_live_in_background(plan: Path) -> tuple[threading.Thread, dict[str, Any]]:
    """The go-live flow in a thread of this process (with Prefect's settings), as a person's
    terminal would run it while someone else acts on it; the dict gets its record."""
    from flows.golive import go_live

    finished: dict[str, Any] = {}
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(lambda: finished.update(go_live(str(plan))),), daemon=True
    )
    thread.start()
    return thread, finished
