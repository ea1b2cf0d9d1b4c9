"""The `golive` command.

Prefect is imported only by the commands that run or resume flows: `golive validate` and
`golive status` answer without it, in well under a second.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from golive.errors import (
    GoLiveError,
    PlanError,
    RecordTampered,
    RegistryError,
    RollbackIncomplete,
    RunNotFound,
    StoreError,
    UnknownEnvironment,
    describe_os_error,
)
from golive.home import golive_home
from golive.hostlist import in_short
from golive.journal import Entry, RunJournal, refused_imports, run_store
from golive.lease import changed_something, with_crashes
from golive.plan import SAFE_NAME, parse_duration
from golive.planfile import PlanFile, load_plan
from golive.private import private_dir, write_private
from golive.progress import describe, printable
from golive.record import summarize
from golive.registry import Environment
from golive.store import RunRow, RunStore
from golive.undo import Undo

if TYPE_CHECKING:
    from golive.audit import Export
    from tasks.approvals import Submitted

console = Console(emoji=False)  # text from plans and the store: no :codes: as emoji
_DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]
_EXPORTS = ("jsonl", "csv", "html")
_STATES = (
    "running",
    "completed",
    "partial",
    "failed",
    "cancelled",
    "crashed",
    "rolled back",
    "rollback failed",
    "refused",
)
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_PARTIAL, EXIT_ROLLBACK_FAILED = 1, 2, 3, 4
EXIT_INTERNAL = 70  # sysexits' EX_SOFTWARE: a fault in golive itself, not in what it was given
# How long `golive approve` waits for a suspended run to be taken up again and judge a decision.
SUSPENDED_FATE_SECONDS = 300
OPENING_SECONDS = 90  # how long an approval waits for a run to pause at the gate it opened


def console_main() -> None:
    """The `golive` command. Click answers misuse (exit 2); golive's own errors are one clear
    message (exit 1); anything else is golive's fault: one line, and the trace in a file."""
    # What the imports built lives as long as the process: the collector need not walk it
    # again, during the command or at exit, where it cost a short command like `golive
    # validate` a fifth of its time.
    gc.freeze()
    try:
        main(standalone_mode=True)
    except GoLiveError as error:
        Console(stderr=True, emoji=False).print(
            f"[red]{escape(str(error))}[/]", highlight=False, soft_wrap=True
        )
        sys.exit(EXIT_FAILED)
    except Exception as error:
        report = crash_report(error)
        Console(stderr=True, emoji=False).print(
            f"[red]golive failed unexpectedly ({type(error).__name__}: "
            f"{escape(_first_line(error))}). This is a fault in golive, not in what you gave it."
            f"\nThe full trace is in {report}; please include it when you report this.[/]",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_INTERNAL)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Go-live orchestrator: verified backups, waves, smoke checks, gates, automatic rollback."""


@main.command()
@click.argument("plan", type=click.Path(dir_okay=False, path_type=Path))
def validate(plan: Path) -> None:
    """Check a plan and report every problem at once (exit 2 if there are any)."""
    plan_file = _load(plan)
    p = plan_file.plan
    waves = " → ".join(f"{w.name} [{in_short(w.hosts)}]" for w in plan_file.waves)
    console.print(
        f"[green]✓ {escape(str(plan))}[/]: {p.release.name} {p.release.version} → "
        f"{p.environment}, {len(p.targets.hosts)} hosts in {len(plan_file.waves)} "
        f"waves: {escape(waves)}",
        highlight=False,
    )


@main.command()
def check() -> None:
    """Whether what this machine's settings name answers: the run store, the Prefect API, and
    on a Prefect server's machine its database and Redis (exit 1 if anything does not)."""
    from golive.check import findings

    found = findings()
    for finding in found:
        mark = "[green]✓[/]" if finding.ok else "[red]✗[/]"
        said = "answers" if finding.ok else escape(finding.problem or "")
        console.print(
            f"{mark} {finding.setting} = {escape(finding.value)}: {said}",
            highlight=False,
            soft_wrap=True,
        )
    if not all(finding.ok for finding in found):
        console.print("Nothing was started. Fix the settings marked ✗, then check again.")
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("plan", type=click.Path(dir_okay=False, path_type=Path))
def schedule(plan: Path) -> None:
    """Rehearse a plan on its `rehearsal.schedule`, on the Prefect server's rehearsal deployment
    (PREFECT_API_URL); again, to change it."""
    from golive.schedules import schedule_rehearsal

    plan_file = _load(plan)
    _quiet_prefect_console()
    try:
        scheduled = schedule_rehearsal(plan_file)
    except GoLiveError as refused:
        _bad_input(str(refused))
    verb = "Rescheduled" if scheduled.replaced else "Scheduled"
    console.print(
        f"[green]{verb}:[/] the rehearsal of {escape(str(plan_file.path))}, "
        f"cron '{scheduled.cron}' ({scheduled.timezone}), on deployment "
        f"{scheduled.deployment} (schedule {scheduled.slug}). Each run's result is in the run "
        "store: `golive audit list`.",
        highlight=False,
    )


