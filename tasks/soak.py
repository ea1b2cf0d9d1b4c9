"""The soak: watch the hosts for a while after a wave, against error-rate and latency limits."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from golive.errors import SoakFailed
from golive.journal import RunJournal
from golive.plan import Plan, Soak
from tasks.reports import progress_bar
from tasks.smoke import Probe, probe


@task(name="soak", task_run_name="soak {label}", cache_policy=NO_CACHE)
def soak(
    plan: Plan, hosts: Sequence[str], limits: Soak, label: str, journal: RunJournal
) -> dict[str, object]:
    """Probe every host on an interval for the soak's duration; fail as soon as the error
    budget is spent, or at the end if the p95 latency is over its limit."""
    with journal.step("soak", wave=label) as result, httpx.Client() as client:
        progress = progress_bar(f"soak {label}")
        probes: list[Probe] = []
        intervals: list[dict[str, float]] = []
        # Kept in the step's result even when the soak fails: what the report charts.
        result["limits"] = {
            "max_p95_ms": limits.max_p95_ms,
            "max_error_rate": limits.max_error_rate,
        }
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < limits.duration:
            batch = [probe(client, c, plan.host(h)) for h in hosts for c in plan.smoke]
            probes += batch
            intervals.append(
                {"at": round(elapsed, 1)} | {k: round(v, 4) for k, v in _stats(batch).items()}
            )
            result |= {"intervals": intervals} | _summary(probes)
            _check_error_budget(probes, limits, expected=_expected_probes(plan, hosts, limits))
            progress(min(100.0, 100 * elapsed / limits.duration))
            time.sleep(min(limits.interval, max(0.0, limits.duration - elapsed)))
        _judge(_stats(probes), limits)
    return result


def _expected_probes(plan: Plan, hosts: Sequence[str], limits: Soak) -> int:
    rounds = max(1, math.ceil(limits.duration / limits.interval))
    return rounds * len(hosts) * len(plan.smoke)


def _check_error_budget(probes: list[Probe], limits: Soak, expected: int) -> None:
    failed = [p for p in probes if p.problem]
    if len(failed) > limits.max_error_rate * max(expected, len(probes)):
        last = failed[-1]
        raise SoakFailed(
            f"{len(failed)} of {len(probes)} probes failed, over the "
            f"{limits.max_error_rate:.1%} allowed; last: {last.url} {last.problem}"
        )


def _stats(probes: list[Probe]) -> dict[str, float]:
    """Response-time percentiles (ms) and the failure rate of some probes."""
    latencies = sorted(p.latency_ms for p in probes)

    def percentile(share: float) -> float:
        return latencies[max(0, math.ceil(share * len(latencies)) - 1)]

    failed = sum(1 for p in probes if p.problem)
    if not latencies:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "failure_rate": 0.0}
    return {
        "p50": percentile(0.50),
        "p95": percentile(0.95),
        "p99": percentile(0.99),
        "failure_rate": failed / len(probes),
    }


def _summary(probes: list[Probe]) -> dict[str, object]:
    stats = _stats(probes)
    return {
        "probes": len(probes),
        "errors": sum(1 for p in probes if p.problem),
        "p50_ms": round(stats["p50"], 1),
        "p95_ms": round(stats["p95"], 1),
        "p99_ms": round(stats["p99"], 1),
    }


def _judge(stats: dict[str, float], limits: Soak) -> None:
    """The soak's verdict at its end, on the unrounded p95 of every probe."""
    if limits.max_p95_ms is not None and stats["p95"] > limits.max_p95_ms:
        raise SoakFailed(
            f"p95 latency {stats['p95']:.0f} ms is over the limit of {limits.max_p95_ms:g} ms"
        )
