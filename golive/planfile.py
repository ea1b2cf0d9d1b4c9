"""Reading a plan file and finding every problem in it at once.

Each top-level section is validated on its own, so one bad section does not hide the problems
of another; checks that span sections (waves against hosts, gates named by waves, URL
placeholders against host vars) run over every section that parsed.
"""

from __future__ import annotations

import hashlib
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from golive.errors import PlanError, Problem
from golive.plan import Gate, Migration, Plan, SmokeCheck, Targets, Wave, placeholders
from golive.waves import ResolvedWave, resolve_waves


@dataclass(frozen=True)
class PlanFile:
    """A valid plan, where it came from, and the sha256 of exactly what was read."""

    plan: Plan
    path: Path
    digest: str
    waves: tuple[ResolvedWave, ...]
    approvers_digest: str | None = None  # sha256 of the approver registry file, if one is used


def load_plan(path: str | Path) -> PlanFile:
    """Read and check a plan file; raise PlanError listing every problem."""
    source = Path(path)
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise PlanError(str(source), [Problem("", "the plan file does not exist")]) from None
    except OSError as error:
        raise PlanError(
            str(source), [Problem("", f"cannot read the plan: {error.strerror}")]
        ) from None
    raw = _parse_yaml(source, data)
    raw, registry_digest, problems = _include_approvers(raw, source.parent)
    sections, section_problems = _validate_sections(raw)
    problems += section_problems + _cross_check(sections)
    if problems:
        raise PlanError(str(source), problems)
    plan = _resolve_paths(Plan.model_validate(raw), source.parent.resolve())
    waves, _ = resolve_waves(plan.waves, plan.host_names())
    digest = hashlib.sha256(data).hexdigest()
    return PlanFile(plan, source.resolve(), digest, tuple(waves), registry_digest)


def _include_approvers(
    raw: dict[str, Any], base: Path
) -> tuple[dict[str, Any], str | None, list[Problem]]:
    """`approvers:` may name a YAML file (relative to the plan) instead of listing them: the
    registry of keys is the trust root, usually kept and reviewed apart from plans."""
    reference = raw.get("approvers")
    if not isinstance(reference, str):
        return raw, None, []
    path = base / reference
    try:
        data = path.read_bytes()
        registry = yaml.safe_load(data)
    except (OSError, yaml.YAMLError) as error:
        return (
            raw | {"approvers": {}},
            None,
            [Problem("approvers", f"cannot read the approver registry {path}: {error}")],
        )
    if not isinstance(registry, dict):
        return (
            raw | {"approvers": {}},
            None,
            [Problem("approvers", f"{path} is not a mapping of approver names to keys")],
        )
    return raw | {"approvers": registry}, hashlib.sha256(data).hexdigest(), []


def _parse_yaml(source: Path, data: bytes) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PlanError(str(source), [Problem(where, f"not valid YAML: {error}")]) from None
    if not isinstance(raw, dict):
        raise PlanError(
            str(source),
            [
                Problem(
                    "",
                    "a plan is a YAML mapping of sections; "
                    f"accepted sections: {', '.join(Plan.model_fields)}",
                )
            ],
        )
    return raw


