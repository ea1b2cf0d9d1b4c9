"""The local transport on real directories and real subprocesses."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from golive.demo.fleet import build_artifact
from golive.errors import DeployError, HostCommandError
from golive.local import LocalTransport
from golive.plan import Host


@pytest.fixture
def host(tmp_path: Path) -> LocalTransport:
    (tmp_path / "web1").mkdir()
    return LocalTransport(Host(name="web1"), tmp_path / "web1")


def test_a_release_is_unpacked_under_its_version_and_current_points_at_it(
    host: LocalTransport, tmp_path: Path
) -> None:
    host.put_release(build_artifact(tmp_path / "a", "1.0.0"), "1.0.0")
    host.switch("1.0.0")
    assert os.readlink(host.current) == "releases/1.0.0"
    assert (host.current / "app.py").is_file()
    assert host.current_release() == "1.0.0"


def test_switching_replaces_the_link_without_ever_removing_it(
    host: LocalTransport, tmp_path: Path
) -> None:
    for version in ("1.0.0", "2.0.0"):
        host.put_release(build_artifact(tmp_path / "a", version), version)
    host.switch("1.0.0")
    inode_before = os.lstat(host.current).st_ino
    host.switch("2.0.0")
    assert host.current_release() == "2.0.0"
    assert os.lstat(host.current).st_ino != inode_before  # a new link renamed over the old one
    assert [p.name for p in host.directory.iterdir() if p.name.startswith(".current")] == []


def test_switching_to_a_release_that_is_not_there_changes_nothing(
    host: LocalTransport, tmp_path: Path
) -> None:
    host.put_release(build_artifact(tmp_path / "a", "1.0.0"), "1.0.0")
    host.switch("1.0.0")
    with pytest.raises(DeployError, match=r"switch to 9\.9\.9 on host 'web1': that release is not"):
        host.switch("9.9.9")
    assert host.current_release() == "1.0.0"


def test_a_corrupt_artifact_leaves_no_half_written_release(
    host: LocalTransport, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a tarball")
    with pytest.raises(DeployError, match=r"could not unpack broken\.tar\.gz on host 'web1'"):
        host.put_release(broken, "2.0.0")
    assert list(host.releases.iterdir()) == []


def test_an_artifact_escaping_its_directory_is_refused(
    host: LocalTransport, tmp_path: Path
) -> None:
    evil = tmp_path / "evil.tar.gz"
    (tmp_path / "payload").write_text("x")
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(tmp_path / "payload", arcname="../../escaped")
    with pytest.raises(DeployError):
        host.put_release(evil, "2.0.0")
    assert not (tmp_path / "escaped").exists()


def test_a_failing_command_names_host_command_exit_code_and_last_lines(
    host: LocalTransport,
) -> None:
    command = "for i in $(seq 1 30); do echo line $i; done; echo oops >&2; exit 3"
    with pytest.raises(HostCommandError) as failed:
        host.run(command, timeout=10)
    error = failed.value
    assert (error.host, error.command, error.exit_code) == ("web1", command, 3)
    assert error.output_tail[-2:] == ["line 30", "oops"] and len(error.output_tail) == 10
    assert "on host 'web1', command" in str(error) and "exited with code 3" in str(error)


def test_a_command_past_its_timeout_is_stopped_and_reported(host: LocalTransport) -> None:
    with pytest.raises(HostCommandError, match=r"did not finish within 0.5s"):
        host.run("echo started; sleep 30", timeout=0.5)


def test_commands_run_in_the_host_directory_and_know_the_host(host: LocalTransport) -> None:
    assert host.run("pwd; echo $GOLIVE_HOST", timeout=10).split() == [str(host.directory), "web1"]


def test_prune_keeps_the_newest_releases_and_never_the_current_one(
    host: LocalTransport, tmp_path: Path
) -> None:
    for version in ("1.0.0", "2.0.0", "3.0.0", "4.0.0"):
        host.put_release(build_artifact(tmp_path / "a", version), version)
    host.switch("1.0.0")
    assert sorted(host.prune(keep=2)) == ["2.0.0"]
    assert sorted(p.name for p in host.releases.iterdir()) == ["1.0.0", "3.0.0", "4.0.0"]


def test_a_missing_host_directory_is_reported_by_the_check(tmp_path: Path) -> None:
    check = LocalTransport(Host(name="web9"), tmp_path / "nope").check(needed_bytes=1)
    assert check.problems == [f"host directory {tmp_path / 'nope'} does not exist"]


def test_the_check_reports_too_little_disk(host: LocalTransport) -> None:
    check = host.check(needed_bytes=2**60)
    assert len(check.problems) == 1 and "MiB free in" in check.problems[0]
