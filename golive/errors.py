"""Everything golive raises on purpose, in one place.

    GoLiveError
    ├── PlanError                 the plan cannot run; lists every problem with its YAML path
    ├── PreflightError            a host, artifact or disk is not ready; nothing was changed
    ├── UnprovenReleaser          a run's start is not signed by a registered key where it must be
    ├── UnknownEnvironment        the plan's environment is not in the registry: nothing runs there
    ├── NoRehearsal               the plan asks for a recent passing rehearsal of itself: none
    ├── Frozen                    now is inside a change freeze: which window, how to override
    ├── RegistryError             the environment registry does not verify, or a change to it
    │                             is refused: which change, why, what to do
    ├── BackupError               a backup could not be taken or verified; nothing was changed
    ├── StageError                a step failed after the run began changing things -> rollback
    │   ├── HostUnreachable       a host refused or did not answer the connection, or its key
    │   ├── HostCommandError      a command on a host failed: host, command, exit code, output tail
    │   ├── DeployError           a release could not be put on a host
    │   ├── WaveFailed            one or more hosts of a wave failed; keeps every host's outcome
    │   ├── SmokeCheckFailed      a smoke check did not get the answer it expects
    │   ├── GateRejected          an approver rejected the gate
    │   ├── GateTimedOut          nobody decided before the gate's timeout
    │   ├── SoakFailed            error rate or latency went over the soak thresholds
    │   └── Interrupted           stopped by a signal (Ctrl-C, SIGTERM) or a Cancel in Prefect
    ├── RunFailed                 the run stopped: why, and what rollback did about it
    ├── RollbackIncomplete        some hosts could not be put back; names them and what to do
    │   └── RollbackStopped       a second signal stopped the rollback: what is left, how to finish
    ├── EnvironmentBusy           another run holds the environment: which, who, until when
    ├── UnfinishedRun             the environment's last run crashed: roll it back first
    ├── NothingToRollBack         a rollback refused: nothing changed, already undone, or later runs
    ├── RunNotFound               no run with that id in the run store
    │   └── AmbiguousRun          several runs start with that prefix; lists them
    ├── StoreError                the run store cannot be used: which store, why, what to do
    ├── PrefectUnreachable        the Prefect API that PREFECT_API_URL names does not answer
    ├── ServerStartFailed         the local golive server did not come up: its output, nothing run
    ├── RecordTampered            a run's entries do not verify: the first bad one; nothing done
    └── JournalCorrupt            a journal line that does not read back: file and line

Every message says what happened, to what, and where to look next.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Sequence
from dataclasses import dataclass

from golive.hostlist import in_short


class GoLiveError(Exception):
    """Base class of every error golive raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a plan: where (YAML path), what was found, what is accepted."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PlanError(GoLiveError):
    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{source}: {count} {noun}, nothing was run:\n{lines}")


# A fleet of 1,000 hosts with a bad path would print 1,000 lines: the store keeps them all.
SHOWN_FAILURES = 10


class PreflightError(GoLiveError):
    def __init__(self, failures: Sequence[str]) -> None:
        # What is wrong with the release itself first, then each host's problems in host order.
        self.failures = sorted(failures, key=lambda f: (f.startswith("host '"), f))
        lines = "\n".join(f"  - {f}" for f in self.failures[:SHOWN_FAILURES])
        if len(self.failures) > SHOWN_FAILURES:
            lines += (
                f"\n  … and {len(self.failures) - SHOWN_FAILURES} more; the run store keeps every "
                "one (`golive audit export --run RUN`)"
            )
        super().__init__(f"preflight failed, nothing was changed:\n{lines}")


class UnprovenReleaser(GoLiveError):
    def __init__(self, environment: str, reason: str) -> None:
        super().__init__(
            f"a run on {environment!r} must be started by a proven releaser: {reason}. Start it "
            "with `golive run PLAN --key KEYFILE`, with a key registered for the environment "
            "(`golive env show` lists them); nothing was run"
        )


class UnknownEnvironment(GoLiveError):
    def __init__(self, environment: str) -> None:
        super().__init__(
            f"environment {environment!r} is not registered, and golive runs only in "
            "environments the registry knows (`golive env show` lists them); an admin "
            f"registers it with `golive env set {environment} RULES.yaml --key ADMIN.key`. "
            "Nothing was run"
        )


class NoRehearsal(GoLiveError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"the run is refused, nothing was run: {reason}")


