"""Hosts by pattern and from Ansible INI inventories, as a plan names them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from golive.inventory import InventoryError, expand, read_inventory
from golive.planfile import load_plan
from tests.golive.test_planfile import GOOD, problems, write
from tests.golive.test_planfile import production as production  # GOOD's environment

INVENTORY = """\
# the shop's hosts, as Ansible has them
[web]
web[01:03] http_port=8080
web04 ansible_host=10.0.0.4 ansible_port=2222 ansible_user=deploy http_port=8084

[db]
db1 ansible_host=10.0.1.1

[web:vars]
tier=front

[shop:children]
web
db
"""


def test_a_range_names_a_host_for_each_value_padded_as_its_start_is() -> None:
    assert expand("web[01:03]") == ["web01", "web02", "web03"]
    assert expand("web[1:3]") == ["web1", "web2", "web3"]
    assert expand("db-[a:c]") == ["db-a", "db-b", "db-c"]
    assert expand("n[0:20:10]") == ["n0", "n10", "n20"]
    assert expand("r[1:2]-[a:b]") == ["r1-a", "r1-b", "r2-a", "r2-b"]
    assert expand("plain") == ["plain"]


@pytest.mark.parametrize(
    "pattern, told",
    [
        ("web[05:01]", "runs backwards"),
        ("web[a:9]", "is no range"),
        ("web[0:99999]", "at most 10000"),
        ("web[0:99][0:99][0:9]", "at most 10000"),
        ("h[0:9999][0:9999][0:9999]", "at most 10000"),  # refused before a name is made
    ],
)
def test_a_range_that_makes_no_sense_is_refused_with_what_is_accepted(
    pattern: str, told: str
) -> None:
    with pytest.raises(InventoryError, match=told):
        expand(pattern)


@given(st.integers(0, 500), st.integers(0, 500), st.integers(1, 4))
def test_a_range_names_each_value_once_in_order(start: int, size: int, width: int) -> None:
    names = expand(f"h[{str(start).zfill(width)}:{start + size}]")
    assert [int(name[1:]) for name in names] == list(range(start, start + size + 1))


def test_an_inventory_group_gives_its_hosts_with_their_addresses_ports_users_and_vars(
    tmp_path: Path,
) -> None:
    (tmp_path / "hosts.ini").write_text(INVENTORY)
    web = read_inventory(tmp_path / "hosts.ini", "web")
    shop = read_inventory(tmp_path / "hosts.ini", "shop")

    assert [h["name"] for h in web] == ["web01", "web02", "web03", "web04"]
    assert web[0]["vars"] == {"http_port": "8080", "tier": "front"}
    assert web[3] | {"vars": None} == {
        "name": "web04",
        "address": "10.0.0.4",
        "port": 2222,
        "user": "deploy",
        "vars": None,
    }
    assert [h["name"] for h in shop] == [*(h["name"] for h in web), "db1"]


def test_inventory_vars_apply_as_ansible_applies_them(tmp_path: Path) -> None:
    (tmp_path / "hosts.ini").write_text(
        "[all:vars]\nansible_user=deploy\nrack=001\n"
        "[prod:vars]\nrack=002\ntier=back\n"
        "[web:vars]\ntier=front\n"
        "[prod:children]\nweb\n"
        "[web]\nweb1 tier=edge\nweb2:2222 ansible_ssh_host=10.0.0.2 ansible_ssh_user=ops\n"
    )
    web1, web2 = read_inventory(tmp_path / "hosts.ini", "prod")

    assert web1 == {"name": "web1", "user": "deploy", "vars": {"rack": "002", "tier": "edge"}}
    assert web2 == {
        "name": "web2",
        "user": "ops",
        "port": 2222,
        "address": "10.0.0.2",
        "vars": {"rack": "002", "tier": "front"},
    }


def test_the_plan_digest_covers_its_inventory(tmp_path: Path) -> None:
    (tmp_path / "hosts.ini").write_text(INVENTORY)
    plan = write(tmp_path, GOOD | {"targets": _targets(inventory="hosts.ini", group="web")})
    before = load_plan(plan).digest
    (tmp_path / "hosts.ini").write_text(INVENTORY.replace("10.0.0.4", "10.9.9.9"))

    assert load_plan(plan).digest != before


def test_a_plan_takes_its_hosts_from_an_inventory_or_by_range(tmp_path: Path) -> None:
    (tmp_path / "hosts.ini").write_text(INVENTORY)
    by_inventory = GOOD | {"targets": _targets(inventory="hosts.ini", group="web")}
    ranged = [{"name": "web[1:4]", "vars": {"http_port": "800[1:4]"}}]
    by_range = GOOD | {"targets": _targets(hosts=ranged)}

    from_inventory = load_plan(write(tmp_path, by_inventory)).plan.targets.hosts
    from_range = load_plan(write(tmp_path, by_range)).plan

    assert [h.name for h in from_inventory] == ["web01", "web02", "web03", "web04"]
    assert from_inventory[3].address == "10.0.0.4"
    assert [h.vars["http_port"] for h in from_range.targets.hosts] == [
        "8001",
        "8002",
        "8003",
        "8004",
    ]
    assert from_range.host_names() == ["web1", "web2", "web3", "web4"]


def test_an_inventory_that_is_missing_or_names_no_such_group_is_a_plan_problem(
    tmp_path: Path,
) -> None:
    (tmp_path / "hosts.ini").write_text(INVENTORY)
    missing = GOOD | {"targets": _targets(inventory="nowhere.ini")}
    no_group = GOOD | {"targets": _targets(inventory="hosts.ini", group="cache")}
    both = GOOD | {"targets": _targets(inventory="hosts.ini", hosts=["web1"])}

    assert any(
        p.startswith("targets.inventory: ") and "nowhere.ini" in p
        for p in problems(tmp_path, missing)
    )
    assert any(
        "no group 'cache'; accepted: all, db, shop, web" in p for p in problems(tmp_path, no_group)
    )
    assert any("`hosts` or `inventory`, not both" in p for p in problems(tmp_path, both))


def test_a_thousand_hosts_by_range_validate(tmp_path: Path) -> None:
    many = [{"name": "web[0001:1000]", "vars": {"http_port": 8000}}]
    plan = GOOD | {
        "targets": _targets(hosts=many),
        "waves": [{"name": "canary", "hosts": 1}, {"name": "rest", "hosts": "100%"}],
    }
    started = time.perf_counter()
    plan_file = load_plan(write(tmp_path, plan))
    seconds = time.perf_counter() - started  # told, not asserted: machines here are shared

    assert len(plan_file.plan.targets.hosts) == 1000
    assert [len(w.hosts) for w in plan_file.waves] == [1, 999]
    print(f"1,000 hosts validated in {seconds:.2f} s")


def _targets(**changes: Any) -> dict[str, Any]:
    targets = {k: v for k, v in GOOD["targets"].items() if k != "hosts"}
    return targets | changes
