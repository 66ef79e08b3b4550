"""Demo data: customers, a merchant, a reviewer, bank cards and money to play with.

Seeding is idempotent (a second run changes nothing) and refused when
``TONGBAO_ENV=production``. The demo tokens are fixed and public, so a
newcomer can copy them from the README; they exist only in demo data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import partial

from sqlalchemy import Connection

from tongbao import errors
from tongbao.auth import Principal, PrincipalType
from tongbao.customers import Customer, CustomerKind
from tongbao.payments import PaymentKind, PaymentRequest
from tongbao.platform import SIMULATED_BANK, Platform


@dataclass(frozen=True, slots=True)
class DemoCustomer:
    key: str
    kind: CustomerKind
    name: str
    phone: str
    id_number: str | None
    token: str
    card_number: str | None
    bank_balance_fen: int
    wallet_topup_fen: int


DEMO_CUSTOMERS = (
    DemoCustomer(
        "zhangsan",
        CustomerKind.PERSON,
        "张三",
        "13800138000",
        "110101199003071233",
        "tbk_demo_zhangsan",
        "6222021234567890128",
        5_000_000,
        500_000,
    ),
    DemoCustomer(
        "lisi",
        CustomerKind.PERSON,
        "李四",
        "13900139000",
        "310104198511124567",
        "tbk_demo_lisi",
        "6222021234567890136",
        2_000_000,
        200_000,
    ),
    DemoCustomer(
        "coffee",
        CustomerKind.MERCHANT,
        "通宝咖啡",
        "13600136000",
        None,
        "tbk_demo_coffee",
        None,
        0,
        0,
    ),
)
@dataclass(frozen=True, slots=True)
class DemoStaff:
    """A demo staff member: sign in with username, password and the TOTP code
    of ``totp_secret`` (add it to any authenticator app, or ``pyotp``)."""

    username: str
    display_name: str
    role: str
    totp_secret: str
    password: str = "Tongbao-Demo-2026!"  # noqa: S105 - demo data only, public by design


# One member per role, and two administrators so a newcomer can try a
# dual-control approval (SEC-6) on their own.
DEMO_STAFF = (
    DemoStaff("demo-operator", "操作员小李", "operator", "ORXW4Z3CMFXS2ZDFNVXS233QMVZGC5DP"),
    DemoStaff("demo-reviewer", "审核员小王", "reviewer", "ORXW4Z3CMFXS2ZDFNVXS24TFOZUWK53F"),
    DemoStaff("demo-risk", "风控专员小赵", "risk_officer", "ORXW4Z3CMFXS2ZDFNVXS24TJONVS4LRO"),
    DemoStaff(
        "demo-compliance", "合规专员小钱", "compliance_officer", "ORXW4Z3CMFXS2ZDFNVXS2Y3PNVYGY2LB"
    ),
    DemoStaff("demo-auditor", "审计员小孙", "auditor", "ORXW4Z3CMFXS2ZDFNVXS2YLVMRUXI33S"),
    DemoStaff("demo-service", "客服小周", "customer_service", "ORXW4Z3CMFXS2ZDFNVXS243FOJ3GSY3F"),
    DemoStaff("demo-admin", "管理员老吴", "administrator", "ORXW4Z3CMFXS2ZDFNVXS2YLENVUW4LRO"),
    DemoStaff("demo-admin2", "管理员老郑", "administrator", "ORXW4Z3CMFXS2ZDFNVXS2YLENVUW4MRO"),
)
DEMO_STAFF_PASSWORD = DEMO_STAFF[0].password
CARD_EXPIRY = date(2030, 12, 31)


@dataclass(frozen=True, slots=True)
class SeededCustomer:
    demo: DemoCustomer
    customer: Customer
    card_id: str | None


def seed(platform: Platform) -> list[SeededCustomer]:
    """Create the demo data unless it is there already; return the demo customers."""
    if platform.settings.env == "production":
        raise errors.Forbidden("demo data is refused when TONGBAO_ENV=production")
    first = DEMO_STAFF[0].username
    already = platform.db.read(lambda conn: platform.auth.staff_by_username(conn, first))
    return _lookup(platform) if already else _create(platform)


def _lookup(platform: Platform) -> list[SeededCustomer]:
    def read(conn: Connection) -> list[SeededCustomer]:
        out = []
        for demo in DEMO_CUSTOMERS:
            customer = platform.customers.get(conn, platform.auth.authenticate(conn, demo.token).id)
            cards = platform.customers.cards(conn, customer.id)
            out.append(SeededCustomer(demo, customer, cards[0].id if cards else None))
        return out

    return platform.db.read(read)


def _create_staff(platform: Platform, conn: Connection) -> None:
    """The demo staff, enrolled with their well-known credentials; roles are
    assigned directly, as the local command line bootstraps them."""
    seeder = Principal(PrincipalType.SYSTEM, "demo")
    for demo in DEMO_STAFF:
        member = platform.staff.create(
            conn, seeder, username=demo.username, display_name=demo.display_name
        )
        platform.staff.issue_credentials(
            conn,
            seeder,
            member.id,
            password=demo.password,
            must_change=False,
            totp_secret=demo.totp_secret,
        )
        platform.staff.assign_role(conn, seeder, member.id, demo.role)


def _create(platform: Platform) -> list[SeededCustomer]:
    bank = platform.simulated_bank()
    seeded: list[SeededCustomer] = []
    for demo in DEMO_CUSTOMERS:

        def register(conn: Connection, demo: DemoCustomer = demo) -> Customer:
            customer = platform.customers.register(
                conn,
                kind=demo.kind,
                name=demo.name,
                phone=demo.phone,
                id_number=demo.id_number,
                policy_version=platform.settings.privacy_policy_version,
                channel="demo",
            )
            platform.auth.issue_token(
                conn, PrincipalType.CUSTOMER, customer.id, label="demo", token=demo.token
            )
            return customer

        customer = platform.db.run(register)
        card_id = None
        if demo.card_number:
            bank.open_card(
                card_number=demo.card_number,
                holder_name=demo.name,
                phone=demo.phone,
                balance=demo.bank_balance_fen,
                expires_on=CARD_EXPIRY,
            )
            card = platform.customers.bind_card(
                platform.db,
                customer.id,
                bank_code=SIMULATED_BANK,
                card_number=demo.card_number,
                holder_name=demo.name,
                phone=demo.phone,
                expires_on=CARD_EXPIRY,
            )
            card_id = card.id
            topup = PaymentRequest(
                kind=PaymentKind.TOPUP,
                amount=demo.wallet_topup_fen,
                card_id=card.id,
                purpose="demo top-up",
            )
            order = platform.db.run(
                partial(platform.payments.pay, customer=customer, request=topup)
            )
            platform.payments.submit_to_bank(order.id)
        seeded.append(SeededCustomer(demo, customer, card_id))

    platform.db.run(partial(_create_staff, platform))
    # One earlier purchase, so the coffee shop is a familiar payee with history.
    zhangsan, coffee = seeded[0].customer, seeded[2].customer
    platform.db.run(
        lambda conn: platform.payments.pay(
            conn,
            zhangsan,
            PaymentRequest(
                kind=PaymentKind.MERCHANT_PAYMENT,
                amount=2_800,
                payee_account_id=coffee.account_id,
                purpose="拿铁 latte",
            ),
        )
    )
    platform.notifications.dispatch(platform.db)
    return seeded


def staff_lines() -> list[str]:
    """How the start banner and ``demo seed`` show the demo staff."""
    lines = [f"Demo staff (password {DEMO_STAFF_PASSWORD}, then the TOTP code of the secret):"]
    lines += [
        f"  {s.username:<16} {s.role:<19} TOTP secret {s.totp_secret}  {s.display_name}"
        for s in DEMO_STAFF
    ]
    lines.append(
        "  code now: .venv/bin/python -c \"import pyotp; print(pyotp.TOTP('<secret>').now())\""
    )
    lines.append("  dual control (SEC-6): see README, 'Staff and dual control'")
    return lines
