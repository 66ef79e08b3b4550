"""Field encryption: ciphers, the ciphertext format, the master key, blind
indexes and derived keys (SEC-1, SEC-12, SEC-13 via SEC-1's key custody)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from tests.conftest import TEST_MASTER_KEY
from tongbao import errors
from tongbao.clock import ManualClock
from tongbao.config import Settings
from tongbao.platform import Platform
from tongbao.security import (
    KeyRing,
    LocalMasterKey,
    algorithms,
    create_master_key_file,
    load_master_key,
)
from tongbao.security import tables as kt
from tongbao.security.algorithms import (
    AES_256_GCM,
    SM4_GCM,
    cipher_available,
    is_ciphertext,
    new_key,
    open_sealed,
    parse_ciphertext,
    seal,
)
from tongbao.storage import Database

OTHER_MASTER_KEY = SecretStr(base64.b64encode(bytes(range(100, 132))).decode())
CIPHERS = [AES_256_GCM, SM4_GCM]


def make_ring(settings: Settings, db: Database, clock: ManualClock, **changes: object) -> KeyRing:
    ring = KeyRing.from_settings(settings.model_copy(update=changes), clock)
    db.run(ring.initialize)
    return ring


@pytest.fixture
def ring(settings: Settings, db: Database, clock: ManualClock) -> KeyRing:
    return make_ring(settings, db, clock)


def encrypt(
    db: Database, ring: KeyRing, subject: str, field: str, plaintext: str, record_class: str = ""
) -> str:
    cls = record_class or subject.split(":", maxsplit=1)[0]
    return db.run(
        lambda conn: ring.encrypt(
            conn, subject=subject, record_class=cls, field=field, plaintext=plaintext
        )
    )


def decrypt(db: Database, ring: KeyRing, ciphertext: str, field: str, **kw: str) -> str:
    return db.read(lambda conn: ring.decrypt(conn, ciphertext, field=field, **kw))


# --- the primitives (pure) ---------------------------------------------------------------


def test_sm4_gcm_is_available_in_this_build() -> None:
    """SEC-12: the national cipher is offered (not silently replaced by AES)."""
    assert cipher_available(SM4_GCM)


@pytest.mark.parametrize("cipher", CIPHERS)
@given(plaintext=st.binary(max_size=300), aad=st.binary(max_size=40))
def test_seal_round_trips_and_any_flipped_bit_is_refused(
    cipher: str, plaintext: bytes, aad: bytes
) -> None:
    """SEC-1/SEC-12: both AEAD ciphers open what they sealed, and nothing else."""
    key = new_key(cipher)
    sealed = seal(cipher, key, plaintext, aad)
    assert open_sealed(cipher, key, sealed, aad) == plaintext
    assert len(plaintext) < 16 or plaintext not in sealed
    for i in (0, len(sealed) // 2, len(sealed) - 1):  # nonce, body, tag
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        with pytest.raises(errors.DecryptionFailed):
            open_sealed(cipher, key, bytes(tampered), aad)
    with pytest.raises(errors.DecryptionFailed):
        open_sealed(cipher, key, sealed, aad + b"x")
    with pytest.raises(errors.DecryptionFailed):
        open_sealed(cipher, new_key(cipher), sealed, aad)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "张三",
        "tb1:",
        "tb1:dek_x:AAAA",
        "tb2:dek_01KAQ3M5T0000000000000000X:" + "A" * 40,
        "tb1:dek_01KAQ3M5T0000000000000000X:" + "A" * 10,  # shorter than nonce + tag
        "tb1:dek_01KAQ3M5T0000000000000000X:" + "*" * 40,
    ],
)
def test_malformed_ciphertexts_are_refused(text: str) -> None:
    assert not is_ciphertext(text)
    with pytest.raises(errors.DecryptionFailed):
        parse_ciphertext(text)


# --- the master key ---------------------------------------------------------------------


def test_no_master_key_refuses_start_up_with_the_fix(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SEC-1: the platform does not start without a master key, and says how to get one;
    the quick start's ``var/master.key`` is found without being named."""
    monkeypatch.chdir(tmp_path)
    bare = settings.model_copy(update={"master_key": None, "master_key_file": None})
    with pytest.raises(errors.MasterKeyMissing) as refused:
        Platform(bare)
    assert "tongbao keys init" in refused.value.detail
    assert "TONGBAO_MASTER_KEY_FILE" in refused.value.detail

    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "master.key").write_text(TEST_MASTER_KEY, encoding="ascii")
    assert load_master_key(bare).key_id == load_master_key(settings).key_id


