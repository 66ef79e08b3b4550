"""``tongbao keys``: the master key file, key versions, rotation, re-encryption (SEC-1).

Rotating is three steps, each safe while the service runs::

    tongbao keys rotate        # a new key version becomes current for new data
    tongbao keys reencrypt     # existing data moves to it (batches; re-run after a crash)
    tongbao keys retire 1      # the old version is destroyed (refused while in use)

Every change is written to the audit log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Connection

from tongbao.cli import cli_actor, err, out, platform_for, refusals, show
from tongbao.config import Settings

keys_app = typer.Typer(
    help="Encryption keys: master key, key versions, re-encryption (SEC-1).",
    no_args_is_help=True,
)


@keys_app.command("init")
@refusals
def keys_init(
    file: Annotated[
        Path | None,
        typer.Option(help="Default: TONGBAO_MASTER_KEY_FILE, else var/master.key"),
    ] = None,
    if_missing: Annotated[
        bool, typer.Option("--if-missing", help="Succeed without change if the file exists")
    ] = False,
) -> None:
    """Create a master key file (mode 0600). An existing one is never overwritten."""
    from tongbao.security.keyring import (  # noqa: PLC0415
        DEFAULT_MASTER_KEY_FILE,
        create_master_key_file,
    )

    settings = Settings()
    path = file or settings.master_key_file or DEFAULT_MASTER_KEY_FILE
    if if_missing and path.exists():
        out.print(f"master key file {path} exists; kept", markup=False, highlight=False)
        return
    create_master_key_file(path)
    out.print(
        f"master key written to {path} (mode 0600). Keep a copy offline: without it "
        "the encrypted data cannot be read.",
        markup=False,
        highlight=False,
    )
    if settings.master_key_file != path:
        out.print(f"use it: export TONGBAO_MASTER_KEY_FILE={path}", markup=False, highlight=False)


@keys_app.command("status")
@refusals
def keys_status() -> None:
    """Key versions, data keys under each, and what re-encryption still has to move."""
    with platform_for() as platform:
        status = platform.db.read(platform.keyring.status)
        columns = platform.keyring.columns
    out.print(
        f"master key {status.master_key_id}, digest {status.digest_algorithm}, "
        f"current key version {status.current_version}, "
        f"{len(columns)} encrypted columns registered",
        markup=False,
        highlight=False,
    )
    table = Table("version", "cipher", "status", "created", "retired", "data keys", "shredded")
    for v in status.versions:
        table.add_row(
            str(v.version) + (" (current)" if v.version == status.current_version else ""),
            v.cipher,
            v.status,
            v.created_at.isoformat(timespec="seconds"),
            v.retired_at.isoformat(timespec="seconds") if v.retired_at else "",
            str(v.data_keys),
            str(v.shredded),
        )
    show(table)
    if status.data_keys_outside_current:
        out.print(
            f"{status.data_keys_outside_current} data keys under older versions: "
            "run `tongbao keys reencrypt`",
            markup=False,
            highlight=False,
        )


@keys_app.command("rotate")
@refusals
def keys_rotate() -> None:
    """Make a new key version current (with TONGBAO_FIELD_CIPHER); new data keys use it."""
    with platform_for() as platform:

        def rotate(conn: Connection) -> int:
            version: int = platform.keyring.rotate(conn)
            platform.audit.record(
                conn,
                actor=cli_actor(),
                action="keys.rotate",
                target=f"key_version:{version}",
                details={"cipher": platform.settings.field_cipher},
            )
            return version

        version = platform.db.run(rotate)
    out.print(
        f"key version {version} is current. Move existing data with `tongbao keys reencrypt`, "
        "then destroy the old version with `tongbao keys retire <version>`.",
        markup=False,
        highlight=False,
    )


@keys_app.command("reencrypt")
@refusals
def keys_reencrypt(
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, max=10_000, help="Default: TONGBAO_REENCRYPT_BATCH_SIZE"),
    ] = None,
) -> None:
    """Move every subject to a fresh data key under the current version, and
    encrypt clear text left in encrypted columns. Safe to interrupt and re-run."""
    with (
        platform_for() as platform,
        Progress(
            TextColumn("re-encrypting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("subjects", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = platform.keyring.reencrypt(platform.db, batch_size=batch_size, progress=progress)
        platform.db.run(
            lambda conn: platform.audit.record(
                conn,
                actor=cli_actor(),
                action="keys.reencrypt",
                target="key_ring",
                outcome="ok" if not report.failures else "partial",
                details={
                    "subjects": report.subjects,
                    "reencrypted": report.reencrypted,
                    "encrypted": report.encrypted,
                    "keys_deleted": report.keys_deleted,
                    "failures": len(report.failures),
                },
            )
        )
    out.print(
        f"{report.subjects} subjects in {report.batches} batches: {report.reencrypted} values "
        f"re-encrypted, {report.encrypted} encrypted from clear text, "
        f"{report.keys_deleted} old data keys deleted",
        markup=False,
        highlight=False,
    )
    if report.changed_meanwhile or report.keys_kept:
        out.print(
            f"{report.changed_meanwhile} values changed while running and "
            f"{report.keys_kept} old data keys are still in use: run it again",
            markup=False,
            highlight=False,
        )
    if report.shredded:
        out.print(f"{report.shredded} subjects skipped: their data was destroyed (shredded)")
    if report.unregistered_keys:
        out.print(
            f"{report.unregistered_keys} old data keys belong to record classes without a "
            "registered encrypted column and were left as they are",
            markup=False,
            highlight=False,
        )
    for f in report.failures:
        err.print(
            f"{f.table}.{f.column} row {f.row}: {f.code}: {f.detail}",
            markup=False,
            highlight=False,
        )
    if report.failures:
        err.print(f"error: {len(report.failures)} values could not be decrypted (left as they are)")
        raise typer.Exit(1)


@keys_app.command("retire")
@refusals
def keys_retire(version: Annotated[int, typer.Argument(help="Key version to destroy")]) -> None:
    """Destroy an old key version; refused while it is current or still wraps data keys."""
    with platform_for() as platform:

        def retire(conn: Connection) -> None:
            platform.keyring.retire(conn, version)
            platform.audit.record(
                conn, actor=cli_actor(), action="keys.retire", target=f"key_version:{version}"
            )

        platform.db.run(retire)
    out.print(f"key version {version} retired: its key is destroyed")
