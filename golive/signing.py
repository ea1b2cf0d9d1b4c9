"""Signatures: gate decisions, runs' starts and environment registry changes.

Prefect's open-source server has no user identity: anyone who reaches the API can resume a
paused run with any name. So an approver signs their decision with an Ed25519 key whose public
half is registered with golive, and the flow checks the signature against what it is actually
waiting on (its own run id, gate and plan digest). A signature for another run, gate or plan
does not verify, so a decision cannot be replayed elsewhere. A releaser signs a run's start
the same way, and a registry admin each change to an environment's rules.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from golive.errors import GoLiveError
from golive.private import write_private

PUBLIC_PREFIX = "ed25519:"
_P = 2**255 - 19
# The Ed25519 points of small order (as libsodium refuses them): signatures "by" them forge.
_SMALL_ORDER = {
    bytes.fromhex(point)
    for point in (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    )
}


class KeyError_(GoLiveError):
    """A key file that is missing, malformed, or locked with another passphrase."""


@dataclass(frozen=True)
class Decision:
    """What a signature covers."""

    run_id: str
    gate: str
    plan_sha256: str
    decision: str
    approver: str
    comment: str
    signed_at: str
    opened_at: str  # which occurrence of the gate: when it opened (a gate may guard many waves)

    def payload(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Start:
    """What a releaser's signature of a run's start covers (`golive run --key`)."""

    plan_sha256: str  # the run's: the plan file, its environment's rules, its files
    environment: str
    claimed: str  # `--as`, as given (may be empty)
    signed_at: str
    override: str = ""  # why the run goes ahead inside a change freeze (`--override-freeze`)

    def payload(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class EnvironmentChange:
    """What a registry admin's signature of an environment's rules covers (`golive env set`)."""

    environment: str
    rules: str  # canonical JSON
    replaces: str  # the registry's head it extends: an old change cannot be replayed later
    signed_at: str

    def payload(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


Signed = Decision | Start | EnvironmentChange


def new_key_pair(private_file: Path, passphrase: str | None) -> str:
    """Write a new private key (PEM, encrypted if a passphrase is given); return the public key
    in the form the approver registry takes."""
    key = Ed25519PrivateKey.generate()
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    write_private(private_file, pem)
    return public_key_text(key.public_key())


def public_key_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_PREFIX + base64.b64encode(raw).decode()


def load_private_key(path: Path, passphrase: str | None) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise KeyError_(f"cannot read the key file {path}: {error.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, passphrase.encode() if passphrase else None)
    except TypeError:
        raise KeyError_(
            f"{path} is encrypted: give its passphrase with --passphrase-env, or "
            "it is not encrypted and a passphrase was given"
        ) from None
    except ValueError:
        raise KeyError_(
            f"{path} is not a golive key, or the passphrase is wrong; "
            "`golive keygen NAME` makes one"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(text: str) -> Ed25519PublicKey:
    if not text.startswith(PUBLIC_PREFIX):
        raise ValueError(f"a public key starts with {PUBLIC_PREFIX!r} (as `golive keygen` prints)")
    try:
        raw = base64.b64decode(text[len(PUBLIC_PREFIX) :], validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ValueError("not a valid Ed25519 public key") from None
    flipped = raw[:31] + bytes([raw[31] ^ 0x80])  # the same point with its sign bit set
    if (
        raw in _SMALL_ORDER
        or flipped in _SMALL_ORDER
        or int.from_bytes(raw, "little") & ~(1 << 255) >= _P
    ):
        # A key of small order verifies forged signatures; a non-canonical one is not a key
        # `golive keygen` makes. Either is someone trying to pass a gate without a key.
        raise ValueError("not an Ed25519 public key golive accepts (a weak or malformed point)")
    return key


def same_key(one: str | None, other: str | None) -> bool:
    """Whether two public keys, as text, are one key (base64 can spell a key two ways)."""
    if not one or not other:
        return False
    try:
        raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
        return bool(
            load_public_key(one).public_bytes(*raw) == load_public_key(other).public_bytes(*raw)
        )
    except ValueError:
        return False


def sign(what: Signed, key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.sign(what.payload())).decode()


def verifies(what: Signed, signature: str, public_key: str) -> bool:
    try:
        load_public_key(public_key).verify(base64.b64decode(signature), what.payload())
    except (InvalidSignature, ValueError):
        return False
    return True
