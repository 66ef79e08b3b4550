"""Signed bank instructions (SEC-12 non-repudiation, PAY-6 tamper-proof channel). Pure: no I/O.

The platform signs every instruction it sends to a bank with Ed25519; the
bank verifies the signature with the platform's public key (registered when
the channel is set up) and keeps it, so anyone holding the public key can
later prove the platform sent exactly those fields — and that nobody changed
them on the way.

**What is signed** (:func:`canonical_bytes`, version 1): the ASCII line
``tongbao-bank-instruction-v1 ed25519`` and a newline, then seven fields in
this order, each as a 4-byte big-endian length followed by its UTF-8 bytes:

1. the instruction id (the platform's payment id),
2. the direction (``debit`` or ``credit``),
3. the quick-pay agreement id,
4. the amount in fen as decimal digits (no sign, no leading zeros),
5. the memo (at most :data:`MEMO_MAX_CHARS` characters),
6. the bank code the instruction is addressed to,
7. the signing instant in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.

Length prefixes make the encoding unambiguous whatever the fields contain
(no escaping, no separator that a memo could forge). No nonce is needed:
the instruction id is unique and a bank answers a repeated id with its first
outcome, so a replayed instruction moves no money; the instant is evidence
of when the platform signed.

    >>> from datetime import UTC, datetime
    >>> ins = Instruction("pay_1", InstructionDirection.DEBIT, "AGR9", 1234, "top-up 1", "SIMBANK")
    >>> at = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    >>> canonical_bytes(ins, at)[:36]
    b'tongbao-bank-instruction-v1 ed25519\\n'
    >>> canonical_bytes(ins, at)[36:54]
    b'\\x00\\x00\\x00\\x05pay_1\\x00\\x00\\x00\\x05debit'
    >>> signer = InstructionSigner(bytes(32))
    >>> signed = signer.sign(ins, at)
    >>> (signed.algorithm, signed.key_id, len(signed.signature))
    ('ed25519', '139e3940e64b5491', 64)
    >>> verify(signer.public_key, signed)
    True
    >>> from dataclasses import replace
    >>> verify(signer.public_key, replace(signed, instruction=replace(ins, amount=1235)))
    False
    >>> verify(InstructionSigner(bytes([1]) * 32).public_key, signed)
    False

``sm2`` (GB/T 32918, the national algorithm) is a recognised setting but
refused: no maintained, constant-time SM2 implementation exists for Python
(the pure-Python ``gmssl`` packages are unmaintained and not side-channel
safe), and an instruction is never sent unsigned or signed some other way
instead.

    >>> require_signature_algorithm("sm2")
    Traceback (most recent call last):
    ...
    tongbao.errors.InstructionSignatureUnsupportedError: instruction_signature_unsupported: \
TONGBAO_INSTRUCTION_SIGNATURE=sm2 is not available: no maintained, constant-time SM2 library \
exists for Python; use ed25519 (the platform does not fall back on its own)
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tongbao import errors
from tongbao.banking.channel import Instruction, InstructionDirection, SignedInstruction

ED25519: Final = "ed25519"
SM2: Final = "sm2"
INSTRUCTION_KEY_PURPOSE: Final = "bank-instruction-signing"
"""What the signing key is derived for: ``KeyRing.derive_key(INSTRUCTION_KEY_PURPOSE)``."""
MEMO_MAX_CHARS: Final = 140
"""As an ISO 20022 unstructured remittance line; longer memos are refused, never cut."""
PUBLIC_KEY_BYTES: Final = 32
_DOMAIN: Final = b"tongbao-bank-instruction-v1 "
_INSTANT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


def require_signature_algorithm(name: str) -> str:
    """``name`` if the platform can sign with it; refuses ``sm2`` (and anything else)."""
    if name == ED25519:
        return name
    if name == SM2:
        raise errors.InstructionSignatureUnsupported(
            "TONGBAO_INSTRUCTION_SIGNATURE=sm2 is not available: no maintained, constant-time "
            "SM2 library exists for Python; use ed25519 (the platform does not fall back on "
            "its own)"
        )
    raise errors.InstructionSignatureUnsupported(
        f"TONGBAO_INSTRUCTION_SIGNATURE={name} is not a known algorithm; use ed25519"
    )


def instant_text(at: datetime) -> str:
    """The signing instant as it is signed and stored: UTC, microseconds, ``Z``."""
    if at.tzinfo is None:
        raise ValueError("naive datetime given where a UTC instant is required")
    return at.astimezone(UTC).strftime(_INSTANT)


def _field(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def canonical_bytes(
    instruction: Instruction, signed_at: datetime, algorithm: str = ED25519
) -> bytes:
    """The bytes an instruction's signature covers (see the module docstring)."""
    amount = instruction.amount
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise errors.InvalidAmount(f"an instruction amount must be positive fen, not {amount!r}")
    if len(instruction.memo) > MEMO_MAX_CHARS:
        raise errors.ValidationFailed(
            f"an instruction memo has at most {MEMO_MAX_CHARS} characters, "
            f"not {len(instruction.memo)}"
        )
    fields = (
        instruction.id,
        InstructionDirection(instruction.direction).value,
        instruction.agreement_id,
        str(amount),
        instruction.memo,
        instruction.bank_code,
        instant_text(signed_at),
    )
    return _DOMAIN + algorithm.encode("ascii") + b"\n" + b"".join(map(_field, fields))


