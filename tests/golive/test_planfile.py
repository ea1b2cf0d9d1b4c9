"""Plan validation: every problem at once, each with its YAML path and what is accepted."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from golive.demo.fleet import APP_SOURCE
from golive.errors import PlanError
from golive.planfile import load_plan
from golive.record import plan_to_store, stored_plan
from tests.registry import public, register

GOOD: dict[str, Any] = {
    "release": {"name": "shop-web", "version": "2.4.0", "artifact": "dist/shop-web.tar.gz"},
    "environment": "production",
    "targets": {
        "path": "hosts",
        "restart": "app restart --port {http_port}",
        "hosts": [{"name": f"web{i}", "vars": {"http_port": 8000 + i}} for i in (1, 2, 3, 4)],
    },
    "waves": [
        {"name": "canary", "hosts": 1, "gate": "prod-approval"},
        {"name": "half", "hosts": "50%"},
        {"name": "rest", "hosts": "100%"},
    ],
    "smoke": [{"name": "health", "url": "http://{address}:{http_port}/health"}],
    "gates": {"prod-approval": {"approvers": ["bob", "carol"], "quorum": 2, "timeout": "4h"}},
    "soak": {"duration": "10m", "interval": "30s", "max_error_rate": "1%", "max_p95_ms": 800},
}


@pytest.fixture(autouse=True)
def production() -> None:
    """GOOD's environment, registered as production with bob and carol as approvers."""
    people = {name: Ed25519PrivateKey.generate() for name in ("bob", "carol")}
    register("production", production=True, approvers=people)


def write(tmp_path: Path, plan: Any) -> Path:
    """The plan in tmp_path, beside the artifact GOOD names (a plan's files must exist)."""
    (tmp_path / "dist").mkdir(exist_ok=True)
    with tarfile.open(tmp_path / "dist/shop-web.tar.gz", "w:gz") as tar:
        tar.add(APP_SOURCE, arcname="app.py")
    path = tmp_path / "plan.yaml"
    path.write_text(plan if isinstance(plan, str) else yaml.safe_dump(plan))
    return path


def problems(tmp_path: Path, plan: Any) -> list[str]:
    with pytest.raises(PlanError) as error:
        load_plan(write(tmp_path, plan))
    return [str(p) for p in error.value.problems]


def with_(section: str, value: Any) -> dict[str, Any]:
    return GOOD | {section: value}


def test_a_good_plan_loads_with_its_waves_resolved_and_paths_made_absolute(tmp_path: Path) -> None:
    plan_file = load_plan(write(tmp_path, GOOD))
    assert [(w.name, w.hosts) for w in plan_file.waves] == [
        ("canary", ("web1",)),
        ("half", ("web2",)),
        ("rest", ("web3", "web4")),
    ]
    assert plan_file.plan.release.artifact == tmp_path / "dist/shop-web.tar.gz"
    assert plan_file.plan.gates["prod-approval"].timeout == 4 * 3600
    assert plan_file.plan.soak is not None and plan_file.plan.soak.max_error_rate == 0.01
    assert len(plan_file.digest) == 64


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"freeze": [{"from": "2026-12-24", "to": "2026-12-27", "reason": "holidays"}]},
        {
            "databases": {"shop": {"block": "pg-prod"}},
            "backups": [{"kind": "postgres", "database": "shop"}],
        },
        {"soak": {"duration": "1m", "interval": "1s", "max_error_rate": "100%"}},
        {"waves": [{"name": "all", "hosts": "100%", "max_fail": "50%", "parallel": 2}]},
        {
            "audit": {"head_file": "heads.log", "head_webhook": "ops"},
            "notify": [{"webhook": "ops"}],
        },
        {
            "targets": GOOD["targets"]
            | {
                "transport": "ssh",
                "path": "/srv/shop",
                "hosts": [
                    {"name": f"web{i}", "address": f"10.0.0.{i}", "vars": {"http_port": 80}}
                    for i in (1, 2, 3, 4)
                ],
            }
        },
        {
            "freeze": [
                {
                    "every": "friday",
                    "after": "15:00",
                    "reason": "weekend",
                    "timezone": "Asia/Tokyo",
                },
                {"every": "month-end", "days": 2, "until": "18:00", "reason": "close"},
            ],
            "closeout": [{"task": "drop the old column", "owner": "dba", "due": "2026-12-20"}],
            "rehearsal": {
                "environment": "staging",
                "targets": GOOD["targets"] | {"path": "stage-hosts"},
                "gates": "reject",
                "required_within": "7d",
            },
        },
    ],
    ids=["good", "freeze", "database-block", "whole-rate", "shares", "audit", "ssh", "later"],
)
def test_a_plan_kept_in_the_run_store_reads_back_as_the_same_plan(
    tmp_path: Path, changes: dict[str, Any]
) -> None:
    plan = load_plan(write(tmp_path, GOOD | changes)).plan
    started = {"kind": "run.started", "plan": json.loads(json.dumps(plan_to_store(plan)))}
    assert stored_plan([started]) == plan


