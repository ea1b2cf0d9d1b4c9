"""The go-live summary a person reads: Markdown rendered from the run record."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from jinja2 import ChainableUndefined, Environment, PackageLoader

from golive.hostlist import MANY_HOSTS

# A record of a run that stopped early lacks later fields; they read as empty, not as errors.
_env = Environment(
    loader=PackageLoader("golive", "templates"),
    undefined=ChainableUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)


BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], limit: Any) -> str:
    """A small chart of values in one line, scaled to a limit (a full bar: at or over it),
    or to the largest value when there is no limit."""
    if not values:
        return "-"
    top = limit if isinstance(limit, int | float) and limit > 0 else max(values) or 1.0
    return "".join(BARS[min(len(BARS) - 1, int(len(BARS) * v / top))] for v in values)


_env.filters["sparkline"] = sparkline


# Exports for auditors are HTML: everything from the store is escaped.
_html = Environment(
    loader=PackageLoader("golive", "templates"),
    undefined=ChainableUndefined,
    autoescape=True,
)


def render_summary(record: dict[str, Any], record_path: Path) -> str:
    """The run's report in Markdown. A fleet of more than MANY_HOSTS is told by outcome:
    hosts grouped by what happened to them, and only the steps that did not go well."""
    many = len(record["hosts"]) > MANY_HOSTS
    quiet = [s for s in record["steps"] if many and s.get("host") and s["outcome"] == "ok"]
    told = {id(step) for step in quiet}
    return _env.get_template("summary.md.j2").render(
        r=record,
        record_path=record_path,
        many=many,
        by_outcome=_by_outcome(record["hosts"], record.get("taken_out") or {}),
        quiet_steps=Counter(s["stage"] for s in quiet),
        shown_steps=[s for s in record["steps"] if id(s) not in told],
    )


def _by_outcome(
    hosts: dict[str, dict[str, Any]], taken_out: dict[str, str]
) -> list[tuple[tuple[Any, ...], list[str]]]:
    grouped: dict[tuple[Any, ...], list[str]] = {}
    for name, host in hosts.items():
        back = host.get("rolled_back_to") or ("none" if name in taken_out else None)
        after = "taken out" if name in taken_out else host.get("after")
        outcome = (host.get("before"), after, back)
        grouped.setdefault(outcome, []).append(name)
    return sorted(grouped.items(), key=lambda item: len(item[1]))  # the odd ones out first


def render_gate_brief(record: dict[str, Any], gate: str, **facts: Any) -> str:
    """What an approver needs to see to decide a gate, in Markdown."""
    return _env.get_template("gate.md.j2").render(r=record, gate=gate, **facts)


def render_audit_html(runs: list[dict[str, Any]], verdict: Any, store: str) -> str:
    """One self-contained page: runs, their timelines as SVG, approvals, checks, rollbacks,
    and how to verify the export."""
    return _html.get_template("audit.html.j2").render(runs=runs, verdict=verdict, store=store)
