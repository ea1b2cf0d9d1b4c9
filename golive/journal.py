"""A run's journal: its entries in the run store, written as the run goes.

Each entry is committed to the store before the step it describes goes on. The store is the
source of truth for what a run changed: rollback reads it (not in-memory hooks, which die with
the process), and so do the run record, `golive status`, approvals and `golive audit`, from any
machine that reaches the store.

Entries that matter to rollback come in pairs around a change: `host.switching` is written
before a host's `current` link moves and `host.switched` after, so a crash between the two
still leaves the host listed as "may have changed".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from golive import entries as kinds
from golive.errors import JournalCorrupt, RecordTampered, RunNotFound
from golive.home import runs_dir
from golive.private import private_dir
from golive.store import NewEntry, RunStore, StoredEntry, open_store

Entry = dict[str, Any]
Listener = Callable[[Entry], None]

_listeners: list[Listener] = []
logger = logging.getLogger(__name__)


def subscribe(listener: Listener) -> Callable[[], None]:
    """Call `listener` with every entry any journal in this process writes; returns unsubscribe."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


class RunJournal:
    def __init__(self, run_id: str, store: RunStore) -> None:
        self.run_id = run_id
        self.store = store

    @classmethod
    def create(cls, run_id: str) -> RunJournal:
        return cls(run_id, run_store(create=True))

    @classmethod
    def find(cls, run_id: str) -> RunJournal:
        """A past or running run's journal; accepts a unique prefix of its id."""
        store = run_store()
        try:
            return cls(store.find_run(run_id), store)
        except RunNotFound:
            for refused_id, why in refused_imports.items():
                if refused_id.startswith(run_id):
                    raise why from None
            raise

    @property
    def run_dir(self) -> Path:
        """This machine's folder for what the run leaves besides entries: backups, reports."""
        return private_dir(runs_dir() / self.run_id)

    def write(self, kind: str, **fields: Any) -> Entry:
        version, body = kinds.checked(kind, fields)
        seal = body["state"] if kind == "run.finished" else None
        [stored] = self.store.append(self.run_id, [NewEntry(kind, version, body)], seal=seal)
        entry = {"at": stored.at, "kind": kind, **body}
        for listener in list(_listeners):
            try:
                listener(entry | {"run_id": self.run_id})
            except Exception:  # what watches a step (the terminal, the logs) must not fail it
                logger.exception("showing entry %s of run %s failed", kind, self.run_id)
        return entry

    def entries(self) -> list[Entry]:
        return [as_entry(stored) for stored in self.store.entries(self.run_id)]

    def verified(self) -> RunJournal:
        """This journal, once its chain (and its seal, if it has one) verifies; before golive
        acts on a run's entries from the store, as a rollback does."""
        from golive.audit import verify

        verdict = verify(
            self.store.all_entries([self.run_id]), self.store.heads(), only={self.run_id}
        )
        if not verdict.ok:
            raise RecordTampered(self.run_id, verdict.problems)
        return self

    def of_kind(self, *kinds: str) -> Iterator[Entry]:
        return (e for e in self.entries() if e["kind"] in kinds)

    def rollback_runs(self) -> list[str]:
        """The runs of their own that rolled this one back (`golive rollback`, the rollback
        deployment, the crash hook), oldest first: they hold what was put back since."""
        rows = list(reversed(self.store.run_rows()))
        mine = next((row for row in rows if row.run_id == self.run_id), None)
        if mine is None:
            return []
        later = [
            row.run_id
            for row in rows
            if row.environment == mine.environment and row.started_at >= mine.started_at
        ]
        return [run_id for run_id in later if _rolls_back(self.store, run_id) == self.run_id]

    def with_rollbacks(self, rollback_runs: list[str]) -> list[Entry]:
        """This run's entries and those of its rollback runs, in time order: what it changed,
        and what has been put back since, wherever that was recorded."""
        entries = RunJournal.entries(self)
        for run_id in rollback_runs:
            entries += RunJournal(run_id, self.store).entries()
        return sorted(entries, key=lambda entry: str(entry["at"]))

    @contextmanager
    def step(self, stage: str, **about: Any) -> Iterator[dict[str, Any]]:
        """Record a step's start, then its result (what the body puts in the dict) and, if it
        failed, its error."""
        self.write("step.started", stage=stage, **about)
        result: dict[str, Any] = {}
        try:
            yield result
        except BaseException as error:
            found = {"result": result} if result else {}
            self.write("step.failed", stage=stage, **about, error=str(error), **found)
            raise
        self.write("step.finished", stage=stage, **about, result=result)


class RollbackJournal(RunJournal):
    """The journal of a rollback run (`golive rollback`, the rollback deployment): it reads the
    run it undoes followed by its own entries, and writes its own. Its `run_id` stays the
    undone run's, whose backups, kept copies and connections the rollback works with."""

    def __init__(self, undone: RunJournal, own: RunJournal) -> None:
        super().__init__(undone.run_id, undone.store)
        self.own = own
        self.rollbacks = [*undone.rollback_runs(), own.run_id]  # own is listed once started
        self.rollbacks = list(dict.fromkeys(self.rollbacks))

    def write(self, kind: str, **fields: Any) -> Entry:
        return self.own.write(kind, **fields)

    def entries(self) -> list[Entry]:
        return self.with_rollbacks(self.rollbacks)


def _rolls_back(store: RunStore, run_id: str) -> str | None:
    first = store.first_entry(run_id)
    return first.fields().get("rolls_back") if first and first.kind == "run.started" else None


def as_entry(stored: StoredEntry) -> Entry:
    """A stored entry as its kind's model reads it, with where it sits in the chain."""
    try:
        _, body = kinds.checked(stored.kind, stored.fields())
    except (kinds.UnknownEntry, ValueError) as error:
        raise RecordTampered(stored.run_id, [f"entry {stored.seq}: {error}"]) from None
    return {"at": stored.at, "kind": stored.kind, "seq": stored.seq, "hash": stored.hash, **body}


_imported: set[str] = set()
refused_imports: dict[str, JournalCorrupt] = {}  # old journals that could not be taken in


def run_store(create: bool = False) -> RunStore:
    """The run store, with the runs an older golive journaled under GOLIVE_HOME/runs taken in
    (once; see golive/legacy.py). Without `create`, a store that is not there is an error."""
    from golive.legacy import import_journals, old_journals

    old = old_journals()
    store = open_store(create=create or bool(old))
    if old and store.shown not in _imported:
        refused_imports.update(import_journals(store, old))
        _imported.add(store.shown)
    return store
