"""SEC-10: the vulnerability-database check of the dependencies, the
vulnerability register with its 24-hour fix deadlines, and the quarterly
penetration tests.

The advisories are OSV records in the format osv.dev exports (one JSON file
per advisory, zipped per ecosystem as ``PyPI/all.zip``), written by the tests
into a database of their own, and matched against a small ``uv.lock``."""

from __future__ import annotations

import json
import zipfile
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from tongbao import errors
from tongbao.audit.model import AuditQuery
from tongbao.clock import ManualClock
from tongbao.platform import Platform
from tongbao.security.osv import (
    LocalOsvDatabase,
    check,
    environment_packages,
    lock_packages,
    source_for,
)
from tongbao.security.register import NewFinding
from tongbao.security.vulnerabilities import (
    CheckResult,
    LockedPackage,
    Severity,
    VulnSource,
    VulnStatus,
    parse_lock,
)

from .test_cli import invoke, ok, one_line_error

JINJA = {
    "schema_version": "1.6.0",
    "id": "GHSA-h5c8-rqwp-cp95",
    "modified": "2024-01-11T15:20:48Z",
    "published": "2024-01-11T15:20:48Z",
    "aliases": ["CVE-2024-22195"],
    "summary": "Jinja vulnerable to HTML attribute injection when passing user input as "
    "keys to xmlattr filter",
    "details": "The `xmlattr` filter in affected versions of Jinja accepts keys containing spaces.",
    "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"}],
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "Jinja2", "purl": "pkg:pypi/jinja2"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.1.3"}]}],
        }
    ],
    "database_specific": {"cwe_ids": ["CWE-79"], "github_reviewed": True, "severity": "MODERATE"},
}
REQUESTS = {
    "schema_version": "1.6.0",
    "id": "GHSA-j8r2-6x86-q33q",
    "modified": "2024-11-19T00:00:00Z",
    "aliases": ["CVE-2023-32681", "PYSEC-2023-74"],
    "summary": "Unintended leak of Proxy-Authorization header in requests",
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "requests"},
            "ranges": [
                {"type": "ECOSYSTEM", "events": [{"introduced": "2.3.0"}, {"fixed": "2.31.0"}]}
            ],
        }
    ],
    "database_specific": {"severity": "MODERATE"},
}
# PYSEC records list the affected versions and give GIT ranges (which say nothing here).
PYYAML = {
    "id": "PYSEC-2020-96",
    "modified": "2021-06-15T00:00:00Z",
    "aliases": ["CVE-2020-1747", "GHSA-6757-jp84-gxfx"],
    "details": "A vulnerability was discovered in the PyYAML library in versions before 5.3.1.",
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "pyyaml"},
            "ranges": [
                {
                    "type": "GIT",
                    "repo": "https://github.com/yaml/pyyaml",
                    "events": [{"introduced": "0"}, {"fixed": "5a3f8a0"}],
                }
            ],
            "versions": ["5.1", "5.1.1", "5.1.2", "5.2", "5.3"],
        }
    ],
}
ZOPE = {
    "id": "GHSA-zzzz-test-last",
    "modified": "2024-01-01T00:00:00Z",
    "summary": "An advisory closed by last_affected",
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "Zope.Interface"},
            "ranges": [
                {"type": "ECOSYSTEM", "events": [{"introduced": "5.0"}, {"last_affected": "5.4.0"}]}
            ],
        }
    ],
    "database_specific": {"severity": "HIGH"},
}
WITHDRAWN = {
    "id": "GHSA-wwww-withdrawn",
    "modified": "2024-01-01T00:00:00Z",
    "withdrawn": "2024-02-01T00:00:00Z",
    "affected": [{"package": {"ecosystem": "PyPI", "name": "jinja2"}, "versions": ["3.1.2"]}],
}
NPM = {
    "id": "GHSA-nnnn-other-ecosystem",
    "modified": "2024-01-01T00:00:00Z",
    "affected": [{"package": {"ecosystem": "npm", "name": "requests"}, "versions": ["2.31.0"]}],
}
ADVISORIES = (JINJA, REQUESTS, PYYAML, ZOPE, WITHDRAWN, NPM)

