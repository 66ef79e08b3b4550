"""Where advisories come from (SEC-10): adapters behind :class:`AdvisorySource`.

:class:`LocalOsvDatabase` reads an OSV database kept on disk: the zip that
osv.dev exports per ecosystem (``PyPI/all.zip``, one JSON record per
advisory), or a directory of such records (e.g. that zip unpacked). It works
offline, which is how production hosts without internet access get their
checks: an operator copies a fresh export over.

A check that cannot consult a database refuses with
``vulnerability_db_unavailable``; it never reports "no vulnerabilities".
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from tongbao import errors
from tongbao.security.vulnerabilities import (
    Advisory,
    CheckResult,
    LockedPackage,
    installed_packages,
    match,
    parse_advisory,
    parse_lock,
)

_EXPORT_NAMES = ("all.zip", "PyPI/all.zip")


class AdvisorySource(Protocol):
    """A vulnerability database that can be read for PyPI advisories."""

    @property
    def description(self) -> str: ...

    def advisories(self) -> list[Advisory]:
        """Every PyPI advisory it holds; refuses (``vulnerability_db_unavailable``)
        when it cannot be read completely."""
        ...


class LocalOsvDatabase:
    """An OSV export on disk: a zip of JSON records, or a directory of them."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def description(self) -> str:
        kind = "osv-zip" if self.path.is_file() else "osv-dir"
        return f"{kind}:{self.path}"

    def advisories(self) -> list[Advisory]:
        path = self._resolve()
        found: list[Advisory] = []
        records = 0
        for name, raw in self._records(path):
            records += 1
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise errors.VulnerabilityDbUnavailable(
                    f"{name} in {path} is not an OSV JSON record ({exc})"
                ) from None
            if not isinstance(record, dict):
                raise errors.VulnerabilityDbUnavailable(f"{name} in {path} is not an OSV record")
            advisory = parse_advisory(record)
            if advisory is not None and advisory.affected:
                found.append(advisory)
        if not found:
            raise errors.VulnerabilityDbUnavailable(
                f"{path} holds no PyPI advisories ({records} JSON records): not an OSV PyPI export"
            )
        return found

    def _resolve(self) -> Path:
        path = self.path
        if path.is_dir():
            for name in _EXPORT_NAMES:
                if (path / name).is_file():
                    return path / name
            return path
        if not path.is_file():
            raise errors.VulnerabilityDbUnavailable(f"no vulnerability database at {path}")
        return path

    @staticmethod
    def _records(path: Path) -> Iterator[tuple[str, bytes]]:
        try:
            if path.is_dir():
                for file in sorted(path.rglob("*.json")):
                    yield file.name, file.read_bytes()
                return
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if info.filename.endswith(".json") and not info.is_dir():
                        yield info.filename, archive.read(info)
        except (OSError, zipfile.BadZipFile) as exc:
            raise errors.VulnerabilityDbUnavailable(f"cannot read {path}: {exc}") from None


def source_for(path: Path | None) -> AdvisorySource:
    """The configured database (``--db`` or ``TONGBAO_VULN_DB_PATH``), or a refusal."""
    if path is None:
        raise errors.VulnerabilityDbUnavailable(
            "no vulnerability database is configured: set TONGBAO_VULN_DB_PATH (or pass "
            "--db) to an OSV export such as osv.dev's PyPI/all.zip; see docs/security.md"
        )
    return LocalOsvDatabase(path)


def lock_packages(lock: Path) -> tuple[LockedPackage, ...]:
    """The packages pinned by a ``uv.lock``."""
    try:
        text = lock.read_text(encoding="utf-8")
    except OSError as exc:
        raise errors.LockFileInvalid(f"cannot read {lock}: {exc.strerror or exc}") from None
    return parse_lock(text)


def environment_packages(
    distributions: Iterable[Any] | None = None,
) -> tuple[LockedPackage, ...]:
    """The distributions installed in this Python environment."""
    dists = metadata.distributions() if distributions is None else distributions
    return installed_packages((d.metadata["Name"], d.version) for d in dists if d.metadata["Name"])


def check(packages: tuple[LockedPackage, ...], source: AdvisorySource) -> CheckResult:
    """Match ``packages`` against every advisory in ``source``."""
    advisories = source.advisories()
    return CheckResult(
        source=source.description,
        advisories=len(advisories),
        packages=len(packages),
        findings=tuple(match(packages, advisories)),
        names=frozenset(p.name for p in packages),
    )
