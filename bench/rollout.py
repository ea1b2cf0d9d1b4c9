"""Benchmark: one release to a fleet in 3 waves, golive beside its baselines.

    make bench          (or: .venv/bin/python bench/rollout.py [--hosts 20] [--local])

Every tool starts from the same state (each host running 1.0.0) and does the same steps per
host: check the disk, back up the current release, send the new one, unpack it into
releases/<version>, switch `current` atomically, restart, prune old releases. The waves are
1 host, then up to 60% of the fleet, then the rest.

  ideal          per wave, the slowest single host deployed alone; summed over the waves
  plain fabric   the same steps in a thread per host, no Prefect, full copies; the backup
                 packed by tar's gzip, as scripts usually do
  fabric + zstd  the same script with its backups packed by `zstd -1`, as golive packs them
                 where host and controller have zstd: golive's own cost, with the packing alike
  ansible        ansible-playbook with `serial` set to the same waves, pipelining on
  golive         the go-live flow with a real Prefect API

Hosts are sshd daemons on loopback, or with `--local` directories in memory (/dev/shm) that
every tool reaches without SSH: fabric's local runner (invoke) and file copies, ansible's
local connection, golive's local transport (the same release code as SSH). 200 sshd hosts
would swamp this 2-core machine with their own key exchanges and sessions, so 200 hosts are
measured with `--local`.

It then prints the bytes golive sends for a release in which 5% of the files changed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.sshd, the sshd launcher the tests use

os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
# Prefect's temporary server: 90 s to start, as `golive run` gives it (20 s is too few when busy).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

import yaml  # noqa: E402
from fabric import Connection  # noqa: E402
from invoke import Context  # noqa: E402

from golive.local import LocalShell  # noqa: E402
from golive.manifest import manifest_of  # noqa: E402
from golive.plan import Host  # noqa: E402
from golive.releases import HostReleases  # noqa: E402
from tests.sshd import SshdFleet, require_sshd  # noqa: E402

FILES, FILE_BYTES = 200, 20_000  # a 4 MB artifact that does not compress
RESTART = "echo restarted"
PACK = {  # the script's backup step, by how it packs
    "gzip": "tar czhf .backup current",
    "zstd": "tar chf - current | zstd -1 -q > .backup",
}


def artifact(directory: Path, version: str, based_on: str = "", changed: int = FILES) -> Path:
    """FILES files that do not compress; the first `changed` are new in `version`, the rest
    are as in `based_on`."""
    path = directory / f"app-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for i in range(FILES):
            prefix = version if i < changed else based_on
            data = prefix.encode() + random.Random(i).randbytes(FILE_BYTES)
            info = tarfile.TarInfo(f"lib/{i}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


PLAYBOOK = """\
- hosts: web
  gather_facts: false
  serial: {serial}
  tasks:
    - command: df -Pk {{{{ deploy_dir }}}}
    - shell: cd {{{{ deploy_dir }}}} && tar czhf .backup.tar.gz current
    - fetch:
        src: "{{{{ deploy_dir }}}}/.backup.tar.gz"
        dest: "{work}/ansible-backup-{{{{ inventory_hostname }}}}.tgz"
        flat: true
    - file: {{path: "{{{{ deploy_dir }}}}/releases/.2.0.0.partial", state: directory}}
    - unarchive: {{src: "{artifact}", dest: "{{{{ deploy_dir }}}}/releases/.2.0.0.partial"}}
    - shell: >-
        cd {{{{ deploy_dir }}}}/releases && mv .2.0.0.partial 2.0.0 &&
        cd {{{{ deploy_dir }}}} && ln -sfn releases/2.0.0 .current.tmp &&
        mv -T .current.tmp current && rm -f .backup.tar.gz && {restart}
    - shell: cd {{{{ deploy_dir }}}}/releases && ls -1t | tail -n +6 | xargs -r rm -rf
