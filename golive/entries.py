"""The kinds of entry a run writes to the run store, one pydantic model each.

Every entry is checked against its kind's model when it is written and again when it is read,
so every reader (the record, status, reports, approvals, rollback, audit) gets the same shape,
with the defaults of fields added since filled in. A kind's `schema_version` goes up when its shape
changes incompatibly; the store keeps the version each entry was written with.

Secrets have no field here: a model refuses what it does not declare (`extra="forbid"`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from golive.errors import GoLiveError


class EntryBody(BaseModel):
    # Built on first use: `golive validate` reads one kind of entry of the dozens here.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    kind: ClassVar[str]
    schema_version: ClassVar[int] = 1


class Trigger(BaseModel):
    """Who and what started a run, as far as this machine can tell."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    claimed: str  # `--as` or the deployment's parameter: a claim, not a proof
    os_user: str
    machine: str
    deployment: str | None = None
    schedule: str | None = None
    proven: str | None = None  # the registered name whose key signed the run's start
    key: str | None = None  # that public key
    signature: str | None = None  # the start's signature: it starts no other run


class RunStarted(EntryBody):
    kind = "run.started"
    run_id: str
    flow_run_name: str
    triggered_by: str
    trigger: Trigger | None = None
    golive_version: str = ""
    plan_path: str
    plan_sha256: str  # over the plan file, its environment's rules and `inputs`
    inputs: dict[str, str] = {}  # the artifact and SQL files as the plan names them: sha256
    release_sha256: str = ""  # the plan file and its files, not the environment: rehearsals
    plan: dict[str, Any] | None = None  # the validated plan; it holds no secret values
    release: str
    version: str
    owner: str | None = None
    environment: str
    fleet: list[str]
    waves: list[dict[str, Any]]
    gate_names: list[str] = []
    backup_paths: list[str] = []
    approvers_sha256: str | None = None  # runs before the environment registry
    registry: dict[str, Any] | None = None  # the environment's rules the run was held to
    rehearsal: dict[str, str] | None = None  # a rehearsal: its digest, of what, gate policy
    api_url: str | None = None
    rolls_back: str | None = None  # a rollback run: the run whose changes it undoes


class RunFinished(EntryBody):
    kind = "run.finished"
    state: str
    reason: str | None = None
    rolled_back: list[str] = []


class _Step(EntryBody):
    stage: str
    host: str | None = None
    wave: int | str | None = None
    gate: str | None = None


class StepStarted(_Step):
    kind = "step.started"


class StepFinished(_Step):
    kind = "step.finished"
    result: dict[str, Any] = {}


class StepFailed(_Step):
    kind = "step.failed"
    error: str
    result: dict[str, Any] = {}  # what it found before it failed (a soak: its intervals)


class HostFound(EntryBody):
    kind = "host.found"
    host: str
    wave: int
    release: str | None


class HostSwitching(EntryBody):
    """Written before a host's `current` moves; `host.switched` after it has."""

    kind = "host.switching"
    host: str
    wave: int
    from_: str | None = Field(alias="from")  # `from` is a Python keyword
    to: str


class HostSwitched(HostSwitching):
    kind = "host.switched"


class HostSwitchAbandoned(HostSwitching):
    kind = "host.switch_abandoned"


class HostTakenOut(EntryBody):
    kind = "host.taken_out"
    host: str
    reason: str


class HostRestored(EntryBody):
    kind = "host.restored"
    host: str
    to: str | None
    ok: bool
    error: str | None = None


class WaveStarted(EntryBody):
    kind = "wave.started"
    wave: str
    hosts: list[str]
    max_fail: int = 0


class WaveFinished(EntryBody):
    kind = "wave.finished"
    wave: str
    hosts: list[str]
    taken_out: list[str] = []


class WavePause(EntryBody):
    kind = "wave.pause"
    wave: str
    seconds: float


class GateOpened(EntryBody):
    kind = "gate.opened"
    gate: str
    approvers: list[str]
    quorum: int
    brief: str
    timeout_seconds: float
    approve_command: str


