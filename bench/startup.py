"""Benchmark: how long `golive run` takes to start, beside Prefect's own floor.

    .venv/bin/python bench/startup.py [--repeat 3]

On the embedded default (no PREFECT_API_URL), for a 1-host local plan:

  floor          a process that imports prefect and runs one bare @flow against the same
                 local server: what any Prefect program pays before its first step
  golive, warm   `golive run PLAN` with the local golive server up (every run but the first):
                 seconds from the command to the run's first step (its first step.started in
                 the run store; aim: under 2 s), and to its end
  golive, cold   the same with no server up: the first run starts the local server

and `golive validate PLAN` in a fresh process (aim: under 0.5 s), beside its own floor: a bare
`python -c` importing the libraries validate stands on (click, rich, pydantic, PyYAML,
SQLAlchemy for the environment registry in the run store, cryptography).

Medians of `--repeat`, and golive's ratio to the floor.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fleet import VERSION, fresh_hosts, plan_file, register  # noqa: E402
from golive.demo.fleet import build_artifact  # noqa: E402

BIN = Path(sys.executable).parent
BARE_FLOW = "from prefect import flow\n@flow\ndef bare() -> None:\n    pass\nbare()\n"
LIBRARIES = "import click, rich.console, rich.table, pydantic, yaml, sqlalchemy, cryptography"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="golive-bench-") as folder:
        work = Path(folder)
        (work / "hosts").mkdir()
        os.environ |= {"GOLIVE_HOME": str(work / "home"), "PREFECT_HOME": str(work / "prefect")}
        os.environ.pop("PREFECT_API_URL", None)
        register()
        build_artifact(work / "artifacts", VERSION)
        try:
            cold = [golive_run(work, stop_first=True) for _ in range(args.repeat)]
            warm = [golive_run(work) for _ in range(args.repeat)]
            floor = [bare_flow() for _ in range(args.repeat)]
            validate = [
                seconds([BIN / "golive", "validate", plan_file(work, 1)])
                for _ in range(args.repeat)
            ]
            imports = [seconds([sys.executable, "-c", LIBRARIES]) for _ in range(args.repeat)]
        finally:
            subprocess.run([BIN / "golive", "server", "stop"], capture_output=True)
        report(cold, warm, statistics.median(floor))
        validating, importing = statistics.median(validate), statistics.median(imports)
        print(
            f"golive validate, fresh process: {validating:5.2f} s ({validating / importing:.2f}x "
            f"its libraries' imports alone, {importing:.2f} s)  (aim: under 0.5 s)"
        )


def report(cold: list[tuple[float, float]], warm: list[tuple[float, float]], floor: float) -> None:
    def median(runs: list[tuple[float, float]], which: int) -> float:
        return statistics.median(run[which] for run in runs)

    print(f"floor: import prefect, one bare flow run    {floor:6.2f} s")
    for name, runs in (("warm", warm), ("cold", cold)):
        first, end = median(runs, 0), median(runs, 1)
        print(
            f"golive run, {name}: first step after {first:5.2f} s ({first / floor:.2f}x the "
            f"floor), done after {end:5.2f} s ({end / floor:.2f}x)"
            + ("  (aim: first step under 2 s)" * (name == "warm"))
        )


def golive_run(work: Path, stop_first: bool = False) -> tuple[float, float]:
    """Seconds from `golive run` to its first step, and to its end."""
    if stop_first:
        subprocess.run([BIN / "golive", "server", "stop"], capture_output=True, check=True)
    fresh_hosts(work, 1)
    plan = plan_file(work, 1)
    started_at, started = time.time(), time.perf_counter()
    done = subprocess.run([BIN / "golive", "run", str(plan)], capture_output=True, text=True)
    end = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"golive run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return first_step_at() - started_at, end


def seconds(command: list[str | Path]) -> float:
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return time.perf_counter() - started


def first_step_at() -> float:
    """When the newest run's first step started, as the run store has it."""
    from golive.store import forget_stores, open_store

    forget_stores()
    store = open_store()
    newest = store.run_rows()[0]
    first = next(e for e in store.entries(newest.run_id) if e.kind == "step.started")
    return datetime.fromisoformat(first.at).timestamp()


def bare_flow() -> float:
    """One bare flow run, in a process of its own, against the local server golive uses."""
    from golive.localserver import on_this_machine
    from golive.store import open_store

    [server] = [each for each in on_this_machine(open_store()) if each.mine()]
    environment = os.environ | {"PREFECT_API_URL": server.url}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", BARE_FLOW], env=environment, check=True)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
