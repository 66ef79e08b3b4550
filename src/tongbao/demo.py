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
from tongbao.auth import PrincipalType
from tongbao.customers import Customer, CustomerKind
from tongbao.payments import PaymentKind, PaymentRequest
from tongbao.platform import SIMULATED_BANK, Platform


@dataclass(frozen=True, slots=True)
class DemoCustomer:
    key: str
    kind: CustomerKind
    name: str
    phone: str
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
        "tbk_demo_lisi",
        "6222021234567890136",
        2_000_000,
        200_000,
    ),
    DemoCustomer(
        "coffee", CustomerKind.MERCHANT, "通宝咖啡", "02112345678", "tbk_demo_coffee", None, 0, 0
    ),
)
DEMO_REVIEWER = ("demo-reviewer", "审核员小王", "tbk_demo_reviewer")
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
    already = platform.db.read(lambda conn: platform.auth.staff_by_username(conn, DEMO_REVIEWER[0]))
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


def _create(platform: Platform) -> list[SeededCustomer]:
    bank = platform.simulated_bank()
    seeded: list[SeededCustomer] = []
    for demo in DEMO_CUSTOMERS:

        def register(conn: Connection, demo: DemoCustomer = demo) -> Customer:
            customer = platform.customers.register(
                conn, kind=demo.kind, name=demo.name, phone=demo.phone
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

    username, display, token = DEMO_REVIEWER

    def staff(conn: Connection) -> None:
        staff_id = platform.auth.create_staff(
            conn, username=username, display_name=display, roles=["reviewer"]
        )
        platform.auth.issue_token(conn, PrincipalType.STAFF, staff_id, label="demo", token=token)

    platform.db.run(staff)
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
