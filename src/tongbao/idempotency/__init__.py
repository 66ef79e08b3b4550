"""Idempotency keys for every mutating request."""

from tongbao.idempotency.service import Idempotency, Outcome, check_key, request_hash

__all__ = ["Idempotency", "Outcome", "check_key", "request_hash"]
