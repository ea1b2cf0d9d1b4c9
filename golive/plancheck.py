"""Checks of a plan that span its sections, and of the files it names on this machine.

They read a PlanView: whatever parsed of the plan, item by item, so that one bad item hides
no other problem. Each check returns its problems, each with a YAML path and what is accepted.
"""

from __future__ import annotations

import os
import tarfile
import typing
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError

from golive import yamlfile
from golive.errors import Problem
from golive.plan import (
    DatabaseRef,
    Freeze,
    Gate,
    Host,
    Plan,
    SafeName,
    Targets,
    hosts_by_name,
    placeholders,
)
from golive.registry import Environment, environment
from golive.waves import resolve_waves


def clip(text: str, longest: int) -> str:
    return text if len(text) <= longest else text[: longest - 3] + "..."


def local_file(reference: Any, base: Path, what: str, largest: int) -> tuple[Path, str | None]:
    """A file on this machine a plan names: relative to the plan's folder (and inside it)
    unless absolute; a regular, readable, non-empty file of at most `largest` bytes."""
    given = Path(str(reference)).expanduser()
    path = given if given.is_absolute() else base / given
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError) as error:  # a link that leads to itself
        return path, f"the {what} {path} cannot be followed: {error}"
    if not given.is_absolute() and not resolved.is_relative_to(base):
        return path, (
            f"{str(reference)!r} leads out of the plan's folder {base} (to {resolved}); "
            "accepted: a path inside that folder, or an absolute path if you mean it"
        )
    try:
        os.close(yamlfile.open_regular(path, what, largest))
    except yamlfile.YamlRefused as refused:
        return path, str(refused)
    return path, None


class PlanView:
    """What parsed of a plan, as far as it did: the sections that parsed whole, and the items
    of list and mapping sections that parsed on their own while a sibling did not. Checks that
    span sections read this, so one bad item hides no other problem."""

    def __init__(
        self,
        raw: dict[str, Any],
        sections: dict[str, Any],
        base: Path,
        check_files: bool,
        registry: Environment,
    ) -> None:
        self.raw, self.sections, self.base, self.check_files = raw, sections, base, check_files
        self.registry = registry  # the plan's environment as the registry has it

    def complete(self, *names: str) -> bool:
        return all(name in self.sections for name in names)

    def items(self, name: str) -> dict[Any, Any]:
        """index -> item (list sections) or key -> item (mapping sections) that parsed."""
        if name in self.sections:
            value = self.sections[name]
            return dict(enumerate(value)) if isinstance(value, list) else dict(value)
        raw = self.raw.get(name)
        item = typing.get_args(Plan.model_fields[name].annotation)[-1]
        pairs = enumerate(raw) if isinstance(raw, list) else []
        pairs = raw.items() if isinstance(raw, dict) else pairs
        return {key: parsed for key, value in pairs if (parsed := _parsed(item, value)) is not None}

    def names(self, name: str) -> list[str]:
        """The keys of a mapping section, whether or not their values parsed."""
        raw = self.raw.get(name)
        return [str(key) for key in raw] if isinstance(raw, dict) else []

    def hosts(self) -> dict[int, Host]:
        if "targets" in self.sections:
            return dict(enumerate(self.sections["targets"].hosts))
        targets = self.raw.get("targets")
        if not isinstance(targets, dict) or not isinstance(targets.get("hosts"), list):
            return {}
        normalized = hosts_by_name(targets)["hosts"]
        return {i: parsed for i, host in enumerate(normalized) if (parsed := _parsed(Host, host))}

    def host_names(self) -> list[str] | None:
        """Every host's name as written, or None if some host has none."""
        targets = self.raw.get("targets")
        hosts = targets.get("hosts") if isinstance(targets, dict) else None
        if not isinstance(hosts, list):
            return None
        names = [
            h if isinstance(h, str) else h.get("name") if isinstance(h, dict) else None
            for h in hosts
        ]
        return names if all(isinstance(n, str) for n in names) else None  # type: ignore[return-value]

    def text(self, section: str, field: str) -> str | None:
        value = self.raw.get(section)
        found = value.get(field) if isinstance(value, dict) else None
        return found if isinstance(found, str) else None

    def environment(self) -> str | None:
        value = self.raw.get("environment")
        return value if isinstance(value, str) else None


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def adapter(annotation: Any) -> TypeAdapter[Any]:
    if annotation not in _ADAPTERS:
        _ADAPTERS[annotation] = TypeAdapter(annotation)
    return _ADAPTERS[annotation]