@main.command()
@click.argument("plan", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--as", "triggered_by", default="", help="Who triggers the run (default: user@host).")
@click.option(
    "--wait",
    metavar="DURATION",
    help="While another run holds the environment, wait this long for it (e.g. 10m) "
    "instead of being refused.",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sign the run's start with your registered key (production runs must be signed).",
)
@click.option("--passphrase-env", metavar="VAR", help="The variable holding the key's passphrase.")
@click.option(
    "--override-freeze",
    "override",
    metavar="WHY",
    default="",
    help="Go ahead inside a change freeze, for this reason (signed: needs --key).",
)
@click.option(
    "--rehearsal",
    is_flag=True,
    help="Rehearse the plan on its rehearsal environment, ending with a rollback drill.",
)
def run(
    plan: Path,
    triggered_by: str,
    wait: str | None,
    key: Path | None,
    passphrase_env: str | None,
    override: str,
    rehearsal: bool,
) -> None:
    """Carry out a plan. Exit 0: live on every host (a rehearsal: passed, and rolled back);
    3: live, but hosts were taken out within a failure budget; 1: failed (and rolled back);
    4: failed, and the rollback could not put every host back (they need a person); 2: the
    plan is not valid."""
    if printable(triggered_by) != triggered_by or len(triggered_by) > 200:
        _bad_input("--as: a name of at most 200 characters, without control characters")
    try:
        wait_seconds = parse_duration(wait) if wait else 0.0
    except ValueError as error:
        _bad_input(f"--wait: {error}")
    plan_file = _load(plan)
    if rehearsal and plan_file.plan.rehearsal is None:
        _bad_input(f"{plan}: --rehearsal, but the plan has no `rehearsal:` section to run on")
    if rehearsal:
        from golive.rehearsal import rehearsal_of

        plan_file = rehearsal_of(plan_file)  # what the start's signature covers
    if not plan_file.environment.registered:
        _bad_input(str(UnknownEnvironment(plan_file.plan.environment)))
    if override and (key is None or not override.strip() or len(override) > 500):
        _bad_input("--override-freeze needs a reason (at most 500 characters) and --key to sign it")
    signed = _signed_start(plan_file, triggered_by, key, _passphrase(passphrase_env), override)
    sys.exit(
        _run_go_live(
            plan, triggered_by, wait_seconds, *signed, rehearsal=rehearsal, override=override
        )
    )


def _signed_start(
    plan_file: PlanFile,
    triggered_by: str,
    key_file: Path | None,
    passphrase: str | None,
    override: str = "",
) -> tuple[str, str]:
    """The releaser's signature of this start (and when it was made), with `--key`."""
    if key_file is None:
        return "", ""
    from golive.inputs import run_digest
    from golive.signing import Start, sign

    private = _private_key(key_file, passphrase)
    at = datetime.now(UTC).isoformat()
    start = Start(run_digest(plan_file), plan_file.plan.environment, triggered_by, at, override)
    return sign(start, private), at


def _private_key(key_file: Path, passphrase: str | None) -> Ed25519PrivateKey:
    from golive.signing import load_private_key

    if not key_file.is_file():
        _bad_input(f"--key {key_file} is not a key file; `golive keygen NAME` makes one")
    try:
        return load_private_key(key_file, passphrase)
    except GoLiveError as error:
        _bad_input(str(error))


Command = Callable[..., None]


def _decision_options(verb: str, comment_required: bool) -> Callable[[Command], Command]:
    def wrap(command: Command) -> Command:
        for option in reversed(
            [
                click.argument("run_id", metavar="RUN"),
                click.option("--as", "approver", required=True, help="Your name, as registered."),
                click.option(
                    "--key",
                    type=click.Path(dir_okay=False, path_type=Path),
                    help="Your private key from `golive keygen` (signs the decision).",
                ),
                click.option(
                    "--passphrase-env",
                    metavar="VAR",
                    help="Environment variable holding the key's passphrase.",
                ),
                click.option(
                    "--gate", help=f"The gate to {verb} (default: the one the run waits at)."
                ),
                click.option(
                    "--comment",
                    required=comment_required,
                    default="",
                    help="Why: kept, signed, in the run record and report.",
                ),
            ]
        ):
            command = option(command)
        return command

    return wrap


@main.command()
@_decision_options("approve", comment_required=False)
def approve(
    run_id: str,
    approver: str,
    key: Path | None,
    passphrase_env: str | None,
    gate: str | None,
    comment: str,
) -> None:
    """Approve the gate a paused run waits at, signed with your key."""
    _decide(run_id, "approve", approver, key, passphrase_env, gate, comment)


@main.command()
@_decision_options("reject", comment_required=True)
def reject(
    run_id: str,
    approver: str,
    key: Path | None,
    passphrase_env: str | None,
    gate: str | None,
    comment: str,
) -> None:
    """Reject the gate a paused run waits at: the run stops and rolls back."""
    _decide(run_id, "reject", approver, key, passphrase_env, gate, comment)


@main.command()
@click.argument("name")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (default: NAME.key).",
)
@click.option("--passphrase-env", metavar="VAR", help="Encrypt the key with this variable's value.")
@click.option("--no-passphrase", is_flag=True, help="Write the key unencrypted (not advised).")
def keygen(name: str, out: Path | None, passphrase_env: str | None, no_passphrase: bool) -> None:
    """Make an approver's Ed25519 key pair; prints the public key to register in the plan."""
    from golive.signing import new_key_pair

    private = _new_key_file(name, out)
    passphrase = _keygen_passphrase(passphrase_env, no_passphrase)
    try:
        public = new_key_pair(private, passphrase)
    except OSError as error:
        _bad_input(describe_os_error(error, f"cannot write {private}") + "; nothing was written")
    console.print(
        f"Private key: {private} (keep it to yourself)\nAn environment's admin registers "
        f"the public key in its rules (`golive env set ENV RULES.yaml --key ADMIN.key`):"
        f'\n\napprovers:\n  {name}: {{public_key: "{public}"}}',
        highlight=False,
    )


