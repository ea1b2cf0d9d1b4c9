"""Runs an older golive journaled as `GOLIVE_HOME/runs/<run id>/journal.jsonl`, taken into the
run store once, so nobody loses history on upgrade.

Each run is imported whole, in one transaction, with its entries' own times, followed by a
`store.imported` entry holding the file's sha256 and line count: anyone can check the
imported chain against the file, which is left where it was. A journal that does not read
back (a corrupt line, a kind golive never wrote) is not imported and is named.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from golive import entries as kinds
from golive.errors import GoLiveError, JournalCorrupt
from golive.home import runs_dir
from golive.store import NewEntry, RunStore


def old_journals() -> list[Path]:
    return sorted(runs_dir().glob("*/journal.jsonl"))


def import_journals(store: RunStore, journals: list[Path]) -> dict[str, JournalCorrupt]:
    """Import every journal the store does not hold yet; returns why each journal that
    could not be imported was refused, by run id."""
    known = {row.run_id for row in store.run_rows(with_other_chains=True)}
    refused: dict[str, JournalCorrupt] = {}
    for path in journals:
        run_id = path.parent.name
        if run_id in known:
            continue
        try:
            new, seal = _read(path)
        except (JournalCorrupt, kinds.UnknownEntry) as error:
            refused[run_id] = error if isinstance(error, JournalCorrupt) else _named(path, error)
            continue
        store.import_run(run_id, new, seal)
    return refused


def _named(path: Path, error: GoLiveError) -> JournalCorrupt:
    return JournalCorrupt(str(path), 0, str(error))


def _read(path: Path) -> tuple[list[NewEntry], str | None]:
    data = path.read_bytes()
    new: list[NewEntry] = []
    seal = None
    lines = data.splitlines(keepends=True)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        entry = read_line(line, str(path), number)
        kind, at = entry.pop("kind"), str(entry.pop("at", ""))
        version, body = kinds.checked(kind, entry)
        new.append(NewEntry(kind, version, body, at or None))
        if kind == "run.finished":
            seal = body["state"]
    about = {"source": str(path), "sha256": hashlib.sha256(data).hexdigest(), "lines": len(lines)}
    version, body = kinds.checked("store.imported", about)
    new.append(NewEntry("store.imported", version, body))
    return new, seal


def read_line(line: bytes, path: str, number: int) -> dict[str, Any]:
    try:
        entry = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        cut = "" if line.endswith(b"\n") else " (the line is cut short)"
        raise JournalCorrupt(path, number, f"not a journal entry{cut}: {error}") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
        raise JournalCorrupt(path, number, "not a journal entry: it has no kind")
    return entry
