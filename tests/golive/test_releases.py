"""Release steps on a host's deploy directory, through a real shell (local here; the SSH tests
run the same steps through sshd)."""

from __future__ import annotations

import io
import os
import random
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import golive.local
from golive.demo.fleet import build_artifact
from golive.errors import DeployError, HostCommandError
from golive.local import LocalShell
from golive.manifest import MANIFEST_NAME, UnsafeArtifact, changes_tarball, manifest_of
from golive.plan import Host
from golive.releases import HostReleases, RestartFailed, SwitchFailed
from golive.shell import Shell
from golive.ssh import SshShell
from golive.transport import ssh_settings
from tests.sshd import SshdFleet, require_sshd
from tests.unavailable import unavailable


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdFleet]:
    require_sshd()
    fleet = SshdFleet(tmp_path_factory.mktemp("sshd"))
    fleet.start("web1")
    yield fleet
    fleet.stop()


@pytest.fixture(params=["local", "ssh"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HostReleases]:
    """The same release steps through a local shell and through a real sshd."""
    (tmp_path / "web1").mkdir()
    shell: Shell = LocalShell("web1")
    if request.param == "ssh":
        sshd: SshdFleet = request.getfixturevalue("sshd")
        shell = SshShell("web1", ssh_settings(Host.model_validate(sshd.inline_host("web1"))))
    yield HostReleases(Host(name="web1"), shell, str(tmp_path / "web1"))
    shell.close()


def artifact(tmp_path: Path, version: str, files: dict[str, bytes]) -> Path:
    path = tmp_path / f"app-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def files(count: int, changed: int = 0) -> dict[str, bytes]:
    """`count` files of 4 kB that do not compress, like most of a real artifact; the first
    `changed` of them differ from the v1 ones."""
    return {
        f"lib/module{i}.py": (b"v2 " if i < changed else b"v1 ") + random.Random(i).randbytes(4000)
        for i in range(count)
    }


def test_a_release_is_unpacked_under_its_version_and_current_points_at_it(
    host: HostReleases, tmp_path: Path
) -> None:
    transfer = host.put_release(manifest_of(build_artifact(tmp_path / "a", "1.0.0")), "1.0.0")
    host.switch("1.0.0")
    current = Path(host.directory) / "current"
    assert os.readlink(current) == "releases/1.0.0"
    assert (current / "app.py").is_file() and (current / MANIFEST_NAME).is_file()
    assert host.current_release() == "1.0.0"
    assert transfer.mode == "full" and transfer.reason == "no release on the host yet"


def test_a_second_release_sends_only_changed_files_and_links_the_rest(
    host: HostReleases, tmp_path: Path
) -> None:
    host.put_release(manifest_of(artifact(tmp_path, "1", files(100))), "1")
    host.switch("1")
    second = manifest_of(artifact(tmp_path, "2", files(100, changed=5)))

    transfer = host.put_release(second, "2")

    assert transfer.mode == "incremental" and transfer.reason == "5 of 100 files changed"
    assert transfer.bytes_sent < 0.1 * second.artifact_bytes
    releases = Path(host.directory) / "releases"
    unchanged, changed = "lib/module50.py", "lib/module1.py"
    assert (releases / "2" / unchanged).stat().st_ino == (releases / "1" / unchanged).stat().st_ino
    assert (releases / "2" / changed).read_bytes().startswith(b"v2 ")
    assert (releases / "1" / changed).read_bytes().startswith(b"v1 ")  # the old one untouched


def test_files_dropped_from_a_release_are_not_carried_over(
    host: HostReleases, tmp_path: Path
) -> None:
    host.put_release(manifest_of(artifact(tmp_path, "1", {"a": b"1", "gone": b"2"})), "1")
    host.switch("1")
    host.put_release(manifest_of(artifact(tmp_path, "2", {"a": b"1", "new": b"3"})), "2")
    assert sorted(p.name for p in (Path(host.directory) / "releases" / "2").iterdir()) == [
        MANIFEST_NAME,
        "a",
        "new",
    ]


def test_a_current_release_that_no_longer_matches_its_manifest_gets_a_full_copy(
    host: HostReleases, tmp_path: Path
) -> None:
    host.put_release(manifest_of(artifact(tmp_path, "1", files(10))), "1")
    host.switch("1")
    (Path(host.directory) / "releases" / "1" / "lib" / "module3.py").write_text("tampered")

    transfer = host.put_release(manifest_of(artifact(tmp_path, "2", files(10, changed=1))), "2")

    assert transfer.mode == "full"
    assert transfer.reason == (
        "release 1 on the host does not match its manifest (1 file(s) differ, e.g. lib/module3.py)"
    )
    assert (Path(host.directory) / "releases/2/lib/module3.py").read_bytes().startswith(b"v1 ")


def test_a_release_that_does_not_match_the_artifact_on_the_host_is_refused_before_switching(
    host: HostReleases, tmp_path: Path
) -> None:
    host.put_release(manifest_of(build_artifact(tmp_path / "a", "1.0.0")), "1.0.0")
    host.switch("1.0.0")
    real = manifest_of(build_artifact(tmp_path / "a", "2.0.0"))
    lying = replace(
        real, files=real.files | {"app.py": replace(real.files["app.py"], sha256="0" * 64)}
    )
    transfer = host.stage(lying, "2.0.0")

    with pytest.raises(SwitchFailed, match=r"app\.py: FAILED") as failed:
        host.activate(transfer, lying, "2.0.0", switch=True)

    assert failed.value.switched is False
    assert host.current_release() == "1.0.0"
    assert sorted(p.name for p in (Path(host.directory) / "releases").iterdir()) == ["1.0.0"]


def test_a_release_goes_live_and_restarts_in_one_command_whose_restart_output_is_not_pruned(
    host: HostReleases, tmp_path: Path
) -> None:
    manifest = manifest_of(build_artifact(tmp_path / "a", "2.0.0"))
    restart = 'echo "restarted $GOLIVE_HOST in $(pwd)" > restarted.txt; echo 1.0.0'

    pruned = host.activate(
        host.stage(manifest, "2.0.0"), manifest, "2.0.0", switch=True, keep=1, restart=restart
    )

    assert pruned == []
    assert host.current_release() == "2.0.0"
    said = (Path(host.directory) / "restarted.txt").read_text()
    assert said == f"restarted web1 in {Path(host.directory).resolve()}\n"


def test_a_failed_restart_after_the_switch_names_the_plans_command_and_its_exit_code(
    host: HostReleases, tmp_path: Path
) -> None:
    manifest = manifest_of(build_artifact(tmp_path / "a", "2.0.0"))
    restart = "echo cannot bind port 8080; exit 3 # the service's own words"

    with pytest.raises(RestartFailed) as failed:
        host.activate(
            host.stage(manifest, "2.0.0"), manifest, "2.0.0", switch=True, restart=restart
        )

    assert host.current_release() == "2.0.0"
    assert failed.value.command == restart and failed.value.exit_code == 3
    assert failed.value.output_tail == ["cannot bind port 8080"]


def test_a_restart_that_ends_in_or_true_cannot_hide_a_failed_activation(
    host: HostReleases, tmp_path: Path
) -> None:
    real = manifest_of(build_artifact(tmp_path / "a", "2.0.0"))
    lying = replace(
        real, files=real.files | {"app.py": replace(real.files["app.py"], sha256="0" * 64)}
    )

    with pytest.raises(SwitchFailed) as failed:
        host.activate(
            host.stage(lying, "2.0.0"), lying, "2.0.0", switch=True, restart="true || true"
        )

    assert failed.value.switched is False and host.current_release() is None


def test_switching_replaces_the_link_without_ever_removing_it(
    host: HostReleases, tmp_path: Path
) -> None:
    for version in ("1.0.0", "2.0.0"):
        host.put_release(manifest_of(build_artifact(tmp_path / "a", version)), version)
    host.switch("1.0.0")
    current = Path(host.directory) / "current"
    inode_before = os.lstat(current).st_ino
    host.switch("2.0.0")
    assert host.current_release() == "2.0.0"
    assert os.lstat(current).st_ino != inode_before  # a new link renamed over the old one
    assert [p.name for p in Path(host.directory).iterdir() if ".tmp" in p.name] == []


def test_switching_to_a_release_that_is_not_there_changes_nothing(
    host: HostReleases, tmp_path: Path
) -> None:
    host.put_release(manifest_of(build_artifact(tmp_path / "a", "1.0.0")), "1.0.0")
    host.switch("1.0.0")
    with pytest.raises(DeployError, match=r"switch to 9\.9\.9 on host 'web1': that release is not"):
        host.switch("9.9.9")
    assert host.current_release() == "1.0.0"


def test_a_corrupt_artifact_leaves_no_half_written_release(
    host: HostReleases, tmp_path: Path
) -> None:
    good = manifest_of(build_artifact(tmp_path / "a", "1.0.0"))
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(good.artifact.read_bytes()[:200])
    with pytest.raises(DeployError, match=r"could not activate release 2\.0\.0 on host 'web1'"):
        host.put_release(type(good)(broken, good.files, 200), "2.0.0")
    assert list((Path(host.directory) / "releases").iterdir()) == []


def test_an_artifact_escaping_its_directory_is_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    evil = artifact(tmp_path, "x", {"../../escaped": b"x"})
    with pytest.raises(UnsafeArtifact, match="would land outside the release directory"):
        manifest_of(evil)


def test_a_failing_command_names_host_command_exit_code_and_last_lines(
    host: HostReleases,
) -> None:
    command = "for i in $(seq 1 30); do echo line $i; done; echo oops >&2; exit 3"
    with pytest.raises(HostCommandError) as failed:
        host.run(command, timeout=10)
    error = failed.value
    assert (error.host, error.command, error.exit_code) == ("web1", command, 3)
    assert error.output_tail[-2:] == ["line 30", "oops"] and len(error.output_tail) == 10
    assert "on host 'web1', command" in str(error) and "exited with code 3" in str(error)


def test_a_command_past_its_timeout_is_stopped_and_reported(host: HostReleases) -> None:
    with pytest.raises(HostCommandError, match=r"did not finish within 0.5s"):
        host.run("echo started; sleep 30", timeout=0.5)


def test_a_command_past_its_timeout_is_stopped_with_all_it_started(host: HostReleases) -> None:
    marker = f"30.{os.getpid()}{type(host.shell).__name__.startswith('Ssh'):d}"
    with pytest.raises(HostCommandError, match=r"did not finish within 0.5s"):
        host.run(f"sleep {marker} & sleep {marker}; wait", timeout=0.5)
    deadline = time.monotonic() + 10  # a bound on the TERM's delivery, not a timing assertion
    while time.monotonic() < deadline and sleeping(marker):
        time.sleep(0.1)
    assert not sleeping(marker), "the command's children outlived its timeout"


def sleeping(marker: str) -> bool:
    found = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True)
    return found.stdout != ""


