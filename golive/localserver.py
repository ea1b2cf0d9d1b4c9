"""The local golive server: the Prefect API of the embedded default, started once and reused.

Starting a Prefect server takes seconds; paid by every `golive run`, it was most of the wait
before a 1-host plan's first step. So the first command that needs an API (with none
configured) starts one in a session of its own, out of the terminal's reach, and records it in
the run store's `local-servers` chain; later runs, rollbacks and approvals on this machine find
it there and reuse it. It stops itself once no request has come for `GOLIVE_SERVER_IDLE_SECONDS`
(30 minutes by default); a command using it says so now and then (`keep_alive`), so a quiet
step of a run or rollback does not count as idle.

A recorded server is reused only if it answers as that server (its own pid, at its own
address, proving it holds the key its starter wrote to an owner-only file: a process of
another user that takes the port of a server that died cannot pass for it) and belongs to
this user; otherwise the user is told why, the store records the server
passed over, and a fresh one is started. `golive server status|stop` show and end it.

    python -m golive.localserver PORT IDLE_SECONDS KEY_FILE   (what `golive run` starts)
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import hmac
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

from golive.entries import checked
from golive.errors import GoLiveError, ServerStartFailed
from golive.home import golive_home
from golive.private import create_private, private_dir
from golive.store import SERVERS, NewEntry, RunStore, open_store

IDLE_SETTING = "GOLIVE_SERVER_IDLE_SECONDS"
IDENTITY_PATH = "/golive-server"  # answered by the server itself, not by Prefect's API
# Local servers speak plain http on loopback: `verify=False` below spares loading the CA
# bundle, 25 ms a request.
_RECORDED = ("url", "pid", "machine", "uid", "user", "started_at", "log")


@dataclass(frozen=True)
class LocalServer:
    """A golive server as the store has it."""

    url: str  # its Prefect API, http://127.0.0.1:PORT/api
    pid: int
    machine: str
    uid: int
    user: str
    started_at: str
    log: str  # its output; its key is beside it

    @property
    def address(self) -> str:
        return self.url.removesuffix("/api")

    @property
    def key_file(self) -> Path:
        return Path(self.log).with_suffix(".key")

    def mine(self) -> bool:
        return self.machine == socket.gethostname() and self.uid == os.getuid()

    def identity(self, to_use: bool = False, nonce: str = "") -> dict[str, Any] | None:
        """What the server at this address says it is (None if nothing answers there; {} if
        something else does), with its proof of the key for `nonce`; `to_use` tells it a
        command is about to use it, so it does not stop as idle in the meantime."""
        query = {"nonce": nonce} | ({"use": ""} if to_use else {})
        try:
            url = self.address + IDENTITY_PATH
            answer = httpx.get(url, params=query, timeout=3, verify=False)
        except httpx.HTTPError:
            return None
        try:
            return dict(answer.json()) if answer.status_code == 200 else {}
        except ValueError:
            return {}

    def problem(self, to_use: bool = False) -> str | None:
        """Why this server cannot be used, if it cannot."""
        if not self.mine():
            return f"it belongs to {self.user} (uid {self.uid})"
        nonce = secrets.token_hex(16)
        identity = self.identity(to_use, nonce)
        if identity is None:
            return "it does not answer: stale (its process ended without a word)"
        if identity.get("pid") != self.pid:
            return f"another process (pid {identity.get('pid', '?')}) answers at its address"
        try:
            key = self.key_file.read_bytes()
        except (OSError, ValueError) as error:  # ValueError: no log on record, so no key
            return f"its key beside {self.log!r} cannot be read ({error})"
        if not hmac.compare_digest(str(identity.get("proof", "")), _proof(key, nonce)):
            return "the process at its address does not hold its key: not the server it started"
        return None


def _proof(key: bytes, nonce: str) -> str:
    return hmac.new(key, nonce.encode(), hashlib.sha256).hexdigest()


def api_configured() -> bool:
    """Whether this machine names a Prefect API, in any place Prefect reads its settings from
    (the environment, the active profile, prefect.toml, .env, pyproject.toml)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def use_api(url: str) -> None:
    """Make `url` Prefect's API for the rest of this process. Prefect reads its settings at
    import; refreshing them is its own way to take up a changed environment."""
    from prefect.context import refresh_global_settings_context

    os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()