def _parsed(annotation: Any, value: Any) -> Any:
    try:
        return adapter(annotation).validate_python(value)
    except ValidationError:
        return None


def cross_check(view: PlanView) -> list[Problem]:
    problems: list[Problem] = []
    for check in _CROSS_CHECKS:
        problems += check(view)
    return problems


def _unique_names(view: PlanView) -> list[Problem]:
    """Hosts, waves, smoke checks, migrations and database backups: each named once."""
    problems = []
    named = [
        ("targets.hosts", {i: h.name for i, h in view.hosts().items()}, "name"),
        ("waves", {i: w.name for i, w in view.items("waves").items()}, "name"),
        ("smoke", {i: c.name for i, c in view.items("smoke").items()}, "name"),
        (
            "migrations",
            {i: _resolved(view.base, m.sql) for i, m in view.items("migrations").items()},
            "sql",
        ),
        ("targets.hosts", _deploy_dirs(view), "path"),
        (
            "backups",
            {i: b.database for i, b in view.items("backups").items() if hasattr(b, "database")},
            "database",
        ),
    ]
    for section, names, field in named:
        seen: dict[str, Any] = {}
        for index, name in names.items():
            if name is None:
                continue
            if name in seen:
                problems.append(
                    Problem(
                        f"{section}{_at(index)}.{field}",
                        f"{clip(repr(name), 80)} is already {section}{_at(seen[name])}; "
                        "accepted: each once",
                    )
                )
            seen.setdefault(name, index)
    return problems


def _deploy_dirs(view: PlanView) -> dict[int, str | None]:
    """Each host's deploy directory, for the hosts whose name is theirs alone."""
    hosts = view.hosts()
    names = Counter(h.name for h in hosts.values())
    return {i: _deploy_dir(view, h) for i, h in hosts.items() if names[h.name] == 1}


def _at(key: Any) -> str:
    return f"[{key}]" if isinstance(key, int) else f".{key}"


def _resolved(base: Path, path: Path) -> str:
    try:
        return str((base / path.expanduser()).resolve())
    except (RuntimeError, OSError):
        return str(base / path)


def _deploy_dir(view: PlanView, host: Host) -> str | None:
    """Where a host's releases go; two hosts in one place would overwrite each other."""
    transport = view.text("targets", "transport") or "local"
    root = view.text("targets", "path")
    if transport not in ("local", "ssh"):
        return None  # the transport's own problem is reported
    if host.path is not None:
        directory = str(host.path) if transport == "ssh" else _resolved(view.base, host.path)
    elif root is None:
        return None
    elif transport == "local":
        directory = _resolved(view.base, Path(root) / host.name)
    else:
        directory = root
    return f"{host.address}:{host.port}:{directory}" if transport == "ssh" else directory


def _waves_cover_hosts(view: PlanView) -> list[Problem]:
    names = view.host_names()
    if not view.complete("waves") or names is None:
        return []
    waves, problems = resolve_waves(view.sections["waves"], list(dict.fromkeys(names)))
    for wave in waves:
        budget = wave.wave.failure_budget(len(wave.hosts))
        if wave.hosts and budget >= len(wave.hosts):
            problems.append(
                Problem(
                    f"waves[{wave.index}].max_fail",
                    f"{wave.wave.max_fail!r} lets all {len(wave.hosts)} host(s) of the wave "
                    f"fail and the rollout go on; accepted: fewer than {len(wave.hosts)}",
                )
            )
    return problems


def _wave_gates_exist(view: PlanView) -> list[Problem]:
    gates = view.names("gates")
    accepted = ", ".join(gates) or "none defined: add a `gates:` section"
    return [
        Problem(f"waves[{i}].gate", f"{w.gate!r} is not a gate; accepted: {accepted}")
        for i, w in view.items("waves").items()
        if w.gate is not None and w.gate not in gates
    ]


