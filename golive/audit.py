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

from golive.store import GENESIS, Link, RunRow, StoredEntry, entry_hash, link_hash

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
    entries: int = 0
    last_hash: str = GENESIS
    first_hash: str = ""
    first: StoredEntry | None = None


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
    verdict.runs = len(chains)
    verdict.problems += _check_links(links)
    verdict.problems += _check_seals(chains, links, only)
    if runs is not None:
        verdict.problems += _check_index(chains, runs)
    if head is not None and head not in {link.hash for link in links}:
        verdict.problems.append(
            f"the published head {head} is not in this store's chain of run heads: the store "
            "was rebuilt, rolled back or replaced since it was published"
        )
    return verdict


def _check_run(run_id: str, entries: Iterable[StoredEntry], verdict: Verdict) -> _RunChain:
    chain = _RunChain()
    reported = False
    for entry in entries:
        verdict.entries += 1
        chain.entries += 1
        chain.first = chain.first or entry
        problem = _entry_problem(entry, chain)
        if problem and not reported:
            verdict.problems.append(f"run {run_id}, entry {entry.seq} ({entry.kind}): {problem}")
            reported = True  # the first bad entry; what follows it cannot be trusted either
        chain.first_hash = chain.first_hash or entry.hash
        chain.last_hash = entry.hash
    return chain


def _entry_problem(entry: StoredEntry, chain: _RunChain) -> str | None:
    if entry.seq != chain.entries:
        return (
            f"found where entry {chain.entries} should be: entries were deleted, inserted "
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
    return None


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
    problems = []
    latest: dict[str, Link] = {}
    opened: dict[str, Link] = {}
    for link in links:
        latest[link.run_id] = link
        if link.event == "opened":
            opened.setdefault(link.run_id, link)
    for run_id, link in latest.items():
        if only is not None and run_id not in only:
            continue
        chain = chains.get(run_id)
        if chain is None:
            problems.append(
                f"run {run_id} is in the chain of run heads (link {opened.get(run_id, link).pos})"
                " but has no entries: the run was deleted"
            )
            continue
        if run_id in opened and opened[run_id].run_head != chain.first_hash:
            problems.append(f"run {run_id}: its first entry is not the one it was opened with")
        if link.event == "sealed":
            problems += _seal_problem(run_id, link, chain)
    for run_id in chains.keys() - opened.keys():
        problems.append(
            f"run {run_id} has entries, but the chain of run heads never opened it: the run "
            "was inserted"
        )
    return problems


def _seal_problem(run_id: str, seal: Link, chain: _RunChain) -> list[str]:
    if chain.entries < seal.entries:
        return [
            f"run {run_id}: sealed with {seal.entries} entries, but {chain.entries} are left: "
            f"entries {chain.entries + 1}..{seal.entries} were cut off (truncated)"
        ]
    if chain.entries > seal.entries:
        return [
            f"run {run_id}: sealed with {seal.entries} entries, but it has {chain.entries}: "
            f"entries after {seal.entries} were added outside golive"
        ]
    if chain.last_hash != seal.run_head:
        return [f"run {run_id}: its last entry is not the one it was sealed with: rewritten"]
    return []


def _check_index(chains: dict[str, _RunChain], runs: dict[str, RunRow]) -> list[str]:
    problems = []
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


def export_jsonl(entries: Iterable[StoredEntry], links: Sequence[Link]) -> Iterator[str]:
    """One JSON object a line: every entry as stored, then every link of the heads chain."""
    for entry in entries:
        yield json.dumps({"type": "entry", **asdict(entry)}, ensure_ascii=False) + "\n"
    for link in links:
        yield json.dumps({"type": "head", **asdict(link)}, ensure_ascii=False) + "\n"


def read_jsonl(lines: Iterable[str]) -> tuple[list[StoredEntry], list[Link]]:
    """An export read back: the same entries and links, ready to verify offline."""
    entries, links = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            kind = item.pop("type")
            if kind == "entry":
                entries.append(StoredEntry(**item))
            elif kind == "head":
                links.append(Link(**item))
            else:
                raise ValueError(f"unknown type {kind!r}")
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ValueError(f"line {number} is not an exported entry or head: {error}") from None
    return entries, links


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
