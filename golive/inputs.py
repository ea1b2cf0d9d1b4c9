"""What a run deploys and migrates from: its own copies of the plan's files, hashed as copied.

Approvers sign the run's plan digest. For that to mean "what will be deployed", the digest
covers the plan, its environment's registered rules, the artifact and every SQL file; and the
run reads those files from copies it made at its start, in its private folder, never again
from where the plan named them. A file swapped after the run started (say, while it waits at
a gate) changes nothing that the run does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

from golive.errors import PreflightError, describe_os_error
from golive.journal import RunJournal
from golive.manifest import sha256_of
from golive.planfile import PlanFile
from golive.private import private_dir

CHUNK = 1 << 20
INPUTS = "inputs"  # the folder, in the run's folder, that holds its copies


def pin_inputs(plan_file: PlanFile, folder: Path) -> PlanFile:
    """The plan file as the run uses it: naming copies of its artifact and SQL files in
    `folder`, with a digest over the plan, its environment's rules and each copy's sha256."""
    plan = plan_file.plan
    private_dir(folder)
    artifact, artifact_sha256 = _copy(plan.release.artifact, folder / "artifact")
    inputs = {str(plan.release.artifact): artifact_sha256}
    migrations = []
    for index, migration in enumerate(plan.migrations):
        copy, sha256 = _copy(migration.sql, folder / f"sql-{index}" / migration.sql.name)
        inputs[str(migration.sql)] = sha256
        migrations.append(migration.model_copy(update={"sql": copy}))
    release = plan.release.model_copy(update={"artifact": artifact})
    pinned = plan.model_copy(update={"release": release, "migrations": migrations})
    digest = _covering(plan_file, inputs)
    proven = _release_digest(plan_file, list(inputs.values()))
    return replace(plan_file, plan=pinned, digest=digest, inputs=inputs, release_digest=proven)


def run_digest(plan_file: PlanFile) -> str:
    """The digest a run of this plan file would have, its files hashed where they are: what
    `golive run --key` signs, for the run to compare with the digest of its own copies."""
    plan = plan_file.plan
    files = [plan.release.artifact, *(m.sql for m in plan.migrations)]
    try:
        return _covering(plan_file, {str(path): sha256_of(path) for path in files})
    except OSError as error:
        raise PreflightError([describe_os_error(error, "cannot read the plan's files")]) from None


def _release_digest(plan_file: PlanFile, files: list[str]) -> str:
    """The plan file and its files' contents (the artifact's, then each SQL file's), not
    where they lie nor the environment it runs in: what a rehearsal of it proves for a later
    run of it, from another checkout or machine."""
    covered = {"plan": plan_file.digest, "files": files}
    return hashlib.sha256(json.dumps(covered, sort_keys=True).encode()).hexdigest()


def _covering(plan_file: PlanFile, inputs: dict[str, str]) -> str:
    covered = {
        "plan": plan_file.digest,
        "environment": plan_file.environment.rules_sha256(),
        "files": inputs,
    }
    return hashlib.sha256(json.dumps(covered, sort_keys=True).encode()).hexdigest()


def _copy(source: Path, folder: Path) -> tuple[Path, str]:
    """Copy `source` into `folder` under its own name: the copy, and the sha256 of the bytes
    copied (read once, so that what is hashed is what is copied)."""
    copy, digest = folder / source.name, hashlib.sha256()
    try:
        private_dir(folder)
        with source.open("rb") as reading, copy.open("xb") as writing:
            while chunk := reading.read(CHUNK):
                digest.update(chunk)
                writing.write(chunk)
        copy.chmod(0o400)
    except OSError as error:
        raise PreflightError([describe_os_error(error, f"cannot copy {source} aside")]) from None
    return copy, digest.hexdigest()


def drop_inputs(journal: RunJournal) -> None:
    """Remove the run's copies of its inputs once it has ended with them."""
    shutil.rmtree(journal.run_dir / INPUTS, ignore_errors=True)