def _gates_allowed(view: PlanView) -> list[Problem]:
    """A plan's gates live by its environment's registered rules: a plan may narrow them
    (more approvals, fewer approvers), never widen them."""
    if not view.complete("environment"):
        return []  # which rules apply is unknown; the environment's own problem is reported
    env = view.registry
    where = f"environment {env.name!r}" + ("" if env.registered else " (not registered)")
    rules = env.rules
    problems = []
    for name, gate in view.items("gates").items():
        if gate.on_timeout == "approve" and not rules.allow_timeout_approve:
            problems.append(
                Problem(
                    f"gates.{name}.on_timeout",
                    f"'approve' is not allowed in {where}: its gates pass only by decisions; "
                    "accepted: 'reject'",
                )
            )
        if gate.allow_unsigned and not rules.allow_unsigned:
            problems.append(
                Problem(
                    f"gates.{name}.allow_unsigned",
                    f"not allowed in {where}: its decisions are signed; accepted: false",
                )
            )
        if gate.quorum < rules.min_quorum:
            problems.append(
                Problem(
                    f"gates.{name}.quorum",
                    f"{gate.quorum} is below the floor of {where}; accepted: "
                    f"{rules.min_quorum} to 100",
                )
            )
        problems += _approvers_registered(name, gate, env)
    return problems


def _approvers_registered(name: str, gate: Gate, env: Environment) -> list[Problem]:
    """A gate names registered approvers or their groups, and enough of them to reach its
    quorum: a group counts as its members, and a signed gate only those with a key."""
    rules = env.rules
    groups = {g for who in rules.approvers.values() for g in who.groups}
    unknown = [a for a in gate.approvers if a not in rules.approvers and a not in groups]
    if not env.registered:
        return [
            Problem(
                f"gates.{name}.approvers",
                f"environment {env.name!r} is not registered, so nobody may approve its gates; "
                f"accepted: an environment `golive env show` lists, or register it with "
                f"`golive env set {env.name} RULES.yaml --key ADMIN.key`",
            )
        ]
    if unknown:
        known = ", ".join(sorted({*rules.approvers, *groups})) or "none"
        return [
            Problem(
                f"gates.{name}.approvers",
                f"{', '.join(unknown)} may not approve in environment {env.name!r}; accepted: "
                f"its registered approvers and groups: {known}",
            )
        ]
    people = [
        who
        for who in rules.may_decide(gate)
        if gate.allow_unsigned or rules.approvers[who].public_key
    ]
    if len(people) >= gate.quorum:
        return []
    what = "approval(s)" if gate.allow_unsigned else "signed approval(s)"
    return [
        Problem(
            f"gates.{name}.quorum",
            f"{gate.quorum} {what} needed, but only {len(people)} approver(s) could give one "
            f"(a group counts as its registered members): {', '.join(sorted(people)) or 'none'}",
        )
    ]


def _rehearsal_apart(view: PlanView) -> list[Problem]:
    """A rehearsal runs on an environment, hosts and databases of its own, never production's,
    and the plan's waves fit its hosts. Each part is judged if it parsed, whatever its
    siblings did."""
    raw = view.raw.get("rehearsal")
    if not isinstance(raw, dict):
        return []
    name = raw.get("environment")
    problems = _rehearsal_environment(view, name) if isinstance(name, str) else []
    targets: Targets | None = _parsed(Targets, raw.get("targets"))
    databases = _parsed(dict[SafeName, DatabaseRef], raw.get("databases") or {})
    if targets is not None:
        problems += _hosts_apart(view, targets)
        if view.complete("waves"):
            _, unfit = resolve_waves(view.sections["waves"], [h.name for h in targets.hosts])
            problems += [
                Problem("rehearsal.targets.hosts", f"for {p.path}: {p.message}") for p in unfit
            ]
    if databases is not None:
        problems += _databases_apart(view, databases)
    return problems


def _rehearsal_environment(view: PlanView, name: str) -> list[Problem]:
    if name == view.environment():
        why = "is the plan's own environment; accepted: an environment of its own"
    elif environment(name).rules.production:
        why = f"is a production environment (`golive env show {name}`); accepted: one that is not"
    else:
        return []
    return [Problem("rehearsal.environment", f"{name!r} {why}")]


def _hosts_apart(view: PlanView, targets: Targets) -> list[Problem]:
    ours = view.sections.get("targets")
    if ours is None:
        return []
    theirs = {_location(view.base, ours, host): host.name for host in ours.hosts}
    return [
        Problem(
            f"rehearsal.targets.hosts[{index}]",
            f"{host.name!r} is where the plan's host {theirs[where]!r} is ({where}); "
            "accepted: hosts of its own",
        )
        for index, host in enumerate(targets.hosts)
        if (where := _location(view.base, targets, host)) in theirs
    ]


