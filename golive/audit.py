"""What auditors do with the run store: verify its chains, list and show runs, export them.

Verification recomputes every entry's hash and every link of the chain of run heads, from the
store or from an export file, and names the first bad entry of each run: an edited, deleted,
reordered, inserted or truncated entry, a run deleted or inserted whole, or a store that does
not hold a head published earlier (rebuilt from scratch with a consistent chain).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import groupby
from typing import Any

from golive.entries import shape_problem
from golive.store import (
    GENESIS,
    NOT_RUNS,
    Link,
    RunRow,
    StoredEntry,
    entry_hash,
    link_hash,
    now,
)

EXPORT_FORMATS = ("jsonl", "csv", "html")


@dataclass
class Verdict:
    runs: int = 0
    entries: int = 0
    links: int = 0
    problems: list[str] = field(default_factory=list)
    head: Link | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _RunChain:
    hashes: list[str] = field(default_factory=list)  # by seq - 1
    finished: dict[int, str] = field(default_factory=dict)  # run.finished states by seq
    first: StoredEntry | None = None

    @property
    def entries(self) -> int:
        return len(self.hashes)

    @property
    def last_hash(self) -> str:
        return self.hashes[-1] if self.hashes else GENESIS

    def state_at(self, seq: int) -> str | None:
        """The state the run's last run.finished entry up to `seq` gives, if any."""
        ended = [number for number in self.finished if number <= seq]
        return self.finished[max(ended)] if ended else None


def verify(
    entries: Iterable[StoredEntry],
    links: Sequence[Link],
    runs: dict[str, RunRow] | None = None,
    head: str | None = None,
    only: set[str] | None = None,
) -> Verdict:
    """Check every run's chain, the chain of run heads, and how they agree. `runs` (the
    store's index of runs) is checked against each run's first entry when given; `only`
    limits the check to an export's runs; `head` is a link hash published earlier."""
    verdict = Verdict(links=len(links), head=links[-1] if links else None)
    chains: dict[str, _RunChain] = {}
    for run_id, run_entries in groupby(entries, key=lambda e: e.run_id):
        chains[run_id] = _check_run(run_id, run_entries, verdict)
    verdict.runs = len(chains.keys() - NOT_RUNS)  # the registry and local servers are no runs
    verdict.problems += _check_links(links)
    verdict.problems += _check_seals(chains, links, only)
    if runs is not None:
        verdict.problems += _check_index(chains, runs)
    for run_id in sorted((only or set()) - chains.keys() - {link.run_id for link in links}):
        verdict.problems.append(
            f"run {run_id} is named, but neither its entries nor its links are there"
        )
    if head is not None and head not in {link.hash for link in links}:
        verdict.problems.append(
            f"the published head {head} is not in this chain of run heads: the store was "
            "rebuilt, cut back or replaced since it was published"
        )
    return verdict


def _check_run(run_id: str, entries: Iterable[StoredEntry], verdict: Verdict) -> _RunChain:
    chain = _RunChain()
    reported = False
    for entry in entries:
        verdict.entries += 1
        chain.first = chain.first or entry
        problem = _entry_problem(entry, chain)
        if problem and not reported:
            verdict.problems.append(f"run {run_id}, entry {entry.seq} ({entry.kind}): {problem}")
            reported = True  # the first bad entry; what follows it cannot be trusted either
        if entry.kind == "run.finished":
            chain.finished[len(chain.hashes) + 1] = str(_fields(entry).get("state"))
        chain.hashes.append(entry.hash)
    return chain


def _fields(entry: StoredEntry) -> dict[str, Any]:
    try:
        return entry.fields()
    except ValueError:
        return {}


def _entry_problem(entry: StoredEntry, chain: _RunChain) -> str | None:
    if entry.seq != chain.entries + 1:
        return (
            f"found where entry {chain.entries + 1} should be: entries were deleted, inserted "
            "or reordered"
        )
    if entry.prev != chain.last_hash:
        return (
            "it does not follow the entry before it (prev hash differs): an entry before it "
            "was edited, deleted, inserted or reordered"
        )
    digest = entry_hash(
        entry.prev, entry.run_id, entry.seq, entry.at, entry.kind, entry.v, entry.body
    )
    if digest != entry.hash:
        return "its contents do not match its hash: the entry was edited"
    return _shape_problem(entry)


