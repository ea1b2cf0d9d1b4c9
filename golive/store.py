"""The run store: every run's entries, hash-chained and append-only, in one database.

SQLite at `$GOLIVE_HOME/store.db` by default; another database (PostgreSQL for teams) when
`GOLIVE_STORE_URL`, or the `golive-run-store` block that `GOLIVE_STORE_BLOCK` names, gives a
URL. SQLAlchemy Core; the schema is kept by Alembic migrations (`golive/store_schema/`).

    golive_runs     a row a run, written with its first entry: what `audit list` filters on
    golive_entries  (run_id, seq) → at, kind, v, body (canonical JSON), prev, hash
                    (and the environment registry's changes, as the chain `registry`)
    golive_heads    the store-wide chain of run heads: after every append, a link holding
                    the run's newest entry (its hash and number) and the run's state;
                    "opened" for a run's first entry, "sealed" once it has ended. A run
                    deleted, cut short or rewritten, sealed or not, breaks it

`append` returns only once the entry is committed (SQLite: WAL with synchronous=FULL).
Writers take the store's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: advisory locks),
so many processes and machines append at once without losing or interleaving entries.
golive never updates or deletes an entry, a link or a run's row; only leases (golive_leases,
one go-live per environment: see golive/lease.py) change.

    entry hash = sha256(prev ␟ run_id ␟ seq ␟ at ␟ kind ␟ v ␟ body)
    link hash  = sha256(prev ␟ pos ␟ run_id ␟ event ␟ state ␟ entries ␟ run_head ␟ at)

(␟ is U+001F; the text is UTF-8; the first prev of every chain is 64 zeros.)
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    exc,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url

from golive.errors import AmbiguousRun, RunNotFound, StoreError
from golive.home import golive_home
from golive.private import create_private, private_dir

GENESIS = "0" * 64
SEP = "\x1f"
SCHEMA_REVISION = "0002"  # the newest revision in golive/store_schema/versions
VERSION_TABLE = "golive_store_version"
URL_SETTING, BLOCK_SETTING = "GOLIVE_STORE_URL", "GOLIVE_STORE_BLOCK"
REGISTRY = "registry"  # the environment registry's chain: not a run (golive/registry.py)
SERVERS = "local-servers"  # the local golive servers' chain: not a run (golive/localserver.py)
NOT_RUNS = frozenset({REGISTRY, SERVERS})

metadata = MetaData()
runs_table = Table(
    "golive_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("started_at", String(40), nullable=False),
    Column("environment", String(200)),
    Column("release", String(200)),
    Column("version", String(200)),
    Column("triggered_by", String(400)),
)
entries_table = Table(
    "golive_entries",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", String(40), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("v", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("prev", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
heads_table = Table(
    "golive_heads",
    metadata,
    Column("pos", Integer, primary_key=True, autoincrement=False),
    Column("run_id", String(64), nullable=False),
    Column("event", String(16), nullable=False),
    Column("state", String(32), nullable=False),
    Column("entries", Integer, nullable=False),
    Column("run_head", String(64), nullable=False),
    Column("at", String(40), nullable=False),
    Column("prev", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)


leases_table = Table(
    "golive_leases",
    metadata,
    Column("environment", String(200), primary_key=True),
    Column("run_id", String(64), nullable=False),
    Column("holder", String(400), nullable=False),
    Column("purpose", String(40), nullable=False),
    Column("acquired_at", String(40), nullable=False),
    Column("expires", Float, nullable=False),
)

_INSERT_ENTRY = entries_table.insert()
_INSERT_LINK = heads_table.insert()
# Where a run's chain and the heads chain end, in one round trip.
_ENDS = text(
    "SELECT (SELECT seq FROM golive_entries WHERE run_id = :run_id ORDER BY seq DESC LIMIT 1)"
    " AS seq, (SELECT hash FROM golive_entries WHERE run_id = :run_id ORDER BY seq DESC"
    " LIMIT 1) AS hash, (SELECT state FROM golive_heads WHERE run_id = :run_id ORDER BY pos"
    " DESC LIMIT 1) AS state, (SELECT pos FROM golive_heads ORDER BY pos DESC LIMIT 1) AS pos,"
    " (SELECT hash FROM golive_heads ORDER BY pos DESC LIMIT 1) AS head"
)


@dataclass
class _Ends:
    """Where a run's chain and the heads chain end, moved on as an append extends them."""

    seq: int
    hash: str
    state: str | None
    pos: int
    head: str


