"""Smoke checks: does each host answer as the plan expects?"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import httpx

from golive.errors import SmokeCheckFailed
from golive.journal import RunJournal
from golive.plan import Host, Plan, SmokeCheck


@dataclass(frozen=True)
class Probe:
    """One request: what came back, and what was wrong with it (None when it passed)."""

    check: str
    url: str
    status: int | None
    latency_ms: float
    problem: str | None


def probe(client: httpx.Client, check: SmokeCheck, host: Host) -> Probe:
    url = host.fill(check.url)
    started = time.perf_counter()
    try:
        response = client.get(url, timeout=check.timeout)
    except httpx.HTTPError as error:
        elapsed = (time.perf_counter() - started) * 1000
        return Probe(check.name, url, None, elapsed, f"got no answer: {error!r}")
    elapsed = (time.perf_counter() - started) * 1000
    return Probe(check.name, url, response.status_code, elapsed, _problem(check, response, elapsed))


def _problem(check: SmokeCheck, response: httpx.Response, latency_ms: float) -> str | None:
    if response.status_code != check.expect_status:
        body = response.text[:200].strip()
        return f"answered {response.status_code}, expected {check.expect_status}: {body}"
    if check.expect_body is not None and check.expect_body not in response.text:
        return f"body does not contain {check.expect_body!r}: {response.text[:200].strip()}"
    if check.max_latency_ms is not None and latency_ms > check.max_latency_ms:
        return f"took {latency_ms:.0f} ms, more than {check.max_latency_ms:g} ms"
    return None


def check_until_passes(client: httpx.Client, check: SmokeCheck, host: Host) -> Probe:
    """A check with its retries: the first passing probe, or the last failing one."""
    result = probe(client, check, host)
    for _ in range(check.retries):
        if result.problem is None:
            break
        time.sleep(check.retry_delay)
        result = probe(client, check, host)
    return result


def smoke_check_host(plan: Plan, host: Host, journal: RunJournal) -> list[dict[str, object]]:
    """Every smoke check of the plan against one host; fail on the first that never passes."""
    with journal.step("smoke", host=host.name) as result, httpx.Client() as client:
        probes = []
        for check in plan.smoke:
            outcome = check_until_passes(client, check, host)
            probes.append(asdict(outcome))
            if outcome.problem is not None:
                raise SmokeCheckFailed(
                    host.name, check.name, outcome.url, outcome.problem, attempts=check.retries + 1
                )
        result["checks"] = probes
    return probes
