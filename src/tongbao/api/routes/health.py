"""/healthz: liveness for load balancers — the one endpoint without a credential.

It reveals nothing but "up" and the schema revision, and touches no customer data.
"""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from tongbao import errors
from tongbao.api import schemas as s
from tongbao.api.deps import PlatformDep
from tongbao.storage.migrate import current_revision

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=s.Health, summary="Liveness and database reachability")
async def health(platform: PlatformDep) -> s.Health:
    try:
        platform.db.read(lambda conn: conn.execute(text("SELECT 1")).scalar_one())
    except Exception as exc:
        raise errors.ServiceUnavailable("the database is unreachable") from exc
    return s.Health(
        status="ok", database=platform.db.dialect, schema_revision=current_revision(platform.db)
    )
