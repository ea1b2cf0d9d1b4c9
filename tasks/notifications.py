"""Gate notifications: a JSON POST to each webhook of the plan when a gate opens, is decided,
or times out. Sent in the background with retries; a failing webhook is recorded and never
holds up or stops the go-live."""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any

import httpx

from golive.journal import RunJournal
from golive.plan import Plan


def notify(plan: Plan, journal: RunJournal, event: dict[str, Any]) -> list[threading.Thread]:
    """Post `event` to every webhook of the plan, each in its own thread."""
    threads = []
    for hook in plan.notify:
        context = contextvars.copy_context()  # carries Prefect's settings to load the block
        thread = threading.Thread(
            target=context.run, args=(_deliver, hook.webhook, journal, event), daemon=True
        )
        thread.start()
        threads.append(thread)
    return threads


def _deliver(name: str, journal: RunJournal, event: dict[str, Any]) -> None:
    from blocks.webhook import load_webhook

    try:
        hook = load_webhook(name)
    except ValueError:
        journal.write(
            "notify.failed",
            webhook=name,
            event=event["event"],
            error=f"no golive-webhook block named {name!r}",
        )
        return
    error = ""
    for attempt in range(1, hook.attempts + 1):
        try:
            response = httpx.post(hook.url.get_secret_value(), json=event, timeout=hook.timeout)
            response.raise_for_status()
        except httpx.HTTPError as failure:
            # The URL may hold a token: name the webhook, never its address.
            error = type(failure).__name__ + (
                f" {failure.response.status_code}"
                if isinstance(failure, httpx.HTTPStatusError)
                else ""
            )
            time.sleep(0.5 * 2 ** (attempt - 1) if attempt < hook.attempts else 0)
            continue
        journal.write("notify.sent", webhook=name, event=event["event"], attempts=attempt)
        return
    journal.write(
        "notify.failed", webhook=name, event=event["event"], error=error, attempts=hook.attempts
    )
