"""SEC-9: where staff logins come from. The offline lookup over the shipped
ip2region data, the unusual-location and impossible-travel rules, and staff
logging in over HTTP from public addresses of different provinces and
countries, the alerts seen through the API and the command line."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from tongbao import errors
from tongbao.api.app import create_app
from tongbao.audit.model import AuditQuery
from tongbao.auth.behaviour import AlertKind, SeenPlace, location_alerts, same_place
from tongbao.clock import ManualClock
from tongbao.platform import Platform
from tongbao.security.geoip import (
    INTERNAL,
    UNKNOWN,
    Ip2RegionLocator,
    IpLocation,
    Network,
    ip_locator,
    shipped_data,
)

from .api_helpers import Api, assert_problem
from .staff_helpers import PASSWORD, StaffLogin, new_staff, staff_session, totp
from .test_cli import invoke, ok

# Public resolvers and carriers' addresses, and where the shipped data puts them.
NANJING = "114.114.114.114"  # 114DNS
HANGZHOU = "223.5.5.5"  # AliDNS
BEIJING = "180.76.76.76"  # Baidu public DNS
BEIJING_UNICOM = "202.106.0.20"
SHENZHEN = "202.96.134.133"  # China Telecom Guangdong
SHENZHEN_UNICOM = "210.21.196.6"
GOOGLE = "8.8.8.8"


# --- lookup -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "country", "province", "city"),
    [
        (NANJING, "中国", "江苏省", "南京市"),
        (HANGZHOU, "中国", "浙江省", "杭州市"),
        (BEIJING, "中国", "北京", "北京市"),
        (SHENZHEN, "中国", "广东省", "深圳市"),
        (f"::ffff:{SHENZHEN}", "中国", "广东省", "深圳市"),  # IPv4-mapped
        (GOOGLE, "美国", None, None),
        ("1.1.1.1", "澳大利亚", None, None),
    ],
)
def test_public_addresses_are_located_from_the_shipped_data(
    ip: str, country: str, province: str | None, city: str | None
) -> None:
    assert ip_locator().locate(ip) == IpLocation(Network.PUBLIC, country, province, city)


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("192.168.1.20", INTERNAL),
        ("10.8.0.1", INTERNAL),
        ("172.16.5.4", INTERNAL),
        ("127.0.0.1", INTERNAL),
        ("::1", INTERNAL),
        ("fd00::1", INTERNAL),
        ("100.64.0.1", INTERNAL),  # carrier-grade NAT
        ("224.0.0.1", UNKNOWN),  # multicast
        ("0.0.0.0", UNKNOWN),
        ("2400:3200::1", UNKNOWN),  # public IPv6: the shipped data is IPv4 only
        ("testclient", UNKNOWN),
        ("", UNKNOWN),
        (None, UNKNOWN),
    ],
)
def test_addresses_without_a_place_get_none(ip: str | None, expected: IpLocation) -> None:
    """Never a made-up place: internal network or unknown."""
    found = ip_locator().locate(ip)
    assert found == expected
    assert found.country is None and found.place == expected.network.value


def test_the_data_ships_in_a_package_and_says_when_it_was_built() -> None:
    path = shipped_data()
    assert path.is_file() and "site-packages" in path.parts
    assert datetime(2020, 1, 1, tzinfo=UTC) < ip_locator().data_created < datetime.now(UTC)


def test_a_missing_or_foreign_data_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(errors.GeoDataMissing, match="not a readable"):
        Ip2RegionLocator(tmp_path / "absent.xdb").locate(NANJING)
    foreign = tmp_path / "foreign.xdb"
    foreign.write_bytes(b"\x03\x00" + bytes(600_000))  # another xdb version
    with pytest.raises(errors.GeoDataMissing, match="version 3"):
        Ip2RegionLocator(foreign).locate(NANJING)
    # Internal addresses need no data, so they are still answered.
    assert Ip2RegionLocator(foreign).locate("10.0.0.1") == INTERNAL


# --- rules ------------------------------------------------------------------------------------

AT = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
RULES = {"baseline": timedelta(days=90), "travel_window": timedelta(hours=4)}
IN_BEIJING = IpLocation(Network.PUBLIC, "中国", "北京", "北京市")
IN_SHENZHEN = IpLocation(Network.PUBLIC, "中国", "广东省", "深圳市")
IN_GUANGZHOU = IpLocation(Network.PUBLIC, "中国", "广东省", "广州市")
IN_USA = IpLocation(Network.PUBLIC, "美国")


def kinds(here: IpLocation, seen: list[SeenPlace]) -> list[AlertKind]:
    return [kind for kind, _ in location_alerts(here, AT, seen, **RULES)]


def test_a_usual_province_raises_nothing_whatever_the_city() -> None:
    seen = [SeenPlace(IN_SHENZHEN, AT - timedelta(days=3))]
    assert kinds(IN_GUANGZHOU, seen) == []
    assert same_place(IN_USA, IpLocation(Network.PUBLIC, "美国", "新泽西"))  # province unknown


def test_an_unseen_place_is_unusual_and_a_quick_hop_impossible() -> None:
    long_ago = [SeenPlace(IN_BEIJING, AT - timedelta(days=10))]
    assert kinds(IN_SHENZHEN, long_ago) == [AlertKind.UNUSUAL_LOCATION]
    hours_ago = [SeenPlace(IN_BEIJING, AT - timedelta(hours=3, minutes=59))]
    assert kinds(IN_SHENZHEN, hours_ago) == [
        AlertKind.UNUSUAL_LOCATION,
        AlertKind.IMPOSSIBLE_TRAVEL,
    ]
    # Seen in both places: not unusual, but Beijing an hour ago is still too close.
    both = [*hours_ago, SeenPlace(IN_SHENZHEN, AT - timedelta(days=20))]
    [(kind, detail)] = location_alerts(IN_SHENZHEN, AT, both, **RULES)
    assert kind is AlertKind.IMPOSSIBLE_TRAVEL
    assert detail == "login from 中国/广东省/深圳市 239 minutes after a login from 中国/北京/北京市"
    four_hours = [SeenPlace(IN_BEIJING, AT - timedelta(hours=4))]
    assert kinds(IN_SHENZHEN, four_hours) == [AlertKind.UNUSUAL_LOCATION]


def test_no_baseline_no_alert_and_internal_or_unknown_never_alert() -> None:
    assert kinds(IN_USA, []) == []  # first login
    expired = [SeenPlace(IN_BEIJING, AT - timedelta(days=91))]
    assert kinds(IN_USA, expired) == []  # the baseline is the last 90 days
    recent = [SeenPlace(IN_BEIJING, AT - timedelta(minutes=5))]
    assert kinds(INTERNAL, recent) == [] and kinds(UNKNOWN, recent) == []


# --- over HTTP --------------------------------------------------------------------------------


@pytest.fixture
def from_ip(platform: Platform) -> Callable[[str], TestClient]:
    """A test client whose requests come from ``ip`` (the TCP peer address)."""
    app = create_app(platform)
    return lambda ip: TestClient(app, client=(ip, 40000))


def http_login(
    client: TestClient,
    platform: Platform,
    who: StaffLogin,
    password: str = PASSWORD,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = {"username": who.username, "password": password, "totp": totp(platform, who)}
    response: httpx.Response = client.post("/v1/staff/login", json=body, headers=headers)
    return response


LOCATION_KINDS = (AlertKind.UNUSUAL_LOCATION, AlertKind.IMPOSSIBLE_TRAVEL)


def location_alerts_of(platform: Platform, staff_id: str) -> list[tuple[str, str]]:
    """The member's location alerts, oldest first."""
    found = platform.db.read(lambda conn: platform.staff.monitor.alerts(conn, staff_id=staff_id))
    return [(a.kind.value, a.detail) for a in reversed(found) if a.kind in LOCATION_KINDS]


