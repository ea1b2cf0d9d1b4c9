"""The temporary Prefect server of the embedded default, in a session of its own.

With no `PREFECT_API_URL`, Prefect starts a temporary server as a child of the golive process,
in its process group. Ctrl-C in a terminal signals the whole group, so the server died at the
very moment golive began rolling back, and the rollback then hung on an API that was gone.
Started here first, in its own session, the server is out of the terminal's reach; Prefect
finds and reuses it, and stops it when golive exits.

With `PREFECT_API_URL` set, the API it names is asked for its health first: a wrong URL is
refused with the setting's name before anything runs, not found out by Prefect mid-run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import httpx
from prefect import get_client
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL

from golive.check import shown_url
from golive.errors import PrefectUnreachable


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


def connect_to_prefect() -> None:
    """Check the Prefect API that PREFECT_API_URL names, or, with none configured, start the
    embedded default's server out of the terminal's process group."""
    if PREFECT_API_URL.value():
        check_api()
        return
    _ServerOfItsOwn().start()  # Prefect's own `SubprocessASGIServer()` now returns this one


def check_api() -> None:
    """Refuse an API that does not answer, or does not answer as Prefect's does. Asked with
    Prefect's own client, so its settings for auth, TLS and proxies apply."""
    with get_client(sync_client=True) as client:
        failure = client.api_healthcheck()
        if failure is None:
            try:
                if isinstance(client.api_version(), str):
                    return
                failure = ValueError("GET /admin/version did not answer with a version")
            except (httpx.HTTPError, ValueError) as error:
                failure = error
    raise PrefectUnreachable(shown_url(str(PREFECT_API_URL.value())), _described(failure))


def _described(failure: Exception) -> str:
    if isinstance(failure, httpx.HTTPStatusError):
        request = failure.request
        shown = shown_url(str(request.url))
        return f"{request.method} {shown} answered HTTP {failure.response.status_code}"
    return f"no answer as a Prefect API ({type(failure).__name__}: {failure})"