LOCK = """version = 1
requires-python = ">=3.11"

[[package]]
name = "jinja2"
version = "3.1.2"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "requests"
version = "{requests}"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "pyyaml"
version = "5.3"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "zope-interface"
version = "5.4.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "shop"
version = "0.1.0"
source = { editable = "." }
"""


def write_lock(where: Path, requests: str = "2.31.0") -> Path:
    path = where / "uv.lock"
    path.write_text(LOCK.replace("{requests}", requests), encoding="utf-8")
    return path


def osv_dir(where: Path, records: tuple[dict[str, Any], ...] = ADVISORIES) -> Path:
    folder = where / "osv"
    folder.mkdir(exist_ok=True)
    for record in records:
        (folder / f"{record['id']}.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def osv_zip(where: Path, records: tuple[dict[str, Any], ...] = ADVISORIES) -> Path:
    """As osv.dev exports it: ``PyPI/all.zip``, one JSON per advisory."""
    path = where / "PyPI" / "all.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for record in records:
            archive.writestr(f"{record['id']}.json", json.dumps(record))
    return path


def findings(result: CheckResult) -> set[tuple[str, str, str, str | None]]:
    return {(f.package, f.version, f.advisory_id, f.fixed_in) for f in result.findings}


# --- the check (pure and on files) ----------------------------------------------------


def test_the_lock_file_gives_the_third_party_packages_by_normalised_name() -> None:
    """The project's own uv.lock: real packages, the project itself left out."""
    packages = parse_lock((Path(__file__).parent.parent / "uv.lock").read_text("utf-8"))
    names = {p.name for p in packages}
    assert {"fastapi", "sqlalchemy", "pydantic-settings", "packaging"} <= names
    assert "tongbao" not in names
    with pytest.raises(errors.LockFileInvalid):
        parse_lock("this is [not toml")
    with pytest.raises(errors.LockFileInvalid):
        parse_lock("version = 1\n")


def test_the_installed_environment_can_be_checked_instead() -> None:
    import fastapi  # noqa: PLC0415

    installed = environment_packages()
    assert LockedPackage("fastapi", fastapi.__version__) in installed


@pytest.mark.parametrize("layout", ["directory", "zip", "directory holding PyPI/all.zip"])
def test_advisories_match_the_locked_versions(tmp_path: Path, layout: str) -> None:
    """SEC-10: ranges (introduced/fixed, introduced/last_affected) and version
    lists; names compared per PEP 503; withdrawn advisories and other
    ecosystems ignored; the first fixed version named."""
    db = {
        "directory": lambda: osv_dir(tmp_path),
        "zip": lambda: osv_zip(tmp_path),
        "directory holding PyPI/all.zip": lambda: osv_zip(tmp_path).parent.parent,
    }[layout]()
    result = check(lock_packages(write_lock(tmp_path, requests="2.30.0")), source_for(db))
    assert findings(result) == {
        ("jinja2", "3.1.2", "GHSA-h5c8-rqwp-cp95", "3.1.3"),
        ("requests", "2.30.0", "GHSA-j8r2-6x86-q33q", "2.31.0"),
        ("pyyaml", "5.3", "PYSEC-2020-96", None),
        ("zope-interface", "5.4.0", "GHSA-zzzz-test-last", None),
    }
    assert result.packages == 4 and result.advisories == 4  # withdrawn and npm not counted
    by_id = {f.advisory_id: f for f in result.findings}
    assert by_id["GHSA-h5c8-rqwp-cp95"].severity is Severity.MEDIUM
    assert by_id["GHSA-zzzz-test-last"].severity is Severity.HIGH
    assert by_id["PYSEC-2020-96"].severity is Severity.UNKNOWN
    assert "CVE-2024-22195" in by_id["GHSA-h5c8-rqwp-cp95"].aliases

    fixed = check(lock_packages(write_lock(tmp_path)), source_for(db))
    assert "requests" not in {f.package for f in fixed.findings}


def test_versions_outside_every_range_are_not_affected(tmp_path: Path) -> None:
    lock = tmp_path / "uv.lock"
    lock.write_text(
        "version = 1\n"
        '[[package]]\nname = "Jinja2"\nversion = "3.1.3"\n'
        '[[package]]\nname = "requests"\nversion = "2.2.1"\n'
        '[[package]]\nname = "PyYAML"\nversion = "5.3.1"\n'
        '[[package]]\nname = "zope.interface"\nversion = "5.4.1"\n',
        encoding="utf-8",
    )
    result = check(lock_packages(lock), source_for(osv_dir(tmp_path)))
    assert result.findings == () and result.packages == 4


def test_without_a_usable_database_the_check_refuses(tmp_path: Path) -> None:
    """SEC-10: "no database" is never "no vulnerabilities"."""
    packages = lock_packages(write_lock(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = osv_dir(tmp_path)
    (broken / "GARBAGE.json").write_text("{not json", encoding="utf-8")
    npm_only = tmp_path / "npm"
    npm_only.mkdir()
    (npm_only / "x.json").write_text(json.dumps(NPM), encoding="utf-8")
    not_zip = tmp_path / "all.zip"
    not_zip.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(errors.VulnerabilityDbUnavailable, match="no vulnerability database"):
        source_for(None)
    for db, says in [
        (tmp_path / "missing.zip", "no vulnerability database at"),
        (empty, "holds no PyPI advisories"),
        (npm_only, "holds no PyPI advisories"),
        (broken, "GARBAGE.json .* is not an OSV JSON record"),
        (not_zip, "cannot read"),
    ]:
        with pytest.raises(errors.VulnerabilityDbUnavailable, match=says):
            check(packages, LocalOsvDatabase(db))


# --- the command line ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_cli_deps_check_exit_codes(database_url: str, tmp_path: Path) -> None:
    """0: database consulted, nothing found (saying how much was checked);
    1: vulnerabilities listed; 2: one-line refusal without a database."""
    lock = str(write_lock(tmp_path))
    refused = invoke(database_url, "security", "deps-check", "--lock", lock, cwd=tmp_path)
    assert refused.exit_code == 2, (refused.stdout, refused.stderr)
    assert refused.stdout == ""
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: vulnerability_db_unavailable: ")

    clean_db = str(osv_dir(tmp_path, (REQUESTS,)))
    clean = invoke(
        database_url, "security", "deps-check", "--lock", lock, "--db", clean_db, "--no-register",
        cwd=tmp_path,
    )  # fmt: skip
    assert ok(clean).strip() == (
        f"checked 4 packages against 1 advisories (osv-dir:{clean_db}): 0 vulnerable"
    )

    db = str(osv_zip(tmp_path))
    found = invoke(database_url, "security", "deps-check", "--lock", lock, "--db", db, cwd=tmp_path)
    assert found.exit_code == 1, (found.stdout, found.stderr)
    header, *rows, summary, registered = found.stdout.splitlines()
    assert header.split("\t")[:5] == ["package", "version", "advisory", "severity", "fixed in"]
    assert ["jinja2", "3.1.2", "GHSA-h5c8-rqwp-cp95", "medium", "3.1.3"] in [
        r.split("\t")[:5] for r in rows
    ]
    assert summary.endswith(": 3 vulnerable")
    assert registered == "register: 3 new, 0 already known, 0 no longer found and marked fixed"

    bad_lock = tmp_path / "bad.lock"
    bad_lock.write_text("[[package]\n", encoding="utf-8")
    bad = invoke(
        database_url, "security", "deps-check", "--lock", str(bad_lock), "--db", db, cwd=tmp_path
    )
    assert bad.exit_code == 2 and bad.stderr.startswith("error: lock_file_invalid: ")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_cli_register_and_pentest_commands(database_url: str, tmp_path: Path) -> None:
    """Staff enter a finding, record a pentest with findings, list, fix; the
    report exits 1 while the last pentest is older than a quarter."""
    added = ok(
        invoke(
            database_url,
            "security",
            "vulns",
            "add",
            "--title",
            "CSRF on /v1/staff/login",
            "--severity",
            "high",
            cwd=tmp_path,
        )
    )
    vuln_id = added.split(":")[0]
    assert added.startswith("vul_") and ": open, fix by " in added
    bad = invoke(
        database_url, "security", "vulns", "add", "--title", "x", "--severity", "dire", cwd=tmp_path
    )
    assert "severity 'dire'" in one_line_error(bad, "validation_failed")

    recorded = ok(
        invoke(
            database_url,
            "security",
            "pentest",
            "record",
            "--date",
            "2026-01-05",
            "--scope",
            "public API and staff console",
            "--tester",
            "Example Security Ltd",
            "--finding",
            "medium:verbose server banner",
            "--finding",
            "low:missing header",
            cwd=tmp_path,
        )
    )
    assert recorded.splitlines()[0].endswith("of 2026-01-05: 2 findings")
    listed = ok(invoke(database_url, "security", "pentest", "list", cwd=tmp_path))
    assert "Example Security Ltd" in listed and "\t2\t" in listed

    report = invoke(database_url, "security", "vulns", "report", cwd=tmp_path)
    assert report.exit_code == 1, (report.stdout, report.stderr)
    assert "3 open, 0 overdue" in report.stdout
    assert "last pentest 2026-01-05" in report.stdout and "PENTEST OVERDUE" in report.stdout

    fixed = ok(
        invoke(
            database_url, "security", "vulns", "fix", vuln_id, "--note", "SameSite", cwd=tmp_path
        )
    )
    assert fixed.strip() == f"{vuln_id}: fixed"
    own = invoke(database_url, "security", "vulns", "fix", vuln_id, "--note", "again", cwd=tmp_path)
    assert "fixed cannot become fixed" in one_line_error(own, "invalid_transition")
    opened = ok(invoke(database_url, "security", "vulns", "list", "--status", "open", cwd=tmp_path))
    assert len(opened.splitlines()) == 3 and vuln_id not in opened


# --- the register (SQLite and PostgreSQL) ---------------------------------------------------


def _check(tmp_path: Path, requests: str) -> CheckResult:
    return check(lock_packages(write_lock(tmp_path, requests)), source_for(osv_dir(tmp_path)))


def test_registering_a_check_is_idempotent_and_upgrades_close_findings(
    platform: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    """SEC-10: the same advisory + package + version is registered once; after
    the upgrade the check marks it fixed; found again, it opens again."""
    register = platform.vulnerabilities

    def run(result: CheckResult, actor: str = "cli:ops") -> Any:
        return platform.db.run(lambda conn: register.register_check(conn, actor, result))

    first = run(_check(tmp_path, "2.30.0"))
    assert len(first.registered) == 4 and first.known == 0 and first.fixed == ()
    clock.advance(timedelta(hours=1))
    again = run(_check(tmp_path, "2.30.0"))
    assert again.registered == () and again.known == 4 and again.fixed == ()
    rows = platform.db.read(register.search)
    assert len(rows) == 4 and {v.source for v in rows} == {VulnSource.DEPS_CHECK}
    req = next(v for v in rows if v.package == "requests")
    assert req.title == "GHSA-j8r2-6x86-q33q in requests 2.30.0" and req.fixed_in == "2.31.0"
    assert req.found_at == clock.now() - timedelta(hours=1)  # the first sighting counts

    upgraded = run(_check(tmp_path, "2.31.0"))
    assert [v.id for v in upgraded.fixed] == [req.id] and upgraded.known == 3
    closed = platform.db.read(lambda conn: register.get(conn, req.id))
    assert closed.status is VulnStatus.FIXED and closed.closed_by == "cli:ops"
    assert closed.resolution and "no longer found" in closed.resolution

    elsewhere = check(  # another lock file, without pyyaml: its finding stays open
        (LockedPackage("jinja2", "3.1.2"),), source_for(osv_dir(tmp_path))
    )
    assert run(elsewhere).fixed == ()
    assert {v.package for v in platform.db.read(lambda c: register.search(c, VulnStatus.OPEN))} == {
        "jinja2",
        "pyyaml",
        "zope-interface",
    }

    downgraded = run(_check(tmp_path, "2.30.0"))
    assert [v.id for v in downgraded.registered] == [req.id]
    reopened = platform.db.read(lambda conn: register.get(conn, req.id))
    assert reopened.status is VulnStatus.OPEN and reopened.found_at == clock.now()
    assert len(platform.db.read(register.search)) == 4

    actions = [
        r.action
        for r in platform.db.read(
            lambda conn: platform.audit.search(conn, AuditQuery(actor="cli:ops"), limit=50)
        ).items
    ]
    assert actions.count("security.deps_check") == 5
    assert actions.count("security.vuln.register") == 4
    assert actions.count("security.vuln.fix") == 1 and actions.count("security.vuln.reopen") == 1
    assert platform.audit.verify(platform.db).ok


def test_a_vulnerability_must_be_fixed_within_24_hours_or_it_shows_overdue(
    platform: Platform, clock: ManualClock
) -> None:
    """SEC-10: deadline = found + TONGBAO_VULN_FIX_HOURS (24); the report lists
    open ones past it and counts fixes made late."""
    register = platform.vulnerabilities
    found_at = clock.now()
    a, b = (
        platform.db.run(
            lambda conn, t=title: register.add(conn, "staff:a", NewFinding(t, Severity.HIGH))
        )
        for title in ("SQL injection in search", "Open redirect")
    )
    assert a.deadline == found_at + timedelta(hours=24)
    assert a.status is VulnStatus.OPEN and not a.overdue(clock.now())

    clock.advance(timedelta(hours=24))
    on_time = platform.db.read(register.report)
    assert [v.id for v in on_time.open] == [a.id, b.id] and on_time.overdue == ()

    clock.advance(timedelta(seconds=1))
    platform.db.run(lambda conn: register.fix(conn, "staff:b", b.id, "patched and deployed"))
    late = platform.db.read(register.report)
    assert [v.id for v in late.overdue] == [a.id]
    assert late.fixed == 1 and late.fixed_late == 1 and not late.ok

    platform.settings.vuln_fix_hours = 4
    c = platform.db.run(lambda conn: register.add(conn, "staff:a", NewFinding("XSS", Severity.LOW)))
    assert c.deadline == clock.now() + timedelta(hours=4)


def test_accepting_a_risk_needs_a_reason_and_a_second_person(platform: Platform) -> None:
    register = platform.vulnerabilities
    vuln = platform.db.run(
        lambda conn: register.add(conn, "staff:a", NewFinding("TLS 1.2 allowed", Severity.LOW))
    )

    def refused(actor: str, reason: str, error: type[errors.TongbaoError], vuln_id: str) -> None:
        with pytest.raises(error):
            platform.db.run(lambda conn: register.accept(conn, actor, vuln_id, reason))

    refused("staff:a", "old clients", errors.SelfApproval, vuln.id)
    refused("staff:b", "  ", errors.ValidationFailed, vuln.id)
    refused("staff:b", "old clients", errors.VulnerabilityNotFound, "vul_missing")
    assert platform.db.read(lambda conn: register.get(conn, vuln.id)).status is VulnStatus.OPEN

    accepted = platform.db.run(lambda conn: register.accept(conn, "staff:b", vuln.id, "old POS"))
    assert accepted.status is VulnStatus.ACCEPTED and accepted.closed_by == "staff:b"
    assert accepted.resolution == "old POS"
    assert not accepted.overdue(accepted.deadline + timedelta(days=1))
    with pytest.raises(errors.InvalidTransition):
        platform.db.run(lambda conn: register.fix(conn, "staff:c", vuln.id, "fixed after all"))
    report = platform.db.read(register.report)
    assert [v.id for v in report.accepted] == [vuln.id] and report.open == ()


def test_the_report_flags_a_pentest_older_than_a_quarter(
    platform: Platform, clock: ManualClock
) -> None:
    """SEC-10: quarterly penetration tests; TONGBAO_PENTEST_INTERVAL_DAYS (92)."""
    register = platform.vulnerabilities
    assert platform.db.read(register.report).pentest_overdue  # none recorded yet

    def record(conn: Connection, day: date, *found: NewFinding) -> Any:
        return register.record_pentest(
            conn, "staff:sec", tested_on=day, scope="public API", tester="Example Security Ltd",
            summary=None, findings=found,
        )  # fmt: skip

    today = date(2026, 11, 23)  # START in Shanghai
    pentest, vulns = platform.db.run(
        lambda conn: record(conn, today, NewFinding("Verbose errors", Severity.MEDIUM))
    )
    assert pentest.findings == 1 and vulns[0].pentest_id == pentest.id
    assert vulns[0].source is VulnSource.PENTEST
    assert vulns[0].deadline == clock.now() + timedelta(hours=24)
    current = platform.db.read(register.report)
    assert not current.pentest_overdue and current.pentest_due_on == today + timedelta(days=92)

    with pytest.raises(errors.ValidationFailed, match="in the future"):
        platform.db.run(lambda conn: record(conn, today + timedelta(days=1)))

    clock.advance(timedelta(days=92))
    assert not platform.db.read(register.report).pentest_overdue
    clock.advance(timedelta(days=1))
    late = platform.db.read(register.report)
    assert late.pentest_overdue and late.last_pentest and late.last_pentest.id == pentest.id

    platform.db.run(lambda conn: record(conn, today + timedelta(days=93)))
    assert not platform.db.read(register.report).pentest_overdue
    assert [p.tested_on for p in platform.db.read(register.pentests)] == [
        today + timedelta(days=93),
        today,
    ]


# --- the HTTP API ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_staff_keep_the_register_over_http(platform: Platform, clock: ManualClock) -> None:
    """SEC-10 over /v1/admin: the administrator registers and fixes, the
    compliance officer accepts a risk (SEC-4 permissions), the auditor reads
    the report; refusals are problems."""
    from fastapi.testclient import TestClient  # noqa: PLC0415

    from tongbao.api.app import create_app  # noqa: PLC0415

    from .api_helpers import Api, assert_problem  # noqa: PLC0415
    from .staff_helpers import staff_session  # noqa: PLC0415

    client = TestClient(create_app(platform))
    admin, compliance, auditor = (
        Api(client, staff_session(platform, [role]))
        for role in ("administrator", "compliance_officer", "auditor")
    )
    body = {"title": "Session fixation on login", "severity": "high"}
    created = admin.ok(admin.post("/v1/admin/vulnerabilities", body), 201)
    assert created["status"] == "open" and created["source"] == "staff"
    deadline = datetime.fromisoformat(created["deadline"].replace("Z", "+00:00"))
    assert deadline == clock.now() + timedelta(hours=24)
    assert_problem(admin.post("/v1/admin/vulnerabilities", body, key=None), 400,
                   "idempotency_key_missing")  # fmt: skip
    assert_problem(
        admin.post("/v1/admin/vulnerabilities", {**body, "severity": "dire"}), 422,
        "validation_failed",
    )  # fmt: skip
    assert_problem(auditor.post("/v1/admin/vulnerabilities", body), 403, "permission_denied")

    path = f"/v1/admin/vulnerabilities/{created['id']}"
    assert_problem(admin.post(path + "/accept", {"reason": "x"}), 403, "permission_denied")
    accepted = compliance.ok(compliance.post(path + "/accept", {"reason": "legacy terminal"}))
    assert accepted["status"] == "accepted-risk"
    assert_problem(admin.post(path + "/fix", {"note": "late"}), 409, "invalid_transition")

    pentest = admin.ok(
        admin.post("/v1/admin/pentests", {
            "tested_on": "2026-11-20", "scope": "public API", "tester": "Example Security Ltd",
            "findings": [{"title": "Verbose errors", "severity": "low"}],
        }),
        201,
    )  # fmt: skip
    assert pentest["findings"] == 1
    clock.advance(timedelta(hours=25))
    auditor = Api(client, staff_session(platform, ["auditor"]))  # the old session timed out
    report = auditor.ok(auditor.get("/v1/admin/vulnerabilities/report"))
    assert report["ok"] is False and len(report["overdue"]) == 1
    assert report["last_pentest"]["id"] == pentest["id"] and report["pentest_overdue"] is False
    assert [v["id"] for v in report["accepted"]] == [created["id"]]
    listed = auditor.ok(auditor.get("/v1/admin/vulnerabilities", status="open"))["data"]
    assert [v["overdue"] for v in listed] == [True]
    assert auditor.ok(auditor.get("/v1/admin/pentests"))["data"][0]["id"] == pentest["id"]