def test_logins_from_other_provinces_and_countries_raise_alerts_once_per_window(
    platform: Platform,
    clock: ManualClock,
    from_ip: Callable[[str], TestClient],
    tmp_path: Path,
) -> None:
    zhao = new_staff(platform, ["operator"])

    def logged_in(ip: str) -> None:
        response = http_login(from_ip(ip), platform, zhao)
        assert response.status_code == 200, response.text
        clock.advance(timedelta(seconds=30))  # a fresh TOTP step for the next login

    logged_in(BEIJING)  # the first login: the baseline, no alert
    clock.advance(timedelta(days=1))
    logged_in(BEIJING_UNICOM)  # Beijing again, another carrier
    logged_in("192.168.3.7")  # the office network
    logged_in("127.0.0.1")
    assert location_alerts_of(platform, zhao.id) == []

    clock.advance(timedelta(hours=1))
    logged_in(SHENZHEN)  # Guangdong, an hour after Beijing
    clock.advance(timedelta(minutes=2))
    logged_in(SHENZHEN_UNICOM)  # still within the alert window: nothing new
    assert location_alerts_of(platform, zhao.id) == [
        (
            "unusual_location",
            f"login ({SHENZHEN}): login from 中国/广东省/深圳市; their logins in the "
            "last 90 days came from 中国/北京",
        ),
        (
            "impossible_travel",
            f"login ({SHENZHEN}): login from 中国/广东省/深圳市 61 minutes after a login "
            "from 中国/北京",
        ),
    ]

    # Twenty minutes on (a new window), someone abroad guesses the password.
    clock.advance(timedelta(minutes=20))
    assert_problem(
        http_login(from_ip(GOOGLE), platform, zhao, password="Wrong-Passw0rd-99"),
        401,
        "invalid_credentials",
    )
    found = location_alerts_of(platform, zhao.id)
    assert len(found) == 4
    assert found[2][0] == "unusual_location" and found[3][0] == "impossible_travel"
    assert found[2][1].startswith(f"failed login ({GOOGLE}): login from 美国;")
    assert "中国/北京、中国/广东省" in found[2][1]  # the failure did not join the baseline

    clock.advance(timedelta(hours=3))  # Beijing more than 4 hours ago
    logged_in(SHENZHEN)  # Guangdong is usual now, and the USA attempt failed: no alert
    assert len(location_alerts_of(platform, zhao.id)) == 4

    # Compliance sees them over the API; every one is in the audit log; the CLI lists them.
    compliance = Api(from_ip("127.0.0.1"), staff_session(platform, ["compliance_officer"]))
    listed = compliance.ok(compliance.get("/v1/admin/alerts", staff_id=zhao.id))["data"]
    assert [(a["kind"], a["detail"]) for a in reversed(listed)] == found
    audited = platform.db.read(
        lambda conn: platform.audit.search(
            conn, AuditQuery(action="staff.alert", target=f"staff:{zhao.id}"), limit=50
        )
    ).items
    assert sorted(r.details_data["kind"] for r in audited) == [
        "impossible_travel",
        "impossible_travel",
        "unusual_location",
        "unusual_location",
    ]
    printed = ok(invoke(platform.settings.database_url, "staff", "alerts", cwd=tmp_path))
    assert printed.count("unusual_location") == 2 and printed.count("impossible_travel") == 2


def test_a_trusted_proxy_passes_the_client_address_and_others_cannot(
    platform: Platform, clock: ManualClock
) -> None:
    """What ``serve`` does: uvicorn believes X-Forwarded-For from
    ``trusted_proxies`` only; a forged header from anyone else is ignored."""
    assert platform.settings.trusted_proxies == "127.0.0.1"
    app = ProxyHeadersMiddleware(create_app(platform), platform.settings.trusted_proxies)
    qian = new_staff(platform, ["operator"])

    def login(peer: str, forwarded: str) -> None:
        client = TestClient(app, client=(peer, 40000))
        response = http_login(client, platform, qian, headers={"X-Forwarded-For": forwarded})
        assert response.status_code == 200, response.text
        clock.advance(timedelta(seconds=30))

    login("127.0.0.1", HANGZHOU)  # through the local reverse proxy
    login("10.1.1.1", NANJING)  # not a trusted proxy: seen as the internal 10.1.1.1
    assert location_alerts_of(platform, qian.id) == []
    login("127.0.0.1", NANJING)
    assert [kind for kind, _ in location_alerts_of(platform, qian.id)] == [
        "unusual_location",
        "impossible_travel",
    ]
