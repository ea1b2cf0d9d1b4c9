"""The environment registry: the trust root a plan cannot choose.

Which environments exist, which of them are production, who may approve their gates (and with
which key), who may start their runs, and what a gate there may never do: kept in the run store
apart from plans, as a chain of signed changes under the run id `registry`. A plan names its
environment; validation holds the plan to that environment's rules and never lets it widen them.

    golive env set NAME FILE --key KEYFILE    register an environment, or change its rules
    golive env show [NAME]                    what is registered, by whom, at which version

The first registration of a name is signed by one of the admins it names; every later change
by an admin of the rules it replaces. Each change signs the registry's head it extends, so an
old signed change cannot be replayed over a newer one, and it is refused unless it extends the
head as it is when written. An environment the registry does not know gets STRICT rules when a
plan naming it is validated (signed decisions only, no timeout-approve, nobody to approve a
gate), and golive runs nothing there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import AfterValidator, Field, StrictBool, ValidationError, model_validator

from golive import yamlfile
from golive.entries import EnvironmentSet
from golive.errors import Problem, RegistryError, StoreError
from golive.plan import Count, Gate, SafeName, Section, unique
from golive.signing import (
    EnvironmentChange,
    load_public_key,
    public_key_text,
    same_key,
    sign,
    verifies,
)
from golive.store import (
    GENESIS,
    REGISTRY,
    NewEntry,
    RunStore,
    StoredEntry,
    canonical,
    entry_hash,
    open_store,
)


def _public_key(value: str) -> str:
    load_public_key(value)
    return value


PublicKey = Annotated[str, AfterValidator(_public_key)]


class Approver(Section):
    public_key: PublicKey | None = Field(
        None,
        description="Ed25519 public key as `golive keygen` prints it (ed25519:...); without "
        "one, this person can only give unsigned decisions where the rules allow them.",
    )
    groups: Annotated[list[SafeName], AfterValidator(unique)] = Field(
        default_factory=list, description="Groups a gate's `approvers` may name."
    )


class Rules(Section):
    """One environment's rules, as its admins register them."""

    production: StrictBool = Field(description="Hold it to production's rules (always stated).")
    admins: dict[SafeName, PublicKey] = Field(
        min_length=1, description="Who may change these rules: name -> public key."
    )
    approvers: dict[SafeName, Approver] = Field(
        default_factory=dict, description="Who may decide this environment's gates."
    )
    releasers: dict[SafeName, PublicKey] = Field(
        default_factory=dict, description="Who may sign a run's start (`golive run --key`)."
    )
    min_quorum: Count = Field(1, ge=1, le=100, description="No gate here passes on fewer.")
    allow_unsigned: StrictBool = Field(
        False, description="Gates may take unsigned decisions (never in production)."
    )
    allow_timeout_approve: StrictBool = Field(
        False, description="A gate may pass when nobody decided (never in production)."
    )
    signed_start: StrictBool = Field(
        False, description="Runs must be started with `golive run --key` (production: always)."
    )

    @model_validator(mode="after")
    def _production_is_strict(self) -> Rules:
        if self.production and (self.allow_unsigned or self.allow_timeout_approve):
            raise ValueError(
                "production decisions are signed and a production gate never passes by "
                "timeout; accepted: allow_unsigned and allow_timeout_approve false"
            )
        keyless = [name for name, who in self.approvers.items() if who.public_key is None]
        if keyless and not self.allow_unsigned:
            raise ValueError(
                f"approver(s) {', '.join(keyless)} have no public_key, but decisions here are "
                "signed; accepted: a public_key for each, or allow_unsigned: true"
            )
        keys = [(n, k) for n, who in self.approvers.items() if (k := who.public_key)]
        for i, (name, key) in enumerate(keys):
            twin = next((other for other, k in keys[:i] if same_key(k, key)), None)
            if twin:
                raise ValueError(
                    f"approvers {twin} and {name} share one key: a quorum counts people, "
                    "each with their own key"
                )
        return self

    def may_decide(self, gate: Gate) -> set[str]:
        """The registered people a gate's approvers list names, directly or by group."""
        named = set(gate.approvers)
        return {n for n, a in self.approvers.items() if n in named or named & set(a.groups)}

    def needs_signed_start(self) -> bool:
        return self.production or self.signed_start

    def starters(self) -> dict[str, str]:
        """Everyone whose key may sign a run's start: releasers and approvers."""
        approvers = {n: a.public_key for n, a in self.approvers.items() if a.public_key}
        return approvers | dict(self.releasers)