class Frozen(GoLiveError):
    def __init__(
        self, windows: Sequence[str], plan: str, overridden: bool, under_way: bool = False
    ) -> None:
        self.windows = list(windows)
        inside = f"now is inside the change freeze {'; '.join(self.windows)}"
        if under_way:
            super().__init__(f"a change freeze began while the run was under way: {inside}")
            return
        tried = (
            " The override was not signed by a key the environment registers." if overridden else ""
        )
        super().__init__(
            f"the run is refused, nothing was run: {inside}.{tried} To go ahead anyway, sign "
            f"an override with its reason: golive run {plan} --key KEYFILE --override-freeze "
            "'why'"
        )


class RegistryError(GoLiveError):
    """The environment registry does not verify, or a change to it was refused; the message
    says which change or file, why, and what to do. Nothing was changed or run."""


class BackupError(GoLiveError):
    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        super().__init__(f"backup of host {host!r} failed, nothing was deployed: {reason}")


class StageError(GoLiveError):
    """A failure after the run began changing hosts: the run rolls back what it changed."""


class HostCommandError(StageError):
    def __init__(
        self, host: str, command: str, exit_code: int | None, output: str, reason: str = ""
    ) -> None:
        self.host = host
        self.command = command
        self.exit_code = exit_code
        self.output_tail = tail(output)
        self.reason = reason
        status = reason or f"exited with code {exit_code}"
        shown = "\n".join(f"    | {line}" for line in self.output_tail) or "    | (no output)"
        super().__init__(
            f"on host {host!r}, command {command!r} {status}. Last lines of output:\n{shown}"
        )


class HostUnreachable(StageError):
    def __init__(self, host: str, where: str, reason: str, fix: str = "") -> None:
        self.host = host
        self.where = where
        super().__init__(
            f"cannot reach host {host!r} at {where}: {reason}" + (f"\n  {fix}" if fix else "")
        )


class DeployError(StageError):
    def __init__(self, host: str, step: str, reason: str) -> None:
        self.host = host
        self.step = step
        super().__init__(f"could not {step} on host {host!r}: {reason}")


class WaveFailed(StageError):
    def __init__(self, wave: str, failures: dict[str, BaseException], succeeded: Sequence[str]):
        self.wave = wave
        self.failures = failures
        self.succeeded = list(succeeded)
        failed = sorted(failures.items())
        detail = "\n".join(f"  - {host}: {error}" for host, error in failed[:SHOWN_FAILURES])
        if len(failed) > SHOWN_FAILURES:
            detail += f"\n  … and {len(failed) - SHOWN_FAILURES} more hosts (`golive status RUN`)"
        ok = in_short(sorted(self.succeeded)) or "none"
        super().__init__(
            f"wave {wave!r}: {len(failures)} host(s) failed (succeeded: {ok}):\n{detail}"
        )


class SmokeCheckFailed(StageError):
    def __init__(self, host: str, check: str, url: str, reason: str, attempts: int) -> None:
        self.host = host
        self.check = check
        self.url = url
        self.reason = reason
        super().__init__(
            f"smoke check {check!r} failed on host {host!r} after {attempts} attempt(s): "
            f"GET {url} {reason}"
        )


class GateRejected(StageError):
    def __init__(self, gate: str, approver: str, comment: str) -> None:
        self.gate = gate
        self.approver = approver
        said = f": {comment!r}" if comment else ""
        super().__init__(f"gate {gate!r} was rejected by {approver}{said}")


class GateTimedOut(StageError):
    def __init__(self, gate: str, timeout_seconds: float, approvals: Sequence[str]) -> None:
        self.gate = gate
        got = ", ".join(approvals) or "none"
        super().__init__(
            f"gate {gate!r} timed out after {timeout_seconds:g}s without enough approvals "
            f"(approved by: {got}); its default outcome is reject"
        )


class SoakFailed(StageError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"soak failed: {reason}")


class Interrupted(StageError):
    def __init__(self, signal: BaseException, cancelled: bool = False) -> None:
        self.cancelled = cancelled  # through Prefect (UI or API), which golive turned into SIGTERM
        self.how = "Ctrl-C (SIGINT)" if isinstance(signal, KeyboardInterrupt) else "SIGTERM"
        if cancelled:
            self.how = "a Cancel in Prefect (UI or API)"
        super().__init__(f"the run was stopped by {self.how}")


class RunFailed(GoLiveError):
    def __init__(self, what: str, cause: BaseException, undone: str, record: str) -> None:
        self.cause = cause
        super().__init__(f"{what} failed: {cause}\n{undone}\nRun record: {record}")


class RollbackIncomplete(GoLiveError):
    def __init__(self, failures: dict[str, str], record: str) -> None:
        self.failures = failures
        detail = "\n".join(f"  - {host}: {why}" for host, why in failures.items())
        super().__init__(
            f"rollback could not restore {len(failures)} host(s); they need a person:\n{detail}\n"
            f"What each host had before is in the run store: `{record}`"
        )


