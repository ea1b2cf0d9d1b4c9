"""The run record: the journal folded into one JSON document a person or a program can read."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from golive.journal import Entry
from golive.plan import Plan

_STEP_KEYS = ("stage", "host", "wave", "gate")
Fold = Callable[[dict[str, Any], Entry], None]


def summarize(entries: Iterable[Entry]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "state": "running",
        "hosts": {},
        "taken_out": {},
        "gates": [],
        "rollback": None,
        "steps": [],
        "_open_steps": {},
    }
    for entry in entries:
        kind = entry["kind"]
        fold = _FOLDS.get(kind) or _FOLDS.get(kind.split(".")[0] + ".*")
        if fold is not None:
            fold(record, entry)
    del record["_open_steps"]
    return record


_NOT_IN_RECORD = ("kind", "plan", "seq", "hash")  # the plan itself stays in the store


def _started(record: dict[str, Any], entry: Entry) -> None:
    record |= {k: v for k, v in entry.items() if k not in _NOT_IN_RECORD}
    record["closeout"] = (entry.get("plan") or {}).get("closeout") or []
    record["started_at"] = entry["at"]
    record["hosts"] = {host: {} for host in entry["fleet"]}


def _step_started(record: dict[str, Any], entry: Entry) -> None:
    step = {k: entry[k] for k in _STEP_KEYS if entry.get(k) is not None}
    step |= {"started_at": entry["at"], "outcome": "running"}
    record["_open_steps"][tuple(entry.get(k) for k in _STEP_KEYS)] = step
    record["steps"].append(step)


def _step_ended(record: dict[str, Any], entry: Entry) -> None:
    key = tuple(entry.get(k) for k in _STEP_KEYS)
    step = record["_open_steps"].pop(key, {"stage": entry["stage"]})
    step["finished_at"] = entry["at"]
    if entry["kind"] == "step.finished":
        step |= {"outcome": "ok", "result": entry.get("result", {})}
    else:
        step |= {"outcome": "failed", "error": entry.get("error")}
        step |= {"result": entry["result"]} if entry.get("result") else {}
    if entry["stage"] == "deploy":
        _deployed(record["hosts"].setdefault(entry["host"], {}), step)
    if entry["stage"] == "restore" and step["outcome"] == "ok" and step["result"].get("kept_as"):
        _database(record, {"database": entry["host"].removeprefix("database ")}).update(
            kept_as=step["result"]["kept_as"]
        )


def _deployed(host: dict[str, Any], step: dict[str, Any]) -> None:
    """A host's row: how long its deploy took and how much was sent, or why it failed."""
    if step["outcome"] == "failed":
        host["error"] = step["error"]
        return
    transfer = step["result"].get("transfer") or {}
    if step["result"].get("changed") is False:
        host["after"] = f"{step['result']['after']} (already there)"
    host |= {
        "seconds": step["result"].get("seconds"),
        "transfer": transfer.get("mode"),
        "bytes_sent": transfer.get("bytes_sent"),
        "artifact_bytes": transfer.get("artifact_bytes"),
    }


def _switch(record: dict[str, Any], entry: Entry) -> None:
    host = record["hosts"].setdefault(entry["host"], {})
    host.setdefault("before", entry["from"])  # runs recorded before host.found existed
    if entry["kind"] == "host.switched":
        host["after"] = entry["to"]


def _taken_out(record: dict[str, Any], entry: Entry) -> None:
    record["taken_out"][entry["host"]] = entry["reason"]


def _restored(record: dict[str, Any], entry: Entry) -> None:
    restored = {"to": entry["to"], "ok": entry["ok"], "error": entry.get("error")}
    if record["rollback"] is not None:
        record["rollback"]["hosts"][entry["host"]] = restored
    host = record["hosts"].setdefault(entry["host"], {})
    host["rolled_back_to"] = entry["to"] if entry["ok"] else None


def _rollback_started(record: dict[str, Any], entry: Entry) -> None:
    record["rollback"] = {"reason": entry["reason"], "hosts": {}, "started_at": entry["at"]}


def _rollback_finished(record: dict[str, Any], entry: Entry) -> None:
    if entry.get("by"):  # another run, a rollback, did it: its record has the steps
        by = {"run": entry["by"], "at": entry["at"], "complete": entry["complete"]}
        record.setdefault("rolled_back_by", []).append(by | {"failed": entry["failed"]})
    elif record["rollback"] is not None:
        record["rollback"] |= {"finished_at": entry["at"], "complete": entry["complete"]}


