"""The command line refuses misuse before doing anything, says how to fix it, and never shows
a traceback: each command runs in a fresh process from a fresh working folder."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

GOLIVE = str(Path(sys.executable).parent / "golive")


def golive(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = os.environ | {"GOLIVE_HOME": str(cwd / "home"), "COLUMNS": "200"} | env
    environment.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [GOLIVE, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=60
    )


def refused(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    assert "Traceback" not in output
    return output


@pytest.mark.parametrize(
    "args, env, says",
    [
        (["keygen", "../x", "--no-passphrase"], {}, "looks like a path"),
        (["keygen", "bob"], {}, "give --passphrase-env VAR"),
        (["keygen", "bob", "--passphrase-env", "UNSET_VAR"], {}, "the variable is not set"),
        (["keygen", "bob", "--passphrase-env", "EMPTY"], {"EMPTY": ""}, "the variable is empty"),
        (["keygen", "bob", "--out", "no/such/bob.key", "--no-passphrase"], {}, "does not exist"),
        (
            ["keygen", "bob", "--passphrase-env", "PW", "--no-passphrase"],
            {"PW": "x"},
            "exclude each other",
        ),
    ],
    ids=["path-name", "no-choice", "unset", "empty", "missing-folder", "both"],
)
def test_keygen_refuses_and_writes_nothing(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    before = set(tmp_path.rglob("*"))
    assert says in refused(golive(tmp_path, *args, **env))
    assert set(tmp_path.rglob("*")) == before


def test_keygen_writes_an_owner_only_key_and_never_replaces_one(tmp_path: Path) -> None:
    made = golive(tmp_path, "keygen", "bob", "--passphrase-env", "PW", PW="s3cret")
    assert made.returncode == 0, made.stderr
    key = tmp_path / "bob.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"ENCRYPTED" in key.read_bytes()
    again = golive(tmp_path, "keygen", "bob", "--no-passphrase")
    assert "exists already" in refused(again)


def make_runs(home: Path, *run_ids: str, line: str = "") -> None:
    """Runs as an older golive journaled them: the store takes them in when first opened."""
    for run_id in run_ids:
        run_dir = home / "runs" / run_id
        run_dir.mkdir(parents=True)
        (run_dir / "journal.jsonl").write_text(line)


def test_an_ambiguous_run_prefix_lists_the_runs_it_could_be(tmp_path: Path) -> None:
    make_runs(tmp_path / "home", "abc111", "abc222")
    said = refused(golive(tmp_path, "status", "abc"))
    assert "'abc' could be any of 2 runs: abc111, abc222" in said


@pytest.mark.parametrize("run_id", ["feedface", "*", "../etc", ""])
def test_an_unknown_or_malformed_run_id_is_named(tmp_path: Path, run_id: str) -> None:
    make_runs(tmp_path / "home", "abc111")
    assert f"no run {run_id!r}" in refused(golive(tmp_path, "status", run_id))


def test_a_rejection_without_a_reason_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    said = refused(golive(tmp_path, "reject", "abc111", "--as", "bob", "--comment", "  "))
    assert "a rejection needs a reason" in said
    assert "--comment" in refused(golive(tmp_path, "reject", "abc111", "--as", "bob"))


@pytest.mark.parametrize(
    "line, says",
    [
        (
            '{"kind": "run.started", "at": "x"',
            "line 1: not a journal entry (the line is cut short)",
        ),
        ("\x00\x01garbage\n", "line 1: not a journal entry"),
        ('{"at": "x"}\n', "line 1: not a journal entry: it has no kind"),
        ('{"kind": "run.started"}\n', "a run store entry of kind 'run.started' does not have"),
    ],
    ids=["truncated", "binary", "no-kind", "out-of-shape"],
)
def test_a_corrupt_old_journal_is_not_imported_and_is_named_by_file_and_line(
    tmp_path: Path, line: str, says: str
) -> None:
    make_runs(tmp_path / "home", "abc111", line=line)
    said = refused(golive(tmp_path, "status", "abc111"), code=1)
    assert f"{tmp_path}/home/runs/abc111/journal.jsonl" in said and says in said
    listing = golive(tmp_path, "status")
    assert listing.returncode == 0
    assert "abc111/journal.jsonl was not imported" in listing.stdout + listing.stderr


def test_an_internal_error_is_one_line_and_a_private_crash_report(tmp_path: Path) -> None:
    # A fault inside golive, injected into the real command in its own process.
    make_runs(tmp_path / "home", "abc111")
    inject = (
        "import golive.cli as cli\n"
        "def broken(entries): raise KeyError('kind')\n"
        "cli.summarize = broken\n"
        "cli.console_main()\n"
    )
    environment = os.environ | {"GOLIVE_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-c", inject, "status", "abc111"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = refused(done, code=70)
    assert "golive failed unexpectedly (KeyError" in said and "This is a fault in golive" in said
    [report] = (tmp_path / "home" / "crash-reports").iterdir()
    assert str(report) in said
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    assert "Traceback" in report.read_text()


@pytest.mark.parametrize(
    "args",
    [
        ["validate"],
        ["validate", "/dev/zero"],
        ["validate", "/"],
        ["run", "/dev/null"],
        ["approve"],
        ["approve", "abc", "--as", "bob", "--key", "/nope.key"],
        ["approve", "abc", "--as", "bob", "--passphrase-env", "UNSET_VAR"],
        ["status", "\x7f"],
        ["keygen", ""],
        ["frobnicate"],
    ],
)
def test_no_command_shows_a_traceback_on_odd_input(tmp_path: Path, args: list[str]) -> None:
    done = golive(tmp_path, *args)
    assert done.returncode in (1, 2), done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
