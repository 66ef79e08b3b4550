"""Domain errors with stable, machine-readable codes.

Every refusal the platform makes is a :class:`TongbaoError` subclass. The
``code`` is part of the public contract (API clients switch on it, the CLI
prints it), so codes are never renamed; ``status`` is the HTTP status the API
answers with, and ``detail`` is a one-line, human-readable explanation.

The HTTP layer turns these into ``application/problem+json`` (RFC 9457) and
the CLI into a one-line message with a non-zero exit. Nothing else in the
code base needs to know about HTTP.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TongbaoError(Exception):
    """Base of every refusal. Subclasses fix ``code``, ``status`` and ``title``."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Request refused"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra: dict[str, Any] = extra

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


def _error(code: str, status: int, title: str) -> type[TongbaoError]:
    """Create an error class; keeps the catalogue below one line per error."""
    return type(
        "".join(part.capitalize() for part in code.split("_")) + "Error",
        (TongbaoError,),
        {"code": code, "status": status, "title": title, "__module__": __name__},
    )


# --- input -----------------------------------------------------------------
InvalidRequest = _error("invalid_request", 400, "The request is malformed")
MalformedJson = _error("malformed_json", 400, "The request body is not valid JSON")
InvalidAmount = _error("invalid_amount", 422, "The amount is not acceptable")
AmountTooLarge = _error("amount_too_large", 422, "The amount exceeds the configured maximum")
CurrencyMismatch = _error("currency_mismatch", 422, "Accounts or amounts use different currencies")
InvalidCardNumber = _error("invalid_card_number", 422, "The bank card number is not valid")
ValidationFailed = _error("validation_failed", 422, "A field is missing or has the wrong form")

# --- authentication / authorisation ------------------------------------------
Unauthenticated = _error("unauthenticated", 401, "A valid credential is required")
Forbidden = _error("forbidden", 403, "The credential does not allow this")

# --- resources ---------------------------------------------------------------
NotFound = _error("not_found", 404, "No such resource")
AccountNotFound = _error("account_not_found", 404, "No such account")
PaymentNotFound = _error("payment_not_found", 404, "No such payment")
HoldNotFound = _error("hold_not_found", 404, "No such hold")
EntryNotFound = _error("entry_not_found", 404, "No such journal entry")
CardNotFound = _error("card_not_found", 404, "No such bank card")
CardAlreadyExists = _error("card_already_exists", 409, "That bank card already exists")

# --- ledger ------------------------------------------------------------------
UnbalancedEntry = _error("unbalanced_entry", 422, "The postings do not sum to zero")
AccountClosed = _error("account_closed", 409, "The account is closed")
AccountFrozen = _error("account_frozen", 409, "The account is frozen")
AccountNotEmpty = _error("account_not_empty", 409, "The account still holds money")
InsufficientFunds = _error("insufficient_funds", 409, "Not enough available balance")
HoldNotPending = _error("hold_not_pending", 409, "The hold is no longer pending")
HoldExpired = _error("hold_expired", 409, "The hold has expired")
HoldAmountExceeded = _error("hold_amount_exceeded", 422, "More than the held amount")
AlreadyReversed = _error("already_reversed", 409, "The journal entry was already reversed")

# --- payments ----------------------------------------------------------------
InvalidTransition = _error("invalid_transition", 409, "The payment cannot make that change")
SamePayerPayee = _error("same_payer_and_payee", 422, "Payer and payee are the same account")
PayeeNameRequired = _error("payee_name_required", 422, "Unfamiliar payee: confirm the name")
PayeeNameMismatch = _error("payee_name_mismatch", 422, "The payee name does not match")
VerificationFailed = _error("verification_failed", 422, "The verification code is wrong")
VerificationLocked = _error("verification_locked", 429, "Too many verification attempts")
RefundExceedsPayment = _error("refund_exceeds_payment", 422, "Refunds may not exceed the payment")
NotRefundable = _error("not_refundable", 409, "The payment cannot be refunded")
ObjectionWindowClosed = _error("objection_window_closed", 409, "The confirmation window closed")
CardNotUsable = _error("card_not_usable", 409, "The bank card cannot be used")
BankRejected = _error("bank_rejected", 402, "The bank refused the instruction")
ScenarioNotSupported = _error("scenario_not_supported", 422, "This payment scenario is not offered")
CalendarYearUnknown = _error(
    "calendar_year_unknown", 409, "The business calendar has no data for that year"
)
CalendarYearPresent = _error(
    "calendar_year_present", 409, "The business calendar already has that year"
)
CalendarDataInvalid = _error(
    "calendar_data_invalid", 422, "The calendar data is not one complete, valid year"
)

