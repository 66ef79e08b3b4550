"""Retention (AUD-1, ERR-3, AUD-6): how long each record class is kept, and the
purge job that destroys what has outlived it."""

from tongbao.retention.policy import RecordClass, cutoff
from tongbao.retention.service import PurgeReport, Retention

__all__ = ["PurgeReport", "RecordClass", "Retention", "cutoff"]
