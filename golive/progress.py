"""Live progress in the terminal: one line per thing that happened, a spinner for what runs."""

from __future__ import annotations

import threading
import unicodedata
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.text import Text

from golive import journal
from golive.home import runs_dir
from golive.hostlist import MANY_HOSTS, in_short
from golive.journal import Entry


def ui_link(run_id: str, ui_url: str | None) -> str:
    if ui_url:
        return f"{ui_url.rstrip('/')}/runs/flow-run/{run_id}"
    return (
        f"`prefect server start`, then http://127.0.0.1:4200/runs/flow-run/{run_id} "
        "(this run used a temporary Prefect server; its history is kept)"
    )


class LiveProgress:
    """Renders every journal entry written in this process while the context is open."""

    def __init__(self, console: Console, ui_url: str | None) -> None:
        self.console = console
        self.ui_url = ui_url
        self.status = Status("starting", console=console)
        self.running: dict[tuple[Any, ...], str] = {}
        self.many = False  # a fleet of more than MANY_HOSTS: summaries, failures first
        self._lock = threading.Lock()  # entries come from every host's thread at once
        self._unsubscribe: Callable[[], None] = lambda: None

    def __enter__(self) -> LiveProgress:
        self._unsubscribe = journal.subscribe(self.show)
        self.status.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.status.stop()
        self._unsubscribe()

    def show(self, entry: Entry) -> None:
        with self._lock:
            self._show(entry)

    def _show(self, entry: Entry) -> None:
        if entry["kind"] == "run.started":
            self.many = many_hosts(entry)
        if entry["kind"].startswith("step."):
            self._step(entry)
            return
        line = _LINES.get(entry["kind"])
        if self.many and entry["kind"] in ("wave.started", "wave.finished"):
            self.console.print(escape(at_scale(entry)), style="bold")
        elif line and not (self.many and went_well_on_a_host(entry)):
            self.console.print(line(entry, self.ui_url))

    def _step(self, entry: Entry) -> None:
        key = (entry["stage"], entry.get("host"), entry.get("wave"))
        label = " ".join(str(part) for part in (entry["stage"], entry.get("host")) if part)
        if entry["kind"] == "step.started":
            self.running[key] = label
        else:
            self.running.pop(key, None)
            if not (self.many and went_well_on_a_host(entry)):
                self.console.print(_finished(entry, label))
        self.status.update(self._under_way() or "waiting")

    def _under_way(self) -> str:
        if not self.many:
            return ", ".join(self.running.values())
        stages = Counter(stage for stage, _, _ in self.running)
        return ", ".join(f"{stage} on {count} host(s)" for stage, count in stages.items())


def many_hosts(started: Entry) -> bool:
    """A run of a fleet this large is told by wave, failures first."""
    return len(started["fleet"]) > MANY_HOSTS


def went_well_on_a_host(entry: Entry) -> bool:
    """Something on one host that went well: at scale, counted in its wave's summary, not
    told. What failed on a host is always told."""
    failed = entry["kind"] in ("step.failed", "host.taken_out") or entry.get("ok") is False
    return bool(entry.get("host")) and not failed


def at_scale(entry: Entry) -> str:
    """An entry's line in a run of many hosts: a wave told by its size and its end."""
    if entry["kind"] == "wave.started":
        return f"── wave {entry['wave']}: {len(entry['hosts'])} hosts"
    if entry["kind"] == "wave.finished":
        return Text.from_markup(_wave_finished(entry, None)).plain.strip()
    return describe(entry)


def _wave_finished(e: Entry, _: str | None) -> str:
    out = f"; [yellow]taken out: {', '.join(e['taken_out'])}[/]" if e.get("taken_out") else ""
    return f"  [green]✓ wave {e['wave']}[/]: {len(e['hosts'])} host(s) live{out}"


def _finished(entry: Entry, label: str) -> str:
    if entry["kind"] == "step.failed":
        first_line = str(entry.get("error", "")).splitlines()[0] if entry.get("error") else ""
        return f"  [red]✗ {escape(label)}[/]: {escape(first_line)}"
    result = entry.get("result", {})
    return f"  [green]✓ {escape(label)}[/] [dim]{escape(_describe(entry['stage'], result))}[/]"


def _describe(stage: str, result: dict[str, Any]) -> str:
    if stage == "deploy":
        return f"{result.get('before') or 'nothing'} → {result.get('after')} ({_change(result)})"
    if stage == "backup":
        jobs = f", {result['jobs']} job(s)" if "jobs" in result else ""
        fewer = f" ({result['jobs_note']})" if result.get("jobs_note") else ""
        return (
            f"{result.get('bytes')} bytes, sha256 {str(result.get('sha256'))[:12]}…, verified"
            f"{jobs}{fewer}"
        )
    if stage == "smoke":
        return ", ".join(
            f"{c['check']} {c['status']} in {c['latency_ms']:.0f} ms"
            for c in result.get("checks", [])
        )
    if stage == "soak":
        return (
            f"{result.get('probes')} probes, {result.get('errors')} errors, "
            f"p95 {result.get('p95_ms')} ms"
        )
    if stage == "restore" and "row_counts" in result:  # a database
        tables, kept = len(result["row_counts"]), result.get("kept_as")
        return f"{tables} table(s) as backed up; the database it replaced kept as {kept}"
    if stage == "restore":
        return f"back on {result.get('release')}"
    return ""