def entry_hash(prev: str, run_id: str, seq: int, at: str, kind: str, v: int, body: str) -> str:
    return _sha256(prev, run_id, str(seq), at, kind, str(v), body)


def link_hash(
    prev: str, pos: int, run_id: str, event: str, state: str, entries: int, run_head: str, at: str
) -> str:
    return _sha256(prev, str(pos), run_id, event, state, str(entries), run_head, at)


def _sha256(*parts: str) -> str:
    return hashlib.sha256(SEP.join(parts).encode()).hexdigest()


def canonical(fields: dict[str, Any]) -> str:
    """The one text of an entry's body that its hash covers."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class StoredEntry:
    run_id: str
    seq: int
    at: str
    kind: str
    v: int
    body: str
    prev: str
    hash: str

    def fields(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


@dataclass(frozen=True)
class Link:
    """One link of the store-wide chain of run heads."""

    pos: int
    run_id: str
    event: str  # "opened" or "sealed"
    state: str
    entries: int
    run_head: str
    at: str
    prev: str
    hash: str


@dataclass(frozen=True)
class RunRow:
    run_id: str
    started_at: str
    environment: str | None
    release: str | None
    version: str | None
    triggered_by: str | None
    state: str


@dataclass(frozen=True)
class Lease:
    """Who holds an environment, for which run, until when (seconds since the epoch)."""

    environment: str
    run_id: str
    holder: str
    purpose: str
    acquired_at: str
    expires: float


@dataclass(frozen=True)
class NewEntry:
    kind: str
    v: int
    fields: dict[str, Any]
    at: str | None = None  # kept when importing an older run; otherwise the time of writing


@dataclass
class _Append:
    """An append waiting for the next transaction, and what it stored once committed."""

    run_id: str
    new: Sequence[NewEntry]
    seal: str | None
    stored: list[StoredEntry] | None = None

    @property
    def args(self) -> tuple[str, Sequence[NewEntry], str | None]:
        return self.run_id, self.new, self.seal


class RunStore:
    """One run store, shared by every thread of this process (see `open_store`)."""

    def __init__(self, engine: Engine, shown: str) -> None:
        self.engine = engine
        self.shown = shown  # the URL without its password, for messages
        self._local_lock = threading.Lock()
        self._batch_lock = threading.Lock()  # taken before `_local_lock`, never after it
        self._queue_lock = threading.Lock()
        self._queued: list[_Append] = []

    # Writing

    def append(
        self, run_id: str, new: Sequence[NewEntry], seal: str | None = None
    ) -> list[StoredEntry]:
        """Append entries to a run's chain in one transaction; with `seal`, then seal the
        run's head into the store's chain with that state. Returns the entries as stored,
        once they are committed."""
        mine = _Append(run_id, new, seal)
        with self._queue_lock:
            self._queued.append(mine)
        with self._batch_lock:
            if mine.stored is None:
                self._write_queued(mine)
        assert mine.stored is not None
        return mine.stored

    def _write_queued(self, mine: _Append) -> None:
        """Group commit: the appends of every thread that queued while the last transaction
        was committing go into the next one, so a thousand hosts' steps pay for far fewer
        synchronous commits than entries. If that transaction fails, the others go back to
        the queue for their own threads, and this one is tried alone: an append fails only
        for a fault of its own."""
        with self._queue_lock:
            batch, self._queued = self._queued, []
        try:
            self._commit(batch)
        except Exception:
            if batch == [mine]:
                raise
            self._requeue(batch, mine)
            self._commit([mine])
        except BaseException:  # interrupted: the others are written by their own threads
            self._requeue(batch, mine)
            raise

    def _commit(self, batch: list[_Append]) -> None:
        with self._writing() as connection:
            # Where each chain ends is read once a transaction and then moved on here.
            runs: dict[str, _Ends] = {}
            heads: tuple[int, str] | None = None
            written = []
            for queued in batch:
                ends = runs.get(queued.run_id) or self._ends(connection, queued.run_id)
                if heads is not None:
                    ends.pos, ends.head = heads
                written.append(self._append(connection, *queued.args, ends))
                runs[queued.run_id], heads = ends, (ends.pos, ends.head)
        for queued, stored in zip(batch, written, strict=True):  # committed: now they count
            queued.stored = stored

    def _requeue(self, batch: list[_Append], mine: _Append) -> None:
        with self._queue_lock:
            self._queued[:0] = [queued for queued in batch if queued is not mine]

    def import_run(self, run_id: str, new: Sequence[NewEntry], seal: str | None) -> bool:
        """Append a whole older run, unless the store has it already (another process may be
        importing it at the same moment). Returns whether it was imported."""
        with self._writing() as connection:
            ends = self._ends(connection, run_id)
            if ends.seq:
                return False
            self._append(connection, run_id, new, seal, ends)
            return True

    def append_after(self, run_id: str, new: NewEntry, head: str) -> bool:
        """Append one entry only if the run's chain still ends at `head` (compare and append:
        a change signed against an older head is refused, not interleaved)."""
        with self._writing() as connection:
            ends = self._ends(connection, run_id)
            if ends.hash != head:
                return False
            self._append(connection, run_id, [new], None, ends)
            return True

    def _append(
        self,
        connection: Connection,
        run_id: str,
        new: Sequence[NewEntry],
        seal: str | None,
        ends: _Ends,
    ) -> list[StoredEntry]:
        stored: list[StoredEntry] = []
        for entry in new:
            ends.seq += 1
            at = entry.at or now()  # taken under the lock: times follow the chain's order
            body = canonical(entry.fields)
            digest = entry_hash(ends.hash, run_id, ends.seq, at, entry.kind, entry.v, body)
            row = StoredEntry(run_id, ends.seq, at, entry.kind, entry.v, body, ends.hash, digest)
            connection.execute(_INSERT_ENTRY, row.__dict__)
            stored.append(row)
            ends.hash = digest
            if ends.seq == 1:
                self._index_run(connection, run_id, at, entry)
                self._link(connection, ends, run_id, "opened", "running", at)
        # Every append ends with a link, so the store-wide chain holds every run's latest
        # entry as it was written: a run cannot be cut short or rewritten, sealed or not,
        # without breaking it. Once sealed, a run stays sealed with its state.
        state = seal or ends.state or "running"
        event = "sealed" if state != "running" else "appended"
        if not (ends.seq == 1 and event == "appended"):
            self._link(connection, ends, run_id, event, state, now())
        return stored

    def _ends(self, connection: Connection, run_id: str) -> _Ends:
        row = connection.execute(_ENDS, {"run_id": run_id}).one()
        return _Ends(
            row.seq or 0, row.hash or GENESIS, row.state, row.pos or 0, row.head or GENESIS
        )

    def _index_run(self, connection: Connection, run_id: str, at: str, first: NewEntry) -> None:
        started = first.fields if first.kind == "run.started" else {}
        connection.execute(
            runs_table.insert(),
            {
                "run_id": run_id,
                "started_at": at,
                "environment": started.get("environment"),
                "release": started.get("release"),
                "version": started.get("version"),
                "triggered_by": started.get("triggered_by"),
            },
        )

    def _link(
        self, connection: Connection, ends: _Ends, run_id: str, event: str, state: str, at: str
    ) -> None:
        """The heads chain's next link: this run's newest entry, its state."""
        pos = ends.pos + 1
        digest = link_hash(ends.head, pos, run_id, event, state, ends.seq, ends.hash, at)
        link = Link(pos, run_id, event, state, ends.seq, ends.hash, at, ends.head, digest)
        connection.execute(_INSERT_LINK, link.__dict__)
        ends.pos, ends.head, ends.state = pos, digest, state

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        # One writer per process at a time, then the database's own write lock across
        # processes and machines: the chain of a run and of the heads is read and extended
        # in one transaction.
        with self._local_lock, self._failing_clearly(), self.engine.connect() as connection:
            connection = connection.execution_options(golive_write=True)
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    # One lock for the whole store: the heads chain is shared by every run.
                    connection.execute(text("SELECT pg_advisory_xact_lock(7365403612)"))
                yield connection

    # Leases: the only rows golive changes; what they decide is also written as entries.

    def take_lease(self, lease: Lease, now: float) -> Lease | None:
        """Take the environment's lease, unless another run holds it and it has not expired by
        `now`; then return the lease that holds it. (A run takes its own lease back when it
        comes back from a suspended gate: Prefect runs one process of a flow run at a time.)"""
        with self._writing() as connection:
            held = self._lease_on(connection, lease.environment)
            if held is not None and held.expires > now and held.run_id != lease.run_id:
                return held
            connection.execute(
                leases_table.delete().where(leases_table.c.environment == lease.environment)
            )
            connection.execute(leases_table.insert(), lease.__dict__)
            return None

    def renew_lease(self, lease: Lease, expires: float) -> bool:
        """Move the lease's expiry on; False if its holder no longer holds it."""
        with self._writing() as connection:
            renewed = connection.execute(
                leases_table.update()
                .where(leases_table.c.environment == lease.environment)
                .where(leases_table.c.holder == lease.holder)
                .values(expires=expires)
            )
            return bool(renewed.rowcount)

    def drop_lease(self, lease: Lease) -> None:
        with self._writing() as connection:
            connection.execute(
                leases_table.delete()
                .where(leases_table.c.environment == lease.environment)
                .where(leases_table.c.holder == lease.holder)
            )

    def lease(self, environment: str) -> Lease | None:
        with self._reading() as connection:
            return self._lease_on(connection, environment)

    def _lease_on(self, connection: Connection, environment: str) -> Lease | None:
        row = connection.execute(
            select(leases_table).where(leases_table.c.environment == environment)
        ).first()
        return Lease(**row._mapping) if row else None

    # Reading

    def entries(self, run_id: str) -> list[StoredEntry]:
        with self._reading() as connection:
            rows = connection.execute(
                select(entries_table)
                .where(entries_table.c.run_id == run_id)
                .order_by(entries_table.c.seq)
            )
            return [StoredEntry(**row._mapping) for row in rows]

    def first_entry(self, run_id: str) -> StoredEntry | None:
        """A run's first entry (its run.started), without reading the rest."""
        with self._reading() as connection:
            row = connection.execute(
                select(entries_table).where(
                    entries_table.c.run_id == run_id, entries_table.c.seq == 1
                )
            ).first()
        return None if row is None else StoredEntry(**row._mapping)

    def all_entries(self, run_ids: Sequence[str] | None = None) -> Iterator[StoredEntry]:
        """Every entry (or those of `run_ids`), run by run, in chain order."""
        query = select(entries_table).order_by(entries_table.c.run_id, entries_table.c.seq)
        if run_ids is not None:
            query = query.where(entries_table.c.run_id.in_(list(run_ids)))
        with self._reading() as connection:
            for row in connection.execute(query):
                yield StoredEntry(*row)

    def heads(self) -> list[Link]:
        with self._reading() as connection:
            rows = connection.execute(select(heads_table).order_by(heads_table.c.pos))
            return [Link(*row) for row in rows]

    def newest_link(self, run_id: str) -> Link | None:
        """The newest link of the chain of run heads that holds this run's entries."""
        with self._reading() as connection:
            row = connection.execute(
                select(heads_table)
                .where(heads_table.c.run_id == run_id)
                .order_by(heads_table.c.pos.desc())
                .limit(1)
            ).first()
        return Link(*row) if row else None

    def run_rows(self, with_other_chains: bool = False) -> list[RunRow]:
        """Every run, newest first, with its latest state from the heads chain; the chains
        that are no runs (the environment registry, local servers) only `with_other_chains`."""
        with self._reading() as connection:
            heads = select(heads_table.c.run_id, heads_table.c.state).order_by(heads_table.c.pos)
            states: dict[str, str] = {
                run_id: state for run_id, state in connection.execute(heads).all()
            }
            query = select(runs_table).order_by(runs_table.c.started_at.desc())
            if not with_other_chains:
                query = query.where(runs_table.c.run_id.not_in(NOT_RUNS))
            rows = connection.execute(query).all()
        return [RunRow(**row._mapping, state=states.get(row.run_id, "unknown")) for row in rows]

    def find_run(self, run_id: str) -> str:
        """The run whose id is `run_id`, or starts with it."""
        if not run_id or len(run_id) > 64 or not all(c in "0123456789abcdef-" for c in run_id):
            raise RunNotFound(run_id, self.shown)
        with self._reading() as connection:
            matches = connection.execute(
                select(runs_table.c.run_id)
                .where(runs_table.c.run_id.startswith(run_id, autoescape=True))
                .order_by(runs_table.c.run_id)
                .limit(11)
            ).scalars()
            found = [str(run) for run in matches]
        if len(found) > 1:
            raise AmbiguousRun(run_id, found)
        if not found:
            raise RunNotFound(run_id, self.shown)
        return found[0]

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._failing_clearly(), self.engine.connect() as connection:
            yield connection

    @contextmanager
    def _failing_clearly(self) -> Iterator[None]:
        try:
            yield
        except exc.DBAPIError as error:
            raise _store_error(error, self.shown) from None


