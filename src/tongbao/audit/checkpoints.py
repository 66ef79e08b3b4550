"""Signed checkpoints of the audit chain head (AUD-3). Pure: no I/O.

A checkpoint says "at ``at`` the chain had ``hash`` at ``seq``", signed with
Ed25519. Checkpoints live outside the database (a JSON-lines file, ideally
shipped to write-once storage), so someone who can rewrite the database can
neither remove the newest records nor re-hash the chain without the
mismatch showing: they would need the signing key, which is derived from the
master key and never stored in the database.

One checkpoint is one line:

    >>> signer = CheckpointSigner(bytes(32))
    >>> cp = signer.sign(5, "ab" * 32, datetime(2026, 1, 1, tzinfo=UTC))
    >>> line = to_line(cp)
    >>> line[:63]
    '{"v":1,"seq":5,"hash":"abababababababababababababababababababab'
    >>> signer.verify(parse_line(line))
    True
    >>> signer.verify(parse_line(line.replace('"seq":5', '"seq":4')))
    False
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tongbao.audit.model import SignedPoint, instant_text

SIGNING_PURPOSE = "audit-checkpoint"
"""What the checkpoint key is derived for: ``KeyRing.derive_key(SIGNING_PURPOSE)``."""
_DOMAIN = b"tongbao-audit-checkpoint-v1\n"
_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: str
    at: datetime
    key_id: str
    """Which key signed it: the first 16 hex digits of SHA-256 of the public key."""
    signature: bytes

    @property
    def point(self) -> SignedPoint:
        return SignedPoint(self.seq, self.hash, self.at)


def signed_message(seq: int, chain_hash: str, at: datetime) -> bytes:
    """The bytes a checkpoint's signature covers."""
    return _DOMAIN + orjson.dumps([seq, chain_hash, instant_text(at)])


def key_id(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


class CheckpointSigner:
    """Signs and checks checkpoints with the Ed25519 key grown from a 32-byte seed."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("the checkpoint signing seed must be 32 bytes")
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self._public: Ed25519PublicKey = self._private.public_key()
        self.public_key = self._public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id(self.public_key)

    def sign(self, seq: int, chain_hash: str, at: datetime) -> Checkpoint:
        at = at.astimezone(UTC)
        signature = self._private.sign(signed_message(seq, chain_hash, at))
        return Checkpoint(seq, chain_hash, at, self.key_id, signature)

    def verify(self, checkpoint: Checkpoint) -> bool:
        try:
            self._public.verify(
                checkpoint.signature,
                signed_message(checkpoint.seq, checkpoint.hash, checkpoint.at),
            )
        except InvalidSignature:
            return False
        return True


def to_line(cp: Checkpoint) -> str:
    return orjson.dumps(
        {
            "v": 1,
            "seq": cp.seq,
            "hash": cp.hash,
            "at": instant_text(cp.at),
            "alg": "Ed25519",
            "key": cp.key_id,
            "sig": base64.b64encode(cp.signature).decode(),
        }
    ).decode()


def parse_line(text: str) -> Checkpoint:
    """One line of the checkpoint file; ``ValueError`` naming what is wrong."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError("not JSON") from None
    if not isinstance(data, dict) or data.get("v") != 1 or data.get("alg") != "Ed25519":
        raise ValueError("not a version-1 Ed25519 checkpoint")
    seq, chain_hash, at = data.get("seq"), data.get("hash"), data.get("at")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError("seq is not a positive integer")
    if not isinstance(chain_hash, str) or not _HASH.fullmatch(chain_hash):
        raise ValueError("hash is not 64 hex digits")
    try:
        instant = datetime.strptime(str(at), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        signature = base64.b64decode(str(data.get("sig")), validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("time or signature is malformed") from None
    return Checkpoint(seq, chain_hash, instant, str(data.get("key")), signature)
