"""The environment registry as its admins and releasers meet it: `golive env set|show` and
`golive validate` in subprocesses, from a fresh folder, against the run store GOLIVE_HOME holds."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from golive.demo.fleet import DemoFleet
from golive.store import NewEntry, entry_hash, open_store
from tests.golive.test_cli import golive


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    """Public keys of admin, bob and carol, whose private keys are <name>.key in tmp_path."""
    public = {}
    for name in ("admin", "bob", "carol"):
        made = golive("keygen", name, "--out", str(tmp_path / f"{name}.key"), "--no-passphrase")
        public[name] = made.stdout.split('public_key: "')[1].split('"')[0]
    return public


def env_set(tmp_path: Path, name: str, rules: dict[str, object], signer: str = "admin") -> object:
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(rules))
    key = str(tmp_path / f"{signer}.key")
    return golive("env", "set", name, str(tmp_path / f"{name}.yaml"), "--key", key, api=False)


def rules(keys: dict[str, str], production: bool, **more: object) -> dict[str, object]:
    return {
        "production": production,
        "admins": {"admin": keys["admin"]},
        "approvers": {
            "bob": {"public_key": keys["bob"], "groups": ["sre"]},
            "carol": {"public_key": keys["carol"], "groups": ["sre"]},
        },
    } | more


def plan_in(tmp_path: Path, environment: str, **gate: object) -> str:
    fleet = DemoFleet(tmp_path / "fleet")
    go_ahead = {"approvers": ["sre"], "timeout": "2m"} | gate
    return str(fleet.write_plan("2.0.0", environment=environment, gates={"go-ahead": go_ahead}))


def test_an_admin_registers_an_environment_that_another_machine_then_reads(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    done = env_set(tmp_path, "live", rules(keys, production=True, min_quorum=2))
    elsewhere = golive("env", "show", "live", api=False, GOLIVE_HOME=str(tmp_path / "empty"))
    shown = golive("env", "show", api=False)

    assert done.returncode == 0, done.stderr
    assert "✓ environment live registered by admin (registry version 1)" in done.stdout
    assert (
        "live: production yes, min quorum 2" in shown.stdout and "signed start yes" in shown.stdout
    )
    assert keys["bob"] in shown.stdout  # whole keys, to compare with what approvers hold
    assert "live: not registered" in elsewhere.stdout  # another store knows nothing of it


def test_only_an_admin_of_the_current_rules_may_change_them(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    env_set(tmp_path, "live", rules(keys, production=True))
    widened = rules(keys, production=False, allow_unsigned=True)
    # bob names himself admin in the new rules: only the rules being replaced say who signs
    done = env_set(tmp_path, "live", widened | {"admins": {"bob": keys["bob"]}}, signer="bob")
    shown = golive("env", "show", "live", api=False)

    assert done.returncode == 2, done.stdout
    assert "this key is not one of environment 'live''s admins (admin); nothing changed" in (
        done.stderr
    )
    assert "live: production yes" in shown.stdout and "changed by admin" in shown.stdout


def test_production_is_the_registry_s_flag_never_a_guess_from_the_name(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    env_set(tmp_path, "live", rules(keys, production=True))
    env_set(tmp_path, "prod-like", rules(keys, production=False, allow_unsigned=True))

    live = golive("validate", plan_in(tmp_path / "a", "live", allow_unsigned=True), api=False)
    prod_like = golive(
        "validate", plan_in(tmp_path / "b", "prod-like", allow_unsigned=True), api=False
    )

    assert live.returncode == 2
    assert (
        "gates.go-ahead.allow_unsigned: not allowed in environment 'live': its decisions are "
        "signed; accepted: false" in live.stderr
    )
    assert prod_like.returncode == 0, prod_like.stderr


def test_a_production_environment_cannot_be_registered_with_loose_rules(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    done = env_set(tmp_path, "live", rules(keys, production=True, allow_timeout_approve=True))
    assert done.returncode == 2 and "accepted: allow_unsigned and allow_timeout_approve" in (
        done.stderr
    )
    assert "no environments are registered" in golive("env", "show", api=False).stdout


def test_a_plan_cannot_widen_its_environment_s_rules(tmp_path: Path, keys: dict[str, str]) -> None:
    env_set(tmp_path, "staging", rules(keys, production=False, min_quorum=2))
    plan = plan_in(
        tmp_path, "staging", approvers=["sre", "mallory"], quorum=1, on_timeout="approve"
    )

    done = golive("validate", plan, api=False)

    assert done.returncode == 2, done.stdout
    for problem in (
        "gates.go-ahead.on_timeout: 'approve' is not allowed in environment 'staging'",
        "gates.go-ahead.quorum: 1 is below the floor of environment 'staging'; accepted: 2 to 100",
        "gates.go-ahead.approvers: mallory may not approve in environment 'staging'; accepted: "
        "its registered approvers and groups: bob, carol, sre",
    ):
        assert problem in done.stderr


def test_an_environment_nobody_registered_gets_strict_rules_and_is_named(
    tmp_path: Path,
) -> None:
    done = golive("validate", plan_in(tmp_path, "qa", allow_unsigned=True), api=False)

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "gates.go-ahead.allow_unsigned: not allowed in environment 'qa' (not registered)" in (
        done.stderr
    )
    assert (
        "gates.go-ahead.approvers: environment 'qa' is not registered, so nobody may approve its "
        "gates; accepted: an environment `golive env show` lists, or register it with `golive "
        "env set qa RULES.yaml --key ADMIN.key`" in done.stderr
    )


def test_a_registry_edited_in_the_store_is_trusted_by_nothing(
    tmp_path: Path, keys: dict[str, str], golive_home: Path
) -> None:
    env_set(tmp_path, "live", rules(keys, production=True))
    with sqlite3.connect(golive_home / "store.db") as db:
        (body,) = db.execute("SELECT body FROM golive_entries WHERE run_id = 'registry'").fetchone()
        loosened = json.loads(body)
        loosened["rules"]["production"] = False
        db.execute(
            "UPDATE golive_entries SET body = ? WHERE run_id = 'registry'", [json.dumps(loosened)]
        )

    shown = golive("env", "show", api=False)
    validated = golive("validate", plan_in(tmp_path, "live"), api=False)

    for done in (shown, validated):
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "the environment registry in run store" in done.stderr
        assert "does not verify at change 1: its contents do not match its hash" in done.stderr


@pytest.mark.parametrize("how", ["appended", "copied with its own prev"])
def test_an_old_signed_change_replayed_over_a_newer_one_is_refused(
    tmp_path: Path, keys: dict[str, str], golive_home: Path, how: str
) -> None:
    env_set(tmp_path, "live", rules(keys, production=False, allow_unsigned=True))
    env_set(tmp_path, "live", rules(keys, production=True))
    with sqlite3.connect(golive_home / "store.db") as db:
        old = db.execute(
            "SELECT at, kind, v, body, prev FROM golive_entries WHERE run_id = 'registry' "
            "AND seq = 1"
        ).fetchone()
        if how == "copied with its own prev":  # and a hash that matches: it is not keyed
            at, kind, v, body, prev = old
            digest = entry_hash(prev, "registry", 3, at, kind, v, body)
            db.execute(
                "INSERT INTO golive_entries VALUES ('registry', 3, ?, ?, ?, ?, ?, ?)",
                [at, kind, v, body, prev, digest],
            )
    if how == "appended":
        open_store().append("registry", [NewEntry(old[1], old[2], json.loads(old[3]))])

    done = golive("env", "show", "live", api=False)

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "does not verify at change 3" in done.stderr
    assert ("replayed" in done.stderr) or ("cut short" in done.stderr)


def test_bad_rules_files_and_keys_are_told_with_every_problem_and_change_nothing(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    bad = {"production": "maybe", "admins": {"admin": "ed25519:xx"}, "colour": "blue"}
    done = env_set(tmp_path, "live", bad)
    (tmp_path / "not-a-key").write_text("hello")
    keyless = golive(
        "env",
        "set",
        "live",
        str(tmp_path / "live.yaml"),
        "--key",
        str(tmp_path / "not-a-key"),
        api=False,
    )

    assert done.returncode == 2 and "nothing changed" in done.stderr
    for problem in (
        "production: 'maybe' is not accepted; accepted: true or false",
        "admins.admin: not a valid Ed25519 public key",
        "colour: unknown field; accepted: production, admins, approvers",
    ):
        assert problem in done.stderr
    assert keyless.returncode == 2 and "is not a golive key" in keyless.stderr
    assert "no environments are registered" in golive("env", "show", api=False).stdout


def test_a_run_in_an_environment_nobody_registered_is_refused_before_it_starts(
    tmp_path: Path,
) -> None:
    fleet = DemoFleet(tmp_path / "fleet")
    waves = [{"name": "all", "hosts": "100%"}]
    plan = fleet.write_plan("2.0.0", environment="prd", gates={}, waves=waves, rehearsal=None)

    done = golive("run", str(plan))

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "environment 'prd' is not registered, and golive runs only in environments" in (
        done.stderr
    )
    assert "Nothing was run" in done.stderr
    assert not (fleet.root / "hosts").exists()
