"""The key ring: envelope encryption of personal data at rest (SEC-1, SEC-12)
and crypto-shredding (AUD-6). ``docs/security.md`` ("Encryption at rest")
explains the design; in short::

    master key (file / KMS / HSM, never in the database)
      └─ wraps the ring's root secret ── HKDF ─→ blind-index keys, derive_key(purpose)
      └─ wraps key versions (KEKs) 1, 2, 3 …      (``keys rotate`` adds one)
           └─ each wraps data keys (DEKs), one per subject ("customer:cus_…")
                └─ each seals that subject's field values (AES-256-GCM or SM4-GCM)

Shredding a subject destroys its data keys, so every copy of its values —
in the table, a replica or a backup — becomes unreadable. Rotating adds a
key version that new data keys go under; ``keys reencrypt`` moves existing
subjects to fresh data keys under it, and ``keys retire`` then destroys the
old version.

Other capabilities use :meth:`KeyRing.encrypt`, :meth:`KeyRing.decrypt`,
:meth:`KeyRing.blind_index`, :meth:`KeyRing.shred` and
:meth:`KeyRing.derive_key`, and declare every column they encrypt as an
:class:`EncryptedColumn` (:meth:`KeyRing.register`) so the re-encryption job
finds it.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

import structlog
from sqlalchemy import Connection, bindparam, func, insert, literal_column, select, update

from tongbao import errors
from tongbao.clock import Clock
from tongbao.config import Settings
from tongbao.ids import new_id
from tongbao.security import tables as t
from tongbao.security.algorithms import (
    AES_256_GCM,
    DATA_KEY_PREFIX,
    KEY_BYTES,
    FieldCiphertext,
    field_aad,
    hkdf,
    hmac_digest,
    new_key,
    open_sealed,
    parse_ciphertext,
    require_cipher,
    require_digest,
    seal,
    unwrap_key,
    wrap_key,
    wrapped_cipher,
)
from tongbao.security.normalise import normalise_for_index
from tongbao.storage import RetryTransactionError, is_unique_violation
from tongbao.storage.prepared import Prepared

if TYPE_CHECKING:
    from tongbao.security.reencrypt import ReencryptReport
    from tongbao.storage import Database

log = structlog.get_logger(__name__)

ACTIVE: Final = "active"
RETIRED: Final = "retired"
MASTER_KEY_BYTES: Final = 32
DEFAULT_CACHE_SECONDS: Final = 30.0
_ROOT_CONTEXT: Final = "root"
_DERIVE_INFO: Final = b"tongbao derived key v1|"
_INDEX_INFO: Final = b"tongbao blind index v1|"


# --- the master key ------------------------------------------------------------------


class MasterKeyProvider(Protocol):
    """The seam where a KMS or HSM plugs in: it wraps and unwraps the ring's
    keys and never hands out its own. ``context`` is bound to the wrapped blob
    (KMS "encryption context", AEAD associated data): a blob only unwraps for
    the purpose it was made for."""

    @property
    def key_id(self) -> str:
        """A stable, non-secret name of the master key (stored with the ring)."""
        ...

    def wrap(self, key: bytes, *, context: str) -> bytes: ...

    def unwrap(self, blob: bytes, *, context: str) -> bytes:
        """The key; :class:`~tongbao.errors.MasterKeyInvalid` if ``blob`` was not
        wrapped by this master key for ``context``."""
        ...


class LocalMasterKey:
    """A master key held by this process: 32 random bytes from
    ``TONGBAO_MASTER_KEY_FILE`` (or ``TONGBAO_MASTER_KEY``). Wrapping uses a key
    derived for the cipher (AES-256-GCM, or SM4-GCM for a national-algorithm
    deployment); every blob says which, so either always unwraps.

    >>> master = LocalMasterKey(bytes(32))
    >>> master.key_id
    'local:1f125953cda0f115'
    >>> master.unwrap(master.wrap(b"secret", context="x"), context="x")
    b'secret'
    >>> master.unwrap(master.wrap(b"secret", context="x"), context="y")
    Traceback (most recent call last):
    ...
    tongbao.errors.MasterKeyInvalidError: master_key_invalid: a wrapped key (y) does not open \