def _location(base: Path, targets: Targets, host: Host) -> str:
    if host.block:  # where it is, its block says: two hosts of one block are one host
        return f"the block {host.block}"
    directory = targets.deploy_dir(host)
    if targets.transport == "ssh":
        return f"{host.address}:{host.port}:{directory}"
    return _resolved(base, Path(directory))


def _databases_apart(view: PlanView, rehearsing: dict[str, DatabaseRef]) -> list[Problem]:
    ours: dict[str, DatabaseRef] = view.sections.get("databases") or {}
    problems = [
        Problem(
            f"rehearsal.databases.{name}",
            f"missing; accepted: a database of its own for each of the plan's: {', '.join(ours)}",
        )
        for name in ours
        if name not in rehearsing
    ]
    where = {_database_at(db): name for name, db in ours.items()}
    for name, db in rehearsing.items():
        if _database_at(db) in where:
            problems.append(
                Problem(
                    f"rehearsal.databases.{name}",
                    f"is the plan's database {where[_database_at(db)]!r}; accepted: a "
                    "database of its own",
                )
            )
    return problems


def _database_at(db: DatabaseRef) -> str:
    return f"block {db.block}" if db.block else f"{db.host}:{db.port}/{db.dbname}"


def _placeholders_known(view: PlanView) -> list[Problem]:
    templates = [(f"smoke[{i}].url", check.url) for i, check in view.items("smoke").items()]
    restart = view.text("targets", "restart")
    if restart is not None:
        templates.append(("targets.restart", restart))
    problems = []
    for path, template in templates:
        if "<unbalanced braces>" in placeholders(template):
            continue  # the template's own check says so
        for host in view.hosts().values():
            known = host.template_values()
            missing = sorted(placeholders(template) - set(known))
            if missing:
                problems.append(
                    Problem(
                        path,
                        f"{{{missing[0]}}} has no value on host {host.name!r};"
                        f" accepted: {', '.join('{' + k + '}' for k in known)}",
                    )
                )
                break
            if path.startswith("smoke") and (bad := _bad_url(host.fill(template))):
                problems.append(Problem(path, f"on host {host.name!r}: {bad}"))
                break
    return problems


