"""Staged rollouts over SSH: real sshd per host, real Prefect API, real HTTP services."""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from blocks.ssh import SshHost
from flows.golive import go_live
from golive.demo.fleet import APP_SOURCE, DemoFleet
from golive.errors import RunFailed
from golive.journal import RunJournal
from tests.flows.test_golive import kinds, serving
from tests.runstore import record_of
from tests.runstore import runs as runs_in_store
from tests.sshd import SshdFleet, write_key_pair

SshFleet = Callable[..., tuple[DemoFleet, dict[str, Any]]]
THREE_WAVES = [
    {"name": "canary", "hosts": 1},
    {"name": "half", "hosts": "60%"},
    {"name": "rest", "hosts": "100%"},
]
TWO_WAVES = [THREE_WAVES[0], THREE_WAVES[2]]


def runs() -> list[tuple[RunJournal, dict[str, Any]]]:
    return [(journal, record_of(journal)) for journal in runs_in_store()]


def deploys(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["host"]: s for s in record["steps"] if s["stage"] == "deploy"}


def plan(fleet: DemoFleet, targets: dict[str, Any], version: str = "2.0.0", **changes: Any) -> str:
    sections = {"gates": {}, "soak": None, "waves": TWO_WAVES} | changes
    return str(fleet.write_plan(version, targets=targets, **sections))


def test_a_three_wave_rollout_reaches_five_hosts_with_one_connection_each(
    make_ssh_fleet: SshFleet, sshd_fleet: SshdFleet
) -> None:
    fleet, targets = make_ssh_fleet(hosts=5)

    record = go_live(plan(fleet, targets, waves=THREE_WAVES))

    assert set(serving(fleet).values()) == {"2.0.0/2.0.0/ok"}
    journal, _ = runs()[-1]
    assert [e["hosts"] for e in journal.of_kind("wave.started")] == [
        ["web1"],
        ["web2", "web3"],
        ["web4", "web5"],
    ]
    assert {name: sshd.logins() for name, sshd in sshd_fleet.hosts.items()} == {
        f"web{i}": 1 for i in range(1, 6)
    }  # backup, deploy and prune shared one connection
    assert all(d["result"]["transfer"]["mode"] == "incremental" for d in deploys(record).values())


def payload_artifact(directory: Path, version: str, changed: int) -> Path:
    """shop-web with 100 data files of 8 kB that do not compress; `changed` of them differ."""
    artifact = directory / f"shop-web-{version}.tar.gz"
    with tarfile.open(artifact, "w:gz") as tar:
        tar.add(APP_SOURCE, arcname="app.py")
        for name, data in [("release.json", json.dumps({"version": version}).encode())] + [
            (
                f"data/{i}.bin",
                (version.encode() if i < changed else b"") + random.Random(i).randbytes(8000),
            )
            for i in range(100)
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return artifact


def test_a_second_release_with_5_percent_changed_sends_a_fraction_of_the_artifact(
    make_ssh_fleet: SshFleet,
) -> None:
    fleet, targets = make_ssh_fleet(hosts=2)
    waves = [{"name": "all", "hosts": "100%"}]
    for version, changed in (("2.0.0", 0), ("2.1.0", 5)):
        path = fleet.write_plan(version, targets=targets, gates={}, soak=None, waves=waves)
        payload_artifact(fleet.root / "artifacts", version, changed)
        go_live(str(path))

    (_, second) = runs()[-1]
    incremental = deploys(second)["web1"]["result"]["transfer"]
    assert incremental["mode"] == "incremental"
    assert incremental["reason"] == "6 of 102 files changed"  # 5 data files and release.json
    assert incremental["bytes_sent"] < 0.1 * incremental["artifact_bytes"]
    assert set(serving(fleet).values()) == {"2.1.0/2.1.0/ok"}


def without_settings(fleet: DemoFleet, host: str) -> None:
    """Leave `host` without the setting the broken 3.0.0 needs, so 3.0.0 fails there only."""
    (fleet.host_dir(host) / "shared" / "settings.json").write_text("{}")


def test_a_host_failing_within_the_budget_is_taken_out_and_the_rollout_goes_on(
    make_ssh_fleet: SshFleet,
) -> None:
    fleet, targets = make_ssh_fleet(hosts=5, configured=5)
    without_settings(fleet, "web3")
    waves = [THREE_WAVES[0], THREE_WAVES[1] | {"max_fail": 1}, THREE_WAVES[2]]

    record = go_live(plan(fleet, targets, "3.0.0", waves=waves))

    assert record["state"] == "partial"
    assert list(record["taken_out"]) == ["web3"]
    assert "smoke check 'health' failed on host 'web3'" in record["taken_out"]["web3"]
    now = serving(fleet)
    assert now.pop("web3") == "1.0.0/1.0.0/ok"
    assert set(now.values()) == {"3.0.0/3.0.0/ok"}


def test_a_host_failing_over_the_budget_rolls_everything_back(make_ssh_fleet: SshFleet) -> None:
    fleet, targets = make_ssh_fleet(hosts=5, configured=5)
    without_settings(fleet, "web3")

    with pytest.raises(RunFailed, match=r"wave 'half': 1 host\(s\) failed"):
        go_live(plan(fleet, targets, "3.0.0", waves=THREE_WAVES))

    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}
    journal, _ = runs()[-1]
    assert [e["wave"] for e in journal.of_kind("wave.started")] == ["canary", "half"]


