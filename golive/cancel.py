"""Cancel in the Prefect UI (or API) stops a go-live the way SIGTERM does: it rolls back.

Prefect delivers a cancel only to runs a worker supervises (the worker sends SIGTERM). A run
started by `golive run` has no worker, and a run paused at a gate never looks at its state
again until the pause ends: the cancel was lost and the canary stayed on the new release. So
golive watches its own run's state, and when someone cancels it, signals itself with SIGTERM:
the run stops where it is and rolls back what changed, like any other interruption.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.objects import StateType

WATCH_SECONDS = 1.0
logger = logging.getLogger("golive.cancel")


@dataclass
class CancelWatch:
    cancelled: threading.Event = field(default_factory=threading.Event)  # why SIGTERM came
    done: threading.Event = field(default_factory=threading.Event)

    def stand_down(self) -> None:
        """Watch no more: the run is stopping anyway, and a SIGTERM now would stop its
        rollback."""
        self.done.set()


@contextmanager
def rolled_back_when_cancelled(run_id: str) -> Iterator[CancelWatch]:
    """While the block runs (and the watch has not stood down), a cancel of flow run
    `run_id` sends this process SIGTERM, and sets the watch's `cancelled`."""
    watch = CancelWatch()
    if _supervised_by_a_worker():
        yield watch  # the worker sends SIGTERM itself: a second one would stop the rollback
        return
    watcher = threading.Thread(target=_watch, args=(UUID(run_id), watch), daemon=True)
    watcher.start()
    try:
        yield watch
    finally:
        watch.stand_down()
        watcher.join()


def _watch(run_id: UUID, watch: CancelWatch) -> None:
    with get_client(sync_client=True) as client:
        while not watch.done.wait(WATCH_SECONDS):
            try:
                state = client.read_flow_run(run_id).state
            except Exception as error:  # the API is away for a moment: look again later
                logger.debug("could not read the state of run %s: %s", run_id, error)
                continue
            if watch.done.is_set():
                return
            if state is not None and state.type in (StateType.CANCELLING, StateType.CANCELLED):
                watch.cancelled.set()
                os.kill(os.getpid(), signal.SIGTERM)
                return


def _supervised_by_a_worker() -> bool:
    # Prefect's runner sets this for the flow processes it starts and cancels itself.
    return os.environ.get("PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS", "true") == "false"