def _bad_url(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as error:
        return f"{url!r} is not a URL ({error})"
    if not parts.hostname:
        return f"{url!r} has no host to check"
    return None


def _databases_known(view: PlanView) -> list[Problem]:
    databases = view.names("databases")
    accepted = ", ".join(databases) or "none defined: add a `databases:` section"
    problems = [
        Problem(f"backups[{i}].database", f"{b.database!r} is not a database; accepted: {accepted}")
        for i, b in view.items("backups").items()
        if getattr(b, "database", None) is not None and b.database not in databases
    ]
    for i, m in view.items("migrations").items():
        path = f"migrations[{i}].database"
        if m.database is None and len(databases) != 1:
            problems.append(
                Problem(path, f"needed unless there is one database; accepted: {accepted}")
            )
        elif m.database is not None and m.database not in databases:
            problems.append(
                Problem(path, f"{m.database!r} is not a database; accepted: {accepted}")
            )
    return problems


def _migrations_safe(view: PlanView) -> list[Problem]:
    problems = []
    gates, databases = view.names("gates"), view.names("databases")
    accepted = ", ".join(gates) or "none defined"
    backed_up = {getattr(b, "database", None) for b in view.items("backups").values()}
    only = databases[0] if len(databases) == 1 else None
    for i, m in view.items("migrations").items():
        database = m.database or only
        if not m.reversible and m.gate is None:
            problems.append(
                Problem(
                    f"migrations[{i}].gate",
                    f"an irreversible migration needs a gate to approve it; accepted: {accepted}",
                )
            )
        if m.gate is not None and m.gate not in gates:
            problems.append(
                Problem(f"migrations[{i}].gate", f"{m.gate!r} is not a gate; accepted: {accepted}")
            )
        if database is not None and database not in backed_up and view.complete("backups"):
            fix = f"add {{kind: postgres, database: {database}}} to backups"
            problems.append(
                Problem(
                    f"migrations[{i}]",
                    f"database {database!r} is migrated but not backed up; {fix}",
                )
            )
    return problems


def _freezes_apart(view: PlanView) -> list[Problem]:
    dated = {i: w for i, w in view.items("freeze").items() if isinstance(w, Freeze)}
    windows = sorted(dated.items(), key=lambda item: item[1].starts)
    problems = []
    reach: tuple[int, Any] | None = None  # the window reaching furthest so far
    for i, w in windows:
        if reach is not None and w.starts <= reach[1].ends:
            j, v = reach
            problems.append(
                Problem(
                    f"freeze[{i}]",
                    f"{w.starts}..{w.ends} overlaps freeze[{j}] ({v.starts}..{v.ends}); "
                    "accepted: windows that do not overlap (merge them into one)",
                )
            )
        if reach is None or w.ends > reach[1].ends:
            reach = (i, w)
    return problems


# The most a file a plan names may hold: an artifact is a release, not a disk image.
_LARGEST = {"artifact": 16 * 2**30, "sql": 64 * 2**20, "key": 64 * 2**10}


def _local_files_there(view: PlanView) -> list[Problem]:
    """The files on this machine a plan names exist, are readable, and stay where they should,
    when the plan is validated: not when the run reaches them."""
    named: list[tuple[str, Any, str, int]] = []
    artifact = view.text("release", "artifact")
    if artifact is not None:
        named.append(("release.artifact", artifact, "release artifact", _LARGEST["artifact"]))
    for i, m in view.items("migrations").items():
        named.append((f"migrations[{i}].sql", m.sql, "migration", _LARGEST["sql"]))
    for i, host in view.hosts().items():
        if host.identity_file is not None:
            named.append(
                (
                    f"targets.hosts[{i}].identity_file",
                    host.identity_file,
                    "key file",
                    _LARGEST["key"],
                )
            )
    problems = []
    for path, reference, what, largest in named:
        found, problem = local_file(reference, view.base, what, largest)
        if problem and (view.check_files or "leads out" in problem):
            problems.append(Problem(path, problem))
        elif what == "release artifact" and view.check_files and (bad := _not_a_release(found)):
            problems.append(Problem(path, bad))
    problems += _local_places(view)
    return problems


def _not_a_release(artifact: Path) -> str | None:
    """A tarball with at least one file in it; only its first member is read here."""
    try:
        with tarfile.open(artifact) as tar:
            first = tar.next()
    except (tarfile.TarError, OSError, EOFError):
        return f"{artifact} is not a tarball (.tar, .tar.gz)"
    return f"{artifact} is an empty tarball: it holds no files" if first is None else None


def _local_places(view: PlanView) -> list[Problem]:
    """Where golive writes on this machine: known_hosts (accept-new adds to it) and backup
    storage. They may not exist yet, but may not be something else, or lead out of the
    plan's folder when relative."""
    places: list[tuple[str, Path, bool]] = [
        (f"targets.hosts[{i}].known_hosts", host.known_hosts, False)
        for i, host in view.hosts().items()
    ]
    storage = view.sections.get("backup_storage")
    if storage is not None and storage.block is None:
        places.append(("backup_storage.directory", storage.directory, True))
    audit = view.sections.get("audit")
    if audit is not None and audit.head_file is not None:
        places.append(("audit.head_file", audit.head_file, False))
    problems = []
    for path, place, folder in places:
        given = place.expanduser()
        found = given if given.is_absolute() else view.base / given
        resolved = Path(_resolved(view.base, given))
        if not given.is_absolute() and not resolved.is_relative_to(view.base):
            problems.append(Problem(path, f"{str(place)!r} leads out of the plan's folder"))
        elif found.exists() and (found.is_dir() != folder or not (folder or found.is_file())):
            wanted = "a folder" if folder else "a regular file"
            problems.append(Problem(path, f"{found} exists and is not {wanted}"))
    return problems


_CROSS_CHECKS: list[Callable[[PlanView], list[Problem]]] = [
    _databases_known,
    _migrations_safe,
    _unique_names,
    _waves_cover_hosts,
    _wave_gates_exist,
    _gates_allowed,
    _rehearsal_apart,
    _placeholders_known,
    _freezes_apart,
    _local_files_there,
]