with this master key: it is not the master key the key ring was made with
    """

    def __init__(self, key: bytes, *, cipher: str = AES_256_GCM) -> None:
        if len(key) != MASTER_KEY_BYTES:
            raise errors.MasterKeyInvalid(
                f"the master key has {len(key)} bytes; it must be {MASTER_KEY_BYTES}"
            )
        require_cipher(cipher)
        self._key = key
        self.cipher = cipher
        self._wrapping: dict[str, bytes] = {}
        self._key_id = "local:" + hkdf("SHA-256", key, b"tongbao master key id", 8).hex()

    @property
    def key_id(self) -> str:
        return self._key_id

    def _wrapping_key(self, cipher: str) -> bytes:
        found = self._wrapping.get(cipher)
        if found is None:
            info = b"tongbao master wrapping key|" + cipher.encode()
            found = hkdf("SHA-256", self._key, info, KEY_BYTES[cipher])
            self._wrapping[cipher] = found
        return found

    def wrap(self, key: bytes, *, context: str) -> bytes:
        return wrap_key(
            self.cipher, self._wrapping_key(self.cipher), key, b"master|" + context.encode()
        )

    def unwrap(self, blob: bytes, *, context: str) -> bytes:
        try:
            return unwrap_key(
                self._wrapping_key(wrapped_cipher(blob)), blob, b"master|" + context.encode()
            )
        except errors.DecryptionFailed:
            raise errors.MasterKeyInvalid(
                f"a wrapped key ({context}) does not open with this master key: "
                "it is not the master key the key ring was made with"
            ) from None


DEFAULT_MASTER_KEY_FILE = Path("var/master.key")


def load_master_key(settings: Settings) -> LocalMasterKey:
    """The master key the settings name; refuses clearly when there is none
    (:class:`~tongbao.errors.MasterKeyMissing`) or it is malformed
    (:class:`~tongbao.errors.MasterKeyInvalid`)."""
    secret = settings.master_key.get_secret_value() if settings.master_key else None
    path = settings.master_key_file
    if not secret and path is None and DEFAULT_MASTER_KEY_FILE.is_file():
        # The quick start's key, found where it put it — as the database is.
        path = DEFAULT_MASTER_KEY_FILE
    if secret and path:
        raise errors.MasterKeyInvalid(
            "both TONGBAO_MASTER_KEY and TONGBAO_MASTER_KEY_FILE are set; set only one"
        )
    if not secret and path is not None:
        try:
            secret = path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise errors.MasterKeyMissing(
                f"no master key file at {path}; create it with `tongbao keys init --file {path}`"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise errors.MasterKeyInvalid(
                f"cannot read the master key file {path}: {exc}"
            ) from None
        if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("master_key_file_readable_by_others", path=str(path), fix="chmod 600")
    if not secret:
        raise errors.MasterKeyMissing(
            "no master key: set TONGBAO_MASTER_KEY_FILE (create one with "
            "`tongbao keys init --file var/master.key`) or TONGBAO_MASTER_KEY"
        )
    try:
        key = base64.b64decode(secret.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise errors.MasterKeyInvalid("the master key is not base64") from None
    if len(key) != MASTER_KEY_BYTES:
        raise errors.MasterKeyInvalid(
            f"the master key decodes to {len(key)} bytes; it must be base64 of "
            f"{MASTER_KEY_BYTES} random bytes"
        )
    return LocalMasterKey(key, cipher=settings.field_cipher)


def create_master_key_file(path: Path) -> Path:
    """Write a fresh master key to ``path`` (mode 0600). An existing file is
    never overwritten: the data it protects would be lost with it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise errors.ConfigurationError(
            f"{path} exists; a master key is never overwritten (the data it protects "
            "would become unreadable)"
        ) from None
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(base64.b64encode(os.urandom(MASTER_KEY_BYTES)).decode("ascii") + "\n")
    return path


# --- data keys, columns, status --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataKey:
    """An unwrapped data key of one subject. Immutable, so safe to cache."""

    dek_id: str
    subject: str
    record_class: str
    kek_version: int
    cipher: str
    key: bytes = field(repr=False)

    def seal(self, field_name: str, plaintext: str) -> str:
        sealed = seal(self.cipher, self.key, plaintext.encode(), field_aad(field_name, self.dek_id))
        return FieldCiphertext(self.dek_id, sealed).text()

    def open(self, field_name: str, ciphertext: FieldCiphertext) -> str:
        plain = open_sealed(
            self.cipher, self.key, ciphertext.sealed, field_aad(field_name, self.dek_id)
        )
        return plain.decode()


