"""prefect.yaml names flows that exist, with parameters they take."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).parents[1]


def test_every_deployment_loads_its_flow_and_passes_only_parameters_it_takes() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert {d["name"] for d in config["deployments"]} == {"go-live", "rollback"}
    for deployment in config["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(deployment["parameters"]) <= accepted, deployment["name"]
