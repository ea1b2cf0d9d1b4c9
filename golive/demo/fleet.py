"""A demo fleet on this machine: local hosts running shop-web on loopback ports.

Used by `golive demo` and by the tests, so both exercise real HTTP services in real
directories. Version 3.0.0 needs a `payments_url` setting that only the canary host has
been given: it passes on the canary and fails on the rest, as config drift does.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import yaml

from golive.local import LocalShell
from golive.manifest import manifest_of
from golive.plan import Host
from golive.releases import HostReleases

APP_SOURCE = Path(__file__).parent / "app" / "app.py"
DEMO_PLAN = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
BROKEN_VERSION = "3.0.0"


def build_artifact(directory: Path, version: str) -> Path:
    """shop-web-<version>.tar.gz holding app.py and its release.json."""
    requires = ["payments_url"] if version == BROKEN_VERSION else []
    release = json.dumps({"version": version, "requires": requires}).encode()
    artifact = directory / f"shop-web-{version}.tar.gz"
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(artifact, "w:gz") as tar:
        tar.add(APP_SOURCE, arcname="app.py")
        info = tarfile.TarInfo("release.json")
        info.size = len(release)
        tar.addfile(info, io.BytesIO(release))
    return artifact


class DemoFleet:
    """Hosts under root/<folder> (hosts), artifacts under root/artifacts, plans written to
    root. A second fleet in the same root, in another folder, is a rehearsal environment."""

    def __init__(
        self, root: Path, ports: dict[str, int] | None = None, folder: str = "hosts"
    ) -> None:
        self.root, self.folder = root, folder
        self.template: dict[str, Any] = yaml.safe_load(DEMO_PLAN.read_text())
        if ports:
            self.template["targets"]["hosts"] = [
                {"name": name, "vars": {"http_port": port}} for name, port in ports.items()
            ]
            # The demo's rehearsal hosts are on the demo's ports: another fleet rehearses
            # only on hosts it is given (`rehearsal_on`).
            self.template.pop("rehearsal", None)
        self.hosts = [Host.model_validate(h) for h in self.template["targets"]["hosts"]]

    def host_dir(self, name: str) -> Path:
        return self.root / self.folder / name

    def rehearsal_fleet(self) -> DemoFleet:
        """The demo plan's rehearsal environment: hosts of its own, in a folder of their own."""
        section = self.template["rehearsal"]["targets"]
        ports = {h["name"]: h["vars"]["http_port"] for h in section["hosts"]}
        return DemoFleet(self.root, ports, folder=section["path"])

    def rehearsal_on(self, fleet: DemoFleet, environment: str = "demo-rehearsal") -> dict[str, Any]:
        """A plan's `rehearsal:` section for rehearsing on `fleet`'s hosts."""
        hosts = [{"name": h.name, "vars": h.vars} for h in fleet.hosts]
        targets = self.template["targets"] | {"path": fleet.folder, "hosts": hosts}
        return {"environment": environment, "targets": targets}

    def transport(self, host: Host) -> HostReleases:
        return HostReleases(host, LocalShell(host.name), str(self.host_dir(host.name)))

    def set_up(self, version: str = "1.0.0", configured: int = 1) -> None:
        """Fresh hosts, every one serving `version`; the first `configured` hosts have the
        payments setting that 3.0.0 needs."""
        self.stop()
        shutil.rmtree(self.root / self.folder, ignore_errors=True)
        for index, host in enumerate(self.hosts):
            settings = {"payments_url": "https://payments.internal"} if index < configured else {}
            (self.host_dir(host.name) / "shared").mkdir(parents=True)
            (self.host_dir(host.name) / "shared" / "settings.json").write_text(json.dumps(settings))
            self.install(host, version)

    def install(self, host: Host, version: str) -> None:
        transport = self.transport(host)
        transport.put_release(
            manifest_of(build_artifact(self.root / "artifacts", version)), version
        )
        transport.switch(version)
        transport.run(host.fill(self.template["targets"]["restart"]), timeout=30)

    def write_plan(self, version: str, **changes: Any) -> Path:
        """A plan releasing `version` to this fleet; `changes` replace top-level sections."""
        build_artifact(self.root / "artifacts", version)
        plan = self.template | changes
        plan["release"] = plan["release"] | {
            "version": version,
            "artifact": f"artifacts/shop-web-{version}.tar.gz",
        }
        path = self.root / f"plan-{version}.yaml"
        path.write_text(yaml.safe_dump(plan, sort_keys=False))
        return path

    def stop(self) -> None:
        for host in self.hosts:
            if (self.host_dir(host.name) / "current").exists():
                self.transport(host).run("python3 current/app.py stop", timeout=30)
