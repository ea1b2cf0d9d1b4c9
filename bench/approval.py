"""Benchmark: how soon a paused go-live acts on a signed approval.

    .venv/bin/python bench/approval.py [--gates 20]

One go-live on local hosts with a gate after each of its one-host waves. For each gate it
measures the time from `golive approve` (decide_gate) returning to the flow recording the
decision, and prints the median and the worst (aim: median under 2 s). Prefect's default pause
poll of 10 s would make the median about 5 s; golive polls every second.
"""

from __future__ import annotations

import argparse
import contextvars
import io
import os
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")

import yaml  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from golive import journal  # noqa: E402
from golive.journal import Entry, RunJournal  # noqa: E402
from golive.registry import Approver, Rules, set_environment  # noqa: E402
from golive.signing import public_key_text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gates", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="golive-bench-") as work:
        os.environ["GOLIVE_HOME"] = str(Path(work) / "home")
        latencies = measure(Path(work), args.gates)
    print(f"{len(latencies)} gates: from `golive approve` returning to the flow going on")
    print(
        f"  median {statistics.median(latencies):.2f} s   worst {max(latencies):.2f} s   "
        "(aim: median under 2 s)"
    )


def measure(work: Path, gates: int) -> list[float]:
    from flows.golive import go_live
    from tasks.approvals import decide_gate

    key = Ed25519PrivateKey.generate()
    register(public_key_text(key.public_key()))
    plan = write_plan(work, gates)
    returned: dict[str, float] = {}
    decided: dict[str, float] = {}

    def approve(entry: Entry) -> None:
        run = RunJournal.find(entry["run_id"])
        decide_gate(run, "approve", "approver", "", key, gate=entry["gate"], wait_seconds=60)
        returned[entry["gate"]] = time.time()

    def on_entry(entry: Entry) -> None:
        if entry["kind"] == "gate.opened":
            context = contextvars.copy_context()
            threading.Thread(target=context.run, args=(approve, entry), daemon=True).start()
        elif entry["kind"] == "gate.decision":
            decided[entry["gate"]] = datetime.fromisoformat(entry["at"]).timestamp()

    unsubscribe = journal.subscribe(on_entry)
    try:
        go_live(str(plan), triggered_by="bench")
    finally:
        unsubscribe()
    return [decided[gate] - returned[gate] for gate in decided if gate in returned]


def register(approver_key: str) -> None:
    """Environment `bench`: signed gates, without a releaser's signed start."""
    admin = Ed25519PrivateKey.generate()
    rules = Rules(
        production=False,
        admins={"admin": public_key_text(admin.public_key())},
        approvers={"approver": Approver(public_key=approver_key)},
    )
    set_environment("bench", rules, admin)


def write_plan(work: Path, gates: int) -> Path:
    artifact = work / "app.tar.gz"
    with tarfile.open(artifact, "w:gz") as tar:
        info = tarfile.TarInfo("app.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    hosts = [f"h{i}" for i in range(1, gates + 1)]
    for host in hosts:
        (work / "hosts" / host).mkdir(parents=True)
    plan = {
        "release": {"name": "app", "version": "1.0.0", "artifact": str(artifact)},
        "environment": "bench",
        "targets": {
            "transport": "local",
            "path": str(work / "hosts"),
            "hosts": hosts,
            "restart": "true",
        },
        "waves": [{"name": h, "hosts": [h], "gate": f"gate-{i}"} for i, h in enumerate(hosts)],
        "gates": {f"gate-{i}": {"approvers": ["approver"]} for i in range(gates)},
    }
    path = work / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


if __name__ == "__main__":
    main()