class RollbackStopped(RollbackIncomplete):
    def __init__(self, signal: Interrupted, left: Sequence[str], run_id: str) -> None:
        self.failures = {name: "not put back yet" for name in left}
        GoLiveError.__init__(
            self,
            f"a second {signal.how} stopped the rollback itself. Not put back yet: "
            f"{', '.join(left) or 'nothing (every host and database was back)'}. Finish it: "
            f"`golive rollback {run_id}`",
        )


class EnvironmentBusy(GoLiveError):
    def __init__(self, environment: str, run_id: str, holder: str, purpose: str, expires: float):
        self.environment = environment
        self.run_id = run_id
        left = max(0, round(expires - time.time()))
        super().__init__(
            f"environment {environment!r} is held by run {run_id} ({purpose}, {holder}; its "
            f"lease runs {left} s more unless renewed); one go-live at a time per "
            f"environment: wait for it to end, or see `golive status {run_id}`"
        )


class UnfinishedRun(GoLiveError):
    def __init__(self, environment: str, run_ids: Sequence[str]) -> None:
        self.run_ids = list(run_ids)
        runs = ", ".join(self.run_ids)
        super().__init__(
            f"environment {environment!r} has an unfinished run (its process is gone, or its "
            f"rollback failed): {runs}. Its hosts may be on mixed releases; roll it back "
            f"first: `golive rollback {self.run_ids[0]}`"
        )


class NothingToRollBack(GoLiveError):
    pass


class RunNotFound(GoLiveError):
    def __init__(self, run_id: str, store: str) -> None:
        super().__init__(
            f"no run {run_id!r} in the run store {store}; `golive audit list` lists the runs"
        )


class AmbiguousRun(RunNotFound):
    def __init__(self, prefix: str, candidates: Sequence[str]) -> None:
        GoLiveError.__init__(
            self,
            f"{prefix!r} could be any of {len(candidates)} runs: {', '.join(candidates[:10])}"
            f"{' ...' if len(candidates) > 10 else ''}; give more of the run id",
        )


class StoreError(GoLiveError):
    def __init__(self, store: str, reason: str, fix: str) -> None:
        self.store = store
        self.reason = reason
        super().__init__(f"run store {store}: {reason}; {fix}")


class PrefectUnreachable(GoLiveError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(
            f"the Prefect API at {url} (PREFECT_API_URL) cannot be used: {reason}. Nothing was "
            "done. Check the URL (a Prefect server's ends in /api) and that the server is up; "
            "without PREFECT_API_URL, golive starts (or reuses) a local server of its own"
        )


class ServerStartFailed(GoLiveError):
    def __init__(self, why: str, log: str, tail: str) -> None:
        super().__init__(
            f"the local golive server {why}; nothing was run. Its output, from {log}:\n{tail}"
        )


class RecordTampered(GoLiveError):
    def __init__(self, run_id: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"run {run_id}'s entries in the run store do not verify, so golive will not act "
            f"on them; nothing was done:\n"
            + "\n".join(f"  - {p}" for p in self.problems[:10])
            + "\n`golive audit verify` checks the whole store; keep it as it is for whoever "
            "investigates"
        )


class JournalCorrupt(GoLiveError):
    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        where = f"{path}, line {line}" if line else path
        super().__init__(
            f"{where}: {reason}. The journal was changed or cut short (a crash while "
            "writing?), so it was not imported into the run store; nothing was done. Keep the "
            "file as it is for whoever investigates"
        )


_OS_ERRORS = {
    errno.ENOSPC: ("the disk is full (no space left on device)", "free space there and retry"),
    errno.EDQUOT: ("the disk quota is used up", "free space or raise the quota"),
    errno.EACCES: ("permission denied", "give the deploying user access to it"),
    errno.EPERM: ("the operation is not permitted", "give the deploying user the right to it"),
    errno.EROFS: ("the file system is read-only", "remount it read-write or deploy elsewhere"),
    errno.ENOENT: ("it does not exist", "check the path"),
    errno.EXDEV: ("a link across file systems was refused", "keep it on one file system"),
    errno.ECONNRESET: ("the connection was lost", "check the host and the network, then retry"),
    errno.EPIPE: ("the connection was lost", "check the host and the network, then retry"),
}


def describe_os_error(error: OSError, what: str) -> str:
    """An OSError in words, with what it concerned and what to do, instead of '[Errno N]'."""
    known = _OS_ERRORS.get(error.errno or -1)
    if known is None:
        return f"{what}: {error.strerror or error}"
    reason, fix = known
    return f"{what}: {reason}; {fix}"


def tail(output: str, lines: int = 10) -> list[str]:
    """The last lines of a command's output: what a person needs to see first."""
    return output.rstrip().splitlines()[-lines:] if output.strip() else []
