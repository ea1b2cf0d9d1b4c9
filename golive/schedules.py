"""Rehearsals on a schedule: a plan's `rehearsal.schedule`, put on the rehearsal deployment.

Prefect runs a deployment's schedules with the deployment's parameters, overridden by each
schedule's own. So one `rehearsal` deployment serves every plan: `golive schedule PLAN` gives
it a schedule per plan file (its slug names the file), whose parameters name the plan, and
scheduling the plan again replaces it. The cron and time zone were checked with the plan.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from golive.errors import GoLiveError
from golive.planfile import PlanFile

REHEARSAL_DEPLOYMENT = "go-live/rehearsal"


class NotScheduled(GoLiveError):
    pass


@dataclass(frozen=True)
class Scheduled:
    """A plan's rehearsal as the deployment now has it."""

    deployment: str
    slug: str
    cron: str
    timezone: str
    replaced: bool


def schedule_rehearsal(plan_file: PlanFile) -> Scheduled:
    """Put the plan's rehearsal on the rehearsal deployment's schedules, replacing the one
    this plan file had; refused, with nothing changed, without a schedule, a Prefect server,
    or the deployment."""
    rehearsal = plan_file.plan.rehearsal
    if rehearsal is None or rehearsal.schedule is None:
        raise NotScheduled(
            f"{plan_file.path} has no rehearsal.schedule; accepted: a `schedule:` with a cron "
            "and a time zone in its rehearsal section, like {cron: '30 2 * * *', timezone: UTC}"
        )
    if not os.environ.get("PREFECT_API_URL"):
        raise NotScheduled(
            "PREFECT_API_URL is not set: scheduling needs the Prefect server that has the "
            f"{REHEARSAL_DEPLOYMENT} deployment (`prefect deploy --all` from the checkout)"
        )
    slug = "rehearse-" + hashlib.sha256(str(plan_file.path).encode()).hexdigest()[:16]
    cron, timezone = rehearsal.schedule.cron, rehearsal.schedule.timezone
    replaced = _replace_schedule(slug, cron, timezone, str(plan_file.path))
    return Scheduled(REHEARSAL_DEPLOYMENT, slug, cron, timezone, replaced)


def _replace_schedule(slug: str, cron: str, timezone: str, plan_path: str) -> bool:
    import httpx
    from prefect import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(REHEARSAL_DEPLOYMENT)
            had = [s for s in client.read_deployment_schedules(deployment.id) if s.slug == slug]
            for old in had:
                client.delete_deployment_schedule(deployment.id, old.id)
            new = DeploymentScheduleCreate(
                schedule=CronSchedule(cron=cron, timezone=timezone),
                active=True,
                parameters={"plan_path": plan_path},
                slug=slug,
            )
            client.create_deployment_schedules(deployment.id, [new])
    except ObjectNotFound:
        raise NotScheduled(
            f"the Prefect server at {os.environ['PREFECT_API_URL']} has no deployment "
            f"{REHEARSAL_DEPLOYMENT}; `prefect deploy --all` from the checkout makes it"
        ) from None
    except httpx.HTTPError as error:
        raise NotScheduled(
            f"the Prefect server at PREFECT_API_URL={os.environ['PREFECT_API_URL']} did not "
            f"answer ({error}); is it running?"
        ) from None
    return bool(had)
