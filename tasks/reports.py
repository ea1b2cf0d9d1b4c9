"""Close-out: the run record on disk and its summary in the Prefect UI."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import httpx
from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from golive import journal
from golive.errors import describe_os_error
from golive.journal import Entry, RunJournal
from golive.plan import AuditPolicy
from golive.progress import at_scale, describe, many_hosts, printable, went_well_on_a_host
from golive.record import stored_plan, summarize
from golive.report import render_summary


@contextmanager
def story_in_prefect_logs(run_id: str) -> Iterator[None]:
    """While the block runs, every entry the run writes is also a line in its Prefect run
    logs, as the terminal shows it: the UI's Logs tab tells the run's story, not only
    "Finished in state Completed()" per task."""
    logger = get_run_logger()
    started = next(RunJournal.find(run_id).of_kind("run.started"), None)  # resumed: written
    many = started is not None and many_hosts(started)  # a large fleet's: by wave, failures first

    def tell(entry: Entry) -> None:
        nonlocal many
        if entry.get("run_id") != run_id or entry["kind"] == "step.started":
            return
        if entry["kind"] == "run.started":
            many = many_hosts(entry)
        if many and went_well_on_a_host(entry):
            return
        logger.info(printable(at_scale(entry) if many else describe(entry)))

    unsubscribe = journal.subscribe(tell)
    try:
        yield
    finally:
        unsubscribe()


@task(name="publish record", cache_policy=NO_CACHE)
def publish_record(journal: RunJournal) -> dict[str, Any]:
    """Write record.json and report.md, derived from the run store, on this machine; publish
    both as artifacts, with the store's head as this run sealed it."""
    record = summarize(journal.entries())
    record["head"] = publish_head(journal, stored_plan(journal.entries()).audit)
    record_path = journal.run_dir / "record.json"
    record_path.write_text(json.dumps(record, indent=2, default=str))
    summary = render_summary(record, record_path)
    (journal.run_dir / "report.md").write_text(summary)
    create_markdown_artifact(summary, key="go-live-summary", description="What this run did")
    rows = [{"host": name, **host} for name, host in record["hosts"].items()]
    rows.sort(key=lambda row: went_as_planned(row, record["version"]))  # the odd ones first
    if rows:
        create_table_artifact(rows, key="go-live-hosts", description="Each host, before and after")
    return record


def went_as_planned(host: dict[str, Any], version: str) -> bool:
    return host.get("after") == version and not host.get("rolled_back_to") and not host.get("error")


def progress_bar(description: str) -> Callable[[float], None]:
    """A progress artifact in the Prefect UI; returns the function that moves it (0..100)."""
    # Called from sync code, so these Prefect helpers return plain values, not coroutines.
    artifact = cast(UUID, create_progress_artifact(0.0, description=description))

    def move_to(percent: float) -> None:
        update_progress_artifact(artifact, percent)

    return move_to


def publish_head(journal: RunJournal, audit: AuditPolicy) -> dict[str, Any] | None:
    """The store's latest head, shown outside the store: a store rebuilt later with a
    consistent chain is caught by `golive audit verify --head` against it. It goes to the
    report, a Prefect artifact, and the plan's head file and webhook; where it could not go is
    said in the report and the run's log (not in the store: that would move the head)."""
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
    published = {"pos": head.pos, "hash": head.hash, "at": head.at, "run_id": journal.run_id}
    failures = []
    if audit.head_file is not None:
        failures += _append_head(audit.head_file, published)
    if audit.head_webhook is not None:
        failures += _post_head(audit.head_webhook, published | {"store": journal.store.shown})
    for failure in failures:
        get_run_logger().warning("The run store's head was not published: %s", failure)
    return published | {"not_published": failures}


def _append_head(path: Path, head: dict[str, Any]) -> list[str]:
    line = f"{head['at']} link {head['pos']} {head['hash']} run {head['run_id']}\n"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        with os.fdopen(descriptor, "a", encoding="utf-8") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        return [describe_os_error(error, f"head file {path}")]
    return []


def _post_head(name: str, head: dict[str, Any]) -> list[str]:
    from blocks.webhook import load_webhook

    try:
        hook = load_webhook(name)
        response = httpx.post(
            hook.url.get_secret_value(), json={"event": "store.head", **head}, timeout=hook.timeout
        )
        response.raise_for_status()
    except ValueError:
        return [f"no golive-webhook block named {name!r}"]
    except httpx.HTTPError as failure:
        return [f"webhook {name}: {type(failure).__name__}"]  # never its URL: it holds a token
    return []
