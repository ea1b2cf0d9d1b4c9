"""The go-live summary a person reads: Markdown rendered from the run record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import ChainableUndefined, Environment, PackageLoader

# A record of a run that stopped early lacks later fields; they read as empty, not as errors.
_env = Environment(
    loader=PackageLoader("golive", "templates"),
    undefined=ChainableUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)


# Exports for auditors are HTML: everything from the store is escaped.
_html = Environment(
    loader=PackageLoader("golive", "templates"),
    undefined=ChainableUndefined,
    autoescape=True,
)


def render_summary(record: dict[str, Any], record_path: Path) -> str:
    return _env.get_template("summary.md.j2").render(r=record, record_path=record_path)


def render_gate_brief(record: dict[str, Any], gate: str, **facts: Any) -> str:
    """What an approver needs to see to decide a gate, in Markdown."""
    return _env.get_template("gate.md.j2").render(r=record, gate=gate, **facts)


def render_audit_html(runs: list[dict[str, Any]], verdict: Any, store: str) -> str:
    """One self-contained page: runs, their timelines as SVG, approvals, checks, rollbacks,
    and how to verify the export."""
    return _html.get_template("audit.html.j2").render(runs=runs, verdict=verdict, store=store)
