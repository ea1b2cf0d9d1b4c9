"""One go-live per environment: a lease in the run store, held for the whole run.

Prefect frees a deployment's concurrency slot while a run is paused at a gate, so golive holds
its own lease per environment in the run store, across processes and machines. A go-live (or
`golive rollback`) takes it before anything changes, renews it every third of its length while
its process lives, and drops it when it ends. A run suspended at a gate keeps it until
shortly after the gate's deadline, and takes it back when it comes back. After a crash it
expires: a run that is neither finished nor holding its lease has crashed, and must be rolled
back before the environment takes another go-live. Lease times are the holders' clocks: keep
machines on NTP.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime

from golive.errors import EnvironmentBusy, RecordTampered, UnfinishedRun
from golive.journal import RunJournal
from golive.record import left_undone
from golive.store import Lease, RunRow, RunStore

LEASE_SETTING = "GOLIVE_LEASE_SECONDS"
logger = logging.getLogger("golive.lease")


def lease_seconds() -> float:
    """How long a lease lasts without renewal (GOLIVE_LEASE_SECONDS, default 60)."""
    try:
        return max(1.0, float(os.environ.get(LEASE_SETTING, "60")))
    except ValueError:
        return 60.0


def holder() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()})"


class Held:
    """A lease held by the block: `keep_until` keeps it past the block's end, for a run that
    suspends at a gate (its process ends; it takes its lease back when it comes back)."""

    def __init__(self) -> None:
        self.kept_until: float | None = None

    def keep_until(self, expires: float) -> None:
        self.kept_until = expires


@contextmanager
def environment_lease(
    journal: RunJournal,
    environment: str,
    purpose: str,
    takes_over: Sequence[str] = (),
    record_refusal: bool = True,
    wait: float = 0,
) -> Iterator[Held]:
    """Hold the environment for `journal`'s run while the block runs. Refused (and, with
    `record_refusal`, the run recorded as refused) while another live process holds it, or
    while another of its runs is unfinished. With `wait`, a busy environment is waited for,
    up to that many seconds. A rollback `takes_over` the unfinished run it rolls back; never
    a lease that is still being renewed."""
    seconds = lease_seconds()
    try:
        lease = _take_waiting(journal, environment, purpose, seconds, takes_over, wait)
    except (EnvironmentBusy, UnfinishedRun) as refused:
        if record_refusal:
            journal.write("run.finished", state="refused", reason=str(refused))
        raise
    journal.write("lease.taken", environment=environment, holder=lease.holder, seconds=seconds)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(journal, lease, seconds, stop), daemon=True)
    renewer.start()
    held = Held()
    try:
        yield held
    finally:
        stop.set()
        renewer.join()
        if held.kept_until is None:
            journal.store.drop_lease(lease)
        else:
            journal.store.renew_lease(lease, held.kept_until)


def _take_waiting(
    journal: RunJournal,
    environment: str,
    purpose: str,
    seconds: float,
    takes_over: Sequence[str],
    wait: float,
) -> Lease:
    """Take the lease; while another run holds it, wait (up to `wait` seconds) for it."""
    give_up = time.monotonic() + wait
    told = False
    while True:
        try:
            return take(journal.store, environment, journal.run_id, purpose, seconds, takes_over)
        except EnvironmentBusy as busy:
            if time.monotonic() >= give_up:
                raise
            if not told:
                journal.write("lease.waiting", environment=environment, held_by=busy.run_id)
                told = True
            time.sleep(min(2.0, max(0.1, give_up - time.monotonic())))


def take(
    store: RunStore,
    environment: str,
    run_id: str,
    purpose: str,
    seconds: float,
    takes_over: Sequence[str] = (),
) -> Lease:
    now = time.time()
    mine = Lease(environment, run_id, holder(), purpose, _iso(now), now + seconds)
    held = store.take_lease(mine, now)
    if held is not None:
        raise EnvironmentBusy(environment, held.run_id, held.holder, held.purpose, held.expires)
    unfinished = crashed_runs(store, environment, now, exclude=(run_id, *takes_over))
    if unfinished:
        store.drop_lease(mine)
        raise UnfinishedRun(environment, unfinished)
    return mine


def crashed_runs(
    store: RunStore, environment: str, now: float, exclude: Sequence[str] = ()
) -> list[str]:
    """Runs of the environment, started before the runs in `exclude`, that left its hosts in
    an unknown state: those that never finished and hold no live lease (their process died or
    was killed mid-run) after changing a host or a database, and those whose rollback failed.
    (A run that started at the same moment and lost the race for the lease is refused, not
    crashed.)"""
    held = store.lease(environment)
    alive = held.run_id if held is not None and held.expires > now else None
    rows = [row for row in store.run_rows() if row.environment == environment]
    mine = [row.started_at for row in rows if row.run_id in exclude]
    started = min(mine) if mine else "9999"
    return [
        row.run_id
        for row in rows
        if row.started_at < started
        and row.run_id not in (alive, *exclude)
        and (row.state == "rollback failed" or _crashed_mid_change(store, row, now))
    ]


def _crashed_mid_change(store: RunStore, row: RunRow, now: float) -> bool:
    return (
        row.state == "running"
        and _gone(store, row, now)
        and changed_something(RunJournal(row.run_id, store))
    )


def changed_something(journal: RunJournal) -> bool:
    """Whether a go-live that died left a host or a database changed that no rollback has put
    back. One that died before announcing a switch or a migration (in preflight, during its
    backups) left them all as they were, and does not hold up its environment. A rollback that
    died always counts: the run it was undoing is half put back. A chain that does not verify
    is taken to have changed everything: deleted entries must not free it."""
    try:
        entries = journal.verified().with_rollbacks(journal.rollback_runs())
    except RecordTampered:
        return True
    started = next((e for e in entries if e["kind"] == "run.started"), {})
    return bool(started.get("rolls_back") or left_undone(entries))


def _gone(store: RunStore, row: RunRow, now: float) -> bool:
    """A run without a live lease is gone once it has held one, or once it has had a lease's
    length to take one: a run starting this very moment is not a crashed one."""
    took = any(e.kind == "lease.taken" for e in store.entries(row.run_id))
    started = datetime.fromisoformat(row.started_at).timestamp()
    return took or now - started > lease_seconds()


def with_crashes(store: RunStore, rows: list[RunRow]) -> list[RunRow]:
    """The rows, with runs that are "running" but hold no live lease shown as crashed."""
    now = time.time()
    running = {row.environment for row in rows if row.state == "running" and row.environment}
    leases = {environment: store.lease(environment) for environment in running}

    def alive(row: RunRow) -> bool:
        held = leases.get(row.environment or "")
        return held is not None and held.run_id == row.run_id and held.expires > now

    return [
        replace(row, state="crashed") if row.state == "running" and not alive(row) else row
        for row in rows
    ]


def _renew(journal: RunJournal, lease: Lease, seconds: float, stop: threading.Event) -> None:
    while not stop.wait(seconds / 3):
        try:
            held = journal.store.renew_lease(lease, time.time() + seconds)
        except Exception as error:  # a store down for a moment: try again next time
            logger.warning("could not renew the lease on %s: %s", lease.environment, error)
            continue
        if not held:
            logger.error("run %s lost its lease on %s", journal.run_id, lease.environment)
            journal.write("lease.lost", environment=lease.environment)
            return


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
