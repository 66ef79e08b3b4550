"""The ``tongbao`` command line, run in-process against a database of its own
(``TONGBAO_DATABASE_URL``): schema, demo data, accounts, payments, the ledger
check, notifications, customers, calendar and settings."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest
import structlog
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from typer.testing import CliRunner, Result

from tests.conftest import TEST_MASTER_KEY
from tongbao import cli, demo
from tongbao.api.app import create_app
from tongbao.config import Settings
from tongbao.platform import Platform
from tongbao.storage.migrate import head_revision

RUNNER = CliRunner()
ACCOUNT_ID = re.compile(r"acct_[0-9A-Z]{26}")
SERIAL = re.compile(r"\b\d{28}\b")


def environment(url: str) -> dict[str, str | None]:
    """Only the database URL and a wide terminal; no TONGBAO_ setting leaks in."""
    env: dict[str, str | None] = {
        name: None
        for name in os.environ
        if name.startswith("TONGBAO_") and not name.startswith("TONGBAO_TEST_")
    }
    env.update(
        TONGBAO_DATABASE_URL=url,
        TONGBAO_ENV="development",
        TONGBAO_MASTER_KEY=TEST_MASTER_KEY,
        COLUMNS="250",
    )
    return env


def invoke(url: str, *args: str, cwd: Path) -> Result:
    """Run ``tongbao *args`` in-process; the CLI configures logging for the whole
    process, so the previous logging set-up is put back afterwards. ``cwd`` keeps
    a stray ``.env`` out of the way."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    try:
        with contextlib.chdir(cwd):
            return RUNNER.invoke(cli.app, list(args), env=environment(url))
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file made by the CLI itself: ``db upgrade`` then ``demo seed``."""
    where = tmp_path_factory.mktemp("cli-template")
    path = where / "tongbao.db"
    url = f"sqlite:///{path}"
    ok(invoke(url, "db", "upgrade", cwd=where))
    ok(invoke(url, "demo", "seed", cwd=where))
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture
def url(seeded_template: Path, tmp_path: Path) -> str:
    """A copy of the seeded database for one test."""
    path = tmp_path / "tongbao.db"
    shutil.copy(seeded_template, path)
    return f"sqlite:///{path}"


def counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    tables = ("payment_orders", "ledger_entries", "customers", "bank_cards", "api_tokens")
    try:
        with engine.connect() as conn:
            return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables}
    finally:
        engine.dispose()


def one_line_error(result: Result, code: str) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {code}: "), lines
    assert result.stdout == ""
    return lines[0]


def zhangsan_account(url: str, tmp_path: Path) -> str:
    """Found by phone through the blind index: account names carry no personal data."""
    listing = ok(invoke(url, "customers", "list", "--phone", "13800138000", cwd=tmp_path))
    rows = listing.splitlines()[1:]
    assert len(rows) == 1 and "张*" in rows[0], listing
    found = ACCOUNT_ID.search(rows[0])
    assert found, rows[0]
    return found.group(0)


# --- schema and demo data -------------------------------------------------------------------


def test_db_upgrade_creates_the_schema_and_is_safe_to_repeat(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    first = ok(invoke(url, "db", "upgrade", cwd=tmp_path))
    again = ok(invoke(url, "db", "upgrade", cwd=tmp_path))
    assert first == again == f"schema at revision {head_revision()} (sqlite)\n"
    current = ok(invoke(url, "db", "current", cwd=tmp_path))
    head = head_revision()
    assert head
    assert current.split() == ["current", head + ",", "code", "expects", head]


def test_commands_refuse_a_database_without_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    line = one_line_error(invoke(url, "accounts", "list", cwd=tmp_path), "configuration_error")
    assert "tongbao db upgrade" in line


def test_demo_seed_twice_changes_nothing(url: str, tmp_path: Path) -> None:
    before = counts(url)
    second = ok(invoke(url, "demo", "seed", cwd=tmp_path))
    assert counts(url) == before
    lines = second.splitlines()
    assert lines[0].startswith("张三: token tbk_demo_zhangsan, account acct_")
    assert lines[0].endswith("balance 4972.00")
    assert lines[1].endswith("balance 2000.00") and lines[1].startswith("李四: token tbk_demo_lisi")
    assert lines[2].startswith("通宝咖啡: token tbk_demo_coffee")
    assert lines[2].endswith("balance 27.83")  # 28.00 less the merchant's 0.6 % fee
    # SEC-6 demo: a member per role (two administrators), each with what signs in.
    assert lines[3].startswith(f"Demo staff (password {demo.DEMO_STAFF_PASSWORD},")
    staff_lines = lines[4 : 4 + len(demo.DEMO_STAFF)]
    for member, line in zip(demo.DEMO_STAFF, staff_lines, strict=True):
        assert line.split()[:2] == [member.username, member.role]
        assert f"TOTP secret {member.totp_secret}" in line
    assert {m.role for m in demo.DEMO_STAFF} >= {
        "operator",
        "reviewer",
        "risk_officer",
        "compliance_officer",
        "auditor",
        "customer_service",
        "administrator",
    }
    assert ok(invoke(url, "demo", "seed", cwd=tmp_path)) == second


def test_demo_seed_is_refused_in_production(url: str, tmp_path: Path) -> None:
    before = counts(url)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    env = environment(url) | {"TONGBAO_ENV": "production"}
    try:
        with contextlib.chdir(tmp_path):
            result = RUNNER.invoke(cli.app, ["demo", "seed"], env=env)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)
    one_line_error(result, "forbidden")
    assert counts(url) == before


def test_demo_seed_on_either_engine(database_url: str, backend: str, tmp_path: Path) -> None:
    first = ok(invoke(database_url, "demo", "seed", cwd=tmp_path))
    assert "张三: token tbk_demo_zhangsan" in first and "balance 4972.00" in first
    before = counts(database_url)
    assert ok(invoke(database_url, "demo", "seed", cwd=tmp_path)) == first
    assert counts(database_url) == before
    assert ok(invoke(database_url, "ledger", "verify", cwd=tmp_path)).startswith("ledger OK")
    # The demo tokens work against the API on that database.
    settings = Settings(_env_file=None, database_url=database_url, master_key=TEST_MASTER_KEY)
    platform = Platform(settings).start()
    try:
        client = TestClient(create_app(platform))
        me = client.get("/v1/me", headers={"Authorization": "Bearer tbk_demo_lisi"})
        assert me.status_code == 200 and me.json()["name"] == "李*"  # SEC-3
        assert platform.db.dialect == backend
    finally:
        platform.close()


# --- accounts, payments, ledger ---------------------------------------------------------------


def test_accounts_list_and_show(url: str, tmp_path: Path) -> None:
    listing = ok(invoke(url, "accounts", "list", cwd=tmp_path))
    for expected in ("customer_wallet", "merchant", "fee_income", "bank_clearing", "transit"):
        assert expected in listing
    account = zhangsan_account(url, tmp_path)
    row = next(line for line in listing.splitlines() if account in line)
    assert row.count("4972.00") == 2 and "0.00" in row  # ledger, held, available

    shown = ok(invoke(url, "accounts", "show", account, cwd=tmp_path))
    # The account's name carries the customer id, never the name (the ledger is never shredded).
    assert re.fullmatch(
        rf"{account} customer_wallet 'person cus_[0-9A-Z]{{26}}' open: "
        r"ledger 4972\.00, held 0\.00, available 4972\.00",
        shown.splitlines()[0],
    ), shown
    assert "-5000.00" in shown and "28.00" in shown  # the top-up credit, the latte debit

    one_line_error(invoke(url, "accounts", "show", "acct_NOPE", cwd=tmp_path), "account_not_found")


def test_tx_list_and_show(url: str, tmp_path: Path) -> None:
    listing = ok(invoke(url, "tx", "list", cwd=tmp_path))
    rows = [line for line in listing.splitlines() if SERIAL.search(line)]
    assert len(rows) == 3  # two top-ups and the latte
    latte = next(line for line in rows if "merchant_payment" in line)
    assert "succeeded" in latte and "28.00" in latte and "0.17" in latte
    serial = SERIAL.search(latte)
    assert serial

    shown = ok(invoke(url, "tx", "show", serial.group(0), cwd=tmp_path))
    fields: dict[str, str] = {}
    for line in shown.splitlines():
        if ":" in line and not line.startswith(("┃", "│", "┏", "┡", "└")):
            name, value = line.split(":", 1)
            fields[name.strip()] = value.strip()
    assert fields["serial no"] == serial.group(0)
    assert fields["kind"] == "merchant_payment"
    assert fields["state"] == "succeeded"
    assert fields["amount"] == "28.00"
    assert fields["fee"] == "0.17 (paid by payee)"
    assert fields["payee"].startswith("通宝咖啡")
    assert fields["failure"] == "-"
    assert "processing" in shown and "created" in shown  # the event history

    by_id = ok(invoke(url, "tx", "show", fields["id"], cwd=tmp_path))
    assert by_id == shown

    topups = ok(invoke(url, "tx", "list", "--state", "succeeded", "--limit", "1", cwd=tmp_path))
    assert len([line for line in topups.splitlines() if SERIAL.search(line)]) == 1
    one_line_error(invoke(url, "tx", "list", "--state", "bogus", cwd=tmp_path), "validation_failed")


def test_a_refusal_is_one_line_on_stderr(url: str, tmp_path: Path) -> None:
    line = one_line_error(invoke(url, "tx", "show", "nope", cwd=tmp_path), "payment_not_found")
    assert line == "error: payment_not_found: no payment nope"


def test_ledger_verify_passes_then_names_the_tampered_account(url: str, tmp_path: Path) -> None:
    report = ok(invoke(url, "ledger", "verify", cwd=tmp_path))
    assert report.startswith("ledger OK:") and "3 entries" in report
    account = zhangsan_account(url, tmp_path)

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE ledger_balances SET credits_posted = credits_posted + 100 "
                "WHERE account_id = :a"
            ),
            {"a": account},
        )
    engine.dispose()

    broken = invoke(url, "ledger", "verify", cwd=tmp_path)
    assert broken.exit_code == 1
    assert "ledger OK" not in broken.stdout
    named = [line for line in broken.stderr.splitlines() if account in line]
    assert named and named[0].startswith("L3 "), broken.stderr
    assert broken.stderr.splitlines()[-1].startswith("ledger BROKEN: ")


def test_notifications_list(url: str, tmp_path: Path) -> None:
    listing = ok(invoke(url, "notifications", "list", cwd=tmp_path))
    assert listing.count("topup_succeeded") == 2  # the demo's two top-ups
    assert listing.count("payment_succeeded") == 1  # and one coffee
    assert "payment_received" in listing
    assert "通宝咖啡" in listing
    customer = re.search(r"cus_[0-9A-Z]{26}", listing)
    assert customer
    mine = ok(invoke(url, "notifications", "list", "--customer", customer.group(0), cwd=tmp_path))
    assert 0 < mine.count(customer.group(0)) < listing.count("cus_")


# --- customers, calendar, settings ----------------------------------------------------------


def test_customers_create_prints_a_token_that_authenticates(url: str, tmp_path: Path) -> None:
    out = ok(
        invoke(url, "customers", "create", "--name", "王五", "--phone", "13600136000", cwd=tmp_path)
    )
    match = re.search(
        r"customer (cus_\w+), account (acct_\w+)\ntoken (tbk_\S+) \(shown once\)", out
    )
    assert match, out
    customer_id, account_id, token = match.groups()

    listing = ok(invoke(url, "customers", "list", cwd=tmp_path))
    assert customer_id in listing and "王*" in listing and "136****6000" in listing
    assert "王五" not in listing and "13600136000" not in listing  # SEC-3

    settings = Settings(_env_file=None, database_url=url, master_key=TEST_MASTER_KEY)
    platform = Platform(settings).start()
    try:
        client = TestClient(create_app(platform))
        me = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        assert me.json() == {
            "object": "customer",
            "id": customer_id,
            "kind": "person",
            "name": "王*",
            "phone": "136****6000",
            "id_number": None,
            "status": "active",
            "account_id": account_id,
            "privacy_policy_version": None,
        }
    finally:
        platform.close()

    merchant = ok(
        invoke(url, "customers", "create", "--name", "小店", "--kind", "merchant", cwd=tmp_path)
    )
    assert "token tbk_" in merchant
    one_line_error(
        invoke(url, "customers", "create", "--name", "x", "--kind", "robot", cwd=tmp_path),
        "validation_failed",
    )


def test_calendar_years(url: str, tmp_path: Path) -> None:
    assert ok(invoke(url, "calendar", "years", cwd=tmp_path)) == "2004–2026\n"


def test_config_show_lists_the_settings_in_effect(url: str, tmp_path: Path) -> None:
    shown = ok(invoke(url, "config", "show", cwd=tmp_path))
    printed = dict(line.split("=", 1) for line in shown.splitlines() if line.startswith("TONGBAO_"))
    assert printed["TONGBAO_DATABASE_URL"] == url
    assert printed["TONGBAO_ENV"] == "development"
    assert {f"TONGBAO_{name.upper()}" for name in Settings.model_fields} <= set(printed)
    assert printed["TONGBAO_MAX_AMOUNT_FEN"] == "100000000"
    assert printed["TONGBAO_VERIFICATION_THRESHOLD_FEN"] == "100000"


def test_config_show_output_can_be_used_as_settings(url: str, tmp_path: Path) -> None:
    """What ``config show`` prints is one ``NAME=value`` line per setting that
    Settings reads back as the same value (docs: the fee schedule is JSON).

    BUG: ``config_show`` prints ``f"{value}"`` through a rich Console, so the
    fee schedule comes out as a Python repr (single quotes, ``None``) that
    Settings refuses, and long values are wrapped onto several lines at the
    terminal width.
    """
    shown = ok(invoke(url, "config", "show", cwd=tmp_path))
    lines = [line for line in shown.splitlines() if line.strip()]
    assert all(re.fullmatch(r"TONGBAO_[A-Z0-9_]+=.*", line) for line in lines), lines
    printed = dict(line.split("=", 1) for line in lines)
    defaults = Settings(_env_file=None).model_dump(mode="json")
    assert json.loads(printed["TONGBAO_FEE_SCHEDULE"]) == defaults["fee_schedule"]
    with contextlib.chdir(tmp_path):
        again = RUNNER.invoke(cli.app, ["config", "show"], env=printed | {"COLUMNS": "250"})
    assert again.stdout == shown


def test_no_arguments_prints_help(tmp_path: Path) -> None:
    result = invoke(f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    assert result.exit_code in (0, 2)
    for group in ("db", "demo", "accounts", "tx", "ledger", "customers", "calendar", "config"):
        assert group in result.output
