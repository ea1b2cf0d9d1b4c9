"""A real Redis for the tests: the machine's server on 127.0.0.1:6379 when it answers,
otherwise one started with redis-server on a free port. Neither available fails the tests
under CI=true and skips them elsewhere. Each test set-up takes databases that are empty, and
empties them again afterwards."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from tests.conftest import free_port
from tests.unavailable import unavailable


@contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    """(host, port) of a Redis server."""
    if _answers(6379):
        yield "127.0.0.1", 6379
        return
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("no redis-server to start a Redis (`make test` installs redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="golive-redis-") as folder:
        started = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
            stdout=subprocess.DEVNULL,
        )
        try:
            _wait_for(port)
            yield "127.0.0.1", port
        finally:
            started.terminate()
            started.wait(timeout=30)


@contextmanager
def empty_databases(server: tuple[str, int], count: int) -> Iterator[list[int]]:
    """`count` database numbers of `server` that hold nothing; emptied again afterwards."""
    host, port = server
    empty = [n for n in range(1, 16) if redis.Redis(host, port, db=n).dbsize() == 0][:count]
    if len(empty) < count:
        unavailable(f"Redis at {host}:{port} has no {count} empty databases for the test")
    try:
        yield empty
    finally:
        for number in empty:
            redis.Redis(host, port, db=number).flushdb()


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis("127.0.0.1", port, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def _wait_for(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _answers(port):
            return
        time.sleep(0.2)
    raise AssertionError(f"redis-server did not answer on port {port} in {seconds} s")
