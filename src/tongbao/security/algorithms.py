"""Ciphers, digests and the field ciphertext format — pure functions, no I/O.

Two AEAD ciphers seal data (SEC-1, SEC-12): AES-256-GCM (the default) and
SM4-GCM (the national algorithm; 128-bit key). Both always *decrypt*, so
switching ``TONGBAO_FIELD_CIPHER`` needs no downtime. Two digests serve
blind indexes and key derivation: SHA-256 and SM3.

A field value at rest is text, so it fits the ``TEXT`` columns it replaces::

    tb1:<data key id>:<base64url(nonce ‖ ciphertext ‖ tag)>

``tb1`` names the format version; the data key id says which key opens it
(the key's row says with which cipher). The AEAD's associated data binds
the ciphertext to its field name and data key, so a value copied into
another column, or relabelled with another key id, fails to open instead
of reading as something else.

    >>> key = new_key(AES_256_GCM)
    >>> sealed = seal(AES_256_GCM, key, "张三".encode(), b"customers.name")
    >>> open_sealed(AES_256_GCM, key, sealed, b"customers.name").decode()
    '张三'
    >>> open_sealed(AES_256_GCM, key, sealed, b"bank_cards.holder_name")
    Traceback (most recent call last):
    ...
    tongbao.errors.DecryptionFailedError: decryption_failed: the ciphertext does not open \
with this key and field (corrupted, moved or made with another key)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac as std_hmac
import os
from dataclasses import dataclass
from functools import cache
from typing import Final, Literal

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tongbao import errors
from tongbao.ids import looks_like

CipherName = Literal["AES-256-GCM", "SM4-GCM"]
DigestName = Literal["SHA-256", "SM3"]

AES_256_GCM: Final = "AES-256-GCM"
SM4_GCM: Final = "SM4-GCM"
CIPHERS: Final[tuple[CipherName, ...]] = (AES_256_GCM, SM4_GCM)
DIGESTS: Final[tuple[DigestName, ...]] = ("SHA-256", "SM3")

KEY_BYTES: Final[dict[str, int]] = {AES_256_GCM: 32, SM4_GCM: 16}
NONCE_BYTES: Final = 12  # 96-bit random nonces: safe for far more than 2^32 seals per key
TAG_BYTES: Final = 16
# First byte of a wrapped key blob, so a blob says which cipher sealed it.
_CIPHER_IDS: Final[dict[str, int]] = {AES_256_GCM: 1, SM4_GCM: 2}
_CIPHER_BY_ID: Final = {v: k for k, v in _CIPHER_IDS.items()}

FORMAT: Final = "tb1"
DATA_KEY_PREFIX: Final = "dek"

_FAILED = (
    "the ciphertext does not open with this key and field "
    "(corrupted, moved or made with another key)"
)


# --- availability ------------------------------------------------------------------


@cache
def cipher_available(cipher: str) -> bool:
    """Whether this build of OpenSSL offers ``cipher`` (SM4 may be compiled out).

    >>> cipher_available(AES_256_GCM)
    True
    >>> cipher_available("DES")
    False
    """
    if cipher not in KEY_BYTES:
        return False
    try:
        key = bytes(KEY_BYTES[cipher])
        open_sealed(cipher, key, seal(cipher, key, b"probe", b""), b"")
    except (UnsupportedAlgorithm, errors.DecryptionFailed, ValueError):
        return False
    return True


@cache
def digest_available(digest: str) -> bool:
    """Whether this build of OpenSSL offers ``digest`` (SM3 may be compiled out)."""
    try:
        hmac_digest(digest, b"k", b"probe")
    except (UnsupportedAlgorithm, ValueError):
        return False
    return True


def require_cipher(cipher: str) -> None:
    """Refuse at start-up, clearly, a cipher this installation cannot run —
    never fall back silently to another one."""
    if cipher not in KEY_BYTES:
        raise errors.ConfigurationError(f"unknown field cipher {cipher!r}; use one of {CIPHERS}")
    if not cipher_available(cipher):
        raise errors.ConfigurationError(
            f"{cipher} is configured but this OpenSSL build does not provide it; "
            "install a cryptography/OpenSSL build with SM4 or use AES-256-GCM"
        )


def require_digest(digest: str) -> None:
    if digest not in DIGESTS:
        raise errors.ConfigurationError(f"unknown digest {digest!r}; use one of {DIGESTS}")
    if not digest_available(digest):
        raise errors.ConfigurationError(
            f"{digest} is configured but this OpenSSL build does not provide it"
        )


# --- AEAD ----------------------------------------------------------------------------


def new_key(cipher: str) -> bytes:
    """Fresh random key material of the right length for ``cipher``."""
    return os.urandom(KEY_BYTES[cipher])


def seal(cipher: str, key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """``nonce ‖ ciphertext ‖ tag`` under a fresh random nonce."""
    nonce = os.urandom(NONCE_BYTES)
    if cipher == AES_256_GCM:
        return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)
    if cipher == SM4_GCM:
        encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(aad)
        body = encryptor.update(plaintext) + encryptor.finalize()
        return nonce + body + encryptor.tag
    raise errors.ConfigurationError(f"unknown cipher {cipher!r}")


def open_sealed(cipher: str, key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """The plaintext of :func:`seal`'s output; :class:`~tongbao.errors.DecryptionFailed`
    if anything — key, data, associated data — is not exactly what sealed it."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise errors.DecryptionFailed("the ciphertext is truncated")
    nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    try:
        if cipher == AES_256_GCM:
            return AESGCM(key).decrypt(nonce, body, aad)
        if cipher == SM4_GCM:
            tag, data = body[-TAG_BYTES:], body[:-TAG_BYTES]
            decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
            decryptor.authenticate_additional_data(aad)
            return decryptor.update(data) + decryptor.finalize()
    except InvalidTag:
        raise errors.DecryptionFailed(_FAILED) from None
    raise errors.ConfigurationError(f"unknown cipher {cipher!r}")