"""


class Bench:
    def __init__(self, work: Path, hosts: int, local: bool = False) -> None:
        self.work = work
        self.local = local
        self.last_run = ""  # golive's latest run id, to read where its time went
        self.names = [f"web{i}" for i in range(1, hosts + 1)]
        self.sshd = None if local else SshdFleet(work / "ssh")
        if self.sshd:
            for name in self.names:
                self.sshd.start(name)
        if local:  # in memory, as other machines' disks would be (see bench/fleet.py)
            memory = "/dev/shm" if Path("/dev/shm").is_dir() else None
            (work / "hosts").symlink_to(tempfile.mkdtemp(prefix="golive-hosts-", dir=memory))
        self.v1 = artifact(work, "1.0.0")
        self.v2 = artifact(work, "2.0.0")
        canary, half = 1, max(2, round(0.6 * hosts))
        self.waves = [self.names[:canary], self.names[canary:half], self.names[half:]]

    def stop(self) -> None:
        if self.sshd:
            self.sshd.stop()
        else:
            shutil.rmtree((self.work / "hosts").resolve(), ignore_errors=True)

    def host_dir(self, name: str) -> Path:
        return self.work / "hosts" / name

    def reset(self) -> None:
        """Every host back to a fresh directory running 1.0.0."""
        for name in self.names:
            shutil.rmtree(self.host_dir(name), ignore_errors=True)
            self.host_dir(name).mkdir(parents=True)
            releases = HostReleases(Host(name=name), LocalShell(name), str(self.host_dir(name)))
            releases.put_release(manifest_of(self.v1), "1.0.0")
            releases.switch("1.0.0")

    def connect(self, name: str) -> Connection:
        assert self.sshd is not None
        sshd = self.sshd.hosts[name]
        return Connection(
            "127.0.0.1",
            port=sshd.port,
            connect_kwargs={
                "key_filename": str(self.sshd.client_key),
                "look_for_keys": False,
                "allow_agent": False,
            },
        )

    # --- plain fabric: the same steps, a thread per host, no Prefect ---

    def fabric_host(self, name: str, pack: str = "gzip") -> float:
        if self.local:  # fabric's local runner (invoke), files copied
            local = Context()
            return self.fabric_steps(
                name,
                pack,
                lambda command: local.run(command, hide=True),
                shutil.copyfile,
                shutil.copyfile,
            )
        with self.connect(name) as c:
            return self.fabric_steps(
                name,
                pack,
                lambda command: c.run(command, hide=True),
                lambda remote, here: c.get(remote, str(here)),
                lambda here, remote: c.put(str(here), remote),
            )

    def fabric_steps(
        self,
        name: str,
        pack: str,
        run: Callable[[str], object],
        get: Callable[[str, Path], object],
        put: Callable[[Path, str], object],
    ) -> float:
        """The script's steps on one host, through `run`, `get` and `put`; its seconds."""
        started = time.perf_counter()
        d = self.host_dir(name)
        run(f"df -Pk {d} > /dev/null")
        run(f"cd {d} && {PACK[pack]}")
        get(f"{d}/.backup", self.work / f"backup-{name}")
        put(self.v2, f"{d}/releases/.2.0.0.tar.gz")
        run(
            f"cd {d}/releases && rm -rf .2.0.0.partial && mkdir .2.0.0.partial && "
            f"tar xzf .2.0.0.tar.gz -C .2.0.0.partial && mv .2.0.0.partial 2.0.0 && "
            f"rm .2.0.0.tar.gz && cd {d} && ln -sfn releases/2.0.0 .current.tmp && "
            f"mv -T .current.tmp current && rm -f .backup && {RESTART}"
        )
        run(f"cd {d}/releases && ls -1t | tail -n +6 | xargs -r rm -rf")
        return time.perf_counter() - started

    def fabric(self, pack: str = "gzip") -> float:
        started = time.perf_counter()
        for wave in self.waves:
            with ThreadPoolExecutor(len(wave)) as pool:
                list(pool.map(partial(self.fabric_host, pack=pack), wave))
        return time.perf_counter() - started

    def ideal(self) -> float:
        """Per wave, the slowest host deployed on its own; summed."""
        alone = {name: self.fabric_host(name) for name in self.names}
        return sum(max(alone[name] for name in wave) for wave in self.waves)

    # --- ansible-playbook with serial batches ---

    def ansible(self) -> float:
        inventory = self.work / "inventory.ini"
        lines = ["[web]"] + [f"{name} {self.ansible_reach(name)}" for name in self.names]
        inventory.write_text("\n".join(lines) + "\n")
        playbook = self.work / "deploy.yml"
        playbook.write_text(
            PLAYBOOK.format(
                serial=[len(w) for w in self.waves],
                work=self.work,
                artifact=self.v2,
                restart=RESTART,
            )
        )
        env = os.environ | {
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_FORKS": str(len(self.names)),
            "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
            "ANSIBLE_LOCAL_TEMP": str(self.work),
        }
        if self.sshd:
            env |= {
                "ANSIBLE_HOST_KEY_CHECKING": "True",
                "ANSIBLE_PRIVATE_KEY_FILE": str(self.sshd.client_key),
                "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={self.sshd.known_hosts} "
                "-o ControlMaster=auto -o ControlPersist=60s",
            }
        playbook_bin = Path(sys.executable).parent / "ansible-playbook"
        started = time.perf_counter()
        subprocess.run(
            [str(playbook_bin), "-i", str(inventory), str(playbook)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started

    def ansible_reach(self, name: str) -> str:
        """How ansible reaches the host, and where its deploy directory is."""
        where = f"deploy_dir={self.host_dir(name)}"
        if self.sshd is None:
            return f"ansible_connection=local {where}"
        return f"ansible_host=127.0.0.1 ansible_port={self.sshd.hosts[name].port} {where}"

    # --- golive ---

    def register(self) -> None:
        """Environment `bench` in the registry (golive runs only in registered ones)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from golive.registry import Rules, environment, set_environment
        from golive.signing import public_key_text
        from golive.store import open_store

        if not environment("bench", open_store(create=True)).registered:
            admin = Ed25519PrivateKey.generate()
            public = public_key_text(admin.public_key())
            set_environment("bench", Rules(production=False, admins={"admin": public}), admin)

    def plan(self, version: str, artifact_path: Path) -> Path:
        self.register()
        if self.sshd is None:
            targets: dict[str, object] = {"transport": "local", "path": str(self.work / "hosts")}
            hosts: list[object] = list(self.names)
        else:
            targets = {"transport": "ssh", "path": "/unused"}
            hosts = [self.sshd.inline_host(n, path=str(self.host_dir(n))) for n in self.names]
        waves = [
            {"name": "canary", "hosts": 1},
            {"name": "half", "hosts": len(self.waves[1])},
            {"name": "rest", "hosts": "100%"},
        ]
        plan = {
            "release": {"name": "app", "version": version, "artifact": str(artifact_path)},
            "environment": "bench",
            "waves": waves,
            "targets": targets | {"hosts": hosts, "restart": RESTART},
        }
        path = self.work / f"plan-{version}.yaml"
        path.write_text(yaml.safe_dump(plan))
        return path

    def golive(self) -> float:
        from flows.golive import go_live

        started = time.perf_counter()
        record = go_live(str(self.plan("2.0.0", self.v2)))
        self.last_run = record["run_id"]
        return time.perf_counter() - started

    def incremental_fraction(self) -> tuple[int, int]:
        from flows.golive import go_live

        v21 = artifact(self.work, "2.1.0", based_on="2.0.0", changed=FILES // 20)  # 5%
        record = go_live(str(self.plan("2.1.0", v21)))
        deploy = next(s for s in record["steps"] if s["stage"] == "deploy")
        transfer = deploy["result"]["transfer"]
        return transfer["bytes_sent"], transfer["artifact_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--local", action="store_true", help="hosts are local directories")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians shown")
    parser.add_argument(
        "--without", nargs="*", default=[], choices=["ansible-playbook"], help="tools left out"
    )
    args = parser.parse_args()
    playbook = Path(sys.executable).parent / "ansible-playbook"
    if "ansible-playbook" not in args.without and not playbook.exists():
        sys.exit(
            f"{playbook} is not installed: `.venv/bin/pip install -r bench/requirements.txt`, "
            "or leave it out with --without ansible-playbook"
        )
    if not args.local:
        require_sshd()
    with tempfile.TemporaryDirectory(prefix="golive-bench-") as work:
        os.environ["GOLIVE_HOME"] = str(Path(work) / "home")
        bench = Bench(Path(work), args.hosts, local=args.local)
        try:
            run(bench, args.repeat, args.without)
        finally:
            bench.stop()


def run(bench: Bench, repeat: int, without: list[str]) -> None:
    sizes = " → ".join(str(len(w)) for w in bench.waves)
    kind = "local" if bench.local else "sshd"
    print(
        f"{len(bench.names)} {kind} hosts, waves of {sizes}, artifact "
        f"{bench.v2.stat().st_size / 2**20:.1f} MiB ({FILES} files); median of {repeat}\n"
    )
    bench.reset()
    bench.golive()  # warm-up: starts the local golive server, imports everything
    bench.reset()
    timings = {"ideal": bench.ideal()}
    tools = {
        "plain fabric": bench.fabric,
        "fabric + zstd": partial(bench.fabric, pack="zstd"),
        "ansible-playbook": bench.ansible,
        "golive": bench.golive,
    }
    tools = {name: measure for name, measure in tools.items() if name not in without}
    runs: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(repeat):  # taken in turns, so that the machine's moods fall on each
        for name, measure in tools.items():
            bench.reset()
            runs[name].append(measure())
    timings |= {name: statistics.median(seconds) for name, seconds in runs.items()}
    for name, seconds in timings.items():
        per_host = seconds / len(bench.names) * 1000
        print(f"  {name:<18} {seconds:7.2f} s   {per_host:6.1f} ms a host")
    g = timings["golive"]
    print(f"\n  golive / ideal            {g / timings['ideal']:.2f}x   (aim: <= 1.3x)")
    print(f"  golive / plain fabric     {g / timings['plain fabric']:.2f}x   (aim: <= 1.1x)")
    print(f"  golive / fabric + zstd    {g / timings['fabric + zstd']:.2f}x   (shown)")
    if "ansible-playbook" in timings:
        print(f"  golive / ansible-playbook {g / timings['ansible-playbook']:.2f}x   (aim: < 1x)")
    print(where_time_goes(bench.last_run, runs["golive"][-1]))
    sent, full = bench.incremental_fraction()
    print(
        f"\nIncremental release, 5% of files changed: {sent} of {full} bytes sent "
        f"per host ({sent / full:.1%} of a full copy; aim: < 10%)"
    )
    print(json.dumps({"seconds": runs | {"ideal": [timings["ideal"]]}, "incremental": sent / full}))


def where_time_goes(run_id: str, seconds: float) -> str:
    """golive's run split, from its entries in the run store: the stages before the waves
    (preflight and the hosts' backups, which fabric's script does inside each host's thread),
    each wave beside its slowest host's deploy and smoke steps (what a tool without overhead
    would wait for), the gaps between waves, the close of the run, and the rest: Prefect's
    flow run start and end around the entries."""
    from golive.journal import RunJournal

    entries = RunJournal.find(run_id).entries()
    waves, hosts = _wave_seconds(entries)
    marks = {kind: [at(e) for e in entries if e["kind"] == kind] for kind in _MARKS}
    before = marks["wave.started"][0] - marks["run.started"][0]
    gaps = sum(
        b - a for a, b in zip(marks["wave.finished"], marks["wave.started"][1:], strict=False)
    )
    closing = marks["run.finished"][-1] - marks["wave.finished"][-1]
    inside = marks["run.finished"][-1] - marks["run.started"][0]
    lines = [
        f"\n  where golive's {seconds:.2f} s went (from its run store entries):",
        f"    preflight and backups, every host, before the waves  {before:6.2f} s",
    ]
    for wave, wall in waves.items():
        lines.append(
            f"    wave {wave:<8} {wall:6.2f} s; its slowest host's steps {hosts[wave]:6.2f} s"
        )
    lines += [
        f"    between waves                                        {gaps:6.2f} s",
        f"    closing the run (record, report, artifacts)          {closing:6.2f} s",
        f"    Prefect's flow run start and end, outside the entries {seconds - inside:6.2f} s",
    ]
    return "\n".join(lines)


_MARKS = ("run.started", "wave.started", "wave.finished", "run.finished")


def at(entry: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(entry["at"]).timestamp()


def _wave_seconds(entries: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Each wave's wall time, and its slowest host's deploy plus smoke-check time."""
    waves: dict[str, float] = {}
    hosts: dict[str, dict[str, float]] = {}
    started: dict[tuple[str, str], float] = {}
    wave, wave_start = "", 0.0
    for entry in entries:
        kind = entry["kind"]
        if kind == "wave.started":
            wave, wave_start = entry["wave"], at(entry)
            hosts[wave] = {}
        elif kind == "wave.finished":
            waves[wave] = at(entry) - wave_start
        elif kind == "step.started" and entry.get("host") and wave in hosts:
            started[(entry["stage"], entry["host"])] = at(entry)
        elif kind == "step.finished" and (entry["stage"], entry.get("host")) in started:
            took = at(entry) - started.pop((entry["stage"], entry["host"]))
            hosts[wave][entry["host"]] = hosts[wave].get(entry["host"], 0.0) + took
    return waves, {name: max(per_host.values(), default=0.0) for name, per_host in hosts.items()}


if __name__ == "__main__":
    main()
