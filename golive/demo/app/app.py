"""shop-web: the demo service that `golive demo` releases. Standard library only.

Each release ships this file and a release.json. Run from a host's deploy directory:

    python3 current/app.py restart --port 18081   # stop the running copy, start this release
    python3 current/app.py stop
    python3 current/app.py serve --port 18081     # what `restart` starts in the background

GET /health answers 200 {"status": "ok"} when every setting the release requires is present in
shared/settings.json, and 500 naming what is missing otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RELEASE_DIR = Path(__file__).resolve().parent
DEPLOY_DIR = RELEASE_DIR.parent.parent
SHARED = DEPLOY_DIR / "shared"  # data kept across releases, and backed up
RUNTIME = DEPLOY_DIR / "run"  # process state: never backed up, never restored
PIDFILE = RUNTIME / "app.pid"
RELEASE = json.loads((RELEASE_DIR / "release.json").read_text())


def health() -> tuple[int, dict[str, object]]:
    settings_file = SHARED / "settings.json"
    settings = json.loads(settings_file.read_text()) if settings_file.exists() else {}
    missing = [name for name in RELEASE.get("requires", []) if name not in settings]
    if missing:
        return 500, {
            "status": "error",
            "version": RELEASE["version"],
            "error": f"setting(s) missing from shared/settings.json: {', '.join(missing)}",
        }
    return 200, {"status": "ok", "version": RELEASE["version"]}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = health() if self.path == "/health" else (200, {"app": "shop-web", **RELEASE})
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with server:
        server.serve_forever()


def running_pid() -> int | None:
    try:
        pid = int(PIDFILE.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"app.py" in cmdline and b"serve" in cmdline else None


def stop() -> None:
    pid = running_pid()
    if pid is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        os.kill(pid, sig)
        for _ in range(100):
            if _gone(pid):
                PIDFILE.unlink(missing_ok=True)
                return
            time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def restart(port: int) -> None:
    stop()
    if port_in_use(port):
        sys.exit(
            f"port {port} on 127.0.0.1 is in use by another program, not shop-web; "
            "stop it or give this host another http_port in the plan"
        )
    RUNTIME.mkdir(exist_ok=True)
    with (RUNTIME / "app.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(RELEASE_DIR / "app.py"), "serve", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    PIDFILE.write_text(str(process.pid))
    for _ in range(200):
        if process.poll() is not None:
            sys.exit(
                f"shop-web {RELEASE['version']} exited with code {process.returncode} "
                f"on start; see {RUNTIME / 'app.log'}"
            )
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                print(
                    f"shop-web {RELEASE['version']} serving on 127.0.0.1:{port} (pid {process.pid})"
                )
                return
        time.sleep(0.05)
    sys.exit(f"shop-web {RELEASE['version']} did not open port {port} within 10s")


def main() -> None:
    parser = argparse.ArgumentParser(prog="app.py")
    parser.add_argument("command", choices=["serve", "restart", "stop"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port)
    elif args.command == "restart":
        restart(args.port)
    else:
        stop()


if __name__ == "__main__":
    main()