# Rules no one registered: validated rules need an admin, these have none to change them.
STRICT = Rules.model_construct(production=False, admins={})


@dataclass(frozen=True)
class Environment:
    """An environment's rules as the registry has them now, and which registry that is."""

    name: str
    rules: Rules
    registered: bool
    version: int  # changes in the registry so far
    registry_hash: str  # the hash of its newest change (64 zeros: empty)
    changed_by: str | None = None
    changed_at: str | None = None

    def rules_sha256(self) -> str:
        """What approvers approve of the environment: its name and rules (none: unregistered)."""
        rules = self.rules.model_dump(mode="json") if self.registered else None
        return hashlib.sha256(canonical({"name": self.name, "rules": rules}).encode()).hexdigest()

    def recorded(self) -> dict[str, Any]:
        """What a run records of the rules it was held to."""
        return {
            "name": self.name,
            "registered": self.registered,
            "version": self.version,
            "hash": self.registry_hash,
            "rules": self.rules.model_dump(mode="json") if self.registered else None,
        }


def rules_of(started: dict[str, Any]) -> Rules:
    """The rules a run was held to, as its first entry recorded them (STRICT if its
    environment was not registered)."""
    recorded = (started.get("registry") or {}).get("rules")
    return Rules.model_validate(recorded) if recorded else STRICT


def environment(name: str, store: RunStore | None = None) -> Environment:
    """The registry's rules for `name` (STRICT if it does not know it)."""
    return _as_of(name, _verified_changes(store))


def registered(store: RunStore | None = None) -> list[Environment]:
    """Every registered environment, the registry read and verified once."""
    changes = _verified_changes(store)
    names = dict.fromkeys(body.environment for _, body in changes)
    return [_as_of(name, changes) for name in names]


def _as_of(name: str, changes: list[tuple[StoredEntry, EnvironmentSet]]) -> Environment:
    version, head = len(changes), changes[-1][0].hash if changes else GENESIS
    mine = [(entry, body) for entry, body in changes if body.environment == name]
    if not mine:
        return Environment(name, STRICT, False, version, head)
    entry, body = mine[-1]
    return Environment(
        name, Rules.model_validate(body.rules), True, version, head, body.signed_by, entry.at
    )


def _verified_changes(store: RunStore | None) -> list[tuple[StoredEntry, EnvironmentSet]]:
    """Every change in order, each checked: its signature, its signer an admin, its place."""
    if store is None:
        try:
            store = open_store()
        except StoreError as error:
            if error.reason.startswith("there is no run store"):
                return []  # nothing is registered yet
            raise
    current: dict[str, Rules] = {}
    changes: list[tuple[StoredEntry, EnvironmentSet]] = []
    entries = store.entries(REGISTRY)
    for number, entry in enumerate(entries, 1):
        before = changes[-1][0].hash if changes else GENESIS
        body, problem = _change_problem(entry, number, before, current)
        if problem or body is None:
            raise _not_verified(store, entry.seq, problem or "it does not read back")
        current[body.environment] = Rules.model_validate(body.rules)
        changes.append((entry, body))
    sealed = store.newest_link(REGISTRY)
    if sealed is not None and (sealed.entries, sealed.run_head) != (
        len(entries),
        entries[-1].hash if entries else GENESIS,
    ):
        raise _not_verified(
            store, sealed.entries, "the chain of run heads holds another registry (cut short)"
        )
    return changes


