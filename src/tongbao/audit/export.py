"""CSV report of audit records (AUD-2). Pure: formatting only.

UTF-8 with a byte-order mark, so Excel shows Chinese text; times in
Asia/Shanghai with their offset and microseconds; the digests and hashes
are included, so an exported report can be checked against the chain.

    >>> from datetime import UTC, datetime
    >>> from tongbao.audit.model import GENESIS_HASH, make_entry, seal
    >>> r = seal(make_entry(actor="staff:s1", action="customer.update", target="=1+1",
    ...                     details={"note": "张三的请求"}),
    ...          seq=1, at=datetime(2026, 1, 1, tzinfo=UTC), prev_hash=GENESIS_HASH)
    >>> text = csv_header() + csv_rows([r])
    >>> text.startswith("\\ufeffseq,time,actor,action,target,outcome")
    True
    >>> text.splitlines()[1][:82]
    '1,2026-01-01T08:00:00.000000+08:00,staff:s1,customer.update,\\'=1+1,ok,,,,"{""note""'
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from tongbao.audit.model import AuditRecord
from tongbao.clock import SHANGHAI

BOM = "\ufeff"
COLUMNS = (
    "seq",
    "time",
    "actor",
    "action",
    "target",
    "outcome",
    "source_ip",
    "before_digest",
    "after_digest",
    "details",
    "algorithm",
    "prev_hash",
    "hash",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str | None) -> str:
    """Text a spreadsheet will not run as a formula (CSV injection)."""
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def csv_header() -> str:
    return BOM + ",".join(COLUMNS) + "\r\n"


def csv_rows(records: Iterable[AuditRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for r in records:
        writer.writerow(
            (
                r.seq,
                r.at.astimezone(SHANGHAI).isoformat(timespec="microseconds"),
                _cell(r.actor),
                _cell(r.action),
                _cell(r.target),
                _cell(r.outcome),
                _cell(r.source_ip),
                r.before_digest or "",
                r.after_digest or "",
                _cell(r.details),
                r.algorithm,
                r.prev_hash,
                r.hash,
            )
        )
    return buffer.getvalue()