@pytest.mark.parametrize(
    "key",
    [
        "not base64!",
        base64.b64encode(b"short").decode(),
        base64.b64encode(bytes(33)).decode(),
    ],
)
def test_malformed_master_keys_are_refused(settings: Settings, key: str) -> None:
    with pytest.raises(errors.MasterKeyInvalid):
        load_master_key(settings.model_copy(update={"master_key": SecretStr(key)}))


def test_master_key_file_is_created_private_never_overwritten_and_loaded(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "keys" / "master.key"
    missing = settings.model_copy(update={"master_key": None, "master_key_file": path})
    with pytest.raises(errors.MasterKeyMissing) as refused:
        load_master_key(missing)
    assert f"tongbao keys init --file {path}" in refused.value.detail
    create_master_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    content = path.read_bytes()
    with pytest.raises(errors.ConfigurationError):
        create_master_key_file(path)
    assert path.read_bytes() == content
    loaded = load_master_key(missing)
    assert loaded.key_id == LocalMasterKey(base64.b64decode(content)).key_id
    both = missing.model_copy(update={"master_key": SecretStr(TEST_MASTER_KEY)})
    with pytest.raises(errors.MasterKeyInvalid):
        load_master_key(both)


def test_a_different_master_key_is_refused_at_start_up(
    settings: Settings, db: Database, clock: ManualClock, ring: KeyRing
) -> None:
    """SEC-1: a wrong master key is named at start-up; it never yields garbage."""
    ciphertext = encrypt(db, ring, "customer:cus_1", "customers.name", "张三")
    other = KeyRing.from_settings(
        settings.model_copy(update={"master_key": OTHER_MASTER_KEY}), clock
    )
    with pytest.raises(errors.MasterKeyInvalid) as refused:
        db.run(other.initialize)
    assert ring.master.key_id in refused.value.detail
    with pytest.raises(errors.ConfigurationError):  # not loaded: nothing is usable
        other.blind_index("customers.phone", "13812345678")
    with pytest.raises(errors.MasterKeyInvalid):
        decrypt(db, other, ciphertext, "customers.name")
    # Even a ring that claims the other key's id (a tampered row) does not open.
    with db.transaction() as conn:
        conn.execute(sa.update(kt.key_ring).values(master_key_id=other.master.key_id))
    with pytest.raises(errors.MasterKeyInvalid):
        db.run(other.initialize)


def test_platform_start_refuses_a_wrong_master_key(settings: Settings, clock: ManualClock) -> None:
    Platform(settings, clock=clock).start().close()
    wrong = Platform(settings.model_copy(update={"master_key": OTHER_MASTER_KEY}), clock=clock)
    try:
        with pytest.raises(errors.MasterKeyInvalid):
            wrong.start()
    finally:
        wrong.close()


# --- fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cipher", CIPHERS)
def test_round_trip_with_both_ciphers(
    settings: Settings, db: Database, clock: ManualClock, cipher: str
) -> None:
    """SEC-1 (AES-256-GCM) and SEC-12 (SM4-GCM): values round-trip, and the data
    key and key version say which cipher made them."""
    ring = make_ring(settings, db, clock, field_cipher=cipher)
    values = ["张三", "", "110101199003071234", "x" * 2000, "emoji 🎉 and 中文"]
    sealed = [encrypt(db, ring, "customer:cus_1", "customers.name", v) for v in values]
    assert [decrypt(db, ring, s, "customers.name") for s in sealed] == values
    assert len(set(sealed)) == len(sealed)
    again = encrypt(db, ring, "customer:cus_1", "customers.name", "张三")
    assert again != sealed[0]  # a fresh nonce every time
    with db.snapshot() as conn:
        assert conn.execute(sa.select(kt.data_keys.c.cipher)).scalars().all() == [cipher]
        assert conn.execute(sa.select(kt.key_versions.c.cipher)).scalars().all() == [cipher]
    fresh = make_ring(settings, db, clock, field_cipher=cipher)  # another process, no cache
    assert decrypt(db, fresh, sealed[0], "customers.name") == "张三"


def test_a_ciphertext_moved_to_another_field_or_subject_is_refused(
    db: Database, ring: KeyRing
) -> None:
    """SEC-1: the ciphertext is bound to its column and subject; copying it
    elsewhere does not make it readable there."""
    name = encrypt(db, ring, "customer:cus_1", "customers.name", "张三")
    encrypt(db, ring, "customer:cus_2", "customers.name", "李四")
    with pytest.raises(errors.DecryptionFailed):
        decrypt(db, ring, name, "bank_cards.holder_name")
    with pytest.raises(errors.DecryptionFailed):
        decrypt(db, ring, name, "customers.name", subject="customer:cus_2")
    assert decrypt(db, ring, name, "customers.name", subject="customer:cus_1") == "张三"


def test_tampered_or_foreign_ciphertexts_are_refused(
    settings: Settings, db: Database, clock: ManualClock, ring: KeyRing
) -> None:
    name = encrypt(db, ring, "customer:cus_1", "customers.name", "张三")
    other = encrypt(db, ring, "customer:cus_2", "customers.name", "李四")
    head, dek_id, payload = name.split(":")
    flipped = payload[:20] + ("A" if payload[20] != "A" else "B") + payload[21:]
    relabelled = ":".join([head, other.split(":")[1], payload])  # another subject's key id
    unknown = ":".join([head, "dek_01KAQ3M5T0000000000000000X", payload])
    for bad in (f"{head}:{dek_id}:{flipped}", relabelled, name[:-4], "张三"):
        with pytest.raises(errors.DecryptionFailed):
            decrypt(db, ring, bad, "customers.name")
    with pytest.raises(errors.DecryptionFailed) as refused:
        decrypt(db, ring, unknown, "customers.name")
    assert "no data key" in refused.value.detail


def test_a_tampered_wrapped_data_key_is_refused(
    settings: Settings, db: Database, clock: ManualClock, ring: KeyRing
) -> None:
    one = encrypt(db, ring, "customer:cus_1", "customers.name", "张三")
    encrypt(db, ring, "customer:cus_2", "customers.name", "李四")
    dk = kt.data_keys
    with db.transaction() as conn:  # swap cus_2's wrapped key into cus_1's row
        wrapped = conn.execute(
            sa.select(dk.c.wrapped_key).where(dk.c.subject == "customer:cus_2")
        ).scalar_one()
        conn.execute(
            sa.update(dk).where(dk.c.subject == "customer:cus_1").values(wrapped_key=wrapped)
        )
    fresh = make_ring(settings, db, clock)
    with pytest.raises(errors.DecryptionFailed):
        decrypt(db, fresh, one, "customers.name")


def test_a_data_key_under_an_unknown_version_is_reported_as_such(
    settings: Settings, db: Database, clock: ManualClock, ring: KeyRing
) -> None:
    one = encrypt(db, ring, "customer:cus_1", "customers.name", "张三")
    with db.transaction() as conn:
        conn.execute(sa.update(kt.data_keys).values(kek_version=99))
    with pytest.raises(errors.KeyVersionUnknown):
        decrypt(db, make_ring(settings, db, clock), one, "customers.name")


def test_subject_must_name_its_record_class(db: Database, ring: KeyRing) -> None:
    with pytest.raises(errors.ValidationFailed):
        encrypt(db, ring, "cus_1", "customers.name", "张三", record_class="customer")
    with pytest.raises(errors.ValidationFailed):
        encrypt(db, ring, "merchant:cus_1", "customers.name", "张三", record_class="customer")


def test_initialize_is_idempotent(
    settings: Settings, db: Database, clock: ManualClock, ring: KeyRing
) -> None:
    before = db.read(ring.status)
    make_ring(settings, db, clock)
    after = db.read(ring.status)
    assert after == before
    assert [v.version for v in after.versions] == [1]


# --- blind indexes and derived keys ----------------------------------------------------------


def test_blind_index_matches_equal_normalised_values_only(
    settings: Settings, db: Database, clock: ManualClock, ring: KeyRing
) -> None:
    """Exact-match search on encrypted columns without decrypting them."""
    phone = ring.blind_index("customers.phone", "13812345678")
    assert len(phone) == 64 and int(phone, 16) >= 0
    for same in ("+86 138 1234 5678", "138-1234-5678", "0086 13812345678"):
        assert ring.blind_index("customers.phone", same) == phone
    assert ring.blind_index("customers.phone", "13812345679") != phone
    assert ring.blind_index("bank_cards.phone", "13812345678") != phone  # per field
    id_number = ring.blind_index("customers.id_number", "11010119900307123x")
    assert ring.blind_index("customers.id_number", " 11010119900307123X ") == id_number
    card = ring.blind_index("bank_cards.card_number", "6222 0212 3456 7890 128")
    assert ring.blind_index("bank_cards.card_number", "6222021234567890128") == card
    # HMAC-SHA256 under a per-field key derived (HKDF-SHA256) from the ring's
    # root secret — not a plain hash anyone could recompute from a guess.
    with db.snapshot() as conn:
        wrapped_root = conn.execute(sa.select(kt.key_ring.c.wrapped_root_key)).scalar_one()
    root = LocalMasterKey(base64.b64decode(TEST_MASTER_KEY)).unwrap(wrapped_root, context="root")
    key = HKDF(hashes.SHA256(), 32, None, b"tongbao blind index v1|customers.phone").derive(root)
    assert phone == hmac.new(key, b"13812345678", hashlib.sha256).hexdigest()
    assert phone != hashlib.sha256(b"13812345678").hexdigest()
    assert make_ring(settings, db, clock).blind_index("customers.phone", "13812345678") == phone
    with pytest.raises(errors.ValidationFailed):
        ring.blind_index("customers.phone", "no digits")


def test_blind_indexes_and_derived_keys_survive_rotation_and_settings_changes(
    settings: Settings, db: Database, clock: ManualClock, ring: KeyRing
) -> None:
    """The indexes stay valid for the life of the ring: rotation does not touch
    them, and neither does a later change of TONGBAO_DIGEST_ALGORITHM."""
    index = ring.blind_index("customers.phone", "13812345678")
    seed = ring.derive_key("audit-checkpoint-signing")
    assert len(seed) == 32 and seed != ring.derive_key("something-else")
    db.run(ring.rotate)
    later = make_ring(settings, db, clock, digest_algorithm="SM3")
    assert later.blind_index("customers.phone", "13812345678") == index
    assert later.derive_key("audit-checkpoint-signing") == seed
    assert db.read(later.status).digest_algorithm == "SHA-256"


def test_sm3_and_sm4_configuration(settings: Settings, db: Database, clock: ManualClock) -> None:
    """SEC-12: a national-algorithm deployment — SM4-GCM for fields and key
    wrapping, HMAC-SM3 for blind indexes, HKDF-SM3 for derived keys."""
    ring = make_ring(settings, db, clock, field_cipher=SM4_GCM, digest_algorithm="SM3")
    status = db.read(ring.status)
    assert status.digest_algorithm == "SM3"
    assert [v.cipher for v in status.versions] == [SM4_GCM]
    sealed = encrypt(db, ring, "customer:cus_1", "customers.id_number", "110101199003071234")
    assert decrypt(db, ring, sealed, "customers.id_number") == "110101199003071234"
    with db.snapshot() as conn:
        wrapped_root = conn.execute(sa.select(kt.key_ring.c.wrapped_root_key)).scalar_one()
    assert wrapped_root[0] == 2  # SM4-GCM, by the master key too
    # Recomputed independently: HKDF-SM3 of the ring's root secret, then HMAC-SM3.
    root = LocalMasterKey(base64.b64decode(TEST_MASTER_KEY), cipher=SM4_GCM).unwrap(
        wrapped_root, context="root"
    )
    key = HKDF(hashes.SM3(), 32, None, b"tongbao blind index v1|customers.phone").derive(root)
    mac = crypto_hmac.HMAC(key, hashes.SM3())
    mac.update(b"13812345678")
    assert ring.blind_index("customers.phone", "+86 138 1234 5678") == mac.finalize().hex()


def test_keys_before_start_up_are_refused(settings: Settings, clock: ManualClock) -> None:
    ring = KeyRing.from_settings(settings, clock)
    with pytest.raises(errors.ConfigurationError):
        ring.derive_key("x")


@pytest.fixture
def no_sm4(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This OpenSSL build as if compiled without SM4 (the availability probe says no)."""
    monkeypatch.setattr(algorithms, "cipher_available", lambda cipher: cipher != SM4_GCM)
    yield


def test_sm4_configured_but_unavailable_refuses_at_start_up(
    settings: Settings, clock: ManualClock, no_sm4: None
) -> None:
    """SEC-12: never a silent fallback to another cipher."""
    with pytest.raises(errors.ConfigurationError) as refused:
        KeyRing.from_settings(settings.model_copy(update={"field_cipher": SM4_GCM}), clock)
    assert "SM4-GCM" in refused.value.detail


def test_master_key_wraps_and_refuses_foreign_blobs() -> None:
    master, other = LocalMasterKey(os.urandom(32)), LocalMasterKey(os.urandom(32))
    assert master.key_id != other.key_id
    blob = master.wrap(b"k" * 32, context="root")
    assert master.unwrap(blob, context="root") == b"k" * 32
    with pytest.raises(errors.MasterKeyInvalid):
        other.unwrap(blob, context="root")
    with pytest.raises(errors.MasterKeyInvalid):
        master.unwrap(blob, context="key-version:1")