def _store_error(error: exc.DBAPIError, shown: str) -> StoreError:
    reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
    if "locked" in reason or "busy" in reason:
        fix = (
            f"another process held it for more than {lock_timeout():g} s; try again, or "
            "raise GOLIVE_STORE_TIMEOUT"
        )
    elif "not a database" in reason or "malformed" in reason:
        fix = "the file is damaged or not a run store; keep it for whoever investigates"
    else:
        fix = f"check {URL_SETTING} (or {BLOCK_SETTING}) and that the database is reachable"
    return StoreError(shown, reason, fix)


# Opening

_stores: dict[str, RunStore] = {}
_open_lock = threading.Lock()


def store_url() -> str:
    """The run store's URL: GOLIVE_STORE_URL, the block GOLIVE_STORE_BLOCK names, or SQLite
    under GOLIVE_HOME."""
    if url := os.environ.get(URL_SETTING):
        return url
    if block := os.environ.get(BLOCK_SETTING):
        from blocks.store import load_run_store

        return load_run_store(block)
    return f"sqlite:///{golive_home() / 'store.db'}"


def lock_timeout() -> float:
    given = os.environ.get("GOLIVE_STORE_TIMEOUT", "30")
    try:
        seconds = float(given)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 86400:
        raise StoreError(
            "(not opened)",
            f"GOLIVE_STORE_TIMEOUT={given!r} is not a number of seconds",
            "accepted: more than 0, e.g. 30",
        )
    return seconds


