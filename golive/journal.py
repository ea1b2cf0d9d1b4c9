"""The run journal: everything a run does, appended as it happens.

One JSON object per line in `runs/<run id>/journal.jsonl`, flushed to disk before the step it
describes goes on. It is the source of truth for what a run changed: rollback reads it (not
in-memory hooks, which die with the process), and so do the run record and `golive status`.

Entries that matter to rollback come in pairs around a change: `host.switching` is written
before a host's `current` link moves and `host.switched` after, so a crash between the two
still leaves the host listed as "may have changed".
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from golive.errors import AmbiguousRun, JournalCorrupt, RunNotFound
from golive.home import runs_dir
from golive.private import private_dir

Entry = dict[str, Any]
Listener = Callable[[Entry], None]

_listeners: list[Listener] = []
_RUN_ID = re.compile(r"^[0-9a-fA-F-]{1,36}$")
_lock = threading.Lock()


def subscribe(listener: Listener) -> Callable[[], None]:
    """Call `listener` with every entry any journal in this process writes; returns unsubscribe."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


class RunJournal:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "journal.jsonl"

    @classmethod
    def create(cls, run_id: str) -> RunJournal:
        run_dir = runs_dir() / run_id
        private_dir(run_dir)  # a run's folder holds its backups
        return cls(run_dir)

    @classmethod
    def find(cls, run_id: str) -> RunJournal:
        """The journal of a past or running run; accepts a unique prefix of its id."""
        if not _RUN_ID.match(run_id):
            raise RunNotFound(run_id, str(runs_dir()))
        matches = sorted(runs_dir().glob(f"{run_id}*/journal.jsonl"))
        if len(matches) > 1:
            raise AmbiguousRun(run_id, [m.parent.name for m in matches])
        if not matches:
            raise RunNotFound(run_id, str(runs_dir()))
        return cls(matches[0].parent)

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    def write(self, kind: str, **fields: Any) -> Entry:
        entry = {"at": datetime.now(UTC).isoformat(), "kind": kind, **fields}
        line = json.dumps(entry, default=str, sort_keys=False)
        with _lock, self.path.open("a", encoding="utf-8") as file:
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())
        for listener in list(_listeners):
            listener(entry | {"run_id": self.run_id})
        return entry

    def entries(self) -> list[Entry]:
        if not self.path.exists():
            return []
        entries = []
        with self.path.open("rb") as file:
            for number, line in enumerate(file, 1):
                if line.strip():
                    entries.append(_entry(line, str(self.path), number))
        return entries

    def of_kind(self, *kinds: str) -> Iterator[Entry]:
        return (e for e in self.entries() if e["kind"] in kinds)

    @contextmanager
    def step(self, stage: str, **about: Any) -> Iterator[dict[str, Any]]:
        """Record a step's start, then its result (what the body puts in the dict) or error."""
        self.write("step.started", stage=stage, **about)
        result: dict[str, Any] = {}
        try:
            yield result
        except BaseException as error:
            self.write("step.failed", stage=stage, **about, error=str(error))
            raise
        self.write("step.finished", stage=stage, **about, result=result)


def _entry(line: bytes, path: str, number: int) -> Entry:
    try:
        entry = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        cut = "" if line.endswith(b"\n") else " (the line is cut short)"
        raise JournalCorrupt(path, number, f"not a journal entry{cut}: {error}") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
        raise JournalCorrupt(path, number, "not a journal entry: it has no kind")
    return entry
