"""The temporary Prefect server of the embedded default, in a session of its own.

With no `PREFECT_API_URL`, Prefect starts a temporary server as a child of the golive process,
in its process group. Ctrl-C in a terminal signals the whole group, so the server died at the
very moment golive began rolling back, and the rollback then hung on an API that was gone.
Started here first, in its own session, the server is out of the terminal's reach; Prefect
finds and reuses it, and stops it when golive exits.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL


class _ServerOfItsOwn(SubprocessASGIServer):
    def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
        with _new_sessions():
            return super()._run_uvicorn_command()


@contextmanager
def _new_sessions() -> Iterator[None]:
    # Prefect gives no way to pass Popen options; golive is single-threaded at this point.
    popen = subprocess.Popen
    subprocess.Popen = partial(popen, start_new_session=True)  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        subprocess.Popen = popen  # type: ignore[misc]


def start_temporary_server() -> None:
    """Start the embedded default's server out of the terminal's process group, unless a
    Prefect API is configured (then there is nothing to start)."""
    if PREFECT_API_URL.value():
        return
    _ServerOfItsOwn().start()  # Prefect's own `SubprocessASGIServer()` now returns this one
