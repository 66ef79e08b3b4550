"""Random sampling of transactions for internal audit (AUD-5), on both engines:
the sample comes only from the period's completed payments, the draw repeats
from its recorded seed, a problem gets a rectification deadline one month
out and shows as overdue after it, every change is in the audit log, and the
``tongbao audit sample`` commands."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, select

from tongbao import errors
from tongbao.audit import AuditQuery
from tongbao.audit import tables as t
from tongbao.audit.sampling import FindingState, Sample, draw
from tongbao.clock import ManualClock
from tongbao.payments import PaymentKind, PaymentOrder, PaymentRequest
from tongbao.platform import Platform

from .conftest import START
from .payment_helpers import Env
from .staff_helpers import new_staff
from .test_cli import invoke, ok, one_line_error

AUDITOR = "staff:staff_auditor"
CHECKER = "staff:staff_checker"
"""Another auditor: who drew a sample does not review it (SEC-5)."""
OPS = "staff:staff_ops"
"""The business side, which rectifies problems."""
DAY = timedelta(days=1)


def _payments(env: Env, count: int) -> list[PaymentOrder]:
    """``count`` succeeded wallet transfers (plus the payer's succeeded top-up)."""
    payer = env.person("张三", topup=1_000_000)
    payee = env.person("李四")
    orders = [env.transfer(payer, payee, 1_000 + n) for n in range(count)]
    assert all(order.state == "succeeded" for order in orders)
    return orders


def _draw(platform: Platform, since_days: int, until_days: int, size: int) -> Sample:
    since, until = START + since_days * DAY, START + until_days * DAY
    return platform.db.run(
        lambda conn: platform.audit_sampling.draw_sample(conn, AUDITOR, since, until, size)
    )


def _cli(url: str, *args: str, cwd: Path) -> str:
    return ok(invoke(url, "audit", "sample", *args, cwd=cwd))


def _records(platform: Platform, action: str) -> int:
    return platform.db.read(lambda conn: platform.audit.count(conn, AuditQuery(action=action)))


def _rows(platform: Platform) -> list[int]:
    def read(conn: Connection) -> list[int]:
        return [
            int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (t.samples, t.sample_items)
        ]

    return platform.db.read(read)


def test_the_sample_comes_only_from_the_completed_payments_of_the_period(
    platform: Platform, clock: ManualClock
) -> None:
    """AUD-5: payments created before or after the period, and payments not yet
    final, are never sampled; asking for the whole population gets all of it."""
    env = Env(platform)
    before = _payments(env, 2)
    clock.advance(DAY)
    inside = _payments(env, 3)
    payer = env.person("王五", topup=500_000)
    unfinished = env.pay(  # a top-up never sent to the bank stays in progress
        payer, PaymentRequest(kind=PaymentKind.TOPUP, amount=10_000, card_id=payer.card_id)
    )
    assert not unfinished.state.final
    clock.advance(DAY)
    after = _payments(env, 1)

    in_period = platform.db.read(
        lambda conn: platform.payments.completed_between(conn, START + DAY, START + 2 * DAY)
    )
    # 3 transfers, 张三's top-up and 王五's were completed in the period.
    assert len(in_period) == 5
    assert {o.id for o in inside} <= {pid for pid, _ in in_period}

    sample = _draw(platform, 1, 2, 5)
    assert (sample.population, sample.size, len(sample.items)) == (5, 5, 5)
    assert {(i.payment_id, i.serial_no) for i in sample.items} == set(in_period)
    sampled = {i.payment_id for i in sample.items}
    assert not sampled & {o.id for o in before + after + [unfinished]}
    assert all(i.state is FindingState.PENDING for i in sample.items)
    assert sample.drawn_by == AUDITOR and sample.drawn_at == clock.now()


def test_the_draw_repeats_from_the_recorded_seed(platform: Platform) -> None:
    """AUD-5: anyone can re-run the draw from the recorded seed and get the same
    sample, so it cannot have been picked by hand; each draw has a fresh seed."""
    _payments(Env(platform), 8)
    population = platform.db.read(
        lambda conn: platform.payments.completed_between(conn, START, START + DAY)
    )
    ids = [payment_id for payment_id, _ in population]
    samples = [_draw(platform, 0, 1, 3) for _ in range(3)]
    for sample in samples:
        assert len(bytes.fromhex(sample.seed)) == 16
        again = draw(list(reversed(ids)), sample.size, bytes.fromhex(sample.seed))
        assert sorted(again) == sorted(i.payment_id for i in sample.items)
    assert len({s.seed for s in samples}) == 3


@pytest.mark.parametrize(
    ("since_days", "until_days", "size", "message"),
    [
        (0, 1, 0, "at least 1"),
        (0, 1, 99, "exceeds the"),
        (5, 6, 1, "no completed transactions"),
        (1, 0, 1, "must end after it starts"),
    ],
)
def test_refused_draws_change_nothing(
    platform: Platform, since_days: int, until_days: int, size: int, message: str
) -> None:
    """AUD-5: a size outside 1…population, an empty or backwards period are
    refused with the reason, and leave no sample and no audit record."""
    _payments(Env(platform), 2)
    with pytest.raises(errors.ValidationFailed, match=message):
        _draw(platform, since_days, until_days, size)
    assert _rows(platform) == [0, 0]
    assert _records(platform, "audit.sample.draw") == 0


def test_a_problem_must_be_rectified_within_a_month_or_shows_as_overdue(
    platform: Platform, clock: ManualClock
) -> None:
    """AUD-5: a problem produces the audit report's entry with a deadline 30 days
    (audit_rectification_days) later; past it the report flags it overdue, and
    rectifying it clears the flag while the report keeps the finding."""
    _payments(Env(platform), 4)
    sample = _draw(platform, 0, 1, 3)
    bad, good = sample.items[0].payment_id, sample.items[1].payment_id
    sampling = platform.audit_sampling
    clock.advance(timedelta(hours=2))
    found_at = clock.now()

    item = platform.db.run(
        lambda conn: sampling.record_result(conn, CHECKER, sample.id, bad, False, "缺少审批记录")
    )
    assert item.state is FindingState.PROBLEM and item.finding == "缺少审批记录"
    assert item.deadline == found_at + timedelta(days=30)
    assert (item.reviewed_by, item.reviewed_at) == (CHECKER, found_at)
    platform.db.run(lambda conn: sampling.record_result(conn, CHECKER, sample.id, good, True, None))

    report = platform.db.read(lambda conn: sampling.report(conn, sample.id))
    assert report.counts == {
        FindingState.PENDING: 1,
        FindingState.OK: 1,
        FindingState.PROBLEM: 1,
        FindingState.RECTIFIED: 0,
    }
    assert [p.payment_id for p in report.problems] == [bad]
    assert report.overdue == () and not report.complete

    clock.advance(timedelta(days=30))  # exactly at the deadline: still in time
    assert platform.db.read(lambda conn: sampling.report(conn, sample.id)).overdue == ()
    clock.advance(timedelta(seconds=1))
    report = platform.db.read(lambda conn: sampling.report(conn, sample.id))
    assert [p.payment_id for p in report.overdue] == [bad]

    fixed = platform.db.run(lambda conn: sampling.rectify(conn, OPS, sample.id, bad, "已补录审批"))
    assert fixed.state is FindingState.RECTIFIED and fixed.rectified_by == OPS
    report = platform.db.read(lambda conn: sampling.report(conn, sample.id))
    assert report.overdue == ()
    assert report.counts[FindingState.RECTIFIED] == 1 and report.counts[FindingState.PROBLEM] == 0
    (kept,) = report.problems
    assert (kept.finding, kept.rectification) == ("缺少审批记录", "已补录审批")


def test_the_deadline_follows_the_setting(platform: Platform, clock: ManualClock) -> None:
    """AUD-5: the rectification period is configurable (default one month)."""
    _payments(Env(platform), 1)
    sample = _draw(platform, 0, 1, 1)
    platform.settings.audit_rectification_days = 7
    item = platform.db.run(
        lambda conn: platform.audit_sampling.record_result(
            conn, CHECKER, sample.id, sample.items[0].payment_id, False, "金额不符"
        )
    )
    assert item.deadline == clock.now() + timedelta(days=7)


def test_invalid_changes_are_refused_and_change_nothing(platform: Platform) -> None:
    """AUD-5: a result is recorded once, only a problem can be rectified, a
    problem needs its finding and a rectification its note."""
    _payments(Env(platform), 2)
    sample = _draw(platform, 0, 1, 2)
    first, second = (i.payment_id for i in sample.items)
    s = platform.audit_sampling

    def run(fn: Callable[[Connection], object]) -> object:
        return platform.db.run(fn)

    with pytest.raises(errors.InvalidTransition, match="pending cannot become rectified"):
        run(lambda conn: s.rectify(conn, OPS, sample.id, first, "note"))
    with pytest.raises(errors.ValidationFailed, match="the finding must not be empty"):
        run(lambda conn: s.record_result(conn, CHECKER, sample.id, first, False, "  "))
    with pytest.raises(errors.AuditSampleNotFound):
        run(lambda conn: s.record_result(conn, CHECKER, sample.id, "pay_nope", True, None))
    with pytest.raises(errors.AuditSampleNotFound):
        run(lambda conn: s.record_result(conn, CHECKER, "smp_nope", first, True, None))

    run(lambda conn: s.record_result(conn, CHECKER, sample.id, first, True, None))
    with pytest.raises(errors.InvalidTransition, match="ok cannot become problem"):
        run(lambda conn: s.record_result(conn, CHECKER, sample.id, first, False, "late"))
    with pytest.raises(errors.InvalidTransition, match="ok cannot become rectified"):
        run(lambda conn: s.rectify(conn, OPS, sample.id, first, "note"))

    run(lambda conn: s.record_result(conn, CHECKER, sample.id, second, False, "问题"))
    with pytest.raises(errors.ValidationFailed, match="rectification note"):
        run(lambda conn: s.rectify(conn, OPS, sample.id, second, ""))
    run(lambda conn: s.rectify(conn, OPS, sample.id, second, "done"))
    with pytest.raises(errors.InvalidTransition, match="rectified cannot become rectified"):
        run(lambda conn: s.rectify(conn, OPS, sample.id, second, "again"))

    items = {i.payment_id: i for i in platform.db.read(lambda c: s.get(c, sample.id)).items}
    assert items[first].state is FindingState.OK and items[first].finding is None
    assert items[second].state is FindingState.RECTIFIED and items[second].rectification == "done"
    assert _records(platform, "audit.sample.result") == 2
    assert _records(platform, "audit.sample.rectify") == 1


def test_the_drawer_does_not_review_and_the_audit_side_does_not_rectify(
    platform: Platform,
) -> None:
    """AUD-5 with SEC-5: whoever drew a sample may not record results on it, and
    neither the drawer nor whoever raised a finding may record its
    rectification; each refusal has its code and changes nothing."""
    _payments(Env(platform), 2)
    sample = _draw(platform, 0, 1, 2)
    first, second = (i.payment_id for i in sample.items)
    s = platform.audit_sampling

    with pytest.raises(errors.AuditSampleSelfReview, match="drew this sample"):
        platform.db.run(lambda conn: s.record_result(conn, AUDITOR, sample.id, first, True, None))
    platform.db.run(lambda conn: s.record_result(conn, CHECKER, sample.id, first, False, "缺章"))
    for auditor in (CHECKER, AUDITOR):
        with pytest.raises(errors.AuditSampleSelfRectification):
            platform.db.run(lambda conn, a=auditor: s.rectify(conn, a, sample.id, first, "补章"))

    items = {i.payment_id: i for i in platform.db.read(lambda c: s.get(c, sample.id)).items}
    assert items[second].state is FindingState.PENDING and items[second].reviewed_by is None
    assert items[first].state is FindingState.PROBLEM and items[first].rectified_by is None
    assert _records(platform, "audit.sample.result") == 1
    assert _records(platform, "audit.sample.rectify") == 0
    fixed = platform.db.run(lambda conn: s.rectify(conn, OPS, sample.id, first, "补章"))
    assert fixed.state is FindingState.RECTIFIED


def test_every_change_is_in_the_audit_log_without_the_finding_text(
    platform: Platform,
) -> None:
    """AUD-5 with AUD-1: draw, result and rectification are recorded with who and
    what, in the same transaction; findings may name people, so only their
    digest is kept (DATA-2). The chain stays intact."""
    _payments(Env(platform), 2)
    sample = _draw(platform, 0, 1, 1)
    payment_id = sample.items[0].payment_id
    s = platform.audit_sampling
    platform.db.run(
        lambda conn: s.record_result(conn, CHECKER, sample.id, payment_id, False, "张三签名缺失")
    )
    platform.db.run(lambda conn: s.rectify(conn, OPS, sample.id, payment_id, "张三已补签"))

    page = platform.db.read(
        lambda conn: platform.audit.search(conn, AuditQuery(keyword=sample.id), limit=10)
    )
    records = list(reversed(page.items))
    assert [(r.actor, r.action, r.target) for r in records] == [
        (AUDITOR, "audit.sample.draw", f"audit_sample:{sample.id}"),
        (CHECKER, "audit.sample.result", f"audit_sample:{sample.id}/{payment_id}"),
        (OPS, "audit.sample.rectify", f"audit_sample:{sample.id}/{payment_id}"),
    ]
    assert sample.seed in records[0].details
    assert records[1].outcome == "problem" and records[1].after_digest
    assert not any("张三" in r.details for r in records)
    assert platform.audit.verify(platform.db).ok


def test_cli_draws_a_sample_and_prints_its_report(
    platform: Platform, database_url: str, tmp_path: Path
) -> None:
    """AUD-5: ``tongbao audit sample draw`` names the sample and its seed;
    ``result`` records a problem with its deadline; ``report`` lists every
    sampled transaction; a bad size is a one-line refusal. SEC-5: the OS user
    who drew may not review, so another auditor does with ``--staff``."""
    _payments(Env(platform), 3)  # 2026-11-23 in Shanghai
    checker = new_staff(platform, ["auditor"])

    period = ("--since", "2026-11-23", "--until", "2026-11-24")
    refused = invoke(database_url, "audit", "sample", "draw", *period, "--size", "0", cwd=tmp_path)
    assert "at least 1" in one_line_error(refused, "validation_failed")

    drawn = _cli(database_url, "draw", *period, "--size", "2", cwd=tmp_path)
    head, header, *rows = drawn.splitlines()
    assert "2 of 4 transactions" in head and header == "payment\tserial no"
    sample_id = head.split()[1].rstrip(":")
    payment_id = rows[0].split("\t")[0]
    assert len(rows) == 2

    review = ("result", sample_id, payment_id, "--problem", "no receipt")
    refused = invoke(database_url, "audit", "sample", *review, cwd=tmp_path)
    assert "drew this sample" in one_line_error(refused, "audit_sample_self_review")
    result = _cli(database_url, *review, "--staff", checker.username, cwd=tmp_path)
    assert "problem, rectify by" in result

    report = _cli(database_url, "report", sample_id, cwd=tmp_path)
    summary, header, *lines = report.splitlines()
    assert "pending 1, ok 0, problem 1, rectified 0; 0 overdue" in summary
    assert header.split("\t")[:4] == ["payment", "serial no", "state", "deadline"]
    cells = {line.split("\t")[0]: line.split("\t") for line in lines}
    assert cells[payment_id][2] == "problem" and cells[payment_id][5] == "no receipt"
    assert _records(platform, "audit.sample.draw") == 1
    (record,) = platform.db.read(
        lambda conn: platform.audit.search(conn, AuditQuery(action="audit.sample.result")).items
    )
    assert record.actor == f"staff:{checker.id}"
    assert record.details_data["via"].startswith("cli:")


def test_cli_rectification_is_recorded_by_the_business_side(
    platform: Platform, database_url: str, tmp_path: Path
) -> None:
    """AUD-5 with SEC-4/SEC-5: ``rectify --staff`` names a member holding
    audit.sample.rectify (an operator), not the auditor who raised the finding,
    nor a member without the permission, nor an unknown name."""
    _payments(Env(platform), 1)
    sample = _draw(platform, 0, 1, 1)
    payment_id = sample.items[0].payment_id
    checker = new_staff(platform, ["auditor"])
    operator = new_staff(platform, ["operator"])
    platform.db.run(
        lambda conn: platform.audit_sampling.record_result(
            conn, f"staff:{checker.id}", sample.id, payment_id, False, "缺少回单"
        )
    )
    fix = ("rectify", sample.id, payment_id, "--note", "已补回单", "--staff")
    for who, code in (
        (checker.username, "permission_denied"),
        ("nobody-here", "staff_not_found"),
    ):
        one_line_error(invoke(database_url, "audit", "sample", *fix, who, cwd=tmp_path), code)
    assert _records(platform, "audit.sample.rectify") == 0
    assert "rectified" in _cli(database_url, *fix, operator.username, cwd=tmp_path)
    item = platform.db.read(lambda conn: platform.audit_sampling.get(conn, sample.id)).items[0]
    assert item.rectified_by == f"staff:{operator.id}" and item.rectification == "已补回单"
