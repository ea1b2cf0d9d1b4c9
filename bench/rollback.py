"""Benchmark: how fast a failed release is undone, beside the forward rollout it undoes.

    .venv/bin/python bench/rollback.py [--hosts 20]

20 sshd hosts (the same set-up as bench/rollout.py) run 1.0.0. golive releases 2.0.0 to them
in 3 waves (the forward rollout, timed from the run's first entry to its last), then 3.0.0,
whose restart fails on the last host of the last wave. From the run store it reads the time
from that failure to the first host switched back, and to every host back on 2.0.0 (read
back from the host). Aims: the whole rollback at most 0.3x the forward rollout; the first
host back within 5 s of the failure. Three rounds; medians printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rollout import Bench, artifact

from golive.errors import GoLiveError
from golive.journal import run_store
from tests.sshd import require_sshd

# Fails where the release carries a FAIL file and the host is the last one.
RESTART = 'test ! -e current/lib/FAIL || test "$GOLIVE_HOST" != "{last}"'


def plan(bench: Bench, version: str, artifact_path: Path) -> Path:
    path = bench.plan(version, artifact_path)
    sections = yaml.safe_load(path.read_text())
    sections["targets"]["restart"] = RESTART.format(last=bench.names[-1])
    path.write_text(yaml.safe_dump(sections))
    return path


def broken_artifact(bench: Bench) -> Path:
    import io
    import tarfile

    path = artifact(bench.work, "3.0.0", based_on="2.0.0", changed=10)
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
        info = tarfile.TarInfo("lib/FAIL")
        tar.addfile(info, io.BytesIO(b""))
    return path


def seconds(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def round_(bench: Bench, broken: Path) -> tuple[float, float, float]:
    from flows.golive import go_live

    bench.reset()
    go_live(str(plan(bench, "2.0.0", bench.v2)))
    with contextlib.suppress(GoLiveError):  # it fails, and rolls back: what is timed
        go_live(str(plan(bench, "3.0.0", broken)))
    store = run_store()
    forward_run, failed_run = [r.run_id for r in reversed(store.run_rows()[:2])]
    forward = store.entries(forward_run)
    entries = store.entries(failed_run)
    failure = next(e for e in entries if e.kind == "step.failed" and '"deploy"' in e.body)
    first_back = next(e for e in entries if e.kind == "step.finished" and '"restore"' in e.body)
    done = next(e for e in entries if e.kind == "rollback.finished")
    assert '"complete":true' in done.body, done.body
    return (
        seconds(forward[0].at, forward[-1].at),
        seconds(failure.at, done.at),
        seconds(failure.at, first_back.at),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    args = parser.parse_args()
    require_sshd()
    with tempfile.TemporaryDirectory(prefix="golive-bench-") as work:
        os.environ["GOLIVE_HOME"] = str(Path(work) / "home")
        bench = Bench(Path(work), args.hosts)
        try:
            broken = broken_artifact(bench)
            rounds = [round_(bench, broken) for _ in range(3)]
        finally:
            bench.sshd.stop()
    forward, back, first = (statistics.median(column) for column in zip(*rounds, strict=True))
    sizes = " → ".join(str(len(w)) for w in bench.waves)
    print(f"{len(bench.names)} sshd hosts, waves of {sizes}; medians of 3 rounds")
    print(f"  forward rollout of 2.0.0            {forward:6.2f} s")
    print(f"  rollback of 3.0.0 after its failure {back:6.2f} s: {back / forward:.2f}x (aim: 0.3x)")
    print(f"  first host back after the failure   {first:6.2f} s (aim: within 5 s)")


if __name__ == "__main__":
    main()
