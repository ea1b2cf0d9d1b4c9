"""Who and what started a run, as this machine sees it: recorded in every run's first entry."""

from __future__ import annotations

import getpass
import socket
from importlib.metadata import PackageNotFoundError, version

from prefect.context import FlowRunContext
from prefect.runtime import deployment, flow_run


def whoami() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def trigger(claimed: str) -> dict[str, str | None]:
    """Who started the run as this machine sees it; `claimed` (`--as`) is only a claim."""
    return {
        "claimed": claimed,
        "os_user": getpass.getuser(),
        "machine": socket.gethostname(),
        "deployment": f"{flow_run.flow_name}/{deployment.name}" if deployment.id else None,
        "schedule": _schedule(),
    }


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
