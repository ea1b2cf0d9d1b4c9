"""Reading a plan file and finding every problem in it at once.

Each top-level section is validated on its own, so one bad section does not hide the problems
of another; checks that span sections (waves against hosts, gates named by waves, URL
placeholders against host vars) run over every section that parsed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ValidationError

from golive import yamlfile
from golive.errors import PlanError, Problem, describe_os_error
from golive.inventory import InventoryError, expand, expand_host, read_inventory
from golive.plan import Plan, Targets
from golive.plancheck import PlanView, adapter, clip, cross_check
from golive.registry import Environment, environment
from golive.waves import ResolvedWave, resolve_waves


@dataclass(frozen=True)
class PlanFile:
    """A valid plan, where it came from, and the sha256 of exactly what was read."""

    plan: Plan
    path: Path
    digest: str
    waves: tuple[ResolvedWave, ...]
    environment: Environment  # its rules as the registry had them when the plan was read
    inputs: dict[str, str] = dataclasses.field(default_factory=dict)  # pinned: file -> sha256
    # What a rehearsal proves (pinned): the plan file and its files, wherever it runs.
    release_digest: str = ""


def load_plan(path: str | Path, check_files: bool = True) -> PlanFile:
    """Read and check a plan file against its environment's registered rules; raise PlanError
    listing every problem (RegistryError if the registry does not verify). `check_files`
    also requires the local files it names (artifact, SQL, keys) to be there and readable:
    a rollback reads none of them, so it may run after they are gone."""
    source = Path(path).expanduser()  # a deployment's default names the worker's home
    try:
        data = yamlfile.read_bytes(source, "plan file")
        raw = yamlfile.load(yamlfile.decode(data, "plan file"))
    except yamlfile.YamlRefused as refused:
        raise PlanError(str(source), [Problem(w, m) for w, m in refused.problems]) from None
    if not isinstance(raw, dict):
        accepted = ", ".join(Plan.model_fields)
        raise PlanError(
            str(source),
            [Problem("", f"a plan is a YAML mapping of sections; accepted: {accepted}")],
        )
    base = source.resolve().parent
    named = raw.get("environment")
    registered = environment(named if isinstance(named, str) else "")
    raw, problems, inventories = hosts_expanded(raw, base)
    sections, section_problems = _validate_sections(raw)
    problems += section_problems
    view = PlanView(raw, sections, base, check_files, registered)
    problems += cross_check(view)
    if problems:
        raise PlanError(str(source), _bounded(problems))
    try:
        plan = _resolve_paths(Plan.model_validate(raw), base)
    except ValidationError as error:  # every section passed alone; the whole must too
        raise PlanError(str(source), [_problem(Plan, "", e) for e in error.errors()]) from None
    waves, _ = resolve_waves(plan.waves, plan.host_names())
    digest = hashlib.sha256(data + b"".join(inventories)).hexdigest()  # what it deploys to
    return PlanFile(plan, source.resolve(), digest, tuple(waves), registered)


def hosts_expanded(
    raw: dict[str, Any], base: Path
) -> tuple[dict[str, Any], list[Problem], list[bytes]]:
    """The plan with every host named: those of an `inventory` read in (of targets, and of
    the rehearsal's) and ranges (`web[01:20]`) expanded, as if listed one by one under
    `hosts`; what is wrong with an inventory or a range; the inventories as read (the plan's
    digest covers them: they say where it deploys)."""
    problems: list[Problem] = []
    inventories: list[bytes] = []
    for where, targets in _targets_sections(raw):
        if isinstance(targets.get("inventory"), str):
            problems += _read_inventory(where, targets, base, inventories)
        if isinstance(targets.get("hosts"), list):
            targets["hosts"], wrong = _ranges_expanded(where, targets["hosts"])
            problems += wrong
    return raw, problems, inventories


def _read_inventory(
    where: str, targets: dict[str, Any], base: Path, inventories: list[bytes]
) -> list[Problem]:
    if "hosts" in targets:
        return [Problem(f"{where}.hosts", "hosts come from `hosts` or `inventory`, not both")]
    path = base / Path(targets["inventory"]).expanduser()
    try:
        data = yamlfile.read_bytes(path, "inventory")
        targets["hosts"] = read_inventory(path, str(targets.get("group", "all")), data.decode())
        inventories.append(data)
    except yamlfile.YamlRefused as refused:
        return [Problem(f"{where}.inventory", message) for _, message in refused.problems]
    except OSError as error:
        return [Problem(f"{where}.inventory", describe_os_error(error, f"cannot read {path}"))]
    except (UnicodeDecodeError, InventoryError) as error:
        return [Problem(f"{where}.inventory", str(error))]
    return []


def _ranges_expanded(where: str, hosts: list[Any]) -> tuple[list[Any], list[Problem]]:
    expanded: list[Any] = []
    problems: list[Problem] = []
    for index, host in enumerate(hosts):
        named = host.get("name") if isinstance(host, dict) else host
        if not isinstance(named, str) or "[" not in named:
            expanded.append(host)
            continue
        try:
            expanded += expand(host) if isinstance(host, str) else expand_host(host)
        except InventoryError as error:
            problems.append(Problem(f"{where}.hosts[{index}]", str(error)))
    return expanded, problems


def _targets_sections(raw: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(raw.get("targets"), dict):
        yield "targets", raw["targets"]
    rehearsal = raw.get("rehearsal")
    if isinstance(rehearsal, dict) and isinstance(rehearsal.get("targets"), dict):
        yield "rehearsal.targets", rehearsal["targets"]


def _bounded(problems: list[Problem], most: int = 200, longest: int = 400) -> list[Problem]:
    """A hostile plan can make thousands of problems, or huge values inside them."""
    shown = [Problem(p.path[:120], clip(p.message, longest)) for p in problems[:most]]
    if len(problems) > most:
        shown.append(Problem("", f"... and {len(problems) - most} more problems"))
    return shown


_APPROVERS_MOVED = (
    "a plan does not choose who approves it: approvers are registered with the environment "
    "(`golive env set ENV RULES.yaml --key ADMIN.key`); accepted: gates naming them"
)


def _validate_sections(raw: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    sections: dict[str, Any] = {}
    problems: list[Problem] = []
    for key in raw:
        if key == "approvers":
            problems.append(Problem(key, _APPROVERS_MOVED))
        elif key not in Plan.model_fields:
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
        # A field's own validators (a SafeName's) live in its metadata, not its annotation.
        annotation = Annotated[field.annotation, *field.metadata] if field.metadata else None
        try:
            sections[name] = adapter(annotation or field.annotation).validate_python(raw[name])
        except ValidationError as error:
            found = [_problem(field.annotation, name, e, raw[name]) for e in error.errors()]
            problems += _most_precise(found)
    return sections, problems


def problems_in(model: type[BaseModel], error: ValidationError, raw: Any) -> list[Problem]:
    """A pydantic error about a whole YAML document of `model`'s shape, as plan problems are
    told: each with its YAML path and what is accepted."""
    return _most_precise([_problem(model, "", e, raw) for e in error.errors()])


def _problem(annotation: Any, section: str, error: Any, raw: Any = None) -> Problem:
    parts = _in_the_file(error["loc"], raw) if section else error["loc"]
    loc = (section, *parts) if section else parts
    path = _yaml_path(loc)
    kind = error["type"]
    if (plain := _plain(error)) is not None:
        return Problem(path, plain)
    if kind == "extra_forbidden":
        accepted = ", ".join(_fields_at(annotation, error["loc"][:-1]))
        return Problem(path, f"unknown field; accepted: {accepted}")
    if kind == "missing":
        return Problem(path, "required field is missing")
    if kind in ("greater_than_equal", "less_than_equal") and (
        span := _span(annotation, error["loc"])
    ):
        return Problem(path, f"{error.get('input')!r} is not accepted; accepted: {span}")
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


def _span(annotation: Any, loc: tuple[Any, ...]) -> str | None:
    """A bounded field's accepted values ("1 to 64"), where the field has both bounds."""
    model = _model_in(_at(annotation, loc[:-1]))
    field = model.model_fields.get(str(loc[-1])) if model else None
    bounds = {
        bound: getattr(constraint, bound)
        for constraint in (field.metadata if field else [])
        for bound in ("ge", "le")
        if hasattr(constraint, bound)
    }
    return f"{bounds['ge']} to {bounds['le']}" if len(bounds) == 2 else None


def _most_precise(found: list[Problem]) -> list[Problem]:
    """One problem a place, and none about a place that a deeper problem already explains: a
    union (a count, a share or names) fails once per branch it tried."""
    paths = {p.path for p in found}
    kept: dict[str, Problem] = {}
    for problem in found:
        deeper = any(other.startswith((f"{problem.path}[", f"{problem.path}.")) for other in paths)
        if not deeper:
            kept.setdefault(problem.path, problem)
    return list(kept.values())


def _in_the_file(loc: tuple[Any, ...], raw: Any) -> tuple[Any, ...]:
    """An error's location as the file has it: pydantic adds the branch of a union it tried
    (`int`, `list[str]`, a backup's `files`), which is no key of the plan."""
    kept: list[Any] = []
    current = raw
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if (isinstance(current, dict) and part in current) or (
            isinstance(current, list) and isinstance(part, int) and part < len(current)
        ):
            current = current[part]
        elif part != "[key]" and not (last and isinstance(current, dict)):
            continue  # a union's branch name
        kept.append(part)
    return tuple(kept)


# What to say, instead of pydantic's own words, when a value has the wrong type.
_ACCEPTED = {
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "model_type": "a mapping of fields (name: value)",
    "dict_type": "a mapping (name: value)",
    "list_type": "a list ([a, b] or one '- item' a line)",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
}


def _plain(error: Any) -> str | None:
    kind, found = error["type"], error.get("input")
    shown = clip(repr(found), 60)
    if kind in _ACCEPTED:
        return f"{shown} is not accepted; accepted: {_ACCEPTED[kind]}"
    if kind == "string_type" and isinstance(found, int | float) and not isinstance(found, bool):
        return f"a text is needed, found the number {shown}; write it in quotes: '{found}'"
    if kind == "string_type":
        return f"a text is needed, found {shown}"
    if kind == "union_tag_not_found":
        return "a backup needs `kind`; accepted: files, postgres"
    if kind == "union_tag_invalid":
        tag = clip(repr(error["ctx"]["tag"]), 40)
        return f"kind {tag} is not accepted; accepted: files, postgres"
    return None


def _yaml_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for "the key itself", already named by the path
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _fields_at(annotation: Any, loc: tuple[Any, ...]) -> list[str]:
    """The field names a model accepts at a location inside a section's type."""
    model = _model_in(_at(annotation, loc))
    return [f.alias or n for n, f in model.model_fields.items()] if model else []


def _at(annotation: Any, loc: tuple[Any, ...]) -> Any:
    """The type at a location inside a section's type."""
    for part in loc:
        annotation = _unwrap(annotation, part)
    return annotation


def _unwrap(annotation: Any, part: Any) -> Any:
    model = _model_in(annotation)
    if model is not None and isinstance(part, str) and part in model.model_fields:
        return model.model_fields[part].annotation
    for arg in _type_args(annotation):  # a tagged union's branch, named by its tag
        branch = _model_in(arg)
        if branch is not None and isinstance(part, str) and _tagged(branch, part):
            return branch
    for arg in _type_args(annotation):
        if _model_in(arg) is not None or typing.get_origin(arg) in (list, dict):
            return arg if _model_in(arg) else typing.get_args(arg)[-1]
    return annotation


def _tagged(model: type[BaseModel], tag: str) -> bool:
    """Whether `tag` is the value of one of the model's Literal fields (a backup's `kind`)."""
    return any(
        typing.get_origin(field.annotation) is typing.Literal
        and tag in typing.get_args(field.annotation)
        for field in model.model_fields.values()
    )


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


def _resolve_paths(plan: Plan, base: Path) -> Plan:
    """Relative paths in a plan are relative to the plan file, as in docker compose."""

    def here(path: Path) -> Path:
        return base / path.expanduser()

    release = plan.release.model_copy(update={"artifact": here(plan.release.artifact)})
    targets = _resolve_targets(plan.targets, here)
    rehearsal = plan.rehearsal
    if rehearsal:
        rehearsal = rehearsal.model_copy(
            update={"targets": _resolve_targets(rehearsal.targets, here)}
        )
    migrations = [m.model_copy(update={"sql": here(m.sql)}) for m in plan.migrations]
    storage = plan.backup_storage.model_copy(
        update={"directory": here(plan.backup_storage.directory)}
    )
    head_file = plan.audit.head_file
    audit = plan.audit.model_copy(update={"head_file": here(head_file) if head_file else None})
    return plan.model_copy(
        update={
            "release": release,
            "targets": targets,
            "migrations": migrations,
            "backup_storage": storage,
            "audit": audit,
            "rehearsal": rehearsal,
        }
    )


def _resolve_targets(targets: Targets, here: Callable[[Path], Path]) -> Targets:
    local = targets.transport == "local"
    hosts = [
        host.model_copy(
            update={
                "path": here(host.path) if host.path and local else host.path,
                "identity_file": here(host.identity_file) if host.identity_file else None,
            }
        )
        for host in targets.hosts
    ]
    return targets.model_copy(update={"path": here(targets.path), "hosts": hosts})
