"""The Prefect API a command uses, asked for its health before anything runs: a wrong URL is
refused with the setting's name, not found out by Prefect mid-run. (Which API that is, the one
configured or the local golive server, is golive/localserver.py's to say.)
"""

from __future__ import annotations

import httpx
from prefect import get_client
from prefect.settings import PREFECT_API_URL

from golive.check import shown_url
from golive.errors import PrefectUnreachable


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