def keep_alive(server_url: str, tell: Callable[[str], None]) -> None:
    """Tell the server, while this process lives, that it is in use: a quiet step (a wave's
    pause, a long dump) sends no request, and the server must not stop under the run. One that
    died under the command (killed, its machine's OOM killer) is started again at its address,
    on the same Prefect database, so the run waiting on it goes on."""
    every = min(idle_seconds() / 3, 10)
    identity = server_url.removesuffix("/api") + IDENTITY_PATH + "?use"

    def ping() -> None:
        while True:
            time.sleep(every)
            try:
                httpx.get(identity, timeout=3, verify=False)
            except httpx.ConnectError:
                _revive(server_url, tell)
            except httpx.HTTPError:
                pass

    threading.Thread(target=ping, name="golive-server-keep-alive", daemon=True).start()


def _revive(server_url: str, tell: Callable[[str], None]) -> None:
    port = int(server_url.removesuffix("/api").rsplit(":", 1)[1])
    with _starting_alone():
        if answers(server_url):  # another command started it again meanwhile
            return
        try:
            _start(open_store(create=True), port)
        except Exception as error:  # told, not raised: this thread has nobody to raise to
            tell(f"golive server {server_url} stopped answering, and did not start again: {error}")
            return
    tell(f"golive server {server_url} stopped answering under this command: started again there")


def answers(api_url: str) -> bool:
    """Whether a Prefect API answers at this URL."""
    try:
        return (
            httpx.get(f"{api_url.rstrip('/')}/health", timeout=3, verify=False).status_code == 200
        )
    except httpx.HTTPError:
        return False


def idle_seconds() -> float:
    value = os.environ.get(IDLE_SETTING, "1800")
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:  # nan and inf: a server that never stops
        raise GoLiveError(
            f"{IDLE_SETTING}={value!r} is not accepted; accepted: a number of seconds above 0, "
            "like 1800"
        )
    return max(seconds, 1.0)


def servers(store: RunStore) -> list[LocalServer]:
    """Every server the store has as not stopped, newest first."""
    found: dict[tuple[str, int], LocalServer] = {}
    for entry in store.entries(SERVERS):
        fields = entry.fields()
        key = (fields["machine"], fields["pid"])
        if entry.kind == "server.started":
            found[key] = LocalServer(**{name: fields[name] for name in _RECORDED})
        elif entry.kind == "server.stopped" or _by_its_owner(fields, found.get(key)):
            found.pop(key, None)  # not to be used again; passed over by another user, it is
    return list(reversed(found.values()))


def _by_its_owner(passed_over: dict[str, Any], server: LocalServer | None) -> bool:
    return server is not None and passed_over.get("by_uid") == server.uid


def on_this_machine(store: RunStore) -> list[LocalServer]:
    return [server for server in servers(store) if server.machine == socket.gethostname()]


def local_api_url(tell: Callable[[str], None]) -> str:
    """The API of this user's golive server on this machine, started if none answers; `tell`
    says to the user why a recorded server is not used."""
    store = open_store(create=True)
    with _starting_alone():
        found = on_this_machine(store)
        mine = [server for server in found if server.mine()]
        for server in mine:
            if (problem := server.problem(to_use=True)) is None:
                return server.url
            _pass_over(store, server, problem, tell)
        told = passed_over_by_me(store)
        for server in [] if mine else found:
            if (server.machine, server.pid) not in told:
                _pass_over(store, server, f"{server.problem()}, not to you", tell)
        return _start(store).url


def passed_over_by_me(store: RunStore) -> set[tuple[str, int]]:
    """The servers this user has been told about and recorded as passed over."""
    return {
        (fields["machine"], fields["pid"])
        for entry in store.entries(SERVERS)
        if entry.kind == "server.passed_over"
        and (fields := entry.fields()).get("by_uid") == os.getuid()
    }


def _pass_over(
    store: RunStore, server: LocalServer, problem: str, tell: Callable[[str], None]
) -> None:
    tell(
        f"golive server {server.address} (pid {server.pid}) not used: {problem}; starting a "
        "fresh one (`golive server status` shows them)"
    )
    _write(store, "server.passed_over", server, reason=problem)


def stop(server: LocalServer, store: RunStore, seconds: float = 30) -> bool:
    """Ask this user's server to stop (it writes its own `server.stopped`); whether it ended.
    One that no longer answers is recorded as passed over, not signalled: its pid may be
    another process's by now."""
    if (problem := server.problem()) is not None:
        _write(store, "server.passed_over", server, reason=problem)
        return False
    try:
        os.kill(server.pid, signal.SIGTERM)
    except ProcessLookupError:  # it ended in between, and has said so in the store
        return True
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(server.pid):
            return True
        time.sleep(0.2)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, and someone else's
        return True
    return True


@contextmanager
def _starting_alone() -> Iterator[None]:
    """Two commands at once start one server between them, not one each."""
    folder = private_dir(golive_home() / "server")
    lock = folder / "start.lock"
    if not lock.exists():
        with suppress(FileExistsError):
            os.close(create_private(lock))
    with lock.open("r") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


