"""The ``tongbao`` command line.

Refusals print one line, ``error: <code>: <detail>``, to standard error and
exit with status 1; a failed check (``ledger verify``) exits with status 1
after listing what it found. Settings come from the environment / ``.env``
(see ``tongbao config show``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from tongbao import errors
from tongbao.config import Settings
from tongbao.logs import configure_logging
from tongbao.money import format_yuan

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    help="Tongbao (通宝) payment platform.", no_args_is_help=True, pretty_exceptions_enable=False
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
demo_app = typer.Typer(help="Demo data.", no_args_is_help=True)
accounts_app = typer.Typer(help="Ledger accounts and balances.", no_args_is_help=True)
tx_app = typer.Typer(help="Payments (transactions).", no_args_is_help=True)
ledger_app = typer.Typer(help="The double-entry ledger.", no_args_is_help=True)
notifications_app = typer.Typer(help="Result notifications (PAY-8).", no_args_is_help=True)
customers_app = typer.Typer(help="Customers and their API tokens.", no_args_is_help=True)
calendar_app = typer.Typer(help="Business calendar (REC-4).", no_args_is_help=True)
config_app = typer.Typer(help="Settings.", no_args_is_help=True)
for sub, name in [
    (db_app, "db"),
    (demo_app, "demo"),
    (accounts_app, "accounts"),
    (tx_app, "tx"),
    (ledger_app, "ledger"),
    (notifications_app, "notifications"),
    (customers_app, "customers"),
    (calendar_app, "calendar"),
    (config_app, "config"),
]:
    app.add_typer(sub, name=name)

# Never wrap: a refusal is one line, and ids must survive being piped into scripts.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def show(table: Table) -> None:
    """A rich table on a terminal; tab-separated lines (header first) otherwise,
    so ids and amounts are never truncated for scripts."""
    if out.is_terminal:
        out.print(table)
        return
    typer.echo("\t".join(str(column.header) for column in table.columns))
    for cells in zip(*(column.cells for column in table.columns), strict=True):
        typer.echo("\t".join(str(cell) for cell in cells))


def main() -> None:
    app()


def refusals(fn: F) -> F:
    """Turn a domain refusal into one line on stderr and exit status 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except errors.TongbaoError as exc:
            err.print(f"error: {exc.code}: {exc.detail}", markup=False, highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def platform_for(*, quiet_logs: bool = True) -> Iterator[Any]:
    from tongbao.platform import Platform  # noqa: PLC0415 - keep `--help` fast

    settings = Settings()
    configure_logging("WARNING" if quiet_logs else settings.log_level, json=settings.log_json)
    platform = Platform(settings).start()
    try:
        yield platform
    finally:
        platform.close()


# --- serve -------------------------------------------------------------------


@app.command()
@refusals
def serve(
    host: Annotated[str | None, typer.Option(help="Default: TONGBAO_HTTP_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: TONGBAO_HTTP_PORT")] = None,
    background: Annotated[bool, typer.Option(help="Run background duties")] = True,
) -> None:
    """Serve the HTTP API (interactive docs at /docs) until interrupted: HTTPS
    only, TLS 1.2 or newer, when TONGBAO_TLS_CERTFILE and TONGBAO_TLS_KEYFILE are set."""
    import uvicorn  # noqa: PLC0415

    from tongbao.api.app import create_app  # noqa: PLC0415
    from tongbao.api.hardening import tls_files  # noqa: PLC0415
    from tongbao.background import BackgroundProcess  # noqa: PLC0415
    from tongbao.platform import Platform  # noqa: PLC0415

    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    # Refuse a broken TLS set-up here, in one line, rather than in every worker.
    tls = tls_files(settings)
    if tls is not None:
        tls.context()
    platform = Platform(settings).start()
    bind_host, bind_port = host or settings.http_host, port or settings.http_port
    _banner(platform, bind_host, bind_port, scheme="https" if tls else "http")
    options: dict[str, Any] = {
        "host": bind_host,
        "port": bind_port,
        "log_config": None,
        "access_log": False,
        # The client address behind a trusted reverse proxy (SEC-9 location alerts).
        "proxy_headers": True,
        "forwarded_allow_ips": settings.trusted_proxies,
    }
    if tls is not None:
        # uvicorn's own ssl_version sets no minimum version; this context does.
        options["ssl_context_factory"] = tls.uvicorn_factory()
    if settings.http_workers == 1:
        uvicorn.run(create_app(platform, background=background), **options)
        return
    # Several processes: each builds its own platform from the environment;
    # the background duties run once, in a process of their own.
    platform.close()
    os.environ["TONGBAO_BACKGROUND"] = "0"
    duties = BackgroundProcess().start() if background else None
    try:
        uvicorn.run(
            "tongbao.api.app:app_from_environment",
            factory=True,
            workers=settings.http_workers,
            **options,
        )
    finally:
        if duties is not None:
            duties.close()


def _banner(platform: Any, host: str, port: int, *, scheme: str = "http") -> None:
    from tongbao import demo  # noqa: PLC0415

    base = f"{scheme}://{host}:{port}"
    err.print(
        f"\n[bold]Tongbao (通宝)[/] on {platform.db.dialect} — API {base}/v1, "
        f"interactive docs [link]{base}/docs[/link]"
    )
    seeded = platform.db.read(
        lambda conn: platform.auth.staff_by_username(conn, demo.DEMO_STAFF[0].username)
    )
    if not seeded:
        err.print("No demo data. Create some with `tongbao demo seed`.\n")
        return
    customers = demo.seed(platform)
    # Plain lines, not a table: a narrow terminal would cut the ids short.
    lines = ["Demo credentials (demo data only):"]
    for entry in customers:
        card = f"  card {entry.card_id}" if entry.card_id else ""
        lines.append(
            f"  {entry.demo.name} ({entry.demo.kind}): token {entry.demo.token}  "
            f"account {entry.customer.account_id}{card}"
        )
    lines += demo.staff_lines()
    err.print("\n".join(lines) + "\n", markup=False, highlight=False)
    lisi = customers[1].customer
    err.print(
        "Try it — 张三 pays 李四 12.34 yuan:\n"
        f"  curl -s -X POST {base}/v1/payments \\\n"
        f"    -H 'Authorization: Bearer {customers[0].demo.token}' \\\n"
        "    -H \"Idempotency-Key: $(date +%s%N)\" -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"kind": "transfer", "amount": "12.34", "payee_account_id": '
        f'"{lisi.account_id}", "payee_name": "李四", "confirm": true}}\'\n'
        f"  curl -s {base}/v1/accounts -H 'Authorization: Bearer {customers[1].demo.token}'\n",
        markup=False,
        highlight=False,
    )


# --- db, demo, config ------------------------------------------------------------


@db_app.command("upgrade")
@refusals
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations (safe to run again)."""
    from tongbao.storage import Database  # noqa: PLC0415
    from tongbao.storage.migrate import current_revision, upgrade  # noqa: PLC0415

    settings = Settings()
    configure_logging("WARNING", json=settings.log_json)
    db = Database(settings.database_url, settings=settings)
    upgrade(db, revision)
    out.print(f"schema at revision {current_revision(db)} ({db.dialect})")
    db.dispose()


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision of the configured database."""
    from tongbao.storage import Database  # noqa: PLC0415
    from tongbao.storage.migrate import current_revision, head_revision  # noqa: PLC0415

    settings = Settings()
    db = Database(settings.database_url, settings=settings)
    out.print(f"current {current_revision(db)}, code expects {head_revision()}")
    db.dispose()


@demo_app.command("seed")
@refusals
def demo_seed() -> None:
    """Create demo customers, a merchant, a reviewer and money (idempotent)."""
    from tongbao import demo  # noqa: PLC0415

    with platform_for() as platform:
        for entry in demo.seed(platform):
            balance = platform.db.read(
                lambda conn, e=entry: platform.ledger.balance(conn, e.customer.account_id)
            )
            out.print(
                f"{entry.demo.name}: token {entry.demo.token}, account "
                f"{entry.customer.account_id}, balance {format_yuan(balance.available)}"
            )
        out.print("\n".join(demo.staff_lines()), markup=False, highlight=False)


@config_app.command("show")
def config_show() -> None:
    """Print the settings in effect (environment, .env, defaults)."""
    settings = Settings()
    for name, value in settings.model_dump(mode="json").items():
        shown = value
        if isinstance(value, dict | list):
            shown = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        elif name == "database_url":
            shown = make_url(value).render_as_string(hide_password=True)
        typer.echo(f"TONGBAO_{name.upper()}={shown}")


@config_app.command("docs")
def config_docs() -> None:
    """Print docs/configuration.md (generated from the settings' docstrings)."""
    from tongbao.config import settings_reference  # noqa: PLC0415

    print(settings_reference(), end="")  # noqa: T201 - raw markdown, no rich markup


# --- accounts, tx, ledger ----------------------------------------------------------


@accounts_app.command("list")
@refusals
def accounts_list(
    customer: Annotated[str | None, typer.Option(help="Only this customer's accounts")] = None,
) -> None:
    """Accounts with ledger / held / available balances."""
    from sqlalchemy import select  # noqa: PLC0415

    from tongbao.ledger import tables as lt  # noqa: PLC0415

    with platform_for() as platform:

        def read(conn: Connection) -> None:
            query = select(lt.accounts.c.id).order_by(lt.accounts.c.id)
            if customer:
                query = query.where(lt.accounts.c.owner_id == customer)
            ids = list(conn.execute(query).scalars())
            balances = platform.ledger.balances(conn, ids) if ids else {}
            table = Table("account", "type", "name", "status", "ledger", "held", "available")
            for account_id in ids:
                account, bal = platform.ledger.account(conn, account_id), balances[account_id]
                table.add_row(
                    account.id,
                    account.type,
                    account.name,
                    account.status,
                    format_yuan(bal.ledger),
                    format_yuan(bal.held),
                    format_yuan(bal.available),
                )
            show(table)

        platform.db.read(read)


@accounts_app.command("show")
@refusals
def accounts_show(account_id: str, limit: Annotated[int, typer.Option()] = 20) -> None:
    """One account's balance and latest postings."""
    with platform_for() as platform:

        def read(conn: Connection) -> None:
            account = platform.ledger.account(conn, account_id)
            bal = platform.ledger.balance(conn, account_id)
            out.print(
                f"{account.id} {account.type} '{account.name}' {account.status}: ledger "
                f"{format_yuan(bal.ledger)}, held {format_yuan(bal.held)}, available "
                f"{format_yuan(bal.available)}",
                markup=False,
            )
            table = Table(
                "entry", "amount (+debit/-credit)", "balance after", "kind", "reference", "at"
            )
            for line in platform.ledger.statement(conn, account_id, limit=limit).items:
                table.add_row(
                    line.entry_id,
                    format_yuan(line.amount),
                    "" if line.balance_after is None else format_yuan(line.balance_after),
                    line.kind,
                    line.reference or "",
                    line.created_at.isoformat(),
                )
            show(table)

        platform.db.read(read)


@tx_app.command("list")
@refusals
def tx_list(
    customer: Annotated[str | None, typer.Option(help="Customer id")] = None,
    state: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
) -> None:
    """Payments, newest first."""
    from tongbao.payments import PaymentFilter, PaymentState  # noqa: PLC0415

    if state is not None and state not in {s.value for s in PaymentState}:
        raise errors.ValidationFailed(f"unknown state {state!r}")
    filters = PaymentFilter(state=PaymentState(state) if state else None)
    with platform_for() as platform:

        def read(conn: Connection) -> None:
            page = platform.payments.search(
                conn, customer_id=customer, filters=filters, limit=limit
            )
            table = Table("serial no", "id", "kind", "state", "amount", "fee", "created")
            for order in page.items:
                table.add_row(
                    order.serial_no,
                    order.id,
                    order.kind,
                    order.state,
                    format_yuan(order.amount),
                    format_yuan(order.fee),
                    order.created_at.isoformat(),
                )
            show(table)

        platform.db.read(read)


@tx_app.command("show")
@refusals
def tx_show(payment: Annotated[str, typer.Argument(help="Payment id or serial number")]) -> None:
    """One payment with its state history."""
    with platform_for() as platform:

        def read(conn: Connection) -> None:
            order = platform.payments.get(conn, payment)
            for field, value in (
                ("id", order.id),
                ("serial no", order.serial_no),
                ("kind", order.kind),
                ("state", order.state),
                ("amount", format_yuan(order.amount)),
                ("fee", f"{format_yuan(order.fee)} (paid by {order.fee_bearer})"),
                ("payer", f"{order.payer_name} ({order.payer_account_id})"),
                ("payee", f"{order.payee_name} ({order.payee_account_id})"),
                (
                    "failure",
                    f"{order.failure_code}: {order.failure_message}" if order.failure_code else "-",
                ),
                ("created", order.created_at.isoformat()),
            ):
                out.print(f"{field:>14}: {value}", markup=False, highlight=False)
            table = Table("#", "from", "to", "actor", "note", "at")
            for event in platform.payments.events(conn, order.id):
                table.add_row(
                    str(event.seq),
                    event.from_state or "",
                    event.to_state,
                    event.actor,
                    event.note or "",
                    event.at.isoformat(),
                )
            show(table)

        platform.db.read(read)


@tx_app.command("verify")
def tx_verify() -> None:
    """Find error transactions (PAY-13): payments whose ledger movements differ
    from what their state says. Exits 1 if there are any."""
    from tongbao.payments.verify import TARGET_ERROR_RATE, verify_payments  # noqa: PLC0415

    with platform_for() as platform:
        report = platform.db.read(lambda conn: verify_payments(conn, platform.ledger))
    for e in report.errors:
        err.print(
            f"{e.serial_no} ({e.payment_id}, {e.state}): expected {e.expected}, booked {e.actual}",
            markup=False,
            highlight=False,
        )
    summary = (
        f"{report.checked} payments, {len(report.errors)} error transactions "
        f"({report.error_rate:.4%}; target at most {TARGET_ERROR_RATE:.2%})"
    )
    if report.ok:
        out.print(f"payments OK: {summary}")
        return
    err.print(f"payments BROKEN: {summary}")
    raise typer.Exit(1)


@ledger_app.command("verify")
def ledger_verify() -> None:
    """Recompute every balance from the postings, check every entry sums to zero.

    Exits 1 and lists each discrepancy if anything disagrees.
    """
    from tongbao.ledger import verify_ledger  # noqa: PLC0415

    with platform_for() as platform:
        report = platform.db.read(verify_ledger)
    summary = (
        f"{report.accounts} accounts, {report.entries} entries, "
        f"{report.postings} postings, {report.holds} holds"
    )
    if report.ok:
        out.print(f"ledger OK: {summary}")
        return
    for d in report.discrepancies:
        err.print(f"{d.invariant} {d.subject}: {d.detail}", markup=False, highlight=False)
    err.print(f"ledger BROKEN: {len(report.discrepancies)} discrepancies in {summary}")
    raise typer.Exit(1)


@app.command()
@refusals
def tick() -> None:
    """Run the background duties once (bank progress, expiries, scheduled payments,
    notifications) — what `serve` does every few seconds."""
    with platform_for() as platform:
        done = platform.tick()
    out.print(", ".join(f"{k}={v}" for k, v in done.items()))


# --- notifications, customers, calendar ----------------------------------------------


@notifications_app.command("list")
@refusals
def notifications_list(
    customer: Annotated[str | None, typer.Option(help="Recipient customer id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
) -> None:
    """Messages the local channel delivered, newest first."""
    with platform_for() as platform:
        page = platform.local_channel.messages(customer, limit=limit)
    table = Table("delivered", "to", "kind", "text")
    for m in page.items:
        table.add_row(m.delivered_at.isoformat(), m.recipient_id, m.kind, m.text)
    show(table)


@notifications_app.command("dispatch")
@refusals
def notifications_dispatch() -> None:
    """Deliver pending outbox messages now."""
    with platform_for() as platform:
        report = platform.notifications.dispatch(platform.db)
    out.print(f"sent {report.sent}, retried {report.retried}, failed {report.failed}")


@customers_app.command("create")
@refusals
def customers_create(
    name: Annotated[str, typer.Option()],
    kind: Annotated[str, typer.Option(help="person or merchant")] = "person",
    phone: Annotated[str | None, typer.Option()] = None,
    id_number: Annotated[str | None, typer.Option(help="Resident ID number")] = None,
    consented: Annotated[
        bool, typer.Option(help="The customer agreed to the current privacy policy (DATA-1)")
    ] = False,
) -> None:
    """Create a customer with a wallet (or merchant account) and print its API token once."""
    from tongbao.auth import PrincipalType  # noqa: PLC0415
    from tongbao.customers import CustomerKind  # noqa: PLC0415

    if kind not in {k.value for k in CustomerKind}:
        raise errors.ValidationFailed("kind is 'person' or 'merchant'")
    with platform_for() as platform:
        policy = platform.settings.privacy_policy_version if consented else None

        def create(conn: Connection) -> tuple[str, str, str]:
            customer = platform.customers.register(
                conn,
                kind=CustomerKind(kind),
                name=name,
                phone=phone,
                id_number=id_number,
                policy_version=policy,
                channel="counter",
            )
            token = platform.auth.issue_token(
                conn, PrincipalType.CUSTOMER, customer.id, label="cli"
            )
            platform.audit.record(
                conn, actor=cli_actor(), action="customer.create", target=f"customer:{customer.id}"
            )
            return customer.id, customer.account_id, token

        customer_id, account_id, token = platform.db.run(create)
    out.print(f"customer {customer_id}, account {account_id}\ntoken {token} (shown once)")


@customers_app.command("list")
@refusals
def customers_list(
    phone: Annotated[str | None, typer.Option(help="Exactly this mobile number")] = None,
    id_number: Annotated[str | None, typer.Option(help="Exactly this ID number")] = None,
) -> None:
    """Customers (masked, SEC-3); --phone/--id-number find one through the blind index."""
    from tongbao.customers import Customer  # noqa: PLC0415
    from tongbao.security.masking import mask_id_number, mask_phone  # noqa: PLC0415

    with platform_for() as platform:

        def read(conn: Connection) -> list[Customer]:
            found: list[Customer] = platform.customers.search(
                conn, phone=phone, id_number=id_number
            )
            platform.audit.record_read(
                conn,
                actor=cli_actor(),
                target="customers",
                fields=["name", "phone", "id_number"],
                count=len(found),
                source_ip=None,
            )
            return found

        customers = platform.db.run(read)
    table = Table("customer", "kind", "name", "phone", "ID number", "status", "account")
    for c in customers:
        table.add_row(
            c.id,
            c.kind,
            c.display_name,
            mask_phone(c.phone) if c.phone else "",
            mask_id_number(c.id_number) if c.id_number else "",
            c.status,
            c.account_id,
        )
    show(table)


def cli_actor() -> str:
    """Who the audit log names for a command-line action: the operating-system
    user, since the CLI runs with database access on the server itself."""
    import getpass  # noqa: PLC0415

    return f"cli:{getpass.getuser()}"


@calendar_app.command("import")
@refusals
def calendar_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    year: Annotated[int, typer.Option(help="The year the file covers, in full")],
    replace: Annotated[bool, typer.Option(help="Replace a year already present")] = False,
) -> None:
    """Load a year's working days from a CSV (`YYYY-MM-DD,work|off[,name]`)."""
    from tongbao.calendar.service import parse_calendar_csv  # noqa: PLC0415

    rows = parse_calendar_csv(file.read_text(encoding="utf-8"))
    with platform_for() as platform:
        count = platform.calendar.import_year(year, rows, source=file.name, replace=replace)
    out.print(f"imported {count} days of {year}")


@calendar_app.command("years")
@refusals
def calendar_years() -> None:
    """Years the business calendar knows."""
    with platform_for() as platform:
        years = platform.calendar.known_years()
    out.print(f"{years[0]}–{years[-1]}" if years else "none")


# Sub-apps in modules of their own import the helpers above, so they come last.
from tongbao.cli.audit import audit_app  # noqa: E402
from tongbao.cli.bank import bank_app  # noqa: E402
from tongbao.cli.keys import keys_app  # noqa: E402
from tongbao.cli.retention import retention_app  # noqa: E402
from tongbao.cli.security import security_app  # noqa: E402

app.add_typer(retention_app, name="retention")
app.add_typer(audit_app, name="audit")
app.add_typer(bank_app, name="bank")
app.add_typer(keys_app, name="keys")
app.add_typer(security_app, name="security")
from tongbao.cli.staff import staff_app  # noqa: E402

app.add_typer(staff_app, name="staff")


if __name__ == "__main__":  # pragma: no cover
    main()