def _shape_problem(entry: StoredEntry) -> str | None:
    """An entry golive would not have written, even if its hash is right."""
    problem = shape_problem(entry.kind, entry.body)
    return f"it is not an entry golive writes: {problem}" if problem else None


def _check_links(links: Sequence[Link]) -> list[str]:
    prev = GENESIS
    for number, link in enumerate(links, 1):
        if link.pos != number:
            return [f"run heads, link {link.pos}: found where link {number} should be"]
        if link.prev != prev:
            return [f"run heads, link {link.pos}: it does not follow the link before it"]
        digest = link_hash(
            link.prev,
            link.pos,
            link.run_id,
            link.event,
            link.state,
            link.entries,
            link.run_head,
            link.at,
        )
        if digest != link.hash:
            return [f"run heads, link {link.pos}: its contents do not match its hash"]
        prev = link.hash
    return []


def _check_seals(
    chains: dict[str, _RunChain], links: Sequence[Link], only: set[str] | None
) -> list[str]:
    """Every link must hold its run's entry as it is now, runs only grow, a sealed state is
    the one the run's entries give, and every run's newest entry has its link."""
    problems: dict[str, str] = {}
    latest: dict[str, Link] = {}
    for link in links:
        if only is not None and link.run_id not in only:
            continue
        chain = chains.get(link.run_id)
        if chain is None:
            problems.setdefault(
                link.run_id,
                f"run {link.run_id} is in the chain of run heads (link {link.pos}) but has no "
                "entries: the run was deleted",
            )
            continue
        problem = _link_problem(link, latest.get(link.run_id), chain)
        if problem:
            problems.setdefault(link.run_id, f"run {link.run_id}, link {link.pos}: {problem}")
        latest[link.run_id] = link
    for run_id, chain in chains.items():
        if run_id not in latest:
            problems.setdefault(
                run_id,
                f"run {run_id} has entries, but the chain of run heads never opened it: the "
                "run was inserted",
            )
        elif latest[run_id].entries < chain.entries:
            problems.setdefault(
                run_id,
                f"run {run_id}: its newest link holds entry {latest[run_id].entries}, but it "
                f"has {chain.entries}: entries after {latest[run_id].entries} were added "
                "outside golive",
            )
    return list(problems.values())


def _link_problem(link: Link, before: Link | None, chain: _RunChain) -> str | None:
    if before is not None and link.entries <= before.entries:
        return f"it holds entry {link.entries} after link {before.pos} held {before.entries}"
    if link.entries > chain.entries:
        return (
            f"it holds entry {link.entries}, but the run has only {chain.entries}: the "
            f"entries after {chain.entries} were cut off (truncated)"
        )
    if link.run_head != chain.hashes[link.entries - 1]:
        return f"entry {link.entries} is not the one it holds: the run was rewritten"
    ended = chain.state_at(link.entries)
    if link.event == "sealed" and link.state != ended:
        return f"it seals the run as {link.state!r}, but its entries end it as {ended!r}"
    return None


def _check_index(chains: dict[str, _RunChain], runs: dict[str, RunRow]) -> list[str]:
    problems = [
        f"run {run_id} has entries but is missing from the list of runs: it was hidden"
        for run_id in chains.keys() - runs.keys()
    ]
    for run_id, row in runs.items():
        chain = chains.get(run_id)
        if chain is None or chain.first is None:
            problems.append(f"run {run_id} is listed, but has no entries: the run was deleted")
            continue
        started = chain.first.fields() if chain.first.kind == "run.started" else {}
        listed = (row.started_at, row.environment, row.release, row.version, row.triggered_by)
        recorded = (chain.first.at, *(started.get(k) for k in _INDEXED))
        if listed != recorded:
            problems.append(f"run {run_id}: the list of runs does not match its first entry")
    return problems


_INDEXED = ("environment", "release", "version", "triggered_by")


# Listing


