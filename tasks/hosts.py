"""Changing hosts: deploy a release, put a host back, tidy old releases."""

from __future__ import annotations

import contextvars
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict
from functools import partial
from pathlib import Path
from queue import SimpleQueue
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE

from golive.errors import DeployError, HostCommandError
from golive.hostlist import in_short
from golive.journal import RunJournal
from golive.manifest import manifest_of, sha256_of
from golive.plan import SAFE_NAME, Host, Plan
from golive.releases import HostReleases, RestartFailed, SwitchFailed, suffix_of
from golive.transport import connect
from tasks.backups import backup_paths

T = TypeVar("T")


def deploy_host(plan: Plan, host: Host, wave: int, journal: RunJournal) -> dict[str, Any]:
    """Send what the host lacks of the release, then in one step assemble it, check it against
    the artifact, prune beyond `keep_releases` (sparing the release the host had, which a
    rollback returns to), switch `current` to it and restart. The switch is journaled before
    and, once `current` is read back, after (a failed restart comes after the switch)."""
    version = plan.release.version
    with journal.step("deploy", host=host.name, wave=wave) as result:
        started = time.monotonic()
        transport = connect(plan, host, journal.run_id)
        before = transport.current_release()
        journal.write("host.found", host=host.name, wave=wave, release=before)
        result |= {"before": before, "after": version, "changed": before != version}
        if before == version:
            return result
        manifest = manifest_of(plan.release.artifact)
        transfer = transport.stage(manifest, version)
        result["transfer"] = asdict(transfer)
        switch = {"host": host.name, "wave": wave, "from": before, "to": version}
        journal.write("host.switching", **switch)
        try:
            result["pruned"] = transport.activate(
                transfer,
                manifest,
                version,
                switch=True,
                keep=plan.targets.keep_releases,
                protect=(before,),
                restart=host.fill(plan.targets.restart),
                restart_timeout=plan.targets.command_timeout,
            )
        except SwitchFailed as failed:
            if not failed.switched:
                journal.write("host.switch_abandoned", **switch)
            raise
        except RestartFailed:
            _switched(transport, journal, switch)
            raise
        _switched(transport, journal, switch)
        result["seconds"] = round(time.monotonic() - started, 3)
    return result


def _switched(transport: HostReleases, journal: RunJournal, switch: dict[str, Any]) -> None:
    """`current` read back from the host, then the switch journaled as done."""
    transport.confirm_release(switch["to"], f"switch to {switch['to']}")
    journal.write("host.switched", **switch)


def restore_host(
    plan: Plan, host: Host, releases: dict[str, str | None], journal: RunJournal
) -> str | None:
    """Point `current` back at the release the host had before the run, put the plan's backed
    up paths back as this run's backup holds them, and restart."""
    release = releases[host.name]
    transport = connect(plan, host, journal.run_id)
    with journal.step("restore", host=host.name) as result:
        if release is not None and not SAFE_NAME.match(release):
            raise DeployError(host.name, f"switch back to {release!r}", "not a release name")
        # What the run backed up, as its journal says: the same paths it found at its start
        # (but `current`, switched below), put back before the old release restarts on them.
        started = next(journal.of_kind("run.started"), {})
        paths = started.get("backup_paths", backup_paths(plan))[1:]
        if paths:
            backup = checked_backup(transport, host, journal)
            result["files_restored"] = transport.restore_paths(backup, paths)
        if release is None:
            transport.switch(None)
        else:
            restart = host.fill(plan.targets.restart)
            transport.switch_and_restart(release, restart, plan.targets.command_timeout)
        transport.confirm_release(release, f"switch back to {release or 'no release'}")
        result["release"] = release
    return release


# Host steps started in this process and not yet seen to end. A signal that stops the run
# lands in the flow, not in these threads: they go on, and a rollback must wait for them.
_in_flight: dict[Future[Any], str] = {}


def settle(timeout: float) -> list[str]:
    """Wait up to `timeout` seconds for host steps already under way to end, so that a
    rollback starts from hosts that have stopped changing; the hosts still busy after it."""
    busy = dict(_in_flight)
    _, still = wait(list(busy), timeout=timeout)
    _in_flight.clear()
    return sorted(busy[future] for future in still)


