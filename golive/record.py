"""The run record: the journal folded into one JSON document a person or a program can read."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from golive.journal import Entry

_STEP_KEYS = ("stage", "host", "wave", "gate")


def summarize(entries: Iterable[Entry]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "taken_out": {},
        "steps": [],
        "gates": [],
        "hosts": {},
        "rollback": None,
        "state": "running",
    }
    open_steps: dict[tuple[Any, ...], dict[str, Any]] = {}
    for entry in entries:
        kind = entry["kind"]
        if kind == "run.started":
            record |= {k: v for k, v in entry.items() if k != "kind"} | {"started_at": entry["at"]}
            record["hosts"] = {host: {} for host in entry["fleet"]}
        elif kind.startswith("step."):
            _fold_step(record, open_steps, entry)
        elif kind.startswith("gate."):
            record["gates"].append(entry)
        elif kind in ("host.switching", "host.switched"):
            host = record["hosts"].setdefault(entry["host"], {})
            host.setdefault("before", entry["from"])
            host["after"] = entry["to"] if kind == "host.switched" else host.get("after")
        elif kind.startswith("rollback.") or kind == "host.restored":
            _fold_rollback(record, entry)
        elif kind == "host.taken_out":
            record["taken_out"][entry["host"]] = entry["reason"]
        elif kind == "run.finished":
            state = entry["state"]
            if state == "completed" and record["taken_out"]:
                state = "partial"  # live, but on fewer hosts than planned
            record |= {
                "state": state,
                "reason": entry.get("reason"),
                "finished_at": entry["at"],
            }
    return record


def _fold_step(
    record: dict[str, Any], open_steps: dict[tuple[Any, ...], dict[str, Any]], entry: Entry
) -> None:
    key = tuple(entry.get(k) for k in _STEP_KEYS)
    if entry["kind"] == "step.started":
        step = {k: entry[k] for k in _STEP_KEYS if entry.get(k) is not None}
        step |= {"started_at": entry["at"], "outcome": "running"}
        open_steps[key] = step
        record["steps"].append(step)
        return
    step = open_steps.pop(key, {"stage": entry["stage"]})
    step["finished_at"] = entry["at"]
    if entry["kind"] == "step.finished":
        step |= {"outcome": "ok", "result": entry.get("result", {})}
    else:
        step |= {"outcome": "failed", "error": entry.get("error")}


def _fold_rollback(record: dict[str, Any], entry: Entry) -> None:
    if entry["kind"] == "rollback.started":
        record["rollback"] = {"reason": entry["reason"], "hosts": {}, "started_at": entry["at"]}
    elif entry["kind"] == "host.restored":
        restored = {"to": entry["to"], "ok": entry["ok"], "error": entry.get("error")}
        if record["rollback"] is not None:
            record["rollback"]["hosts"][entry["host"]] = restored
        record["hosts"].setdefault(entry["host"], {})["rolled_back_to"] = (
            entry["to"] if entry["ok"] else None
        )
    elif entry["kind"] == "rollback.finished" and record["rollback"] is not None:
        record["rollback"]["finished_at"] = entry["at"]
        record["rollback"]["complete"] = entry["complete"]


def hosts_to_restore(entries: Iterable[Entry]) -> list[tuple[int, str, str | None]]:
    """(wave index, host, release it had before the run) for every host the run may have
    switched, in the order they were switched. A host is listed from the moment its switch
    was announced, so a crash mid-switch is still undone."""
    seen: dict[str, tuple[int, str, str | None]] = {}
    for entry in entries:
        if entry["kind"] == "host.switching" and entry["host"] not in seen:
            seen[entry["host"]] = (entry["wave"], entry["host"], entry["from"])
        elif entry["kind"] == "host.restored" and entry["ok"]:
            seen.pop(entry["host"], None)  # already back, e.g. taken out of the rollout
    return list(seen.values())
