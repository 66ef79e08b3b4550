"""The platform, wired once: database, clock and every capability's service.

The HTTP API, the CLI, the tests and the benchmarks all build a
:class:`Platform` and use its services; nothing else constructs services.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol

import structlog
from sqlalchemy import Connection

from tongbao import errors
from tongbao.audit import SIGNING_PURPOSE, AuditLog, CheckpointFile
from tongbao.audit.sampling_service import AuditSampling
from tongbao.auth import Auth, BehaviourMonitor, DualControl, StaffService
from tongbao.banking import BankChannel
from tongbao.banking.signing import (
    INSTRUCTION_KEY_PURPOSE,
    InstructionSigner,
    require_signature_algorithm,
)
from tongbao.banking.simulated import SimulatedBank
from tongbao.calendar import BusinessCalendar
from tongbao.clock import Clock, SystemClock
from tongbao.config import Settings
from tongbao.customers import Customers
from tongbao.idempotency import Idempotency
from tongbao.ledger import Ledger
from tongbao.notifications import Notifications
from tongbao.notifications.channel import NotificationChannel
from tongbao.notifications.local import LocalChannel
from tongbao.ops import PolicySettings
from tongbao.ops.policies import CONFIG_PREFIX, RUNTIME_SETTINGS
from tongbao.payments import Payments
from tongbao.payments.service import SUSPENSE
from tongbao.retention import RecordClass, Retention
from tongbao.security import KeyRing
from tongbao.security.geoip import ip_locator
from tongbao.security.masking import redact_text
from tongbao.security.register import VulnerabilityRegister
from tongbao.storage import Database
from tongbao.storage.migrate import current_revision, head_revision

log = structlog.get_logger(__name__)

SIMULATED_BANK = "SIMBANK"
_NOTIFY_INTERVAL = 0.25  # seconds between outbox drains


class StopSignal(Protocol):
    """A ``threading.Event`` or a ``multiprocessing`` one."""

    def wait(self, timeout: float | None = None) -> bool: ...


class Platform:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        banks: Mapping[str, BankChannel] | None = None,
        channel: NotificationChannel | None = None,
    ) -> None:
        # SEC-12/PAY-6: every bank instruction is signed; sm2 is refused here, before
        # anything opens, never replaced by something else (InstructionSignatureUnsupported).
        require_signature_algorithm(settings.instruction_signature)
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.db = Database(settings.database_url, settings=settings)
        # Start-up refuses here without a usable master key (MasterKeyMissing/-Invalid).
        self.keyring = KeyRing.from_settings(settings, self.clock)
        self.instruction_signer = InstructionSigner(self._derived_seed(INSTRUCTION_KEY_PURPOSE))
        self.audit = AuditLog(
            self.clock,
            algorithm=settings.digest_algorithm,
            checkpoints=CheckpointFile(
                settings.audit_checkpoint_file, seed=self._derived_seed(SIGNING_PURPOSE)
            ),
            redact=redact_text,  # details hold no personal data; this catches slips
        )
        self.ledger = Ledger(
            self.clock,
            buckets=settings.internal_account_buckets,
            max_amount_fen=settings.max_amount_fen,
        )
        self.calendar = BusinessCalendar(self.db)
        if banks is None:
            banks = {
                SIMULATED_BANK: SimulatedBank(
                    self.db,
                    self.clock,
                    bank_code=SIMULATED_BANK,
                    settlement_delay=timedelta(seconds=settings.sim_bank_settlement_delay_seconds),
                    disagree_rate=settings.sim_bank_disagree_rate,
                )
            }
        self.banks: Mapping[str, BankChannel] = banks
        self.local_channel = LocalChannel(self.db, self.clock)
        self.notifications = Notifications(self.clock, channel or self.local_channel)
        self.policies = PolicySettings(self.clock)
        self.staff = StaffService(
            settings,
            self.clock,
            audit=self.audit,
            cipher=self.keyring,
            monitor=BehaviourMonitor(
                settings, self.clock, self.audit, ip_locator(settings.geoip_xdb_file)
            ),
        )
        self.auth = Auth(self.clock, self.staff)
        self.customers = Customers(self.ledger, self.clock, self.banks, self.keyring)
        self.idempotency = Idempotency(self.db, self.clock)
        self.dual_control = DualControl(
            settings,
            self.clock,
            staff=self.staff,
            ledger=self.ledger,
            policies=self.policies,
            audit=self.audit,
            suspense_code=SUSPENSE,
        )
        self.payments = Payments(
            db=self.db,
            settings=settings,
            clock=self.clock,
            ledger=self.ledger,
            customers=self.customers,
            notifications=self.notifications,
            calendar=self.calendar,
            banks=self.banks,
            signer=self.instruction_signer,
        )
        self.audit_sampling = AuditSampling(self.clock, settings, self.audit, self.payments)
        self.vulnerabilities = VulnerabilityRegister(self.clock, settings, self.audit)

        self.retention = self._retention()

    def _retention(self) -> Retention:
        """AUD-6: what the purge job destroys, per record class."""
        retention = Retention(self.db, self.clock, self.audit, self.settings.retention_years)
        customers = self.customers

        def customers_due(conn: Connection, before: datetime) -> int:
            return customers.count_due_for_shredding(conn, before)

        def shred_customers(conn: Connection, before: datetime, limit: int) -> int:
            due = customers.due_for_shredding(conn, before, limit=limit)
            for customer_id in due:
                customers.shred(conn, customer_id)
            return len(due)

        retention.register(
            RecordClass.CUSTOMER,
            shred_customers,
            customers_due,
            how="crypto-shredded: data key destroyed, customer closed that long ago",
        )
        outbox, local = self.notifications, self.local_channel

        def notices_due(conn: Connection, before: datetime) -> int:
            return outbox.count_finished_before(conn, before) + local.count_delivered_before(
                conn, before
            )

        def delete_notices(conn: Connection, before: datetime, limit: int) -> int:
            done = outbox.purge_finished_before(conn, before, limit)
            return done + local.purge_delivered_before(conn, before, limit - done)

        retention.register(
            RecordClass.NOTIFICATION, delete_notices, notices_due, how="deleted (outbox and store)"
        )
        return retention

    def start(self) -> Platform:
        """Check the schema is current and open the internal accounts (idempotent).

        Every entry point (API, CLI, tests, benchmarks) calls this once.
        """
        current, head = current_revision(self.db), head_revision()
        if current != head:
            raise errors.ConfigurationError(
                f"database schema is at {current or 'nothing'}, the code expects {head}; "
                "run `tongbao db upgrade`"
            )
        self.db.run(self.keyring.initialize)  # MasterKeyInvalid for a wrong master key
        self._register_instruction_key()
        self.db.run(self.payments.open_internal_accounts)
        self.apply_config_policies()
        return self

    def apply_config_policies(self) -> dict[str, object]:
        """Run-time settings changed under dual control (``config.change``, SEC-6)
        take effect in this process: at start and on every tick, so every
        worker follows within ``background_interval_seconds``. Returns what changed."""
        changed: dict[str, object] = {}
        for policy in self.db.read(self.policies.all_current):
            if not policy.key.startswith(CONFIG_PREFIX):
                continue
            name = policy.key.removeprefix(CONFIG_PREFIX)
            if name in RUNTIME_SETTINGS and getattr(self.settings, name) != policy.value:
                setattr(self.settings, name, policy.value)
                changed[name] = policy.value
        if changed:
            log.info("config_policies_applied", **changed)
        return changed

    def simulated_bank(self) -> SimulatedBank:
        bank = self.banks.get(SIMULATED_BANK)
        if not isinstance(bank, SimulatedBank):
            raise LookupError("this platform runs without the simulated bank")
        return bank

    def tick(self) -> dict[str, int]:
        """One round of background duties: the simulated bank's own progress,
        payment timeouts, scheduled payments, bank status, notifications."""
        done: dict[str, int] = {}
        for bank in self.banks.values():
            if isinstance(bank, SimulatedBank):
                done["bank_settled"] = done.get("bank_settled", 0) + bank.advance()
        done.update(self.payments.tick())
        done["holds_expired"] = self._expire_holds()
        done["dual_control_expired"] = self.db.run(self.dual_control.expire_due)
        done["config_changes_applied"] = len(self.apply_config_policies())
        done["notified"] = self.notify()
        forget_before = self.clock.now() - timedelta(hours=self.settings.idempotency_ttl_hours)
        done["keys_forgotten"] = self.db.run(
            lambda conn: self.idempotency.purge(conn, older_than=forget_before)
        )
        done["audit_checkpoints"] = self._audit_checkpoint()
        return done

    def _derived_seed(self, purpose: str) -> Callable[[], bytes]:
        """A signing seed for ``purpose`` (the audit checkpoints' AUD-3, the bank
        instructions' SEC-12), derived from the master key only when first needed."""
        return partial(self.keyring.derive_key, purpose)

    def _register_instruction_key(self) -> None:
        """Set up the channel to the simulated bank: it gets our public key, and
        verifies every instruction with it. A real bank is given the key out of
        band (``tongbao bank public-key``)."""
        for bank in self.banks.values():
            if isinstance(bank, SimulatedBank):
                bank.register_platform_key(self.instruction_signer.public_key)

    def _audit_checkpoint(self) -> int:
        """AUD-3: sign the audit chain head every ``audit_checkpoint_interval_seconds``."""
        interval = timedelta(seconds=self.settings.audit_checkpoint_interval_seconds)
        try:
            return 1 if self.audit.checkpoint_if_due(self.db, interval) else 0
        except errors.AuditChainBroken as exc:  # an alarm, not a reason to stop other duties
            log.error("audit_chain_broken", detail=exc.detail)
            return 0

    def _expire_holds(self) -> int:
        """Any hold whose time is up and that nobody resolved gets its final state.

        Payments fail their own waiting holds first (with a reason for the
        customer); this catches the rest, so every hold ends exactly once.
        """
        expired = 0
        for hold_id in self.db.read(self.ledger.due_holds):
            try:
                self.db.run(partial(self.ledger.expire_hold, hold_id=hold_id))
                expired += 1
            except errors.HoldNotPending:  # resolved meanwhile by someone else
                continue
        return expired

    def notify(self, *, batch: int = 200) -> int:
        """Deliver every due notification (PAY-8: right after completion), in
        batches; returns how many were sent."""
        sent = 0
        while True:
            report = self.notifications.dispatch(self.db, limit=batch)
            sent += report.sent
            if report.sent + report.retried + report.failed < batch:
                return sent

    def run_background(self, stop: StopSignal) -> None:
        """Until ``stop`` is set: deliver notifications as they come (a short
        wait between drains, so they go out within a fraction of a second and
        in small steady batches), and run :meth:`tick` every
        ``background_interval_seconds``."""
        interval = self.settings.background_interval_seconds
        next_tick = time.monotonic() + interval
        while not stop.wait(_NOTIFY_INTERVAL):
            try:
                self.notify()
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + interval
                    done = self.tick()
                    if any(done.values()):
                        log.info("background_tick", **done)
            except Exception:  # keep serving; the next round retries
                log.exception("background_tick_failed")

    def close(self) -> None:
        self.db.dispose()