def test_commands_run_in_the_deploy_directory_and_know_the_host(host: HostReleases) -> None:
    assert host.run("pwd; echo $GOLIVE_HOST", timeout=10).split() == [host.directory, "web1"]


def test_prune_keeps_the_newest_releases_and_never_the_current_one(
    host: HostReleases, tmp_path: Path
) -> None:
    for version in ("1.0.0", "2.0.0", "3.0.0", "4.0.0"):
        host.put_release(manifest_of(build_artifact(tmp_path / "a", version)), version)
    host.switch("1.0.0")
    assert sorted(host.prune(keep=2)) == ["2.0.0"]
    releases = sorted(p.name for p in (Path(host.directory) / "releases").iterdir())
    assert releases == ["1.0.0", "3.0.0", "4.0.0"]


def test_an_archive_holds_the_paths_that_exist_and_reads_back(
    host: HostReleases, tmp_path: Path
) -> None:
    (Path(host.directory) / "shared").mkdir()
    (Path(host.directory) / "shared" / "settings.json").write_text("{}")
    archive = host.archive(["shared", "current"], tmp_path / "backup")

    assert archive.path.name == "backup.tar.zst"  # this machine and the host have zstd
    assert listing(archive.path) == ["shared/", "shared/settings.json"]
    assert len(archive.sha256) == 64