def on_every_host(
    step: str,
    work: Callable[..., Any],
    plan: Plan,
    hosts: Sequence[str],
    limit: int | None = None,
    stop_after_failures: int | None = None,
    **kwargs: Any,
) -> tuple[dict[str, Any], dict[str, BaseException]]:
    """Run a host step on each host, at most `limit` at once, as one Prefect task named for
    the step and its hosts; return every host's result or error. Once more than
    `stop_after_failures` hosts have failed, no further host is started."""
    # One task run per step and wave, not per host: Prefect's bookkeeping of a task run
    # (about 10 ms of this process's time) would be most of golive's cost per host on a big
    # fleet, and a thousand task runs per step no one can read in the UI. Each host's own
    # outcome is in the run store, the logs and the hosts table.
    if not hosts:
        return {}, {}
    name = f"{step} {in_short(hosts, shown=3)}"
    # Handed over in a partial, which Prefect does not walk: every host of the plan would
    # otherwise be visited for inputs, a cost that grows with the fleet.
    run = partial(_every_host, work, plan, hosts, limit, stop_after_failures, kwargs)
    return _as_task.with_options(task_run_name=name)(run)


@task(name="hosts", cache_policy=NO_CACHE)
def _as_task(run: Callable[[], T]) -> T:
    return run()


def _every_host(
    work: Callable[..., Any],
    plan: Plan,
    hosts: Sequence[str],
    limit: int | None,
    stop_after_failures: int | None,
    kwargs: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, BaseException]]:
    waiting = deque(hosts)
    ended: SimpleQueue[Future[Any]] = SimpleQueue()
    running: dict[Future[Any], str] = {}
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    threads = ThreadPoolExecutor(max_workers=max(1, min(limit or len(hosts), len(hosts))))
    try:
        while waiting or running:
            over_budget = stop_after_failures is not None and len(errors) > stop_after_failures
            while waiting and not over_budget and len(running) < (limit or len(hosts)):
                name = waiting.popleft()
                # In the task's context, as a task of its own would be: its logger, its client.
                context = contextvars.copy_context()
                host_step = partial(work, plan, plan.host(name), **kwargs)
                future = threads.submit(context.run, host_step)
                running[future] = _in_flight[future] = name
                future.add_done_callback(ended.put)
            if not running:
                break
            done = ended.get()
            name = running.pop(done)
            _in_flight.pop(done, None)
            try:
                results[name] = done.result()
            except Exception as error:
                errors[name] = error
    finally:
        threads.shutdown(wait=False)  # a step still running is left to `settle`
    return results, errors


def checked_backup(transport: HostReleases, host: Host, journal: RunJournal) -> Path:
    """This run's backup of the host, as the run store's sha256 says it was: this machine's
    copy, or else (none here, as in a rollback from another machine, or one changed since)
    the host's own copy, fetched and checked."""
    done: dict[str, Any] = next(
        (
            e["result"]
            for e in journal.of_kind("step.finished")
            if e["stage"] == "backup" and e.get("host") == host.name
        ),
        {},
    )
    recorded = done.get("sha256")
    backup = journal.run_dir / "backups" / f"{host.name}{suffix_of(done.get('archive', ''))}"
    here = "it is not on this machine"
    if backup.exists():
        if recorded is not None and sha256_of(backup) == recorded:
            return backup
        here = "this machine's copy was changed after the backup"
        backup.unlink()
    try:
        archive = transport.fetch_kept_backup(journal.run_id, backup)
    except (OSError, HostCommandError) as error:
        raise DeployError(
            host.name,
            "fetch this run's backup",
            f"{here}, and the host's copy could not be read ({error}); "
            "roll back from the machine that ran the go-live",
        ) from None
    if recorded is None or archive.sha256 != recorded:
        backup.unlink()
        raise DeployError(
            host.name,
            "check this run's backup",
            "the host's copy does not match the sha256 the run store recorded: it was changed "
            "after the backup; nothing was restored from it",
        )
    return backup