def _change(deploy: dict[str, Any]) -> str:
    if deploy.get("changed") is False:
        return "already there"
    transfer = deploy.get("transfer") or {}
    sent, size = transfer.get("bytes_sent", 0) / 1024, transfer.get("artifact_bytes", 0) / 1024
    return f"{deploy.get('seconds')} s, {transfer.get('mode')}: {sent:.0f} of {size:.0f} kB sent"


def _started(e: Entry, ui_url: str | None) -> str:
    waves = " → ".join(f"{w['name']} [{in_short(w['hosts'])}]" for w in e["waves"])
    return (
        f"[bold]▶ {e['release']} {e['version']} → {e['environment']}[/]  "
        f"run [cyan]{e['run_id']}[/]\n"
        f"  waves: {escape(waves)}\n"
        f"  record: {escape(str(runs_dir() / e['run_id']))}\n"
        f"  Prefect UI: {escape(ui_link(e['run_id'], ui_url))}"
    )


def _gate_opened(e: Entry, _: str | None) -> str:
    return (
        f"[yellow]⏸ gate {e['gate']}[/] waits for {e['quorum']} approval(s) from "
        f"{', '.join(e['approvers'])} (open {e['timeout_seconds']:g} s). To decide:\n"
        f"    {escape(e['approve_command'])}   (or `golive reject …`, or the Prefect UI)"
    )


def _gate_decision(e: Entry, _: str | None) -> str:
    colour = "green" if e["decision"] == "approve" else "red"
    said = f": {escape(repr(e['comment']))}" if e.get("comment") else ""
    proof = "signed" if e.get("signature") else "unsigned"
    return (
        f"  [{colour}]{e['decision']}d[/] gate {e['gate']} by {escape(e['approver'])} "
        f"({proof}){said}"
    )


_STOPPING = (
    "\n  [yellow]Stopping: putting back what the run changed first. Pressing Ctrl-C again "
    "stops the rollback too, and leaves what it has not put back yet to `golive rollback`.[/]"
)

_LINES: dict[str, Callable[[Entry, str | None], str]] = {
    "run.started": _started,
    "wave.started": lambda e, _: f"[bold]── wave {e['wave']}[/]: {', '.join(e['hosts'])}",
    "host.taken_out": lambda e, _: (
        f"  [yellow]! {e['host']} taken out of the rollout[/] "
        "(within the wave's failure budget); putting it back"
    ),
    "wave.pause": lambda e, _: f"  [dim]… pausing {e['seconds']:g} s before the next wave[/]",
    "lease.waiting": lambda e, _: (
        f"  [yellow]… environment {escape(e['environment'])} is held by run {e['held_by']}: "
        "waiting for it[/]"
    ),
    "gate.opened": _gate_opened,
    "gate.decision": _gate_decision,
    "gate.refused": lambda e, _: (
        f"  [red]! refused[/] a {e['decision']} claimed by "
        f"{escape(e['claimed'])}: {escape(e['reason'])}"
    ),
    "gate.timed_out": lambda e, _: f"  [red]⏱ gate {e['gate']} timed out[/]",
    "gate.suspended": lambda e, _: (
        f"  [yellow]⏸ suspended at gate {e['gate']}[/]: no worker is held while it waits; a "
        f"decision (or the deadline, {e['deadline']}) brings it back"
    ),
    "run.resumed": lambda e, _: (
        f"[bold]▶ resumed[/] at gate {e['gate']} on {escape(e['holder'])}; done before, not "
        f"redone: {', '.join(e['done']) or 'nothing'}"
    ),
    "rollback.started": lambda e, _: (
        f"[bold red]↩ rolling back[/] {in_short(e['hosts']) or 'no host (none was changed)'}"
        + (_STOPPING if e["reason"].startswith("the run was stopped by") else "")
    ),
    "host.restored": lambda e, _: (
        f"  [green]↩ {e['host']} is back on {e['to']}[/]"
        if e["ok"]
        else f"  [red]↩ {e['host']} NOT restored[/]: {escape(str(e['error']))}"
    ),
    "run.finished": lambda e, _: (
        "[bold green]■ completed[/]"
        if e["state"] == "completed"
        else f"[bold red]■ {e['state']}[/]: {escape(e['reason'].splitlines()[0])}"
    ),
}


def printable(text: str) -> str:
    """Text from the store as a terminal may show it: no control characters (escape
    sequences could restyle, hide or link what an auditor reads)."""
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C")


def describe(entry: Entry) -> str:
    """One plain line for an entry of any kind: what `golive audit show` lists."""
    if entry["kind"] in ("step.finished", "step.failed"):
        label = " ".join(str(entry[k]) for k in ("stage", "host", "wave") if entry.get(k))
        return Text.from_markup(_finished(entry, label)).plain.strip()
    line = _LINES.get(entry["kind"])
    if line is not None and entry["kind"] != "run.started":
        return Text.from_markup(line(entry, None)).plain.strip().splitlines()[0]
    shown = {k: v for k, v in entry.items() if k not in _NOT_SHOWN and v not in (None, "", [])}
    about = ", ".join(f"{k}={_short(v)}" for k, v in shown.items())
    return f"{entry['kind']}: {about}" if about else entry["kind"]


_NOT_SHOWN = {"at", "kind", "seq", "hash", "plan", "brief", "result", "run_id", "waves"}


def _short(value: Any, most: int = 60) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= most else text[: most - 1] + "…"