def open_store(create: bool = False) -> RunStore:
    """The run store, its schema brought up to date. Without `create`, a SQLite store that
    does not exist yet is an error (reading creates nothing)."""
    url = store_url()
    with _open_lock:
        if url not in _stores:
            if not _stores:  # closed at exit, whatever else the process imported: a SQLite
                atexit.register(forget_stores)  # store then leaves no -wal or -shm behind
            _stores[url] = _open(url, create)
        return _stores[url]


def forget_stores() -> None:
    """Close every store this process opened (tests change GOLIVE_HOME between runs)."""
    with _open_lock:
        for store in _stores.values():
            store.engine.dispose()
        _stores.clear()


def _open(url: str, create: bool) -> RunStore:
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        raise StoreError(
            "(unreadable)",
            f"{URL_SETTING} is not a database URL",
            "give sqlite:///PATH or postgresql://USER@HOST/DB",
        ) from None
    # Neither a password nor the query (libpq takes `password=` there too) is ever shown.
    shown = parsed.set(query={}).render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(parsed.database or "", shown, create)
    elif parsed.get_backend_name() == "postgresql":
        engine = create_engine(
            parsed.set(drivername="postgresql+psycopg"),
            connect_args={"connect_timeout": 10},
            pool_pre_ping=True,
        )
    else:
        raise StoreError(
            shown, "golive keeps runs in SQLite or PostgreSQL", "give sqlite:// or postgresql://"
        )
    store = RunStore(engine, shown)
    with store._failing_clearly():
        _upgrade(store, create)
    return store


