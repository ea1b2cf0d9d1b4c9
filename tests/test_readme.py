"""The README's example plan is a plan golive accepts, in the environment its example rules
register."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from golive.demo.fleet import build_artifact
from golive.planfile import load_plan
from tests.registry import register

README = Path(__file__).parents[1] / "README.md"


def example(starting: str) -> str:
    [block] = [
        block
        for block in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
        if block.startswith(starting)
    ]
    return str(block)


def test_the_example_plan_in_the_readme_validates(tmp_path: Path) -> None:
    rules = yaml.safe_load(example("# live.yaml"))
    del rules["admins"]  # carol's private key is hers: the test's admin registers them
    register("live", **rules)
    plan = example("release:")
    (tmp_path / "plan.yaml").write_text(plan)
    build_artifact(tmp_path / "dist", "2.0.0")  # a plan's files must be there to validate
    plan_file = load_plan(tmp_path / "plan.yaml")
    assert [w.hosts for w in plan_file.waves] == [("web1",), ("web2",), ("web3", "web4")]