def test_a_host_without_zstd_packs_its_backup_with_gzip_and_gets_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_zstd = {"PATH": str(no_zstd(tmp_path))}
    monkeypatch.setattr(golive.local, "host_environment", lambda: without_zstd)
    (tmp_path / "web1" / "shared").mkdir(parents=True)
    (tmp_path / "web1" / "shared" / "settings.json").write_text("before")
    host = HostReleases(Host(name="web1"), LocalShell("web1"), str(tmp_path / "web1"))

    archive = host.archive(["shared"], tmp_path / "backup")
    (tmp_path / "web1" / "shared" / "settings.json").write_text("after")
    restored = host.restore_paths(archive.path, ["shared"])

    assert archive.path.name == "backup.tar.gz"
    assert listing(archive.path) == ["shared/", "shared/settings.json"]
    assert restored == ["shared"]
    assert (tmp_path / "web1" / "shared" / "settings.json").read_text() == "before"


def test_a_backup_is_packed_with_gzip_when_this_machine_has_no_zstd_to_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_zstd = {"PATH": "/usr/bin:/bin"}
    monkeypatch.setattr(golive.local, "host_environment", lambda: with_zstd)
    monkeypatch.setenv("PATH", str(no_zstd(tmp_path)))
    (tmp_path / "web1" / "shared").mkdir(parents=True)
    host = HostReleases(Host(name="web1"), LocalShell("web1"), str(tmp_path / "web1"))

    archive = host.archive(["shared"], tmp_path / "backup")

    assert archive.path.name == "backup.tar.gz"