# --- encryption (SEC-1, SEC-12, AUD-6) -------------------------------------------
MasterKeyMissing = _error("master_key_missing", 500, "No master key is configured")
MasterKeyInvalid = _error("master_key_invalid", 500, "The master key is malformed or wrong")
KeyVersionUnknown = _error("key_version_unknown", 500, "The key ring has no such key version")
KeyVersionInUse = _error("key_version_in_use", 409, "Data still uses that key version")
DecryptionFailed = _error(
    "decryption_failed", 500, "A ciphertext is corrupted or was made with another key"
)
GeoDataMissing = _error("geo_data_missing", 500, "The IP geolocation data is missing or unreadable")
DataShredded = _error("data_shredded", 410, "The data was destroyed at the end of its retention")

# --- signed bank instructions (SEC-12, PAY-6) --------------------------------------
InstructionSignatureUnsupported = _error(
    "instruction_signature_unsupported", 500, "That signature algorithm is not available"
)
InstructionNotFound = _error("instruction_not_found", 404, "The bank holds no such instruction")

# --- vulnerability management (SEC-10) --------------------------------------------
VulnerabilityDbUnavailable = _error(
    "vulnerability_db_unavailable", 503, "No vulnerability database could be consulted"
)
LockFileInvalid = _error("lock_file_invalid", 422, "The dependency lock file cannot be read")
VulnerabilityNotFound = _error("vulnerability_not_found", 404, "No such vulnerability")

# --- staff, roles, dual control (SEC-4 … SEC-8, SEC-13) ----------------------------
InvalidCredentials = _error("invalid_credentials", 401, "Username, password or code is wrong")
LoginLocked = _error("login_locked", 423, "The login is locked after repeated failures")
PasswordExpired = _error("password_expired", 403, "The password must be changed first")
WeakPassword = _error("weak_password", 422, "The password is too weak")
StaffNotFound = _error("staff_not_found", 404, "No such staff member")
StaffExists = _error("staff_exists", 409, "That username is taken")
StaffInactive = _error("staff_inactive", 403, "The staff member has left or is suspended")
UnknownRole = _error("unknown_role", 422, "No such role")
RoleConflict = _error("role_conflict", 409, "The roles may not be held by one person (SEC-5)")
PermissionDenied = _error("permission_denied", 403, "The role does not grant this permission")
DualControlNotFound = _error("dual_control_not_found", 404, "No such dual-control request")
SelfApproval = _error("self_approval", 409, "The requester may not approve their own request")
DualControlExpired = _error("dual_control_expired", 409, "The dual-control request has expired")
DualControlDecided = _error(
    "dual_control_decided", 409, "The dual-control request was already decided"
)
UnknownOperation = _error("unknown_operation", 422, "No such dual-control operation")

# --- audit and privacy (AUD-*, DATA-*) ----------------------------------------------
AuditRecordNotFound = _error("audit_record_not_found", 404, "No such audit record")
AuditChainBroken = _error("audit_chain_broken", 500, "The audit chain fails verification")
AuditSampleNotFound = _error("audit_sample_not_found", 404, "No such audit sample or sample item")
AuditSampleSelfReview = _error(
    "audit_sample_self_review", 409, "Whoever drew an audit sample may not review its items"
)
AuditSampleSelfRectification = _error(
    "audit_sample_self_rectification",
    409,
    "The auditor of a finding may not record its rectification",
)
ConsentRequired = _error("consent_required", 409, "The customer has not consented to the policy")

# --- idempotency ---------------------------------------------------------------
IdempotencyKeyMissing = _error("idempotency_key_missing", 400, "An Idempotency-Key is required")
IdempotencyKeyInvalid = _error("idempotency_key_invalid", 400, "The Idempotency-Key is malformed")
IdempotencyKeyReused = _error(
    "idempotency_key_reused", 422, "The Idempotency-Key was used with a different request"
)

# --- service -------------------------------------------------------------------
RateLimited = _error("rate_limited", 429, "Too many requests")
PayloadTooLarge = _error("payload_too_large", 413, "The request body is too large")
ServiceUnavailable = _error("service_unavailable", 503, "A dependency is unavailable")
ConfigurationError = _error("configuration_error", 500, "The platform is misconfigured")
