"""The versioned policy-settings store.

Limits, risk policy and run-time configuration live here as numbered
versions. Only an approved dual-control request writes a version
(:mod:`tongbao.auth.dual_control_service`); later capabilities read the
current value with :meth:`PolicySettings.current`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from tongbao.clock import Clock
from tongbao.ops.tables import policy_settings as t


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    key: str
    version: int
    value: Any
    changed_by: str
    approved_by: str
    request_id: str | None
    created_at: datetime


class PolicySettings:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def write(
        self,
        conn: Connection,
        *,
        key: str,
        value: Any,
        changed_by: str,
        approved_by: str,
        request_id: str | None = None,
    ) -> PolicyVersion:
        """Store ``value`` as the next version of ``key``.

        Two writers of one key collide on the primary key (key, version) and
        one of them fails instead of both claiming the same version.
        """
        latest = conn.execute(select(func.max(t.c.version)).where(t.c.key == key)).scalar()
        version = PolicyVersion(
            key=key,
            version=(latest or 0) + 1,
            value=value,
            changed_by=changed_by,
            approved_by=approved_by,
            request_id=request_id,
            created_at=self.clock.now(),
        )
        conn.execute(
            insert(t),
            {
                "key": key,
                "version": version.version,
                "value": json.dumps(value, ensure_ascii=False, sort_keys=True),
                "changed_by": changed_by,
                "approved_by": approved_by,
                "request_id": request_id,
                "created_at": version.created_at,
            },
        )
        return version

    def current(self, conn: Connection, key: str) -> PolicyVersion | None:
        """The version of ``key`` in force, or ``None`` if it was never set."""
        row = conn.execute(
            select(t).where(t.c.key == key).order_by(t.c.version.desc()).limit(1)
        ).first()
        return _version(row._mapping) if row else None

    def value(self, conn: Connection, key: str, default: Any = None) -> Any:
        current = self.current(conn, key)
        return default if current is None else current.value

    def history(self, conn: Connection, key: str) -> list[PolicyVersion]:
        """Every version of ``key``, oldest first."""
        rows = conn.execute(select(t).where(t.c.key == key).order_by(t.c.version))
        return [_version(r._mapping) for r in rows]

    def all_current(self, conn: Connection) -> list[PolicyVersion]:
        newest = (
            select(t.c.key, func.max(t.c.version).label("version")).group_by(t.c.key).subquery()
        )
        rows = conn.execute(
            select(t)
            .join(newest, (t.c.key == newest.c.key) & (t.c.version == newest.c.version))
            .order_by(t.c.key)
        )
        return [_version(r._mapping) for r in rows]


def _version(r: Any) -> PolicyVersion:
    return PolicyVersion(
        key=r["key"],
        version=r["version"],
        value=json.loads(r["value"]),
        changed_by=r["changed_by"],
        approved_by=r["approved_by"],
        request_id=r["request_id"],
        created_at=r["created_at"],
    )
