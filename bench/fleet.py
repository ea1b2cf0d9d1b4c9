"""Benchmark: golive's own cost per host on big fleets, beside the same host steps bare.

    .venv/bin/python bench/fleet.py [--hosts 200 1000] [--repeat 3]

Local hosts (directories; the local transport goes through the same release code as SSH,
without sshd, which would swamp this machine at 1,000 hosts), kept in memory (/dev/shm) where
it is there: real hosts are other machines, and a thousand hosts' files written to the disk
the run store commits to would make every commit wait for them (measured here: 27 s of a
1,000-host run). Each fleet starts empty and
receives the demo's shop-web 2.0.0 in two waves (10 hosts, then the rest); the restart is
`true`, and there is no smoke check, so what is left is golive's own work.

  bare      the host steps golive runs, through the same HostReleases, in a thread per host
            at once: check the deploy directory and pack a backup, fetch and verify it, stage
            the release, activate it (switch `current`, restart), confirm
  golive    `golive run PLAN` end to end, less its start-up (a 1-host run of the same plan)

Printed per size: both times, golive's overhead per host ((golive - bare) / hosts; aim: under
20 ms, and flat from 200 to 1,000 hosts), golive's peak memory, and how long `golive validate
PLAN` takes in a fresh process (aim: under 1 s). Medians of `--repeat`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from golive.demo.fleet import build_artifact  # noqa: E402
from golive.local import LocalShell  # noqa: E402
from golive.manifest import manifest_of  # noqa: E402
from golive.plan import Host  # noqa: E402
from golive.releases import HostReleases  # noqa: E402

GOLIVE = str(Path(sys.executable).parent / "golive")
VERSION = "2.0.0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    memory = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with (
        tempfile.TemporaryDirectory(prefix="golive-bench-") as folder,
        tempfile.TemporaryDirectory(prefix="golive-bench-hosts-", dir=memory) as hosts_folder,
    ):
        work = Path(folder)
        (work / "hosts").symlink_to(hosts_folder)
        os.environ["GOLIVE_HOME"] = str(work / "home")
        register()
        build_artifact(work / "artifacts", VERSION)
        golive(work, 1)  # the first run starts the local golive server that the others reuse
        startup = statistics.median(golive(work, 1)[0] for _ in range(args.repeat))
        print(f"golive run of 1 host (start-up, taken off below): {startup:.2f} s\n")
        for hosts in args.hosts:
            measure(work, hosts, args.repeat, startup)


def register() -> None:
    from tests.registry import register as register_environment

    register_environment("bench")


def measure(work: Path, hosts: int, repeat: int, startup: float) -> None:
    bare = statistics.median(bare_steps(work, hosts) for _ in range(repeat))
    runs = [golive(work, hosts) for _ in range(repeat)]
    ours = statistics.median(seconds for seconds, _ in runs) - startup
    memory = max(peak for _, peak in runs)
    per_host = (ours - bare) / hosts * 1000
    validate = statistics.median(validate_seconds(work, hosts) for _ in range(repeat))
    print(
        f"{hosts:>5} hosts: bare {bare:6.2f} s, golive {ours:6.2f} s ({ours / bare:.2f}x); "
        f"golive's overhead {per_host:.1f} ms per host (aim: under 20 ms); "
        f"peak memory {memory / 1024:.0f} MiB; validate {validate:.2f} s (aim: under 1 s)"
    )


def fresh_hosts(work: Path, hosts: int) -> list[str]:
    for old in (work / "hosts").iterdir():
        shutil.rmtree(old)
    names = [f"web{n:04d}" for n in range(1, hosts + 1)]
    for name in names:
        (work / "hosts" / name).mkdir()
    return names


def bare_steps(work: Path, hosts: int) -> float:
    names = fresh_hosts(work, hosts)
    manifest = manifest_of(work / "artifacts" / f"shop-web-{VERSION}.tar.gz")
    backups = work / "bare-backups"
    shutil.rmtree(backups, ignore_errors=True)
    backups.mkdir()

    def one(name: str) -> None:
        releases = HostReleases(Host(name=name), LocalShell(name), str(work / "hosts" / name))
        releases.check(10 * 2**20, backup=["current"])
        releases.fetch_backup(backups / name)
        transfer = releases.stage(manifest, VERSION)
        releases.activate(
            transfer, manifest, VERSION, switch=True, keep=3, protect=(None,), restart="true"
        )
        releases.confirm_release(VERSION, "switch")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=hosts) as pool:
        list(pool.map(one, names))
    return time.perf_counter() - started


def golive(work: Path, hosts: int) -> tuple[float, int]:
    """`golive run` of a plan of this many hosts: its seconds and its peak memory (KiB)."""
    fresh_hosts(work, hosts)
    started = time.perf_counter()
    done = subprocess.run(
        [GOLIVE, "run", str(plan_file(work, hosts))], capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"golive run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def validate_seconds(work: Path, hosts: int) -> float:
    """`golive validate PLAN` in a process of its own, as a user types it."""
    started = time.perf_counter()
    done = subprocess.run([GOLIVE, "validate", str(plan_file(work, hosts))], capture_output=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"golive validate failed:\n{done.stdout[-3000:]!r}{done.stderr[-3000:]!r}")
    return seconds


def plan_file(work: Path, hosts: int) -> Path:
    plan = work / f"plan-{hosts}.yaml"
    plan.write_text(yaml.safe_dump(plan_of(hosts), sort_keys=False))
    return plan


def plan_of(hosts: int) -> dict[str, object]:
    canary = min(10, hosts)
    waves: list[dict[str, object]] = [{"name": "canary", "hosts": canary}]
    if hosts > canary:
        waves.append({"name": "rest", "hosts": "100%"})
    return {
        "release": {
            "name": "shop-web",
            "version": VERSION,
            "artifact": f"artifacts/shop-web-{VERSION}.tar.gz",
            "owner": "bench",
        },
        "environment": "bench",
        "targets": {
            "transport": "local",
            "path": "hosts",
            "hosts": [f"web[0001:{hosts:04d}]"],
            "restart": "true",
            "keep_releases": 3,
        },
        "waves": waves,
    }


if __name__ == "__main__":
    main()