@dataclass(frozen=True, slots=True)
class EncryptedColumn:
    """A column holding field ciphertexts, for ``tongbao keys reencrypt``.

    Its rows belong to the subject ``f"{record_class}:{row[subject_column]}"``
    (:func:`subject_for`); ``field`` is the name the values were sealed with.

    >>> EncryptedColumn("bank_cards", "card_number", "customer_id", "customer",
    ...                 "bank_cards.card_number").subject("cus_1")
    'customer:cus_1'
    """

    table: str
    column: str
    subject_column: str
    record_class: str
    field: str

    def subject(self, record_id: object) -> str:
        return subject_for(self.record_class, str(record_id))


def subject_for(record_class: str, record_id: str) -> str:
    """The key-ring subject of a record: ``customer:cus_…``."""
    return f"{record_class}:{record_id}"


@dataclass(frozen=True, slots=True)
class KeyVersionStatus:
    version: int
    cipher: str
    status: str
    created_at: datetime
    retired_at: datetime | None
    data_keys: int  # live data keys wrapped under this version
    shredded: int  # data keys destroyed by crypto-shredding


@dataclass(frozen=True, slots=True)
class KeyRingStatus:
    master_key_id: str
    digest_algorithm: str
    created_at: datetime
    current_version: int
    versions: tuple[KeyVersionStatus, ...]

    @property
    def data_keys_outside_current(self) -> int:
        """Live data keys under older versions: what ``keys reencrypt`` moves."""
        return sum(v.data_keys for v in self.versions if v.version != self.current_version)