def key_id(public_key: bytes) -> str:
    """A short, non-secret name of a public key: 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def public_key_pem(public_key: bytes) -> str:
    """The raw 32-byte Ed25519 public key as a PEM ``PUBLIC KEY`` block (SubjectPublicKeyInfo),
    the form a bank (or OpenSSL) takes it in."""
    return (
        Ed25519PublicKey.from_public_bytes(public_key)
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def verify(public_key: bytes, signed: SignedInstruction) -> bool:
    """Whether ``signed`` carries a valid signature by ``public_key`` over exactly its fields.

    ``False`` for another algorithm, a malformed key or signature, or any changed field.
    """
    if signed.algorithm != ED25519 or len(public_key) != PUBLIC_KEY_BYTES:
        return False
    try:
        message = canonical_bytes(signed.instruction, signed.signed_at, signed.algorithm)
        Ed25519PublicKey.from_public_bytes(public_key).verify(signed.signature, message)
    except (InvalidSignature, ValueError, errors.TongbaoError):
        return False
    return True


def signature_text(signature: bytes) -> str:
    """How a signature is stored and shown: standard base64."""
    return base64.b64encode(signature).decode("ascii")


class InstructionSigner:
    """Signs instructions with the Ed25519 key grown from a 32-byte seed.

    ``seed`` may be a callable, so that the key is derived (and the key ring
    needed) only when the first instruction is signed or the key is asked for.
    """

    def __init__(self, seed: bytes | Callable[[], bytes]) -> None:
        self._seed = seed

    @cached_property
    def _private(self) -> Ed25519PrivateKey:
        seed = self._seed() if callable(self._seed) else self._seed
        if len(seed) != PUBLIC_KEY_BYTES:
            raise ValueError("the instruction signing seed must be 32 bytes")
        return Ed25519PrivateKey.from_private_bytes(seed)

    @cached_property
    def public_key(self) -> bytes:
        """The raw 32-byte public key a bank verifies with."""
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @cached_property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def sign(self, instruction: Instruction, at: datetime) -> SignedInstruction:
        """``instruction`` signed at ``at`` (:class:`~tongbao.errors.InvalidAmount` or
        :class:`~tongbao.errors.ValidationFailed` if it cannot be encoded)."""
        at = at.astimezone(UTC)
        signature = self._private.sign(canonical_bytes(instruction, at))
        return SignedInstruction(instruction, at, ED25519, self.key_id, signature)
