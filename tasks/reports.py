"""Close-out: the run record on disk and its summary in the Prefect UI."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from golive.journal import RunJournal
from golive.record import summarize
from golive.report import render_summary


@task(name="publish record", cache_policy=NO_CACHE)
def publish_record(journal: RunJournal) -> dict[str, Any]:
    """Write record.json and report.md, derived from the run store, on this machine; publish
    both as artifacts, with the store's head as this run sealed it."""
    record = summarize(journal.entries())
    record["head"] = publish_head(journal)
    record_path = journal.run_dir / "record.json"
    record_path.write_text(json.dumps(record, indent=2, default=str))
    summary = render_summary(record, record_path)
    (journal.run_dir / "report.md").write_text(summary)
    create_markdown_artifact(summary, key="go-live-summary", description="What this run did")
    rows = [{"host": name, **host} for name, host in record["hosts"].items()]
    if rows:
        create_table_artifact(rows, key="go-live-hosts", description="Each host, before and after")
    return record


def progress_bar(description: str) -> Callable[[float], None]:
    """A progress artifact in the Prefect UI; returns the function that moves it (0..100)."""
    # Called from sync code, so these Prefect helpers return plain values, not coroutines.
    artifact = cast(UUID, create_progress_artifact(0.0, description=description))

    def move_to(percent: float) -> None:
        update_progress_artifact(artifact, percent)

    return move_to


def publish_head(journal: RunJournal) -> dict[str, Any] | None:
    """The store's latest head, shown outside the store: a store rebuilt later with a
    consistent chain is caught by `golive audit verify --head` against it."""
    heads = journal.store.heads()
    if not heads:
        return None
    head = heads[-1]
    create_markdown_artifact(
        f"Run store head after run `{journal.run_id}`: link {head.pos}, `{head.hash}`.\n\n"
        f"Check the store against it later: `golive audit verify --head {head.hash}`",
        key="run-store-head",
        description="The run store's chain of run heads, as this run sealed it",
    )
    return {"pos": head.pos, "hash": head.hash, "at": head.at}