def _new_key_file(name: str, out: Path | None) -> Path:
    """Where a new key may go: a name that is no path, a folder that exists, no file there."""
    if not SAFE_NAME.match(name):
        _bad_input(
            f"{name!r} is not an approver name (it looks like a path?); accepted: letters, "
            "digits, '.', '_', '-'. Choose where the key goes with --out"
        )
    private = out or Path(f"{name}.key")
    try:
        folder, taken = private.parent.is_dir(), private.exists() or private.is_symlink()
    except OSError as error:
        _bad_input(describe_os_error(error, f"cannot write {private}") + "; nothing was written")
    if not folder:
        _bad_input(f"the folder {private.parent} does not exist; create it or choose another --out")
    if taken:
        _bad_input(f"{private} exists already; choose another --out")
    return private


def _keygen_passphrase(variable: str | None, none_wanted: bool) -> str | None:
    """A key is encrypted unless its maker says plainly that it should not be."""
    if variable and none_wanted:
        _bad_input("--passphrase-env and --no-passphrase exclude each other; choose one")
    if not variable and not none_wanted:
        _bad_input(
            "a private key is written encrypted: give --passphrase-env VAR (the variable "
            "holding its passphrase), or --no-passphrase to write it unencrypted"
        )
    return _passphrase(variable)


@main.command()
@click.argument("run_id", metavar="RUN", required=False)
def status(run_id: str | None) -> None:
    """Where a run is and what it has done; with no RUN, the recent runs."""
    if run_id is None:
        store = _store(none_yet_is_fine=True)
        _list_runs(with_crashes(store, store.run_rows()[:20]))
        for run, why in refused_imports.items():
            console.print(
                f"[yellow]{escape(why.path)} was not imported into the run store "
                f"(it does not read back): `golive status {run}` says why[/]",
                highlight=False,
                soft_wrap=True,
            )
        return
    journal = _find(run_id)
    record = summarize(journal.entries())
    _print_summary(record, journal.run_dir / "record.json")
    row = _row_with_crash(journal)
    if row.state == "crashed" and not changed_something(journal):
        console.print(
            f"[bold]Run {journal.run_id} crashed before it changed any host or database:[/] "
            "every host and database is as it was, and its environment takes the next run"
        )
    elif row.state == "crashed":
        console.print(
            f"[bold red]Run {journal.run_id} crashed:[/] it never finished and its process no "
            "longer holds the environment. Its hosts may be on mixed releases; roll it back: "
            f"`golive rollback {journal.run_id[:8]}`"
        )
    waiting = _open_gate(journal) if record["state"] == "running" else None
    if waiting is not None:
        decide = f"{waiting['brief']}\n\nTo decide: `{waiting['approve_command']}`"
        suspended = [e for e in journal.of_kind("gate.suspended") if e["at"] >= waiting["at"]]
        if suspended:
            decide += (
                "\n\nThe run is **suspended** here: no process runs it and no worker is held. "
                "A decision resumes it on a worker of its pool; at the gate's deadline "
                f"({suspended[-1]['deadline']}) its timer does."
            )
        _print_markdown(decide)


@main.group()
def env() -> None:
    """The environment registry: which environments are production, who approves there."""


@env.command("set")
@click.argument("name")
@click.argument("rules_file", metavar="RULES", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="An admin's key: one the rules name (first time) or the current rules name.",
)
@click.option("--passphrase-env", metavar="VAR", help="Environment variable with its passphrase.")
def env_set(name: str, rules_file: Path, key: Path, passphrase_env: str | None) -> None:
    """Register environment NAME with the rules in RULES (YAML), or change its rules."""
    from golive.registry import read_rules, set_environment

    if not SAFE_NAME.match(name):
        _bad_input(f"{name!r} is not an environment name; accepted: letters, digits, '.', '_', '-'")
    private = _private_key(key, _passphrase(passphrase_env))
    try:
        registered = set_environment(name, read_rules(rules_file), private)
    except RegistryError as error:
        _bad_input(str(error))
    console.print(
        f"[green]✓ environment {name}[/] registered by {registered.changed_by} "
        f"(registry version {registered.version})",
        highlight=False,
    )
    _show_environment(registered)