def _sqlite_engine(database: str, shown: str, create: bool) -> Engine:
    path = Path(database).expanduser()
    if not database or database == ":memory:":
        raise StoreError(shown, "an in-memory store keeps nothing", "give a file: sqlite:///PATH")
    if not path.exists():
        if not create:
            raise StoreError(
                shown,
                "there is no run store there yet",
                f"no run was recorded there; to read another store, set {URL_SETTING} (or "
                f"{BLOCK_SETTING}) or GOLIVE_HOME; nothing was written",
            )
        _create_sqlite_file(path, shown)
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": lock_timeout(), "check_same_thread": False},
    )
    event.listen(engine, "connect", _sqlite_connected)
    event.listen(engine, "begin", _sqlite_begin)
    if create:
        # WAL lets readers read while a writer writes; the mode is kept in the file, so
        # only a writer sets it (reading changes nothing).
        connection = engine.raw_connection()
        try:
            connection.cursor().execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
    return engine


def _create_sqlite_file(path: Path, shown: str) -> None:
    """Owner-only from the first byte: the store holds plans, hosts and decisions."""
    try:
        os.close(create_private(path))
    except FileExistsError:
        pass  # another process made it first
    except OSError as error:
        reason = f"cannot create it: {error.strerror}"
        raise StoreError(shown, reason, "check GOLIVE_HOME") from None
    private_dir(path.parent)