class GateDecisionEntry(EntryBody):
    kind = "gate.decision"
    gate: str
    approver: str
    decision: Literal["approve", "reject"]
    comment: str = ""
    signed_at: str = ""
    signature: str = ""


class GateRefused(EntryBody):
    kind = "gate.refused"
    gate: str
    claimed: str
    decision: str
    reason: str
    signed_at: str = ""  # the refused decision's, so that its sender can be told


class GatePassed(EntryBody):
    kind = "gate.passed"
    gate: str
    approvers: list[str]
    by: str


class GateTimedOut(EntryBody):
    kind = "gate.timed_out"
    gate: str
    approvers: list[str]
    outcome: str


class GateSuspended(EntryBody):
    """The run left its worker to wait at a gate: a decision (or the gate's deadline, by the
    `timer` run scheduled for it) brings it back, as a new process of the same flow run."""

    kind = "gate.suspended"
    gate: str
    key: str  # the pause key its decision is stored under in Prefect
    deadline: str
    timer: str | None = None  # the gate-deadline flow run that wakes it at the deadline


class RunResumed(EntryBody):
    """A run back from a suspended gate: what it had done is skipped, not redone."""

    kind = "run.resumed"
    gate: str
    holder: str
    done: list[str]


class StageDone(EntryBody):
    """A stage of the runbook finished: a run back from a suspended gate skips it."""

    kind = "stage.done"
    stage: str


class HostsStillBusy(EntryBody):
    """Host steps still under way when a stopped run began its rollback, after waiting."""

    kind = "hosts.still_busy"
    hosts: list[str]


class RollbackStarted(EntryBody):
    kind = "rollback.started"
    reason: str
    hosts: list[str]


class RollbackFinished(EntryBody):
    kind = "rollback.finished"
    complete: bool
    failed: list[str] = []
    by: str | None = None  # in the undone run: the rollback run that did it, and holds its steps


class DatabaseBackedUp(EntryBody):
    kind = "database.backed_up"
    database: str
    where: str
    path: str
    sha256: str
    size: int
    seconds: float
    row_counts: dict[str, int]
    verified: bool
    jobs: int = 1  # pg_dump's and pg_restore's
    jobs_note: str | None = None  # why fewer jobs ran than were asked for


class BackupPruned(EntryBody):
    kind = "backup.pruned"
    database: str
    removed: list[str]


class _Migration(EntryBody):
    database: str
    file: str
    reversible: bool = True


class MigrationApplying(_Migration):
    kind = "migration.applying"


class MigrationApplied(_Migration):
    kind = "migration.applied"


class PointOfNoReturn(EntryBody):
    kind = "migration.point_of_no_return"
    database: str
    file: str


class DatabaseRestored(EntryBody):
    kind = "database.restored"
    database: str
    ok: bool
    error: str | None = None


class DatabaseRollForward(EntryBody):
    kind = "database.roll_forward"
    databases: list[str]
    reason: str


class NotifySent(EntryBody):
    kind = "notify.sent"
    webhook: str
    event: str
    attempts: int


class NotifyFailed(EntryBody):
    kind = "notify.failed"
    webhook: str
    event: str
    error: str
    attempts: int = 0


class LeaseTaken(EntryBody):
    kind = "lease.taken"
    environment: str
    holder: str
    seconds: float


class LeaseWaiting(EntryBody):
    """The run waits for another run to give its environment back (`golive run --wait`)."""

    kind = "lease.waiting"
    environment: str
    held_by: str


class LeaseLost(EntryBody):
    """The run's lease was taken by another process: it had not been renewed in time."""

    kind = "lease.lost"
    environment: str


class RunCrashed(EntryBody):
    """Written by `golive rollback` for a run whose process died: it never finished and its
    lease had expired."""

    kind = "run.crashed"
    lease_expired_at: str | None
    found_by: str