def select_runs(
    rows: Iterable[RunRow],
    environment: str | None = None,
    release: str | None = None,
    state: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    who: str | None = None,
) -> list[RunRow]:
    """Runs matching every filter given, newest first."""

    def matches(row: RunRow) -> bool:
        started = datetime.fromisoformat(row.started_at)
        return (
            (environment is None or row.environment == environment)
            and (release is None or release in f"{row.release} {row.version}")
            and (state is None or row.state == state)
            and (since is None or started >= since)
            and (until is None or started <= until)
            and (who is None or who.lower() in (row.triggered_by or "").lower())
        )

    return [row for row in rows if matches(row)]


# Exports


def export_jsonl(
    entries: Iterable[StoredEntry], links: Sequence[Link], runs: Sequence[str], store: str
) -> Iterator[str]:
    """One JSON object a line: a header naming the runs exported, every entry of those runs
    as stored, then every link of the heads chain (which holds every run's head: the chain
    cannot be checked in part)."""
    header = {"type": "export", "runs": list(runs), "store": store, "at": now()}
    yield json.dumps(header, ensure_ascii=False) + "\n"
    for entry in entries:
        yield json.dumps({"type": "entry", **asdict(entry)}, ensure_ascii=False) + "\n"
    for link in links:
        yield json.dumps({"type": "head", **asdict(link)}, ensure_ascii=False) + "\n"


@dataclass
class Export:
    runs: list[str]
    entries: list[StoredEntry]
    links: list[Link]


def read_jsonl(lines: Iterable[str]) -> Export:
    """An export read back: the runs it says it holds, the same entries and links."""
    export: Export | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            kind = item.pop("type")
            if export is None:
                if kind != "export" or not _texts(item.get("runs")):
                    raise ValueError("the first line is not the export's header")
                export = Export(item["runs"], [], [])
            elif kind == "entry":
                export.entries.append(StoredEntry(**_typed(item, StoredEntry)))
            elif kind == "head":
                export.links.append(Link(**_typed(item, Link)))
            else:
                raise ValueError(f"unknown type {kind!r}")
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
            raise ValueError(f"line {number} is not part of a golive export: {error}") from None
    if export is None:
        raise ValueError("it is empty: not a golive export")
    return export


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _typed(item: dict[str, Any], shape: type[Any]) -> dict[str, Any]:
    """The item's fields, each of the type the dataclass declares (int or str)."""
    for name, declared in shape.__annotations__.items():
        wanted = int if declared == "int" else str
        if type(item.get(name)) is not wanted:
            raise TypeError(f"{name} is not {wanted.__name__}")
    return item


def export_csv(entries: Iterable[StoredEntry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    columns = ["run_id", "seq", "at", "kind", "v", "prev", "hash", "body"]
    writer.writerow(columns)
    for entry in entries:
        writer.writerow([getattr(entry, column) for column in columns])
    return out.getvalue()


def timeline(record: dict[str, Any], width: int = 720, row: int = 18) -> dict[str, Any]:
    """The run's steps as bars on a time axis: what an SVG Gantt chart needs, no JavaScript."""
    steps = [s for s in record["steps"] if s.get("started_at")]
    if not steps:
        return {"bars": [], "height": 0, "width": width, "seconds": 0}
    start = min(_time(s["started_at"]) for s in steps)
    end = max(_time(s.get("finished_at") or s["started_at"]) for s in steps)
    span = max((end - start).total_seconds(), 0.001)
    bars = []
    for index, step in enumerate(steps):
        begin = (_time(step["started_at"]) - start).total_seconds()
        finish = (_time(step.get("finished_at") or step["started_at"]) - start).total_seconds()
        label = " ".join(str(step[k]) for k in ("stage", "gate", "host", "wave") if step.get(k))
        bars.append(
            {
                "label": label,
                "x": round(begin / span * width, 1),
                "w": max(round((finish - begin) / span * width, 1), 2),
                "y": index * row,
                "outcome": step["outcome"],
                "seconds": round(finish - begin, 2),
            }
        )
    return {"bars": bars, "height": len(bars) * row, "width": width, "seconds": round(span, 1)}


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)
