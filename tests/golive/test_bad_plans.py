"""Malformed plans, one file each in bad_plans/, run through `golive validate` as a user would:
in a fresh process, from a fresh working folder. Each is refused with exit 2, no traceback, the
YAML path (or line) of every problem its `# expect:` lines name, in bounded time, and nothing
is started or written anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from golive.demo.fleet import APP_SOURCE

HERE = Path(__file__).parent
BAD_PLANS = sorted((HERE / "bad_plans").glob("*.yaml"))
GOOD_PLAN = HERE / "good_plan.yaml"
GOLIVE = str(Path(sys.executable).parent / "golive")


@dataclass(frozen=True)
class Workspace:
    """A working folder with the files the plans name, and empty homes for golive and Prefect."""

    root: Path
    work: Path
    env: dict[str, str]

    def validate(self, plan: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GOLIVE, "validate", str(plan)],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,  # a bound on a hang, not a timing assertion
        )

    def files(self) -> set[str]:
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*")}


STAGING_RULES = """
production: false
admins: {admin: "%s"}
approvers:
  bob: {public_key: "ed25519:AmBwurthGatrh5JCaJvwOF9zsBrwWhp0rDddFZFGrho=", groups: [sre]}
  carol: {public_key: "ed25519:kluAMTU8/3ECn+1n9LtBtwRq5SbzAxvdAOW5s7gyVNE="}
"""
PRODUCTION_RULES = STAGING_RULES.replace("production: false", "production: true")


@pytest.fixture(scope="session")
def registered_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run store where an admin registered `staging` and `production` with `golive env
    set`, as the plans expect; each workspace starts from a copy."""
    home = tmp_path_factory.mktemp("registry")
    env = os.environ | {"GOLIVE_HOME": str(home)}
    made = subprocess.run(
        [GOLIVE, "keygen", "admin", "--no-passphrase", "--out", str(home / "admin.key")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    public = made.stdout.split('public_key: "')[1].split('"')[0]
    for name, rules in (("staging", STAGING_RULES), ("production", PRODUCTION_RULES)):
        (home / f"{name}.yaml").write_text(rules % public)
        subprocess.run(
            [
                GOLIVE,
                "env",
                "set",
                name,
                str(home / f"{name}.yaml"),
                "--key",
                str(home / "admin.key"),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return home / "store.db"


@pytest.fixture
def workspace(tmp_path: Path, registered_store: Path) -> Iterator[Workspace]:
    work = tmp_path / "work"
    (work / "dist").mkdir(parents=True)
    (work / "migrations").mkdir()
    with tarfile.open(work / "dist/shop-web-2.4.0.tar.gz", "w:gz") as tar:
        tar.add(APP_SOURCE, arcname="app.py")
    (work / "dist/empty.tar.gz").touch()
    tarfile.open(work / "dist/empty-tar.tar.gz", "w:gz").close()
    (work / "loop1").symlink_to(work / "loop2")
    (work / "loop2").symlink_to(work / "loop1")
    (work / "migrations/0042_cents.sql").write_text("ALTER TABLE orders ADD cents int;\n")
    shutil.copy(work / "dist/shop-web-2.4.0.tar.gz", tmp_path / "outside.tar.gz")
    (work / "dist/link-out.tar.gz").symlink_to(tmp_path / "outside.tar.gz")
    (tmp_path / "outside.sql").write_text("DROP TABLE orders;\n")
    for home in ("golive-home", "prefect-home"):
        (tmp_path / home).mkdir()
    shutil.copy(registered_store, tmp_path / "golive-home" / "store.db")
    env = os.environ | {
        "GOLIVE_HOME": str(tmp_path / "golive-home"),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "SHOP_PW": "not-used",
    }
    env.pop("PREFECT_API_URL", None)
    yield Workspace(tmp_path, work, env)


def expected(plan: Path) -> list[str]:
    header = plan.read_bytes().split(b"\n")
    return [line.decode()[len("# expect: ") :] for line in header if line.startswith(b"# expect:")]


def test_the_corpus_covers_every_class_of_bad_plan() -> None:
    assert len(BAD_PLANS) >= 60
    assert all(expected(plan) for plan in BAD_PLANS)


def test_the_plan_the_corpus_is_made_from_is_valid(workspace: Workspace) -> None:
    plan = workspace.work / "plan.yaml"
    shutil.copy(GOOD_PLAN, plan)
    done = workspace.validate(plan)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("bad", BAD_PLANS, ids=[p.stem for p in BAD_PLANS])
def test_a_bad_plan_is_refused_with_every_problem_and_nothing_written(
    workspace: Workspace, bad: Path
) -> None:
    plan = workspace.work / "plan.yaml"
    shutil.copy(bad, plan)
    before = workspace.files()
    done = workspace.validate(plan)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    for text in expected(bad):
        assert text in output
    assert workspace.files() == before


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda p: p.write_bytes(b"release: x\n" + b"#" * (2 * 2**20)),
            "2 MiB; accepted: 1 byte to 1 MiB",
        ),
        (lambda p: os.mkfifo(p), "not a regular file (a fifo)"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.symlink_to("/dev/zero"), "not a regular file (a character device)"),
        (lambda p: None, "plan.yaml does not exist"),
    ],
    ids=["huge", "fifo", "directory", "dev-zero", "missing"],
)
def test_a_plan_that_is_not_a_small_regular_file_is_refused_without_reading_it(
    workspace: Workspace, make: object, message: str
) -> None:
    plan = workspace.work / "plan.yaml"
    make(plan)  # type: ignore[operator]
    before = workspace.files()
    done = workspace.validate(plan)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert workspace.files() == before
