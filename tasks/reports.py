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
    """Write record.json and report.md next to the journal; publish both as artifacts."""
    record = summarize(journal.entries())
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
