"""The demo fleet: real services on loopback ports, and a clear error when a port is taken."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from golive.demo.fleet import DemoFleet
from golive.errors import HostCommandError
from tests.conftest import free_port


def test_a_fleet_serves_the_version_it_was_set_up_with(tmp_path: Path) -> None:
    fleet = DemoFleet(tmp_path, ports={"web1": free_port()})
    try:
        fleet.set_up("1.0.0")
        answer = httpx.get(fleet.hosts[0].fill("http://{address}:{http_port}/health")).json()
    finally:
        fleet.stop()
    assert answer == {"status": "ok", "version": "1.0.0"}


def test_a_port_held_by_another_program_is_named_with_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        fleet = DemoFleet(tmp_path, ports={"web1": port})
        with pytest.raises(HostCommandError) as failed:
            fleet.set_up("1.0.0")
    assert failed.value.host == "web1" and failed.value.exit_code == 1
    assert failed.value.output_tail == [
        f"port {port} on 127.0.0.1 is in use by another program, not shop-web; "
        "stop it or give this host another http_port in the plan"
    ]
