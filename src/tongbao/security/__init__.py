"""Security kernel: field encryption and the key ring (SEC-1, SEC-12), blind
indexes, crypto-shredding (AUD-6) and masking (SEC-3). See ``docs/security.md``."""

from tongbao.security.keyring import (
    DataKey,
    EncryptedColumn,
    KeyRing,
    KeyRingStatus,
    KeyVersionStatus,
    LocalMasterKey,
    MasterKeyProvider,
    create_master_key_file,
    load_master_key,
    subject_for,
)
from tongbao.security.reencrypt import ReencryptFailure, ReencryptReport

__all__ = [
    "DataKey",
    "EncryptedColumn",
    "KeyRing",
    "KeyRingStatus",
    "KeyVersionStatus",
    "LocalMasterKey",
    "MasterKeyProvider",
    "ReencryptFailure",
    "ReencryptReport",
    "create_master_key_file",
    "load_master_key",
    "subject_for",
]