def test_yaml_that_does_not_parse_is_reported_with_its_line(tmp_path: Path) -> None:
    assert problems(tmp_path, "release: [unclosed\n")[0].startswith("line 2")


def test_a_plan_that_is_not_a_mapping_lists_the_sections(tmp_path: Path) -> None:
    found = problems(tmp_path, "- just a list\n")[0]
    assert found.startswith("a plan is a YAML mapping of sections; accepted: release, environment")


def test_unknown_sections_and_fields_list_what_is_accepted(tmp_path: Path) -> None:
    plan = GOOD | {"strategy": "blue-green"} | {"targets": GOOD["targets"] | {"colour": "blue"}}
    found = problems(tmp_path, plan)
    assert any(p.startswith("strategy: unknown section; accepted: release,") for p in found)
    assert (
        "targets.colour: unknown field; accepted: transport, hosts, inventory, group, path, "
        "restart, keep_releases, command_timeout" in found
    )


def test_missing_required_sections_and_fields_are_named(tmp_path: Path) -> None:
    plan = {k: v for k, v in GOOD.items() if k != "environment"}
    plan["release"] = {"name": "shop-web", "version": "1"}
    assert problems(tmp_path, plan) == [
        "release.artifact: required field is missing",
        "environment: required section is missing",
    ]


def test_a_value_outside_its_choices_lists_the_choices(tmp_path: Path) -> None:
    found = problems(tmp_path, with_("targets", GOOD["targets"] | {"transport": "telnet"}))
    assert found == ["targets.transport: 'telnet' is not accepted; accepted: 'local' or 'ssh'"]


def test_bad_durations_rates_and_numbers_say_what_is_accepted(tmp_path: Path) -> None:
    plan = GOOD | {
        "soak": {"duration": "ten minutes", "max_error_rate": "lots"},
        "smoke": [{"name": "health", "url": "http://x/", "expect_status": 700}],
    }
    found = problems(tmp_path, plan)
    assert (
        "soak.duration: 'ten minutes' is not a duration; accepted: a number of seconds or "
        "text like '250ms', '30s', '10m', '4h', '1h30m'" in found
    )
    assert "soak.max_error_rate: 'lots' is not a rate; accepted: a percentage like '1%'" in found
    assert "smoke[0].expect_status: 700 is not accepted; accepted: 100 to 599" in found


def test_names_that_cannot_be_used_on_disk_are_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, with_("release", GOOD["release"] | {"version": "../../etc"}))
    assert found[0].startswith("release.version: '../../etc' cannot be used as a name on disk")


def test_a_gate_name_prefect_cannot_key_a_pause_with_is_refused(tmp_path: Path) -> None:
    gates = {"Prod Approval": GOOD["gates"]["prod-approval"]}
    waves = [GOOD["waves"][0] | {"gate": "Prod Approval"}, *GOOD["waves"][1:]]
    found = problems(tmp_path, GOOD | {"gates": gates, "waves": waves})
    assert any(
        p.startswith("gates.Prod Approval: 'Prod Approval' is not a gate name") for p in found
    )


def test_waves_that_leave_hosts_out_say_which_and_how_to_fix_it(tmp_path: Path) -> None:
    found = problems(
        tmp_path, with_("waves", [{"name": "canary", "hosts": 1}, {"name": "half", "hosts": "50%"}])
    )
    assert found == [
        "waves: cover 2 of 4 hosts; in no wave: web3, web4. "
        "End with a wave of hosts: 100% to take the rest"
    ]


def test_waves_that_name_a_host_twice_or_an_unknown_host_are_refused(tmp_path: Path) -> None:
    waves = [
        {"name": "a", "hosts": ["web1", "web9"]},
        {"name": "b", "hosts": ["web1"]},
        {"name": "c", "hosts": "100%"},
    ]
    found = problems(tmp_path, with_("waves", waves))
    assert "waves[0].hosts[1]: 'web9' is not a host; accepted: web1, web2, web3, web4" in found
    assert "waves[1].hosts[0]: 'web1' is already in waves[0]" in found


def test_wave_sizes_over_100_percent_or_adding_nothing_are_refused(tmp_path: Path) -> None:
    waves = [
        {"name": "a", "hosts": "50%"},
        {"name": "b", "hosts": "25%"},
        {"name": "c", "hosts": "150%"},
        {"name": "d", "hosts": True},
    ]
    found = problems(tmp_path, with_("waves", waves))
    assert found == [
        "waves[3].hosts: True is not a wave size; accepted: a count (1), a share of "
        "the fleet ('50%') or a list of host names"
    ]
    found = problems(tmp_path, with_("waves", waves[:3]))
    assert "waves[1].hosts: '25%' adds no hosts: earlier waves already cover 2 of 4" in found
    assert any(p.startswith("waves[2].hosts: '150%' is over 100%") for p in found)


def test_a_count_larger_than_the_hosts_left_is_refused(tmp_path: Path) -> None:
    found = problems(
        tmp_path, with_("waves", [{"name": "a", "hosts": 3}, {"name": "b", "hosts": 5}])
    )
    assert found == ["waves[1].hosts: 5 asks for 5 more host(s), but only 1 are left"]