def _sqlite_connected(connection: Any, _record: Any) -> None:
    # Python's sqlite3 would open transactions on its own; SQLAlchemy's "begin" does it.
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA synchronous=FULL")  # a commit is on disk when append returns
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # A writer takes the write lock at once, so its read of a chain's end cannot go stale.
    write = connection.get_execution_options().get("golive_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _upgrade(store: RunStore, create: bool) -> None:
    """Bring the schema to this golive's revision, once, under the write lock; refuse a store
    that a newer golive has written, and a database that is no run store. Only a writer
    creates the schema: reading creates nothing."""
    with store.engine.connect() as connection:
        current = _revision_on(connection)
        _refuse_newer(store, current)
        if current == SCHEMA_REVISION:
            return
        if not create:
            _refuse_foreign(store, connection)
    with store._writing() as connection:
        # Again under the lock: another process may have created the schema meanwhile.
        current = _revision_on(connection)
        _refuse_newer(store, current)
        if current == SCHEMA_REVISION:
            return
        if current is None:
            _refuse_foreign(store, connection, creating=True)
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "store_schema"))
        config.attributes["connection"] = connection
        command.upgrade(config, SCHEMA_REVISION)


def _refuse_foreign(store: RunStore, connection: Connection, creating: bool = False) -> None:
    """A database golive may not read or create a schema in: golive's tables without a
    schema version (damaged), or, for a reader, no golive tables at all."""
    if _revision_on(connection) is not None:
        return  # created by another process since we looked
    if set(inspect(connection).get_table_names()) & set(metadata.tables):
        raise StoreError(
            store.shown,
            "it has golive's tables but no schema version (golive_store_version is gone)",
            "it was damaged or edited; keep it for whoever investigates; nothing was changed",
        )
    if not creating:
        raise StoreError(
            store.shown,
            "it is not a run store (there are no golive tables in it)",
            f"check {URL_SETTING} (or {BLOCK_SETTING}); nothing was written",
        )


def _refuse_newer(store: RunStore, revision: str | None) -> None:
    if revision is not None and revision not in _known_revisions():
        raise StoreError(
            store.shown,
            f"it was written by a newer golive (schema revision {revision})",
            "upgrade golive on this machine; nothing was changed",
        )


def _revision_on(connection: Connection) -> str | None:
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    revision = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    return str(revision) if revision is not None else None


def _known_revisions() -> set[str]:
    folder = Path(__file__).parent / "store_schema" / "versions"
    return {path.name.split("_")[0] for path in folder.glob("[0-9]*.py")}