def test_an_unreachable_host_stops_the_run_at_preflight_before_any_change(
    make_ssh_fleet: SshFleet, sshd_fleet: SshdFleet
) -> None:
    fleet, targets = make_ssh_fleet(hosts=3)
    sshd_fleet.hosts["web3"].stop()

    with pytest.raises(RunFailed, match=r"cannot reach host 'web3' at .*:\d+: connection refused"):
        go_live(plan(fleet, targets))

    journal, _ = runs()[-1]
    assert "host.switching" not in kinds(journal)


def test_a_key_the_hosts_do_not_accept_is_refused_at_preflight(
    make_ssh_fleet: SshFleet, tmp_path: Path
) -> None:
    fleet, targets = make_ssh_fleet(hosts=2)
    write_key_pair(tmp_path / "stranger")
    targets["hosts"] = [h | {"identity_file": str(tmp_path / "stranger")} for h in targets["hosts"]]

    with pytest.raises(RunFailed, match=r"host 'web1' .* refused the key .*stranger for user"):
        go_live(plan(fleet, targets))

    assert set(serving(fleet).values()) == {"1.0.0/1.0.0/ok"}


def test_a_changed_host_key_is_refused_and_names_the_host_and_the_fix(
    make_ssh_fleet: SshFleet, sshd_fleet: SshdFleet, tmp_path: Path
) -> None:
    fleet, targets = make_ssh_fleet(hosts=2)
    imposter = write_key_pair(tmp_path / "imposter")
    port = sshd_fleet.hosts["web2"].port
    lines = sshd_fleet.known_hosts.read_text().splitlines()
    sshd_fleet.known_hosts.write_text(
        "\n".join(
            f"[127.0.0.1]:{port} {' '.join(imposter.split()[:2])}" if f":{port} " in line else line
            for line in lines
        )
        + "\n"
    )

    with pytest.raises(RunFailed) as failed:
        go_live(plan(fleet, targets))

    message = str(failed.value)
    assert "cannot reach host 'web2'" in message and "its host key CHANGED" in message
    assert f"ssh-keygen -f {sshd_fleet.known_hosts} -R '[127.0.0.1]:{port}'" in message


def test_an_unknown_host_key_is_refused_under_strict_and_remembered_under_accept_new(
    make_ssh_fleet: SshFleet, sshd_fleet: SshdFleet, tmp_path: Path
) -> None:
    fleet, targets = make_ssh_fleet(hosts=1)
    empty = tmp_path / "known_hosts"
    targets["hosts"] = [h | {"known_hosts": str(empty)} for h in targets["hosts"]]

    with pytest.raises(RunFailed, match=r"is not in .*known_hosts, and host_key_policy is strict"):
        go_live(plan(fleet, targets, waves=[{"name": "all", "hosts": 1}]))

    targets["hosts"] = [h | {"host_key_policy": "accept-new"} for h in targets["hosts"]]
    go_live(plan(fleet, targets, waves=[{"name": "all", "hosts": 1}]))
    assert sshd_fleet.hosts["web1"].host_key in empty.read_text()


def test_a_host_named_by_its_block_is_reached_with_the_key_stored_in_the_block(
    make_ssh_fleet: SshFleet, sshd_fleet: SshdFleet
) -> None:
    fleet, targets = make_ssh_fleet(hosts=1)
    sshd = sshd_fleet.hosts["web1"]
    SshHost(
        address="127.0.0.1",
        port=sshd.port,
        user=targets["hosts"][0]["user"],
        private_key=sshd_fleet.client_key.read_text(),
        known_hosts=f"[127.0.0.1]:{sshd.port} {sshd.host_key}",
    ).save("web1", overwrite=True)
    targets = targets | {
        "hosts": ["web1"],
        "path": str(fleet.host_dir("web1")),
        "restart": targets["restart"].replace("{http_port}", str(fleet.hosts[0].vars["http_port"])),
    }
    smoke = [
        fleet.template["smoke"][0]
        | {"url": fleet.hosts[0].fill("http://{address}:{http_port}/health")}
    ]

    record = go_live(plan(fleet, targets, waves=[{"name": "all", "hosts": 1}], smoke=smoke))

    assert (record["hosts"]["web1"]["before"], record["hosts"]["web1"]["after"]) == (
        "1.0.0",
        "2.0.0",
    )
    assert sshd.logins() == 1


def test_parallel_caps_how_many_hosts_of_a_wave_deploy_at_once(make_ssh_fleet: SshFleet) -> None:
    fleet, targets = make_ssh_fleet(hosts=4)

    go_live(plan(fleet, targets, waves=[{"name": "all", "hosts": "100%", "parallel": 1}]))

    journal, _ = runs()[-1]
    deploy_events = [
        (e["kind"], e["host"])
        for e in journal.of_kind("step.started", "step.finished")
        if e["stage"] == "deploy"
    ]
    starts_and_ends = [kind for kind, _ in deploy_events]
    assert starts_and_ends == ["step.started", "step.finished"] * 4  # never two at once
