"""``tongbao retention``: destroy data past its retention period (AUD-6)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from tongbao.cli import out, platform_for, refusals, show

retention_app = typer.Typer(
    help="Retention periods and the purge job (AUD-1, AUD-6).", no_args_is_help=True
)


@retention_app.command("purge")
@refusals
def purge(
    dry_run: Annotated[bool, typer.Option(help="Only count what is due")] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = 200,
) -> None:
    """Destroy every record past its retention period and report what was destroyed.

    Safe to stop and re-run: each batch commits on its own, and a second run
    finds nothing more to destroy.
    """
    with platform_for() as platform, Progress(console=out, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(record_class: str, done: int, total: int) -> None:
            if record_class not in tasks:
                tasks[record_class] = bar.add_task(record_class, total=total)
            bar.update(tasks[record_class], completed=done, total=total)

        report = platform.retention.purge(
            dry_run=dry_run, batch_size=batch_size, progress=progress
        )
        unmanaged = platform.retention.unmanaged()
    verb = "due" if dry_run else "destroyed"
    table = Table("record class", "kept (years)", "cut-off", verb, "how")
    for c in report.classes:
        table.add_row(
            c.record_class, str(c.years), c.cutoff.date().isoformat(), str(c.destroyed), c.how
        )
    show(table)
    if unmanaged:
        out.print(f"kept (nothing purges them yet): {', '.join(unmanaged)}")
    out.print(f"{report.destroyed} records {verb}")