def wrap_key(cipher: str, kek: bytes, key: bytes, aad: bytes) -> bytes:
    """A key sealed under a key-encryption key, led by one byte naming the cipher.

    >>> kek = new_key(SM4_GCM)
    >>> blob = wrap_key(SM4_GCM, kek, b"k" * 32, b"dek|1")
    >>> blob[0], len(blob)
    (2, 61)
    >>> unwrap_key(kek, blob, b"dek|1") == b"k" * 32
    True
    """
    return bytes([_CIPHER_IDS[cipher]]) + seal(cipher, kek, key, aad)


def wrapped_cipher(blob: bytes) -> str:
    """The cipher a :func:`wrap_key` blob was sealed with."""
    cipher = _CIPHER_BY_ID.get(blob[0]) if blob else None
    if cipher is None:
        raise errors.DecryptionFailed("the wrapped key names no known cipher")
    return cipher


def unwrap_key(kek: bytes, blob: bytes, aad: bytes) -> bytes:
    return open_sealed(wrapped_cipher(blob), kek, blob[1:], aad)


# --- digests ---------------------------------------------------------------------------


_HASHLIB_SM3: Final = "sm3" in hashlib.algorithms_available


def _hash(digest: str) -> hashes.HashAlgorithm:
    if digest == "SHA-256":
        return hashes.SHA256()
    if digest == "SM3":
        return hashes.SM3()
    raise ValueError(f"unknown digest {digest!r}")


def digest_of(digest: str, data: bytes) -> bytes:
    """SHA-256 or SM3 of ``data``.

    >>> digest_of("SM3", b"abc").hex()[:16]
    '66c7f0f462eeedd9'
    """
    if digest == "SHA-256":
        return hashlib.sha256(data).digest()
    if digest == "SM3" and _HASHLIB_SM3:
        return hashlib.new("sm3", data).digest()  # OpenSSL's: faster than the object below
    h = hashes.Hash(_hash(digest))
    h.update(data)
    return h.finalize()


