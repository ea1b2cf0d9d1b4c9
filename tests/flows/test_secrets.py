"""No secret reaches the run store, reports, artifacts, exports or logs: known secrets are
planted in every secret field a go-live uses, and every output is searched for them, raw and
base64-encoded, including the store's database and Prefect's."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_API_URL

from blocks.postgres import PostgresDatabase
from blocks.ssh import SshHost
from blocks.store import RunStoreBlock
from blocks.webhook import Webhook
from flows.golive import go_live
from golive.demo.fleet import DemoFleet
from golive.postgres import Database
from golive.store import forget_stores
from tests.conftest import PG_PASSWORD
from tests.flows.test_data import data_plan
from tests.pg import admin_connection, empty_database
from tests.registry import register
from tests.runstore import go_live_in_background, sql, wait_for_gate
from tests.sshd import SshdFleet

GOLIVE = str(Path(sys.executable).parent / "golive")
WEBHOOK_TOKEN = "planted-webhook-token-71c2"
KEY_PASSPHRASE = "planted-key-passphrase-9d0e"
STORE_PASSWORD = "planted-store-password-5b1a"


class Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook/{WEBHOOK_TOKEN}"
    server.shutdown()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_with_a_password(
    request: pytest.FixtureRequest,
    pg_password_server: tuple[str, int, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """The run store named by a golive-run-store block: on PostgreSQL its URL holds the
    password of a role made for it; on SQLite it is a file under GOLIVE_HOME."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    host, port, _ = pg_password_server
    with admin_connection(pg_password_server, PG_PASSWORD) as admin:
        admin.execute(f"CREATE ROLE keeper LOGIN PASSWORD '{STORE_PASSWORD}'")
    try:
        with empty_database(pg_password_server, PG_PASSWORD) as admin_url:
            monkeypatch.setenv("GOLIVE_STORE_URL", admin_url)
            sql("GRANT ALL ON SCHEMA public TO keeper")
            monkeypatch.delenv("GOLIVE_STORE_URL")
            database = admin_url.rsplit("/", 1)[1]
            keeper = f"postgresql://keeper:{STORE_PASSWORD}@{host}:{port}/{database}"
            RunStoreBlock(url=keeper).save("team-store", overwrite=True)
            monkeypatch.setenv("GOLIVE_STORE_BLOCK", "team-store")
            yield keeper
            forget_stores()
    finally:
        with admin_connection(pg_password_server, PG_PASSWORD) as admin:
            admin.execute("DROP ROLE IF EXISTS keeper")


def test_planted_secrets_reach_no_output(
    store_with_a_password: str,
    make_fleet: Callable[..., DemoFleet],
    guarded_db: Database,
    webhook: str,
    tmp_path: Path,
    golive_home: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet = make_fleet(hosts=2)
    keygen = golive("keygen", "bob", "--out", str(tmp_path / "bob.key"), "--passphrase-env", "PW")
    public_key = keygen.stdout.split('public_key: "')[1].split('"')[0]
    dsn = (
        f"postgresql://{guarded_db.user}:{PG_PASSWORD}@{guarded_db.host}:{guarded_db.port}/"
        f"{guarded_db.dbname}?application_name=golive"
    )
    register("demo", approvers={"bob": {"public_key": public_key}})
    PostgresDatabase(dsn=dsn).save("shop-dsn", overwrite=True)
    Webhook(url=webhook, attempts=1).save("ops", overwrite=True)
    plan = Path(data_plan(fleet, guarded_db, tmp_path, "2.0.0"))
    sections = yaml.safe_load(plan.read_text()) | {
        "databases": {"shop": {"block": "shop-dsn"}},
        "gates": {"data-approval": {"approvers": ["bob"], "timeout": "2m"}},
        "waves": [
            {"name": "canary", "hosts": 1, "gate": "data-approval"},
            {"name": "rest", "hosts": "100%"},
        ],
        "notify": [{"webhook": "ops"}],
        "audit": {"head_file": str(tmp_path / "heads.log"), "head_webhook": "ops"},
    }
    plan.write_text(yaml.safe_dump(sections))

    thread, finished = go_live_in_background(plan)
    run_id = wait_for_gate()
    approved = golive(
        "approve", run_id, "--as", "bob", "--key", str(tmp_path / "bob.key"),
        "--passphrase-env", "PW", "--comment", "looks right",
    )  # fmt: skip
    thread.join(timeout=180)
    assert approved.returncode == 0, approved.stderr
    assert finished.get("state") == "completed"

    exports = [golive("audit", "export", "--format", f).stdout for f in ("jsonl", "csv", "html")]
    shown = golive("audit", "show", run_id).stdout + golive("status", run_id).stdout
    outputs = {
        "exports": "".join(exports).encode(),
        "commands": (shown + approved.stdout + approved.stderr + keygen.stdout).encode(),
        "logs": (caplog.text + "".join(capfd.readouterr())).encode(),
        "store": store_contents(store_with_a_password, golive_home),
        "prefect database": prefect_database(),
        "run files": b"".join(p.read_bytes() for p in golive_home.rglob("*") if p.is_file()),
        "plan folder": b"".join(
            p.read_bytes() for p in fleet.root.glob("*") if p.is_file() and p.suffix != ".key"
        ),
        "head file": (tmp_path / "heads.log").read_bytes(),
    }
    assert len(outputs["store"]) > 1000 and run_id.encode() in outputs["store"]
    assert all(run_id in export for export in exports) and "looks right" in exports[2]
    planted = [PG_PASSWORD, WEBHOOK_TOKEN, KEY_PASSPHRASE, STORE_PASSWORD]
    for where, data in outputs.items():
        for secret in planted:
            for form in encodings(secret):
                assert form not in data, f"{secret} found in {where} as {form!r}"


def golive(*args: str) -> subprocess.CompletedProcess[str]:
    environment = os.environ | {"PW": KEY_PASSPHRASE, "COLUMNS": "200"}
    environment["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    return subprocess.run(
        [GOLIVE, *args], capture_output=True, text=True, env=environment, timeout=300
    )


def encodings(secret: str) -> list[bytes]:
    """The secret, and the stable middle of its base64 at each of the three alignments."""
    raw = secret.encode()
    forms = [raw]
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw)
        forms.append(encoded[4:-4])
    return forms