# --- a small cache with expiry ---------------------------------------------------------------

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _ExpiringCache(Generic[K, V]):
    """Least-recently-used, entries expire ``seconds`` after loading (monotonic time)."""

    def __init__(self, seconds: float, size: int) -> None:
        self.seconds, self.size = seconds, size
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: K, value: V) -> None:
        if self.seconds <= 0:
            return
        with self._lock:
            self._entries[key] = (time.monotonic() + self.seconds, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def drop(self, unwanted: Callable[[V], bool]) -> None:
        with self._lock:
            for key in [k for k, (_, v) in self._entries.items() if unwanted(v)]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# --- statements on the hot path ----------------------------------------------------------------

_dk, _kv = t.data_keys, t.key_versions
# Prepared statements take only their named parameters: constants are inlined.
_CURRENT_VERSION = (
    select(func.max(_kv.c.version))
    .where(_kv.c.status == literal_column(f"'{ACTIVE}'"))
    .scalar_subquery()
)
# The subject's newest data key and, in the same snapshot, the current
# version. FOR KEY SHARE (PostgreSQL; SQLite has one writer anyway) makes the
# re-encryption job wait for this transaction before it checks whether an old
# data key is still used and deletes it — so a value written under an old key
# meanwhile is never left without its key. Shredding is not blocked by it.
_NEWEST_DATA_KEY = Prepared(
    select(
        _dk.c.dek_id,
        _dk.c.kek_version,
        _dk.c.shredded_at,
        _CURRENT_VERSION.label("current_version"),
    )
    .where(
        _dk.c.dek_id
        == select(func.max(_dk.c.dek_id))
        .where(_dk.c.subject == bindparam("p_subject"))
        .scalar_subquery()
    )
    .with_for_update(read=True, key_share=True, of=_dk)
)
_DATA_KEY_BY_ID = Prepared(
    select(
        _dk.c.subject,
        _dk.c.record_class,
        _dk.c.kek_version,
        _dk.c.cipher,
        _dk.c.wrapped_key,
        _dk.c.shredded_at,
        _kv.c.wrapped_key.label("kek_wrapped"),
    )
    .select_from(_dk.outerjoin(_kv, _kv.c.version == _dk.c.kek_version))
    .where(_dk.c.dek_id == bindparam("p_dek"))
)


def _dek_aad(dek_id: str, subject: str) -> bytes:
    # A wrapped data key only unwraps as the key of its own id and subject.
    return f"dek|{dek_id}|{subject}".encode()


def _version_context(version: int) -> str:
    return f"key-version:{version}"


# --- the key ring ----------------------------------------------------------------------------


class KeyRing:
    """Field encryption, blind indexes, crypto-shredding and key rotation.

    Unwrapped keys are cached in memory for ``cache_seconds`` (30 s): they are
    immutable rows, and a payment that shows a name should not pay for two
    unwraps and a query. A shred in *this* process takes effect at once; in
    another process within ``cache_seconds``.
    """

    def __init__(
        self,
        settings: Settings,
        master: MasterKeyProvider,
        clock: Clock,
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        cache_size: int = 10_000,
    ) -> None:
        require_cipher(settings.field_cipher)
        require_digest(settings.digest_algorithm)
        self.settings = settings
        self.master = master
        self.clock = clock
        self.columns: tuple[EncryptedColumn, ...] = ()
        self._root: bytes | None = None
        self._digest: str = settings.digest_algorithm
        self._data_keys: _ExpiringCache[str, DataKey] = _ExpiringCache(cache_seconds, cache_size)
        # Keyed by the wrapped blob, not the version number: a version number
        # written by a transaction that rolled back may later name another key.
        self._keks: _ExpiringCache[bytes, tuple[int, str, bytes]] = _ExpiringCache(
            cache_seconds, 100
        )
        self._index_keys: dict[str, bytes] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Clock, *, cache_seconds: float = DEFAULT_CACHE_SECONDS
    ) -> KeyRing:
        """With the master key the settings name (start-up refuses without one)."""
        return cls(settings, load_master_key(settings), clock, cache_seconds=cache_seconds)

    def register(self, *columns: EncryptedColumn) -> None:
        """Declare columns holding ciphertext, so ``keys reencrypt`` moves them too."""
        known = set(self.columns)
        self.columns += tuple(c for c in columns if c not in known)

    # --- start-up -------------------------------------------------------------------

    def initialize(self, conn: Connection) -> None:
        """Make the key ring on first start (idempotent); on every start check the
        master key opens it (:class:`~tongbao.errors.MasterKeyInvalid` otherwise)
        and load the root secret.

        A changed ``TONGBAO_FIELD_CIPHER`` takes effect here: a key version with
        that cipher becomes current (``keys reencrypt`` then moves old data).
        """
        row = conn.execute(select(t.key_ring).where(t.key_ring.c.id == 1)).first()
        if row is None:
            self._create(conn)
            row = conn.execute(select(t.key_ring).where(t.key_ring.c.id == 1)).one()
        if row.master_key_id != self.master.key_id:
            raise errors.MasterKeyInvalid(
                f"the key ring was made with master key {row.master_key_id}, "
                f"but {self.master.key_id} is configured"
            )
        root = self.master.unwrap(row.wrapped_root_key, context=_ROOT_CONTEXT)
        require_digest(row.digest_algorithm)
        current = self._current_version_row(conn)
        self._unwrap_kek(current.version, current.wrapped_key)  # the check of the master key
        if current.cipher != self.settings.field_cipher:
            version = self.rotate(conn)
            log.info(
                "key_version_for_new_cipher",
                version=version,
                cipher=self.settings.field_cipher,
                previous=current.cipher,
            )
        if row.digest_algorithm != self.settings.digest_algorithm:
            log.warning(
                "digest_algorithm_fixed_by_key_ring",
                ring=row.digest_algorithm,
                configured=self.settings.digest_algorithm,
                why="blind indexes and derived keys keep the ring's algorithm",
            )
        self._root, self._digest = root, row.digest_algorithm
        self._index_keys.clear()

    def _create(self, conn: Connection) -> None:
        now = self.clock.now()
        try:
            conn.execute(
                insert(t.key_ring),
                {
                    "id": 1,
                    "master_key_id": self.master.key_id,
                    "digest_algorithm": self.settings.digest_algorithm,
                    "wrapped_root_key": self.master.wrap(os.urandom(32), context=_ROOT_CONTEXT),
                    "created_at": now,
                },
            )
            self._insert_version(conn, 1, now)
        except Exception as exc:
            if is_unique_violation(exc):  # another process made it first: load theirs
                raise RetryTransactionError("key ring created concurrently") from exc
            raise
        log.info("key_ring_created", master_key_id=self.master.key_id)

    def _insert_version(self, conn: Connection, version: int, now: datetime) -> None:
        cipher = self.settings.field_cipher
        conn.execute(
            insert(_kv),
            {
                "version": version,
                "cipher": cipher,
                "status": ACTIVE,
                "wrapped_key": self.master.wrap(new_key(cipher), context=_version_context(version)),
                "created_at": now,
                "retired_at": None,
            },
        )

    def _loaded_root(self) -> bytes:
        if self._root is None:
            raise errors.ConfigurationError(
                "the key ring is not loaded: Platform.start() (KeyRing.initialize) must run first"
            )
        return self._root

    # --- fields -------------------------------------------------------------------------

    def encrypt(
        self, conn: Connection, *, subject: str, record_class: str, field: str, plaintext: str
    ) -> str:
        """A ciphertext of ``plaintext`` for ``field`` under the subject's data key,
        made (in the caller's transaction) if the subject has none under the
        current key version. :class:`~tongbao.errors.DataShredded` once the
        subject's data was destroyed: nothing is written for it again."""
        if not subject.startswith(record_class + ":") or len(subject) > 100:
            raise errors.ValidationFailed(
                f"subject {subject!r} must be '{record_class}:<record id>' (at most 100 characters)"
            )
        return self.writing_key(conn, subject, record_class).seal(field, plaintext)

    def decrypt(
        self, conn: Connection, ciphertext: str, *, field: str, subject: str | None = None
    ) -> str:
        """The plaintext of a ciphertext made for ``field`` (and, if given, ``subject``).

        Refusals: :class:`~tongbao.errors.DataShredded` (its subject was
        crypto-shredded), :class:`~tongbao.errors.DecryptionFailed` (corrupted,
        moved to another field or subject, or from another key ring),
        :class:`~tongbao.errors.KeyVersionUnknown` (its key version is gone).
        """
        parsed = parse_ciphertext(ciphertext)
        key = self.data_key(conn, parsed.dek_id)
        if subject is not None and key.subject != subject:
            raise errors.DecryptionFailed("the ciphertext belongs to another subject")
        try:
            return key.open(field, parsed)
        except UnicodeDecodeError:  # pragma: no cover - the AEAD tag makes this unreachable
            raise errors.DecryptionFailed("the plaintext is not UTF-8") from None

    def blind_index(self, field: str, value: str) -> str:
        """A keyed hash of the normalised value (HMAC-SHA256 or HMAC-SM3, with a
        key per field), for exact-match search without decrypting: equal
        values give equal indexes, the same value in two fields does not.
        Normalisation is in :func:`~tongbao.security.normalise.normalise_for_index`."""
        key = self._index_keys.get(field)
        if key is None:
            key = hkdf(self._digest, self._loaded_root(), _INDEX_INFO + field.encode())
            self._index_keys[field] = key
        return hmac_digest(self._digest, key, normalise_for_index(field, value).encode()).hex()

    def derive_key(self, purpose: str) -> bytes:
        """32 bytes for ``purpose`` (e.g. the audit log's checkpoint signing
        seed), stable for the life of the key ring — through rotations and a
        change of master key — and different for every purpose."""
        if not purpose:
            raise errors.ValidationFailed("a derived key needs a purpose")
        return hkdf(self._digest, self._loaded_root(), _DERIVE_INFO + purpose.encode())

    # --- data keys --------------------------------------------------------------------------

    def current_version(self, conn: Connection) -> int:
        return int(self._current_version_row(conn).version)

    def _current_version_row(self, conn: Connection, *, lock: bool = False) -> Any:
        query = (
            select(_kv.c.version, _kv.c.cipher, _kv.c.wrapped_key)
            .where(_kv.c.status == ACTIVE)
            .order_by(_kv.c.version.desc())
            .limit(1)
        )
        # FOR SHARE: `retire` (FOR UPDATE) waits for a transaction making a data
        # key under the version, and then sees the key and refuses.
        row = conn.execute(query.with_for_update(read=True) if lock else query).first()
        if row is None:
            raise errors.ConfigurationError(
                "the key ring has no key version: Platform.start() (KeyRing.initialize) "
                "must run first"
            )
        return row

    def writing_key(self, conn: Connection, subject: str, record_class: str) -> DataKey:
        """The data key new values of ``subject`` are sealed with."""
        row = _NEWEST_DATA_KEY.first(conn, {"p_subject": subject})
        if row is not None:
            if row["shredded_at"] is not None:
                raise errors.DataShredded(
                    f"the data of {subject} was destroyed; nothing is written for it any more"
                )
            if row["kek_version"] == row["current_version"]:
                return self.data_key(conn, row["dek_id"])
        return self._new_data_key(conn, subject, record_class)

    def _new_data_key(self, conn: Connection, subject: str, record_class: str) -> DataKey:
        current = self._current_version_row(conn, lock=True)
        kek_cipher, kek = self._unwrap_kek(current.version, current.wrapped_key)
        dek_id = new_id(DATA_KEY_PREFIX)
        key = new_key(kek_cipher)
        conn.execute(
            insert(_dk),
            {
                "dek_id": dek_id,
                "subject": subject,
                "record_class": record_class,
                "kek_version": current.version,
                "cipher": kek_cipher,
                "wrapped_key": wrap_key(kek_cipher, kek, key, _dek_aad(dek_id, subject)),
                "created_at": self.clock.now(),
                "shredded_at": None,
            },
        )
        data_key = DataKey(dek_id, subject, record_class, current.version, kek_cipher, key)
        self._data_keys.put(dek_id, data_key)  # ids are never reused, even after a rollback
        return data_key

    def data_key(self, conn: Connection, dek_id: str) -> DataKey:
        """The unwrapped data key ``dek_id`` (cached)."""
        cached = self._data_keys.get(dek_id)
        if cached is not None:
            return cached
        row = _DATA_KEY_BY_ID.first(conn, {"p_dek": dek_id})
        if row is None:
            raise errors.DecryptionFailed(
                f"no data key {dek_id}: the value was made by another key ring "
                "or its key was removed"
            )
        if row["shredded_at"] is not None:
            raise errors.DataShredded(
                f"the data of {row['subject']} was destroyed on "
                f"{row['shredded_at'].date().isoformat()} (end of retention)"
            )
        kek = self._unwrap_kek(row["kek_version"], row["kek_wrapped"])
        return self._unwrap_data_key(
            kek,
            dek_id,
            row["subject"],
            row["record_class"],
            row["kek_version"],
            row["cipher"],
            row["wrapped_key"],
        )

    def _unwrap_data_key(
        self,
        kek: tuple[str, bytes],
        dek_id: str,
        subject: str,
        record_class: str,
        version: int,
        cipher: str,
        wrapped: bytes,
    ) -> DataKey:
        try:
            key = unwrap_key(kek[1], wrapped, _dek_aad(dek_id, subject))
        except errors.DecryptionFailed:
            raise errors.DecryptionFailed(
                f"the data key {dek_id} does not unwrap under key version {version} "
                "(the key ring was tampered with)"
            ) from None
        data_key = DataKey(dek_id, subject, record_class, version, cipher, key)
        self._data_keys.put(dek_id, data_key)
        return data_key

    def _unwrap_kek(self, version: int, wrapped: bytes | None) -> tuple[str, bytes]:
        if wrapped is None:
            raise errors.KeyVersionUnknown(
                f"key version {version} does not exist or was retired (its key destroyed)"
            )
        cached = self._keks.get(wrapped)
        if cached is not None:
            return cached[1], cached[2]
        key = self.master.unwrap(wrapped, context=_version_context(version))
        cipher = wrapped_cipher(wrapped)
        self._keks.put(wrapped, (version, cipher, key))
        return cipher, key

    # --- crypto-shredding (AUD-6) ---------------------------------------------------------

    def shred(self, conn: Connection, subject: str) -> int:
        """Destroy every data key of ``subject``: its values everywhere — table,
        replicas, backups — can no longer be decrypted (:class:`DataShredded`),
        and nothing more is written for it. Returns how many keys were destroyed.

        The row stays as a tombstone (when, not what). On SQLite the overwritten
        bytes are zeroed (``secure_delete``); on PostgreSQL the old row version
        lingers until VACUUM (:meth:`scrub`), and a wrapped key in an old backup
        dies with its key version (``keys rotate``, ``reencrypt``, ``retire``).
        """
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.exec_driver_sql("PRAGMA secure_delete = ON")
        destroyed = conn.execute(
            update(_dk)
            .where(_dk.c.subject == subject, _dk.c.shredded_at.is_(None))
            .values(wrapped_key=None, shredded_at=self.clock.now())
        ).rowcount
        if sqlite:
            conn.exec_driver_sql("PRAGMA secure_delete = OFF")
        self._data_keys.drop(lambda key: key.subject == subject)
        log.info("data_keys_shredded", subject=subject, keys=destroyed)
        return int(destroyed)

    def scrub(self, db: Database) -> None:
        """Physically remove the old row versions of shredded and deleted keys:
        VACUUM on PostgreSQL, a WAL checkpoint on SQLite. Run after a purge."""
        if db.dialect == "postgresql":
            with db.read_engine.connect() as conn:  # autocommit: VACUUM refuses transactions
                conn.exec_driver_sql("VACUUM data_keys")
        else:
            with db.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    # --- rotation -------------------------------------------------------------------------

    def rotate(self, conn: Connection) -> int:
        """A new key version (with the configured cipher) becomes current: data
        keys made from now on are wrapped under it; older versions still
        decrypt until retired. Returns the new version."""
        latest = conn.execute(select(func.max(_kv.c.version))).scalar()
        if latest is None:
            raise errors.ConfigurationError("the key ring is not initialised")
        version = int(latest) + 1
        try:
            self._insert_version(conn, version, self.clock.now())
        except Exception as exc:
            if is_unique_violation(exc):  # a concurrent rotation took the number
                raise RetryTransactionError("key version taken concurrently") from exc
            raise
        log.info("key_version_rotated", version=version, cipher=self.settings.field_cipher)
        return version

    def retire(self, conn: Connection, version: int) -> None:
        """Destroy an old key version. Refused with
        :class:`~tongbao.errors.KeyVersionInUse` while it is current or any data
        key is still wrapped under it (run ``keys reencrypt`` first)."""
        row = conn.execute(
            select(_kv.c.status).where(_kv.c.version == version).with_for_update()
        ).first()
        if row is None:
            raise errors.KeyVersionUnknown(f"there is no key version {version}")
        if row.status == RETIRED:
            return
        current = self.current_version(conn)
        if version == current:
            raise errors.KeyVersionInUse(
                f"version {version} is the current key version; rotate first"
            )
        in_use = conn.execute(
            select(func.count())
            .select_from(_dk)
            .where(_dk.c.kek_version == version, _dk.c.shredded_at.is_(None))
        ).scalar_one()
        if in_use:
            raise errors.KeyVersionInUse(
                f"{in_use} data keys are still wrapped under version {version}; "
                "run `tongbao keys reencrypt` first"
            )
        conn.execute(
            update(_kv)
            .where(_kv.c.version == version)
            .values(status=RETIRED, wrapped_key=None, retired_at=self.clock.now())
        )
        self._keks.drop(lambda entry: entry[0] == version)
        log.info("key_version_retired", version=version)

    def status(self, conn: Connection) -> KeyRingStatus:
        ring = conn.execute(select(t.key_ring).where(t.key_ring.c.id == 1)).first()
        if ring is None:
            raise errors.ConfigurationError("the key ring is not initialised")
        counts: dict[int, list[int]] = {}
        for version, shredded, n in conn.execute(
            select(_dk.c.kek_version, _dk.c.shredded_at.is_not(None), func.count()).group_by(
                _dk.c.kek_version, _dk.c.shredded_at.is_not(None)
            )
        ):
            counts.setdefault(version, [0, 0])[1 if shredded else 0] += n
        versions = tuple(
            KeyVersionStatus(
                r.version,
                r.cipher,
                r.status,
                r.created_at,
                r.retired_at,
                *counts.get(r.version, [0, 0]),
            )
            for r in conn.execute(select(_kv).order_by(_kv.c.version))
        )
        return KeyRingStatus(
            ring.master_key_id,
            ring.digest_algorithm,
            ring.created_at,
            self.current_version(conn),
            versions,
        )

    def reencrypt(
        self,
        db: Database,
        columns: Iterable[EncryptedColumn] | None = None,
        *,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ReencryptReport:
        """Move every subject to a data key under the current version and encrypt
        clear-text values left in registered columns; see
        :func:`tongbao.security.reencrypt.reencrypt`."""
        from tongbao.security.reencrypt import reencrypt  # noqa: PLC0415 - it imports us

        return reencrypt(
            self,
            db,
            self.columns if columns is None else tuple(columns),
            batch_size=batch_size or self.settings.reencrypt_batch_size,
            progress=progress,
        )