def _validate_sections(raw: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    sections: dict[str, Any] = {}
    problems: list[Problem] = []
    for key in raw:
        if key not in Plan.model_fields:
            problems.append(
                Problem(str(key), f"unknown section; accepted: {', '.join(Plan.model_fields)}")
            )
    for name, field in Plan.model_fields.items():
        if name not in raw:
            if field.is_required():
                problems.append(Problem(name, "required section is missing"))
            else:
                sections[name] = field.get_default(call_default_factory=True)
            continue
        assert field.annotation is not None  # every Plan field is annotated
        try:
            sections[name] = TypeAdapter(field.annotation).validate_python(raw[name])
        except ValidationError as error:
            problems += [_problem(field.annotation, name, e) for e in error.errors()]
    return sections, problems


def _problem(annotation: Any, section: str, error: Any) -> Problem:
    loc = (section, *error["loc"])
    path = _yaml_path(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        accepted = ", ".join(_fields_at(annotation, error["loc"][:-1]))
        return Problem(path, f"unknown field; accepted: {accepted}")
    if kind == "missing":
        return Problem(path, "required field is missing")
    if kind == "literal_error":
        return Problem(
            path, f"{error['input']!r} is not accepted; accepted: {error['ctx']['expected']}"
        )
    message = error["msg"].removeprefix("Value error, ")
    found = error.get("input")
    shown = (
        "" if isinstance(found, dict | list) or repr(found) in message else f" (found {found!r})"
    )
    return Problem(path, f"{message}{shown}")


def _yaml_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for "the key itself", already named by the path
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _fields_at(annotation: Any, loc: tuple[Any, ...]) -> list[str]:
    """The field names a model accepts at a location inside a section's type."""
    current = annotation
    for part in loc:
        current = _unwrap(current, part)
    model = _model_in(current)
    return [f.alias or n for n, f in model.model_fields.items()] if model else []


def _unwrap(annotation: Any, part: Any) -> Any:
    model = _model_in(annotation)
    if model is not None and isinstance(part, str) and part in model.model_fields:
        return model.model_fields[part].annotation
    for arg in _type_args(annotation):
        if _model_in(arg) is not None or typing.get_origin(arg) in (list, dict):
            return arg if _model_in(arg) else typing.get_args(arg)[-1]
    return annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *_type_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _type_args(annotation: Any) -> Iterator[Any]:
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Annotated:
            arg = typing.get_args(arg)[0]
        yield arg
        if isinstance(arg, types.UnionType):
            yield from typing.get_args(arg)


# Checks that span sections. Each names the sections it needs and runs only when they parsed.

CrossCheck = Callable[..., list[Problem]]


def _cross_check(sections: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for check, needs in _CROSS_CHECKS:
        if all(name in sections for name in needs):
            problems += check(*(sections[name] for name in needs))
    return problems


def _unique_hosts(targets: Targets) -> list[Problem]:
    seen: dict[str, int] = {}
    problems = []
    for index, host in enumerate(targets.hosts):
        if host.name in seen:
            problems.append(
                Problem(
                    f"targets.hosts[{index}].name",
                    f"{host.name!r} is already targets.hosts[{seen[host.name]}]",
                )
            )
        seen.setdefault(host.name, index)
    return problems


def _waves_cover_hosts(targets: Targets, waves: list[Wave]) -> list[Problem]:
    return resolve_waves(waves, [h.name for h in targets.hosts])[1]


def _wave_gates_exist(waves: list[Wave], gates: dict[str, Gate]) -> list[Problem]:
    accepted = ", ".join(gates) or "none defined: add a `gates:` section"
    return [
        Problem(f"waves[{i}].gate", f"{w.gate!r} is not a gate; accepted: {accepted}")
        for i, w in enumerate(waves)
        if w.gate is not None and w.gate not in gates
    ]


def _gates_signed(
    gates: dict[str, Gate], approvers: dict[str, Any], environment: str
) -> list[Problem]:
    """Outside production a gate may take unsigned decisions; elsewhere every decision is
    signed by a registered approver, and the gate must name enough of them."""
    problems = []
    production = environment.lower().startswith("prod")
    for name, gate in gates.items():
        if gate.on_timeout == "approve" and production:
            problems.append(
                Problem(
                    f"gates.{name}.on_timeout",
                    f"'approve' is not allowed in "
                    f"environment {environment!r}: a production gate passes only "
                    "by signed decisions; accepted: 'reject'",
                )
            )
        if gate.allow_unsigned:
            if production:
                problems.append(
                    Problem(
                        f"gates.{name}.allow_unsigned",
                        f"not allowed in "
                        f"environment {environment!r}: production decisions are "
                        "signed",
                    )
                )
            continue
        people = {
            a
            for a, who in approvers.items()
            if a in gate.approvers or set(gate.approvers) & set(who.groups)
        }
        if len(people) < gate.quorum:
            known = ", ".join(approvers) or "none registered: add an `approvers:` section"
            problems.append(
                Problem(
                    f"gates.{name}.approvers",
                    f"{gate.quorum} signed approval(s) "
                    f"needed, but only {len(people)} registered approver(s) match; "
                    f"registered: {known}",
                )
            )
    return problems


def _gates_reachable(gates: dict[str, Gate]) -> list[Problem]:
    return [
        Problem(
            f"gates.{name}.quorum",
            f"{gate.quorum} approvals needed, but only "
            f"{len(set(gate.approvers))} approver(s) listed",
        )
        for name, gate in gates.items()
        if gate.quorum > len(set(gate.approvers))
    ]


def _placeholders_known(targets: Targets, smoke: list[SmokeCheck]) -> list[Problem]:
    templates = [(f"smoke[{i}].url", check.url) for i, check in enumerate(smoke)]
    templates.append(("targets.restart", targets.restart))
    problems = []
    for path, template in templates:
        for host in targets.hosts:
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
    return problems


def _databases_known(
    backups: list[Any], migrations: list[Migration], databases: dict[str, Any]
) -> list[Problem]:
    accepted = ", ".join(databases) or "none defined: add a `databases:` section"
    problems = [
        Problem(f"backups[{i}].database", f"{b.database!r} is not a database; accepted: {accepted}")
        for i, b in enumerate(backups)
        if getattr(b, "database", None) is not None and b.database not in databases
    ]
    for i, m in enumerate(migrations):
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


def _migrations_safe(
    migrations: list[Migration],
    gates: dict[str, Gate],
    backups: list[Any],
    databases: dict[str, Any],
) -> list[Problem]:
    problems = []
    accepted = ", ".join(gates) or "none defined"
    backed_up = {getattr(b, "database", None) for b in backups}
    only = next(iter(databases)) if len(databases) == 1 else None
    for i, m in enumerate(migrations):
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
        if database is not None and database not in backed_up:
            fix = f"add {{kind: postgres, database: {database}}} to backups"
            problems.append(
                Problem(
                    f"migrations[{i}]",
                    f"database {database!r} is migrated but not backed up; {fix}",
                )
            )
    return problems


_CROSS_CHECKS: list[tuple[CrossCheck, tuple[str, ...]]] = [
    (_databases_known, ("backups", "migrations", "databases")),
    (_migrations_safe, ("migrations", "gates", "backups", "databases")),
    (_unique_hosts, ("targets",)),
    (_waves_cover_hosts, ("targets", "waves")),
    (_wave_gates_exist, ("waves", "gates")),
    (_gates_reachable, ("gates",)),
    (_gates_signed, ("gates", "approvers", "environment")),
    (_placeholders_known, ("targets", "smoke")),
]


def _resolve_paths(plan: Plan, base: Path) -> Plan:
    """Relative paths in a plan are relative to the plan file, as in docker compose."""
    release = plan.release.model_copy(update={"artifact": base / plan.release.artifact})
    targets = plan.targets.model_copy(update={"path": base / plan.targets.path})
    migrations = [m.model_copy(update={"sql": base / m.sql}) for m in plan.migrations]
    storage = plan.backup_storage.model_copy(
        update={"directory": base / plan.backup_storage.directory.expanduser()}
    )
    return plan.model_copy(
        update={
            "release": release,
            "targets": targets,
            "migrations": migrations,
            "backup_storage": storage,
        }
    )