def store_contents(store: str, home: Path) -> bytes:
    if store == "sqlite":
        return b"".join(p.read_bytes() for p in home.glob("store.db*"))
    tables = ("golive_entries", "golive_heads", "golive_runs")
    return "\n".join(str(row) for table in tables for row in sql(f"SELECT * FROM {table}")).encode()


def prefect_database() -> bytes:
    url = str(PREFECT_API_DATABASE_CONNECTION_URL.value())
    path = Path(url.split(":///", 1)[1])
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


SSH_PASSPHRASE = "planted-ssh-passphrase-3e7f"


def test_an_ssh_hosts_key_and_passphrase_from_its_block_reach_no_output(
    make_ssh_fleet: Callable[..., tuple[DemoFleet, dict[str, Any]]],
    sshd_fleet: SshdFleet,
    golive_home: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet, targets = make_ssh_fleet(hosts=1)
    sshd = sshd_fleet.hosts["web1"]
    key = serialization.load_ssh_private_key(sshd_fleet.client_key.read_bytes(), None)
    private_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(SSH_PASSPHRASE.encode()),
    ).decode()
    SshHost(
        address="127.0.0.1",
        port=sshd.port,
        user=targets["hosts"][0]["user"],
        private_key=private_key,
        passphrase=SSH_PASSPHRASE,
        known_hosts=f"[127.0.0.1]:{sshd.port} {sshd.host_key}",
    ).save("web1", overwrite=True)
    port = str(fleet.hosts[0].vars["http_port"])
    targets = targets | {
        "hosts": ["web1"],
        "path": str(fleet.host_dir("web1")),
        "restart": targets["restart"].replace("{http_port}", port),
    }
    smoke = [fleet.template["smoke"][0] | {"url": f"http://127.0.0.1:{port}/health"}]
    plan = fleet.write_plan(
        "2.0.0",
        targets=targets,
        gates={},
        soak=None,
        smoke=smoke,
        waves=[{"name": "all", "hosts": 1}],
    )

    record = go_live(str(plan))

    assert record["state"] == "completed"
    exports = "".join(golive("audit", "export", "--format", f).stdout for f in ("jsonl", "html"))
    outputs = {
        "exports": exports.encode(),
        "logs": (caplog.text + "".join(capfd.readouterr())).encode(),
        "store and run files": b"".join(
            p.read_bytes() for p in golive_home.rglob("*") if p.is_file()
        ),
        "prefect database": prefect_database(),
    }
    key_body = private_key.splitlines()[2]  # a line of the key's base64 text
    for where, data in outputs.items():
        for secret in (SSH_PASSPHRASE, key_body):
            for form in encodings(secret):
                assert form not in data, f"{secret[:12]}… found in {where} as {form!r}"