@env.command("show")
@click.argument("name", required=False)
def env_show(name: str | None) -> None:
    """The registered environments, or one with its approvers and keys."""
    from golive.registry import environment, registered

    try:
        environments = [environment(name)] if name else registered()
    except RegistryError as error:
        _bad_input(str(error))
    if not environments:
        console.print("no environments are registered: `golive env set NAME RULES --key KEY`")
    for each in environments:
        _show_environment(each)


def _show_environment(each: Environment) -> None:
    rules = each.rules
    if not each.registered:
        console.print(
            f"{escape(each.name)}: not registered; strict rules (signed decisions only, no "
            "timeout-approve, nobody may approve its gates)",
            highlight=False,
        )
        return
    never = {False: "no", True: "yes"}
    console.print(
        f"[bold]{escape(each.name)}[/]: production {never[rules.production]}, "
        f"min quorum {rules.min_quorum}, unsigned decisions {never[rules.allow_unsigned]}, "
        f"timeout-approve {never[rules.allow_timeout_approve]}, signed start "
        f"{never[rules.needs_signed_start()]}; changed by {each.changed_by} at "
        f"{(each.changed_at or '')[:19]}",
        highlight=False,
    )
    table = Table("who", "role", "groups", "public key")
    table.columns[3].overflow = "fold"  # whole, to compare with the key an approver holds
    for who, key in rules.admins.items():
        table.add_row(who, "admin", "", key)
    for who, approver in rules.approvers.items():
        table.add_row(who, "approver", ", ".join(approver.groups), approver.public_key or "-")
    for who, key in rules.releasers.items():
        table.add_row(who, "releaser", "", key)
    console.print(table)


@main.group()
def audit() -> None:
    """Read, verify and export the run store: for auditors."""


