"""`golive check`: whether what this machine's settings name can be reached, before anything
is started on it. A Prefect server whose database or Redis is away otherwise fails its
start-up with a stack trace; a worker without the run store fails its first run.

Each check names the setting it reads, shows its value without a password, and says what
answered. Only what is set is checked, except the run store, which every machine uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from golive.errors import GoLiveError
from golive.localserver import api_configured


@dataclass(frozen=True)
class Finding:
    setting: str
    value: str
    problem: str | None  # None: it answered

    @property
    def ok(self) -> bool:
        return self.problem is None


def findings() -> list[Finding]:
    """Every check that applies to this machine's settings."""
    found = [_run_store()]
    if api_configured():
        found.append(_prefect_api())
    found += _prefect_server_database()
    found += _redis()
    return found


def _run_store() -> Finding:
    from golive.store import BLOCK_SETTING, URL_SETTING, open_store, store_url

    setting = next((s for s in (URL_SETTING, BLOCK_SETTING) if os.environ.get(s)), "run store")
    shown = os.environ.get(BLOCK_SETTING, "(not known)")
    try:
        shown = shown_url(store_url())
        return Finding(setting, open_store().shown, None)
    except GoLiveError as error:
        if _created_by_the_first_run(str(error)):
            return Finding(setting, f"{shown} (empty: the first run creates the store)", None)
        return Finding(setting, shown, str(error))
    except Exception as error:  # a block that cannot be loaded: the API, the block itself
        return Finding(setting, shown, f"{type(error).__name__}: {error}")


def _created_by_the_first_run(refusal: str) -> bool:
    return "there is no run store there yet" in refusal or "there are no golive tables" in refusal


def _prefect_api() -> Finding:
    from prefect.settings import PREFECT_API_URL

    from golive.server import check_api

    url = shown_url(str(PREFECT_API_URL.value()))
    try:
        check_api()
    except GoLiveError as error:
        return Finding("PREFECT_API_URL", url, str(error).split(". Nothing was done")[0])
    return Finding("PREFECT_API_URL", url, None)


def _prefect_server_database() -> list[Finding]:
    for setting in (
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        "PREFECT_API_DATABASE_CONNECTION_URL",
    ):
        if url := os.environ.get(setting):
            return [Finding(setting, shown_url(url), _database_problem(url))]
    return []


def _database_problem(url: str) -> str | None:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "not a database URL; accepted: postgresql+asyncpg://USER:PASSWORD@HOST/DB"
    if parsed.get_backend_name() == "sqlite":
        folder = Path(parsed.database or "").expanduser().parent
        return None if folder.is_dir() else f"folder {folder} does not exist"
    if parsed.get_backend_name() != "postgresql":
        return "Prefect's server runs on PostgreSQL or SQLite"
    import psycopg

    try:
        with psycopg.connect(
            host=parsed.host,
            port=parsed.port or 5432,
            user=parsed.username,
            password=parsed.password,
            dbname=parsed.database,
            connect_timeout=5,
        ):
            return None
    except psycopg.Error as error:
        return str(error).strip().splitlines()[0]


def _redis() -> list[Finding]:
    found = []
    if host := os.environ.get("PREFECT_REDIS_MESSAGING_HOST"):
        port = os.environ.get("PREFECT_REDIS_MESSAGING_PORT", "6379")
        db = os.environ.get("PREFECT_REDIS_MESSAGING_DB", "0")
        url = f"redis://{host}:{port}/{db}"
        password = os.environ.get("PREFECT_REDIS_MESSAGING_PASSWORD") or None
        problem = _redis_problem(url, password)
        found.append(Finding("PREFECT_REDIS_MESSAGING_HOST/_PORT/_DB", url, problem))
    for setting in ("PREFECT_REDIS_MESSAGING_URL", "PREFECT_SERVER_DOCKET_URL"):
        url = os.environ.get(setting, "")
        if url.startswith(("redis://", "rediss://")):
            found.append(Finding(setting, shown_url(url), _redis_problem(url)))
    return found


def _redis_problem(url: str, password: str | None = None) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=5, password=password).ping()
    except (redis.RedisError, ValueError) as error:
        return f"no answer: {error}"
    return None


def shown_url(url: str) -> str:
    """The URL without its password or query (libpq, asyncpg and redis take `password=`
    there too)."""
    try:
        return make_url(url).set(query={}).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a URL)"