def _finished(record: dict[str, Any], entry: Entry) -> None:
    state = entry["state"]
    if state == "completed" and record["taken_out"]:
        state = "partial"  # live, but on fewer hosts than planned
    record |= {"state": state, "reason": entry.get("reason"), "finished_at": entry["at"]}


_FOLDS: dict[str, Fold] = {
    "run.started": _started,
    "step.started": _step_started,
    "step.finished": _step_ended,
    "step.failed": _step_ended,
    "gate.*": lambda record, entry: record["gates"].append(entry),
    "host.found": lambda r, e: (
        r["hosts"].setdefault(e["host"], {}).setdefault("before", e["release"])
    ),
    "host.switching": _switch,
    "host.switched": _switch,
    "host.taken_out": _taken_out,
    "host.restored": _restored,
    "rollback.started": _rollback_started,
    "rollback.finished": _rollback_finished,
    "run.finished": _finished,
    "rehearsal.finished": lambda r, e: r.update(
        rehearsal_result={k: v for k, v in e.items() if k not in ("kind", "seq", "hash", "at")}
    ),
    "database.backed_up": lambda r, e: _database(r, e)["backup"].update(
        {k: e[k] for k in ("path", "sha256", "size", "seconds", "verified")}
    ),
    "migration.applied": lambda r, e: _database(r, e)["migrations"].append(e["file"]),
    "migration.point_of_no_return": lambda r, e: r.update(point_of_no_return=e["file"]),
    "database.restored": lambda r, e: _database(r, e).update(restored=e["ok"]),
    "database.roll_forward": lambda r, e: r.update(roll_forward=e["reason"]),
}


def _database(record: dict[str, Any], entry: Entry) -> dict[str, Any]:
    databases: dict[str, dict[str, Any]] = record.setdefault("databases", {})
    return databases.setdefault(entry["database"], {"backup": {}, "migrations": []})


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
        elif entry["kind"] == "host.switch_abandoned":
            seen.pop(entry["host"], None)  # failed before its `current` moved
    return list(seen.values())


def migrated_databases(entries: Iterable[Entry]) -> list[str]:
    """Databases a migration may have changed ("database <name>"), from its first attempt on:
    a migration that was cut off may have committed before the journal heard of it."""
    names = {e["database"]: None for e in entries if e["kind"] == "migration.applying"}
    return [f"database {name}" for name in names]


def since_last_rollback(entries: list[Entry]) -> list[Entry]:
    """The entries after the run's last complete rollback: what it left undone since."""
    done = [i for i, e in enumerate(entries) if e["kind"] == "rollback.finished" and e["complete"]]
    return entries[done[-1] + 1 :] if done else entries


def left_undone(entries: list[Entry]) -> list[str]:
    """Hosts and databases the run changed that no rollback has put back yet."""
    since = since_last_rollback(entries)
    restored = {e["database"] for e in since if e["kind"] == "database.restored" and e["ok"]}
    databases = [
        name for name in migrated_databases(since) if name.removeprefix("database ") not in restored
    ]
    return [host for _, host, _ in hosts_to_restore(since)] + databases


def point_of_no_return(entries: Iterable[Entry]) -> Entry | None:
    return next((e for e in entries if e["kind"] == "migration.point_of_no_return"), None)


def live_hosts(entries: Iterable[Entry]) -> list[str]:
    """The hosts a run has put live so far: those its finished waves kept in the rollout."""
    return [host for e in entries if e["kind"] == "wave.finished" for host in e["hosts"]]


def plan_to_store(plan: Plan) -> dict[str, Any]:
    """The plan as a run's first entry keeps it: what the plan file set (paths made absolute),
    in the form `stored_plan` reads back to the same plan."""
    return plan.model_dump(mode="json", by_alias=True, exclude_unset=True)


def stored_plan(entries: Iterable[Entry]) -> Plan:
    """The plan a run carried out, as its first entry holds it; no file is read, so it serves
    after the plan's files are gone, and on another machine. (Runs an older golive recorded
    hold only the plan's path.)"""
    started = next(e for e in entries if e["kind"] == "run.started")
    if started.get("plan") is None:
        from golive.planfile import load_plan

        return load_plan(started["plan_path"], check_files=False).plan
    return Plan.model_validate(started["plan"])