@audit.command("list")
@click.option("--environment", help="Only runs on this environment.")
@click.option("--release", help="Only runs of this release (name, version or both).")
@click.option("--state", type=click.Choice(_STATES), help="Only runs in this state.")
@click.option("--since", type=click.DateTime(_DATE_FORMATS), help="Started on or after.")
@click.option("--until", type=click.DateTime(_DATE_FORMATS), help="Started on or before.")
@click.option("--who", help="Only runs whose trigger contains this (user, machine).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
def audit_list(limit: int, **filters: Any) -> None:
    """One line a run, newest first."""
    rows = _selected_runs(filters)
    _list_runs(rows[:limit])
    if len(rows) > limit:
        console.print(f"[dim]… {len(rows) - limit} older runs; raise --limit to see them[/]")


@audit.command("show")
@click.argument("run_id", metavar="RUN")
def audit_show(run_id: str) -> None:
    """A run's timeline: stages, waves, hosts, gates, rollbacks, who and when."""
    journal = _find(run_id)
    try:
        journal.verified()
    except RecordTampered as tampered:
        Console(stderr=True, emoji=False).print(f"[red]{escape(str(tampered))}[/]", highlight=False)
        console.print("[bold red]What follows may have been altered.[/]")
    entries = journal.entries()
    record = summarize(entries)
    _print_summary(record, journal.run_dir / "record.json")
    table = Table("#", "at", "what", title="Timeline", title_justify="left")
    for entry in entries:
        table.add_row(str(entry["seq"]), entry["at"][11:23], escape(printable(describe(entry))))
    console.print(table)


@audit.command("verify")
@click.option("--head", metavar="HASH", help="A head published earlier: the store must hold it.")
@click.option(
    "--file",
    "export",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verify a jsonl export instead of the store (offline).",
)
def audit_verify(head: str | None, export: Path | None) -> None:
    """Recompute every chain; name the first bad entry (exit 1) or say all is well."""
    from golive import audit as ledger

    if head is not None and not re.fullmatch("[0-9a-f]{64}", head):
        _bad_input(f"--head {head!r}: a head is 64 hexadecimal digits, as a report shows it")
    if export is not None:
        read = _read_export(export)
        verdict = ledger.verify(read.entries, read.links, head=head, only=set(read.runs))
        where = str(export)
    else:
        store = _store()
        runs = {row.run_id: row for row in store.run_rows(with_other_chains=True)}
        verdict = ledger.verify(store.all_entries(), store.heads(), runs, head=head)
        where = f"run store {store.shown}"
    _tell_verdict(where, verdict, checked_head=head is not None)


@audit.command("export")
@click.option("--format", "fmt", type=click.Choice(_EXPORTS), default="jsonl", show_default=True)
@click.option("--run", "run_id", metavar="RUN", help="Only this run.")
@click.option("--since", type=click.DateTime(_DATE_FORMATS), help="Runs started on or after.")
@click.option("--until", type=click.DateTime(_DATE_FORMATS), help="Runs started on or before.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: stdout)"
)
def audit_export(
    fmt: str, run_id: str | None, since: datetime | None, until: datetime | None, out: Path | None
) -> None:
    """Runs as jsonl (verifiable offline), csv, or one self-contained HTML page."""
    from golive import audit as ledger

    store = _store()
    if run_id is not None and (since or until):
        _bad_input("--run exports one run; --since and --until choose runs by date: not both")
    if run_id is not None:
        run_ids = [_find(run_id).run_id]
    else:
        rows = _selected_runs({"since": since, "until": until})
        run_ids = [row.run_id for row in rows]
    if out is not None and (out.exists() or not out.parent.is_dir()):
        _bad_input(f"--out {out}: " + ("exists already" if out.exists() else "no such folder"))
    if fmt == "jsonl":
        lines = ledger.export_jsonl(store.all_entries(run_ids), store.heads(), run_ids, store.shown)
        text = "".join(lines)
    elif fmt == "csv":
        text = ledger.export_csv(store.all_entries(run_ids))
    else:
        text = _html_export(store, run_ids)
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        write_private(out, text.encode())  # it holds plans, hosts and decisions
    except OSError as error:
        _bad_input(describe_os_error(error, f"cannot write --out {out}") + "; nothing was written")
    console.print(f"{len(run_ids)} run(s) exported to {out}", highlight=False)


def _selected_runs(filters: dict[str, Any]) -> list[RunRow]:
    from golive.audit import select_runs

    since, until = filters.get("since"), filters.get("until")
    if since is not None:
        filters["since"] = since.replace(tzinfo=since.tzinfo or UTC)
    if until is not None:
        if until.time() == time.min:  # a date alone means the whole day
            until = until + timedelta(days=1) - timedelta(microseconds=1)
        filters["until"] = until.replace(tzinfo=until.tzinfo or UTC)
    store = _store()
    rows = select_runs(with_crashes(store, store.run_rows()), **filters)
    if not rows and any(value is not None for value in filters.values()):
        given = ", ".join(f"{k} {v}" for k, v in filters.items() if v is not None)
        console.print(f"[red]no runs match: {escape(given)}[/]", highlight=False)
        sys.exit(EXIT_FAILED)
    return rows


def _print_summary(record: dict[str, Any], record_path: Path) -> None:
    from golive.report import render_summary

    _print_markdown(render_summary(record, record_path))


def _print_markdown(text: str) -> None:
    from rich.markdown import Markdown  # not at the top: `golive validate` shows none

    console.print(Markdown(printable(text)))


def _read_export(path: Path) -> Export:
    from golive.audit import read_jsonl

    try:
        with path.open(encoding="utf-8") as lines:
            return read_jsonl(lines)
    except (ValueError, UnicodeDecodeError) as error:
        _bad_input(f"{path}: {error}; `golive audit export --format jsonl` writes what this reads")


def _tell_verdict(where: str, verdict: Any, checked_head: bool) -> None:
    if verdict.ok:
        head = verdict.head
        published = f"; latest head: link {head.pos} {head.hash}" if head else ""
        console.print(
            f"[green]✓ {escape(where)}: {verdict.runs} runs, {verdict.entries} entries and "
            f"{verdict.links} links verify{published}[/]",
            highlight=False,
        )
        if not checked_head:
            console.print(
                "[dim]Without --head, a store cut back to an earlier state or rebuilt "
                "consistently looks the same: give a head published outside it.[/]"
            )
        return
    Console(stderr=True, emoji=False).print(
        f"[red]✗ {escape(where)} does not verify ({len(verdict.problems)} problem(s)); the "
        "first bad entry of each run:[/]\n"
        + "\n".join(f"  - {escape(problem)}" for problem in verdict.problems[:50]),
        highlight=False,
        soft_wrap=True,
    )
    sys.exit(EXIT_FAILED)


def _html_export(store: RunStore, run_ids: list[str]) -> str:
    from golive import audit as ledger
    from golive.journal import as_entry
    from golive.report import render_audit_html

    runs = []
    for run_id in run_ids:
        entries = [as_entry(stored) for stored in store.entries(run_id)]
        record = summarize(entries)
        runs.append({"r": record, "timeline": ledger.timeline(record), "entries": entries})
    verdict = ledger.verify(
        store.all_entries(), store.heads(), {r.run_id: r for r in store.run_rows(True)}
    )
    return render_audit_html(runs, verdict, store.shown)


@main.group()
def server() -> None:
    """The local golive server: the Prefect API runs on the embedded default share."""


@server.command("status")
def server_status() -> None:
    """This machine's golive servers, as the run store has them, and whether they answer."""
    from golive.localserver import idle_seconds, on_this_machine

    found = on_this_machine(_store(none_yet_is_fine=True))
    if not found:
        console.print("No golive server is running on this machine; the next run starts one.")
        return
    for each in found:  # a line each, never cut: the address is what to open in a browser
        state = each.problem() or f"answering; idle {(each.identity() or {}).get('idle', '?')} s"
        console.print(
            f"{each.address}  pid {each.pid}, {escape(each.user)}, started {each.started_at}: "
            f"{escape(state)}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"An idle server stops after {idle_seconds():.0f} s (GOLIVE_SERVER_IDLE_SECONDS)."
    )


@server.command("stop")
def server_stop() -> None:
    """Stop your golive server on this machine (runs that use it must have ended)."""
    from golive.localserver import on_this_machine, stop

    store = _store(none_yet_is_fine=True)
    mine = [each for each in on_this_machine(store) if each.mine()]
    if not mine:
        console.print("No golive server of yours is running on this machine.")
        return
    for each in mine:
        if stop(each, store):
            console.print(f"Stopped the golive server at {each.address} (pid {each.pid}).")
        else:
            console.print(
                f"[yellow]The golive server at {each.address} (pid {each.pid}) did "
                f"not stop: {escape(each.problem() or 'still running after 30 s')}.[/]"
            )


@main.command("rollback")
@click.argument("run_id", metavar="RUN")
@click.option("--yes", is_flag=True, help="Roll back without asking.")
@click.option(
    "--hosts-only",
    is_flag=True,
    help="Put the hosts back; the data stays as it is (roll it forward).",
)
@click.option(
    "--data",
    type=click.Choice(["restore"]),
    help="Also restore the databases the run migrated from its verified backups; every write "
    "since the backup is lost.",
)
@click.option("--reason", default="", help="Why: kept in the run store.")
def rollback_command(
    run_id: str, yes: bool, hosts_only: bool, data: str | None, reason: str
) -> None:
    """Put back what a run changed, from the run store alone: a run whose process died
    (crashed, killed), or one that finished but is bad (an emergency)."""
    from golive.undo import undone_run, what_to_undo

    asked = _find(run_id)
    journal = undone_run(asked).verified()
    if journal.run_id != asked.run_id:
        console.print(
            f"Run {asked.run_id} was a rollback of run {journal.run_id}; rolling back that."
        )
    undo = what_to_undo(journal)
    restore = _data_choice(undo, hosts_only, data)
    _show_undo(undo, restore)
    if not yes:
        if not sys.stdin.isatty():
            _bad_input("this would change hosts: confirm with --yes (no terminal to ask on)")
        click.confirm("Roll back?", abort=True)
    sys.exit(_roll_back(journal, undo, restore, reason or "emergency rollback"))


def _data_choice(undo: Undo, hosts_only: bool, data: str | None) -> bool:
    """Whether the databases are restored: after a crash, as an automatic rollback would;
    after a finished run, only when asked, as it loses every write since the backup."""
    if hosts_only and data:
        _bad_input("--hosts-only and --data restore exclude each other; choose one")
    if not undo.databases or hosts_only:
        return False
    if undo.beyond_return:
        if data:
            _bad_input(
                f"run {undo.run_id} passed a point of no return ({undo.beyond_return}): its "
                "data cannot be restored; roll back with --hosts-only and fix the data forward"
            )
        return False
    if undo.finished and not data:
        for name in undo.databases:
            console.print(_writes_since_backup(undo, name))
        _bad_input(
            f"run {undo.run_id} finished, and migrated {', '.join(undo.databases)}: restoring "
            "the backup taken at its start loses every write made since. Choose --data "
            "restore, or --hosts-only (the data stays as it is: fix it forward)"
        )
    return True


def _show_undo(undo: Undo, restore: bool) -> None:
    kind = "finished" if undo.finished else "crashed (its process is gone)"
    table = Table("host", "goes back to", title=f"Rolling back run {undo.run_id}: {kind}")
    for host, release in undo.hosts.items():
        table.add_row(escape(host), escape(release or "no release (it had none)"))
    console.print(table)
    for name in undo.databases:
        what = "restored from this run's verified backup" if restore else "left as it is"
        console.print(f"database {escape(name)}: {what}", highlight=False)
        if undo.finished:
            console.print(_writes_since_backup(undo, name))


def _writes_since_backup(undo: Undo, name: str) -> Table | str:
    """Rows per table now against the run's backup: what restoring it would take away."""
    _quiet_prefect_console()
    from golive.postgres import DatabaseError, row_counts
    from tasks.databases import database

    try:
        with database(undo.plan, name).connect() as conn:
            now = row_counts(conn)
    except (DatabaseError, GoLiveError) as error:
        return f"[yellow]  rows written since the backup: cannot tell ({escape(str(error))})[/]"
    at_backup = undo.row_counts.get(name, {})
    table = Table("table", "rows at the backup", "rows now", "since", title=f"database {name}")
    for table_name in sorted(at_backup.keys() | now.keys()):
        before, after = at_backup.get(table_name, 0), now.get(table_name, 0)
        table.add_row(escape(table_name), str(before), str(after), f"{after - before:+d}")
    return table


def _roll_back(journal: RunJournal, undo: Undo, restore: bool, reason: str) -> int:
    _use_prefect_api()
    from flows.rollback import rollback
    from golive.server import check_api

    check_api()
    try:
        rollback(journal.run_id, reason=reason, restore_data=restore)
    except RollbackIncomplete as failure:
        Console(stderr=True, emoji=False).print(f"[red]{escape(str(failure))}[/]", highlight=False)
        return EXIT_ROLLBACK_FAILED
    by = [e["by"] for e in journal.of_kind("rollback.finished") if e.get("by")][-1]
    console.print(
        f"[green]Run {journal.run_id} is rolled back: {len(undo.hosts)} host(s) back on their "
        f"releases and answering.[/] The rollback is run {by}: `golive audit show {by[:8]}` "
        "shows each step."
    )
    return 0


@main.command()
def demo() -> None:
    """Two go-lives on local demo hosts: a good release, then a broken one rolled back."""
    _use_prefect_api()
    from golive.demo.story import run_demo
    from golive.server import check_api

    check_api()
    sys.exit(0 if run_demo(console) else EXIT_FAILED)


def _run_go_live(
    plan: Path,
    triggered_by: str,
    wait_seconds: float = 0,
    signature: str = "",
    signed_at: str = "",
    rehearsal: bool = False,
    override: str = "",
) -> int:
    _use_prefect_api()
    from prefect.settings import PREFECT_UI_URL

    from flows.golive import go_live
    from golive.progress import LiveProgress
    from golive.server import check_api

    with LiveProgress(console, PREFECT_UI_URL.value()):
        check_api()
        try:
            record = go_live(
                plan_path=str(plan.resolve()),
                triggered_by=triggered_by,
                wait_seconds=wait_seconds,
                start_signature=signature,
                signed_at=signed_at,
                rehearsal=rehearsal,
                freeze_override=override,
            )
        except RollbackIncomplete as failure:
            console.print(
                f"[bold red]Rollback failed: {escape(str(failure))}[/]",
                highlight=False,
                soft_wrap=True,
            )
            return EXIT_ROLLBACK_FAILED
        except GoLiveError as failure:
            console.print(f"[red]{escape(str(failure))}[/]", highlight=False, soft_wrap=True)
            return EXIT_FAILED
    assert isinstance(record, dict)  # a run that fails raises, whatever its Prefect state
    if record.get("rehearsal_result"):
        _tell_rehearsal(record["rehearsal_result"])
    if record["taken_out"]:
        hosts = ", ".join(record["taken_out"])
        console.print(
            f"[yellow]Live, but not on {escape(hosts)}: taken out within the failure "
            "budget and put back on their old release.[/]"
        )
        return EXIT_PARTIAL
    return 0


def _tell_rehearsal(result: dict[str, Any]) -> None:
    stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result["stages"].items())
    console.print(
        f"[green]Rehearsal passed[/]: {escape(stages)}; rollback drill "
        f"{result['rollback_seconds'] or 0:.1f} s, every host back and answering. Recorded as "
        f"evidence for runs of this plan.",
        highlight=False,
    )