def test_a_zstd_backup_on_a_machine_without_zstd_is_refused_with_what_to_install(
    host: HostReleases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (Path(host.directory) / "shared").mkdir()
    archive = host.archive(["shared"], tmp_path / "backup")
    monkeypatch.setenv("PATH", str(no_zstd(tmp_path)))  # a rollback from another machine

    with pytest.raises(DeployError, match=r"packed by zstd, which this machine lacks: install"):
        host.restore_paths(archive.path, ["shared"])
    assert (Path(host.directory) / "shared").is_dir()  # nothing was touched


def no_zstd(tmp_path: Path) -> Path:
    """A PATH with every program this machine has but zstd: a host without it."""
    programs = tmp_path / "bin-without-zstd"
    programs.mkdir()
    for program in Path("/usr/bin").iterdir():
        if not program.name.startswith(("zstd", "unzstd")):
            (programs / program.name).symlink_to(program)
    return programs


def listing(archive: Path) -> list[str]:
    return subprocess.run(
        ["tar", "-tf", archive], capture_output=True, check=True, text=True
    ).stdout.split()


def test_a_missing_deploy_directory_is_reported_by_the_check(tmp_path: Path) -> None:
    check = HostReleases(Host(name="web9"), LocalShell("web9"), str(tmp_path / "nope")).check(1)
    assert check.problems == [f"deploy directory {tmp_path / 'nope'} does not exist"]


def test_the_check_reports_too_little_disk(host: HostReleases) -> None:
    check = host.check(needed_bytes=2**60)
    assert len(check.problems) == 1 and "MiB free in" in check.problems[0]


@pytest.fixture
def small_disk(host: HostReleases) -> Iterator[Path]:
    """The host's deploy directory on a 1 MiB file system of its own, nearly full."""
    if os.geteuid() != 0:
        unavailable("mounting a small file system needs root")
    directory = Path(host.directory)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(directory)], check=True)
    try:
        (directory / "filler").write_bytes(os.urandom(700 * 1024))
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def test_a_disk_that_fills_up_during_the_upload_is_named_and_the_upload_removed(
    host: HostReleases, small_disk: Path, tmp_path: Path
) -> None:
    big = {"blob.bin": random.Random(7).randbytes(600 * 1024)}  # does not compress

    with pytest.raises(DeployError, match=r"upload the release.*the disk holding .* is full"):
        host.stage(manifest_of(artifact(tmp_path, "2", big)), "2")

    assert sorted(p.name for p in (small_disk / "releases").iterdir()) == []


def test_the_tarball_of_changed_files_is_built_in_a_private_folder(tmp_path: Path) -> None:
    manifest = manifest_of(artifact(tmp_path, "2", files(3)))
    built = changes_tarball(manifest, ["lib/module0.py"])
    assert built.parent != Path(tempfile.gettempdir())  # no name anyone could plant first
    assert stat.S_IMODE(built.parent.stat().st_mode) == 0o700
    with tarfile.open(built) as tar:
        assert [m.name for m in tar.getmembers() if m.isfile()] == ["lib/module0.py"]


def test_nested_backed_up_paths_come_back_and_ones_that_did_not_exist_go(
    host: HostReleases, tmp_path: Path
) -> None:
    root = Path(host.directory)
    (root / "shared" / "uploads").mkdir(parents=True)
    (root / "shared" / "uploads" / "a.png").write_text("before")
    archive = host.archive(["shared/uploads", "shared/cache"], tmp_path / "backup")
    (root / "shared" / "uploads" / "a.png").write_text("after")
    (root / "shared" / "cache").mkdir()

    restored = host.restore_paths(archive.path, ["shared/uploads", "shared/cache"])

    assert restored == ["shared/uploads"]
    assert (root / "shared" / "uploads" / "a.png").read_text() == "before"
    assert not (root / "shared" / "cache").exists()


def test_a_current_that_cannot_be_read_is_an_error_not_no_release(host: HostReleases) -> None:
    assert host.current_release() is None  # nothing there: no release yet
    (Path(host.directory) / "current").mkdir()  # something there, but not golive's link
    with pytest.raises(HostCommandError, match=r"readlink .*/current.* cannot read it"):
        host.current_release()
    with pytest.raises(HostCommandError):
        host.confirm_release("2.0.0", "switch to 2.0.0")
