"""Who and what started a run, as this machine sees it: recorded in every run's first entry."""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from prefect.context import FlowRunContext
from prefect.runtime import deployment, flow_run

from golive.errors import StoreError, UnprovenReleaser
from golive.journal import run_store
from golive.planfile import PlanFile
from golive.signing import Start, verifies

# How old (or how far in the future, for clocks that differ) a signed start may be.
START_SKEW_SECONDS = 300


def whoami() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def trigger(claimed: str, releaser: Releaser | None = None) -> dict[str, str | None]:
    """Who started the run as this machine sees it; `claimed` (`--as`) is only a claim, and
    `releaser` the registered key that signed the start, if one did."""
    return {
        "claimed": claimed,
        "os_user": getpass.getuser(),
        "machine": socket.gethostname(),
        "deployment": f"{flow_run.flow_name}/{deployment.name}" if deployment.id else None,
        "schedule": _schedule(),
        "proven": releaser.name if releaser else None,
        "key": releaser.public_key if releaser else None,
        "signature": releaser.signature if releaser else None,
    }


@dataclass(frozen=True)
class Releaser:
    name: str
    public_key: str
    signature: str  # of the run's start: one start, one run


def _used_before(environment: str, signature: str) -> bool:
    """Whether a run of the environment was started with this very signature."""
    try:
        store = run_store()
    except StoreError:  # no store yet: no run before this one
        return False
    for row in store.run_rows():
        first = store.first_entry(row.run_id) if row.environment == environment else None
        trigger = first.fields().get("trigger") or {} if first else {}
        if trigger.get("signature") == signature:
            return True
    return False


def proven_releaser(
    plan_file: PlanFile, claimed: str, signature: str, signed_at: str, override: str = ""
) -> Releaser | None:
    """The registered person whose key signed this run's start, if a signature came with it;
    production runs (and those of environments that say so) must come with one. Refuses a
    signature that does not verify, that no key registered for the environment made, or that
    is not fresh."""
    plan, rules = plan_file.plan, plan_file.environment.rules
    if not signature:
        if rules.needs_signed_start():
            raise UnprovenReleaser(plan.environment, "its start is not signed")
        return None
    start = Start(plan_file.digest, plan.environment, claimed, signed_at, override)
    late = _stale(signed_at)
    if late:
        raise UnprovenReleaser(plan.environment, late)
    for name, key in rules.starters().items():
        if verifies(start, signature, key):
            if _used_before(plan.environment, signature):
                raise UnprovenReleaser(plan.environment, "its signature started a run already")
            return Releaser(name, key, signature)
    raise UnprovenReleaser(
        plan.environment, "its signature is by no registered key, or for another plan"
    )


def _stale(signed_at: str) -> str | None:
    try:
        signed = datetime.fromisoformat(signed_at)
        age = (datetime.now(UTC) - signed).total_seconds()
    except (ValueError, TypeError):
        return f"its signing time {signed_at!r} is not a time with a zone"
    if not -START_SKEW_SECONDS <= age <= START_SKEW_SECONDS:
        return f"it was signed at {signed_at}, not just now: sign each start afresh"
    return None


def _schedule() -> str | None:
    """When a deployment's schedule created this run, the time it was scheduled for."""
    context = FlowRunContext.get()
    run = context.flow_run if context else None
    if run is None or not run.auto_scheduled or run.expected_start_time is None:
        return None
    return run.expected_start_time.isoformat()


def golive_version() -> str:
    try:
        return version("golive")
    except PackageNotFoundError:
        return "unknown"