def _decide(
    run_id: str,
    decision: str,
    approver: str,
    key_file: Path | None,
    passphrase_env: str | None,
    gate: str | None,
    comment: str,
) -> None:
    from golive.signing import load_private_key

    if decision == "reject" and not comment.strip():
        _bad_input("a rejection needs a reason: --comment 'what is wrong'")
    if key_file is not None and not key_file.is_file():
        state = "is not a regular file" if key_file.exists() else "does not exist"
        _bad_input(f"--key {key_file} {state}; `golive keygen NAME` makes a key file")
    passphrase = _passphrase(passphrase_env)
    journal = _find(run_id)
    started = next(journal.of_kind("run.started"), {})
    gates = started.get("gate_names", [])
    if gate is not None and gate not in gates:
        _bad_input(
            f"run {journal.run_id} has no gate {gate!r}; its gates: {', '.join(gates) or 'none'}"
        )
    _use_prefect_api(started.get("api_url"))
    from golive.server import check_api
    from tasks.approvals import decide_gate, fate

    try:
        check_api()
        key = load_private_key(key_file, passphrase) if key_file else None
        opening = OPENING_SECONDS if _about_to_pause(journal) else 0
        submitted = decide_gate(
            journal, decision, approver, comment, key, gate=gate, wait_seconds=opening
        )
    except GoLiveError as refused:
        _bad_input(str(refused))
    if submitted.suspended:
        console.print(
            f"Run {journal.run_id} was suspended at gate {submitted.gate!r}: the decision "
            "resumes it, and a worker takes it up to judge it. Waiting for its answer…"
        )
    answer = fate(
        journal, submitted, wait_seconds=SUSPENDED_FATE_SECONDS if submitted.suspended else 30
    )
    _tell_fate(journal, answer, submitted, decision, approver)