class JournalImported(EntryBody):
    """A run recorded by an older golive in `runs/<id>/journal.jsonl`, taken into the store:
    the file's sha256 and line count, so the import can be checked against it."""

    kind = "store.imported"
    source: str
    sha256: str
    lines: int


class RehearsalFinished(EntryBody):
    """A rehearsal's result (golive/rehearsal.py): the evidence a later run of the plan asks
    for."""

    kind = "rehearsal.finished"
    digest: str  # the release digest: plan file, artifact, SQL
    of: str  # the environment whose plan was rehearsed
    passed: bool
    stages: dict[str, float]  # seconds, each stage
    rollback_seconds: float | None
    rollback_complete: bool
    reason: str | None = None


class FreezeOverridden(EntryBody):
    """A run started inside a change freeze, by a signed override with its reason."""

    kind = "freeze.overridden"
    windows: list[str]
    reason: str
    by: str
    key: str
    signature: str


class EnvironmentSet(EntryBody):
    """An environment registered, or its rules changed, by one of its admins (golive/registry.py);
    written to the registry's own chain in the store."""

    kind = "environment.set"
    environment: str
    rules: dict[str, Any]
    replaces: str  # the registry's head when signed: the hash of the entry before this one
    signed_by: str
    key: str
    signed_at: str
    signature: str


class _Server(EntryBody):
    """A local golive server (golive/localserver.py), in the store's `local-servers` chain."""

    url: str
    pid: int
    machine: str


class ServerStarted(_Server):
    kind = "server.started"
    uid: int
    user: str
    started_at: str
    log: str


class ServerStopped(_Server):
    kind = "server.stopped"
    reason: str


class ServerPassedOver(_Server):
    """A recorded server a command would not use (stale, another user's): a fresh one next."""

    kind = "server.passed_over"
    reason: str
    by_uid: int
    by_user: str


MODELS: dict[str, type[EntryBody]] = {
    model.kind: model
    for model in (
        RunStarted,
        RunFinished,
        StepStarted,
        StepFinished,
        StepFailed,
        HostFound,
        HostSwitching,
        HostSwitched,
        HostSwitchAbandoned,
        HostTakenOut,
        HostRestored,
        WaveStarted,
        WaveFinished,
        WavePause,
        GateOpened,
        GateDecisionEntry,
        GateRefused,
        GatePassed,
        GateTimedOut,
        GateSuspended,
        RunResumed,
        StageDone,
        HostsStillBusy,
        RollbackStarted,
        RollbackFinished,
        DatabaseBackedUp,
        BackupPruned,
        MigrationApplying,
        MigrationApplied,
        PointOfNoReturn,
        DatabaseRestored,
        DatabaseRollForward,
        NotifySent,
        NotifyFailed,
        JournalImported,
        LeaseTaken,
        LeaseWaiting,
        LeaseLost,
        RunCrashed,
        EnvironmentSet,
        RehearsalFinished,
        FreezeOverridden,
        ServerStarted,
        ServerStopped,
        ServerPassedOver,
    )
}


class UnknownEntry(GoLiveError):
    def __init__(self, kind: str, problem: str) -> None:
        self.kind = kind
        super().__init__(f"a run store entry of kind {kind!r} {problem}")


def checked(kind: str, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(version, fields in the kind's shape); refuses an unknown kind or a field out of shape."""
    model = MODELS.get(kind)
    if model is None:
        raise UnknownEntry(kind, "is not one golive writes")
    try:
        body = model.model_validate(fields)
    except ValidationError as error:
        raise UnknownEntry(kind, f"does not have its shape: {error}") from None
    return model.schema_version, body.model_dump(mode="json", by_alias=True)


def shape_problem(kind: str, body: str) -> str | None:
    """Why a stored body (JSON text) is not an entry of its kind golive writes, if it is not;
    parsed and checked in one pass, for verifying many entries."""
    model = MODELS.get(kind)
    if model is None:
        return f"{kind!r} is not a kind golive writes"
    try:
        model.model_validate_json(body)
    except ValidationError as error:
        return f"it does not have the shape of {kind!r}: {error}"
    return None