def _not_verified(store: RunStore, seq: int, problem: str) -> RegistryError:
    return RegistryError(
        f"the environment registry in run store {store.shown} does not verify at change "
        f"{seq}: {problem}. golive trusts none of it and runs nothing that needs it; keep the "
        "store as it is for whoever investigates (`golive audit verify`)"
    )


def _change_problem(
    entry: StoredEntry, number: int, before: str, current: dict[str, Rules]
) -> tuple[EnvironmentSet | None, str | None]:
    """The change an entry holds, and what is wrong with it: not where it stands in the
    chain, edited, not an admin's, or not signed as it reads."""
    digest = entry_hash(
        entry.prev, entry.run_id, entry.seq, entry.at, entry.kind, entry.v, entry.body
    )
    if entry.seq != number or entry.prev != before:
        return None, "it is not where golive wrote it (moved, inserted, or replayed)"
    if digest != entry.hash:
        return None, "its contents do not match its hash: the change was edited"
    try:
        body = EnvironmentSet.model_validate_json(entry.body)
        rules = Rules.model_validate(body.rules)
    except ValidationError:
        return None, f"it is not an environment change golive writes ({entry.kind})"
    if body.replaces != entry.prev:
        return body, "it was signed for another place in the registry (replayed)"
    admins = current.get(body.environment, rules).admins
    if not same_key(admins.get(body.signed_by), body.key):
        return body, f"it is signed by {body.signed_by!r}, not an admin of {body.environment!r}"
    if not verifies(_what_is_signed(body), body.signature, body.key):
        return body, "its signature does not verify: the change was altered after it was signed"
    return body, None


def _what_is_signed(body: EnvironmentSet) -> EnvironmentChange:
    return EnvironmentChange(body.environment, canonical(body.rules), body.replaces, body.signed_at)


def read_rules(path: Path) -> Rules:
    """An environment's rules from a YAML file; every problem at once, with its path."""
    try:
        raw = yamlfile.load(yamlfile.decode(yamlfile.read_bytes(path, "rules file"), "rules"))
    except yamlfile.YamlRefused as refused:
        raise _bad_file(path, [Problem(w, m) for w, m in refused.problems]) from None
    try:
        return Rules.model_validate(raw)
    except ValidationError as error:
        from golive.planfile import problems_in  # it reads plans, which read this registry

        raise _bad_file(path, problems_in(Rules, error, raw)) from None


def _bad_file(path: Path, problems: list[Problem]) -> RegistryError:
    lines = "\n".join(f"  - {p}" for p in problems)
    accepted = ", ".join(Rules.model_fields)
    return RegistryError(
        f"{path}: not an environment's rules (fields: {accepted}); nothing changed:\n{lines}"
    )


def set_environment(
    name: str, rules: Rules, key: Ed25519PrivateKey, store: RunStore | None = None
) -> Environment:
    """Register `name` with `rules`, or change them, signed with `key`: the key of an admin
    the new rules name (a first registration) or of the rules they replace."""
    store = store or open_store(create=True)
    public = public_key_text(key.public_key())
    before = environment(name, store)
    admins = (before.rules if before.registered else rules).admins
    admin = next((a for a, k in admins.items() if same_key(k, public)), None)
    if admin is None:
        raise RegistryError(
            f"this key is not one of environment {name!r}'s admins ({', '.join(sorted(admins))})"
            "; nothing changed. A first registration is signed by an admin it names, every "
            "change by an admin of the rules it replaces"
        )
    signed_at = datetime.now(UTC).isoformat()
    head = before.registry_hash
    change = EnvironmentChange(name, canonical(rules.model_dump(mode="json")), head, signed_at)
    body = EnvironmentSet(
        environment=name,
        rules=rules.model_dump(mode="json"),
        replaces=head,
        signed_by=admin,
        key=public,
        signed_at=signed_at,
        signature=sign(change, key),
    )
    entry = NewEntry(body.kind, body.schema_version, body.model_dump(mode="json"))
    if not store.append_after(REGISTRY, entry, head):
        raise RegistryError(
            f"the registry changed while {name!r} was being set; nothing changed: look at "
            "`golive env show` and set it again"
        )
    return environment(name, store)