def _tell_fate(
    journal: RunJournal, answer: Entry | None, submitted: Submitted, decision: str, approver: str
) -> None:
    """The approver learns whether the run counted the decision, and exits accordingly."""
    follow = f"`golive status {journal.run_id}` to follow."
    gate = submitted.gate
    if answer is None:
        alive = (
            "has a worker taken it up? is one running on its pool?"
            if submitted.suspended
            else "is its process alive?"
        )
        console.print(
            f"[yellow]The {decision} for gate {gate!r} was handed to run {journal.run_id}, "
            f"which has not said whether it counted ({alive}).[/] {follow}"
        )
        sys.exit(EXIT_FAILED)
    if answer["kind"] == "gate.refused":
        Console(stderr=True, emoji=False).print(
            f"[red]Your {decision} for gate {gate!r} of run {journal.run_id} did NOT count: "
            f"{escape(answer['reason'])}. The gate keeps waiting.[/]",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_FAILED)
    console.print(
        f"[green]Counted:[/] {decision}d gate {gate!r} of run {journal.run_id} as "
        f"{escape(approver)}. {follow}",
        highlight=False,
    )


def _passphrase(variable: str | None) -> str | None:
    """The value of a named passphrase variable; a name without a value is refused."""
    if variable is None:
        return None
    passphrase = os.environ.get(variable)
    if not passphrase:
        state = "is empty" if variable in os.environ else "is not set"
        _bad_input(f"--passphrase-env {variable}: the variable {state}; nothing was done")
    return passphrase