def test_cross_section_problems_are_all_reported_together(tmp_path: Path) -> None:
    plan = GOOD | {
        "targets": GOOD["targets"]
        | {"hosts": [*GOOD["targets"]["hosts"], {"name": "web1"}], "restart": "app restart {port}"},
        "waves": [GOOD["waves"][0] | {"gate": "nope"}, *GOOD["waves"][1:]],
        "gates": {"prod-approval": {"approvers": ["bob"], "quorum": 2}},
    }
    found = problems(tmp_path, plan)
    assert found == [
        "targets.hosts[4].name: 'web1' is already targets.hosts[0]; accepted: each once",
        "waves[0].gate: 'nope' is not a gate; accepted: prod-approval",
        "gates.prod-approval.quorum: 2 signed approval(s) needed, but only 1 approver(s) could "
        "give one (a group counts as its registered members): bob",
        "smoke[0].url: {http_port} has no value on host 'web1'; accepted: {name}, {address}",
        "targets.restart: {port} has no value on host 'web1'; accepted: {name}, {address}, "
        "{http_port}",
    ]


def test_problems_in_different_sections_are_reported_at_once(tmp_path: Path) -> None:
    plan = GOOD | {
        "release": GOOD["release"] | {"name": "shop web"},
        "gates": {"prod-approval": {"approvers": [], "timeout": "soon"}},
        "freeze": [{"from": "xmas", "to": "2026-12-27", "reason": "holidays"}],
    }
    found = problems(tmp_path, plan)
    assert [p.split(":")[0] for p in found] == [
        "release.name",
        "gates.prod-approval.approvers",
        "gates.prod-approval.timeout",
        "freeze[0].from",
    ]


def test_wave_budgets_and_concurrency_take_counts_or_shares(tmp_path: Path) -> None:
    waves = [
        {"name": "canary", "hosts": 1, "pause": "30s"},
        {"name": "rest", "hosts": "100%", "parallel": "50%", "max_fail": "34%"},
    ]
    plan_file = load_plan(write(tmp_path, with_("waves", waves)))
    canary, rest = (w.wave for w in plan_file.waves)
    assert canary.pause == 30 and canary.failure_budget(1) == 0 and canary.concurrency(1) == 1
    assert rest.concurrency(3) == 1 and rest.failure_budget(3) == 1  # shares round down


def test_bad_budgets_and_concurrency_say_what_is_accepted(tmp_path: Path) -> None:
    waves = [{"name": "all", "hosts": "100%", "parallel": "lots", "max_fail": "150%"}]
    assert problems(tmp_path, with_("waves", waves)) == [
        "waves[0].parallel: 'lots' is not accepted; accepted: a count (2) or a share ('25%')",
        "waves[0].max_fail: '150%' is not accepted; accepted: a count (2) or a share ('25%')",
    ]


def test_ssh_hosts_are_block_names_or_inline_hosts_reached_by_name(tmp_path: Path) -> None:
    targets = {
        "transport": "ssh",
        "path": "/srv/app",
        "restart": "true",
        "hosts": ["web1", {"name": "web2.example.com", "user": "deploy"}],
    }
    plan = GOOD | {"targets": targets, "smoke": [], "waves": [{"name": "all", "hosts": "100%"}]}
    web1, web2 = load_plan(write(tmp_path, plan)).plan.targets.hosts
    assert (web1.name, web1.block) == ("web1", "web1")
    assert (web2.address, web2.user, web2.block, web2.port) == (
        "web2.example.com",
        "deploy",
        None,
        22,
    )


def test_a_plan_does_not_choose_who_approves_it(tmp_path: Path) -> None:
    mallory = {"mallory": {"public_key": public(Ed25519PrivateKey.generate())}}
    gates = {"prod-approval": {"approvers": ["mallory"], "timeout": "4h"}}
    assert problems(tmp_path, GOOD | {"approvers": mallory, "gates": gates}) == [
        "approvers: a plan does not choose who approves it: approvers are registered with the "
        "environment (`golive env set ENV RULES.yaml --key ADMIN.key`); accepted: gates "
        "naming them",
        "gates.prod-approval.approvers: mallory may not approve in environment 'production'; "
        "accepted: its registered approvers and groups: bob, carol",
    ]


def test_the_plan_digest_covers_the_environment_s_rules(tmp_path: Path) -> None:
    before = load_plan(write(tmp_path, GOOD)).environment
    people = {name: Ed25519PrivateKey.generate() for name in ("bob", "carol")}
    register("production", production=True, approvers=people)  # new keys
    after = load_plan(write(tmp_path, GOOD)).environment
    assert after.version == before.version + 1 and after.registered
    assert after.rules_sha256() != before.rules_sha256()


def test_a_production_gate_cannot_pass_by_timeout(tmp_path: Path) -> None:
    gates = {"prod-approval": GOOD["gates"]["prod-approval"] | {"on_timeout": "approve"}}
    assert problems(tmp_path, with_("gates", gates)) == [
        "gates.prod-approval.on_timeout: 'approve' is not allowed in environment 'production': "
        "its gates pass only by decisions; accepted: 'reject'"
    ]