def _start(store: RunStore, port: int = 0) -> LocalServer:
    port = port or _free_port()
    log = golive_home() / "server" / f"server-{port}.log"
    key = log.with_suffix(".key")
    for old in (log, key):
        old.unlink(missing_ok=True)
    with os.fdopen(create_private(key), "wb") as secret:
        secret.write(secrets.token_bytes(32))
    with os.fdopen(create_private(log), "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "golive.localserver", str(port), str(idle_seconds()), str(key)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal must not stop a rollback's API
        )
    server = LocalServer(
        f"http://127.0.0.1:{port}/api",
        process.pid,
        socket.gethostname(),
        os.getuid(),
        getpass.getuser(),
        time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        str(log),
    )
    try:
        _wait_until_up(server, process, log)
        _write(store, "server.started", server, log=str(log))
    except BaseException:  # not recorded, so not to be left running either
        process.kill()
        process.wait()
        raise
    return server


def _wait_until_up(server: LocalServer, process: subprocess.Popen[bytes], log: Any) -> None:
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if server.problem() is None:
            return
        time.sleep(0.1)
    if process.poll() is None:
        why = (
            f"did not answer in {timeout:.0f} s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"
        )
        process.kill()
    else:
        why = f"exited with code {process.returncode} while starting"
    process.wait()
    tail = log.read_text(errors="replace")[-2000:].strip() or "(nothing)"
    raise ServerStartFailed(why, str(log), tail)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _write(store: RunStore, kind: str, server: LocalServer, **more: Any) -> None:
    fields = {"url": server.url, "pid": server.pid, "machine": server.machine} | more
    if kind == "server.started":
        fields |= {"uid": server.uid, "user": server.user, "started_at": server.started_at}
    if kind == "server.passed_over":
        fields |= {"by_uid": os.getuid(), "by_user": getpass.getuser()}
    version, body = checked(kind, fields)
    store.append(SERVERS, [NewEntry(kind, version, body)])


# The server process itself


class _Watched:
    """Prefect's app, answering who it is at IDENTITY_PATH and noting when it was last used."""

    def __init__(self, app: Any, key: bytes) -> None:
        self.app, self.last_used, self.key = app, time.monotonic(), key
        self.stopping = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == IDENTITY_PATH and self.stopping:
            await _respond(send, 503, b'{"stopping": true}')  # not to be taken up now
            return
        if scope["type"] == "http" and scope["path"] == IDENTITY_PATH:
            asked = parse_qs(scope["query_string"].decode(), keep_blank_values=True)
            if "use" in asked:  # asked by a command that is to use it
                self.last_used = time.monotonic()
            await self._identify(send, asked.get("nonce", [""])[0])
            return
        if scope["type"] == "http":
            self.last_used = time.monotonic()
        await self.app(scope, receive, send)

    async def _identify(self, send: Any, nonce: str) -> None:
        idle = time.monotonic() - self.last_used
        said = {"pid": os.getpid(), "uid": os.getuid(), "idle": round(idle, 1)}
        proof = {"proof": _proof(self.key, nonce)} if nonce else {}
        await _respond(send, 200, json.dumps(said | proof).encode())


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve(port: int, idle: float, key: bytes) -> None:
    """Serve Prefect's API and UI (no background services, as Prefect's temporary server)
    until idle for `idle` seconds or told to stop; then record why it stopped."""
    import asyncio

    import uvicorn
    from prefect.server.api.server import create_app

    watched = _Watched(create_app(webserver_only=True, final=True), key)
    config = uvicorn.Config(watched, host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    reason = ["told to stop"]

    async def watch() -> None:
        while not server.started:
            await asyncio.sleep(0.1)
        watched.last_used = time.monotonic()  # idle from when it answers, not from start-up
        while not server.should_exit:
            await asyncio.sleep(min(idle / 4, 30))
            if time.monotonic() - watched.last_used > idle:
                reason[0] = f"idle for {idle:.0f} s ({IDLE_SETTING})"
                server.should_exit = watched.stopping = True

    async def main() -> None:
        watcher = asyncio.create_task(watch())
        await server.serve()
        watcher.cancel()

    def told_to_stop(number: int, _frame: Any) -> None:
        reason[0] = f"told to stop ({signal.Signals(number).name})"

    # uvicorn raises the signal that stopped it again once stopped: caught, to record the stop.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, told_to_stop)
    asyncio.run(main())
    if not server.started:
        sys.exit(3)  # as uvicorn does; the command that started it shows its output
    me = LocalServer(
        f"http://127.0.0.1:{port}/api", os.getpid(), socket.gethostname(), 0, "", "", ""
    )
    _write(open_store(), "server.stopped", me, reason=reason[0])


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]).read_bytes())