def _row_with_crash(journal: RunJournal) -> RunRow:
    """The run's row in the store, "crashed" if it is running with no live lease."""
    [row] = with_crashes(
        journal.store, [r for r in journal.store.run_rows() if r.run_id == journal.run_id]
    )
    return row


def _about_to_pause(journal: RunJournal) -> bool:
    """Whether the run, alive, has opened a gate it may not have paused at yet: it is a
    moment away, or retrying while its Prefect API restarts."""
    row = _row_with_crash(journal)
    return row.state == "running" and _open_gate(journal) is not None


def _open_gate(journal: RunJournal) -> dict[str, Any] | None:
    """The gate a running run waits at, as it was opened (with its brief), if any."""
    waiting = None
    for entry in journal.of_kind("gate.opened", "gate.passed", "gate.timed_out", "gate.decision"):
        ended = entry["kind"] != "gate.opened" and (
            entry["kind"] != "gate.decision" or entry["decision"] == "reject"
        )
        waiting = None if ended else (entry if entry["kind"] == "gate.opened" else waiting)
    return waiting


def _list_runs(rows: list[RunRow]) -> None:
    table = Table("run", "release", "environment", "state", "started", "triggered by")
    for column in table.columns:
        column.no_wrap, column.overflow = True, "ellipsis"
    table.columns[0].min_width, table.columns[3].min_width = 8, 11  # ids and states whole
    for row in rows:
        cells = (
            row.run_id[:8],
            f"{row.release or '?'} {row.version or ''}",
            row.environment or "?",
            row.state,
            row.started_at[:19].replace("T", " "),
            row.triggered_by or "",
        )
        table.add_row(*(escape(printable(cell)) for cell in cells))
    console.print(table if rows else "no runs match")


def _load(plan: Path) -> PlanFile:
    try:
        return load_plan(plan)
    except (PlanError, RegistryError) as error:
        _bad_input(str(error))


def _find(run_id: str) -> RunJournal:
    try:
        return RunJournal.find(run_id)
    except RunNotFound as error:
        _bad_input(str(error))


def _store(none_yet_is_fine: bool = False) -> RunStore:
    """The run store for reading. A store that is not there yet means no runs yet: fine for
    `status`, an error for an auditor, who expects one."""
    try:
        return run_store()
    except StoreError as error:
        if none_yet_is_fine and error.reason.startswith("there is no run store"):
            console.print(f"no runs yet: {escape(str(error).split(';')[0])}", highlight=False)
            sys.exit(0)
        raise


def _bad_input(message: str) -> NoReturn:
    # soft_wrap: the terminal wraps long lines, so a path or command is never split by golive.
    Console(stderr=True, emoji=False).print(
        f"[red]{escape(message)}[/]", highlight=False, soft_wrap=True
    )
    sys.exit(EXIT_BAD_INPUT)


def crash_report(error: BaseException) -> Path:
    """Write the trace of an unexpected error to a private file; return where it is."""
    folder = golive_home() / "crash-reports"
    try:
        private_dir(folder)
        fd, name = tempfile.mkstemp(prefix="golive-", suffix=".txt", dir=folder)
    except OSError:
        fd, name = tempfile.mkstemp(prefix="golive-crash-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as report:
        report.write(f"golive {' '.join(sys.argv[1:])}\n\n")
        traceback.print_exception(error, file=report)
    return Path(name)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else "no message"


def _use_prefect_api(run_api: str | None = None) -> None:
    """Prefect's API for this command: the one this machine names; else the run's own (a run
    on the embedded default records its local server), if it answers; else this user's local
    golive server, started if none answers, and kept from idling out while this command runs."""
    from golive.localserver import answers, api_configured, keep_alive, local_api_url, use_api

    _quiet_prefect_console()
    if api_configured():
        return
    if run_api and answers(run_api):
        use_api(run_api)
        return
    url = local_api_url(tell=_warn)
    use_api(url)
    keep_alive(url, tell=_warn)


def _warn(message: str) -> None:
    Console(stderr=True, emoji=False).print(f"[yellow]{escape(message)}[/]", highlight=False)


def _quiet_prefect_console() -> None:
    # golive draws its own progress; Prefect's logs still reach its API and UI.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    # The temporary server of the embedded default gets 20 s to start; a busy 2-core machine
    # can need more, and a run that gives up there has done nothing.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