def hmac_digest(digest: str, key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 or HMAC-SM3."""
    if digest == "SHA-256":
        return std_hmac.new(key, data, hashlib.sha256).digest()  # the C fast path
    mac = crypto_hmac.HMAC(key, _hash(digest))
    mac.update(data)
    return mac.finalize()


def hkdf(digest: str, secret: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF (RFC 5869) with SHA-256 or SM3; no salt: ``secret`` is uniformly random.

    >>> hkdf("SHA-256", b"s" * 32, b"a") != hkdf("SHA-256", b"s" * 32, b"b")
    True
    """
    return HKDF(algorithm=_hash(digest), length=length, salt=None, info=info).derive(secret)


# --- the field ciphertext format ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldCiphertext:
    """A parsed ``tb1:<dek id>:<payload>`` value.

    >>> c = FieldCiphertext("dek_01KAQ3M5T0000000000000000X", b"\\x00" * 29)
    >>> text = c.text()
    >>> text
    'tb1:dek_01KAQ3M5T0000000000000000X:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'
    >>> parse_ciphertext(text) == c
    True
    """

    dek_id: str
    sealed: bytes

    def text(self) -> str:
        payload = base64.urlsafe_b64encode(self.sealed).rstrip(b"=").decode("ascii")
        return f"{FORMAT}:{self.dek_id}:{payload}"


def field_aad(field: str, dek_id: str) -> bytes:
    """Associated data of a field ciphertext: format, field name and data key."""
    return f"{FORMAT}|{field}|{dek_id}".encode()


def parse_ciphertext(text: str) -> FieldCiphertext:
    """Split a stored value into data key id and sealed bytes, or refuse it
    with :class:`~tongbao.errors.DecryptionFailed`.

    >>> parse_ciphertext("张三")
    Traceback (most recent call last):
    ...
    tongbao.errors.DecryptionFailedError: decryption_failed: the value is not a tb1 ciphertext
    """
    head, sep, rest = text.partition(":")
    dek_id, sep2, payload = rest.partition(":")
    if head != FORMAT or not sep or not sep2:
        raise errors.DecryptionFailed(f"the value is not a {FORMAT} ciphertext")
    if not looks_like(dek_id, DATA_KEY_PREFIX):
        raise errors.DecryptionFailed("the ciphertext names no valid data key")
    try:
        sealed = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    except (binascii.Error, ValueError):
        raise errors.DecryptionFailed("the ciphertext payload is not base64url") from None
    if base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii") != payload:
        raise errors.DecryptionFailed("the ciphertext payload is not canonical base64url")
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise errors.DecryptionFailed("the ciphertext is truncated")
    return FieldCiphertext(dek_id, sealed)


def is_ciphertext(value: str) -> bool:
    """Whether a stored value is a field ciphertext (anything else is clear text,
    e.g. a row written before its column was encrypted).

    >>> is_ciphertext("tb1:dek_01KAQ3M5T0000000000000000X:" + "A" * 38), is_ciphertext("李四")
    (True, False)
    """
    if not value.startswith(FORMAT + ":"):
        return False
    try:
        parse_ciphertext(value)
    except errors.DecryptionFailed:
        return False
    return True


def ciphertext_length(plaintext_bytes: int) -> int:
    """Characters a ciphertext of ``plaintext_bytes`` UTF-8 bytes takes — for
    sizing columns (a Chinese character is 3 bytes).

    >>> ciphertext_length(len("张三".encode()))
    81
    >>> ciphertext_length(300)
    473
    """
    sealed = NONCE_BYTES + plaintext_bytes + TAG_BYTES
    return len(FORMAT) + 1 + 30 + 1 + (4 * sealed + 2) // 3
