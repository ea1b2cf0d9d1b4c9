"""Smoke checks and the soak against a real HTTP server whose answers each test scripts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from golive.errors import SmokeCheckFailed, SoakFailed
from golive.journal import RunJournal
from golive.plan import Host, Plan, SmokeCheck, Soak
from tasks.smoke import check_until_passes, probe, smoke_check_host
from tasks.soak import soak
from tests.conftest import free_port


class Script:
    """What the server answers: a list of (status, body, delay seconds), the last one repeating."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, str, float]] = [(200, "ok", 0.0)]
        self.requests = 0

    def next(self) -> tuple[int, str, float]:
        self.requests += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def server() -> Iterator[tuple[Script, Host]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, delay = script.next()
            time.sleep(delay)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield script, Host(name="web1", vars={"port": port})
    httpd.shutdown()


def check(**fields: object) -> SmokeCheck:
    return SmokeCheck.model_validate(
        {"name": "health", "url": "http://{address}:{port}/", "retry_delay": 0.01, **fields}
    )


def test_a_check_passes_on_the_expected_status_and_body(server: tuple[Script, Host]) -> None:
    _, host = server
    with httpx.Client() as client:
        result = probe(client, check(expect_body="ok"), host)
    assert result.problem is None and result.status == 200


def test_a_wrong_status_is_reported_with_the_body(server: tuple[Script, Host]) -> None:
    script, host = server
    script.answers = [(503, "draining", 0.0)]
    with httpx.Client() as client:
        result = probe(client, check(), host)
    assert result.problem == "answered 503, expected 200: draining"


def test_a_body_without_the_expected_text_fails(server: tuple[Script, Host]) -> None:
    _, host = server
    with httpx.Client() as client:
        result = probe(client, check(expect_body="healthy"), host)
    assert result.problem == "body does not contain 'healthy': ok"


def test_an_answer_slower_than_the_limit_fails(server: tuple[Script, Host]) -> None:
    script, host = server
    script.answers = [(200, "ok", 0.3)]
    with httpx.Client() as client:
        result = probe(client, check(max_latency_ms=50), host)
    assert result.problem is not None and result.problem.endswith("more than 50 ms")


def test_a_check_retries_until_the_host_is_ready(server: tuple[Script, Host]) -> None:
    script, host = server
    script.answers = [(502, "starting", 0.0), (502, "starting", 0.0), (200, "ok", 0.0)]
    with httpx.Client() as client:
        result = check_until_passes(client, check(retries=3), host)
    assert result.problem is None and script.requests == 3


def test_a_host_that_does_not_answer_is_reported(tmp_path: object) -> None:
    host = Host(name="web1", vars={"port": free_port()})
    with httpx.Client() as client:
        result = probe(client, check(), host)
    assert result.status is None and result.problem is not None
    assert result.problem.startswith("got no answer: ConnectError")


def plan_for(host: Host, checks: list[SmokeCheck]) -> Plan:
    return Plan.model_validate(
        {
            "release": {"name": "app", "version": "1", "artifact": "a.tgz"},
            "environment": "test",
            "targets": {"path": ".", "restart": "true", "hosts": [host.model_dump()]},
            "waves": [{"name": "all", "hosts": "100%"}],
            "smoke": [c.model_dump() for c in checks],
        }
    )


def test_the_smoke_task_fails_naming_host_check_url_and_attempts(
    server: tuple[Script, Host], golive_home: object
) -> None:
    script, host = server
    script.answers = [(500, "boom", 0.0)]
    with pytest.raises(SmokeCheckFailed) as failed:
        smoke_check_host(plan_for(host, [check(retries=1)]), host, RunJournal.create("t"))
    assert str(failed.value) == (
        f"smoke check 'health' failed on host 'web1' after 2 attempt(s): "
        f"GET {host.fill('http://{address}:{port}/')} answered 500, "
        "expected 200: boom"
    )


def test_the_soak_stops_as_soon_as_errors_pass_the_allowed_rate(
    server: tuple[Script, Host], golive_home: object
) -> None:
    script, host = server
    script.answers = [(200, "ok", 0.0), (500, "boom", 0.0)]
    limits = Soak(duration=60, interval=0.01, max_error_rate=0.0)
    with pytest.raises(SoakFailed, match=r"1 of 2 probes failed, over the 0.0% allowed"):
        soak(plan_for(host, [check()]), ["web1"], limits, "test", RunJournal.create("t"))


def test_the_soak_fails_when_p95_latency_is_over_its_limit(
    server: tuple[Script, Host], golive_home: object
) -> None:
    script, host = server
    script.answers = [(200, "ok", 0.2)]
    limits = Soak(duration=0.5, interval=0.1, max_p95_ms=100)
    with pytest.raises(SoakFailed, match=r"p95 latency \d+ ms is over the limit of 100 ms"):
        soak(plan_for(host, [check()]), ["web1"], limits, "test", RunJournal.create("t"))


def test_a_healthy_soak_reports_its_probes(
    server: tuple[Script, Host], golive_home: object
) -> None:
    _, host = server
    result = soak(
        plan_for(host, [check()]),
        ["web1"],
        Soak(duration=0.3, interval=0.1),
        "test",
        RunJournal.create("t"),
    )
    assert result["errors"] == 0 and int(str(result["probes"])) >= 1


def test_a_soak_records_percentiles_and_the_failure_rate_of_every_interval(
    server: tuple[Script, Host], golive_home: object
) -> None:
    script, host = server
    script.answers = [(200, "ok", 0.0), (200, "ok", 0.05)]
    limits = Soak(duration=0.6, interval=0.1, max_p95_ms=1000, max_error_rate=0.5)
    result = soak(plan_for(host, [check()]), ["web1"], limits, "test", RunJournal.create("t"))
    intervals = result["intervals"]
    assert isinstance(intervals, list) and len(intervals) >= 3
    for interval in intervals:
        assert set(interval) == {"at", "p50", "p95", "p99", "failure_rate"}
        assert interval["p50"] <= interval["p95"] <= interval["p99"]
        assert interval["failure_rate"] == 0
    assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]  # type: ignore[operator]
    assert result["limits"] == {"max_p95_ms": 1000, "max_error_rate": 0.5}
